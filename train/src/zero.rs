//! ZeRO stages 1 and 2 (Rajbhandari et al., 2020) over a data-parallel communicator.
//!
//! The parameters, in the model's order (the order [`crate::dp`] and [`crate::optim`] use),
//! are laid end to end in one flat f32 vector of `P` elements, padded with zeros to
//! `dp · S` where `S = ⌈P / dp⌉`; rank `r` owns the contiguous shard `[r·S, (r+1)·S)`.
//! Each step:
//!
//! 1. every rank's local gradient (loss scaled by `1 / dp`, as in [`crate::dp`]) is
//!    **reduce-scattered** with a sum, so rank `r` gets its shard of the gradient of the
//!    global mean loss;
//! 2. AdamW ([`AdamWStep`], the same code plain data parallelism runs) updates the owned
//!    shard only, with moments `m`, `v` kept for that shard only; weight decay follows a
//!    per-segment mask (elements of rank ≥ 2 parameters), since a shard may cut parameters;
//! 3. the updated shards are **all-gathered** into every rank's full parameters.
//!
//! Stage 1 keeps a full flat gradient buffer (`dp · S` floats) and reduce-scatters it in one
//! call. Stage 2 keeps only its gradient shard: bucket `k` takes slice `[k·c, (k+1)·c)` of
//! every rank's shard (so one reduce-scatter hands each rank a piece of its own shard),
//! packed from candle's gradients while the previous bucket's reduce-scatter is in flight.
//!
//! Memory per rank kept between steps, in f32 elements, against plain data parallelism
//! (`P` parameters, `P` gradients, `2P` AdamW moments): stage 1 keeps `2S ≈ 2P/dp` of
//! optimizer state, saving `2P − 2P/dp`; stage 2 also keeps only `S` of gradient, saving
//! another `P − P/dp` (see [`ZeroMemory`]). Inside a step there are transients, as in
//! [`crate::dp`]: candle's `backward` materialises every local gradient at once, stage 2
//! packs at most two buckets (`dp · c` each; choose `c` well under `S`, or the scratch eats
//! the saving), and the all-gather stages `dp · S` before the parameters are set.

use crate::optim::{AdamWConfig, AdamWStep};
use candle_core::backprop::GradStore;
use candle_core::{DType, Error, Result, Tensor, Var};
use oxccl::{Communicator, Pending, ReduceOp};
use std::ops::Range;
use std::time::{Duration, Instant};

mod layout;
pub use layout::{Piece, ShardLayout};

/// Which ZeRO stage shards what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroStage {
    /// Optimizer state sharded (ZeRO-1).
    One,
    /// Optimizer state and gradients sharded (ZeRO-2).
    Two,
}

impl ZeroStage {
    /// The stage numbered `n` (1 or 2, as `--zero` takes it); `None` otherwise.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(ZeroStage::One),
            2 => Some(ZeroStage::Two),
            _ => None,
        }
    }
}

/// f32 elements one rank holds between steps, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroMemory {
    /// Parameters (full on every rank in stages 1 and 2).
    pub params: usize,
    /// Gradient buffers (reduced gradient and bucket scratch).
    pub grads: usize,
    /// AdamW moments `m` and `v`.
    pub optimizer: usize,
}

impl ZeroMemory {
    /// What plain data parallelism holds for `total` parameters, counted as PyTorch DDP keeps
    /// them: a gradient and both moments for every parameter.
    pub fn plain_dp(total: usize) -> Self {
        ZeroMemory {
            params: total,
            grads: total,
            optimizer: 2 * total,
        }
    }

    /// The sum of the three.
    pub fn total(&self) -> usize {
        self.params + self.grads + self.optimizer
    }
}

/// One rank's ZeRO optimizer: the sharded gradient reduction, AdamW on the owned shard and
/// the parameter all-gather.
pub struct Zero {
    comm: Option<Communicator>,
    stage: ZeroStage,
    layout: ShardLayout,
    rank: usize,
    vars: Vec<Var>,
    cfg: AdamWConfig,
    /// Runs of the owned shard (relative to its start) and whether they decay; padding is in
    /// none of them, so it never gets an update.
    segments: Vec<(Range<usize>, bool)>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Stage 1: the whole padded flat gradient; stage 2: the owned shard only.
    grad: Vec<f32>,
    /// Elements of each rank's shard per stage-2 bucket.
    bucket: usize,
    step: u64,
    sync_time: Duration,
}

