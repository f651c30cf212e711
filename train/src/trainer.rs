//! The training loop of one rank of a `pp × dp × tp` mesh, and [`run_threads`] (every rank
//! a thread of this process over a real oxccl communicator).
//!
//! Under tensor parallelism each rank's parameters are its shards ([`Gpt::new_sharded`]);
//! the gradient all-reduce runs over the dp group only (the tp ranks of a replica hold
//! different shards, and their replicated parameters already get identical gradients), and
//! AdamW updates each shard as it would the whole parameter, element by element. The batch
//! is split by dp index only: the tp ranks of a replica see the same samples.
//!
//! With pipeline stages or micro-batches ([`PipeConfig`]) a rank holds one stage
//! ([`GptStage`]) and [`Pipeline`] runs the step's forward and backward passes; the dp
//! all-reduce then runs per stage over its dp group, after the tied embedding's gradients
//! are summed over the embedding group.

use crate::data::{Dataset, Split};
use crate::dp::{DataParallel, OverlapStats};
use crate::mesh::{Mesh, MeshCoord, MeshShape};
use crate::model::{Dropout, Gpt, GptConfig, GptStage};
use crate::optim::{AdamW, AdamWConfig, LrSchedule};
pub use crate::pipeline::PipeConfig;
use crate::pipeline::Pipeline;
use crate::zero::{Zero, ZeroStage};
use candle_core::backprop::GradStore;
use candle_core::{Device, Error, Result, Tensor, Var};
use oxccl::Communicator;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod resume;
mod threads;
pub use threads::run_threads;

/// What to train and how.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Model shape.
    pub model: GptConfig,
    /// Global batch, in samples (split evenly among data-parallel ranks).
    pub batch: usize,
    /// Tokens per sample (at most `model.block_size`).
    pub block: usize,
    /// Number of optimizer steps.
    pub steps: u64,
    /// Seeds the initial weights and the batches.
    pub seed: u64,
    /// Learning-rate schedule.
    pub lr: LrSchedule,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Validation every this many steps and after the last; 0: after the last only.
    pub eval_every: u64,
    /// Global batches in one validation pass; 0: no validation.
    pub eval_batches: u64,
    /// Gradient bucket size in bytes.
    pub bucket_bytes: usize,
    /// ZeRO stage over the dp group; `None`: plain data parallelism (all-reduce, then AdamW
    /// on every parameter on every rank).
    pub zero: Option<ZeroStage>,
    /// Dropout probability of the embeddings and residual branches while training (masks
    /// keyed by seed, step and global sample, so every layout drops the same elements).
    pub dropout: f64,
}

