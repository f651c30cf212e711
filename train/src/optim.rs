//! AdamW over candle [`Var`]s, with gradients given as flat f32 buffers (what the
//! data-parallel all-reduce produces), and the learning-rate schedule.
//!
//! The update runs on plain `Vec<f32>`s in a fixed order, element by element, so it is the
//! same on every rank and every run.

use candle_core::{Result, Tensor, Var};

/// AdamW's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay, applied to parameters of rank ≥ 2 only (matrices and
    /// embeddings; not biases or LayerNorm gains), as in GPT-2/nanoGPT.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// GPT-3's values: betas 0.9/0.95, eps 1e-8, weight decay 0.1.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// AdamW state for a list of parameters.
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    vars: Vec<Var>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: u64,
}

impl AdamW {
    /// State for `vars` (in the order gradients will be given).
    pub fn new(vars: Vec<Var>, cfg: AdamWConfig) -> Self {
        let zeros = |v: &Var| vec![0.0f32; v.elem_count()];
        AdamW {
            m: vars.iter().map(zeros).collect(),
            v: vars.iter().map(zeros).collect(),
            cfg,
            vars,
            step: 0,
        }
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The first and second moments, one flat vector per parameter (for checkpoints).
    pub fn moments(&self) -> (&[Vec<f32>], &[Vec<f32>]) {
        (&self.m, &self.v)
    }

    /// Restores the moments (one flat vector per parameter, as [`AdamW::moments`]) and the
    /// number of steps taken, from a checkpoint.
    pub fn restore(&mut self, m: Vec<Vec<f32>>, v: Vec<Vec<f32>>, steps: u64) -> Result<()> {
        let fits = |xs: &[Vec<f32>]| {
            xs.len() == self.vars.len()
                && xs
                    .iter()
                    .zip(&self.vars)
                    .all(|(x, p)| x.len() == p.elem_count())
        };
        if !fits(&m) || !fits(&v) {
            candle_core::bail!("moments do not fit the {} parameters", self.vars.len());
        }
        (self.m, self.v, self.step) = (m, v, steps);
        Ok(())
    }

    /// One update with learning rate `lr`; `grads[i]` is the flat gradient of `vars[i]`.
    pub fn step(&mut self, grads: &[Vec<f32>], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            candle_core::bail!(
                "{} gradients for {} parameters",
                grads.len(),
                self.vars.len()
            );
        }
        self.step += 1;
        let update = AdamWStep::new(self.cfg, self.step, lr);
        for (i, var) in self.vars.iter().enumerate() {
            let g = &grads[i];
            let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            if g.len() != p.len() {
                candle_core::bail!("gradient {i} has {} values for {}", g.len(), p.len());
            }
            update.apply(var.rank() >= 2, &mut p, g, &mut self.m[i], &mut self.v[i]);
            var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

/// One AdamW update (step number, learning rate and bias corrections fixed) over flat
/// slices. [`AdamW`] and ZeRO's sharded optimizer (`crate::zero`) both call it, so plain
/// data parallelism and ZeRO compute bit-identical updates from identical gradients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    cfg: AdamWConfig,
    lr: f64,
    bc1: f64,
    bc2: f64,
}

impl AdamWStep {
    /// The update of step `step` (counted from 1) with learning rate `lr`.
    pub fn new(cfg: AdamWConfig, step: u64, lr: f64) -> Self {
        AdamWStep {
            cfg,
            lr,
            bc1: 1.0 - cfg.beta1.powi(step as i32),
            bc2: 1.0 - cfg.beta2.powi(step as i32),
        }
    }

    /// Updates parameters `p` in place from gradients `g` and moments `m`, `v` (all the same
    /// length; extra elements of the longer slices are left alone); `decay` turns on weight
    /// decay (elements of rank ≥ 2 parameters).
    pub fn apply(&self, decay: bool, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let c = self.cfg;
        let decay = if decay { c.weight_decay } else { 0.0 };
        // Element by element in f64, so the result depends on nothing but the element.
        for (((pj, &gj), mj), vj) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let gj = gj as f64;
            let m1 = c.beta1 * *mj as f64 + (1.0 - c.beta1) * gj;
            let v1 = c.beta2 * *vj as f64 + (1.0 - c.beta2) * gj * gj;
            *mj = m1 as f32;
            *vj = v1 as f32;
            let update = (m1 / self.bc1) / ((v1 / self.bc2).sqrt() + c.eps);
            let p0 = *pj as f64;
            *pj = (p0 - self.lr * (update + decay * p0)) as f32;
        }
    }
}

/// Linear warm-up to `max_lr` over `warmup` steps, then cosine decay to `min_lr` at `total`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub max_lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Warm-up steps.
    pub warmup: u64,
    /// Step at which the decay ends.
    pub total: u64,
}

impl LrSchedule {
    /// The learning rate of step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.max_lr * (step + 1) as f64 / self.warmup as f64;
        }
        if step >= self.total {
            return self.min_lr;
        }
        let span = (self.total - self.warmup).max(1) as f64;
        let ratio = (step - self.warmup) as f64 / span;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        self.min_lr + coeff * (self.max_lr - self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_linearly_then_decays_to_the_floor() {
        let s = LrSchedule {
            max_lr: 1.0,
            min_lr: 0.1,
            warmup: 4,
            total: 14,
        };
        assert_eq!(s.at(0), 0.25);
        assert_eq!(s.at(3), 1.0);
        assert_eq!(s.at(4), 1.0);
        assert!((s.at(9) - 0.55).abs() < 1e-12);
        assert_eq!(s.at(14), 0.1);
        assert_eq!(s.at(100), 0.1);
    }

    #[test]
    fn first_adamw_step_moves_each_weight_by_lr_against_its_gradient() {
        let dev = candle_core::Device::Cpu;
        let w = Var::from_vec(vec![1.0f32, -1.0, 2.0, 0.5], (2, 2), &dev).unwrap();
        let b = Var::from_vec(vec![1.0f32, 1.0], 2, &dev).unwrap();
        let mut opt = AdamW::new(vec![w.clone(), b.clone()], AdamWConfig::default());
        let grads = vec![vec![0.5, -2.0, 0.0, 1e-3], vec![3.0, -3.0]];
        opt.step(&grads, 0.1).unwrap();
        // Bias-corrected first step: update = g / (|g| + eps) = sign(g); decay only on `w`.
        let w1 = w
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let expect = [
            1.0 - 0.1 * (1.0 + 0.1),
            -1.0 - 0.1 * (-1.0 - 0.1),
            2.0 - 0.1 * 0.2,
            0.5 - 0.1 * (1.0 + 0.05),
        ];
        for (a, e) in w1.iter().zip(expect) {
            assert!((a - e).abs() < 1e-5, "{w1:?} vs {expect:?}");
        }
        let b1 = b.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (b1[0] - 0.9).abs() < 1e-6 && (b1[1] - 1.1).abs() < 1e-6,
            "{b1:?}"
        );
    }
}
