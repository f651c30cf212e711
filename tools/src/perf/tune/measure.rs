//! Timing one configuration at one size: the communicators every candidate runs on, and the
//! loop that times them side by side.
//!
//! Each candidate (an algorithm forced, with a channel cap) gets its own communicator, split
//! from the job's with that configuration, so all candidates can be timed in one pass per
//! size: drift of a shared, noisy machine then hits every candidate of a size alike. A pass
//! is repeated and each point keeps its fastest repeat (noise only ever adds time).

use crate::perf::coll::Coll;
use crate::perf::ops::Op;
use oxccl::{Algorithm, Communicator, Config, DataType, ReduceOp, Result};
use std::time::Instant;

/// A communicator and what it was configured to run.
pub struct Runner {
    /// What the table calls it: `algorithm/channels`, `default` or `tuned`.
    pub label: String,
    /// The forced algorithm (`None`: the tuner decides).
    pub algorithm: Option<Algorithm>,
    /// The channel cap.
    pub channels: u32,
    /// The communicator.
    pub comm: Communicator,
}

impl Runner {
    /// Splits a communicator off `base` with `config` (every rank calls this alike).
    pub fn split(
        base: &mut Communicator,
        label: String,
        algorithm: Option<Algorithm>,
        config: Config,
    ) -> Result<Runner> {
        let channels = config.nchannels;
        let rank = base.rank() as i32;
        let comm = base
            .split_with_config(Some(0), rank, config)?
            .ok_or_else(|| oxccl::Error::Internal("tune: split returned no communicator".into()))?;
        Ok(Runner {
            label,
            algorithm,
            channels,
            comm,
        })
    }

    /// Whether this runner really runs its forced algorithm for `coll` at `block` elements
    /// (the tuner ignores a forced algorithm that cannot run the collective here, e.g.
    /// load/store without a shared window).
    pub fn runs(&self, coll: Coll, block: usize) -> bool {
        match (self.algorithm, collective(coll)) {
            (Some(a), Some(c)) => self.comm.choice(c, DataType::Float32, block).algorithm == a,
            (None, Some(_)) => true,
            _ => false,
        }
    }

    /// What the tuner picks on this communicator (for the `default` and `tuned` runners).
    pub fn picks(&self, coll: Coll, block: usize) -> String {
        match collective(coll) {
            Some(c) => {
                let ch = self.comm.choice(c, DataType::Float32, block);
                format!("{}/{}", ch.algorithm, ch.nchannels)
            }
            None => "-".into(),
        }
    }
}

/// The oxccl collective `coll` measures (root 0); `None` for sendrecv.
pub fn collective(coll: Coll) -> Option<oxccl::Collective> {
    use oxccl::Collective as C;
    Some(match coll {
        Coll::AllReduce => C::AllReduce,
        Coll::AllGather => C::AllGather,
        Coll::ReduceScatter => C::ReduceScatter,
        Coll::Broadcast => C::Broadcast { root: 0 },
        Coll::Reduce => C::Reduce { root: 0 },
        Coll::AllToAll => C::AllToAll,
        Coll::Gather => C::Gather { root: 0 },
        Coll::Scatter => C::Scatter { root: 0 },
        Coll::SendRecv => return None,
    })
}

/// Buffers for one collective at the largest size, reused for every size and runner.
pub struct Buffers {
    send: Vec<f32>,
    recv: Vec<f32>,
}

impl Buffers {
    /// Buffers for `coll` up to `max_bytes` on `nranks` ranks.
    pub fn new(coll: Coll, max_bytes: u64, nranks: u32) -> Self {
        let counts = coll.counts(max_bytes as usize / 4, 4, nranks as usize);
        Buffers {
            send: vec![1.0; counts.send.max(1)],
            recv: vec![0.0; counts.recv.max(1)],
        }
    }
}

/// The per-rank block of `coll` at `bytes` (the larger buffer, as oxccl-perf's sizes), in
/// elements.
pub fn block_elems(coll: Coll, bytes: u64, nranks: u32) -> usize {
    coll.counts(bytes as usize / 4, 4, nranks as usize).param
}

/// Seconds per op of `coll` at `bytes` on `runner`, the slowest rank's: `warmup` untimed
/// ops, then as many timed ops as fit `budget_s` (from the first op's time, agreed by all
/// ranks through `base`), at least one and at most `max_iters`.
#[allow(clippy::too_many_arguments)]
pub fn time_op(
    base: &mut Communicator,
    runner: &mut Runner,
    bufs: &mut Buffers,
    coll: Coll,
    bytes: u64,
    warmup: u32,
    max_iters: u32,
    budget_s: f64,
) -> Result<f64> {
    let nranks = runner.comm.size();
    let op = Op {
        coll,
        in_place: false,
        counts: coll.counts(bytes as usize / 4, 4, nranks as usize),
        redop: ReduceOp::Sum,
        root: 0,
        rank: runner.comm.rank(),
        nranks,
    };
    let mut once = |comm: &mut Communicator| -> Result<()> {
        let mut g = comm.group();
        op.issue(&mut g, &bufs.send, &mut bufs.recv)?;
        g.run()
    };
    for _ in 0..warmup {
        once(&mut runner.comm)?;
    }
    let start = Instant::now();
    once(&mut runner.comm)?;
    let mut first = [start.elapsed().as_secs_f64()];
    base.all_reduce_in_place(&mut first, ReduceOp::Max)?;
    let iters = ((budget_s / first[0].max(1e-9)) as u32).clamp(1, max_iters);
    base.barrier()?;
    let start = Instant::now();
    for _ in 0..iters {
        once(&mut runner.comm)?;
    }
    let mut per_op = [start.elapsed().as_secs_f64() / f64::from(iters)];
    base.all_reduce_in_place(&mut per_op, ReduceOp::Max)?;
    Ok(per_op[0])
}
