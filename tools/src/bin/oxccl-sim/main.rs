//! `oxccl-sim`: predicts the time and bus bandwidth of a collective on a modelled cluster,
//! for every algorithm, from the algorithms' plans (no rank runs, nothing is sent).
//!
//! ```text
//! oxccl-sim --nodes 128 --ranks-per-node 8 --collective all_reduce -b 8 -e 1G -f 64
//! oxccl-sim --nodes 1 --ranks-per-node 8 --collective all_gather --algo ring,bruck --plot ag.svg
//! oxccl-sim --nodes 1 --ranks-per-node 4 --validate all_reduce.json   # an oxccl-perf -J file
//! ```
//!
//! # Model
//! `p = nodes · ranks-per-node` ranks; rank `r` is on node `r / ranks-per-node`. For each
//! algorithm that supports the collective, the plans of a few representative ranks are built
//! (0, the last rank of node 0, the first of node 1, `p/2`, `p−1` and the root of a rooted
//! collective; never all `p` of them, so 100 000 ranks take about a second per algorithm
//! at most; the limit is 131 072 ranks). Each plan is walked as `oxccl_algorithms::cost`
//! walks it (same α rule, same chunk sizes from `plan::channel_piece`/`plan::split_range`,
//! one round covering the op), except that every message is classified by its peer: same
//! node → intra α and β, other node → inter α and β. Back-to-back sends sharing one α take
//! the slowest link's α. γ (the reducer) is the same everywhere. Channels overlap their
//! latencies and share the links (the busiest channel's α, all channels' bytes). The
//! predicted time is the slowest evaluated rank's.
//!
//! Ring all-reduce, all-gather and reduce-scatter: each message waits for the one the
//! predecessor sent a step earlier, so the critical path of a rank's `L` latencies is a walk
//! of `L` hops around the ring, which enters a new node about once every `R` hops (NCCL's
//! tuner counts `2·nNodes` inter-node steps for the ring all-reduce the same way): those
//! latencies are counted along that walk, not at the node-boundary rank's own peer (which
//! would make every step inter-node). Its bytes still go at the slowest link's β (the
//! node-boundary rank is evaluated).
//!
//! Dependency depth: one rank's plan holds only its own hops, so (as `cost.rs` says) the
//! chain of ring broadcast and reduce shows one `α + nβ` per rank; the simulator adds the
//! chain's `p−1` hop latencies (each intra or inter) and takes the bytes as perfectly
//! pipelined: `Σ hop α + max rank (β + γ terms)`, an optimistic bound (the engine's rounds
//! and chunk sizes are not modelled; unpipelined, the chain costs `(p−1)(α + nβ)`). Binomial
//! trees get `⌈log2 p⌉` levels of latency, the double binary tree `2⌊log2 p⌋` (up, then
//! down), with the bytes likewise pipelined; a level whose hops span at least a node's worth
//! of ranks counts as inter-node (an approximation of where the trees cross nodes).
//!
//! Limits: no contention (each rank has its own intra and inter link: to model a NIC shared
//! by a node's ranks, divide `--inter-gbps` by `--ranks-per-node`), intra and inter
//! transfers and reductions do not overlap (their times add, as in `cost.rs`), no
//! pipelining across channels or rounds beyond what `cost.rs` counts, no topology beyond
//! "same node or not". Load/store algorithms are modelled only on one node. Sizes follow
//! nccl-tests with `float` elements: all-reduce, broadcast and reduce move `size` bytes;
//! all-gather, reduce-scatter and all-to-all have blocks of `size / p` bytes rounded down to
//! 16 bytes.
//!
//! Bandwidths are in GB/s (1e9 bytes per second), as nccl-tests' algbw and busbw.

mod model;
mod validate;

use clap::Parser;
use model::{Cluster, Link, Prepared, Skip};
use oxccl_algorithms::{Algorithm, Collective};
use oxccl_tools::perf::cli::parse_size;
use oxccl_tools::perf::coll::Coll;
use oxccl_tools::perf::plot::{self, Series};
use oxccl_tools::perf::report::fit;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The most ranks a simulation accepts.
const MAX_RANKS: u64 = 1 << 17;

/// Bytes per element: nccl-tests' default datatype, `float`.
const ELEM: u32 = 4;

/// Exit status of a bad command line or input file.
const EXIT_USAGE: u8 = 2;

