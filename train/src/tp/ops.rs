//! The tensor-parallel operators as candle custom ops, so that candle's autograd runs the
//! matching collective in the backward pass.
//!
//! | function               | forward                       | backward                      |
//! |------------------------|-------------------------------|-------------------------------|
//! | [`copy_to_tp`] (f)     | identity                      | all-reduce (sum)              |
//! | [`reduce_from_tp`] (g) | all-reduce (sum)              | identity                      |
//! | [`gather_from_tp`]     | all-gather along the last dim | keep this rank's slice        |
//! | [`split_to_tp`]        | keep this rank's slice        | all-gather along the last dim |
//!
//! [`all_reduce`], [`all_gather_last_dim`] and [`all_gather_first_dim`] are the same
//! collectives without a gradient (their results are detached), for statistics, checkpoints
//! and the backward passes above.
//!
//! The ops run on the CPU backend and on float tensors (f32, f64, bf16, f16). Their inputs are
//! made contiguous before the op runs, so the kernels read one plain slice.

use super::TpGroup;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use oxccl::{Element, ReduceOp};

/// f: identity forward, all-reduce (sum over the tp group) of the gradient backward.
///
/// Put it where a replicated activation enters a sharded computation: each rank's gradient
/// only covers its shard's use of the input, and the true gradient is their sum.
pub fn copy_to_tp(x: &Tensor, group: &TpGroup) -> Result<Tensor> {
    x.contiguous()?.apply_op1(CopyToTp(group.clone()))
}

/// g: all-reduce (sum over the tp group) forward, identity backward.
///
/// Put it where per-rank partial sums become one replicated activation: everything after it
/// is computed identically on every rank, so every rank already holds the whole gradient.
pub fn reduce_from_tp(x: &Tensor, group: &TpGroup) -> Result<Tensor> {
    x.contiguous()?.apply_op1(ReduceFromTp(group.clone()))
}

/// All-gather along the last dimension (rank order), keeping this rank's slice of the
/// gradient backward. `[..., n]` on every rank becomes `[..., tp·n]`.
pub fn gather_from_tp(x: &Tensor, group: &TpGroup) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GatherFromTp(group.clone()))
}

/// This rank's slice of the last dimension (`[..., n]` becomes `[..., n/tp]`), with the
/// gradient all-gathered backward: the input is replicated, so its gradient is every rank's
/// slice gradient side by side.
pub fn split_to_tp(x: &Tensor, group: &TpGroup) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SplitToTp(group.clone()))
}

/// All-reduce with `op` over the tp group, without gradient.
pub fn all_reduce(x: &Tensor, group: &TpGroup, op: ReduceOp) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1_no_bwd(&AllReduce(group.clone(), op))
}

/// All-gather along the last dimension, without gradient.
pub fn all_gather_last_dim(x: &Tensor, group: &TpGroup) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1_no_bwd(&GatherFromTp(group.clone()))
}

/// All-gather along the first dimension (`[n, ...]` becomes `[tp·n, ...]`), without gradient.
pub fn all_gather_first_dim(x: &Tensor, group: &TpGroup) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1_no_bwd(&GatherFirst(group.clone()))
}

/// The storage's elements as one slice. Every public function makes its input contiguous
/// first, so the error is only reachable by misuse inside this module.
fn contiguous<'a, T>(what: &str, v: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("tensor-parallel {what}: input is not contiguous"),
    }
}

