//! Pipeline parallelism (with tensor and data parallelism) against a single process: with
//! the same seed and global batch, every `(dp, tp, pp)` layout in `{1, 2}³`, ranks as
//! threads over real oxccl communicators split into a mesh, reports the single process's
//! losses on every rank, with both schedules.

mod common;
use common::{dataset, one_thread_per_rank};

use oxccl::Config;
use oxccl_train::mesh::{Mesh, MeshShape};
use oxccl_train::model::GptConfig;
use oxccl_train::optim::{AdamWConfig, LrSchedule};
use oxccl_train::pipeline::{bubble_fraction, Schedule};
use oxccl_train::trainer::{run_threads, PipeConfig, TrainConfig, Trainer};
use oxccl_train::zero::ZeroStage;
use std::time::Duration;

/// The tiny model (2 layers: one per stage at pp = 2) with its vocabulary padded to 66 (a
/// multiple of tp = 2), the same for every layout. The schedule's length is always 20
/// steps, so a run stopped early follows the reference's learning rates.
fn config(untied: bool) -> TrainConfig {
    let (vocab, _) = dataset();
    let mut model = GptConfig::tiny(vocab.div_ceil(2) * 2);
    model.block_size = 32;
    model.untied_head = untied;
    TrainConfig {
        model,
        batch: 8,
        block: 32,
        steps: 20,
        seed: 1337,
        lr: LrSchedule {
            max_lr: 3e-3,
            min_lr: 3e-4,
            warmup: 5,
            total: 20,
        },
        adamw: AdamWConfig::default(),
        eval_every: 10,
        eval_batches: 1,
        bucket_bytes: 64 << 10,
        zero: None,
        dropout: 0.0,
    }
}

/// One rank's per-step (loss, validation loss), its whole parameters by name after
/// training, and its mean measured pipeline idle share.
type RankRun = (Vec<(f32, Option<f32>)>, Vec<(String, Vec<f32>)>, f64);

/// Every rank's first `steps` steps of the `(dp, tp, pp)` layout, in world-rank order.
fn train(
    (dp, tp, pp): (usize, usize, usize),
    pipe: PipeConfig,
    cfg: TrainConfig,
    steps: u64,
) -> Vec<RankRun> {
    let (_, data) = dataset();
    let mut comm_cfg = Config::default();
    comm_cfg.timeout = Duration::from_secs(60);
    let shape = MeshShape { dp, tp, pp };
    run_threads((dp * tp * pp) as u32, comm_cfg, move |comm| {
        let mesh = Mesh::new(comm, shape)?;
        let mut t = Trainer::with_pipeline(cfg.clone(), data.clone(), mesh, pipe)?;
        let (mut logs, mut idle) = (Vec::new(), 0.0);
        for s in 0..steps {
            let l = t.step(s)?;
            logs.push((l.loss, l.val_loss));
            idle += t.pipeline_idle_share().unwrap_or(0.0) / steps as f64;
        }
        Ok((logs, t.full_named_params()?, idle))
    })
    .expect("training")
}

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// Checks each layout's first `steps` losses (relative 1e-4, the same number on every
/// rank) against `reference`'s, and after a whole run every rank's parameters, by name,
/// against the reference's (absolute 1e-4); prints the largest differences.
fn check(
    reference: &RankRun,
    untied: bool,
    steps: u64,
    layouts: &[((usize, usize, usize), Schedule)],
) {
    let (ref_logs, ref_params, _) = reference;
    for &(layout, schedule) in layouts {
        let (dp, tp, pp) = layout;
        let m = if pp > 1 { 4 } else { 2 };
        let pipe = PipeConfig {
            micro_batches: m,
            schedule,
        };
        let runs = train(layout, pipe, config(untied), steps);
        let runs = match runs.len() == dp * tp * pp {
            true => runs,
            false => panic!("{layout:?}: {} ranks", runs.len()),
        };
        let (mut worst, mut worst_param) = (0f32, 0f32);
        for (rank, (logs, params, _)) in runs.iter().enumerate() {
            assert_eq!(
                logs, &runs[0].0,
                "rank {rank} of {layout:?} reports otherwise"
            );
            for (s, (a, b)) in ref_logs.iter().zip(logs).enumerate() {
                worst = worst.max(rel(a.0, b.0));
                assert!(
                    rel(a.0, b.0) < 1e-4,
                    "{layout:?} step {}: {b:?} vs {a:?}",
                    s + 1
                );
                match (a.1, b.1) {
                    (Some(x), Some(y)) => assert!(rel(x, y) < 1e-4, "val at step {}", s + 1),
                    _ => assert!(b.1.is_none() || s + 1 == steps as usize),
                }
            }
            if steps as usize != ref_logs.len() {
                continue;
            }
            for (name, p) in params {
                let (_, q) = ref_params
                    .iter()
                    .find(|(n, _)| n == name)
                    .expect("a parameter of the model");
                let diff = p
                    .iter()
                    .zip(q)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                worst_param = worst_param.max(diff);
                assert!(diff < 1e-4, "{layout:?} rank {rank} {name}: {diff}");
            }
        }
        // Each stage holds its own layers: together, the whole model.
        let held: usize = runs.iter().map(|r| r.1.len()).sum::<usize>() / (dp * tp);
        let tied_copies = usize::from(pp > 1 && !untied);
        assert_eq!(held, ref_params.len() + tied_copies, "{layout:?}");
        let idle = runs[0].2;
        // Parameters are compared after whole runs only.
        let params = match steps as usize == ref_logs.len() {
            true => format!("{worst_param:.2e}"),
            false => "-".into(),
        };
        eprintln!(
            "untied {untied} (dp {dp}, tp {tp}, pp {pp}) {schedule} M {m}: {steps} steps, max \
             rel loss diff {worst:.2e}, max param diff {params}, bubble {:.1}% theoretical, \
             rank 0 in transfers {:.1}%",
            100.0 * bubble_fraction(pp, m),
            100.0 * idle
        );
    }
}

