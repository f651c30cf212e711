//! Tensor parallelism (with and without data parallelism) against a single process: with
//! the same seed and global batch, every `(dp, tp)` layout, ranks as threads over real oxccl
//! communicators split into a mesh, reports the single process's losses, on every rank.

mod common;
use common::{dataset, one_thread_per_rank};

use oxccl::Config;
use oxccl_train::data::Dataset;
use oxccl_train::mesh::{Mesh, MeshShape};
use oxccl_train::model::GptConfig;
use oxccl_train::optim::{AdamWConfig, LrSchedule};
use oxccl_train::trainer::{run_threads, TrainConfig, Trainer};
use std::sync::Arc;
use std::time::Duration;

/// The tiny model with its 65-character vocabulary padded to 66 (a multiple of tp = 2), the
/// same for every layout, so all of them train the same model.
fn config(vocab: usize, steps: u64, untied: bool) -> TrainConfig {
    let mut model = GptConfig::tiny(vocab.div_ceil(2) * 2);
    model.block_size = 32;
    model.untied_head = untied;
    TrainConfig {
        model,
        batch: 8,
        block: 32,
        steps,
        seed: 1337,
        lr: LrSchedule {
            max_lr: 3e-3,
            min_lr: 3e-4,
            warmup: 5,
            total: steps,
        },
        adamw: AdamWConfig::default(),
        eval_every: 10,
        eval_batches: 1,
        bucket_bytes: 64 << 10,
        zero: None,
        dropout: 0.0,
    }
}

/// One rank's per-step (loss, validation loss) and whole parameters after training.
type RankRun = (Vec<(f32, Option<f32>)>, Vec<Vec<f32>>);

/// Every rank's run, in world-rank order.
fn train(dp: usize, tp: usize, cfg: TrainConfig, data: Arc<Dataset>) -> Vec<RankRun> {
    let mut comm_cfg = Config::default();
    comm_cfg.timeout = Duration::from_secs(60);
    let shape = MeshShape { dp, tp, pp: 1 };
    run_threads((dp * tp) as u32, comm_cfg, move |comm| {
        let mesh = Mesh::new(comm, shape)?;
        let mut t = Trainer::with_mesh(cfg.clone(), data.clone(), mesh)?;
        let mut logs = Vec::new();
        t.train(|l| logs.push((l.loss, l.val_loss)))?;
        Ok((logs, t.full_params()?))
    })
    .expect("training")
}

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// Checks every layout's losses (relative 1e-4) and final whole parameters (absolute 1e-4)
/// against `(1, 1)`'s, and prints the largest differences.
fn check_layouts(untied: bool, steps: u64, layouts: &[(usize, usize)]) {
    one_thread_per_rank();
    let (v, data) = dataset();
    let start = std::time::Instant::now();
    let single = train(1, 1, config(v, steps, untied), data.clone());
    let (reference, ref_params) = &single[0];
    assert_eq!(reference.len(), steps as usize);
    assert!(
        reference[steps as usize - 1].0 < reference[0].0 - 0.3,
        "no learning: {reference:?}"
    );
    for &(dp, tp) in layouts {
        let runs = train(dp, tp, config(v, steps, untied), data.clone());
        assert_eq!(runs.len(), dp * tp);
        let (mut worst, mut worst_param) = (0f32, 0f32);
        for (rank, (logs, params)) in runs.iter().enumerate() {
            // The reported loss is the same number on every rank, not just close.
            assert_eq!(
                logs, &runs[0].0,
                "rank {rank} of (dp {dp}, tp {tp}) reports otherwise"
            );
            // Reassembled shards: the same model as one process trains.
            assert_eq!(params.len(), ref_params.len());
            for (i, (p, q)) in ref_params.iter().zip(params).enumerate() {
                assert_eq!(p.len(), q.len(), "parameter {i} size");
                let diff = p
                    .iter()
                    .zip(q)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                worst_param = worst_param.max(diff);
                assert!(
                    diff < 1e-4,
                    "(dp {dp}, tp {tp}) rank {rank} parameter {i}: {diff}"
                );
            }
            for (s, (a, b)) in reference.iter().zip(logs).enumerate() {
                worst = worst.max(rel(a.0, b.0));
                assert!(
                    rel(a.0, b.0) < 1e-4,
                    "(dp {dp}, tp {tp}) step {}: {} vs {}",
                    s + 1,
                    b.0,
                    a.0
                );
                match (a.1, b.1) {
                    (Some(x), Some(y)) => assert!(rel(x, y) < 1e-4, "val at step {}", s + 1),
                    (None, None) => {}
                    other => panic!("validation on different steps: {other:?}"),
                }
            }
        }
        eprintln!(
            "untied {untied} (dp {dp}, tp {tp}): step 1 {:.6} step {steps} {:.6}; max rel loss \
             diff vs (1, 1) {worst:.2e}, max parameter difference {worst_param:.2e}",
            runs[0].0[0].0,
            runs[0].0[steps as usize - 1].0
        );
    }
    eprintln!("{:.1}s", start.elapsed().as_secs_f64());
}

