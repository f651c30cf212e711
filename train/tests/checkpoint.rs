//! Checkpoints across layouts: save at (dp, tp) = (2, 2) after `K` steps, resume at other
//! layouts, and the next steps' losses and the final parameters match the uninterrupted
//! run's. Ranks are threads over real oxccl communicators.
//!
//! `Trainer` keeps its AdamW state private, so these tests drive the same step by hand (the
//! trainer's batch, loss, dp all-reduce and [`AdamWStep`] update, element for element): the
//! code under test is the checkpoint module's gather, merge, file and slicing paths.

mod common;
use common::{dataset, one_thread_per_rank};

use candle_core::{Device, Result, Var};
use oxccl::{Communicator, Config};
use oxccl_train::checkpoint::shard::{self, gather_zero, model_state, zero_shard};
use oxccl_train::checkpoint::{self as ckpt, Checkpoint, Meta};
use oxccl_train::data::{Dataset, Split};
use oxccl_train::dp::DataParallel;
use oxccl_train::mesh::{Mesh, MeshCoord, MeshShape};
use oxccl_train::model::{Gpt, GptConfig};
use oxccl_train::optim::{AdamWConfig, AdamWStep, LrSchedule};
use oxccl_train::tp::TpGroup;
use oxccl_train::trainer::{run_threads, TrainConfig};
use oxccl_train::zero::ShardLayout;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Steps before the checkpoint, and steps compared after it.
const K: u64 = 3;
const AFTER: u64 = 2;

/// A small model (vocabulary padded to a multiple of 2) with untied head, so both vocab cuts
/// are exercised.
fn config(vocab: usize) -> TrainConfig {
    let mut model = GptConfig::tiny(vocab.div_ceil(2) * 2);
    model.block_size = 16;
    model.untied_head = true;
    let steps = K + AFTER;
    TrainConfig {
        model,
        batch: 4,
        block: 16,
        steps,
        seed: 7,
        lr: LrSchedule {
            max_lr: 3e-3,
            min_lr: 3e-4,
            warmup: 2,
            total: steps,
        },
        adamw: AdamWConfig::default(),
        eval_every: 0,
        eval_batches: 0,
        bucket_bytes: 64 << 10,
        zero: None,
        dropout: 0.0,
    }
}

fn comm_config() -> Config {
    let mut c = Config::default();
    c.timeout = Duration::from_secs(60);
    c
}

/// One rank: the trainer's state with its AdamW moments in the open.
struct Rank {
    cfg: TrainConfig,
    vocab: usize,
    data: Arc<Dataset>,
    coord: MeshCoord,
    model: Gpt,
    vars: Vec<Var>,
    dp: DataParallel,
    /// A copy of the world (for the checkpoint gather) and of the dp group (ZeRO's gather).
    world: Option<Communicator>,
    zero_dp: Option<Communicator>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: u64,
}

impl Rank {
    fn new(
        comm: Option<Communicator>,
        shape: MeshShape,
        vocab: usize,
        data: Arc<Dataset>,
    ) -> Result<Self> {
        let cfg = config(vocab);
        let mut world = comm;
        let copy = |c: &mut Communicator| c.split(Some(0), c.rank() as i32);
        let world_copy = world
            .as_mut()
            .map(copy)
            .transpose()
            .map_err(candle_core::Error::wrap)?
            .flatten();
        let mesh = Mesh::new(world, shape)?;
        let coord = mesh.coord();
        let (mut dp_comm, tp) = mesh.into_groups();
        let zero_dp = dp_comm
            .as_mut()
            .map(copy)
            .transpose()
            .map_err(candle_core::Error::wrap)?
            .flatten();
        let model = Gpt::new_sharded(cfg.model, cfg.seed, &Device::Cpu, tp.as_ref())?;
        let vars: Vec<Var> = model
            .named_params()
            .iter()
            .map(|(_, v)| v.clone())
            .collect();
        let zeros: Vec<Vec<f32>> = vars.iter().map(|v| vec![0.0; v.elem_count()]).collect();
        let dp = DataParallel::new(
            dp_comm,
            vars.iter().map(|v| v.elem_count()).collect(),
            cfg.bucket_bytes,
        )?;
        Ok(Rank {
            cfg,
            vocab,
            data,
            coord,
            model,
            vars,
            dp,
            world: world_copy,
            zero_dp,
            m: zeros.clone(),
            v: zeros,
            step: 0,
        })
    }

