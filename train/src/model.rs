//! A GPT-2 style decoder in candle (CPU, f32): token and learned position embeddings, pre-
//! LayerNorm blocks of causal multi-head self-attention and a 4× GELU MLP, a final LayerNorm
//! and a head tied to the token embedding (or not). Dropout (`model/dropout.rs`) on the
//! embeddings and the residual branches, with masks keyed by step and sample.
//!
//! Parameters are candle [`Var`]s named like GPT-2's checkpoints (`h.0.attn.c_attn.weight`),
//! in a fixed order (the order optimizers and gradient buckets use). Linear weights are stored
//! `(out, in)`, PyTorch's convention. Each parameter is initialised from its own random stream
//! keyed by (seed, name), so initial weights do not depend on the order of creation or on
//! how a parallel layout slices them.
//!
//! Tensor parallelism ([`Gpt::new_sharded`], in `model/shard.rs`): the same model cut into a
//! tp rank's shards: vocab-parallel token embedding and head with a vocab-parallel
//! cross-entropy, head-sharded attention (column-parallel qkv, row-parallel projection), a
//! column → row MLP; position embeddings and LayerNorms replicated. Without a tp group the
//! code path is the single-process one.

mod dropout;
mod layers;
mod segments;
mod shard;
mod stage;

pub use dropout::{Dropout, Site as DropoutSite};
pub use stage::{stage_layers, GptStage};

use crate::rng::SplitMix64;
use crate::tp::{
    copy_to_tp, gather_from_tp, vocab_parallel_cross_entropy, TpGroup, VocabParallelEmbedding,
};
use candle_core::{Device, Module, Result, Tensor, Var, D};
use dropout::{maybe, Site};
use layers::{Fill, Init, LayerNorm, Lin};

/// Model shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptConfig {
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block (`n_embd` must be a multiple).
    pub n_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Longest context (number of learned positions).
    pub block_size: usize,
    /// Number of tokens.
    pub vocab_size: usize,
    /// Whether the output head is its own matrix rather than the token embedding.
    pub untied_head: bool,
}

impl GptConfig {
    /// 2 layers, 2 heads, 64 wide, 64 positions: for tests.
    pub fn tiny(vocab_size: usize) -> Self {
        GptConfig {
            n_layer: 2,
            n_head: 2,
            n_embd: 64,
            block_size: 64,
            vocab_size,
            untied_head: false,
        }
    }

