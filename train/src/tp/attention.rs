//! Self-attention with its heads split across the tp group.
//!
//! **Fused qkv layout.** The full fused projection weight has shape `[3·C, C]` (bias `[3·C]`)
//! with `C = n_head · head_dim`: rows `[0, C)` produce q, `[C, 2C)` k and `[2C, 3C)` v, and
//! within each of the three, head `h` owns rows `[h·head_dim, (h+1)·head_dim)` (GPT-2's
//! `c_attn`). Rank `r` of `tp` owns heads `[r·n_head/tp, (r+1)·n_head/tp)`; [`shard_qkv`]
//! gives it `[q_r; k_r; v_r]`, shape `[3·C/tp, C]`, which is the same layout for its
//! `n_head/tp` heads. So the rank's qkv output splits into q, k and v exactly as the full
//! one does, and each head's attention runs locally with no communication.
//!
//! The merged heads of rank `r` are columns `[r·C/tp, (r+1)·C/tp)` of the full attention
//! output, which is exactly the input slice a [`RowParallelLinear`] output projection holds:
//! attention costs one all-reduce forward and one backward, like the MLP.

use super::linear::{ColumnParallelLinear, RowParallelLinear};
use super::{fresh_var, TpGroup};
use candle_core::{Device, Module, Result, Tensor, Var, D};

/// This rank's rows of a fused qkv tensor whose first dimension is `3·C` (the weight
/// `[3C, C]`, the bias `[3C]`, or their gradients): its heads' q, k and v rows, in that order
/// (see the module doc for the layout). `n_head` must be a multiple of the group size.
pub fn shard_qkv(full: &Tensor, n_head: usize, group: &TpGroup) -> Result<Tensor> {
    let rows = full.dim(0)?;
    if n_head == 0 || rows % 3 != 0 || (rows / 3) % n_head != 0 {
        candle_core::bail!("fused qkv has {rows} rows, not 3 × {n_head} heads × head_dim");
    }
    let c = rows / 3;
    let heads = group.per_rank(n_head, "the number of attention heads")?;
    let per = heads * (c / n_head);
    let start = group.rank() * per;
    let parts = (0..3)
        .map(|i| full.narrow(0, i * c + start, per))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)?.contiguous()
}

/// Causal self-attention (with a fused qkv projection and an output projection) whose heads
/// are split across the tp group: qkv is a column-parallel layer over [`shard_qkv`] shards,
/// the output projection a row-parallel layer over the heads' columns.
///
/// Input and output `[batch, time, C]`, replicated on every rank.
#[derive(Debug, Clone)]
pub struct ParallelSelfAttention {
    qkv: ColumnParallelLinear,
    proj: RowParallelLinear,
    local_heads: usize,
    head_dim: usize,
}

impl ParallelSelfAttention {
    /// Cuts this rank's heads from the full weights: `qkv_weight` `[3C, C]` (bias `[3C]`) in
    /// the layout of the module doc, `proj_weight` `[C, C]` (bias `[C]`).
    pub fn from_full(
        qkv_weight: &Tensor,
        qkv_bias: Option<&Tensor>,
        proj_weight: &Tensor,
        proj_bias: Option<&Tensor>,
        n_head: usize,
        group: &TpGroup,
    ) -> Result<Self> {
        let w = fresh_var(&shard_qkv(qkv_weight, n_head, group)?)?;
        let b = match qkv_bias {
            Some(b) => Some(fresh_var(&shard_qkv(b, n_head, group)?)?),
            None => None,
        };
        let qkv = ColumnParallelLinear::from_shard(w, b, false, group)?;
        let proj = RowParallelLinear::from_full(proj_weight, proj_bias, true, group)?;
        let c = qkv_weight.dim(1)?;
        Ok(Self {
            qkv,
            proj,
            local_heads: n_head / group.size(),
            head_dim: c / n_head,
        })
    }

    /// The qkv projection (this rank's heads).
    pub fn qkv(&self) -> &ColumnParallelLinear {
        &self.qkv
    }

    /// The output projection (this rank's heads' input columns).
    pub fn proj(&self) -> &RowParallelLinear {
        &self.proj
    }

    /// The trainable variables, for an optimizer.
    pub fn vars(&self) -> Vec<Var> {
        let mut v = self.qkv.vars();
        v.extend(self.proj.vars());
        v
    }
}

impl Module for ParallelSelfAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, hd) = (self.local_heads, self.head_dim);
        let qkv = self.qkv.forward(x)?;
        // [B, T, 3·h·hd] → three [B, h, T, hd].
        let head = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * h * hd, h * hd)?
                .reshape((b, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let y = causal_attention(&head(0)?, &head(1)?, &head(2)?)?;
        let y = y.transpose(1, 2)?.reshape((b, t, h * hd))?;
        self.proj.forward(&y)
    }
}

/// Causal scaled dot-product attention over `[batch, heads, time, head_dim]` q, k and v.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (t, hd) = (q.dim(2)?, q.dim(3)?);
    let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (hd as f64).sqrt()))?;
    let mask = causal_mask(t, q.device())?.to_dtype(scores.dtype())?;
    softmax_last(&scores.broadcast_add(&mask)?)?.matmul(v)
}

/// Softmax over the last dimension. The max is detached: softmax does not depend on the
/// shift, so it needs no gradient (the same formulation as the unsharded model's).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let e = x
        .broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?
        .exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `[t, t]`: 0 where query `i` may see key `j` (`j ≤ i`), −∞ elsewhere.
fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|ij| {
            if ij % t > ij / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(m, (t, t), device)
}
