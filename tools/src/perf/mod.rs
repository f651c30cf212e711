//! `oxccl-perf`: bandwidth and correctness of every collective, speaking nccl-tests'
//! language so existing scripts and parsers read its output unchanged.
//!
//! ```text
//! oxccl-run -n 4 -- oxccl-perf all_reduce -b 8 -e 64M -f 2 -c 1
//! oxccl-perf broadcast -t 3 -b 1K -e 1M -f 4 -d all -r all -J bcast.json --plot bcast.svg
//! all_gather_perf -b 8 -e 128M -f 2 -g 1          # nccl-tests' binary names are aliases
//! oxccl-perf plot oxccl.json gloo.json openmpi.json -o allreduce.svg
//! ```
//!
//! Collectives: `all_reduce`, `all_gather`, `reduce_scatter`, `broadcast`, `reduce`,
//! `alltoall`, `sendrecv`, `gather`, `scatter` (the last three are groups of sends and
//! receives, as nccl-tests builds them).
//!
//! **Ranks** come from the launcher's environment (`oxccl-run -n N`, mpirun, srun,
//! torchrun; see [`oxccl::LaunchEnv`]), one rank per process, or `-t N` runs N ranks as
//! threads of this one process (without a launcher). Rank 0 prints.
//!
//! **Flags** are nccl-tests' ([`cli::Flags`]): `-b -e -i -f` sizes (K/M/G suffixes), `-n`
//! iterations, `-w` warm-up, `-m` operations aggregated per iteration, `-N` cycles, `-c`
//! checks, `-o -d -r` operator, datatype and root (each may be `all`), `-z` blocking, `-a`
//! time over ranks, `-T` timeout, `-J` JSON file, `-g` (must be 1); plus `--algo`,
//! `--transport`, `--plot FILE.svg` and `--compare FILE.json`.
//!
//! **Output** ([`report`]): nccl-tests' header, one row per size with time, algbw, busbw
//! and #wrong out-of-place and in-place, and the footer lines `# Out of bounds values` and
//! `# Avg bus bandwidth`. busbw factors: [`coll::Coll::bandwidths`].
//!
//! **Correctness** ([`data`]): with `-c N` (default 1) each size and placement is run N
//! more times on inputs whose results are exactly predictable for every datatype and
//! operator; #wrong is the number of wrong elements over all ranks.
//!
//! **Exit status**: 0 when every check passed; 7 when a result was wrong (nccl-tests'
//! status for failed checks) or the average busbw is below 90 % of `NCCL_TESTS_MIN_BW`
//! (GB/s, as nccl-tests); 2 for a bad command line or environment; 3 when oxccl failed
//! (a peer died, ranks disagree); 4 when an operation timed out (`-T`, `OXCCL_TIMEOUT`);
//! 1 when the results or plot file could not be written.
//!
//! **Test aid**: `OXCCL_PERF_CORRUPT=<rank>` makes that rank change one element of its
//! output before every check, so tests can prove that wrong results are counted and fail
//! the run. Never set it for real measurements.

pub mod cli;
pub mod coll;
pub mod data;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod ops;
pub mod plot;
pub mod report;
pub mod results;
pub mod run;
pub mod tune;
pub mod world;

use clap::Parser;
use cli::{Cli, Flags, Options};
use coll::Coll;
use oxccl::{Communicator, Config, Error, TransportChoice};
use report::{RankInfo, Report};
use results::RefFile;
use run::{Bench, Sink, Summary};
use serde_json::json;
use std::path::Path;
use std::time::SystemTime;

/// Exit status: bad command line, configuration or environment.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: oxccl failed.
pub const EXIT_FAILED: i32 = 3;
/// Exit status: an operation timed out.
pub const EXIT_TIMEOUT: i32 = 4;
/// Exit status: wrong results, or busbw below `NCCL_TESTS_MIN_BW`.
pub const EXIT_WRONG: i32 = 7;
/// Exit status: the results or plot file could not be written.
pub const EXIT_IO: i32 = 1;

/// The environment variable that makes one rank corrupt its results (a test aid).
pub const CORRUPT_VAR: &str = "OXCCL_PERF_CORRUPT";

/// `oxccl-perf`'s entry point; a program named like an alias (`all_reduce_perf`, e.g. a
/// symbolic link) runs that collective. Returns the exit status.
pub fn main() -> i32 {
    let alias = std::env::args_os()
        .next()
        .and_then(|a| Some(Path::new(&a).file_name()?.to_str()?.to_owned()))
        .filter(|n| n.ends_with("_perf"))
        .and_then(|n| Coll::from_name(&n));
    main_with(alias)
}

