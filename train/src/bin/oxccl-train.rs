//! `oxccl-train`: trains the GPT decoder on Tiny Shakespeare with data, tensor and pipeline
//! parallelism over oxccl, ranks as threads of this process or, under `oxccl-run -n N`, one
//! per process (`N = dp·tp·pp`, tp innermost: see `oxccl_train::mesh`).
//!
//! ```text
//! oxccl-train --dp 2 --tp 2 --steps 200 --model tiny --batch 16 --csv loss.csv --plot loss.svg
//! oxccl-run -n 4 -- oxccl-train --tp 2 --steps 200 --model small
//! oxccl-train --pp 2 --tp 2 --micro-batches 4 --schedule 1f1b --steps 200
//! ```

#![forbid(unsafe_code)]

use clap::{Parser, ValueEnum};
use oxccl::{Communicator, Config, LaunchEnv};
use oxccl_train::data::Dataset;
use oxccl_train::dp::DEFAULT_BUCKET_BYTES;
use oxccl_train::mesh::{Mesh, MeshShape};
use oxccl_train::model::GptConfig;
use oxccl_train::optim::{AdamWConfig, LrSchedule};
use oxccl_train::pipeline::{bubble_fraction, Schedule};
use oxccl_train::report::{self, CsvLog, Progress, ProgressMode, Row};
use oxccl_train::rng::SplitMix64;
use oxccl_train::trainer::{run_threads, PipeConfig, StepLog, TrainConfig, Trainer};
use oxccl_train::zero::ZeroStage;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModelSize {
    /// 2 layers, 2 heads, 64 wide, 64 positions.
    Tiny,
    /// 4 layers, 4 heads, 128 wide, 128 positions.
    Small,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScheduleArg {
    /// All forwards, then all backwards.
    Gpipe,
    /// Warm-up forwards, one forward and one backward in turn, cool-down backwards.
    #[value(name = "1f1b")]
    OneFOneB,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProgressArg {
    /// A bar when stdout is a terminal, plain lines otherwise.
    Auto,
    /// One plain line per step (see --log-every).
    Lines,
    /// No per-step output.
    Off,
}

/// Train a GPT-style character model with data, tensor and pipeline parallelism over oxccl.
#[derive(Debug, Clone, Parser)]
#[command(version)]
struct Args {
    /// Data-parallel ranks (default 1; under a launcher, world size / (tp·pp)). Threads mode
    /// runs dp·tp·pp ranks as threads; under a launcher dp·tp·pp must equal the world size.
    #[arg(long)]
    dp: Option<u32>,
    /// Tensor-parallel ranks per model replica (heads, width and the padded vocabulary must
    /// split evenly over them).
    #[arg(long, default_value_t = 1)]
    tp: u32,
    /// Pipeline stages (contiguous layers each; at most the model's number of layers).
    #[arg(long, default_value_t = 1)]
    pp: u32,
    /// Micro-batches per step: each data-parallel rank's share of the batch is split this
    /// many ways (gradients are accumulated over them).
    #[arg(long, default_value_t = 1)]
    micro_batches: usize,
    /// Pipeline schedule of the micro-batches.
    #[arg(long, value_enum, default_value_t = ScheduleArg::OneFOneB)]
    schedule: ScheduleArg,
    /// Pad the model's vocabulary to a multiple of this (and of --tp), Megatron-style; a tp=1
    /// run with the same padding starts from the same weights as a tp>1 run.
    #[arg(long, default_value_t = 1)]
    pad_vocab: usize,
    /// Ignore a launcher's environment and run --dp ranks as threads of this process.
    #[arg(long)]
    threads: bool,
    /// Optimizer steps.
    #[arg(long, default_value_t = 200)]
    steps: u64,
    /// Model preset.
    #[arg(long, value_enum, default_value_t = ModelSize::Tiny)]
    model: ModelSize,
    /// Untie the output head from the token embedding.
    #[arg(long)]
    untied: bool,
    /// Global batch in samples (a multiple of the data-parallel ranks).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Tokens per sample (default: the model's context length).
    #[arg(long)]
    block: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Final learning rate (default: lr / 10).
    #[arg(long)]
    min_lr: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Seed of the weights, batches and sampling.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Validation every this many steps (0: only after the last).
    #[arg(long, default_value_t = 50)]
    eval_every: u64,
    /// Global batches per validation pass.
    #[arg(long, default_value_t = 4)]
    eval_batches: u64,
    /// Gradient bucket size in MiB.
    #[arg(long, default_value_t = (DEFAULT_BUCKET_BYTES >> 20) as f64)]
    bucket_mb: f64,
    /// ZeRO stage over the dp group: 0 off, 1 shards the AdamW state, 2 also the gradients.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    zero: u8,
    /// Dropout probability on the embeddings and residual branches while training (the masks
    /// depend on seed, step and sample only, so every layout trains the same model).
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Write step,loss,val_loss,tokens_per_s,lr,comm_share,hidden_share here, a row per step.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Draw loss, validation loss and tokens/s against step into this SVG file, at each
    /// validation and after the last step.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Title of the --plot chart (default: the model and the layout).
    #[arg(long)]
    plot_title: Option<String>,
    /// Draw --plot from this --csv file of an earlier run, and exit without training.
    #[arg(long, requires = "plot")]
    plot_from: Option<PathBuf>,
    /// Per-step output: a progress bar on a terminal and plain lines otherwise (auto), plain
    /// lines always, or nothing.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
    /// Plain lines: print every this many steps (validation steps and the last always).
    #[arg(long, default_value_t = 1)]
    log_every: u64,
    /// Print this many generated tokens (characters with --tokenizer char) after training.
    #[arg(long, default_value_t = 0)]
    sample: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Training text (default: the Tiny Shakespeare copy built into the binary).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokenizer: char (the text's distinct characters) or gpt2 (GPT-2's 50 257-token BPE,
    /// built in; the vocabulary is padded as for char). A checkpoint resumes only with its own.
    #[arg(long, default_value_t = oxccl_train::tokenizer::TokenizerKind::Char)]
    tokenizer: oxccl_train::tokenizer::TokenizerKind,
    /// Write a checkpoint (safetensors, full tensors: resumable by any layout) here after
    /// the last step, and every --save-every steps.
    #[arg(long)]
    save: Option<PathBuf>,
    /// With --save: also checkpoint every this many steps (0: after the last only).
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Resume from this checkpoint (any layout's) and train on to --steps.
    #[arg(long)]
    resume: Option<PathBuf>,
}

/// Variables that say a launcher started this process (see `oxccl::LaunchEnv`).
const LAUNCHER_VARS: &[&str] = &[
    "OXCCL_RANK",
    "RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
    "SLURM_PROCID",
];

fn main() {
    let args = Args::parse();
    let result = match (&args.plot, &args.plot_from) {
        (Some(plot), Some(csv)) => replot(plot, csv, args.plot_title.as_deref()),
        (Some(plot), None) => report::check_plot_path(plot)
            .map_err(Into::into)
            .and_then(|()| run(args)),
        _ => run(args),
    };
    if let Err(e) = result {
        eprintln!("oxccl-train: {e}");
        std::process::exit(1);
    }
}

/// `--plot-from CSV --plot OUT`: draws an earlier run's CSV.
fn replot(
    plot: &Path,
    csv: &Path,
    title: Option<&str>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rows = report::read_csv(csv)?;
    let stem = csv.file_stem().unwrap_or_default().to_string_lossy();
    let title = title.map_or_else(|| format!("oxccl-train: {stem}"), str::to_owned);
    report::plot(plot, &title, &rows)?;
    println!("oxccl-train: wrote {}", plot.display());
    Ok(())
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let text = match &args.data {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => oxccl_train::TINY_SHAKESPEARE.to_owned(),
    };
    let (tok, data) = Dataset::from_text_with(&text, args.tokenizer)?;
    let data = Arc::new(data);
    let launched = !args.threads && LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some());
    let env = if launched {
        Some(LaunchEnv::from_env()?)
    } else {
        None
    };
    let (tp, pp) = (args.tp, args.pp);
    if tp == 0 || pp == 0 || args.pad_vocab == 0 || args.micro_batches == 0 {
        return Err("--tp, --pp, --pad-vocab and --micro-batches must be at least 1".into());
    }
    if (pp > 1 || args.micro_batches > 1) && args.sample > 0 {
        // Generation runs the whole model on one tp group, which a pipeline stage is not.
        return Err("--sample needs --pp 1 and --micro-batches 1".into());
    }
    let tp_pp = tp.checked_mul(pp).ok_or("--tp × --pp overflows")?;
    let dp = match (&env, args.dp) {
        (Some(e), Some(dp)) if dp.checked_mul(tp_pp) != Some(e.nranks) => {
            return Err(format!(
                "--dp {dp} × --tp {tp} × --pp {pp} but the launcher ({}) started {} ranks; drop \
                 --dp or make dp·tp·pp equal the world size",
                e.source, e.nranks
            )
            .into())
        }
        (Some(e), None) if e.nranks % tp_pp != 0 => {
            return Err(format!(
                "the launcher ({}) started {} ranks, not a multiple of --tp {tp} × --pp {pp}",
                e.source, e.nranks
            )
            .into())
        }
        (Some(e), None) => e.nranks / tp_pp,
        (_, Some(0)) => return Err("--dp must be at least 1".into()),
        (_, dp) => dp.unwrap_or(1),
    };
    let ranks_here = match &env {
        Some(e) => e.nranks,
        None => dp
            .checked_mul(tp_pp)
            .ok_or("--dp × --tp × --pp overflows")?,
    };
    let shape = MeshShape {
        dp: dp as usize,
        tp: tp as usize,
        pp: pp as usize,
    };
    let pipe = PipeConfig {
        micro_batches: args.micro_batches,
        schedule: match args.schedule {
            ScheduleArg::Gpipe => Schedule::GPipe,
            ScheduleArg::OneFOneB => Schedule::OneFOneB,
        },
    };
    // candle's matmuls use a rayon pool sized by RAYON_NUM_THREADS (read at each call):
    // share this host's cores among its ranks instead of oversubscribing them. Set before
    // any thread starts.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_rank = (cores / ranks_here as usize).max(1);
        std::env::set_var("RAYON_NUM_THREADS", per_rank.to_string());
    }
    let cfg = train_config(&args, tok.vocab_size());
    let tok_info = tok.info();
    // Checked here, before any rank starts, so a bad flag fails once and at once.
    cfg.check(shape.dp)?;
    shape.check_model(&cfg.model)?;
    if cfg.batch % (shape.dp * pipe.micro_batches) != 0 {
        return Err(format!(
            "--batch {} does not split into {} micro-batches on each of {} data-parallel ranks",
            cfg.batch, pipe.micro_batches, shape.dp
        )
        .into());
    }
    if cfg.model.n_layer < shape.pp {
        return Err(format!(
            "--pp {} exceeds the model's {} layers",
            shape.pp, cfg.model.n_layer
        )
        .into());
    }
    if cfg.zero.is_some() && (shape.pp > 1 || pipe.micro_batches > 1) {
        return Err("ZeRO (--zero) is not supported with --pp > 1 or --micro-batches > 1".into());
    }
    let mut config = Config::from_env()?;
    if config.timeout < std::time::Duration::from_secs(60) {
        // Ranks may spend a while on one step; a slow step is not a lost peer.
        config.timeout = std::time::Duration::from_secs(60);
    }
    let job = move |comm: Option<Communicator>| -> candle_core::Result<()> {
        let mesh = Mesh::new(comm, shape)?;
        let mut trainer = Trainer::with_pipeline(cfg.clone(), data.clone(), mesh, pipe)?;
        let coord = trainer.mesh_coord();
        let rank = shape.rank_of(coord);
        if let Some(path) = &args.resume {
            let step = trainer.resume_with_tokenizer(path, tok_info)?;
            if rank == 0 {
                println!(
                    "oxccl-train: resumed at step {step} from {}",
                    path.display()
                );
            }
        }
        let mut csv = match (&args.csv, rank) {
            (Some(p), 0) => Some(CsvLog::create(p).map_err(candle_core::Error::wrap)?),
            _ => None,
        };
        if rank == 0 {
            println!(
                "oxccl-train: {} parameters (this rank's shards), dp {}, tp {}, pp {}, global \
                 batch {} × {} tokens, {} steps",
                trainer.num_params(),
                shape.dp,
                shape.tp,
                shape.pp,
                cfg.batch,
                cfg.block,
                cfg.steps
            );
            if shape.pp > 1 {
                println!(
                    "pipeline: {} micro-batches, {} schedule, theoretical bubble {:.1}%",
                    pipe.micro_batches,
                    pipe.schedule,
                    100.0 * bubble_fraction(shape.pp, pipe.micro_batches)
                );
            }
        }
        let progress = match args.progress {
            ProgressArg::Auto => ProgressMode::Auto,
            ProgressArg::Lines => ProgressMode::Lines,
            ProgressArg::Off => ProgressMode::Off,
        };
        let (start, log_every) = (trainer.start_step(), args.log_every);
        let mut progress =
            (rank == 0).then(|| Progress::new(progress, start, cfg.steps, log_every));
        let plot = args.plot.as_ref().filter(|_| rank == 0);
        let title = args.plot_title.clone().unwrap_or_else(|| {
            let model = args.model.to_possible_value();
            let model = model.as_ref().map_or("", |v| v.get_name());
            format!(
                "oxccl-train: {model} model, dp {} tp {} pp {}, batch {} × {} tokens",
                shape.dp, shape.tp, shape.pp, cfg.batch, cfg.block
            )
        });
        // Rank 0's rows for --plot, redrawn at each validation and after the last step.
        let (mut rows, mut plotted) = (Vec::new(), 0);
        let mut report_err: Option<String> = None;
        let (mut idle, mut steps) = (0.0, 0u32);
        let mut train_step = |log: &StepLog, idle_share: Option<f64>| {
            idle += idle_share.unwrap_or(0.0);
            steps += 1;
            if let Some(p) = progress.as_mut() {
                p.step(log);
            }
            if let (Some(f), Some(path)) = (csv.as_mut(), &args.csv) {
                if let Err(e) = f.write(&Row::from(log)) {
                    report_err.get_or_insert(format!("{}: {e}", path.display()));
                }
            }
            if let Some(path) = plot {
                rows.push(Row::from(log));
                if log.val_loss.is_some() {
                    plotted = rows.len();
                    if let Err(e) = report::plot(path, &title, &rows) {
                        report_err.get_or_insert(e.to_string());
                    }
                }
            }
        };
        for s in trainer.start_step()..cfg.steps {
            let log = trainer.step(s)?;
            train_step(&log, trainer.pipeline_idle_share());
            let every = args.save_every > 0 && (s + 1) % args.save_every == 0;
            if let (Some(path), true) = (&args.save, every || s + 1 == cfg.steps) {
                trainer.save_checkpoint(path, tok_info, s + 1)?;
            }
        }
        if let Some(p) = &progress {
            p.finish();
        }
        if let (Some(path), true) = (plot, plotted < rows.len()) {
            if let Err(e) = report::plot(path, &title, &rows) {
                report_err.get_or_insert(e.to_string());
            }
        }
        if rank == 0 && shape.pp > 1 && steps > 0 {
            // Rank 0 is the first stage: its time in transfers is mostly waiting for the
            // backward passes to come back.
            println!(
                "pipeline: rank 0 spent {:.1}% of each step in transfers (measured bubble)",
                100.0 * idle / f64::from(steps)
            );
        }
        if let Some(e) = report_err {
            return Err(candle_core::Error::msg(e));
        }
        // Rank 0's whole tp group generates (its forward passes are collectives over the
        // group); the same seed and the same gathered logits give every member the same text.
        if let (0, true, Some(model)) = (coord.dp, args.sample > 0, trainer.model()) {
            let prompt = tok.encode("\n").map_err(candle_core::Error::wrap)?;
            let mut rng = SplitMix64::keyed(args.seed, &[u64::from_le_bytes(*b"sample\0\0")]);
            let out = model.generate(&prompt, args.sample, args.temperature, &mut rng)?;
            if rank == 0 {
                println!("--- sample ---\n{}", tok.decode(&out));
            }
        }
        Ok(())
    };
    match env {
        Some(env) => job(Some(Communicator::from_launch(&env, config)?))?,
        None => {
            run_threads(ranks_here, config, job)?;
        }
    }
    Ok(())
}

fn train_config(args: &Args, vocab: usize) -> TrainConfig {
    let mut model = match args.model {
        ModelSize::Tiny => GptConfig::tiny(vocab),
        ModelSize::Small => GptConfig::small(vocab),
    };
    model.untied_head = args.untied;
    // Padding ids are never inputs or targets; the tokenizer decodes a sampled one as U+FFFD.
    let multiple = lcm(args.pad_vocab, args.tp as usize);
    model.vocab_size = vocab.div_ceil(multiple) * multiple;
    TrainConfig {
        model,
        batch: args.batch,
        block: args.block.unwrap_or(model.block_size),
        steps: args.steps,
        seed: args.seed,
        lr: LrSchedule {
            max_lr: args.lr,
            min_lr: args.min_lr.unwrap_or(args.lr / 10.0),
            warmup: args.warmup,
            total: args.steps,
        },
        adamw: AdamWConfig::default(),
        eval_every: args.eval_every,
        eval_batches: args.eval_batches,
        bucket_bytes: ((args.bucket_mb * (1 << 20) as f64) as usize).max(4),
        zero: ZeroStage::from_number(args.zero),
        dropout: args.dropout,
    }
}

/// Least common multiple of two positive numbers.
fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}
