//! Data parallelism: gradients packed into buckets and summed across ranks with oxccl.
//!
//! Each rank computes the gradient of its share of the global batch with the loss scaled by
//! `1 / dp`, so that the **sum** over ranks equals the single-process gradient of the mean
//! loss over the whole global batch (every rank holds the same number of samples). Gradients
//! are packed, in reverse parameter order (the order a backward pass produces them, as in
//! PyTorch DDP), into flat f32 buckets of at most `bucket_bytes` (a parameter larger than a
//! bucket gets one of its own), summed, and unpacked.
//!
//! The dp communicator lives on a thread of its own (`dp/worker.rs`), so a bucket's
//! all-reduce runs while the training thread computes. [`DataParallel::overlap`] takes each
//! parameter's gradient as soon as the backward pass has finished it (the trainer runs the
//! backward layer by layer, `model/segments.rs`) and hands a bucket to that thread the
//! moment its last gradient arrives, as DDP's autograd hooks do; [`GradSync::finish`] then
//! waits for what is still in flight and reports how much of the all-reduce time the
//! backward pass hid. [`DataParallel::reduce_grads`] is the same for a [`GradStore`] that
//! is already complete (pipeline stages, tests): packing bucket `k + 1` overlaps bucket `k`.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use oxccl::Communicator;
use std::time::{Duration, Instant};

mod worker;

use worker::Worker;

/// PyTorch DDP's default bucket size.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// Groups parameter indices into buckets: reverse order, at most `cap_bytes` of f32 each
/// (a larger parameter alone).
pub fn plan_buckets(sizes: &[usize], cap_bytes: usize) -> Vec<Vec<usize>> {
    let cap = (cap_bytes / 4).max(1);
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut fill = 0;
    for i in (0..sizes.len()).rev() {
        match buckets.last_mut() {
            Some(b) if fill + sizes[i] <= cap => b.push(i),
            _ => {
                buckets.push(vec![i]);
                fill = 0;
            }
        }
        fill += sizes[i];
    }
    buckets
}

/// How much of one step's gradient all-reduce the backward pass hid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlapStats {
    /// Time the all-reduces took on the communication thread, summed over buckets.
    pub comm: Duration,
    /// Time the training thread waited for them after its backward pass.
    pub exposed: Duration,
}

impl OverlapStats {
    /// The share of the all-reduce time that ran behind the backward pass, in `[0, 1]`.
    pub fn hidden_share(&self) -> f64 {
        let comm = self.comm.as_secs_f64();
        if comm <= 0.0 {
            return 0.0;
        }
        (1.0 - self.exposed.as_secs_f64() / comm).clamp(0.0, 1.0)
    }
}

/// One rank's view of the data-parallel group: the communication thread (none for a single
/// process) and the bucket plan.
pub struct DataParallel {
    worker: Option<Worker>,
    rank: usize,
    size: usize,
    buckets: Vec<Vec<usize>>,
    /// Each parameter's bucket and offset in it, in floats.
    slot: Vec<(usize, usize)>,
    /// Each bucket's length in floats.
    bucket_len: Vec<usize>,
    sizes: Vec<usize>,
    sync_time: Duration,
}

