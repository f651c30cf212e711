//! Data parallelism against a single process: with the same seed and global batch, two ranks
//! (threads over a real oxccl communicator) report the same losses and end with the same
//! weights as one; the tokenizer and the batches behave as the layouts need.

mod common;
use common::one_thread_per_rank;

use oxccl::Config;
use oxccl_train::data::{Dataset, Split};
use oxccl_train::dp::plan_buckets;
use oxccl_train::model::GptConfig;
use oxccl_train::optim::{AdamWConfig, LrSchedule};
use oxccl_train::tokenizer::CharTokenizer;
use oxccl_train::trainer::{run_threads, TrainConfig, Trainer};
use oxccl_train::TINY_SHAKESPEARE;
use std::sync::Arc;
use std::time::Duration;

fn dataset() -> (CharTokenizer, Arc<Dataset>) {
    let (tok, data) = Dataset::from_text(TINY_SHAKESPEARE).expect("the text encodes");
    (tok, Arc::new(data))
}

fn config(vocab: usize, steps: u64, batch: usize, bucket_bytes: usize) -> TrainConfig {
    let mut model = GptConfig::tiny(vocab);
    model.block_size = 32;
    TrainConfig {
        model,
        batch,
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
        bucket_bytes,
        zero: None,
        dropout: 0.0,
    }
}

/// Per-step (loss, val loss) and the final parameters of every rank.
type RankRun = (Vec<(f32, Option<f32>)>, Vec<Vec<f32>>);

fn train(dp: u32, cfg: TrainConfig, data: Arc<Dataset>) -> Vec<RankRun> {
    let mut comm_cfg = Config::default();
    comm_cfg.timeout = Duration::from_secs(60);
    run_threads(dp, comm_cfg, move |comm| {
        let mut t = Trainer::new(cfg.clone(), data.clone(), comm)?;
        let mut logs = Vec::new();
        t.train(|l| {
            // Several ranks overlap the all-reduce with the layer-by-layer backward pass
            // and say how much of it was hidden; one rank has nothing to overlap.
            match (&l.overlap, dp) {
                (None, 1) => {}
                (Some(o), 2..) => {
                    assert!(o.comm > Duration::ZERO, "step {}: {o:?}", l.step);
                    assert!((0.0..=1.0).contains(&o.hidden_share()), "{o:?}");
                }
                (o, _) => panic!("dp {dp}, step {}: overlap {o:?}", l.step),
            }
            logs.push((l.loss, l.val_loss))
        })?;
        Ok((logs, t.params()?))
    })
    .expect("training")
}

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// The largest relative loss difference and absolute parameter difference of `runs` (every
/// rank of a data-parallel job) from the single-process `reference`; panics past 1e-4.
fn compare(reference: &RankRun, runs: &[RankRun]) -> (f32, f32) {
    let (ref_logs, ref_params) = reference;
    let (mut worst, mut worst_param) = (0f32, 0f32);
    for (rank, (logs, params)) in runs.iter().enumerate() {
        assert_eq!(logs.len(), ref_logs.len());
        for (s, (a, b)) in ref_logs.iter().zip(logs).enumerate() {
            worst = worst.max(rel(a.0, b.0));
            let step = s + 1;
            assert!(
                rel(a.0, b.0) < 1e-4,
                "rank {rank} step {step}: {} vs {}",
                a.0,
                b.0
            );
            match (a.1, b.1) {
                (Some(x), Some(y)) => assert!(rel(x, y) < 1e-4, "val at step {step}"),
                (None, None) => {}
                other => panic!("validation on different steps: {other:?}"),
            }
        }
        for (i, (p, q)) in ref_params.iter().zip(params).enumerate() {
            let diff = p
                .iter()
                .zip(q)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            worst_param = worst_param.max(diff);
            assert!(diff < 1e-4, "rank {rank} parameter {i} differs by {diff}");
        }
    }
    (worst, worst_param)
}