/// The entry point of the alias binaries: `coll` is fixed and the flags follow directly.
/// Returns the exit status.
pub fn main_with(coll: Option<Coll>) -> i32 {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (coll, flags) = match coll {
        Some(c) => match Flags::try_parse_from(&args) {
            Ok(f) => (c, f),
            Err(e) => e.exit(),
        },
        None => match Cli::try_parse_from(&args) {
            Ok(cli) => match cli.cmd.into_run() {
                Ok(run) => run,
                Err(cli::Other::Plot(p)) => return plot::run_files(&p.files, &p.output),
                Err(cli::Other::Tune(t)) => return tune::run(&t),
            },
            Err(e) => e.exit(),
        },
    };
    match Options::from_flags(coll, flags, args) {
        Ok(opts) => run(&opts),
        Err(msg) => {
            eprintln!("oxccl-perf: {msg}");
            EXIT_USAGE
        }
    }
}

/// Settings every rank of this process shares.
struct Shared<'a> {
    opts: &'a Options,
    refs: &'a [RefFile],
    threads: u32,
    corrupt: Option<u32>,
    min_bw: Option<f64>,
    launch: String,
}

fn env_number<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={v:?} is not a number")),
        _ => Ok(None),
    }
}

/// What a run needs besides the flags, read before any rank starts.
struct Setup {
    refs: Vec<RefFile>,
    config: Config,
    corrupt: Option<u32>,
    min_bw: Option<f64>,
}

impl Setup {
    fn read(opts: &Options) -> Result<Setup, String> {
        let refs = opts
            .flags
            .compare
            .iter()
            .map(|p| RefFile::read(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = Config::from_env().map_err(|e| e.to_string())?;
        if let Some(a) = opts.flags.algo {
            config.algorithm = Some(a);
        }
        if let Some(t) = opts.flags.transport {
            config.transport = t;
        }
        if let Some(t) = opts.timeout {
            config.timeout = t;
        }
        Ok(Setup {
            refs,
            config,
            corrupt: env_number(CORRUPT_VAR)?,
            min_bw: env_number("NCCL_TESTS_MIN_BW")?,
        })
    }
}

/// Runs the benchmark on this process's ranks; returns the exit status.
pub fn run(opts: &Options) -> i32 {
    let Setup {
        refs,
        config,
        corrupt,
        min_bw,
    } = match Setup::read(opts) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("oxccl-perf: {msg}");
            return EXIT_USAGE;
        }
    };
    if world::launched() {
        if opts.flags.nthreads > 1 {
            eprintln!(
                "oxccl-perf: -t {} runs ranks as threads of one process; it cannot be combined \
                 with a launcher's ranks (run without -t, or without the launcher)",
                opts.flags.nthreads
            );
            return EXIT_USAGE;
        }
        let env = match oxccl::LaunchEnv::from_env() {
            Ok(env) => env,
            Err(e) => return failure(None, &e),
        };
        let shared = Shared {
            opts,
            refs: &refs,
            threads: 1,
            corrupt,
            min_bw,
            launch: format!("processes started by {}", env.source),
        };
        return match Communicator::from_launch(&env, config) {
            Ok(comm) => rank_main(comm, &shared),
            Err(e) => failure(Some(env.rank), &e),
        };
    }
    let t = opts.flags.nthreads;
    let id = match world::thread_id(&config) {
        Ok(id) => id,
        Err(e) => return failure(None, &e),
    };
    let shared = Shared {
        opts,
        refs: &refs,
        threads: t,
        corrupt,
        min_bw,
        launch: "threads of one process".into(),
    };
    let codes: Vec<i32> = std::thread::scope(|s| {
        let ranks: Vec<_> = (0..t)
            .map(|rank| {
                let (config, shared) = (config.clone(), &shared);
                s.spawn(move || match Communicator::init(id, t, rank, config) {
                    Ok(comm) => rank_main(comm, shared),
                    Err(e) => failure(Some(rank), &e),
                })
            })
            .collect();
        ranks
            .into_iter()
            .map(|h| h.join().unwrap_or(EXIT_FAILED))
            .collect()
    });
    codes.into_iter().find(|&c| c != 0).unwrap_or(0)
}

/// Reports an oxccl error; returns its exit status.
pub(crate) fn failure(rank: Option<u32>, e: &Error) -> i32 {
    match rank {
        Some(r) => eprintln!("oxccl-perf: rank {r}: {e}"),
        None => eprintln!("oxccl-perf: {e}"),
    }
    match e {
        Error::Timeout { .. } => EXIT_TIMEOUT,
        Error::Environment(_) | Error::Config { .. } | Error::InvalidArgument { .. } => EXIT_USAGE,
        _ => EXIT_FAILED,
    }
}

