//! Column- and row-parallel linear layers (Megatron-LM §3).
//!
//! A linear layer `y = x·Wᵀ + b` with `W` of shape `[out, in]` splits two ways:
//! - **column-parallel**: rank `r` holds rows `[r·out/tp, (r+1)·out/tp)` of `W` (output
//!   features) and the matching slice of `b`; it computes its slice of `y` from the whole `x`.
//! - **row-parallel**: rank `r` holds columns `[r·in/tp, (r+1)·in/tp)` of `W` (input
//!   features) and the whole `b`; it computes a partial sum of `y` from its slice of `x`.
//!
//! A column-parallel layer whose output stays split feeds a row-parallel layer directly, so
//! an MLP needs one all-reduce forward (g, in the row layer) and one backward (f, in the
//! column layer).

use super::ops::{
    all_gather_first_dim, all_gather_last_dim, copy_to_tp, gather_from_tp, reduce_from_tp,
    split_to_tp,
};
use super::{fresh_var, TpGroup};
use candle_core::{Module, Result, Tensor, Var};

/// `x·wᵀ` for `x` of shape `[..., in]` and `w` of shape `[out, in]`: `[..., out]`.
///
/// Leading dimensions are flattened into one matmul because candle's batched matmul does not
/// broadcast a 2-D right-hand side.
pub(crate) fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&k, lead)) = dims.split_last() else {
        candle_core::bail!("linear layer input must have at least one dimension")
    };
    let y = x.reshape(((), k))?.matmul(&w.t()?)?;
    let mut out = lead.to_vec();
    out.push(w.dim(0)?);
    y.reshape(out)
}

/// Checks that a bias matches the weight's output dimension.
fn check_bias(weight: &Var, bias: Option<&Var>, what: &str) -> Result<()> {
    if let Some(b) = bias {
        let out = weight.dim(0)?;
        if b.dims() != [out] {
            candle_core::bail!(
                "{what} bias has shape {:?} but the weight has {out} output rows",
                b.dims()
            );
        }
    }
    Ok(())
}

/// A linear layer split by output features: this rank holds `W[r·out/tp..(r+1)·out/tp, :]`
/// (shape `[out/tp, in]`) and the matching bias slice.
///
/// Forward: `f(x)` (identity; all-reduces `x`'s gradient backward), then `x·W_rᵀ + b_r`,
/// giving this rank's `[..., out/tp]` slice of the output; with `gather_output` the slices
/// are all-gathered into the full `[..., out]` on every rank.
#[derive(Debug, Clone)]
pub struct ColumnParallelLinear {
    weight: Var,
    bias: Option<Var>,
    gather_output: bool,
    group: TpGroup,
}

impl ColumnParallelLinear {
    /// Cuts this rank's shard from the full weight `[out, in]` and bias `[out]` (copies, as
    /// new variables); `out` must be a multiple of the group size.
    pub fn from_full(
        weight: &Tensor,
        bias: Option<&Tensor>,
        gather_output: bool,
        group: &TpGroup,
    ) -> Result<Self> {
        let w = fresh_var(&group.shard_of(weight, 0, "column-parallel weight rows")?)?;
        let b = match bias {
            Some(b) => Some(fresh_var(&group.shard_of(b, 0, "column-parallel bias")?)?),
            None => None,
        };
        Self::from_shard(w, b, gather_output, group)
    }

    /// A layer over an already cut shard (`[out/tp, in]`, bias `[out/tp]`), e.g. from
    /// [`super::shard_qkv`] or a sharded checkpoint. The variables are used as they are.
    pub fn from_shard(
        weight: Var,
        bias: Option<Var>,
        gather_output: bool,
        group: &TpGroup,
    ) -> Result<Self> {
        check_bias(&weight, bias.as_ref(), "column-parallel")?;
        Ok(Self {
            weight,
            bias,
            gather_output,
            group: group.clone(),
        })
    }

    /// This rank's weight shard, `[out/tp, in]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// This rank's bias shard, `[out/tp]`.
    pub fn bias(&self) -> Option<&Var> {
        self.bias.as_ref()
    }

    /// The trainable variables (weight, then bias), for an optimizer.
    pub fn vars(&self) -> Vec<Var> {
        std::iter::once(self.weight.clone())
            .chain(self.bias.clone())
            .collect()
    }

    /// This rank's current shard (weight, bias), detached from the graph: what a sharded
    /// checkpoint stores.
    pub fn shard(&self) -> (Tensor, Option<Tensor>) {
        (
            self.weight.as_tensor().detach(),
            self.bias.as_ref().map(|b| b.as_tensor().detach()),
        )
    }

    /// The full weight `[out, in]` and bias `[out]`, reassembled on every rank (a collective:
    /// all ranks must call it).
    pub fn full_weight(&self) -> Result<(Tensor, Option<Tensor>)> {
        let (w, b) = self.shard();
        let w = all_gather_first_dim(&w, &self.group)?;
        let b = match b {
            Some(b) => Some(all_gather_first_dim(&b, &self.group)?),
            None => None,
        };
        Ok((w, b))
    }
}

