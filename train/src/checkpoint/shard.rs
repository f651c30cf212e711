//! Between full tensors (what a checkpoint holds) and one rank's shards: the tp cuts of
//! [`Gpt::new_sharded`] by parameter name, and ZeRO's flat dp shards of the moments.
//!
//! [`cut_of`] is the one definition of the cut rules: `model/shard.rs` uses it too, and the
//! test `slicing_the_full_model_gives_the_sharded_model` in `tests/checkpoint.rs` checks
//! that a full model sliced here equals the sharded model.

use super::{m_key, param_key, v_key, Moments};
use crate::model::Gpt;
use crate::tp::ops::{all_gather_first_dim, all_gather_last_dim};
use crate::tp::{shard_qkv, TpGroup};
use crate::zero::ShardLayout;
use candle_core::{Error, Result, Tensor, Var};
use oxccl::Communicator;

/// How a full parameter is cut for a tp rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Even slices of dimension 0 (vocabulary rows, column-parallel outputs).
    Rows,
    /// Even slices of dimension 1 (row-parallel inputs).
    Cols,
    /// This rank's heads of a fused `[q; k; v]` tensor ([`shard_qkv`]).
    Qkv,
    /// Every rank holds the whole tensor.
    Replicate,
}

/// The cut of the parameter called `name` (as [`Gpt::named_params`] names it).
pub fn cut_of(name: &str) -> Cut {
    if name == "wte.weight" || name == "lm_head.weight" || name.contains(".mlp.c_fc.") {
        Cut::Rows
    } else if name.contains(".attn.c_attn.") {
        Cut::Qkv
    } else if name.ends_with(".c_proj.weight") {
        Cut::Cols
    } else {
        Cut::Replicate
    }
}

/// The full shape of parameter `name` whose shard on one of `tp` ranks has shape `local`.
pub fn full_shape(name: &str, local: &[usize], tp: usize) -> Vec<usize> {
    let mut s = local.to_vec();
    match cut_of(name) {
        Cut::Rows | Cut::Qkv if !s.is_empty() => s[0] *= tp,
        Cut::Cols if s.len() > 1 => s[1] *= tp,
        _ => {}
    }
    s
}

/// This rank's shard of the full tensor `full` of parameter `name` (or of its moments), cut
/// as [`Gpt::new_sharded`] cuts it; `n_head` is the model's. Without a group (or with a group
/// of one) a copy of `full`. Not collective.
pub fn shard_tensor(
    name: &str,
    full: &Tensor,
    n_head: usize,
    group: Option<&TpGroup>,
) -> Result<Tensor> {
    let Some(g) = group.filter(|g| g.size() > 1) else {
        return full.copy();
    };
    let even = |dim: usize| -> Result<Tensor> {
        let n = full.dim(dim)?;
        if n % g.size() != 0 {
            candle_core::bail!(
                "{name}: dimension {dim} of {n} does not split over {} ranks",
                g.size()
            );
        }
        let per = n / g.size();
        full.narrow(dim, g.rank() * per, per)?.contiguous()
    };
    match cut_of(name) {
        Cut::Rows => even(0),
        Cut::Cols => even(1),
        Cut::Qkv => shard_qkv(full, n_head, g),
        Cut::Replicate => full.copy(),
    }
}

/// The full tensor of parameter `name` (or of its moments) from this rank's shard `local`:
/// the inverse of [`shard_tensor`], as `Gpt::full_params` reassembles parameters. Collective
/// over the tp group (all its ranks must call it for the same name); without one, a copy.
pub fn full_tensor(name: &str, local: &Tensor, group: Option<&TpGroup>) -> Result<Tensor> {
    let t = local.detach();
    let Some(g) = group.filter(|g| g.size() > 1) else {
        return t.copy();
    };
    match cut_of(name) {
        Cut::Replicate => t.copy(),
        Cut::Rows => all_gather_first_dim(&t, g),
        Cut::Cols => all_gather_last_dim(&t, g),
        Cut::Qkv => {
            // Gathered: [q_0; k_0; v_0; q_1; …]; the full layout is [q_0; q_1; …; k_0; …].
            let all = all_gather_first_dim(&t, g)?;
            let per = t.dim(0)? / 3;
            let parts = (0..3)
                .flat_map(|i| (0..g.size()).map(move |r| (r * 3 + i) * per))
                .map(|at| all.narrow(0, at, per))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)
        }
    }
}

