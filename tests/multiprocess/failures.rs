//! When a rank dies, the others fail with an error naming the dead peer instead of hanging,
//! and the launcher exits non-zero; when a rank is late or stopped, the deadline's error
//! says which rank holds the job up.

mod common;

fn killed_rank(transport: &str) {
    // The deadline is long, so an error here comes from detecting the dead peer.
    let env = [("OXCCL_TRANSPORT", transport), ("OXCCL_TIMEOUT", "60")];
    let since = std::time::SystemTime::now();
    let ran = common::run_job(
        4,
        &["--grace", "30"],
        common::selftest(),
        &["--kill-rank", "3", "--kill-after", "3"],
        &env,
    );
    assert!(
        ran.code.is_some_and(|c| c != 0),
        "launcher exit {:?}\n{}",
        ran.code,
        ran.output
    );
    for r in 0..3 {
        let line = ran
            .output
            .lines()
            .find(|l| l.starts_with(&format!("[{r}] error:")))
            .unwrap_or_else(|| panic!("rank {r} reported no error\n{}", ran.output));
        assert!(line.contains("all_reduce"), "{line}");
        assert!(
            !line.contains("made no progress"),
            "rank {r} waited for the deadline: {line}"
        );
    }
    assert!(
        ran.output.contains("rank 3 exited with signal 9"),
        "{}",
        ran.output
    );
    // Detection, not the 60 s deadline, ended the job (a liveness guard, not a timing claim).
    assert!(
        ran.elapsed < std::time::Duration::from_secs(55),
        "took {:?}",
        ran.elapsed
    );
    // The killed rank's segment (and everyone else's) was unlinked once all had mapped it.
    common::assert_no_segments_left(since);
}

#[test]
fn killed_rank_over_shm() {
    killed_rank("shm");
}

#[test]
fn killed_rank_over_tcp() {
    killed_rank("tcp");
}

/// The first error line of rank `r`.
fn error_of(r: u32, output: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with(&format!("[{r}] error:")))
        .unwrap_or_else(|| panic!("rank {r} reported no error\n{output}"))
        .to_owned()
}

/// 8 ranks run random collectives; rank 6 kills itself at op 57. Every survivor's error
/// names rank 6, including those whose own peers only stopped after it.
fn killed_in_random_ops(transport: &str) {
    let env = [("OXCCL_TRANSPORT", transport)];
    let since = std::time::SystemTime::now();
    let args = [
        "--random",
        "100000",
        "--seed",
        "4",
        "--max-count",
        "65536",
        "--kill-rank",
        "6",
        "--kill-after",
        "57",
    ];
    let ran = common::run_job(8, &["--grace", "30"], common::selftest(), &args, &env);
    assert!(ran.code.is_some_and(|c| c != 0), "{}", ran.output);
    for r in (0..8).filter(|&r| r != 6) {
        let line = error_of(r, &ran.output);
        assert!(line.contains("rank 6 died"), "{line}\n{}", ran.output);
    }
    common::assert_no_segments_left(since);
}

#[test]
fn killed_in_random_ops_over_shm() {
    killed_in_random_ops("shm");
}

#[test]
fn killed_in_random_ops_over_tcp() {
    killed_in_random_ops("tcp");
}

/// Rank 2 arrives 8 s late at op 20 while the deadline is 3 s: the others' errors say that
/// rank 2 has not entered the op the rest are in (or have left, for the last to time out), and `oxccl-status` on the job's status
/// directory says the same while it waits.
#[test]
fn a_late_rank_is_named_at_the_deadline() {
    let dir = std::env::temp_dir().join(format!("oxccl-status-test-{}", std::process::id()));
    let dir_s = dir.display().to_string();
    let env = [("OXCCL_TIMEOUT", "3"), ("OXCCL_STATUS_DIR", dir_s.as_str())];
    let args = [
        "--random",
        "40",
        "--seed",
        "9",
        "--stall-rank",
        "2",
        "--stall-secs",
        "8",
        "--fault-at",
        "20",
    ];
    let watcher = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(2000));
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_oxccl-status"))
                .arg(&dir)
                .output()
                .expect("oxccl-status");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let ran = common::run_job(4, &["--grace", "30"], common::selftest(), &args, &env);
    let status = watcher.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ran.code.is_some_and(|c| c != 0), "{}", ran.output);
    for r in [0, 1, 3] {
        let line = error_of(r, &ran.output);
        assert!(line.contains("made no progress"), "{line}");
        assert!(line.contains("rank 2 has not entered"), "{line}");
        assert!(line.contains("(it finished"), "{line}");
        // The three ranks time out a little apart: the last one to report may see the others
        // already gone, which the report says instead of listing them as in the op.
        assert!(
            line.contains("ranks 0-1, 3 are in") || line.contains("has left (its communicator"),
            "{line}"
        );
    }
    assert!(status.contains("rank 2/4 pid"), "{status}");
    assert!(
        status.contains("behind the others (not yet in collective #")
            && status.contains("rank(s) 2\n"),
        "{status}"
    );
}

/// Rank 1 stops itself (SIGSTOP: alive, silent): the others' errors say it does not answer.
#[test]
fn a_stopped_rank_is_named_at_the_deadline() {
    let env = [("OXCCL_TIMEOUT", "3"), ("OXCCL_TRANSPORT", "tcp")];
    let args = [
        "--random",
        "40",
        "--seed",
        "9",
        "--stop-rank",
        "1",
        "--fault-at",
        "20",
    ];
    let ran = common::run_job(4, &["--grace", "5"], common::selftest(), &args, &env);
    assert!(ran.code.is_some_and(|c| c != 0), "{}", ran.output);
    for r in [0, 2, 3] {
        let line = error_of(r, &ran.output);
        assert!(line.contains("rank 1 does not answer"), "{line}");
    }
}