    /// `Trainer::step` with plain AdamW, returning the global mean loss.
    fn step(&mut self) -> Result<f32> {
        let c = &self.cfg;
        let b = self
            .data
            .batch(
                Split::Train,
                c.seed,
                self.step,
                c.batch,
                c.block,
                (self.dp.rank(), self.dp.size()),
            )
            .map_err(candle_core::Error::wrap)?;
        let ids = candle_core::Tensor::from_vec(b.inputs, (b.samples, b.block), &Device::Cpu)?;
        let targets = candle_core::Tensor::from_vec(b.targets, (b.samples, b.block), &Device::Cpu)?;
        let loss = (self.model.loss(&ids, &targets)? * (1.0 / self.dp.size() as f64))?;
        let grads = self.dp.reduce_grads(&loss.backward()?, &self.vars)?;
        let update = AdamWStep::new(c.adamw, self.step + 1, c.lr.at(self.step));
        for (i, var) in self.vars.iter().enumerate() {
            let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            update.apply(
                var.rank() >= 2,
                &mut p,
                &grads[i],
                &mut self.m[i],
                &mut self.v[i],
            );
            var.set(&candle_core::Tensor::from_vec(
                p,
                var.shape(),
                &Device::Cpu,
            )?)?;
        }
        self.step += 1;
        let mut mean = [loss.to_scalar::<f32>()?];
        self.dp.sum(&mut mean)?;
        Ok(mean[0])
    }

    /// Saves; with `zero`, the moments go through ZeRO-1's layout (each dp rank keeps only
    /// its flat shard, the checkpoint gathers them over the dp group).
    fn save(&mut self, path: &Path, zero: bool) -> Result<()> {
        let (m, v) = match zero {
            false => (self.m.clone(), self.v.clone()),
            true => {
                let sizes: Vec<usize> = self.vars.iter().map(|v| v.elem_count()).collect();
                let layout = ShardLayout::new(&sizes, self.dp.size());
                let r = self.dp.rank();
                let (ms, vs) = (
                    zero_shard(&layout, r, &self.m),
                    zero_shard(&layout, r, &self.v),
                );
                gather_zero(self.zero_dp.as_mut(), &layout, sizes.len(), &ms, &vs)?
            }
        };
        let state = model_state(&self.model, &m, &v)?;
        let mine = match (self.coord.dp, self.coord.tp) {
            (0, 0) => state,
            _ => Vec::new(),
        };
        let meta = Meta::new(self.cfg.model, self.cfg.seed, self.vocab, self.step);
        ckpt::save(path, self.world.as_mut(), &meta, mine)
    }

    fn resume(&mut self, path: &Path) -> Result<()> {
        let c = Checkpoint::read(path)?;
        c.load_params(&self.model)?;
        (self.m, self.v) = c.local_moments(&self.model)?;
        self.step = c.meta().step;
        Ok(())
    }
}

