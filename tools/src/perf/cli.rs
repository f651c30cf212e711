//! The command line: nccl-tests' flags with their meanings and defaults, plus oxccl's own.
//!
//! Parsing (clap) rejects unknown flags and malformed values with status 2;
//! [`Options::from_flags`] then checks what depends on several flags (also status 2).

use super::coll::Coll;
use clap::{Args, Parser, Subcommand};
use oxccl::{Algorithm, DataType, ReduceOp, TransportChoice};
use std::path::PathBuf;
use std::time::Duration;

/// `oxccl-perf`: the collective comes first, or `plot`.
#[derive(Parser, Debug)]
#[command(
    name = "oxccl-perf",
    about = "Bandwidth and correctness of oxccl's collectives, in nccl-tests' output format",
    after_help = "Ranks come from the launcher (oxccl-run -n N, mpirun, srun, torchrun), or -t N runs \
                  N ranks as threads of this process. The nccl-tests names (all_reduce_perf, ...) \
                  are installed as aliases that take the flags directly."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// A subcommand of `oxccl-perf`.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// All-reduce (busbw = algbw × 2(n-1)/n).
    #[command(name = "all_reduce")]
    AllReduce(Flags),
    /// All-gather (busbw = algbw × (n-1)/n).
    #[command(name = "all_gather")]
    AllGather(Flags),
    /// Reduce-scatter (busbw = algbw × (n-1)/n).
    #[command(name = "reduce_scatter")]
    ReduceScatter(Flags),
    /// Broadcast from -r (busbw = algbw).
    #[command(name = "broadcast")]
    Broadcast(Flags),
    /// Reduce onto -r (busbw = algbw).
    #[command(name = "reduce")]
    Reduce(Flags),
    /// All-to-all (busbw = algbw × (n-1)/n).
    #[command(name = "alltoall")]
    AllToAll(Flags),
    /// Send to the next rank, receive from the previous (busbw = algbw).
    #[command(name = "sendrecv")]
    SendRecv(Flags),
    /// Gather onto -r with grouped send/recv (busbw = algbw × (n-1)/n).
    #[command(name = "gather")]
    Gather(Flags),
    /// Scatter from -r with grouped send/recv (busbw = algbw × (n-1)/n).
    #[command(name = "scatter")]
    Scatter(Flags),
    /// Draw busbw against size from results files (-J output of oxccl-perf or a peer).
    Plot(PlotArgs),
    /// Time every algorithm and channel cap, write a tuning file (OXCCL_TUNING_FILE) and
    /// check the tuner against the best forced algorithm.
    Tune(super::tune::TuneArgs),
}

/// A subcommand that is not a benchmark of one collective.
#[derive(Debug)]
pub enum Other {
    /// `oxccl-perf plot`.
    Plot(PlotArgs),
    /// `oxccl-perf tune`.
    Tune(Box<super::tune::TuneArgs>),
}

impl Cmd {
    /// The collective and its flags, or the arguments of `plot` or `tune`.
    pub fn into_run(self) -> Result<(Coll, Flags), Other> {
        Ok(match self {
            Cmd::AllReduce(f) => (Coll::AllReduce, f),
            Cmd::AllGather(f) => (Coll::AllGather, f),
            Cmd::ReduceScatter(f) => (Coll::ReduceScatter, f),
            Cmd::Broadcast(f) => (Coll::Broadcast, f),
            Cmd::Reduce(f) => (Coll::Reduce, f),
            Cmd::AllToAll(f) => (Coll::AllToAll, f),
            Cmd::SendRecv(f) => (Coll::SendRecv, f),
            Cmd::Gather(f) => (Coll::Gather, f),
            Cmd::Scatter(f) => (Coll::Scatter, f),
            Cmd::Plot(p) => return Err(Other::Plot(p)),
            Cmd::Tune(t) => return Err(Other::Tune(Box::new(t))),
        })
    }
}

/// `oxccl-perf plot FILE... -o OUT.svg`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Results files to overlay (one line per file, or per type/operator/root in a file).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