/// After rank 2 dies, the survivors shrink the communicator without it and run 200 more
/// random collectives on the 3 that remain, every result checked.
#[test]
fn survivors_shrink_and_go_on() {
    for transport in ["shm", "tcp"] {
        let env = [("OXCCL_TRANSPORT", transport)];
        let args = [
            "--random",
            "100000",
            "--seed",
            "3",
            "--max-count",
            "65536",
            "--kill-rank",
            "2",
            "--kill-after",
            "30",
            "--recover",
            "200",
        ];
        let ran = common::run_job(4, &["--grace", "60"], common::selftest(), &args, &env);
        for r in [0, 1, 3] {
            let line = "continued on 3 ranks after rank 2 died: 200 ops";
            let ok = ran.output.lines().any(|l| {
                l.starts_with(&format!("[{r}] "))
                    && l.contains(line)
                    && l.ends_with(" 0 wrong elements")
            });
            assert!(ok, "rank {r} over {transport}\n{}", ran.output);
        }
    }
}

/// /dev/shm too small for the shared-memory FIFOs and window (a 1 MiB tmpfs in a private
/// mount namespace): every rank fails at creation with an error that says so and how to
/// fix it. Needs root for the mount namespace; says so and passes vacuously without it.
#[test]
fn a_small_dev_shm_is_a_clear_error() {
    let probe = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: no private mount namespace here (needs root and unshare)");
        return;
    }
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {} -n 4 -- {} --random 20",
        env!("CARGO_BIN_EXE_oxccl-run"),
        common::selftest()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("OXCCL_TRANSPORT", "shm")
        .env("OXCCL_TIMEOUT", "30")
        .output()
        .expect("unshare");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for r in 0..4 {
        let line = error_of(r, &text);
        assert!(line.contains("/dev/shm has 1048576 bytes free"), "{line}");
        assert!(line.contains("enlarge /dev/shm"), "{line}");
    }
}

/// A TCP connection between two ranks is destroyed under a transfer (`ss -K`, as a reset
/// by the network would): both ranks fail promptly with an error naming the other, instead
/// of hanging until the deadline. Needs `ss` with socket destruction (root, a kernel with
/// INET_DIAG_DESTROY); says so and passes vacuously without it.
#[test]
fn a_connection_destroyed_under_a_transfer_is_named() {
    let dir = std::env::temp_dir().join(format!("oxccl-sockkill-test-{}", std::process::id()));
    let dir_s = dir.display().to_string();
    let env = [
        ("OXCCL_TRANSPORT", "tcp"),
        ("OXCCL_TIMEOUT", "60"),
        ("OXCCL_STATUS_DIR", dir_s.as_str()),
    ];
    let args = [
        "--random",
        "1000000",
        "--seed",
        "2",
        "--max-count",
        "1048576",
    ];
    let killer = {
        let dir = dir.clone();
        std::thread::spawn(move || -> Result<String, String> {
            // Rank 0's pid from its status line, then one of its established connections.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let pid = loop {
                let line = std::fs::read_to_string(dir.join("rank0")).unwrap_or_default();
                if let Some(pid) = line.split_whitespace().nth(3) {
                    break pid.to_owned();
                }
                if std::time::Instant::now() > deadline {
                    return Err("rank 0 never wrote its status".into());
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            };
            std::thread::sleep(std::time::Duration::from_millis(700));
            let ss = std::process::Command::new("ss")
                .args(["-tnpH", "state", "established"])
                .output()
                .map_err(|e| format!("no ss: {e}"))?;
            let table = String::from_utf8_lossy(&ss.stdout).into_owned();
            let conn = table
                .lines()
                .find(|l| l.contains(&format!("pid={pid},")))
                .ok_or_else(|| format!("no connection of pid {pid} in\n{table}"))?;
            let f: Vec<&str> = conn.split_whitespace().collect();
            let (local, peer) = (f[2], f[3]);
            let port = |a: &str| a.rsplit(':').next().unwrap_or("0").to_owned();
            let kill = std::process::Command::new("ss")
                .args(["-K", "src", "127.0.0.1", "sport", "=", &port(local)])
                .args(["dst", "127.0.0.1", "dport", "=", &port(peer)])
                .output()
                .map_err(|e| e.to_string())?;
            if !kill.status.success() {
                return Err(format!(
                    "ss -K failed: {}",
                    String::from_utf8_lossy(&kill.stderr)
                ));
            }
            Ok(format!("{local} -> {peer}"))
        })
    };
    let ran = common::run_job(2, &["--grace", "20"], common::selftest(), &args, &env);
    let _ = std::fs::remove_dir_all(&dir);
    let killed = match killer.join().unwrap() {
        Ok(k) => k,
        Err(why) => {
            eprintln!("SKIPPED: cannot destroy a socket here: {why}");
            return;
        }
    };
    assert!(ran.code.is_some_and(|c| c != 0), "{killed}\n{}", ran.output);
    for (r, peer) in [(0, 1), (1, 0)] {
        let line = error_of(r, &ran.output);
        eprintln!("destroyed {killed}: {line}");
        assert!(!line.contains("made no progress"), "{killed}: {line}");
        assert!(line.contains(&format!("rank {peer}")), "{killed}: {line}");
    }
}
