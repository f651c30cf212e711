//! Dropout keyed by (seed, step, sample): every layout drops the same elements, so with
//! dropout on, the `(dp, tp, pp)` layouts still report the single process's losses; and
//! dropout really changes training (a run with it differs from one without).

mod common;
use common::{dataset, one_thread_per_rank};

use candle_core::{Device, Tensor};
use oxccl::Config;
use oxccl_train::mesh::{Mesh, MeshShape};
use oxccl_train::model::{Dropout, DropoutSite, GptConfig};
use oxccl_train::optim::{AdamWConfig, LrSchedule};
use oxccl_train::pipeline::Schedule;
use oxccl_train::trainer::{run_threads, PipeConfig, TrainConfig, Trainer};
use std::time::Duration;

const STEPS: u64 = 8;

fn config(dropout: f64) -> TrainConfig {
    let (vocab, _) = dataset();
    let mut model = GptConfig::tiny(vocab.div_ceil(2) * 2);
    model.block_size = 16;
    TrainConfig {
        model,
        batch: 8,
        block: 16,
        steps: STEPS,
        seed: 99,
        lr: LrSchedule {
            max_lr: 3e-3,
            min_lr: 3e-4,
            warmup: 2,
            total: STEPS,
        },
        adamw: AdamWConfig::default(),
        eval_every: 0,
        eval_batches: 0,
        bucket_bytes: 16 << 10,
        zero: None,
        dropout,
    }
}

/// Rank 0's losses of the `(dp, tp, pp)` layout with `micro` micro-batches (every rank
/// reports the same global loss; checked).
fn losses((dp, tp, pp): (usize, usize, usize), micro: usize, dropout: f64) -> Vec<f32> {
    one_thread_per_rank();
    let (_, data) = dataset();
    let mut comm = Config::default();
    comm.timeout = Duration::from_secs(60);
    let shape = MeshShape { dp, tp, pp };
    let pipe = PipeConfig {
        micro_batches: micro,
        schedule: Schedule::OneFOneB,
    };
    let runs = run_threads((dp * tp * pp) as u32, comm, move |c| {
        let mesh = Mesh::new(c, shape)?;
        let mut t = Trainer::with_pipeline(config(dropout), data.clone(), mesh, pipe)?;
        (0..STEPS)
            .map(|s| Ok(t.step(s)?.loss))
            .collect::<candle_core::Result<Vec<f32>>>()
    })
    .expect("training");
    for r in &runs[1..] {
        assert_eq!(r, &runs[0], "ranks disagree at {shape}");
    }
    runs[0].clone()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()))
        .fold(0.0, f32::max)
}

#[test]
fn every_layout_drops_the_same_elements() {
    let reference = losses((1, 1, 1), 1, 0.2);
    let plain = losses((1, 1, 1), 1, 0.0);
    assert!(
        max_rel(&reference, &plain) > 1e-3,
        "dropout 0.2 did not change the losses: {reference:?} vs {plain:?}"
    );
    for (layout, micro) in [
        ((2, 1, 1), 1),
        ((1, 2, 1), 1),
        ((1, 1, 2), 2),
        ((2, 2, 2), 2),
    ] {
        let got = losses(layout, micro, 0.2);
        let worst = max_rel(&reference, &got);
        eprintln!("{layout:?} × {micro} micro-batches: max relative difference {worst:.2e}");
        assert!(
            worst <= 1e-4,
            "{layout:?}: {got:?} vs one process {reference:?}"
        );
    }
}

#[test]
fn masks_depend_on_seed_step_and_sample_only() {
    let x = Tensor::ones((4 * 8, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    let drop = |samples: Vec<usize>, step: u64| Dropout {
        p: 0.25,
        seed: 5,
        step,
        samples,
    };
    let rows = |d: &Dropout| -> Vec<Vec<f32>> {
        let n = d.samples.len() * 8;
        let y = d
            .apply(&x.narrow(0, 0, n).unwrap(), DropoutSite::Mlp(1))
            .unwrap();
        y.to_vec2().unwrap()
    };
    let all = rows(&drop(vec![0, 1, 2, 3], 7));
    // Samples 1 and 3 alone (a dp rank's share) get the rows the whole batch gave them.
    let odd = rows(&drop(vec![1, 3], 7));
    assert_eq!(odd[..8], all[8..16]);
    assert_eq!(odd[8..], all[24..32]);
    // Another step draws other masks.
    assert_ne!(rows(&drop(vec![0, 1, 2, 3], 8)), all);
    // About a quarter dropped, the rest scaled by 1/(1 - p).
    let flat: Vec<f32> = all.concat();
    let zeros = flat.iter().filter(|&&v| v == 0.0).count() as f64 / flat.len() as f64;
    assert!((zeros - 0.25).abs() < 0.05, "dropped share {zeros}");
    assert!(flat
        .iter()
        .all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
    // A micro-batch's view is the batch's rows.
    assert_eq!(
        drop(vec![4, 5, 6], 1).narrow(1, 2).unwrap().samples,
        vec![5, 6]
    );
    assert!(drop(vec![4, 5, 6], 1).narrow(2, 2).is_err());
}
