//! The model's building blocks: dense and tensor-parallel linear layers behind one enum,
//! LayerNorm, and the deterministic parameter initialiser.

use crate::rng::{name_key, SplitMix64};
use crate::tp::{ColumnParallelLinear, RowParallelLinear};
use candle_core::{Device, Module, Result, Tensor, Var, D};

/// One dense linear layer, `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
pub(super) struct Linear {
    pub(super) w: Var,
    pub(super) b: Var,
}

impl Linear {
    /// `x` is `(rows, in)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())
    }
}

/// A linear layer of a block: dense (no tensor parallelism, the single-process code path,
/// unchanged) or one of Megatron's two splits. An enum rather than a trait object so the
/// model stays `Clone + Debug` and the dense path is exactly the pre-TP computation.
#[derive(Debug, Clone)]
pub(super) enum Lin {
    Dense(Linear),
    /// Output features split; the output stays split (feeds a [`Lin::Row`]).
    Column(ColumnParallelLinear),
    /// Input features split; the input is already split, the output is all-reduced.
    Row(RowParallelLinear),
}

impl Lin {
    /// `x` is `(rows, in)` (or this rank's `in/tp` columns for [`Lin::Row`]).
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Lin::Dense(l) => l.forward(x),
            Lin::Column(l) => l.forward(x),
            Lin::Row(l) => l.forward(x),
        }
    }
}

/// LayerNorm over the last dimension (replicated on tp ranks).
#[derive(Debug, Clone)]
pub(super) struct LayerNorm {
    pub(super) w: Var,
    pub(super) b: Var,
}

impl LayerNorm {
    /// Written with differentiable tensor ops: candle-nn's fused `layer_norm` has no backward.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&var.affine(1.0, 1e-5)?.sqrt()?)?;
        xn.broadcast_mul(self.w.as_tensor())?
            .broadcast_add(self.b.as_tensor())
    }
}

/// Creates parameters in order and remembers their names.
pub(super) struct Init<'a> {
    pub(super) seed: u64,
    pub(super) device: &'a Device,
    pub(super) named: Vec<(String, Var)>,
}

/// How a parameter starts.
pub(super) enum Fill {
    Zeros,
    Ones,
    Normal(f64),
}

impl Init<'_> {
    pub(super) fn var(&mut self, name: String, shape: &[usize], fill: Fill) -> Result<Var> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match fill {
            Fill::Zeros => vec![0.0; n],
            Fill::Ones => vec![1.0; n],
            Fill::Normal(std) => {
                let mut rng = SplitMix64::keyed(self.seed, &[name_key(&name)]);
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            }
        };
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, self.device)?)?;
        self.named.push((name, var.clone()));
        Ok(var)
    }

    pub(super) fn linear(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        std: f64,
    ) -> Result<Lin> {
        Ok(Lin::Dense(Linear {
            w: self.var(format!("{name}.weight"), &[d_out, d_in], Fill::Normal(std))?,
            b: self.var(format!("{name}.bias"), &[d_out], Fill::Zeros)?,
        }))
    }

    pub(super) fn layer_norm(&mut self, name: &str, d: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            w: self.var(format!("{name}.weight"), &[d], Fill::Ones)?,
            b: self.var(format!("{name}.bias"), &[d], Fill::Zeros)?,
        })
    }
}