impl TrainConfig {
    /// Whether this run can go ahead with `dp` data-parallel ranks; the error says why not.
    pub fn check(&self, dp: usize) -> std::result::Result<(), String> {
        if self.batch == 0 || dp == 0 || self.batch % dp != 0 {
            return Err(format!(
                "global batch {} must be a positive multiple of the {dp} data-parallel ranks",
                self.batch
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if self.block == 0 || self.block > self.model.block_size {
            return Err(format!(
                "block {} must be between 1 and the model's context length {}",
                self.block, self.model.block_size
            ));
        }
        Ok(())
    }
}

/// What one step reports (the same on every rank).
#[derive(Debug, Clone, PartialEq)]
pub struct StepLog {
    /// Step number, from 1.
    pub step: u64,
    /// Mean training loss over the global batch.
    pub loss: f32,
    /// Mean validation loss, on validation steps.
    pub val_loss: Option<f32>,
    /// Learning rate used.
    pub lr: f64,
    /// Global-batch tokens per second of wall time.
    pub tokens_per_s: f64,
    /// Share of the step the training thread spent synchronising gradients and the loss
    /// (waiting for all-reduces the backward pass did not hide included).
    pub comm_share: f64,
    /// The gradient all-reduce's time and how much of it the backward pass hid, when the
    /// step overlapped them (data parallel over several ranks with several gradient
    /// buckets, without ZeRO or a pipeline).
    pub overlap: Option<OverlapStats>,
}

/// The whole model (tp shards of it), or a pipeline stage.
enum Net {
    Whole(Gpt),
    Pipe(Box<Pipeline>),
}

/// The update: AdamW on every parameter after the dp all-reduce, or ZeRO (reduce-scatter,
/// AdamW on this rank's shard, all-gather) over a communicator of its own.
enum Optimizer {
    Full(AdamW),
    Zero(Box<Zero>),
}

/// One rank's model (shards), optimizer and data-parallel group.
pub struct Trainer {
    cfg: TrainConfig,
    shape: MeshShape,
    coord: MeshCoord,
    net: Net,
    vars: Vec<Var>,
    opt: Optimizer,
    dp: DataParallel,
    data: Arc<Dataset>,
    device: Device,
    /// Share of the last step spent in pipeline transfers (`None` without a pipeline).
    pipe_idle: Option<f64>,
    /// Checkpoints' groups and the first step to train ([`Trainer::resume`]).
    ckpt: resume::State,
}

impl Trainer {
    /// A data-parallel rank over `comm` (`None`: a single process), with freshly initialised
    /// weights: [`Trainer::with_mesh`] on a `dp × 1 × 1` mesh of `comm`'s ranks.
    pub fn new(cfg: TrainConfig, data: Arc<Dataset>, comm: Option<Communicator>) -> Result<Self> {
        let dp = comm.as_ref().map_or(1, |c| c.size() as usize);
        Self::with_mesh(cfg, data, Mesh::new(comm, MeshShape::data_parallel(dp))?)
    }

    /// A rank of `mesh`, holding its tp shards (of its pipeline stage) of freshly
    /// initialised weights, with one micro-batch per step and the 1F1B schedule.
    pub fn with_mesh(cfg: TrainConfig, data: Arc<Dataset>, mesh: Mesh) -> Result<Self> {
        Self::with_pipeline(cfg, data, mesh, PipeConfig::default())
    }

    /// A rank of `mesh` whose steps run `pipe` ([`Pipeline`] when there is more than one
    /// stage or micro-batch; ZeRO is not supported there yet: the error says so).
    pub fn with_pipeline(
        cfg: TrainConfig,
        data: Arc<Dataset>,
        mut mesh: Mesh,
        pipe: PipeConfig,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let (shape, coord) = (mesh.shape(), mesh.coord());
        let m = pipe.micro_batches;
        let pipelined = shape.pp > 1 || m > 1;
        if m == 0 || cfg.batch % (shape.dp * m).max(1) != 0 {
            candle_core::bail!(
                "global batch {} does not split into {m} micro-batches on each of {} \
                 data-parallel ranks",
                cfg.batch,
                shape.dp
            );
        }
        if pipelined && cfg.zero.is_some() {
            candle_core::bail!(
                "ZeRO is not supported with pipeline parallelism or micro-batches (mesh {shape}, \
                 {m} micro-batches); drop --zero or use --pp 1 --micro-batches 1"
            );
        }
        cfg.check(shape.dp).map_err(Error::msg)?;
        shape.check_model(&cfg.model).map_err(Error::msg)?;
        let mut pp_comm = mesh.take_pp();
        let (mut dp_comm, tp) = mesh.into_groups();
        // ZeRO gets its own copy of the dp group (same ranks, same order), so DataParallel
        // keeps the original for the batch split and the loss sums.
        let zero_comm = match (cfg.zero, dp_comm.as_mut()) {
            (Some(_), Some(c)) => c.split(Some(0), c.rank() as i32).map_err(Error::wrap)?,
            _ => None,
        };
        let ckpt = resume::State::new(tp.clone(), pp_comm.as_mut())?;
        let net = match pipelined {
            false => Net::Whole(Gpt::new_sharded(cfg.model, cfg.seed, &device, tp.as_ref())?),
            true => {
                let at = (coord.pp, shape.pp);
                let stage = GptStage::new(cfg.model, cfg.seed, &device, tp.as_ref(), at)?;
                let p = Pipeline::new(stage, pp_comm, pipe.schedule, m)?;
                Net::Pipe(Box::new(p))
            }
        };
        let named = match &net {
            Net::Whole(g) => g.named_params(),
            Net::Pipe(p) => p.stage().named_params(),
        };
        let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
        let sizes = vars.iter().map(|v| v.elem_count()).collect();
        let dp = DataParallel::new(dp_comm, sizes, cfg.bucket_bytes)?;
        let opt = match cfg.zero {
            None => Optimizer::Full(AdamW::new(vars.clone(), cfg.adamw)),
            Some(stage) => Optimizer::Zero(Box::new(Zero::new(
                zero_comm,
                vars.clone(),
                cfg.adamw,
                stage,
                cfg.bucket_bytes,
            )?)),
        };
        Ok(Trainer {
            cfg,
            shape,
            coord,
            net,
            vars,
            opt,
            dp,
            data,
            device,
            pipe_idle: None,
            ckpt,
        })
    }

    /// The mesh's shape.
    pub fn mesh_shape(&self) -> MeshShape {
        self.shape
    }

    /// This rank's place in the mesh.
    pub fn mesh_coord(&self) -> MeshCoord {
        self.coord
    }

    /// The model (`None` when this rank holds a pipeline stage).
    pub fn model(&self) -> Option<&Gpt> {
        match &self.net {
            Net::Whole(g) => Some(g),
            Net::Pipe(_) => None,
        }
    }

    /// The pipeline stage (`None` without a pipeline).
    pub fn stage(&self) -> Option<&GptStage> {
        match &self.net {
            Net::Whole(_) => None,
            Net::Pipe(p) => Some(p.stage()),
        }
    }

    /// Number of scalars in this rank's parameters.
    pub fn num_params(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// Share of the last step this rank spent in pipeline transfers, waiting for its
    /// neighbours included (the measured bubble); `None` without a pipeline.
    pub fn pipeline_idle_share(&self) -> Option<f64> {
        self.pipe_idle
    }

    /// This rank's data-parallel group.
    pub fn dp(&self) -> &DataParallel {
        &self.dp
    }

    /// This rank's share of the global batch of `step` as tensors `(ids, targets)`, and each
    /// row's index in the global batch.
    fn batch(&self, split: Split, step: u64) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let (r, n) = (self.dp.rank(), self.dp.size());
        let b = self
            .data
            .batch(
                split,
                self.cfg.seed,
                step,
                self.cfg.batch,
                self.cfg.block,
                (r, n),
            )
            .map_err(Error::wrap)?;
        let ids = Tensor::from_vec(b.inputs, (b.samples, b.block), &self.device)?;
        let targets = Tensor::from_vec(b.targets, (b.samples, b.block), &self.device)?;
        Ok((ids, targets, b.global_index))
    }

    /// Runs optimizer step `step` (0-based) and reports it.
    pub fn step(&mut self, step: u64) -> Result<StepLog> {
        let start = Instant::now();
        let (ids, targets, samples) = self.batch(Split::Train, step)?;
        let drop = (self.cfg.dropout > 0.0).then_some(Dropout {
            p: self.cfg.dropout,
            seed: self.cfg.seed,
            step,
            samples,
        });
        let drop = drop.as_ref();
        // Scaled so that the sum over dp ranks of the gradients is the gradient of the global
        // mean. The loss is already the same on every tp rank, so only dp ranks sum it.
        let share = 1.0 / self.dp.size() as f64;
        let lr = self.cfg.lr.at(step);
        let mut sync = Duration::ZERO;
        let mut overlap = None;
        // With one bucket nothing can start before the embeddings' gradient, the last one:
        // the plain backward then costs less than the layer-by-layer one.
        let overlapped = matches!((&self.opt, &self.net), (Optimizer::Full(_), Net::Whole(_)))
            && self.dp.size() > 1
            && self.dp.buckets().len() > 1;
        let loss = match (&mut self.opt, &self.net) {
            // Data parallel over several ranks: the backward pass runs layer by layer and
            // each gradient bucket is all-reduced while the earlier layers' run.
            (Optimizer::Full(opt), Net::Whole(model)) if overlapped => {
                let mut grads = self.dp.overlap();
                let loss = model
                    .backward_by_layer(&ids, &targets, share, drop, |i, g| grads.ready(i, g))?;
                let (grads, stats) = grads.finish()?;
                overlap = Some(stats);
                opt.step(&grads, lr)?;
                loss
            }
            _ => {
                let (grads, loss) = self.forward_backward(&ids, &targets, share, drop, start)?;
                match &mut self.opt {
                    Optimizer::Full(opt) => {
                        let grads = self.dp.reduce_grads(&grads, &self.vars)?;
                        opt.step(&grads, lr)?;
                    }
                    Optimizer::Zero(zero) => {
                        zero.step(&grads, lr)?;
                        sync = zero.take_sync_time();
                    }
                }
                loss
            }
        };
        let mut mean = [loss];
        self.dp.sum(&mut mean)?;
        let sync = sync + self.dp.take_sync_time();
        // Throughput and comm share cover the training step only, not validation.
        let elapsed = start.elapsed().max(Duration::from_nanos(1));
        let (every, last) = (self.cfg.eval_every, step + 1 == self.cfg.steps);
        let due = last || (every > 0 && (step + 1) % every == 0);
        let val_loss = match due && self.cfg.eval_batches > 0 {
            true => Some(self.evaluate()?),
            false => None,
        };
        self.dp.take_sync_time();
        let tokens = (self.cfg.batch * self.cfg.block) as f64;
        Ok(StepLog {
            step: step + 1,
            loss: mean[0],
            val_loss,
            lr,
            tokens_per_s: tokens / elapsed.as_secs_f64(),
            comm_share: sync.as_secs_f64() / elapsed.as_secs_f64(),
            overlap,
        })
    }

    /// This rank's gradients and its part of the mean loss (already times `share`).
    fn forward_backward(
        &mut self,
        ids: &Tensor,
        targets: &Tensor,
        share: f64,
        drop: Option<&Dropout>,
        start: Instant,
    ) -> Result<(GradStore, f32)> {
        match &mut self.net {
            Net::Whole(model) => {
                let loss = (model.loss_with_dropout(ids, targets, drop)? * share)?;
                Ok((loss.backward()?, loss.to_scalar::<f32>()?))
            }
            Net::Pipe(p) => {
                // Each micro-batch's loss is a mean over its samples: 1/M makes their sum
                // the mean over this rank's share.
                let scale = share / p.micro_batches() as f64;
                let (mut grads, loss) = p.forward_backward(ids, targets, scale, drop)?;
                let wait = p.take_wait_time();
                self.pipe_idle = Some(wait.as_secs_f64() / start.elapsed().as_secs_f64());
                p.sum_embedding_grads(&mut grads)?;
                Ok((grads, loss))
            }
        }
    }

    /// Mean validation loss over `eval_batches` fixed global batches.
    pub fn evaluate(&mut self) -> Result<f32> {
        let mut total = [0.0f32];
        for k in 0..self.cfg.eval_batches {
            let (ids, targets, _) = self.batch(Split::Val, k)?;
            let loss = match &mut self.net {
                Net::Whole(model) => model.loss(&ids.detach(), &targets)?.to_scalar::<f32>()?,
                Net::Pipe(p) => p.forward_only(&ids, &targets)?,
            };
            total[0] += loss / self.dp.size() as f32;
        }
        self.dp.sum(&mut total)?;
        Ok(total[0] / self.cfg.eval_batches.max(1) as f32)
    }

    /// Every parameter's values (this rank's shards), flat, in the model's order (for checks
    /// and checkpoints).
    pub fn params(&self) -> Result<Vec<Vec<f32>>> {
        self.vars
            .iter()
            .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect()
    }

    /// Every parameter whole (tp shards all-gathered), flat, in the model's order: the same
    /// on every layout (a pipeline stage: its own parameters only). Collective over the tp
    /// group.
    pub fn full_params(&self) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .full_named_params()?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// [`Trainer::full_params`] with the parameters' names.
    pub fn full_named_params(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let named = match &self.net {
            Net::Whole(g) => g.full_params()?,
            Net::Pipe(p) => p.stage().full_params()?,
        };
        named
            .into_iter()
            .map(|(n, t)| Ok((n, t.flatten_all()?.to_vec1::<f32>()?)))
            .collect()
    }

    /// Trains from [`Trainer::start_step`] to `cfg.steps`, calling `log` after each step.
    pub fn train(&mut self, mut log: impl FnMut(&StepLog)) -> Result<()> {
        for s in self.ckpt.start..self.cfg.steps {
            let entry = self.step(s)?;
            log(&entry);
        }
        Ok(())
    }
}