/// One rank, from its communicator to its exit status.
fn rank_main(mut comm: Communicator, sh: &Shared<'_>) -> i32 {
    let (rank, n) = (comm.rank(), comm.size());
    let opts = sh.opts;
    if let (true, Some(root)) = (opts.coll.has_root(), opts.flags.root.0) {
        if root >= n {
            if rank == 0 {
                eprintln!("oxccl-perf: -r {root}: there are only {n} ranks");
            }
            return EXIT_USAGE;
        }
    }
    let infos = match world::gather_infos(&mut comm) {
        Ok(i) => i,
        Err(e) => return failure(Some(rank), &e),
    };
    let started = SystemTime::now();
    let nroots = match (opts.coll.has_root(), opts.flags.root.0) {
        (true, None) => n,
        _ => 1,
    };
    let mut report = (rank == 0).then(|| Report::new(opts, sh.refs, nroots));
    if let Some(r) = &mut report {
        if let Some(path) = &opts.flags.output_file {
            println!("# Writing JSON output to {}", path.display());
        }
        let c = comm.config();
        let transport = match c.transport {
            TransportChoice::Auto => "auto",
            TransportChoice::Shm => "shm",
            TransportChoice::Tcp => "tcp",
            TransportChoice::Ib => "ib",
        };
        let algo = match (c.algorithm, &c.algo_rules, &c.tuning) {
            (Some(a), _, _) => format!("{a} (forced)"),
            (None, Some(rules), _) => format!("chosen by the tuner among {rules}"),
            (None, None, Some(_)) => "chosen by the tuner from OXCCL_TUNING_FILE".to_owned(),
            (None, None, None) => "chosen by the tuner (built-in thresholds)".to_owned(),
        };
        let setup = format!(
            "oxccl: {n} ranks as {}, transport {transport}, algorithm {algo}, timeout {} s",
            sh.launch,
            c.timeout.as_secs_f64()
        );
        r.header(&infos, sh.threads, &setup);
    }
    let corrupt = sh.corrupt == Some(rank);
    let sink = report.as_mut().map(|r| r as &mut dyn Sink);
    let summary = match Bench::new(&mut comm, opts, sink, corrupt).run() {
        Ok(s) => s,
        Err(e) => return failure(Some(rank), &e),
    };
    let below_min = sh.min_bw.is_some_and(|m| summary.avg_busbw() < m * 0.9);
    let mut code = if summary.failed > 0 || below_min {
        EXIT_WRONG
    } else {
        0
    };
    if let Some(mut r) = report {
        r.footer(&summary, sh.min_bw);
        if let Err(msg) = write_files(opts, sh.refs, &r, &summary, &infos, n, started) {
            eprintln!("oxccl-perf: {msg}");
            code = code.max(EXIT_IO);
        }
    }
    code
}

/// Writes the `-J` results and the `--plot` picture.
fn write_files(
    opts: &Options,
    refs: &[RefFile],
    report: &Report<'_>,
    summary: &Summary,
    infos: &[RankInfo],
    nranks: u32,
    started: SystemTime,
) -> Result<(), String> {
    if opts.flags.output_file.is_none() && opts.flags.plot.is_none() {
        return Ok(());
    }
    let f = &opts.flags;
    let step = if f.stepfactor > 1 {
        json!({"step_factor": f.stepfactor})
    } else {
        json!({"step_bytes": f.stepbytes})
    };
    let devices: Vec<_> = infos
        .iter()
        .map(|i| {
            json!({"rank": i.rank, "group": 0, "pid": i.pid, "hostname": i.hostname,
                   "device": i.device, "device_hex": "cpu", "device_info": "CPU rank"})
        })
        .collect();
    let mut config = json!({
        "nthreads": f.nthreads, "ngpus": 1, "minimum_bytes": f.minbytes,
        "maximum_bytes": f.maxbytes, "warmup_iters": f.warmup_iters, "iterations": f.iters,
        "aggregated_iterations": f.agg_iters, "validation": f.check, "graph": 0,
        "blocking_collectives": f.blocking, "parallel_init": false, "devices": devices,
    });
    if let (Some(c), Some(s)) = (config.as_object_mut(), step.as_object()) {
        c.extend(s.clone());
    }
    let doc = json!({
        "library": format!("oxccl {}", env!("CARGO_PKG_VERSION")),
        "collective": opts.coll.name(),
        "nranks": nranks,
        "hostname": infos.first().map_or_else(world::hostname, |i| i.hostname.clone()),
        "date": results::rfc3339(started),
        "command": opts.command,
        "start_time": results::rfc3339(started),
        "end_time": results::rfc3339(SystemTime::now()),
        "args": opts.args,
        "config": config,
        "results": report.rows,
        "out_of_bounds": {"count": summary.failed, "okay": summary.failed == 0},
        "average_bus_bandwidth": summary.avg_busbw(),
        "errors": [],
    });
    if let Some(path) = &f.output_file {
        results::write(path, &doc)?;
    }
    if let Some(path) = &f.plot {
        let here = Path::new("this run");
        let mut files = vec![RefFile::from_value(
            f.output_file.as_deref().unwrap_or(here),
            &doc,
        )?];
        files.extend(refs.iter().cloned());
        let title = format!("Bus bandwidth: {}, {nranks} ranks", opts.coll);
        plot::draw(path, &title, &plot::series(&files))?;
    }
    Ok(())
}
