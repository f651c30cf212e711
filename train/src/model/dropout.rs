//! Dropout whose masks depend on the seed, the step and the sample, not on the layout.
//!
//! GPT-2 drops out the embeddings' sum and the output of each residual branch (attention
//! and MLP). Here the mask of sample `g` (its index in the step's *global* batch) at site
//! `s` (the embeddings, or layer `l`'s attention or MLP branch) is drawn from the stream
//! keyed by `(seed, step, s, g)`. A data-parallel rank holding samples `r, r + dp, …`, the
//! tp ranks of a replica (which hold the whole residual stream at these sites, after the
//! row-parallel all-reduce) and a pipeline stage running one micro-batch all draw the very
//! masks the single process draws for those samples, so every layout trains the same model.
//! Attention probabilities are not dropped (their heads are split across tp ranks; GPT-2's
//! attention dropout is left out rather than keyed per head).

use crate::rng::SplitMix64;
use candle_core::{Result, Tensor};

/// Marks dropout streams apart from the other keyed streams of a seed.
const DROPOUT_KEY: u64 = u64::from_le_bytes(*b"dropout\0");

/// Where in the model a mask applies (each site draws its own masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The token plus position embeddings.
    Embeddings,
    /// Layer `l`'s attention output projection.
    Attention(usize),
    /// Layer `l`'s MLP output projection.
    Mlp(usize),
}

impl Site {
    fn key(self) -> u64 {
        match self {
            Site::Embeddings => 0,
            Site::Attention(l) => 1 + 2 * l as u64,
            Site::Mlp(l) => 2 + 2 * l as u64,
        }
    }
}

/// One training step's dropout: the probability and the rows' identities.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing an element, in `[0, 1)`.
    pub p: f64,
    /// The run's seed.
    pub seed: u64,
    /// The optimizer step.
    pub step: u64,
    /// The global-batch index of each sample of the batch being run, in row order.
    pub samples: Vec<usize>,
}

impl Dropout {
    /// The same step's dropout for samples `start..start + len` of this batch (a
    /// micro-batch).
    pub fn narrow(&self, start: usize, len: usize) -> Result<Dropout> {
        let Some(samples) = self.samples.get(start..start + len) else {
            candle_core::bail!(
                "samples {start}..{} of a batch of {}",
                start + len,
                self.samples.len()
            );
        };
        Ok(Dropout {
            samples: samples.to_vec(),
            ..self.clone()
        })
    }

    /// `x` `(b·t, C)` with each element zeroed with probability `p` and the rest scaled by
    /// `1 / (1 − p)` (so the expectation is unchanged).
    pub fn apply(&self, x: &Tensor, site: Site) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        if !(0.0..1.0).contains(&self.p) {
            candle_core::bail!("dropout probability {} is not in [0, 1)", self.p);
        }
        let (rows, width) = x.dims2()?;
        let b = self.samples.len();
        if b == 0 || rows % b != 0 {
            candle_core::bail!("{rows} rows do not split into {b} samples");
        }
        let per_sample = rows / b * width;
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let mut mask = Vec::with_capacity(rows * width);
        for &g in &self.samples {
            let key = [DROPOUT_KEY, self.step, site.key(), g as u64];
            let mut rng = SplitMix64::keyed(self.seed, &key);
            mask.extend((0..per_sample).map(|_| match rng.uniform() < self.p {
                true => 0.0,
                false => keep,
            }));
        }
        x * Tensor::from_vec(mask, (rows, width), x.device())?
    }
}

/// [`Dropout::apply`] when there is dropout.
pub(crate) fn maybe(drop: Option<&Dropout>, x: Tensor, site: Site) -> Result<Tensor> {
    match drop {
        Some(d) => d.apply(&x, site),
        None => Ok(x),
    }
}