    /// 4 layers, 4 heads, 128 wide, 128 positions: a quick demo on a CPU.
    pub fn small(vocab_size: usize) -> Self {
        GptConfig {
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            block_size: 128,
            vocab_size,
            untied_head: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    /// Its index in the whole model (dropout masks are keyed by it).
    layer: usize,
    ln_1: LayerNorm,
    c_attn: Lin,
    attn_proj: Lin,
    ln_2: LayerNorm,
    c_fc: Lin,
    mlp_proj: Lin,
}

/// The decoder: the whole model, or (built by [`Gpt::new_sharded`]) one tensor-parallel
/// rank's shards of it.
#[derive(Debug, Clone)]
pub struct Gpt {
    cfg: GptConfig,
    /// The token embedding (this rank's vocabulary rows under tensor parallelism).
    wte: Var,
    wpe: Var,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Option<Var>,
    named: Vec<(String, Var)>,
    /// The tp group and the vocab-parallel view of `wte`; `None` for an unsharded model.
    tp: Option<(TpGroup, VocabParallelEmbedding)>,
}

impl Gpt {
    /// A model with GPT-2's initialisation: weights normal(0, 0.02), the two residual output
    /// projections of each block scaled by 1/√(2·n_layer), biases 0, LayerNorm gains 1.
    pub fn new(cfg: GptConfig, seed: u64, device: &Device) -> Result<Self> {
        if cfg.n_head == 0 || cfg.n_embd % cfg.n_head != 0 {
            candle_core::bail!(
                "n_embd {} is not a multiple of n_head {}",
                cfg.n_embd,
                cfg.n_head
            );
        }
        let (c, std) = (cfg.n_embd, 0.02);
        let proj_std = std / (2.0 * cfg.n_layer as f64).sqrt();
        let mut init = Init {
            seed,
            device,
            named: Vec::new(),
        };
        let wte = init.var("wte.weight".into(), &[cfg.vocab_size, c], Fill::Normal(std))?;
        let wpe = init.var("wpe.weight".into(), &[cfg.block_size, c], Fill::Normal(std))?;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            blocks.push(Block {
                layer: i,
                ln_1: init.layer_norm(&format!("h.{i}.ln_1"), c)?,
                c_attn: init.linear(&format!("h.{i}.attn.c_attn"), c, 3 * c, std)?,
                attn_proj: init.linear(&format!("h.{i}.attn.c_proj"), c, c, proj_std)?,
                ln_2: init.layer_norm(&format!("h.{i}.ln_2"), c)?,
                c_fc: init.linear(&format!("h.{i}.mlp.c_fc"), c, 4 * c, std)?,
                mlp_proj: init.linear(&format!("h.{i}.mlp.c_proj"), 4 * c, c, proj_std)?,
            });
        }
        let ln_f = init.layer_norm("ln_f", c)?;
        let lm_head = match cfg.untied_head {
            true => Some(init.var(
                "lm_head.weight".into(),
                &[cfg.vocab_size, c],
                Fill::Normal(std),
            )?),
            false => None,
        };
        Ok(Gpt {
            cfg,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            named: init.named,
            tp: None,
        })
    }

    /// The shape.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// Every parameter with its name, in the fixed order.
    pub fn named_params(&self) -> &[(String, Var)] {
        &self.named
    }

    /// Total number of scalars in the parameters.
    pub fn num_params(&self) -> usize {
        self.named.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// This rank's tp group (`None` for an unsharded model).
    pub fn tp_group(&self) -> Option<&TpGroup> {
        self.tp.as_ref().map(|(g, _)| g)
    }

    /// Logits `(batch·t, vocab)` for token ids `ids` of shape `(batch, t)`, `t ≤ block_size`.
    /// Under tensor parallelism the vocabulary shards are all-gathered, so every rank of the
    /// tp group gets the full logits (and all of them must call this).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let local = self.local_logits(ids, None)?;
        match self.tp_group() {
            Some(g) => gather_from_tp(&local, g),
            None => Ok(local),
        }
    }

    /// Logits for this rank's vocabulary columns, `(batch·t, vocab/tp)`.
    fn local_logits(&self, ids: &Tensor, drop: Option<&Dropout>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let mut x = self.embed(ids, drop)?;
        let mask = causal_mask(t, ids.device())?;
        for blk in &self.blocks {
            x = blk.forward(&x, self.block_dims(b, t), &mask, drop)?;
        }
        self.head(&x)
    }

    /// The residual stream `(b·t, C)` entering the first block: token plus position
    /// embeddings of `ids` `(b, t)`.
    fn embed(&self, ids: &Tensor, drop: Option<&Dropout>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let c = self.cfg.n_embd;
        if t > self.cfg.block_size {
            candle_core::bail!("context {t} exceeds block_size {}", self.cfg.block_size);
        }
        let pos = Tensor::arange(0u32, t as u32, ids.device())?;
        let tok = match &self.tp {
            Some((_, emb)) => emb.forward(ids)?,
            None => self.wte.as_tensor().embedding(&ids.flatten_all()?)?,
        };
        let tok = tok.reshape((b, t, c))?;
        let pos = self.wpe.as_tensor().embedding(&pos)?;
        // The residual stream stays 2-D, (b·t, c), so every linear layer is one matmul.
        let x = tok.broadcast_add(&pos)?.reshape((b * t, c))?;
        maybe(drop, x, Site::Embeddings)
    }

    /// A block's `(b, t, width, heads)` on this rank: each tp rank runs its n_head/tp heads
    /// (n_embd/tp of the qkv width per q, k, v).
    fn block_dims(&self, b: usize, t: usize) -> (usize, usize, usize, usize) {
        let tp = self.tp_group().map_or(1, |g| g.size());
        (b, t, self.cfg.n_embd / tp, self.cfg.n_head / tp)
    }

    /// This rank's logits from the residual stream after the last block.
    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.ln_f.forward(x)?;
        if let Some(g) = self.tp_group() {
            // The head is column-parallel over the vocabulary: f sums the ranks' partial
            // gradients of the replicated stream in the backward pass.
            x = copy_to_tp(&x, g)?;
        }
        let head = self.lm_head.as_ref().unwrap_or(&self.wte);
        x.matmul(&head.as_tensor().t()?)
    }

