//! `oxccl-perf tune`: measures every algorithm (and channel cap) on this job, writes a tuning
//! file for `OXCCL_TUNING_FILE`, and checks the tuner against the best forced algorithm.
//!
//! ```text
//! oxccl-run -n 4 -- oxccl-perf tune -b 8 -e 16M -f 8 -o shm4.tuning
//! oxccl-run -n 4 -- oxccl-perf tune --transport tcp --colls all_reduce,broadcast -o tcp4.tuning
//! cat shm4.tuning tcp4.tuning > cluster.tuning    # files of several runs concatenate
//! ```
//!
//! Three passes, each over every collective and size, timing float32 sum out of place with
//! root 0 (no result checks: `oxccl-perf <collective> -c 1` does those):
//! 1. **measure**: every candidate, and the tuner's built-in choice (`default`), side by
//!    side (`measure.rs`); the file gets every candidate's time and the link parameters:
//!    α and β fitted from the ring's all-gather (`summary.rs`), γ from timing the
//!    reduction kernel;
//! 2. **check**: a communicator that reads the new file (`tuned`) against the best
//!    candidate of pass 1, timed side by side again;
//! 3. the report: one Markdown table per collective with the best forced candidate, the
//!    built-in choice and the tuned choice, each with its time and its ratio to the best.

mod measure;
mod summary;

use super::coll::Coll;
use super::{failure, world, EXIT_IO, EXIT_USAGE};
use clap::Args;
use measure::{block_elems, time_op, Buffers, Runner};
use oxccl::tuner::TuningFile;
use oxccl::{Algorithm, Communicator, Config, TransportChoice};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use summary::{Point, Table};

/// `oxccl-perf tune`'s flags.
#[derive(Args, Debug, Clone)]
pub struct TuneArgs {
    /// Ranks as threads of this process (only without a launcher).
    #[arg(short = 't', long = "nthreads", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub nthreads: u32,
    /// Smallest size in bytes (oxccl-perf's meaning: the larger buffer).
    #[arg(short = 'b', long = "minbytes", default_value = "8", value_parser = super::cli::parse_size)]
    pub minbytes: u64,
    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "16M", value_parser = super::cli::parse_size)]
    pub maxbytes: u64,
    /// Factor between sizes.
    #[arg(short = 'f', long = "stepfactor", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(2..))]
    pub stepfactor: u64,
    /// Most timed ops per point (fewer when they would take longer than --point-ms).
    #[arg(short = 'n', long = "iters", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Untimed ops before each point.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 2)]
    pub warmup: u32,
    /// Time budget of one point's timed ops, milliseconds.
    #[arg(long = "point-ms", default_value_t = 20.0)]
    pub point_ms: f64,
    /// Passes over every candidate; each point keeps its fastest pass.
    #[arg(long = "repeat", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// Collectives to tune (comma list).
    #[arg(long = "colls", value_delimiter = ',',
          default_value = "all_reduce,all_gather,reduce_scatter,broadcast,reduce,alltoall,gather,scatter",
          value_parser = parse_coll)]
    pub colls: Vec<Coll>,
    /// Channel caps to try for the message-passing algorithms (comma list; default 1 and
    /// OXCCL_NCHANNELS).
    #[arg(long = "channels", value_delimiter = ',')]
    pub channels: Vec<u32>,
    /// Algorithms to try (comma list; default all).
    #[arg(long = "algos", value_delimiter = ',', value_parser = super::cli::parse_algo)]
    pub algos: Vec<Algorithm>,
    /// Transport between ranks: auto, shm or tcp.
    #[arg(long = "transport", value_parser = super::cli::parse_transport)]
    pub transport: Option<TransportChoice>,
    /// Fail an operation that makes no progress for this many seconds (0: OXCCL_TIMEOUT).
    #[arg(short = 'T', long = "timeout", default_value_t = 0)]
    pub timeout: u64,
    /// The tuning file to write.
    #[arg(short = 'o', long = "output", default_value = "oxccl.tuning")]
    pub output: PathBuf,
    /// Also write the report (Markdown) to this file.
    #[arg(long = "report")]
    pub report: Option<PathBuf>,
}