/// This tp rank's contribution to a checkpoint of `model` with AdamW moments `m`, `v` (flat
/// shards, in the model's parameter order, as AdamW holds them): every parameter and both
/// moments, full, under their file names. Collective over the tp group; every tp rank gets
/// the same list, so a caller usually passes it on from one tp rank (and one dp replica) only.
pub fn model_state(model: &Gpt, m: &[Vec<f32>], v: &[Vec<f32>]) -> Result<Vec<(String, Tensor)>> {
    named_state(model.named_params(), model.tp_group(), m, v)
}

/// [`model_state`] for the parameters `named` (this tp rank's shards of a whole model or of
/// a pipeline stage's layers). Collective over `group`.
pub fn named_state(
    named: &[(String, Var)],
    group: Option<&TpGroup>,
    m: &[Vec<f32>],
    v: &[Vec<f32>],
) -> Result<Vec<(String, Tensor)>> {
    if m.len() != named.len() || v.len() != named.len() {
        candle_core::bail!(
            "{} / {} moments for {} parameters",
            m.len(),
            v.len(),
            named.len()
        );
    }
    let mut out = Vec::with_capacity(3 * named.len());
    for (i, (name, var)) in named.iter().enumerate() {
        out.push((param_key(name), full_tensor(name, var.as_tensor(), group)?));
        for (key, xs) in [(m_key(name), &m[i]), (v_key(name), &v[i])] {
            let local = Tensor::from_slice(xs, var.shape(), var.device())?;
            out.push((key, full_tensor(name, &local, group)?));
        }
    }
    Ok(out)
}

/// Every parameter's flat values (this tp rank's shards) cut from ZeRO's flat vector `flat`
/// of `layout` (all `layout.padded()` elements, every rank's shard in rank order).
pub fn unflatten(layout: &ShardLayout, flat: &[f32], params: usize) -> Result<Vec<Vec<f32>>> {
    if flat.len() != layout.padded() {
        candle_core::bail!(
            "ZeRO flat state of {} for {} elements",
            flat.len(),
            layout.padded()
        );
    }
    Ok((0..params)
        .map(|i| flat[layout.param(i)].to_vec())
        .collect())
}

/// Rank `rank`'s ZeRO shard (`layout.shard_len()` elements, zero padding) of the flat
/// concatenation of `local` (every parameter's flat values, in the model's order).
pub fn zero_shard(layout: &ShardLayout, rank: usize, local: &[Vec<f32>]) -> Vec<f32> {
    let mut flat = vec![0.0f32; layout.padded()];
    for (i, xs) in local.iter().enumerate() {
        flat[layout.param(i)].copy_from_slice(xs);
    }
    flat[layout.shard(rank)].to_vec()
}

/// ZeRO's moments back per parameter: all-gathers every dp rank's shards `m`, `v` (each
/// `layout.shard_len()` long) over `dp` (the ZeRO group; `None`: one rank) and cuts the
/// flat vectors into `params` parameters' flat values (this tp rank's shards), ready for
/// [`model_state`]. Collective over the dp group.
pub fn gather_zero(
    dp: Option<&mut Communicator>,
    layout: &ShardLayout,
    params: usize,
    m: &[f32],
    v: &[f32],
) -> Result<Moments> {
    for shard in [m, v] {
        if shard.len() != layout.shard_len() {
            candle_core::bail!("ZeRO shard of {} for {}", shard.len(), layout.shard_len());
        }
    }
    let (mut fm, mut fv) = (vec![0.0f32; layout.padded()], vec![0.0f32; layout.padded()]);
    match dp {
        Some(c) if c.size() > 1 => {
            c.all_gather(m, &mut fm).map_err(Error::wrap)?;
            c.all_gather(v, &mut fv).map_err(Error::wrap)?;
        }
        _ => {
            fm.copy_from_slice(m);
            fv.copy_from_slice(v);
        }
    }
    Ok((
        unflatten(layout, &fm, params)?,
        unflatten(layout, &fv, params)?,
    ))
}
