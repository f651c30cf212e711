//! `--random N`: a soak of N collectives chosen by a seeded generator (the same sequence on
//! every rank), each checked against the reference; and the faults the fault-injection tests
//! plant in such a sequence (kill, stall, stop a rank before a given op).

use crate::cases::{self, Tally};
use crate::elem::TestElem;
use oxccl::{Communicator, DataType, ReduceOp, Result};
use std::time::Duration;

/// A fault planted before op `at` of the sequence on rank `rank`.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// SIGKILL itself.
    Kill { rank: u32, at: usize },
    /// Sleep this long (the others reach the op and wait).
    Stall { rank: u32, at: usize, secs: f64 },
    /// SIGSTOP itself (a hung process: alive, silent).
    Stop { rank: u32, at: usize },
}

impl Fault {
    fn at(&self) -> (u32, usize) {
        match *self {
            Fault::Kill { rank, at } | Fault::Stall { rank, at, .. } | Fault::Stop { rank, at } => {
                (rank, at)
            }
        }
    }
}

/// splitmix64: tiny, seedable, and the same on every rank.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One op of the sequence.
#[derive(Debug, Clone, Copy)]
struct Pick {
    kind: usize,
    op: ReduceOp,
    count: usize,
    in_place: bool,
    root: u32,
}

const KINDS: [&str; 9] = [
    "all_reduce",
    "reduce_scatter",
    "reduce",
    "all_gather",
    "broadcast",
    "all_to_all",
    "gather",
    "scatter",
    "send_recv",
];

fn pick(rng: &mut Rng, n: u32, max_count: usize) -> (DataType, Pick) {
    let dtypes = DataType::ALL;
    let dtype = dtypes[rng.below(dtypes.len())];
    // Mostly small counts (many ops), some up to `max_count`; edge counts often.
    let count = match rng.below(8) {
        0 => 0,
        1 => 1,
        2 => 7,
        3 | 4 => rng.below(1024) + 1,
        5 | 6 => rng.below(64 * 1024) + 1,
        _ => rng.below(max_count.max(1)) + 1,
    };
    let p = Pick {
        kind: rng.below(KINDS.len()),
        op: ReduceOp::ALL[rng.below(ReduceOp::ALL.len())],
        count,
        in_place: rng.below(2) == 1,
        root: rng.below(n as usize) as u32,
    };
    (dtype, p)
}

fn run_one<T: TestElem>(c: &mut Communicator, t: &mut Tally, p: Pick) -> Result<()> {
    match KINDS[p.kind] {
        "all_reduce" => cases::all_reduce::<T>(c, t, p.op, p.count, p.in_place),
        "reduce_scatter" => cases::reduce_scatter::<T>(c, t, p.op, p.count, p.in_place),
        "reduce" => cases::reduce::<T>(c, t, p.op, p.count, p.in_place, p.root),
        "all_gather" => cases::all_gather::<T>(c, t, p.count, p.in_place),
        "broadcast" => cases::broadcast::<T>(c, t, p.count, p.in_place, p.root),
        "all_to_all" => cases::all_to_all::<T>(c, t, p.count, p.in_place),
        "gather" => cases::gather::<T>(c, t, p.count, p.in_place, p.root),
        "scatter" => cases::scatter::<T>(c, t, p.count, p.in_place, p.root),
        _ => cases::send_recv_ring::<T>(c, t, p.count),
    }
}

/// Milliseconds since the Unix epoch (the fault scripts compare them across ranks).
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Sends `signal` to this process.
fn signal_self(signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status();
}

/// Runs `ops` random collectives from `seed` (counts up to `max_count`), planting `fault`.
pub fn soak(
    c: &mut Communicator,
    t: &mut Tally,
    ops: usize,
    seed: u64,
    max_count: usize,
    fault: Option<Fault>,
) -> Result<()> {
    let mut rng = Rng(seed);
    let me = c.rank();
    for i in 0..ops {
        let (dtype, p) = pick(&mut rng, c.size(), max_count);
        if let Some(f) = fault.filter(|f| f.at() == (me, i)) {
            let what = format!("{} {} count {}", KINDS[p.kind], dtype.name(), p.count);
            match f {
                Fault::Kill { .. } => {
                    eprintln!(
                        "rank {me}: killing myself with SIGKILL before op {i} ({what}) at unix \
                         ms {}",
                        unix_ms()
                    );
                    signal_self("-KILL");
                    std::thread::sleep(Duration::from_secs(600));
                }
                Fault::Stall { secs, .. } => {
                    eprintln!("rank {me}: stalling {secs} s before op {i} ({what})");
                    std::thread::sleep(Duration::from_secs_f64(secs));
                }
                Fault::Stop { .. } => {
                    eprintln!("rank {me}: stopping myself with SIGSTOP before op {i} ({what})");
                    signal_self("-STOP");
                }
            }
        }
        oxccl_tools::for_dtype!(dtype, Ok(()), run_one, c, t, p)?;
    }
    Ok(())
}