fn parse_coll(text: &str) -> Result<Coll, String> {
    match Coll::from_name(text) {
        Some(c) if measure::collective(c).is_some() => Ok(c),
        _ => Err(format!(
            "{text:?} cannot be tuned (expected all_reduce, all_gather, reduce_scatter, \
             broadcast, reduce, alltoall, gather or scatter)"
        )),
    }
}

impl TuneArgs {
    /// The sizes, from -b by -f up to -e.
    fn sizes(&self) -> Vec<u64> {
        let mut sizes = vec![];
        let mut s = self.minbytes.max(1);
        while s <= self.maxbytes {
            sizes.push(s);
            s = s.saturating_mul(self.stepfactor);
        }
        sizes
    }
}

/// Runs `oxccl-perf tune`; returns the exit status.
pub fn run(args: &TuneArgs) -> i32 {
    let mut config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return failure(None, &e),
    };
    if let Some(t) = args.transport {
        config.transport = t;
    }
    if args.timeout > 0 {
        config.timeout = Duration::from_secs(args.timeout);
    }
    if args.sizes().is_empty() {
        eprintln!(
            "oxccl-perf tune: -b {} is larger than -e {}",
            args.minbytes, args.maxbytes
        );
        return EXIT_USAGE;
    }
    if world::launched() {
        let env = match oxccl::LaunchEnv::from_env() {
            Ok(env) => env,
            Err(e) => return failure(None, &e),
        };
        return match Communicator::from_launch(&env, config) {
            Ok(comm) => rank_main(comm, args),
            Err(e) => failure(Some(env.rank), &e),
        };
    }
    let t = args.nthreads;
    let id = match world::thread_id(&config) {
        Ok(id) => id,
        Err(e) => return failure(None, &e),
    };
    let codes: Vec<i32> = std::thread::scope(|s| {
        let ranks: Vec<_> = (0..t)
            .map(|rank| {
                let config = config.clone();
                s.spawn(move || match Communicator::init(id, t, rank, config) {
                    Ok(comm) => rank_main(comm, args),
                    Err(e) => failure(Some(rank), &e),
                })
            })
            .collect();
        ranks
            .into_iter()
            .map(|h| h.join().unwrap_or(super::EXIT_FAILED))
            .collect()
    });
    codes.into_iter().find(|&c| c != 0).unwrap_or(0)
}

/// One rank's tuning run.
fn rank_main(mut base: Communicator, args: &TuneArgs) -> i32 {
    let rank = base.rank();
    match tune(&mut base, args) {
        Ok(Some(out)) if rank == 0 => {
            print!("{}", out.report);
            let mut code = 0;
            if let Err(e) = std::fs::write(&args.output, &out.file) {
                eprintln!(
                    "oxccl-perf tune: cannot write {}: {e}",
                    args.output.display()
                );
                code = EXIT_IO;
            }
            if let Some(path) = &args.report {
                if let Err(e) = std::fs::write(path, &out.report) {
                    eprintln!("oxccl-perf tune: cannot write {}: {e}", path.display());
                    code = EXIT_IO;
                }
            }
            code
        }
        Ok(_) => 0,
        Err(e) => failure(Some(rank), &e),
    }
}

/// What rank 0 writes.
struct Output {
    file: String,
    report: String,
}

/// The candidates: every requested algorithm with every channel cap (load/store ones only
/// with one: they always run on one channel).
fn candidates(args: &TuneArgs, config: &Config) -> Vec<(Algorithm, u32)> {
    let mut caps = if args.channels.is_empty() {
        vec![1, config.nchannels]
    } else {
        args.channels.clone()
    };
    caps.sort_unstable();
    caps.dedup();
    let algos = if args.algos.is_empty() {
        Algorithm::ALL.to_vec()
    } else {
        args.algos.clone()
    };
    let mut out = vec![];
    for a in algos {
        for &c in &caps {
            if c >= 1 && (c == 1 || !a.is_load_store()) {
                out.push((a, c));
            }
        }
    }
    out
}