#[test]
fn two_data_parallel_ranks_match_one_process() {
    one_thread_per_rank();
    let (tok, data) = dataset();
    let (steps, v) = (20, tok.vocab_size());
    let start = std::time::Instant::now();
    let single = train(1, config(v, steps, 8, 25 << 20), data.clone());
    // Small buckets, so the two ranks pipeline several all-reduces per step.
    let dp2 = train(2, config(v, steps, 8, 64 << 10), data);
    let ref_logs = &single[0].0;
    let first = ref_logs[0].0;
    assert!(
        (first - (v as f32).ln()).abs() < 0.1,
        "initial loss {first}"
    );
    assert!(ref_logs[19].0 < first - 0.3, "no learning: {ref_logs:?}");
    let (worst, worst_param) = compare(&single[0], &dp2);
    eprintln!(
        "dp=1 loss step 1 {:.6} step 20 {:.6}; dp=2 step 1 {:.6} step 20 {:.6}; max rel diff \
         {worst:.2e}; max parameter difference {worst_param:.2e}; {:.1}s",
        ref_logs[0].0,
        ref_logs[19].0,
        dp2[0].0[0].0,
        dp2[0].0[19].0,
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn three_data_parallel_ranks_match_one_process() {
    one_thread_per_rank();
    let (tok, data) = dataset();
    let v = tok.vocab_size();
    let single = train(1, config(v, 8, 12, 25 << 20), data.clone());
    let dp3 = train(3, config(v, 8, 12, 16 << 10), data);
    let (worst, worst_param) = compare(&single[0], &dp3);
    eprintln!("dp=3: max rel loss diff {worst:.2e}, max parameter difference {worst_param:.2e}");
}

#[test]
fn tokenizer_round_trips_and_names_unknown_characters() {
    let (tok, _) = dataset();
    assert_eq!(tok.vocab_size(), 65);
    let ids = tok.encode(TINY_SHAKESPEARE).unwrap();
    assert_eq!(tok.decode(&ids), TINY_SHAKESPEARE);
    let err = tok.encode("ab€").unwrap_err();
    assert_eq!((err.ch, err.at), ('€', 2));
    assert!(err
        .to_string()
        .contains("not in the tokenizer's vocabulary"));
}

#[test]
fn every_layout_sees_the_same_global_batch() {
    let (_, data) = dataset();
    let (batch, block) = (12, 16);
    for split in [Split::Train, Split::Val] {
        for step in [0, 1, 99] {
            let whole = data.batch(split, 7, step, batch, block, (0, 1)).unwrap();
            assert_eq!(whole.global_index, (0..batch).collect::<Vec<_>>());
            assert_eq!(whole.inputs[1..block], whole.targets[..block - 1]);
            for dp in [2, 3, 4] {
                for r in 0..dp {
                    let part = data.batch(split, 7, step, batch, block, (r, dp)).unwrap();
                    for (row, &g) in part.global_index.iter().enumerate() {
                        assert_eq!(g % dp, r);
                        let mine = &part.inputs[row * block..(row + 1) * block];
                        assert_eq!(mine, &whole.inputs[g * block..(g + 1) * block]);
                    }
                    assert_eq!(part.samples, batch / dp);
                }
            }
        }
    }
    let other_step = data
        .batch(Split::Train, 7, 1, batch, block, (0, 1))
        .unwrap();
    let step0 = data
        .batch(Split::Train, 7, 0, batch, block, (0, 1))
        .unwrap();
    assert_ne!(other_step.inputs, step0.inputs);
    assert!(data.batch(Split::Train, 7, 0, 10, block, (0, 4)).is_err());
}

#[test]
fn buckets_follow_reverse_parameter_order_within_the_cap() {
    // Sizes in f32 elements; a 64-byte cap holds 16 of them.
    let b = plan_buckets(&[4, 8, 20, 6, 6], 64);
    assert_eq!(b, vec![vec![4, 3], vec![2], vec![1, 0]]);
    assert_eq!(plan_buckets(&[1, 2, 3], 25 << 20), vec![vec![2, 1, 0]]);
}