impl Module for ColumnParallelLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = copy_to_tp(x, &self.group)?;
        let mut y = matmul_t(&x, &self.weight)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if self.gather_output {
            y = gather_from_tp(&y, &self.group)?;
        }
        Ok(y)
    }
}

/// A linear layer split by input features: this rank holds `W[:, r·in/tp..(r+1)·in/tp]`
/// (shape `[out, in/tp]`) and the whole bias.
///
/// Forward: (with `input_is_parallel = false`, first take this rank's slice of a replicated
/// `x`), then `x_r·W_rᵀ`, then g (all-reduce of the partial sums; identity backward), then
/// `+ b` once, after the sum, so the bias is not counted `tp` times. The output is replicated.
#[derive(Debug, Clone)]
pub struct RowParallelLinear {
    weight: Var,
    bias: Option<Var>,
    input_is_parallel: bool,
    group: TpGroup,
}

impl RowParallelLinear {
    /// Cuts this rank's shard from the full weight `[out, in]` (copies, as new variables; the
    /// bias `[out]` is copied whole); `in` must be a multiple of the group size.
    pub fn from_full(
        weight: &Tensor,
        bias: Option<&Tensor>,
        input_is_parallel: bool,
        group: &TpGroup,
    ) -> Result<Self> {
        let w = fresh_var(&group.shard_of(weight, 1, "row-parallel weight columns")?)?;
        let b = match bias {
            Some(b) => Some(fresh_var(b)?),
            None => None,
        };
        Self::from_shard(w, b, input_is_parallel, group)
    }

    /// A layer over an already cut shard (`[out, in/tp]`, whole bias `[out]`).
    pub fn from_shard(
        weight: Var,
        bias: Option<Var>,
        input_is_parallel: bool,
        group: &TpGroup,
    ) -> Result<Self> {
        check_bias(&weight, bias.as_ref(), "row-parallel")?;
        Ok(Self {
            weight,
            bias,
            input_is_parallel,
            group: group.clone(),
        })
    }

    /// This rank's weight shard, `[out, in/tp]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The bias, `[out]`, the same on every rank.
    pub fn bias(&self) -> Option<&Var> {
        self.bias.as_ref()
    }

    /// The trainable variables (weight, then bias), for an optimizer.
    pub fn vars(&self) -> Vec<Var> {
        std::iter::once(self.weight.clone())
            .chain(self.bias.clone())
            .collect()
    }

    /// This rank's current shard (weight, whole bias), detached from the graph.
    pub fn shard(&self) -> (Tensor, Option<Tensor>) {
        (
            self.weight.as_tensor().detach(),
            self.bias.as_ref().map(|b| b.as_tensor().detach()),
        )
    }

    /// The full weight `[out, in]` and bias, reassembled on every rank (a collective: all
    /// ranks must call it).
    pub fn full_weight(&self) -> Result<(Tensor, Option<Tensor>)> {
        let (w, b) = self.shard();
        Ok((all_gather_last_dim(&w, &self.group)?, b))
    }
}

impl Module for RowParallelLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.input_is_parallel {
            x.clone()
        } else {
            split_to_tp(x, &self.group)?
        };
        let y = reduce_from_tp(&matmul_t(&x, &self.weight)?, &self.group)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// The transformer MLP, `proj(gelu(fc(x)))`, with `fc` column-parallel (its `[4C/tp]` output
/// stays split) and `proj` row-parallel: one all-reduce forward, one backward. GELU is the
/// tanh approximation (GPT-2's, candle's `Tensor::gelu`).
#[derive(Debug, Clone)]
pub struct ParallelMlp {
    fc: ColumnParallelLinear,
    proj: RowParallelLinear,
}

impl ParallelMlp {
    /// Cuts this rank's shards from the full weights: `fc` `[H, C]` (bias `[H]`), `proj`
    /// `[C, H]` (bias `[C]`); `H` must be a multiple of the group size.
    pub fn from_full(
        fc: (&Tensor, Option<&Tensor>),
        proj: (&Tensor, Option<&Tensor>),
        group: &TpGroup,
    ) -> Result<Self> {
        Ok(Self {
            fc: ColumnParallelLinear::from_full(fc.0, fc.1, false, group)?,
            proj: RowParallelLinear::from_full(proj.0, proj.1, true, group)?,
        })
    }

    /// The column-parallel first layer.
    pub fn fc(&self) -> &ColumnParallelLinear {
        &self.fc
    }

    /// The row-parallel second layer.
    pub fn proj(&self) -> &RowParallelLinear {
        &self.proj
    }

    /// The trainable variables, for an optimizer.
    pub fn vars(&self) -> Vec<Var> {
        let mut v = self.fc.vars();
        v.extend(self.proj.vars());
        v
    }
}

impl Module for ParallelMlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj.forward(&self.fc.forward(x)?.gelu()?)
    }
}
