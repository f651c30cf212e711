//! `oxccl-selftest`: runs every collective × datatype × op × in-place/out-of-place on the
//! ranks of a job and compares each result with a plain sequential reference.
//!
//! Start it with a launcher: `oxccl-run -n 4 -- oxccl-selftest`. Each rank prints a summary;
//! the exit status is 0 only if every check passed on that rank.

mod cases;
mod elem;
mod random;
mod shared;

use cases::Tally;
use clap::Parser;
use elem::TestElem;
use oxccl::{bf16, Communicator, DataType, ReduceOp, Result};
use std::time::Instant;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Check every oxccl collective against a sequential reference on all ranks")]
struct Args {
    /// Element counts per block to test (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,1,7,1031,65537")]
    counts: Vec<usize>,
    /// Also run each collective once on f32 with at least 16 Mi elements per buffer.
    #[arg(long)]
    large: bool,
    /// Datatypes to test, by nccl-tests name (`float`, `half`, `int8`...); default all.
    #[arg(long, value_delimiter = ',')]
    dtypes: Vec<String>,
    /// Kill this rank (SIGKILL) in the middle of a series of all-reduces.
    #[arg(long)]
    kill_rank: Option<u32>,
    /// Number of all-reduces before the kill (or, with `--random`, the op of the sequence
    /// before which the rank kills itself).
    #[arg(long, default_value_t = 3)]
    kill_after: usize,
    /// Instead of the matrix: this many collectives (kind, datatype, op, count, in place,
    /// root) drawn from `--seed`, the same sequence on every rank, each checked.
    #[arg(long)]
    random: Option<usize>,
    /// Seed of `--random`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Largest element count of a `--random` op.
    #[arg(long, default_value_t = 1 << 20)]
    max_count: usize,
    /// With `--random`: this rank sleeps `--stall-secs` before op `--fault-at`.
    #[arg(long)]
    stall_rank: Option<u32>,
    /// Seconds of `--stall-rank`'s sleep.
    #[arg(long, default_value_t = 10.0)]
    stall_secs: f64,
    /// With `--random`: this rank stops itself (SIGSTOP) before op `--fault-at`.
    #[arg(long)]
    stop_rank: Option<u32>,
    /// The op of the `--random` sequence before which a stall or stop happens.
    #[arg(long, default_value_t = 0)]
    fault_at: usize,
    /// With `--random` and a kill: after the failure, the survivors shrink the communicator
    /// without the dead rank and run this many more random ops on it, checked.
    #[arg(long)]
    recover: Option<usize>,
}

fn matrix<T: TestElem>(c: &mut Communicator, t: &mut Tally, counts: &[usize]) -> Result<()> {
    let n = c.size();
    for &count in counts {
        for in_place in [false, true] {
            for op in ReduceOp::ALL {
                cases::all_reduce::<T>(c, t, op, count, in_place)?;
                cases::reduce_scatter::<T>(c, t, op, count, in_place)?;
                for root in roots(n, count) {
                    cases::reduce::<T>(c, t, op, count, in_place, root)?;
                }
            }
            cases::all_gather::<T>(c, t, count, in_place)?;
            cases::all_to_all::<T>(c, t, count, in_place)?;
            for root in roots(n, count) {
                cases::broadcast::<T>(c, t, count, in_place, root)?;
                cases::gather::<T>(c, t, count, in_place, root)?;
                cases::scatter::<T>(c, t, count, in_place, root)?;
            }
        }
        cases::send_recv_ring::<T>(c, t, count)?;
    }
    Ok(())
}

/// Every root for one small count, else the first and last rank.
fn roots(n: u32, count: usize) -> Vec<u32> {
    if count == 7 {
        (0..n).collect()
    } else {
        let mut v = vec![0, n - 1];
        v.dedup();
        v
    }
}