/// Exit status of a plot that could not be written.
const EXIT_IO: u8 = 1;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "oxccl-sim",
    about = "Predict a collective's time and bus bandwidth on a modelled cluster, per algorithm",
    after_help = "Model: rank r is on node r / R; each message costs the α and β of the link to \
                  its peer (same node: intra, else inter), reductions γ; the slowest of a few \
                  representative ranks is the prediction. No contention: each rank has its \
                  own links (for a NIC shared by a node's ranks, divide --inter-gbps by R). \
                  Ring latencies follow the walk around the ring; ring broadcast/reduce \
                  chains get their p-1 hop latencies with the bytes perfectly pipelined, \
                  trees their log2(p) levels. GB/s = 1e9 bytes/s. \
                  Sizes: float elements, nccl-tests' meaning of -b/-e (K, M, G: powers of 1024)."
)]
struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    nodes: u32,
    /// Ranks on each node (rank r is on node r / R); nodes × ranks at most 131072.
    #[arg(long = "ranks-per-node", value_name = "R", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..))]
    ranks_per_node: u32,
    /// all_reduce, all_gather, reduce_scatter, broadcast, reduce or alltoall [default:
    /// all_reduce, or the --validate file's].
    #[arg(long, value_parser = parse_collective)]
    collective: Option<Coll>,
    /// Root of broadcast and reduce.
    #[arg(long, default_value_t = 0)]
    root: u32,
    /// Smallest size in bytes (K, M, G suffixes).
    #[arg(short = 'b', long = "minbytes", default_value = "8", value_parser = parse_size)]
    minbytes: u64,
    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "1G", value_parser = parse_size)]
    maxbytes: u64,
    /// Factor between sizes (1: add -i instead).
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    stepfactor: u64,
    /// Increment between sizes when -f is 1.
    #[arg(short = 'i', long = "stepbytes", default_value = "1M", value_parser = parse_size)]
    stepbytes: u64,
    /// Latency of a message between two ranks of one node, µs.
    #[arg(long = "intra-alpha-us", value_name = "US", default_value_t = 1.0,
          value_parser = non_negative, allow_negative_numbers = true)]
    intra_alpha_us: f64,
    /// Bandwidth between two ranks of one node, GB/s.
    #[arg(long = "intra-gbps", value_name = "GB/s", default_value_t = 20.0,
          value_parser = positive, allow_negative_numbers = true)]
    intra_gbps: f64,
    /// Latency of a message between ranks of different nodes, µs.
    #[arg(long = "inter-alpha-us", value_name = "US", default_value_t = 5.0,
          value_parser = non_negative, allow_negative_numbers = true)]
    inter_alpha_us: f64,
    /// Bandwidth between ranks of different nodes, per rank, GB/s (12.5: 100 Gb/s).
    #[arg(long = "inter-gbps", value_name = "GB/s", default_value_t = 12.5,
          value_parser = positive, allow_negative_numbers = true)]
    inter_gbps: f64,
    /// Reduction throughput (γ = 1 / this), GB/s of data reduced.
    #[arg(long = "reduce-gbps", value_name = "GB/s", default_value_t = 20.0,
          value_parser = positive, allow_negative_numbers = true)]
    reduce_gbps: f64,
    /// Channels per plan.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    channels: u32,
    /// Only these algorithms (comma-separated names, e.g. ring,one_shot).
    #[arg(long, value_delimiter = ',', value_parser = parse_algorithm)]
    algo: Vec<Algorithm>,
    /// Also draw the predicted busbw of every algorithm against size into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Compare the predictions with the measured times of an oxccl-perf -J results file.
    #[arg(long, value_name = "FILE.json")]
    validate: Option<PathBuf>,
    /// Machine-readable output: comma-separated values with full precision, no comments.
    #[arg(long)]
    csv: bool,
}

/// Parses `--collective`: the six collectives oxccl-sim models.
fn parse_collective(text: &str) -> Result<Coll, String> {
    let name = if text == "all_to_all" {
        "alltoall"
    } else {
        text
    };
    match Coll::from_name(name) {
        Some(
            c @ (Coll::AllReduce
            | Coll::AllGather
            | Coll::ReduceScatter
            | Coll::Broadcast
            | Coll::Reduce
            | Coll::AllToAll),
        ) => Ok(c),
        _ => Err(format!(
            "unknown collective {text:?} (all_reduce, all_gather, reduce_scatter, broadcast, \
             reduce or alltoall)"
        )),
    }
}