    /// Mean cross-entropy of the next-token predictions over all `b·t` positions (the same
    /// value on every tp rank; vocab-parallel, without gathering the logits, under tp).
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.loss_with_dropout(ids, targets, None)
    }

    /// [`Gpt::loss`] in training mode: with `drop`'s dropout masks (`None`: none).
    pub fn loss_with_dropout(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        drop: Option<&Dropout>,
    ) -> Result<Tensor> {
        self.loss_of_logits(&self.local_logits(ids, drop)?, targets)
    }

    /// [`Gpt::loss`] from this rank's logits.
    fn loss_of_logits(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        match self.tp_group() {
            Some(g) => vocab_parallel_cross_entropy(logits, &targets.flatten_all()?, g),
            None => cross_entropy(logits, &targets.flatten_all()?),
        }
    }

    /// `n` tokens following `prompt`: greedy when `temperature` is 0, otherwise sampled from
    /// softmax(logits / temperature) with `rng`.
    pub fn generate(
        &self,
        prompt: &[u32],
        n: usize,
        temperature: f64,
        rng: &mut SplitMix64,
    ) -> Result<Vec<u32>> {
        let mut ids = prompt.to_vec();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let ctx = &ids[ids.len().saturating_sub(self.cfg.block_size)..];
            let input = Tensor::from_slice(ctx, (1, ctx.len()), self.wte.device())?;
            let logits = self.forward(&input)?.get(ctx.len() - 1)?.to_vec1::<f32>()?;
            let next = pick(&logits, temperature, rng);
            ids.push(next);
            out.push(next);
        }
        Ok(out)
    }
}

impl Block {
    /// One pre-LN block on the residual stream `x` `(b·t, C)`; `dims` as for [`attention`].
    /// With `drop`, each residual branch's output is dropped out before it is added.
    fn forward(
        &self,
        x: &Tensor,
        dims: (usize, usize, usize, usize),
        mask: &Tensor,
        drop: Option<&Dropout>,
    ) -> Result<Tensor> {
        let a = attention(self, &self.ln_1.forward(x)?, dims, mask)?;
        let x = (x + maybe(drop, a, Site::Attention(self.layer))?)?;
        let m = self.c_fc.forward(&self.ln_2.forward(&x)?)?.gelu()?;
        let m = self.mlp_proj.forward(&m)?;
        x + maybe(drop, m, Site::Mlp(self.layer))?
    }
}

/// Additive mask `(t, t)`: 0 where key ≤ query, a large negative number above the diagonal
/// (finite, so no 0·∞ appears in the backward pass; exp of it is exactly 0 in f32).
fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
        .collect();
    Tensor::from_vec(m, (t, t), device)
}

/// Causal multi-head self-attention on the normalised stream `x` `(b·t, C)`, for `h` heads
/// of total width `c`: all of them (`c = C`), or a tp rank's `n_head/tp` heads (`c = C/tp`),
/// whose qkv shard has the same `[q; k; v]` row layout (see `tp/attention.rs`). The output
/// projection then sums the ranks' parts.
fn attention(
    blk: &Block,
    x: &Tensor,
    (b, t, c, h): (usize, usize, usize, usize),
    mask: &Tensor,
) -> Result<Tensor> {
    let d = c / h;
    let qkv = blk.c_attn.forward(x)?.reshape((b, t, 3 * c))?;
    // (b, t, c) → (b, h, t, d), contiguous for the batched matmuls.
    let heads = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i * c, c)?
            .reshape((b, t, h, d))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
    let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?;
    let p = softmax_last(&scores.broadcast_add(mask)?)?;
    let y = p
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * t, c))?;
    blk.attn_proj.forward(&y)
}

/// Softmax over the last dimension; the max is detached because softmax does not depend on
/// the shift, which keeps its gradient out of the graph.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let e = x
        .broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?
        .exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Mean negative log-likelihood of `targets` under `logits` `(n, vocab)`.
fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?.detach())?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_p = shifted.broadcast_sub(&log_z)?;
    candle_nn::loss::nll(&log_p, targets)
}

/// The next token from one row of logits.
fn pick(logits: &[f32], temperature: f64, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / temperature).exp())
        .collect();
    let mut u = rng.uniform() * w.iter().sum::<f64>();
    for (i, wi) in w.iter().enumerate() {
        if u < *wi {
            return i as u32;
        }
        u -= wi;
    }
    // Rounding left u at the very top: the last token with weight.
    argmax()
}
