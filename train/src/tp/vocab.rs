//! The vocabulary split across the tp group: the token embedding and the cross-entropy over
//! vocab-sharded logits (Megatron-LM's `VocabParallelEmbedding` and
//! `vocab_parallel_cross_entropy`).
//!
//! Rank `r` owns vocabulary entries `[r·V/tp, (r+1)·V/tp)`, the same split as the output
//! features of a [`super::ColumnParallelLinear`] LM head, so a tied embedding and head hold
//! the same rows on each rank.

use super::ops::{all_gather_first_dim, all_reduce, reduce_from_tp};
use super::{fresh_var, TpGroup};
use candle_core::{DType, Device, Module, Result, Tensor, Var};
use oxccl::ReduceOp;

/// For token ids (any integer dtype, any shape), the row of this rank's shard holding each
/// id (0 where another rank holds it) and a 1/0 mask of the ids this rank holds.
fn local_rows(
    ids: &Tensor,
    vocab: usize,
    start: usize,
    per: usize,
    what: &str,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let ids = ids.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    let mut rows = Vec::with_capacity(ids.len());
    let mut mask = Vec::with_capacity(ids.len());
    for id in ids {
        // An id outside the whole vocabulary is a caller bug that the unsharded layer would
        // report too; without this check every rank would silently produce zeros for it.
        let Some(id) = usize::try_from(id).ok().filter(|&i| i < vocab) else {
            candle_core::bail!("{what}: token id {id} is outside the vocabulary of {vocab}");
        };
        let mine = (start..start + per).contains(&id);
        // `id - start < per ≤ u32::MAX` when `mine`: candle indexes with u32.
        rows.push(if mine { (id - start) as u32 } else { 0 });
        mask.push(if mine { 1.0 } else { 0.0 });
    }
    Ok((rows, mask))
}

/// A token embedding whose `V` rows are split across the tp group: this rank holds rows
/// `[r·V/tp, (r+1)·V/tp)`, shape `[V/tp, C]`.
///
/// Forward: each rank looks up the ids it owns and writes zeros for the others; g (an
/// all-reduce) sums the partial embeddings, so every rank gets the full `[..., C]` output.
/// Backward: g is the identity and the lookup scatters each rank's gradient into its own
/// rows only.
#[derive(Debug, Clone)]
pub struct VocabParallelEmbedding {
    weight: Var,
    vocab: usize,
    group: TpGroup,
}

impl VocabParallelEmbedding {
    /// Cuts this rank's rows from the full table `[V, C]` (a copy, as a new variable); `V`
    /// must be a multiple of the group size.
    pub fn from_full(weight: &Tensor, group: &TpGroup) -> Result<Self> {
        let vocab = weight.dim(0)?;
        let w = fresh_var(&group.shard_of(weight, 0, "embedding vocabulary")?)?;
        Ok(Self {
            weight: w,
            vocab,
            group: group.clone(),
        })
    }

    /// An embedding over an already cut shard `[V/tp, C]`.
    pub fn from_shard(weight: Var, group: &TpGroup) -> Result<Self> {
        let vocab = weight.dim(0)? * group.size();
        Ok(Self {
            weight,
            vocab,
            group: group.clone(),
        })
    }

    /// This rank's rows, `[V/tp, C]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The first vocabulary id this rank holds.
    pub fn vocab_start(&self) -> usize {
        self.group.rank() * self.per_rank()
    }

    fn per_rank(&self) -> usize {
        self.vocab / self.group.size()
    }

    /// The trainable variables, for an optimizer.
    pub fn vars(&self) -> Vec<Var> {
        vec![self.weight.clone()]
    }

    /// This rank's current rows, detached from the graph.
    pub fn shard(&self) -> Tensor {
        self.weight.as_tensor().detach()
    }

    /// The full table `[V, C]`, reassembled on every rank (a collective).
    pub fn full_weight(&self) -> Result<Tensor> {
        all_gather_first_dim(&self.shard(), &self.group)
    }
}

impl Module for VocabParallelEmbedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (per, start) = (self.per_rank(), self.vocab_start());
        let (rows, mask) = local_rows(ids, self.vocab, start, per, "vocab-parallel embedding")?;
        let n = rows.len();
        let dev = self.weight.device();
        let rows = Tensor::from_vec(rows, n, dev)?;
        let mask = Tensor::from_vec(mask, (n, 1), dev)?.to_dtype(self.weight.dtype())?;
        let partial = self.weight.index_select(&rows, 0)?.broadcast_mul(&mask)?;
        let full = reduce_from_tp(&partial, &self.group)?;
        let mut dims = ids.dims().to_vec();
        dims.push(self.weight.dim(1)?);
        full.reshape(dims)
    }
}

/// The mean cross-entropy of vocab-sharded logits: `logits` `[..., V/tp]` holds this rank's
/// vocabulary columns `[r·V/tp, (r+1)·V/tp)`, `targets` (`[...]`, integer ids in `[0, V)`)
/// are replicated. Returns the scalar loss, equal on every rank to the unsharded
/// `cross_entropy(full_logits, targets)`.
///
/// Forward, per token with `m` the max logit, `S = Σ_v exp(z_v − m)`, `t = z_target − m`:
/// loss `= log S − t`, from per-rank pieces with two collectives: an all-reduce (max) of the
/// per-rank maxima, then one all-reduce (sum) of `[S_r, t_r]` pairs (each rank's partial
/// sum of exponentials, and the shifted target logit where this rank owns the target, else
/// 0; Megatron issues these two as separate all-reduces).
///
/// Backward is candle's autograd over this composition, using g for the sum: the loss is
/// replicated, so its gradient with respect to `S` and `t` is the same on every rank, and
/// each rank's pieces enter the sums with coefficient 1, so g's identity backward hands
/// every rank the right gradient; the local ops then give
/// `∂loss/∂z_v = (softmax_v − [v = target]) / N` on this rank's columns, with no collective
/// in the backward pass. The max is detached: it only shifts both terms by the same amount,
/// so the loss does not depend on it and no gradient flows through it.
pub fn vocab_parallel_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    group: &TpGroup,
) -> Result<Tensor> {
    let Some(&per) = logits.dims().last() else {
        candle_core::bail!("vocab-parallel cross-entropy: logits must have a vocabulary dimension")
    };
    let logits = logits.reshape(((), per))?;
    let n = logits.dim(0)?;
    if targets.elem_count() != n {
        candle_core::bail!(
            "vocab-parallel cross-entropy: {} targets for {n} rows of logits",
            targets.elem_count()
        );
    }
    let start = group.rank() * per;
    let (rows, mask) = local_rows(
        targets,
        per * group.size(),
        start,
        per,
        "vocab-parallel cross-entropy",
    )?;
    let dev: &Device = logits.device();
    let rows = Tensor::from_vec(rows, (n, 1), dev)?;
    let mask = Tensor::from_vec(mask, (n, 1), dev)?.to_dtype(logits.dtype())?;

    let max = all_reduce(&logits.max_keepdim(1)?.detach(), group, ReduceOp::Max)?;
    let shifted = logits.broadcast_sub(&max)?;
    let sum_exp = shifted.exp()?.sum_keepdim(1)?;
    // Where another rank owns the target, `rows` points at column 0 and the mask zeroes it
    // (and its gradient).
    let target = (shifted.gather(&rows, 1)? * mask)?;
    let both = reduce_from_tp(&Tensor::cat(&[&sum_exp, &target], 1)?, group)?;
    let loss = (both.narrow(1, 0, 1)?.log()? - both.narrow(1, 1, 1)?)?;
    loss.mean_all()
}
