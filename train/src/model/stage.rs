//! Pipeline stages: the model's layers cut into contiguous stages, each a [`GptStage`].
//!
//! A stage is sliced, by parameter name, from the model [`Gpt::new_sharded`] builds (the
//! full deterministic init, then this tp rank's shards), so every layout starts from the
//! unsharded model's parameters. Stage 0 holds the token and position embeddings, stage
//! `pp − 1` the final LayerNorm, the head and the loss, and stage `s` the blocks
//! [`stage_layers`]`(n_layer, s, pp)`. With a tied head the token embedding lives on both the
//! first and the last stage (two copies of one parameter, as in Megatron-LM); the trainer
//! sums their gradients over the "embedding group" so the copies stay equal.

use super::dropout::{maybe, Site};
use super::{causal_mask, cross_entropy, Block, Dropout, Gpt, GptConfig, LayerNorm};
use crate::tp::{copy_to_tp, vocab_parallel_cross_entropy, TpGroup, VocabParallelEmbedding};
use candle_core::{Device, Module, Result, Tensor, Var};
use std::ops::Range;

/// The blocks of stage `stage` out of `stages`: contiguous, as even as possible, earlier
/// stages taking the remainder (`n_layer ≥ stages`).
pub fn stage_layers(n_layer: usize, stage: usize, stages: usize) -> Range<usize> {
    let (per, extra) = (n_layer / stages, n_layer % stages);
    let start = stage * per + stage.min(extra);
    start..start + per + usize::from(stage < extra)
}

/// The token and position embeddings of the first stage.
#[derive(Debug, Clone)]
struct Embed {
    wte: Var,
    wpe: Var,
    /// The vocab-parallel view of `wte` under tensor parallelism.
    vocab: Option<VocabParallelEmbedding>,
}

/// One pipeline stage of the model (this tp rank's shards of it).
#[derive(Debug, Clone)]
pub struct GptStage {
    cfg: GptConfig,
    stage: usize,
    stages: usize,
    embed: Option<Embed>,
    blocks: Vec<Block>,
    /// Final LayerNorm and head weight (the token embedding when tied): the last stage.
    head: Option<(LayerNorm, Var)>,
    named: Vec<(String, Var)>,
    tp: Option<TpGroup>,
}

impl GptStage {
    /// Stage `stage` of `stages` of the model `Gpt::new_sharded(cfg, seed, device, group)`
    /// (see the module doc). All ranks of the tp group must build it.
    pub fn new(
        cfg: GptConfig,
        seed: u64,
        device: &Device,
        group: Option<&TpGroup>,
        (stage, stages): (usize, usize),
    ) -> Result<Self> {
        if stages == 0 || stage >= stages || cfg.n_layer < stages {
            candle_core::bail!(
                "cannot cut {} layers into {stages} pipeline stages (stage {stage})",
                cfg.n_layer
            );
        }
        let full = Gpt::new_sharded(cfg, seed, device, group)?;
        let layers = stage_layers(cfg.n_layer, stage, stages);
        let (first, last) = (stage == 0, stage + 1 == stages);
        let keep = |name: &str| -> bool {
            match name.strip_prefix("h.") {
                Some(rest) => rest
                    .split('.')
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| layers.contains(&i)),
                None if name == "wte.weight" => first || (last && !cfg.untied_head),
                None if name == "wpe.weight" => first,
                None => last,
            }
        };
        let named = full
            .named
            .iter()
            .filter(|(n, _)| keep(n))
            .cloned()
            .collect();
        let embed = first.then(|| Embed {
            wte: full.wte.clone(),
            wpe: full.wpe.clone(),
            vocab: full.tp.as_ref().map(|(_, e)| e.clone()),
        });
        let head = last.then(|| {
            let w = full.lm_head.clone().unwrap_or_else(|| full.wte.clone());
            (full.ln_f.clone(), w)
        });
        Ok(GptStage {
            cfg,
            stage,
            stages,
            embed,
            blocks: full.blocks[layers].to_vec(),
            head,
            named,
            tp: full.tp.map(|(g, _)| g),
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// This stage's index and the number of stages.
    pub fn position(&self) -> (usize, usize) {
        (self.stage, self.stages)
    }

    /// Whether this is the first stage (embeddings, token ids in).
    pub fn is_first(&self) -> bool {
        self.stage == 0
    }

    /// Whether this is the last stage (head and loss).
    pub fn is_last(&self) -> bool {
        self.stage + 1 == self.stages
    }

    /// This stage's parameters with their names, in the model's order.
    pub fn named_params(&self) -> &[(String, Var)] {
        &self.named
    }

    /// The token embedding when this stage holds a copy of it (first stage; also the last
    /// with a tied head).
    pub fn wte(&self) -> Option<&Var> {
        self.named
            .iter()
            .find(|(n, _)| n == "wte.weight")
            .map(|(_, v)| v)
    }

    /// This stage's output for a micro-batch of `(b, t)` samples: `input` is the token ids
    /// `(b, t)` on the first stage, else the previous stage's output `(b·t, n_embd)`. The
    /// output is the residual stream `(b·t, n_embd)`, or on the last stage this tp rank's
    /// logits `(b·t, vocab/tp)`. `drop`: the micro-batch's dropout (`None`: none).
    pub fn forward(
        &self,
        input: &Tensor,
        (b, t): (usize, usize),
        drop: Option<&Dropout>,
    ) -> Result<Tensor> {
        let (c, h) = (self.cfg.n_embd, self.cfg.n_head);
        let tp = self.tp.as_ref().map_or(1, |g| g.size());
        let device = input.device();
        let mut x = match &self.embed {
            Some(e) => {
                let tok = match &e.vocab {
                    Some(v) => v.forward(input)?,
                    None => e.wte.as_tensor().embedding(&input.flatten_all()?)?,
                };
                let pos = Tensor::arange(0u32, t as u32, device)?;
                let pos = e.wpe.as_tensor().embedding(&pos)?;
                let x = tok
                    .reshape((b, t, c))?
                    .broadcast_add(&pos)?
                    .reshape((b * t, c))?;
                maybe(drop, x, Site::Embeddings)?
            }
            None => input.clone(),
        };
        let mask = causal_mask(t, device)?;
        for blk in &self.blocks {
            x = blk.forward(&x, (b, t, c / tp, h / tp), &mask, drop)?;
        }
        let Some((ln_f, w)) = &self.head else {
            return Ok(x);
        };
        let mut x = ln_f.forward(&x)?;
        if let Some(g) = &self.tp {
            // Column-parallel head, as in `Gpt::local_logits`.
            x = copy_to_tp(&x, g)?;
        }
        x.matmul(&w.as_tensor().t()?)
    }

    /// This stage's parameters whole (tp shards all-gathered), with their names, in the
    /// model's order. Collective over the tp group.
    pub fn full_params(&self) -> Result<Vec<(String, Tensor)>> {
        super::shard::gather_named(&self.named, self.tp.as_ref())
    }

    /// Mean cross-entropy of the last stage's `logits` (from [`GptStage::forward`]) against
    /// `targets` `(b, t)`.
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        match &self.tp {
            Some(g) => vocab_parallel_cross_entropy(logits, &targets.flatten_all()?, g),
            None => cross_entropy(logits, &targets.flatten_all()?),
        }
    }
}