impl Zero {
    /// A rank's optimizer for `vars` (the model's order) over `comm` (`None`: one rank),
    /// with stage-2 buckets of at most `bucket_bytes` (all ranks' slices together).
    pub fn new(
        comm: Option<Communicator>,
        vars: Vec<Var>,
        cfg: AdamWConfig,
        stage: ZeroStage,
        bucket_bytes: usize,
    ) -> Result<Self> {
        let (rank, ranks) = comm
            .as_ref()
            .map_or((0, 1), |c| (c.rank() as usize, c.size() as usize));
        if let Some(v) = vars.iter().find(|v| v.dtype() != DType::F32) {
            candle_core::bail!("ZeRO keeps f32 parameters, not {:?}", v.dtype());
        }
        let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
        let layout = ShardLayout::new(&sizes, ranks);
        let mine = layout.shard(rank);
        let segments = layout
            .pieces(mine.clone())
            .into_iter()
            .map(|p| {
                let run = p.flat.start - mine.start..p.flat.end - mine.start;
                (run, vars[p.param].rank() >= 2)
            })
            .collect();
        let s = layout.shard_len();
        let grad = match stage {
            ZeroStage::One => vec![0.0; layout.padded()],
            ZeroStage::Two => vec![0.0; s],
        };
        let bucket = (bucket_bytes / 4 / ranks).clamp(1, s.max(1));
        Ok(Zero {
            comm,
            stage,
            rank,
            vars,
            cfg,
            segments,
            m: vec![0.0; s],
            v: vec![0.0; s],
            grad,
            bucket,
            step: 0,
            sync_time: Duration::ZERO,
            layout,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of data-parallel ranks.
    pub fn size(&self) -> usize {
        self.layout.ranks()
    }

    /// The stage.
    pub fn stage(&self) -> ZeroStage {
        self.stage
    }

    /// The flat layout and the shards.
    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Every parameter's AdamW moments `(m, v)`, flat, all-gathered from the dp ranks'
    /// shards (for checkpoints). Collective over the ZeRO group.
    pub fn gather_moments(&mut self) -> Result<crate::checkpoint::Moments> {
        let (layout, n) = (&self.layout, self.vars.len());
        crate::checkpoint::shard::gather_zero(self.comm.as_mut(), layout, n, &self.m, &self.v)
    }

    /// Keeps this rank's shard of every parameter's moments `m`, `v` (flat, the model's
    /// order) and sets the number of steps taken, from a checkpoint.
    pub fn restore(&mut self, m: &[Vec<f32>], v: &[Vec<f32>], steps: u64) -> Result<()> {
        let fits = |xs: &[Vec<f32>]| {
            xs.len() == self.vars.len()
                && xs
                    .iter()
                    .zip(&self.vars)
                    .all(|(x, p)| x.len() == p.elem_count())
        };
        if !fits(m) || !fits(v) {
            candle_core::bail!("moments do not fit the {} parameters", self.vars.len());
        }
        let shard = |xs| crate::checkpoint::shard::zero_shard(&self.layout, self.rank, xs);
        (self.m, self.v, self.step) = (shard(m), shard(v), steps);
        Ok(())
    }

    /// Time spent synchronising (packing, reduce-scatter, all-gather, unpacking) since the
    /// last call.
    pub fn take_sync_time(&mut self) -> Duration {
        std::mem::take(&mut self.sync_time)
    }

    /// The f32 elements this rank holds between steps (compare [`ZeroMemory::plain_dp`]).
    /// Buffers that live only inside [`Zero::step`] are not counted, as plain DP's bucket
    /// buffers are not: stage 2's one or two buckets (`dp · c` each) and the all-gather's
    /// `dp · S` staging.
    pub fn memory(&self) -> ZeroMemory {
        ZeroMemory {
            params: self.layout.total(),
            grads: self.grad.len(),
            optimizer: self.m.len() + self.v.len(),
        }
    }

    /// One step with learning rate `lr` from this rank's local gradients `grads` (of the
    /// loss scaled by `1 / dp`); a parameter without a gradient counts as zeros. Every
    /// rank's `vars` end with the same updated values.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let start = Instant::now();
        match self.stage {
            ZeroStage::One => self.reduce_whole(grads)?,
            ZeroStage::Two => self.reduce_buckets(grads)?,
        }
        let mine = self.layout.shard(self.rank);
        let mut p = vec![0.0f32; mine.len()];
        for piece in self.layout.pieces(mine.clone()) {
            let t = self.vars[piece.param].as_tensor().flatten_all()?;
            let at = piece.flat.start - mine.start..piece.flat.end - mine.start;
            p[at].copy_from_slice(&t.narrow(0, piece.offset, piece.flat.len())?.to_vec1()?);
        }
        let g = match self.stage {
            ZeroStage::One => &self.grad[mine],
            ZeroStage::Two => &self.grad[..],
        };
        let mut sync = start.elapsed();
        self.step += 1;
        let update = AdamWStep::new(self.cfg, self.step, lr);
        for (run, decay) in &self.segments {
            let r = run.clone();
            let (m, v) = (&mut self.m[r.clone()], &mut self.v[r.clone()]);
            update.apply(*decay, &mut p[r.clone()], &g[r], m, v);
        }
        let gather = Instant::now();
        let mut full = vec![0.0f32; self.layout.padded()];
        match self.comm.as_mut() {
            Some(c) => c.all_gather(&p, &mut full).map_err(Error::wrap)?,
            None => full.copy_from_slice(&p),
        }
        for (i, var) in self.vars.iter().enumerate() {
            let vals = &full[self.layout.param(i)];
            var.set(&Tensor::from_slice(vals, var.shape(), var.device())?)?;
        }
        sync += gather.elapsed();
        self.sync_time += sync;
        Ok(())
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

    /// Stage 1: pack the whole flat gradient, reduce-scatter it in place (this rank's shard
    /// of the sum lands in its block).
    fn reduce_whole(&mut self, grads: &GradStore) -> Result<()> {
        let local = Local {
            grads,
            vars: &self.vars,
            layout: &self.layout,
        };
        local.copy(0..self.layout.padded(), &mut self.grad, None)?;
        if let Some(comm) = self.comm.as_mut() {
            comm.reduce_scatter_in_place(&mut self.grad, ReduceOp::Sum)
                .map_err(Error::wrap)?;
        }
        Ok(())
    }

    /// Stage 2: bucket `k` is slice `[k·c, (k+1)·c)` of every rank's shard, in rank order,
    /// so its reduce-scatter leaves this rank's slice in `grad[k·c..]`; the full reduced
    /// gradient never exists. Two bucket buffers: the next is packed while the current one
    /// is in flight.
    fn reduce_buckets(&mut self, grads: &GradStore) -> Result<()> {
        let (s, c) = (self.layout.shard_len(), self.bucket);
        let local = Local {
            grads,
            vars: &self.vars,
            layout: &self.layout,
        };
        let Some(comm) = self.comm.as_mut() else {
            return local.copy(0..s, &mut self.grad, None);
        };
        let n = s.div_ceil(c);
        let (mut cur, mut next) = (Vec::new(), Vec::new());
        if n > 0 {
            local.pack_bucket((0, c), &mut cur, None)?;
        }
        let mut rest: &mut [f32] = &mut self.grad;
        for k in 0..n {
            let (out, tail) = std::mem::take(&mut rest).split_at_mut(c.min(s - k * c));
            rest = tail;
            let mut g = comm.group();
            g.reduce_scatter(&cur, out, ReduceOp::Sum)
                .map_err(Error::wrap)?;
            let mut pending = g.launch().map_err(Error::wrap)?;
            if k + 1 < n {
                local.pack_bucket((k + 1, c), &mut next, Some(&mut pending))?;
            }
            pending.wait().map_err(Error::wrap)?;
            std::mem::swap(&mut cur, &mut next);
        }
        Ok(())
    }
}

/// This rank's local gradients, read in flat ranges.
struct Local<'a> {
    grads: &'a GradStore,
    vars: &'a [Var],
    layout: &'a ShardLayout,
}

impl Local<'_> {
    /// Packs stage-2 bucket `k` (slices of `c` elements, shorter at the shard's end) of
    /// every rank's shard into `buf`, rank by rank.
    fn pack_bucket(&self, (k, c): (usize, usize), buf: &mut Vec<f32>, pending: Poll) -> Result<()> {
        let s = self.layout.shard_len();
        let (lo, hi) = (k * c, ((k + 1) * c).min(s));
        buf.clear();
        buf.resize(self.layout.ranks() * (hi - lo), 0.0);
        let mut pending = pending;
        for (j, dst) in buf.chunks_mut(hi - lo).enumerate() {
            self.copy(j * s + lo..j * s + hi, dst, pending.as_deref_mut())?;
        }
        Ok(())
    }

    /// Writes the gradient of flat range `range` into `dst` (its length), zeros for padding
    /// and for parameters without a gradient; polls `pending` (the previous bucket's
    /// collective) after each piece so it keeps moving meanwhile.
    fn copy(&self, range: Range<usize>, dst: &mut [f32], mut pending: Poll) -> Result<()> {
        dst.fill(0.0);
        for piece in self.layout.pieces(range.clone()) {
            if let Some(g) = self.grads.get(self.vars[piece.param].as_tensor()) {
                // narrow of the flattened tensor is a view: only this piece is copied out.
                let vals = g.flatten_all()?.narrow(0, piece.offset, piece.flat.len())?;
                let at = piece.flat.start - range.start..piece.flat.end - range.start;
                dst[at].copy_from_slice(&vals.to_vec1::<f32>()?);
            }
            if let Some(p) = pending.as_deref_mut() {
                p.test().map_err(Error::wrap)?;
            }
        }
        Ok(())
    }
}

/// The collective in flight while packing, if any.
type Poll<'p, 'c> = Option<&'p mut Pending<'c>>;
