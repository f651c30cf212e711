//! The tensor-parallel model: one rank's shards, cut from the full, deterministically
//! initialised model.
//!
//! Every layout starts from identical parameters because the full model is initialised
//! exactly as for a single process (each tensor from its (seed, name) stream) and each rank
//! then keeps its slice, with the cuts of the `tp` layers:
//!
//! | parameter                          | cut                                   |
//! |------------------------------------|---------------------------------------|
//! | `wte`, `lm_head` `[V, C]`          | vocabulary rows (vocab-parallel; tied head = same rows) |
//! | `attn.c_attn` `[3C, C]`, `[3C]`    | this rank's heads' q, k, v rows ([`shard_qkv`]) |
//! | `mlp.c_fc` `[4C, C]`, `[4C]`       | output rows (column-parallel)         |
//! | `attn.c_proj`, `mlp.c_proj` weight | input columns (row-parallel)          |
//! | `wpe`, LayerNorms, `c_proj` biases | replicated                            |
//!
//! Replicated parameters need no tp all-reduce of their gradients: they act on replicated
//! activations (after a g, or before an f whose backward already sums the ranks' parts),
//! so every tp rank computes the same gradient for them. Shards keep their parameter's
//! dimensionality (a slice of a matrix is a matrix), so AdamW's weight-decay rule (rank ≥ 2)
//! decides as for the full parameter.

use super::layers::{LayerNorm, Lin};
use super::{Block, Gpt, GptConfig};
use crate::mesh::MeshShape;
use crate::tp::ops::{all_gather_first_dim, all_gather_last_dim};
use crate::tp::{
    fresh_var, shard_qkv, ColumnParallelLinear, RowParallelLinear, TpGroup, VocabParallelEmbedding,
};
use candle_core::{Device, Error, Result, Tensor, Var};
use std::collections::HashMap;

// The cut rules live with the checkpoint code, which needs them public; the model uses the
// same ones, so a checkpoint's full tensors always slice into exactly these shards.
use crate::checkpoint::shard::{cut_of, Cut};

impl Gpt {
    /// This tp rank's shards of the model [`Gpt::new`] builds with the same `cfg` and `seed`
    /// (see the module doc); with no group, or a group of one, exactly that model. All ranks
    /// of the group must build it (the layers' collectives pair up across them).
    pub fn new_sharded(
        cfg: GptConfig,
        seed: u64,
        device: &Device,
        group: Option<&TpGroup>,
    ) -> Result<Self> {
        let full = Gpt::new(cfg, seed, device)?;
        let Some(g) = group.filter(|g| g.size() > 1) else {
            return Ok(full);
        };
        let shape = MeshShape {
            dp: 1,
            tp: g.size(),
            pp: 1,
        };
        shape.check_model(&cfg).map_err(Error::msg)?;
        let mut named = Vec::with_capacity(full.named.len());
        for (name, var) in &full.named {
            let t = var.as_tensor();
            let shard = match cut_of(name) {
                Cut::Rows => g.shard_of(t, 0, name)?,
                Cut::Cols => g.shard_of(t, 1, name)?,
                Cut::Qkv => shard_qkv(t, cfg.n_head, g)?,
                Cut::Replicate => t.clone(),
            };
            named.push((name.clone(), fresh_var(&shard)?));
        }
        let by_name: HashMap<&str, &Var> = named.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let get = |name: &str| -> Result<Var> {
            by_name
                .get(name)
                .map(|&v| v.clone())
                .ok_or_else(|| Error::msg(format!("sharded model: no parameter {name}")))
        };
        let ln = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                w: get(&format!("{name}.weight"))?,
                b: get(&format!("{name}.bias"))?,
            })
        };
        let column = |name: &str| -> Result<Lin> {
            let (w, b) = (
                get(&format!("{name}.weight"))?,
                get(&format!("{name}.bias"))?,
            );
            Ok(Lin::Column(ColumnParallelLinear::from_shard(
                w,
                Some(b),
                false,
                g,
            )?))
        };
        let row = |name: &str| -> Result<Lin> {
            let (w, b) = (
                get(&format!("{name}.weight"))?,
                get(&format!("{name}.bias"))?,
            );
            Ok(Lin::Row(RowParallelLinear::from_shard(
                w,
                Some(b),
                true,
                g,
            )?))
        };
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                Ok(Block {
                    layer: i,
                    ln_1: ln(&format!("h.{i}.ln_1"))?,
                    c_attn: column(&format!("h.{i}.attn.c_attn"))?,
                    attn_proj: row(&format!("h.{i}.attn.c_proj"))?,
                    ln_2: ln(&format!("h.{i}.ln_2"))?,
                    c_fc: column(&format!("h.{i}.mlp.c_fc"))?,
                    mlp_proj: row(&format!("h.{i}.mlp.c_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let wte = get("wte.weight")?;
        // The embedding and a tied head share one variable: both see its summed gradient.
        let emb = VocabParallelEmbedding::from_shard(wte.clone(), g)?;
        let lm_head = match cfg.untied_head {
            true => Some(get("lm_head.weight")?),
            false => None,
        };
        Ok(Gpt {
            cfg,
            wte,
            wpe: get("wpe.weight")?,
            blocks,
            ln_f: ln("ln_f")?,
            lm_head,
            tp: Some((g.clone(), emb)),
            named,
        })
    }

    /// Every parameter whole, with its name, in [`Gpt::named_params`] order: the shards
    /// all-gathered and reassembled (for checks and checkpoints). Collective over the tp
    /// group: all its ranks must call it. Without tensor parallelism, copies.
    pub fn full_params(&self) -> Result<Vec<(String, Tensor)>> {
        gather_named(&self.named, self.tp_group())
    }
}

/// The whole parameters of `named` (tp shards cut by name, as [`Gpt::new_sharded`] cuts
/// them) gathered over `g`; copies without a group.
pub(super) fn gather_named(
    named: &[(String, Var)],
    g: Option<&TpGroup>,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::with_capacity(named.len());
    for (name, var) in named {
        let t = var.as_tensor().detach();
        let full = match (g, cut_of(name)) {
            (None, _) | (Some(_), Cut::Replicate) => t.copy()?,
            (Some(g), Cut::Rows) => all_gather_first_dim(&t, g)?,
            (Some(g), Cut::Cols) => all_gather_last_dim(&t, g)?,
            (Some(g), Cut::Qkv) => {
                // Gathered: [q_0; k_0; v_0; q_1; …]; the full layout is [q_0; q_1; …; k_0; …].
                let all = all_gather_first_dim(&t, g)?;
                let per = t.dim(0)? / 3;
                let parts = (0..3)
                    .flat_map(|i| (0..g.size()).map(move |r| (r * 3 + i) * per))
                    .map(|at| all.narrow(0, at, per))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 0)?
            }
        };
        out.push((name.clone(), full));
    }
    Ok(out)
}