impl DataParallel {
    /// The group for parameters of `sizes` elements, over `comm` (`None`: one rank). The
    /// communicator moves to the group's communication thread; the error says why that
    /// thread could not start.
    pub fn new(comm: Option<Communicator>, sizes: Vec<usize>, bucket_bytes: usize) -> Result<Self> {
        let (rank, size) = comm
            .as_ref()
            .map_or((0, 1), |c| (c.rank() as usize, c.size() as usize));
        let buckets = plan_buckets(&sizes, bucket_bytes);
        let mut slot = vec![(0, 0); sizes.len()];
        let mut bucket_len = Vec::with_capacity(buckets.len());
        for (b, bucket) in buckets.iter().enumerate() {
            let mut at = 0;
            for &i in bucket {
                slot[i] = (b, at);
                at += sizes[i];
            }
            bucket_len.push(at);
        }
        // A one-rank group sums nothing: no thread.
        let worker = comm
            .filter(|c| c.size() > 1)
            .map(Worker::start)
            .transpose()?;
        Ok(DataParallel {
            worker,
            rank,
            size,
            buckets,
            slot,
            bucket_len,
            sizes,
            sync_time: Duration::ZERO,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of data-parallel ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The buckets (parameter indices), in the order they are reduced.
    pub fn buckets(&self) -> &[Vec<usize>] {
        &self.buckets
    }

    /// Time the training thread spent synchronising (packing, waiting for all-reduces,
    /// unpacking) since the last call.
    pub fn take_sync_time(&mut self) -> Duration {
        std::mem::take(&mut self.sync_time)
    }

    /// Starts a step's gradient synchronisation: hand it each parameter's gradient with
    /// [`GradSync::ready`] as soon as it is final, then call [`GradSync::finish`].
    pub fn overlap(&mut self) -> GradSync<'_> {
        let bufs = self.bucket_len.iter().map(|&n| vec![0.0; n]).collect();
        let missing = self.buckets.iter().map(Vec::len).collect();
        GradSync {
            dp: self,
            bufs,
            missing,
            seen: Vec::new(),
            launched: 0,
            comm: Duration::ZERO,
        }
    }

    /// The gradients of `vars` in `grads`, summed over the ranks, one flat buffer per
    /// parameter in `vars` order. A parameter without a gradient counts as zeros.
    pub fn reduce_grads(&mut self, grads: &GradStore, vars: &[Var]) -> Result<Vec<Vec<f32>>> {
        if vars.len() != self.sizes.len() {
            candle_core::bail!(
                "{} parameters, the plan has {}",
                vars.len(),
                self.sizes.len()
            );
        }
        let order: Vec<usize> = self.buckets.iter().flatten().copied().collect();
        let mut sync = self.overlap();
        for i in order {
            sync.ready(i, grads.get(vars[i].as_tensor()))?;
        }
        Ok(sync.finish()?.0)
    }

    /// Sums `xs` over the ranks in place (losses and other scalars).
    pub fn sum(&mut self, xs: &mut [f32]) -> Result<()> {
        let start = Instant::now();
        if let Some(w) = self.worker.as_mut() {
            if w.in_flight() != 0 {
                candle_core::bail!("a gradient synchronisation is still in flight");
            }
            w.submit(usize::MAX, xs.to_vec())?;
            let (_, summed) = w.receive()?.into_result()?;
            xs.copy_from_slice(&summed);
        }
        self.sync_time += start.elapsed();
        Ok(())
    }
}

/// One step's gradient synchronisation in progress ([`DataParallel::overlap`]).
pub struct GradSync<'a> {
    dp: &'a mut DataParallel,
    bufs: Vec<Vec<f32>>,
    /// Gradients each bucket still waits for.
    missing: Vec<usize>,
    /// Which parameters have been handed in (allocated on first use).
    seen: Vec<bool>,
    /// Buckets handed to the communication thread so far (always a prefix, so every rank
    /// submits them in the same order).
    launched: usize,
    comm: Duration,
}

impl GradSync<'_> {
    /// Parameter `param`'s final gradient (`None`: it got none, zeros). Launches the
    /// all-reduce of every bucket that is now complete and whose predecessors are launched.
    pub fn ready(&mut self, param: usize, grad: Option<&Tensor>) -> Result<()> {
        let start = Instant::now();
        let n = self.dp.sizes.len();
        if param >= n {
            candle_core::bail!("parameter {param} out of range ({n} parameters)");
        }
        if self.seen.is_empty() {
            self.seen = vec![false; n];
        }
        if std::mem::replace(&mut self.seen[param], true) {
            candle_core::bail!("parameter {param}'s gradient was handed in twice");
        }
        let (b, at) = self.dp.slot[param];
        let len = self.dp.sizes[param];
        if let Some(g) = grad {
            let flat = g.flatten_all()?.to_vec1::<f32>()?;
            if flat.len() != len {
                candle_core::bail!(
                    "parameter {param}'s gradient has {} elements, the parameter {len}",
                    flat.len()
                );
            }
            self.bufs[b][at..at + len].copy_from_slice(&flat);
        }
        self.missing[b] -= 1;
        self.launch_complete()?;
        self.dp.sync_time += start.elapsed();
        Ok(())
    }

    /// Submits the complete buckets at the front of the queue.
    fn launch_complete(&mut self) -> Result<()> {
        while self.launched < self.bufs.len() && self.missing[self.launched] == 0 {
            if let Some(w) = self.dp.worker.as_mut() {
                let data = std::mem::take(&mut self.bufs[self.launched]);
                w.submit(self.launched, data)?;
            }
            self.launched += 1;
        }
        Ok(())
    }

    /// Waits for every bucket (launching those still missing gradients, which count as
    /// zeros) and returns the summed gradients, one flat buffer per parameter, with how
    /// much of the communication the caller's work since [`DataParallel::overlap`] hid.
    pub fn finish(mut self) -> Result<(Vec<Vec<f32>>, OverlapStats)> {
        let start = Instant::now();
        self.missing.iter_mut().for_each(|m| *m = 0);
        self.launch_complete()?;
        if let Some(w) = self.dp.worker.as_mut() {
            while w.in_flight() > 0 {
                let done = w.receive()?;
                self.comm += done.busy;
                let (b, data) = done.into_result()?;
                self.bufs[b] = data;
            }
        }
        let exposed = start.elapsed();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); self.dp.sizes.len()];
        for (i, o) in out.iter_mut().enumerate() {
            let (b, at) = self.dp.slot[i];
            *o = self.bufs[b][at..at + self.dp.sizes[i]].to_vec();
        }
        self.dp.sync_time += start.elapsed();
        let stats = OverlapStats {
            comm: self.comm,
            exposed,
        };
        Ok((out, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_reverse_order_and_capped() {
        // 4-byte floats: a 40-byte cap holds 10.
        let plan = plan_buckets(&[4, 4, 4, 20, 2], 40);
        assert_eq!(plan, vec![vec![4], vec![3], vec![2, 1], vec![0]]);
    }

    #[test]
    fn hidden_share_is_clamped() {
        let s = |c: u64, e: u64| OverlapStats {
            comm: Duration::from_millis(c),
            exposed: Duration::from_millis(e),
        };
        assert_eq!(s(100, 25).hidden_share(), 0.75);
        assert_eq!(s(100, 250).hidden_share(), 0.0);
        assert_eq!(s(0, 5).hidden_share(), 0.0);
    }

    #[test]
    fn single_rank_sync_returns_the_gradients() {
        let mut dp = DataParallel::new(None, vec![2, 3], 8).unwrap();
        let mut sync = dp.overlap();
        let g = Tensor::new(&[1.0f32, 2.0, 3.0], &candle_core::Device::Cpu).unwrap();
        sync.ready(1, Some(&g)).unwrap();
        assert!(sync.ready(1, Some(&g)).is_err(), "twice must be refused");
        let (out, _) = sync.finish().unwrap();
        assert_eq!(out, vec![vec![0.0, 0.0], vec![1.0, 2.0, 3.0]]);
    }
}