/// The benchmark flags (nccl-tests' names, meanings and defaults, plus oxccl's). A flag
/// given twice takes its last value, as with nccl-tests' getopt.
#[derive(Parser, Debug, Clone)]
#[command(
    args_override_self = true,
    about = "Bandwidth and correctness of one oxccl collective, in nccl-tests' output format",
    after_help = "Ranks come from the launcher (oxccl-run -n N, mpirun, srun, torchrun), or -t N \
                  runs N ranks as threads of this process. Exit status: 0 all checks passed, 7 a \
                  result was wrong, 2 bad command line, 3 oxccl failed, 4 timeout."
)]
pub struct Flags {
    /// Ranks as threads of this process (only without a launcher).
    #[arg(short = 't', long = "nthreads", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub nthreads: u32,
    /// Devices per thread: accepted for compatibility, must be 1 (a rank is a CPU rank).
    #[arg(short = 'g', long = "ngpus", default_value_t = 1)]
    pub ngpus: u32,
    /// Smallest size in bytes (K, M, G: powers of 1024).
    #[arg(short = 'b', long = "minbytes", default_value = "32M", value_parser = parse_size)]
    pub minbytes: u64,
    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "32M", value_parser = parse_size)]
    pub maxbytes: u64,
    /// Increment between sizes when -f is not above 1.
    #[arg(short = 'i', long = "stepbytes", default_value = "1M", value_parser = parse_size)]
    pub stepbytes: u64,
    /// Factor between sizes (1: use -i).
    #[arg(short = 'f', long = "stepfactor", default_value_t = 1)]
    pub stepfactor: u64,
    /// Timed iterations per size.
    #[arg(short = 'n', long = "iters", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Untimed iterations per size before the measurements (sizes doubling from -b to -e).
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 1)]
    pub warmup_iters: u32,
    /// Operations aggregated in one group per iteration.
    #[arg(short = 'm', long = "agg_iters", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub agg_iters: u32,
    /// Times to run the whole size sweep, printing each (0: forever).
    #[arg(short = 'N', long = "run_cycles", default_value_t = 1)]
    pub run_cycles: u32,
    /// Checked runs per size and placement (0: no check, #wrong shows N/A).
    #[arg(short = 'c', long = "check", default_value_t = 1)]
    pub check: u32,
    /// Reduction operator: sum, prod, max, min, avg or all.
    #[arg(short = 'o', long = "op", default_value = "sum", value_parser = parse_ops)]
    pub op: OpSel,
    /// Datatype: int8, uint8, int32, uint32, int64, uint64, half, float, double, bfloat16 or all.
    #[arg(short = 'd', long = "datatype", default_value = "float", value_parser = parse_types)]
    pub datatype: TypeSel,
    /// Root rank of broadcast, reduce, gather, scatter, or all.
    #[arg(short = 'r', long = "root", default_value = "0", value_parser = parse_root)]
    pub root: RootSel,
    /// 0: each iteration's -m ops run as one group; 1: one op at a time and a barrier after
    /// each; 2: one op at a time; 3: a barrier after each iteration, not timed.
    #[arg(short = 'z', long = "blocking", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=3))]
    pub blocking: u8,
    /// Time reported: 0 rank 0's, 1 the average over ranks, 2 the minimum, 3 the maximum.
    #[arg(short = 'a', long = "average", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(0..=3))]
    pub average: u8,
    /// Fail an operation that makes no progress for this many seconds (0: OXCCL_TIMEOUT).
    #[arg(short = 'T', long = "timeout", default_value_t = 0)]
    pub timeout: u64,
    /// Buffer registration (nccl-tests' -R): 0 ordinary memory; 1 or 2 buffers from
    /// `alloc_shared`, which the other ranks of the host read in place.
    #[arg(short = 'R', long = "local_register", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub local_register: u8,
    /// Write the results as JSON to this file.
    #[arg(short = 'J', long = "output_file")]
    pub output_file: Option<PathBuf>,
    /// Force an algorithm (sets Config.algorithm; e.g. ring).
    #[arg(long = "algo", value_parser = parse_algo)]
    pub algo: Option<Algorithm>,
    /// Transport between ranks: auto, shm, tcp or ib.
    #[arg(long = "transport", value_parser = parse_transport)]
    pub transport: Option<TransportChoice>,
    /// Draw busbw against size to this SVG file (with the --compare files overlaid).
    #[arg(long = "plot")]
    pub plot: Option<PathBuf>,
    /// A results file to compare with: adds a column of busbw ratios (this run / that file).
    #[arg(long = "compare")]
    pub compare: Vec<PathBuf>,
    /// Buffers in the memory of this GPU (ordinal), the collectives ordered on a CUDA stream
    /// through `oxccl::cuda` (as nccl-tests always runs); several ranks may share one GPU.
    #[arg(long = "gpu", value_name = "ORDINAL")]
    pub gpu: Option<usize>,
}

/// The `-o` choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSel(pub Vec<ReduceOp>);

/// The `-d` choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSel(pub Vec<DataType>);

/// The `-r` choice: one root, or every rank in turn (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootSel(pub Option<u32>);

/// How the time of one size is combined over the ranks (`-a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Average {
    /// Rank 0's time.
    Rank0,
    /// The mean over ranks.
    Mean,
    /// The fastest rank's.
    Min,
    /// The slowest rank's.
    Max,
}