fn flat_full(model: &Gpt) -> Result<Vec<Vec<f32>>> {
    model
        .full_params()?
        .iter()
        .map(|(_, t)| t.flatten_all()?.to_vec1::<f32>())
        .collect()
}

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// `name` in a fresh directory of test `test` (tests run in parallel).
fn tmp(test: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oxccl-ckpt-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// (losses of steps K.., full params at the end) on every rank of a `(dp, tp)` run.
type Run = Vec<(Vec<f32>, Vec<Vec<f32>>)>;

#[test]
fn saved_at_2x2_resumes_at_every_layout() {
    one_thread_per_rank();
    let (vocab, data) = dataset();
    let (plain, zero) = (
        tmp("layouts", "plain.safetensors"),
        tmp("layouts", "zero.safetensors"),
    );
    let (p, z, d) = (plain.clone(), zero.clone(), data.clone());
    let shape = MeshShape {
        dp: 2,
        tp: 2,
        pp: 1,
    };
    let reference: Run = run_threads(4, comm_config(), move |comm| {
        let mut r = Rank::new(comm, shape, vocab, d.clone())?;
        for _ in 0..K {
            r.step()?;
        }
        r.save(&p, false)?;
        r.save(&z, true)?;
        let losses = (0..AFTER).map(|_| r.step()).collect::<Result<Vec<_>>>()?;
        Ok((losses, flat_full(&r.model)?))
    })
    .expect("the (2, 2) run");
    let leftovers: Vec<_> = std::fs::read_dir(plain.parent().unwrap())
        .unwrap()
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only the two checkpoints, no temporary files"
    );
    let (want, want_params) = &reference[0];
    let names = Checkpoint::read(&plain).unwrap().names().len();
    println!("reference losses after step {K}: {want:?}; {names} tensors in the file");
    for (file, (dp, tp)) in [
        (&plain, (1, 1)),
        (&plain, (2, 1)),
        (&plain, (1, 2)),
        (&zero, (1, 1)),
        (&zero, (2, 1)),
    ] {
        let (f, d) = (file.clone(), data.clone());
        let shape = MeshShape { dp, tp, pp: 1 };
        let runs: Run = run_threads((dp * tp) as u32, comm_config(), move |comm| {
            let mut r = Rank::new(comm, shape, vocab, d.clone())?;
            r.resume(&f)?;
            let losses = (0..AFTER).map(|_| r.step()).collect::<Result<Vec<_>>>()?;
            Ok((losses, flat_full(&r.model)?))
        })
        .expect("the resumed run");
        for (rank, (losses, params)) in runs.iter().enumerate() {
            for (s, (a, b)) in losses.iter().zip(want).enumerate() {
                let e = rel(*a, *b);
                println!(
                    "{} ({dp}, {tp}) rank {rank} step {}: {a} vs {b} (rel {e:.1e})",
                    file.display(),
                    K + s as u64 + 1
                );
                assert!(
                    e < 1e-4,
                    "({dp}, {tp}) from {}: step {} loss {a} vs {b}",
                    file.display(),
                    K + s as u64 + 1
                );
            }
            let worst = params
                .iter()
                .flatten()
                .zip(want_params.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-4,
                "({dp}, {tp}) rank {rank}: parameters differ by {worst}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(plain.parent().unwrap());
}

#[test]
fn slicing_the_full_model_gives_the_sharded_model() {
    one_thread_per_rank();
    let model = config(65).model;
    run_threads(2, comm_config(), move |comm| {
        let g = TpGroup::new(comm.expect("two ranks"));
        let full = Gpt::new(model, 7, &Device::Cpu)?;
        let sharded = Gpt::new_sharded(model, 7, &Device::Cpu, Some(&g))?;
        for ((name, f), (_, s)) in full.named_params().iter().zip(sharded.named_params()) {
            let cut = shard::shard_tensor(name, f.as_tensor(), model.n_head, Some(&g))?;
            let back = shard::full_tensor(name, s.as_tensor(), Some(&g))?;
            let same = |a: &candle_core::Tensor, b: &candle_core::Tensor| -> Result<bool> {
                Ok(a.dims() == b.dims()
                    && a.flatten_all()?.to_vec1::<f32>()? == b.flatten_all()?.to_vec1::<f32>()?)
            };
            assert!(
                same(&cut, s.as_tensor())?,
                "{name}: slice differs from the sharded model"
            );
            assert!(
                same(&back, f.as_tensor())?,
                "{name}: reassembly differs from the full model"
            );
        }
        Ok(())
    })
    .expect("two tp ranks");
}
