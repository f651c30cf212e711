//! Data parallelism: gradients packed into buckets and summed across ranks with oxccl.
//!
//! Each rank computes the gradient of its share of the global batch with the loss scaled by
//! `1 / dp`, so that the **sum** over ranks equals the single-process gradient of the mean
//! loss over the whole global batch (every rank holds the same number of samples). Gradients
//! are packed, in reverse parameter order (the order a backward pass produces them, as in
//! PyTorch DDP), into flat f32 buckets of at most `bucket_bytes` (a parameter larger than a
//! bucket gets one of its own), summed in place, and unpacked.
//!
//! candle's `backward` returns every gradient at once, so communication cannot overlap the
//! backward pass as in DDP. What does overlap: bucket `k`'s all-reduce is launched as a
//! [`Group`](oxccl::Group) as soon as it is packed, and the engine is polled
//! ([`Pending::test`](oxccl::Pending::test)) while bucket `k + 1` is packed. A communicator
//! has one group in flight at a time (the [`Pending`](oxccl::Pending) borrows it), so bucket
//! `k` completes before bucket `k + 1` is launched.

use candle_core::backprop::GradStore;
use candle_core::{Error, Result, Var};
use oxccl::{Communicator, ReduceOp};
use std::time::{Duration, Instant};

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

/// One rank's view of the data-parallel group: its communicator (none for a single
/// process) and the bucket plan.
pub struct DataParallel {
    comm: Option<Communicator>,
    buckets: Vec<Vec<usize>>,
    sizes: Vec<usize>,
    sync_time: Duration,
}

impl DataParallel {
    /// The group for parameters of `sizes` elements, over `comm` (`None`: one rank).
    pub fn new(comm: Option<Communicator>, sizes: Vec<usize>, bucket_bytes: usize) -> Self {
        DataParallel {
            comm,
            buckets: plan_buckets(&sizes, bucket_bytes),
            sizes,
            sync_time: Duration::ZERO,
        }
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank() as usize)
    }

    /// Number of data-parallel ranks.
    pub fn size(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.size() as usize)
    }

    /// The buckets (parameter indices), in the order they are reduced.
    pub fn buckets(&self) -> &[Vec<usize>] {
        &self.buckets
    }

    /// Time spent synchronising (packing, all-reducing, unpacking) since the last call.
    pub fn take_sync_time(&mut self) -> Duration {
        std::mem::take(&mut self.sync_time)
    }

    /// The gradients of `vars` in `grads`, summed over the ranks, one flat buffer per
    /// parameter in `vars` order. A parameter without a gradient counts as zeros.
    pub fn reduce_grads(&mut self, grads: &GradStore, vars: &[Var]) -> Result<Vec<Vec<f32>>> {
        let start = Instant::now();
        if vars.len() != self.sizes.len() {
            candle_core::bail!(
                "{} parameters, the plan has {}",
                vars.len(),
                self.sizes.len()
            );
        }
        let mut bufs: Vec<Vec<f32>> = vec![Vec::new(); self.buckets.len()];
        if let Some(first) = bufs.first_mut() {
            pack(&self.buckets[0], grads, vars, first, None)?;
        }
        if let Some(comm) = self.comm.as_mut() {
            for k in 0..bufs.len() {
                let (head, tail) = bufs.split_at_mut(k + 1);
                let mut g = comm.group();
                g.all_reduce_in_place(head[k].as_mut_slice(), ReduceOp::Sum)
                    .map_err(Error::wrap)?;
                let mut pending = g.launch().map_err(Error::wrap)?;
                if let Some(next) = tail.first_mut() {
                    pack(&self.buckets[k + 1], grads, vars, next, Some(&mut pending))?;
                }
                pending.wait().map_err(Error::wrap)?;
            }
        } else {
            for (bucket, buf) in self.buckets.iter().zip(bufs.iter_mut()).skip(1) {
                pack(bucket, grads, vars, buf, None)?;
            }
        }
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); vars.len()];
        for (bucket, buf) in self.buckets.iter().zip(&bufs) {
            let mut at = 0;
            for &i in bucket {
                out[i] = buf[at..at + self.sizes[i]].to_vec();
                at += self.sizes[i];
            }
        }
        self.sync_time += start.elapsed();
        Ok(out)
    }

    /// Sums `xs` over the ranks in place (losses and other scalars).
    pub fn sum(&mut self, xs: &mut [f32]) -> Result<()> {
        let start = Instant::now();
        if let Some(comm) = self.comm.as_mut() {
            comm.all_reduce_in_place(xs, ReduceOp::Sum)
                .map_err(Error::wrap)?;
        }
        self.sync_time += start.elapsed();
        Ok(())
    }
}

/// Appends the gradients of `bucket`'s parameters to `buf`, polling `pending` (the previous
/// bucket's all-reduce) after each so it keeps moving meanwhile.
fn pack(
    bucket: &[usize],
    grads: &GradStore,
    vars: &[Var],
    buf: &mut Vec<f32>,
    mut pending: Option<&mut oxccl::Pending<'_>>,
) -> Result<()> {
    for &i in bucket {
        match grads.get(vars[i].as_tensor()) {
            Some(g) => buf.extend(g.flatten_all()?.to_vec1::<f32>()?),
            None => buf.resize(buf.len() + vars[i].elem_count(), 0.0),
        }
        if let Some(p) = pending.as_deref_mut() {
            p.test().map_err(Error::wrap)?;
        }
    }
    Ok(())
}