/// A validated benchmark request.
#[derive(Debug, Clone)]
pub struct Options {
    /// The collective.
    pub coll: Coll,
    /// The program name printed in the header (`all_reduce_perf`).
    pub program: String,
    /// The command line, for the results file.
    pub command: String,
    /// The command line's words.
    pub args: Vec<String>,
    /// The raw flags (for the header and the results file).
    pub flags: Flags,
    /// Operators to run (every collective but the reducing ones and sendrecv runs `[Sum]`).
    pub ops: Vec<ReduceOp>,
    /// Datatypes to run.
    pub dtypes: Vec<DataType>,
    /// `-a`.
    pub average: Average,
    /// `-T`, when set.
    pub timeout: Option<Duration>,
}

impl Options {
    /// Checks what depends on several flags.
    pub fn from_flags(coll: Coll, flags: Flags, args: Vec<String>) -> Result<Options, String> {
        if flags.ngpus != 1 {
            return Err(format!(
                "-g {}: oxccl ranks are CPU ranks, one per thread or process; -g must be 1 \
                 (use -t or a launcher for more ranks)",
                flags.ngpus
            ));
        }
        if flags.gpu.is_some() {
            if flags.local_register > 0 {
                return Err("--gpu with -R: registered buffers are host memory".into());
            }
            if matches!(coll, Coll::Gather | Coll::Scatter) {
                return Err(format!("--gpu: {coll} does not take GPU buffers yet"));
            }
            if flags.agg_iters > 1 {
                return Err(
                    "--gpu with -m: aggregated operations are not on GPU buffers yet".into(),
                );
            }
        }
        if flags.minbytes > flags.maxbytes {
            return Err(format!(
                "-b {} is larger than -e {}",
                flags.minbytes, flags.maxbytes
            ));
        }
        if flags.stepfactor > 1 && flags.minbytes == 0 && flags.maxbytes > 0 {
            return Err("-b 0 with -f: the sizes would never grow; start at -b 1 or more".into());
        }
        if flags.stepfactor <= 1 && flags.stepbytes == 0 && flags.minbytes < flags.maxbytes {
            return Err("-i 0 without -f: the sizes would never grow".into());
        }
        let ops = if coll.shows_op() {
            flags.op.0.clone()
        } else {
            vec![ReduceOp::Sum]
        };
        let average = match flags.average {
            0 => Average::Rank0,
            1 => Average::Mean,
            2 => Average::Min,
            _ => Average::Max,
        };
        let timeout = (flags.timeout > 0).then(|| Duration::from_secs(flags.timeout));
        Ok(Options {
            coll,
            program: coll.perf_name(),
            command: args.join(" "),
            args,
            dtypes: flags.datatype.0.clone(),
            ops,
            average,
            timeout,
            flags,
        })
    }

    /// The benchmark sizes in bytes, in order (one sweep).
    pub fn sizes(&self) -> Vec<u64> {
        let f = &self.flags;
        let mut out = Vec::new();
        let mut s = f.minbytes;
        while s <= f.maxbytes {
            out.push(s);
            let next = if f.stepfactor > 1 {
                s.saturating_mul(f.stepfactor)
            } else {
                s.saturating_add(f.stepbytes)
            };
            if next == s {
                break;
            }
            s = next;
        }
        out
    }

    /// The warm-up sizes: doubling from `-b` to `-e`, as nccl-tests.
    pub fn warmup_sizes(&self) -> Vec<u64> {
        let mut out = Vec::new();
        let mut s = self.flags.minbytes;
        while s <= self.flags.maxbytes {
            out.push(s);
            s = if s == 0 { 1 } else { s.saturating_mul(2) };
            if out.len() > 64 {
                break;
            }
        }
        out
    }
}

/// A size in bytes: a number (fractions allowed) with an optional K, M or G suffix (powers
/// of 1024, either case) and an optional trailing `B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix(['B', 'b'])
        .filter(|r| !r.is_empty())
        .unwrap_or(t);
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let unit: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("{text:?}: unknown size suffix {c:?} (K, M or G)")),
            };
            (&t[..i], unit)
        }
        _ => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 8, 64K, 1.5M, 2G)"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("{text:?} is not a size (must be 0 or more)"));
    }
    let bytes = v * unit as f64;
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

fn parse_ops(text: &str) -> Result<OpSel, String> {
    if text == "all" {
        return Ok(OpSel(ReduceOp::ALL.to_vec()));
    }
    ReduceOp::ALL
        .into_iter()
        .find(|o| o.name() == text)
        .map(|o| OpSel(vec![o]))
        .ok_or_else(|| format!("unknown operator {text:?} (sum, prod, max, min, avg or all)"))
}

