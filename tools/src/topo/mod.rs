//! `oxccl-topo`: this machine's topology, or, started as the ranks of a job, the cluster's.
//!
//! Without a launcher's variables it detects this host ([`oxccl::topology::detect`]) and
//! prints the tree, or the JSON or XML dump. Under a job (`oxccl-run -n 4 -- oxccl-topo`,
//! mpirun, srun, torchrun) every rank creates the communicator, detects its own host and
//! all-gathers its dump (the lengths, then the padded bytes); rank 0 fuses them with the
//! communicator's node map and prints the nodes, their ranks and hardware, and the address
//! each rank advertises.

mod cluster;

use clap::Parser;
use oxccl::{Communicator, Config};

/// Exit status for a detection or communicator failure.
const EXIT_FAILED: i32 = 1;

/// `oxccl-topo`'s arguments.
#[derive(Parser, Debug)]
#[command(
    name = "oxccl-topo",
    about = "Print this host's topology (CPUs, NUMA nodes, PCI tree, NICs, RDMA devices, GPUs); \
             run under a launcher (oxccl-run -n N -- oxccl-topo) to print the whole job's"
)]
pub struct Args {
    /// Print the JSON dump (under a job: the fused cluster as JSON)
    #[arg(long, conflicts_with = "xml")]
    pub json: bool,
    /// Print the XML dump (under a job: every node's dump inside one `<cluster>` element)
    #[arg(long)]
    pub xml: bool,
}

/// Runs `oxccl-topo` with the process's arguments; returns the exit status.
pub fn main() -> i32 {
    let args = Args::parse();
    if crate::perf::world::launched() {
        return match job(&args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("oxccl-topo: {e}");
                EXIT_FAILED
            }
        };
    }
    match oxccl::topology::detect() {
        Ok(t) if args.json => print!("{}", t.to_json()),
        Ok(t) if args.xml => print!("{}", t.to_xml()),
        Ok(t) => print!("{t}"),
        Err(e) => {
            eprintln!("oxccl-topo: {e}");
            return EXIT_FAILED;
        }
    }
    0
}

/// One rank of a job: detect, gather on every rank, rank 0 prints.
fn job(args: &Args) -> Result<(), String> {
    let text = |e: oxccl::Error| e.to_string();
    let env = oxccl::LaunchEnv::from_env().map_err(text)?;
    let config = Config::from_env().map_err(text)?;
    let mut comm = Communicator::from_launch(&env, config).map_err(text)?;
    let topo = oxccl::topology::detect_for(comm.config().hostname.as_deref()).map_err(text)?;
    let dump = if args.xml {
        topo.to_xml()
    } else {
        topo.to_json()
    };
    let dumps = gather(&mut comm, dump.as_bytes()).map_err(text)?;
    let ip = comm.advertised_ip().to_string();
    let ips = gather(&mut comm, ip.as_bytes()).map_err(text)?;
    if comm.rank() != 0 {
        return Ok(());
    }
    let dumps: Vec<String> = dumps
        .into_iter()
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .collect();
    let ips: Vec<String> = ips
        .into_iter()
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .collect();
    let launch = env.source.to_string();
    let text = if args.xml {
        cluster::xml(comm.nodes(), &dumps, &ips)
    } else {
        let view = cluster::View::parse(comm.nodes(), &dumps, &ips, &launch)?;
        if args.json {
            view.to_json()
        } else {
            view.to_string()
        }
    };
    print!("{text}");
    Ok(())
}

/// Every rank's `mine`, in rank order: the lengths first, then the bytes padded to the
/// longest.
fn gather(comm: &mut Communicator, mine: &[u8]) -> oxccl::Result<Vec<Vec<u8>>> {
    let n = comm.size() as usize;
    let mut lens = vec![0u64; n];
    comm.all_gather(&[mine.len() as u64], &mut lens)?;
    let max = lens.iter().copied().max().unwrap_or(0) as usize;
    let mut padded = mine.to_vec();
    padded.resize(max, 0);
    let mut all = vec![0u8; max * n];
    comm.all_gather(&padded, &mut all)?;
    Ok(lens
        .iter()
        .enumerate()
        .map(|(r, &len)| all[r * max..r * max + len as usize].to_vec())
        .collect())
}
