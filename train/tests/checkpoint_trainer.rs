//! `Trainer::save_checkpoint` / `Trainer::resume` across layouts `(dp, tp, pp)`:
//!
//! - a (2, 2, 1) run, a ZeRO-1 (2, 1, 1) run and a (1, 2, 2) run save after `K` steps;
//!   runs at (1, 1, 1), (2, 1, 1), (1, 2, 1) and (1, 1, 2) resume and report the
//!   uninterrupted run's next losses (relative 1e-4);
//! - a pipelined (2, 2, 2) run (2 micro-batches, 1F1B; 8 rank threads), tied and untied
//!   head, saves after `K` steps; (1, 1, 1) and (2, 1, 1) resume and report its next losses,
//!   and a (1, 1, 1) checkpoint resumes at (2, 2, 2).
//!
//! The loss of a step is the global batch's mean on every layout (see `pp_parity.rs`), so
//! a resumed run must continue the saver's losses whatever its layout.

use oxccl::Config;
use oxccl_train::data::Dataset;
use oxccl_train::mesh::{Mesh, MeshShape};
use oxccl_train::model::GptConfig;
use oxccl_train::optim::{AdamWConfig, LrSchedule};
use oxccl_train::pipeline::Schedule;
use oxccl_train::tokenizer::CharTokenizer;
use oxccl_train::trainer::{run_threads, PipeConfig, TrainConfig, Trainer};
use oxccl_train::zero::ZeroStage;
use oxccl_train::TINY_SHAKESPEARE;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const K: u64 = 3;
const STEPS: u64 = 5;

/// How a run trains besides its layout.
#[derive(Debug, Clone, Copy, Default)]
struct Opts {
    zero: Option<ZeroStage>,
    /// Micro-batches per step (0: one, the plain step).
    micro: usize,
    untied: bool,
}

impl Opts {
    fn zero(stage: ZeroStage) -> Self {
        Opts {
            zero: Some(stage),
            ..Opts::default()
        }
    }

    /// 2 micro-batches under 1F1B: with pp = 2 the pipeline really runs.
    fn piped(untied: bool) -> Self {
        Opts {
            micro: 2,
            untied,
            ..Opts::default()
        }
    }

    /// The same model (and batches) without micro-batches or ZeRO: what a resume runs.
    fn plain(self) -> Self {
        Opts {
            untied: self.untied,
            ..Opts::default()
        }
    }
}

fn config(vocab: usize, o: Opts) -> TrainConfig {
    let mut model = GptConfig::tiny(vocab.div_ceil(2) * 2);
    model.block_size = 16;
    model.untied_head = o.untied;
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
        zero: o.zero,
        dropout: 0.0,
    }
}

/// Every rank's losses of steps `K..STEPS` at layout `(dp, tp, pp)`: fresh and saving at
/// `K`, or resumed from `from`.
fn run(
    (dp, tp, pp): (usize, usize, usize),
    o: Opts,
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
    let pipe = PipeConfig {
        micro_batches: o.micro.max(1),
        schedule: Schedule::OneFOneB,
    };
    run_threads((pp * dp * tp) as u32, comm, move |c| {
        let mesh = Mesh::new(c, shape)?;
        let mut t = Trainer::with_pipeline(config(vocab, o), data.clone(), mesh, pipe)?;
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

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// Resumes `file` at `layout` and checks every rank's losses against `expect` (relative
/// 1e-4); returns the largest relative difference.
fn check_resume(file: &Path, layout: (usize, usize, usize), o: Opts, expect: &[f32]) -> f32 {
    let mut worst = 0f32;
    for losses in run(layout, o, None, Some(file.to_path_buf())) {
        assert_eq!(
            losses.len(),
            expect.len(),
            "{layout:?} from {}",
            file.display()
        );
        for (a, b) in losses.iter().zip(expect) {
            worst = worst.max(rel(*a, *b));
            assert!(
                rel(*a, *b) < 1e-4,
                "{layout:?} from {}: {a} vs {b}",
                file.display()
            );
        }
    }
    println!(
        "{} resumed at {layout:?} {o:?}: max rel diff {worst:.1e}",
        file.display()
    );
    worst
}

/// A fresh directory for one test's checkpoints.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oxccl-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn trainer_checkpoints_resume_at_any_layout() {
    let dir = scratch("ckpt-trainer");
    let file = |n: &str| dir.join(format!("{n}.safetensors"));
    let (plain, zero, piped) = (file("plain"), file("zero"), file("piped"));
    let none = Opts::default();
    let want = run((2, 2, 1), none, Some(plain.clone()), None)[0].clone();
    let zero_run = run(
        (2, 1, 1),
        Opts::zero(ZeroStage::One),
        Some(zero.clone()),
        None,
    )[0]
    .clone();
    // Two stages with tp 2: each stage's (dp 0, tp 0) rank contributes its own layers.
    let pp_run = run((1, 2, 2), none, Some(piped.clone()), None);
    println!("(1, 2, 2) losses: {:?}; (2, 2, 1): {want:?}", pp_run[0]);
    let cases = [
        (&plain, (1, 1, 1), &want),
        (&plain, (2, 1, 1), &want),
        (&plain, (1, 2, 1), &want),
        (&zero, (1, 1, 1), &zero_run),
        (&zero, (2, 1, 1), &zero_run),
        (&piped, (1, 1, 1), &want),
        (&plain, (1, 1, 2), &want),
    ];
    for (file, layout, expect) in cases {
        check_resume(file, layout, none, expect);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A checkpoint of a (2, 2, 2) run with 2 micro-batches (1F1B) resumes at (1, 1, 1) and
/// (2, 1, 1); one of a (1, 1, 1) run resumes at (2, 2, 2) with 2 micro-batches.
fn pipelined_round_trip(untied: bool) {
    let dir = scratch(&format!("ckpt-pp-untied-{untied}"));
    let (big, small) = (dir.join("222.safetensors"), dir.join("111.safetensors"));
    let piped = Opts::piped(untied);
    let runs = run((2, 2, 2), piped, Some(big.clone()), None);
    assert_eq!(runs.len(), 8);
    // Every rank of every stage reports the global-batch loss.
    for r in &runs {
        assert_eq!(r, &runs[0]);
    }
    let want = runs[0].clone();
    let single = run((1, 1, 1), piped.plain(), Some(small.clone()), None)[0].clone();
    let layouts = want.iter().zip(&single).map(|(a, b)| rel(*a, *b));
    let layouts = layouts.fold(0f32, f32::max);
    println!("untied {untied}: (2, 2, 2) {want:?}, (1, 1, 1) {single:?}, rel {layouts:.1e}");
    assert!(layouts < 1e-4, "(2, 2, 2) {want:?} vs (1, 1, 1) {single:?}");
    check_resume(&big, (1, 1, 1), piped.plain(), &want);
    check_resume(&big, (2, 1, 1), piped.plain(), &want);
    check_resume(&small, (2, 2, 2), piped, &single);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pipelined_checkpoint_resumes_at_smaller_layouts_tied() {
    pipelined_round_trip(false);
}

#[test]
fn pipelined_checkpoint_resumes_at_smaller_layouts_untied() {
    pipelined_round_trip(true);
}