#[test]
fn tensor_and_data_parallel_layouts_match_one_process() {
    check_layouts(false, 20, &[(1, 2), (2, 2), (2, 1)]);
}

#[test]
fn untied_head_is_column_parallel_and_matches_one_process() {
    check_layouts(true, 6, &[(1, 2)]);
}

#[test]
fn mesh_rejects_mismatched_worlds_and_unsplittable_models() {
    let shape = MeshShape {
        dp: 2,
        tp: 2,
        pp: 1,
    };
    let err = Mesh::new(None, shape).unwrap_err().to_string();
    assert!(err.contains("world size 1 is not dp·tp·pp = 4"), "{err}");
    let mut model = GptConfig::tiny(65);
    let err = shape.check_model(&model).unwrap_err();
    assert!(err.contains("vocabulary") && err.contains("65"), "{err}");
    model.vocab_size = 66;
    model.n_head = 3;
    model.n_embd = 66;
    let err = shape.check_model(&model).unwrap_err();
    assert!(err.contains("n_head") && err.contains("3"), "{err}");
    // The trainer checks the same before building anything.
    let (v, data) = dataset();
    let cfg = config(v, 1, false);
    let mut bad = cfg.clone();
    bad.model.vocab_size = 65;
    let err = train_err(2, bad, data);
    assert!(err.contains("vocabulary"), "{err}");
}

/// The error a tp-only mesh of `tp` thread ranks gets from `Trainer::with_mesh`.
fn train_err(tp: usize, cfg: TrainConfig, data: Arc<Dataset>) -> String {
    let shape = MeshShape { dp: 1, tp, pp: 1 };
    let mut comm_cfg = Config::default();
    comm_cfg.timeout = Duration::from_secs(30);
    let errs = run_threads(tp as u32, comm_cfg, move |comm| {
        let mesh = Mesh::new(comm, shape)?;
        Ok(Trainer::with_mesh(cfg.clone(), data.clone(), mesh)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default())
    })
    .expect("mesh");
    errs[0].clone()
}

#[test]
fn mesh_groups_follow_the_documented_layout() {
    let shape = MeshShape {
        dp: 2,
        tp: 2,
        pp: 1,
    };
    let got = run_threads(4, Config::default(), move |comm| {
        let world = comm.as_ref().map_or(0, |c| c.rank() as usize);
        let mesh = Mesh::new(comm, shape)?;
        let c = mesh.coord();
        let tp_rank = mesh.tp_group().map(|g| (g.rank(), g.size()));
        let (dp, _) = mesh.into_groups();
        let mut dp = dp.expect("a dp group of 2");
        // Summing world ranks over the dp group says who is in it.
        let mut x = [world as f32];
        dp.all_reduce_in_place(&mut x, oxccl::ReduceOp::Sum)
            .map_err(candle_core::Error::wrap)?;
        Ok((world, c, tp_rank, dp.rank() as usize, x[0]))
    })
    .expect("mesh");
    for (world, c, tp, dp_rank, dp_sum) in got {
        assert_eq!(shape.rank_of(c), world);
        assert_eq!((c.dp, c.tp), (world / 2, world % 2));
        assert_eq!(tp, Some((c.tp, 2)));
        assert_eq!(dp_rank, c.dp);
        // dp groups {0, 2} and {1, 3}.
        assert_eq!(dp_sum, (2 * c.tp + 2) as f32);
    }
}
