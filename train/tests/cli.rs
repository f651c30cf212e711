//! The `oxccl-train` binary: ranks as threads and ranks as processes (the environment
//! `oxccl-run` sets, written by hand here) produce the same losses, and bad flags fail before
//! any rank starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_oxccl-train");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oxccl-train-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A short run's flags; the CSV goes to `csv`.
fn train_cmd(csv: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "--steps",
        "4",
        "--batch",
        "4",
        "--block",
        "16",
        "--eval-every",
        "0",
    ])
    .args(["--eval-batches", "1", "--warmup", "2", "--csv"])
    .arg(csv)
    .env("RAYON_NUM_THREADS", "1");
    // Launcher variables of the test's own environment must not turn the threads run into
    // a process run.
    for v in [
        "OXCCL_RANK",
        "RANK",
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "SLURM_PROCID",
    ] {
        c.env_remove(v);
    }
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "oxccl-train failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// (loss, val_loss) per CSV row.
fn losses(csv: &Path) -> Vec<(f64, Option<f64>)> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    // Readers of the first four columns keep working as columns are added after them.
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("step,loss,val_loss,tokens_per_s,"),
        "{header}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[2].parse().ok())
        })
        .collect()
}

#[test]
fn threads_and_processes_report_the_same_losses() {
    let (a, b) = (scratch("threads.csv"), scratch("procs.csv"));
    let out = ok(train_cmd(&a).args(["--dp", "2"]).output().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("dp 2") && stdout.contains("step     4"),
        "{stdout}"
    );
    // A free port for the root: bound, then released for rank 0 to take (a small race
    // with other programs, acceptable in a test).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            train_cmd(&b)
                .env("OXCCL_RANK", r.to_string())
                .env("OXCCL_WORLD_SIZE", "2")
                .env("OXCCL_ROOT", format!("127.0.0.1:{port}"))
                .env("OXCCL_SECRET", "00".repeat(32))
                .env_remove("OXCCL_ROOT_EXTERNAL")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in ranks {
        ok(child.wait_with_output().unwrap());
    }
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 4);
    assert!(la[3].1.is_some(), "validation after the last step");
    for (x, y) in la.iter().zip(&lb) {
        assert!((x.0 - y.0).abs() <= 1e-5 * x.0.abs(), "{la:?} vs {lb:?}");
    }
    let _ = (std::fs::remove_file(a), std::fs::remove_file(b));
}

#[test]
fn a_batch_that_does_not_split_fails_before_training() {
    let out = train_cmd(&scratch("bad.csv"))
        .args(["--dp", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("multiple of the 3 data-parallel ranks"),
        "{err}"
    );
}

#[test]
fn tensor_parallel_threads_match_one_rank_with_the_same_padded_vocabulary() {
    let (a, b) = (scratch("tp1.csv"), scratch("tp2.csv"));
    // --tp 2 pads the 65 characters to 66 tokens; --pad-vocab 2 gives one rank that model.
    ok(train_cmd(&a).args(["--pad-vocab", "2"]).output().unwrap());
    let out = ok(train_cmd(&b).args(["--tp", "2"]).output().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("dp 1, tp 2"), "{stdout}");
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 4);
    for (x, y) in la.iter().zip(&lb) {
        assert!((x.0 - y.0).abs() <= 1e-5 * x.0.abs(), "{la:?} vs {lb:?}");
    }
    let _ = (std::fs::remove_file(a), std::fs::remove_file(b));
}

