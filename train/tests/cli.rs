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
    assert_eq!(lines.next(), Some("step,loss,val_loss,tokens_per_s"));
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