/// Runs `$body` (which reads the contiguous input as `$d: &[T]` and yields a `Vec<T>`) for
/// each float dtype, rebuilding storage of the same dtype.
macro_rules! float_map {
    ($what:expr, $storage:expr, $layout:expr, |$d:ident| $body:expr) => {
        match $storage {
            CpuStorage::F32(v) => {
                let $d = contiguous($what, v, $layout)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(v) => {
                let $d = contiguous($what, v, $layout)?;
                CpuStorage::F64($body)
            }
            CpuStorage::BF16(v) => {
                let $d = contiguous($what, v, $layout)?;
                CpuStorage::BF16($body)
            }
            CpuStorage::F16(v) => {
                let $d = contiguous($what, v, $layout)?;
                CpuStorage::F16($body)
            }
            _ => candle_core::bail!(
                "tensor-parallel {}: only float tensors are supported",
                $what
            ),
        }
    };
}

/// The size of the last dimension, which gather and split work on.
fn last_dim(what: &str, shape: &Shape) -> Result<usize> {
    match shape.dims().last() {
        Some(&n) => Ok(n),
        None => candle_core::bail!("tensor-parallel {what}: a scalar has no last dimension"),
    }
}

/// `shape` with its last dimension replaced by `n`.
fn with_last(shape: &Shape, n: usize) -> Shape {
    let mut dims = shape.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Shape::from(dims)
}

fn all_reduce_vec<T: Element>(group: &TpGroup, data: &[T], op: ReduceOp) -> Result<Vec<T>> {
    let mut out = data.to_vec();
    group.with_comm("all-reduce", |c| c.all_reduce_in_place(&mut out, op))?;
    Ok(out)
}

/// Every rank's `data` concatenated in rank order.
fn all_gather_vec<T: Element + Default>(group: &TpGroup, data: &[T]) -> Result<Vec<T>> {
    let mut out = vec![T::default(); data.len() * group.size()];
    group.with_comm("all-gather", |c| c.all_gather(data, &mut out))?;
    Ok(out)
}

/// All-gather of rows of `n` elements along the last dimension: the gathered blocks
/// `[tp][rows][n]` are interleaved into `[rows][tp·n]`.
fn all_gather_last_vec<T: Element + Default>(
    group: &TpGroup,
    data: &[T],
    n: usize,
) -> Result<Vec<T>> {
    let blocks = all_gather_vec(group, data)?;
    if n == 0 {
        return Ok(blocks);
    }
    let rows = data.len() / n;
    let mut out = Vec::with_capacity(blocks.len());
    for i in 0..rows {
        for r in 0..group.size() {
            let at = r * data.len() + i * n;
            out.extend_from_slice(&blocks[at..at + n]);
        }
    }
    Ok(out)
}

/// Columns `[start, start + len)` of rows of `n` elements.
fn slice_last_vec<T: Copy>(data: &[T], n: usize, start: usize, len: usize) -> Vec<T> {
    if n == 0 {
        return Vec::new();
    }
    data.chunks_exact(n)
        .flat_map(|row| &row[start..start + len])
        .copied()
        .collect()
}

/// Megatron's f (see [`copy_to_tp`]).
struct CopyToTp(TpGroup);

impl CustomOp1 for CopyToTp {
    fn name(&self) -> &'static str {
        "tp-copy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = float_map!("copy", s, l, |d| d.to_vec());
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        all_reduce(grad, &self.0, ReduceOp::Sum).map(Some)
    }
}

/// Megatron's g (see [`reduce_from_tp`]).
struct ReduceFromTp(TpGroup);

impl CustomOp1 for ReduceFromTp {
    fn name(&self) -> &'static str {
        "tp-reduce"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        AllReduce(self.0.clone(), ReduceOp::Sum).cpu_fwd(s, l)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.clone()))
    }
}

/// All-reduce without gradient (see [`all_reduce`]).
struct AllReduce(TpGroup, ReduceOp);

impl CustomOp1 for AllReduce {
    fn name(&self) -> &'static str {
        "tp-all-reduce"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = float_map!("all-reduce", s, l, |d| all_reduce_vec(&self.0, d, self.1)?);
        Ok((out, l.shape().clone()))
    }
}

/// All-gather along the last dimension (see [`gather_from_tp`]).
struct GatherFromTp(TpGroup);

impl CustomOp1 for GatherFromTp {
    fn name(&self) -> &'static str {
        "tp-gather"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = last_dim("gather", l.shape())?;
        let out = float_map!("gather", s, l, |d| all_gather_last_vec(&self.0, d, n)?);
        Ok((out, with_last(l.shape(), n * self.0.size())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let n = last_dim("gather", arg.shape())?;
        let last = grad.rank() - 1;
        Ok(Some(grad.narrow(last, self.0.rank() * n, n)?))
    }
}

/// This rank's slice of the last dimension (see [`split_to_tp`]).
struct SplitToTp(TpGroup);

impl CustomOp1 for SplitToTp {
    fn name(&self) -> &'static str {
        "tp-split"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = last_dim("split", l.shape())?;
        let per = self.0.per_rank(n, "the split dimension")?;
        let start = self.0.rank() * per;
        let out = float_map!("split", s, l, |d| slice_last_vec(d, n, start, per));
        Ok((out, with_last(l.shape(), per)))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        all_gather_last_dim(grad, &self.0).map(Some)
    }
}

/// All-gather along the first dimension, without gradient (see [`all_gather_first_dim`]).
struct GatherFirst(TpGroup);

impl CustomOp1 for GatherFirst {
    fn name(&self) -> &'static str {
        "tp-gather-first"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut dims = l.shape().dims().to_vec();
        match dims.first_mut() {
            Some(first) => *first *= self.0.size(),
            None => candle_core::bail!("tensor-parallel gather: a scalar has no first dimension"),
        }
        // Blocks of whole leading rows concatenated in rank order are the gathered tensor.
        let out = float_map!("gather", s, l, |d| all_gather_vec(&self.0, d)?);
        Ok((out, Shape::from(dims)))
    }
}