#[test]
fn a_model_that_does_not_split_over_tp_fails_before_training() {
    let out = train_cmd(&scratch("badtp.csv"))
        .args(["--tp", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("attention heads (n_head) = 2 does not split over 3"),
        "{err}"
    );
}

/// The printed `step N` lines (stdout is a pipe here, so no progress bar).
fn step_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("step "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_run_writes_its_csv_and_plots_itself() {
    let (csv, svg) = (scratch("plot.csv"), scratch("plot.svg"));
    let out = ok(train_cmd(&csv).arg("--plot").arg(&svg).output().unwrap());
    // Not a terminal: plain lines, one per step, validation after the last.
    let lines = step_lines(&out);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[3].contains("val ") && !lines[2].contains("val "),
        "{lines:?}"
    );

    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0],
        "step,loss,val_loss,tokens_per_s,lr,comm_share,hidden_share"
    );
    assert_eq!(rows.len(), 5, "{text}");
    for (i, r) in rows[1..].iter().enumerate() {
        let f: Vec<&str> = r.split(',').collect();
        assert_eq!(f.len(), 7, "{r}");
        assert_eq!(f[0], (i + 1).to_string());
        assert_eq!(
            f[2].is_empty(),
            i < 3,
            "validation after the last step: {r}"
        );
        for v in [f[1], f[3], f[4], f[5]] {
            assert!(v.parse::<f64>().unwrap().is_finite(), "{r}");
        }
    }

    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.trim_start().starts_with("<svg"), "{svg_text}");
    assert!(svg_text.trim_end().ends_with("</svg>"));
    assert!(svg_text.contains("<polyline") || svg_text.contains("<path"));
    for label in [
        "step",
        "loss (nats/token)",
        "tokens/s",
        "training loss",
        "validation loss",
        "communication (% of step)",
        "tiny model, dp 1 tp 1 pp 1",
    ] {
        assert!(svg_text.contains(label), "no {label:?} in the plot");
    }

    // The CSV redraws without training, with a title of one's own.
    let again = scratch("replot.svg");
    let out = ok(Command::new(BIN)
        .arg("--plot-from")
        .arg(&csv)
        .arg("--plot")
        .arg(&again)
        .args(["--plot-title", "redrawn"])
        .output()
        .unwrap());
    assert!(step_lines(&out).is_empty());
    assert!(std::fs::read_to_string(&again).unwrap().contains("redrawn"));
    for f in [csv, svg, again] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn a_plot_that_is_not_svg_fails_before_training() {
    let csv = scratch("png.csv");
    let out = train_cmd(&csv)
        .args(["--plot", "loss.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loss.png: the plot must be an .svg file"),
        "{err}"
    );
    assert!(!csv.exists(), "no training, so no CSV");
}

#[test]
fn log_every_and_progress_off_thin_the_lines() {
    let csv = scratch("thin.csv");
    let out = ok(train_cmd(&csv).args(["--log-every", "3"]).output().unwrap());
    let lines = step_lines(&out);
    // Step 3, and the last step (4) always.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("step     3") && lines[1].starts_with("step     4"));
    let out = ok(train_cmd(&csv)
        .args(["--progress", "off"])
        .output()
        .unwrap());
    assert!(step_lines(&out).is_empty());
    assert_eq!(losses(&csv).len(), 4, "the CSV is written either way");
    let _ = std::fs::remove_file(csv);
}

#[test]
fn gpt2_tokenizer_trains_over_tp_and_its_checkpoint_refuses_char() {
    let (csv, ckpt) = (scratch("gpt2.csv"), scratch("gpt2.safetensors"));
    // 50 257 tokens, padded to 50 258 for --tp 2.
    let out = ok(train_cmd(&csv)
        .args(["--tokenizer", "gpt2", "--tp", "2", "--sample", "4"])
        .args(["--temperature", "0", "--save"])
        .arg(&ckpt)
        .output()
        .unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("--- sample ---"), "{stdout}");
    let l = losses(&csv);
    assert_eq!(l.len(), 4);
    let uniform = 50257f64.ln();
    assert!(
        (l[0].0 - uniform).abs() < 0.5,
        "{l:?} vs ln 50257 = {uniform}"
    );
    assert!(
        l.iter().all(|x| x.0.is_finite() && x.0 < uniform + 0.5),
        "{l:?}"
    );
    // The default (char) tokenizer cannot resume it; the error names both.
    let out = train_cmd(&scratch("char.csv"))
        .arg("--resume")
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trained with the gpt2 tokenizer (50257 tokens)")
            && err.contains("this run uses the char tokenizer (65 tokens)"),
        "{err}"
    );
    let out = train_cmd(&scratch("bad-tok.csv"))
        .args(["--tokenizer", "bpe"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown tokenizer \"bpe\""), "{err}");
    let _ = (std::fs::remove_file(csv), std::fs::remove_file(ckpt));
}