fn large(c: &mut Communicator, t: &mut Tally) -> Result<()> {
    let n = c.size() as usize;
    let total = 16 * 1024 * 1024 + 7;
    cases::all_reduce::<f32>(c, t, ReduceOp::Sum, total, false)?;
    cases::all_reduce::<bf16>(c, t, ReduceOp::Max, total, true)?;
    cases::broadcast::<f32>(c, t, total, false, (n - 1) as u32)?;
    cases::reduce::<f32>(c, t, ReduceOp::Sum, total, false, 0)?;
    let per_rank = total / n;
    cases::reduce_scatter::<f32>(c, t, ReduceOp::Sum, per_rank, false)?;
    cases::all_gather::<f32>(c, t, per_rank, true)?;
    cases::all_to_all::<f32>(c, t, per_rank, false)?;
    cases::gather::<f32>(c, t, per_rank, false, (n - 1) as u32)?;
    cases::scatter::<f32>(c, t, per_rank, true, 0)?;
    cases::send_recv_ring::<f32>(c, t, total)?;
    Ok(())
}

/// Argument errors must be reported and leave the communicator usable.
fn bad_arguments(c: &mut Communicator, t: &mut Tally) -> Result<()> {
    let n = c.size();
    let mut out = vec![0f32; 3];
    let mut expect_err = |what: &str, r: Result<()>| {
        t.checks += 1;
        match r {
            Err(e) if e.is_recoverable() => {}
            other => {
                t.wrong += 1;
                t.notes
                    .push(format!("{what}: expected an argument error, got {other:?}"));
            }
        }
    };
    expect_err(
        "all_reduce length mismatch",
        c.all_reduce(&[1f32; 4], &mut out, ReduceOp::Sum),
    );
    expect_err(
        "all_gather short output",
        c.all_gather(&[1f32; 4], &mut out),
    );
    expect_err(
        "broadcast root out of range",
        c.broadcast_in_place(&mut out, n),
    );
    expect_err(
        "gather root out of range",
        c.gather(&[1f32; 3], &mut vec![0f32; 3 * n as usize], n),
    );
    expect_err(
        "scatter send buffer not size() blocks",
        c.scatter(&[1f32; 4], &mut out, 0),
    );
    expect_err("send peer out of range", c.send(&[1f32], n + 3));
    expect_err("send to self without receive", c.send(&[1f32], c.rank()));
    if n > 1 {
        expect_err(
            "reduce_scatter not divisible",
            c.reduce_scatter_in_place(&mut vec![0f32; n as usize + 1], ReduceOp::Sum),
        );
        expect_err(
            "gather_in_place not divisible",
            c.gather_in_place(&mut vec![0f32; n as usize + 1], 0),
        );
    }
    // Still usable.
    cases::all_reduce::<i32>(c, t, ReduceOp::Sum, 5, false)
}

/// Splits into even and odd ranks (ordered by descending rank) and checks an all-reduce and
/// ranks in each half; rank 0 opts out with no color when there are more than 2 ranks.
fn split(c: &mut Communicator, t: &mut Tally) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    let color = if n > 2 && r == 0 { None } else { Some(r % 2) };
    let sub = c.split(color, -(r as i32))?;
    t.checks += 1;
    let Some(mut sub) = sub else {
        if color.is_some() {
            t.wrong += 1;
            t.notes
                .push("split returned no communicator for a color".into());
        }
        return Ok(());
    };
    let members: Vec<u32> = (0..n)
        .filter(|&q| Some(q % 2) == color && !(n > 2 && q == 0))
        .rev()
        .collect();
    if sub.size() as usize != members.len() || members[sub.rank() as usize] != r {
        t.wrong += 1;
        t.notes.push(format!(
            "split: got rank {} of {}, members {members:?}",
            sub.rank(),
            sub.size()
        ));
    }
    let mut v = [r as u64];
    sub.all_reduce_in_place(&mut v, ReduceOp::Sum)?;
    let want: u64 = members.iter().map(|&q| q as u64).sum();
    t.compare_one("split all_reduce", v[0], want);
    Ok(())
}

trait CompareOne {
    fn compare_one(&mut self, what: &str, got: u64, want: u64);
}
impl CompareOne for Tally {
    fn compare_one(&mut self, what: &str, got: u64, want: u64) {
        self.checks += 1;
        if got != want {
            self.wrong += 1;
            self.notes.push(format!("{what}: {got} != {want}"));
        }
    }
}

