//! `Trainer::save_checkpoint` / `Trainer::resume` across layouts: a (dp, tp) = (2, 2) run
//! and a ZeRO-1 (2, 1) run save after `K` steps; plain runs at (1, 1), (2, 1) and (1, 2)
//! resume and report the uninterrupted run's next losses (relative 1e-4).

use oxccl::Config;
use oxccl_train::data::Dataset;
use oxccl_train::mesh::{Mesh, MeshShape};
use oxccl_train::model::GptConfig;
use oxccl_train::optim::{AdamWConfig, LrSchedule};
use oxccl_train::tokenizer::CharTokenizer;
use oxccl_train::trainer::{run_threads, TrainConfig, Trainer};
use oxccl_train::zero::ZeroStage;
use oxccl_train::TINY_SHAKESPEARE;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const K: u64 = 3;
const STEPS: u64 = 5;

fn config(vocab: usize, zero: Option<ZeroStage>) -> TrainConfig {
    let mut model = GptConfig::tiny(vocab.div_ceil(2) * 2);
    model.block_size = 16;
    TrainConfig {
        model,
        batch: 4,
        block: 16,
        steps: STEPS,
        seed: 7,
        lr: LrSchedule {
            max_lr: 3e-3,
            min_lr: 3e-4,
            warmup: 2,
            total: STEPS,
        },
        adamw: AdamWConfig::default(),
        eval_every: 0,
        eval_batches: 0,
        bucket_bytes: 64 << 10,
        zero,
    }
}

/// Every rank's losses of steps `K..STEPS`: fresh and saving at `K`, or resumed from `from`.
fn run(
    (pp, dp, tp): (usize, usize, usize),
    zero: Option<ZeroStage>,
    save: Option<PathBuf>,
    from: Option<PathBuf>,
) -> Vec<Vec<f32>> {
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let tok = CharTokenizer::from_text(TINY_SHAKESPEARE);
    let vocab = tok.vocab_size();
    let data = Arc::new(Dataset::new(tok.encode(TINY_SHAKESPEARE).unwrap()));
    let mut comm = Config::default();
    comm.timeout = Duration::from_secs(60);
    let shape = MeshShape { dp, tp, pp };
    run_threads((pp * dp * tp) as u32, comm, move |c| {
        let mut t = Trainer::with_mesh(config(vocab, zero), data.clone(), Mesh::new(c, shape)?)?;
        if let Some(p) = &from {
            assert_eq!(t.resume(p)?, K);
        }
        let mut losses = Vec::new();
        for s in t.start_step()..STEPS {
            let l = t.step(s)?.loss;
            if s >= K {
                losses.push(l);
            }
            if let (Some(p), true) = (&save, s + 1 == K) {
                t.save_checkpoint(p, vocab, K)?;
            }
        }
        Ok(losses)
    })
    .unwrap()
}

#[test]
fn trainer_checkpoints_resume_at_any_layout() {
    let dir = std::env::temp_dir().join(format!("oxccl-ckpt-trainer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |n: &str| dir.join(format!("{n}.safetensors"));
    let (plain, zero, piped) = (file("plain"), file("zero"), file("piped"));
    let want = run((1, 2, 2), None, Some(plain.clone()), None)[0].clone();
    let zero_run = run((1, 2, 1), Some(ZeroStage::One), Some(zero.clone()), None)[0].clone();
    // Two stages with tp 2: each stage's (dp 0, tp 0) rank contributes its own layers.
    let pp_run = run((2, 1, 2), None, Some(piped.clone()), None);
    println!("(pp 2, tp 2) losses: {:?}; (2, 2): {want:?}", pp_run[0]);
    let cases = [
        (&plain, (1, 1, 1), &want),
        (&plain, (1, 2, 1), &want),
        (&plain, (1, 1, 2), &want),
        (&zero, (1, 1, 1), &zero_run),
        (&zero, (1, 2, 1), &zero_run),
        (&piped, (1, 1, 1), &want),
        (&plain, (2, 1, 1), &want),
    ];
    for (file, layout, expect) in cases {
        for losses in run(layout, None, None, Some(file.clone())) {
            if losses.is_empty() {
                continue; // a pipeline's first stage reports no loss
            }
            for (a, b) in losses.iter().zip(expect) {
                let rel = (a - b).abs() / a.abs().max(b.abs());
                println!("{} {layout:?}: {a} vs {b} (rel {rel:.1e})", file.display());
                assert!(rel < 1e-4, "{layout:?} from {}: {a} vs {b}", file.display());
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