fn tune(base: &mut Communicator, args: &TuneArgs) -> oxccl::Result<Option<Output>> {
    let nranks = base.size();
    let class = base.link_class();
    let mut plain = base.config().clone();
    plain.algorithm = None;
    plain.algo_rules = None;
    plain.tuning = None;
    let mut runners = vec![Runner::split(base, "default".into(), None, plain.clone())?];
    for (a, c) in candidates(args, base.config()) {
        let mut config = plain.clone();
        config.algorithm = Some(a);
        config.nchannels = c;
        runners.push(Runner::split(base, format!("{a}/{c}"), Some(a), config)?);
    }
    let budget = args.point_ms * 1e-3;
    let mut table = Table::new(class, nranks);
    let sizes = args.sizes();
    for &coll in &args.colls {
        let mut bufs = Buffers::new(coll, args.maxbytes, nranks);
        for &bytes in &sizes {
            let block = block_elems(coll, bytes, nranks);
            if block == 0 {
                continue;
            }
            for _ in 0..args.repeat {
                for r in runners.iter_mut() {
                    if !r.runs(coll, block) {
                        continue;
                    }
                    let secs = time_op(
                        base,
                        r,
                        &mut bufs,
                        coll,
                        bytes,
                        args.warmup,
                        args.iters,
                        budget,
                    )?;
                    let point = Point::new(coll, bytes, block, &r.label);
                    table.record(point, r.algorithm, r.channels, secs * 1e6);
                }
            }
            let default_pick = runners[0].picks(coll, block);
            table.set_pick(coll, bytes, "default", default_pick);
        }
    }
    let file = table.tuning_file(reduction_time(base)?);
    // Pass 2: the tuner reading the new file, against the best candidate of pass 1.
    let mut tuned_config = plain.clone();
    tuned_config.tuning = Some(Arc::new(file.clone()));
    let mut tuned = Runner::split(base, "tuned".into(), None, tuned_config)?;
    for &coll in &args.colls {
        let mut bufs = Buffers::new(coll, args.maxbytes, nranks);
        for &bytes in &sizes {
            let block = block_elems(coll, bytes, nranks);
            let Some(best) = table.best_label(coll, bytes) else {
                continue;
            };
            let best_runner = runners.iter().position(|r| r.label == best);
            for _ in 0..args.repeat {
                for which in [Some(&mut tuned), best_runner.map(|i| &mut runners[i])] {
                    let Some(r) = which else { continue };
                    let secs = time_op(
                        base,
                        r,
                        &mut bufs,
                        coll,
                        bytes,
                        args.warmup,
                        args.iters,
                        budget,
                    )?;
                    let label = if r.label == "tuned" {
                        "tuned"
                    } else {
                        "best (again)"
                    };
                    let point = Point::new(coll, bytes, block, label);
                    table.record(point, None, 0, secs * 1e6);
                }
            }
            let pick = tuned.picks(coll, block);
            table.set_pick(coll, bytes, "tuned", pick);
        }
    }
    drop(runners);
    drop(tuned);
    base.barrier()?;
    if base.rank() != 0 {
        return Ok(None);
    }
    let heading = format!(
        "oxccl-perf tune: {nranks} ranks, {} links, float32 sum, sizes {}..{} ×{}, best of {} passes",
        class.name(),
        args.minbytes,
        args.maxbytes,
        args.stepfactor,
        args.repeat
    );
    Ok(Some(Output {
        file: file_text(&file, &heading),
        report: table.report(&heading),
    }))
}

fn file_text(file: &TuningFile, heading: &str) -> String {
    file.to_text(heading)
}

/// Seconds per byte the reduction kernel takes (f32 sum of a 1 MiB block into another, the
/// best of 20), on the slowest rank: the γ of the cost model.
fn reduction_time(base: &mut Communicator) -> oxccl::Result<f64> {
    const BYTES: usize = 1 << 20;
    let mut acc = vec![0u8; BYTES];
    let other = vec![0u8; BYTES];
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let start = std::time::Instant::now();
        oxccl::reduce::reduce_into(
            oxccl::DataType::Float32,
            oxccl::ReduceOp::Sum,
            &mut acc,
            &other,
        );
        best = best.min(start.elapsed().as_secs_f64());
    }
    let mut slowest = [best / BYTES as f64];
    base.all_reduce_in_place(&mut slowest, oxccl::ReduceOp::Max)?;
    Ok(slowest[0].max(1e-15))
}