fn parse_types(text: &str) -> Result<TypeSel, String> {
    if text == "all" {
        return Ok(TypeSel(DataType::ALL.to_vec()));
    }
    DataType::ALL
        .into_iter()
        .find(|d| d.name() == text)
        .map(|d| TypeSel(vec![d]))
        .ok_or_else(|| {
            let names: Vec<&str> = DataType::ALL.iter().map(|d| d.name()).collect();
            format!("unknown datatype {text:?} ({} or all)", names.join(", "))
        })
}

fn parse_root(text: &str) -> Result<RootSel, String> {
    if text == "all" {
        return Ok(RootSel(None));
    }
    text.parse()
        .map(|r| RootSel(Some(r)))
        .map_err(|_| format!("{text:?} is not a root (a rank number or all)"))
}

pub(crate) fn parse_algo(text: &str) -> Result<Algorithm, String> {
    text.parse().map_err(|e| format!("{e}"))
}

pub(crate) fn parse_transport(text: &str) -> Result<TransportChoice, String> {
    match text {
        "auto" => Ok(TransportChoice::Auto),
        "shm" => Ok(TransportChoice::Shm),
        "tcp" => Ok(TransportChoice::Tcp),
        "ib" => Ok(TransportChoice::Ib),
        _ => Err(format!("unknown transport {text:?} (auto, shm, tcp or ib)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Result<Options, String> {
        let mut all = vec!["all_reduce_perf"];
        all.extend_from_slice(args);
        let flags = Flags::try_parse_from(all).map_err(|e| e.to_string())?;
        Options::from_flags(Coll::AllReduce, flags, Vec::new())
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("8"), Ok(8));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("16MB"), Ok(16 << 20));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn defaults_are_nccl_tests_defaults() {
        let o = opts(&[]).unwrap();
        let f = &o.flags;
        assert_eq!(
            (f.minbytes, f.maxbytes, f.stepbytes),
            (32 << 20, 32 << 20, 1 << 20)
        );
        assert_eq!(
            (f.stepfactor, f.iters, f.warmup_iters, f.agg_iters),
            (1, 20, 1, 1)
        );
        assert_eq!((f.run_cycles, f.check, f.blocking), (1, 1, 0));
        assert_eq!(o.average, Average::Mean);
        assert_eq!(o.ops, vec![ReduceOp::Sum]);
        assert_eq!(o.dtypes, vec![DataType::Float32]);
        assert_eq!(f.root, RootSel(Some(0)));
        assert_eq!(o.sizes(), vec![32 << 20]);
    }

    #[test]
    fn size_sweeps() {
        let o = opts(&["-b", "8", "-e", "64K", "-f", "4"]).unwrap();
        assert_eq!(o.sizes(), vec![8, 32, 128, 512, 2048, 8192, 32768]);
        let o = opts(&["-b", "1K", "-e", "4K", "-i", "1K"]).unwrap();
        assert_eq!(o.sizes(), vec![1024, 2048, 3072, 4096]);
        assert_eq!(o.warmup_sizes(), vec![1024, 2048, 4096]);
        let o = opts(&["-b", "0", "-e", "0"]).unwrap();
        assert_eq!(o.sizes(), vec![0]);
    }

    #[test]
    fn the_last_of_repeated_flags_wins() {
        let o = opts(&["-f", "2", "-b", "8", "-e", "1K", "-f", "1", "-i", "1K"]).unwrap();
        assert_eq!(o.flags.stepfactor, 1);
        let c = Cli::try_parse_from(["oxccl-perf", "reduce", "-d", "half", "-d", "int8"]).unwrap();
        let (_, f) = c.cmd.into_run().unwrap();
        assert_eq!(f.datatype.0, vec![DataType::Int8]);
    }

    #[test]
    fn all_selects_every_type_op_and_root() {
        let o = opts(&["-d", "all", "-o", "all", "-r", "all"]).unwrap();
        assert_eq!(o.dtypes.len(), 12);
        assert_eq!(o.ops.len(), 5);
        assert_eq!(o.flags.root, RootSel(None));
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            &["-d", "float32"][..],
            &["-o", "mulsum"],
            &["-b", "1M", "-e", "1K"],
            &["-g", "2"],
            &["-n", "0"],
            &["-z", "4"],
            &["-a", "9"],
            &["--transport", "verbs9"],
            &["--algo", "treee"],
            &["-b", "0", "-e", "1K", "-f", "2"],
            &["--frobnicate"],
        ] {
            assert!(opts(bad).is_err(), "{bad:?} accepted");
        }
    }
}