fn reference(untied: bool, steps: u64) -> RankRun {
    one_thread_per_rank();
    let run = train((1, 1, 1), PipeConfig::default(), config(untied), steps);
    let run = run.into_iter().next().expect("one rank");
    assert!(
        run.0[steps as usize - 1].0 < run.0[0].0 - 0.3,
        "no learning"
    );
    run
}

#[test]
fn pipelines_match_one_process_for_20_steps() {
    let r = reference(false, 20);
    use Schedule::*;
    let layouts = [
        ((1, 1, 2), GPipe),
        ((1, 1, 2), OneFOneB),
        ((2, 2, 2), OneFOneB),
    ];
    check(&r, false, 20, &layouts);
}

#[test]
fn every_layout_matches_one_process() {
    let r = reference(false, 20);
    use Schedule::*;
    let layouts = [
        ((2, 1, 1), OneFOneB),
        ((1, 2, 1), GPipe),
        ((2, 2, 1), OneFOneB),
        ((2, 1, 2), GPipe),
        ((1, 2, 2), OneFOneB),
        ((2, 2, 2), GPipe),
    ];
    check(&r, false, 4, &layouts);
}

#[test]
fn untied_head_lives_on_the_last_stage() {
    let r = reference(true, 20);
    check(&r, true, 4, &[((1, 2, 2), Schedule::OneFOneB)]);
}

#[test]
fn bubble_fraction_and_errors() {
    assert_eq!(bubble_fraction(1, 8), 0.0);
    assert!((bubble_fraction(2, 4) - 0.2).abs() < 1e-12);
    assert!((bubble_fraction(4, 8) - 3.0 / 11.0).abs() < 1e-12);
    assert_eq!("gpipe".parse(), Ok(Schedule::GPipe));
    assert!("zb".parse::<Schedule>().is_err());
    let err = |cfg: TrainConfig, pipe: PipeConfig| -> String {
        let mut comm_cfg = Config::default();
        comm_cfg.timeout = Duration::from_secs(30);
        let shape = MeshShape {
            dp: 1,
            tp: 1,
            pp: 2,
        };
        let out = run_threads(2, comm_cfg, move |comm| {
            let (_, data) = dataset();
            let mesh = Mesh::new(comm, shape)?;
            Ok(Trainer::with_pipeline(cfg.clone(), data, mesh, pipe)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default())
        });
        out.expect("mesh")[0].clone()
    };
    let mut zero = config(false);
    zero.zero = Some(ZeroStage::One);
    let e = err(zero, PipeConfig::default());
    assert!(e.contains("ZeRO is not supported with pipeline"), "{e}");
    let pipe = PipeConfig {
        micro_batches: 3,
        schedule: Schedule::GPipe,
    };
    let e = err(config(false), pipe);
    assert!(e.contains("does not split into 3 micro-batches"), "{e}");
}

#[test]
fn pp_groups_follow_the_documented_layout() {
    let shape = MeshShape {
        dp: 2,
        tp: 2,
        pp: 2,
    };
    let got = run_threads(8, Config::default(), move |comm| {
        let world = comm.as_ref().map_or(0, |c| c.rank() as usize);
        let mut mesh = Mesh::new(comm, shape)?;
        let c = mesh.coord();
        let mut pp = mesh.take_pp().expect("a pp group of 2");
        // Summing world ranks over the pp group says who is in it.
        let mut x = [world as f32];
        pp.all_reduce_in_place(&mut x, oxccl::ReduceOp::Sum)
            .map_err(candle_core::Error::wrap)?;
        Ok((world, c, pp.rank() as usize, x[0]))
    })
    .expect("mesh");
    for (world, c, pp_rank, sum) in got {
        assert_eq!(shape.rank_of(c), world);
        assert_eq!(pp_rank, c.pp);
        // pp groups {0, 4} {1, 5} {2, 6} {3, 7}.
        assert_eq!(sum, (2 * (world % 4) + 4) as f32);
    }
}