fn kill_test(c: &mut Communicator, victim: u32, after: usize) -> Result<()> {
    let mut buf = vec![1f32; 1 << 20];
    for i in 0.. {
        if i == after && c.rank() == victim {
            eprintln!("rank {victim}: killing myself with SIGKILL");
            let _ = std::process::Command::new("kill")
                .args(["-9", &std::process::id().to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        c.all_reduce_in_place(&mut buf, ReduceOp::Sum)?;
        buf.iter_mut().for_each(|x| *x = 1.0);
    }
    Ok(())
}

/// `--random`: the seeded soak, with its planted fault and, with `--recover`, the shrink.
fn random_mode(
    args: &Args,
    c: &mut Communicator,
    t: &mut Tally,
    ops: usize,
    start: Instant,
) -> Result<()> {
    let at = args.fault_at;
    let fault = match (args.kill_rank, args.stall_rank, args.stop_rank) {
        (Some(rank), _, _) => Some(random::Fault::Kill {
            rank,
            at: args.kill_after,
        }),
        (_, Some(rank), _) => Some(random::Fault::Stall {
            rank,
            at,
            secs: args.stall_secs,
        }),
        (_, _, Some(rank)) => Some(random::Fault::Stop { rank, at }),
        _ => None,
    };
    let ran = random::soak(c, t, ops, args.seed, args.max_count, fault);
    let (Err(e), Some(more)) = (&ran, args.recover) else {
        ran?;
        c.barrier()?;
        eprintln!(
            "rank {}/{}: {ops} random ops (seed {}), {} checks, {} wrong elements, {:.1} s",
            c.rank(),
            c.size(),
            args.seed,
            t.checks,
            t.wrong,
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    };
    // Go on without the rank the error names.
    let dead = match e {
        oxccl::Error::PeerDied { dead, .. } => *dead,
        oxccl::Error::Transport { peer, .. } => *peer,
        _ => return ran,
    };
    eprintln!("rank {}: {e}; shrinking without rank {dead}", c.rank());
    let mut small = c.shrink(&[dead])?;
    let before = (t.checks, t.wrong);
    random::soak(&mut small, t, more, args.seed + 1, args.max_count, None)?;
    small.barrier()?;
    eprintln!(
        "rank {} (rank {} before): continued on {} ranks after rank {dead} died: {more} ops, {} \
         checks, {} wrong elements",
        small.rank(),
        c.rank(),
        small.size(),
        t.checks - before.0,
        t.wrong - before.1
    );
    Ok(())
}

fn run(args: &Args) -> Result<Tally> {
    let start = Instant::now();
    let mut c = Communicator::from_env()?;
    let mut t = Tally::default();
    if let Some(ops) = args.random {
        random_mode(args, &mut c, &mut t, ops, start)?;
        return Ok(t);
    }
    if let Some(victim) = args.kill_rank {
        kill_test(&mut c, victim, args.kill_after)?;
        return Ok(t);
    }
    let dtypes: Vec<DataType> = DataType::ALL
        .into_iter()
        .filter(|d| args.dtypes.is_empty() || args.dtypes.iter().any(|n| n == d.name()))
        .collect();
    for d in dtypes {
        oxccl_tools::for_dtype!(d, Ok(()), matrix, &mut c, &mut t, &args.counts)?;
    }
    shared::shared_inputs::<f32>(&mut c, &mut t, &args.counts)?;
    shared::shared_inputs::<oxccl::f16>(&mut c, &mut t, &args.counts)?;
    shared::shared_inputs::<i8>(&mut c, &mut t, &args.counts)?;
    shared::mismatched_lengths(&mut c, &mut t)?;
    bad_arguments(&mut c, &mut t)?;
    split(&mut c, &mut t)?;
    if args.large {
        large(&mut c, &mut t)?;
    }
    c.barrier()?;
    eprintln!(
        "rank {}/{}: {} checks, {} wrong elements, {:.1} s",
        c.rank(),
        c.size(),
        t.checks,
        t.wrong,
        start.elapsed().as_secs_f64()
    );
    Ok(t)
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(t) if t.wrong == 0 => println!("selftest OK ({} checks)", t.checks),
        Ok(t) => {
            for n in &t.notes {
                eprintln!("MISMATCH {n}");
            }
            println!(
                "selftest FAILED: {} wrong elements in {} checks",
                t.wrong, t.checks
            );
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            // For the fault-injection scripts: when this rank saw the failure.
            eprintln!("failed at unix ms {}", random::unix_ms());
            std::process::exit(1);
        }
    }
}