/// Parses one `--algo` name.
fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    text.parse().map_err(|e| format!("{e}"))
}

/// A finite number, 0 or more.
fn non_negative(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number of 0 or more")),
    }
}

/// A finite number above 0.
fn positive(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number above 0")),
    }
}

/// The oxccl collective of a benchmark collective with `root`.
fn collective(coll: Coll, root: u32) -> Collective {
    match coll {
        Coll::AllGather => Collective::AllGather,
        Coll::ReduceScatter => Collective::ReduceScatter,
        Coll::Broadcast => Collective::Broadcast { root },
        Coll::Reduce => Collective::Reduce { root },
        Coll::AllToAll => Collective::AllToAll,
        _ => Collective::AllReduce,
    }
}

/// A size as people write it: `256 KiB`, `1 GiB`, `24 B`, `1.5 MiB`.
fn human(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift {
            let v = bytes as f64 / (1u64 << shift) as f64;
            return if bytes % (1 << shift) == 0 {
                format!("{} {unit}", bytes >> shift)
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

/// The sizes of one sweep, nccl-tests' way.
fn sizes(a: &Args) -> Vec<u64> {
    let mut out = Vec::new();
    let mut s = a.minbytes;
    while s <= a.maxbytes {
        out.push(s);
        let next = if a.stepfactor > 1 {
            s.saturating_mul(a.stepfactor)
        } else {
            s.saturating_add(a.stepbytes)
        };
        if next == s {
            break;
        }
        s = next;
    }
    out
}

/// What a simulation needs besides the sizes.
struct Setup {
    /// The benchmark collective.
    coll: Coll,
    /// The cluster.
    cluster: Cluster,
    /// The algorithms that are modelled.
    prepared: Vec<Prepared>,
    /// The algorithms left out, and why.
    skipped: Vec<(Algorithm, Skip)>,
}

/// The error of a bad command line: printed, then exit status 2.
fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("oxccl-sim: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// The cluster the flags describe, or the error naming the flags at fault.
fn cluster(a: &Args) -> Result<Cluster, String> {
    let p = u64::from(a.nodes) * u64::from(a.ranks_per_node);
    if p > MAX_RANKS {
        return Err(format!(
            "--nodes {} × --ranks-per-node {} = {p} ranks, above the limit of {MAX_RANKS}",
            a.nodes, a.ranks_per_node
        ));
    }
    let link = |alpha_us: f64, gbps: f64| Link {
        alpha_s: alpha_us * 1e-6,
        beta_s_per_byte: 1.0 / (gbps * 1e9),
    };
    Ok(Cluster {
        nodes: a.nodes,
        ranks_per_node: a.ranks_per_node,
        intra: link(a.intra_alpha_us, a.intra_gbps),
        inter: link(a.inter_alpha_us, a.inter_gbps),
        gamma_s_per_byte: 1.0 / (a.reduce_gbps * 1e9),
    })
}

/// Prepares the algorithms of `algos` (all when empty) for `coll` with `root`.
fn setup(a: &Args, coll: Coll, root: u32, algos: &[Algorithm]) -> Result<Setup, String> {
    let cl = cluster(a)?;
    if coll.has_root() && root >= cl.nranks() {
        return Err(format!(
            "--root {root}: there are only {} ranks",
            cl.nranks()
        ));
    }
    let c = collective(coll, root);
    let candidates = if algos.is_empty() {
        Algorithm::ALL
    } else {
        algos
    };
    let (mut prepared, mut skipped) = (Vec::new(), Vec::new());
    for &alg in candidates {
        if prepared.iter().any(|p: &Prepared| p.algorithm == alg) {
            continue;
        }
        match model::prepare(alg, c, &cl, a.channels) {
            Ok(p) => prepared.push(p),
            Err(why) => skipped.push((alg, why)),
        }
    }
    if prepared.is_empty() {
        let why: Vec<String> = skipped.iter().map(|(a, w)| format!("{a}: {w}")).collect();
        return Err(format!(
            "no algorithm can be modelled for {} ({})",
            coll.name(),
            why.join("; ")
        ));
    }
    Ok(Setup {
        coll,
        cluster: cl,
        prepared,
        skipped,
    })
}

/// Bytes per rank's block for a benchmark size (see [`Coll::counts`]), and the element count
/// passed to the operation.
fn block(coll: Coll, size: u64, nranks: u32) -> (u64, usize) {
    let count = (size / u64::from(ELEM)) as usize;
    let param = coll.counts(count, ELEM as usize, nranks as usize).param;
    (param as u64 * u64::from(ELEM), param)
}

/// One predicted row.
struct Prediction {
    /// Seconds.
    secs: f64,
    /// algbw, GB/s.
    algbw: f64,
    /// busbw, GB/s.
    busbw: f64,
}

/// The predictions of every prepared algorithm at `size` bytes.
fn predict_all(s: &Setup, size: u64) -> Vec<Prediction> {
    let p = s.cluster.nranks();
    let (bytes, param) = block(s.coll, size, p);
    s.prepared
        .iter()
        .map(|prep| {
            let secs = model::predict(prep, bytes, ELEM, &s.cluster);
            let (algbw, busbw) = if secs > 0.0 {
                s.coll.bandwidths(param, ELEM as usize, secs, p as usize)
            } else {
                (0.0, 0.0)
            };
            Prediction { secs, algbw, busbw }
        })
        .collect()
}

/// The index of the fastest prediction, or `None` when every algorithm takes no time.
fn best(preds: &[Prediction]) -> Option<usize> {
    let (i, p) = preds
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.secs.total_cmp(&b.1.secs))?;
    (p.secs > 0.0).then_some(i)
}

/// The fastest algorithm at one size, with its lead over ring and over the runner-up.
struct Win {
    /// Benchmark size, bytes.
    size: u64,
    /// Index of the winner among the prepared algorithms.
    winner: usize,
    /// Ring's time over the winner's (when ring is modelled and is not the winner).
    over_ring: Option<f64>,
    /// The runner-up and its time over the winner's.
    over_next: Option<(usize, f64)>,
}

/// The footer lines: per run of consecutive sizes with the same winner, who wins and by how
/// much.
fn footer(s: &Setup, wins: &[Win]) -> Vec<String> {
    let p = s.cluster.nranks();
    let ring = s
        .prepared
        .iter()
        .position(|x| x.algorithm == Algorithm::Ring);
    let name = |i: usize| s.prepared[i].algorithm.name();
    let mut out = Vec::new();
    let mut start = 0;
    while start < wins.len() {
        let w = wins[start].winner;
        let end = (start..wins.len())
            .find(|&j| wins[j].winner != w)
            .unwrap_or(wins.len());
        let run = &wins[start..end];
        let range = if run.len() == 1 {
            format!("at {}", human(run[0].size))
        } else if start == 0 && end < wins.len() {
            format!("below {}", human(wins[end].size))
        } else if start > 0 && end == wins.len() {
            format!("from {} up", human(run[0].size))
        } else {
            format!(
                "from {} to {}",
                human(run[0].size),
                human(run[run.len() - 1].size)
            )
        };
        let line = match (
            ring,
            run.iter().filter_map(|x| x.over_ring).reduce(f64::max),
        ) {
            (Some(r), Some(by)) if r != w => format!(
                "{} beats ring {range} at {p} ranks, by up to {by:.1}x",
                name(w)
            ),
            _ => match run
                .iter()
                .filter_map(|x| x.over_next)
                .max_by(|a, b| a.1.total_cmp(&b.1))
            {
                Some((next, by)) => format!(
                    "{} is best {range} at {p} ranks, ahead of {} by up to {by:.2}x",
                    name(w),
                    name(next)
                ),
                None => format!(
                    "{} is the only algorithm modelled {range} at {p} ranks",
                    name(w)
                ),
            },
        };
        out.push(line);
        start = end;
    }
    out
}

/// The header comment lines.
fn header(a: &Args, s: &Setup) -> Vec<String> {
    let cl = &s.cluster;
    let root = if s.coll.has_root() {
        format!(", root {}", a.root)
    } else {
        String::new()
    };
    let mut lines = vec![
        format!(
            "oxccl-sim: {}{root} on {} node(s) x {} ranks = {} ranks, float, {} channel(s)",
            s.coll.name(),
            cl.nodes,
            cl.ranks_per_node,
            cl.nranks(),
            a.channels
        ),
        format!(
            "intra-node: {} us, {} GB/s; inter-node: {} us, {} GB/s; reduce: {} GB/s",
            a.intra_alpha_us, a.intra_gbps, a.inter_alpha_us, a.inter_gbps, a.reduce_gbps
        ),
    ];
    for (alg, why) in &s.skipped {
        if a.algo.contains(alg) || !matches!(why, Skip::Unsupported) {
            lines.push(format!("skipped {alg}: {why}"));
        }
    }
    lines
}

/// The table (or CSV) of predictions; returns the exit status.
fn simulate(a: &Args, s: &Setup) -> ExitCode {
    let sizes = sizes(a);
    if !a.csv {
        for line in header(a, s) {
            println!("# {line}");
        }
        println!("#");
        println!(
            "# {:>10}  {:<18}  {:>12}  {:>11}  {:>11}  {:>7}",
            "size(B)", "algorithm", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "vs best"
        );
    } else {
        println!("size,algorithm,time_us,algbw_gbps,busbw_gbps,best");
    }
    let mut wins = Vec::new();
    let mut curves: Vec<Vec<(f64, f64)>> = vec![Vec::new(); s.prepared.len()];
    for &size in &sizes {
        let preds = predict_all(s, size);
        let top = best(&preds);
        for (i, (prep, pr)) in s.prepared.iter().zip(&preds).enumerate() {
            let name = prep.algorithm.name();
            if a.csv {
                println!(
                    "{size},{name},{},{},{},{}",
                    pr.secs * 1e6,
                    pr.algbw,
                    pr.busbw,
                    u8::from(top == Some(i))
                );
                continue;
            }
            let ratio = match top {
                Some(t) => format!("{:.2}x", pr.secs / preds[t].secs),
                None => "-".into(),
            };
            println!(
                "  {size:>10}  {name:<18}  {}  {}  {}  {ratio:>7}{}",
                fit(pr.secs * 1e6, 12),
                fit(pr.algbw, 11),
                fit(pr.busbw, 11),
                if top == Some(i) { "  <- best" } else { "" }
            );
            if size > 0 && pr.busbw > 0.0 {
                curves[i].push((size as f64, pr.busbw));
            }
        }
        if let Some(t) = top {
            let ring = s
                .prepared
                .iter()
                .position(|x| x.algorithm == Algorithm::Ring);
            let over_next = preds
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != t)
                .min_by(|x, y| x.1.secs.total_cmp(&y.1.secs))
                .map(|(j, x)| (j, x.secs / preds[t].secs));
            wins.push(Win {
                size,
                winner: t,
                over_ring: ring
                    .filter(|&r| r != t)
                    .map(|r| preds[r].secs / preds[t].secs),
                over_next,
            });
        }
    }
    if !a.csv {
        println!("#");
        for line in footer(s, &wins) {
            println!("# {line}");
        }
    }
    if let Some(path) = &a.plot {
        let series: Vec<Series> = s
            .prepared
            .iter()
            .zip(curves)
            .filter(|(_, c)| !c.is_empty())
            .map(|(prep, points)| Series {
                label: prep.algorithm.name().to_owned(),
                points,
            })
            .collect();
        let title = format!(
            "Predicted bus bandwidth: {}, {} x {} ranks",
            s.coll.name(),
            s.cluster.nodes,
            s.cluster.ranks_per_node
        );
        if let Err(e) = plot::draw(path, &title, &series) {
            eprintln!("oxccl-sim: {e}");
            return ExitCode::from(EXIT_IO);
        }
        if !a.csv {
            println!("# wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.minbytes > a.maxbytes {
        return usage(format!(
            "-b {} is larger than -e {}",
            a.minbytes, a.maxbytes
        ));
    }
    if a.stepfactor > 1 && a.minbytes == 0 && a.maxbytes > 0 {
        return usage("-b 0 with -f: the sizes would never grow; start at -b 1 or more");
    }
    if a.stepfactor <= 1 && a.stepbytes == 0 && a.minbytes < a.maxbytes {
        return usage("-i 0 without -f: the sizes would never grow");
    }
    if let Some(path) = &a.validate {
        return validate::validate(&a, path);
    }
    let coll = a.collective.unwrap_or(Coll::AllReduce);
    match setup(&a, coll, a.root, &a.algo) {
        Ok(s) => simulate(&a, &s),
        Err(e) => usage(e),
    }
}
