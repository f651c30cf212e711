//! `oxccl-run` end to end: the built binary starting plain `sh -c` programs.
//!
//! Every run has a liveness guard (the launcher must return within [`GUARD`]); the guard
//! is generous and is not a timing assertion.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest a launcher may run before the test fails (liveness, not timing).
const GUARD: Duration = Duration::from_secs(60);

fn launcher() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oxccl-run"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What a finished launcher left.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` under the liveness guard; kills it and panics past the guard.
fn finish(mut child: Child, started: Instant) -> Ran {
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > GUARD {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "oxccl-run still running after {GUARD:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ran {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: started.elapsed(),
    }
}

fn run(args: &[&str]) -> Ran {
    let started = Instant::now();
    finish(launcher().args(args).spawn().unwrap(), started)
}

/// A fresh empty directory for one test.
fn scratch() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "oxccl-run-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Lines of `text` that start with `[rank] `, without the prefix.
fn lines_of(text: &str, rank: u32) -> Vec<&str> {
    let prefix = format!("[{rank}] ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

/// Whether process `pid` has ended (gone, or a zombie waiting for its new parent).
fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Waits (liveness guard) until process `pid` has ended.
fn assert_ends(pid: u32) {
    let started = Instant::now();
    while !process_ended(pid) {
        assert!(started.elapsed() < GUARD, "process {pid} outlived the job");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the pid a rank wrote to `path`, waiting for it to appear.
fn read_pid(path: &std::path::Path) -> u32 {
    let started = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        assert!(started.elapsed() < GUARD, "no pid in {}", path.display());
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ranks_get_their_environment_and_prefixes() {
    let r = run(&[
        "-n",
        "3",
        "--",
        "sh",
        "-c",
        "echo \"$OXCCL_RANK $OXCCL_WORLD_SIZE $OXCCL_LOCAL_RANK $OXCCL_LOCAL_WORLD_SIZE \
         $OXCCL_ROOT_EXTERNAL $OXCCL_ROOT $OXCCL_SECRET\"; echo \"err $OXCCL_RANK\" >&2",
    ]);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let mut roots = Vec::new();
    for rank in 0..3 {
        let out = lines_of(&r.stdout, rank);
        assert_eq!(out.len(), 1, "stdout:\n{}", r.stdout);
        let fields: Vec<&str> = out[0].split(' ').collect();
        let want = [
            rank.to_string(),
            "3".into(),
            rank.to_string(),
            "3".into(),
            "1".into(),
        ];
        assert_eq!(fields[..5], want, "rank {rank}: {}", out[0]);
        let root: std::net::SocketAddr = fields[5].parse().unwrap();
        assert_eq!(root.ip().to_string(), "127.0.0.1");
        assert_ne!(root.port(), 0);
        let secret = fields[6];
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
        roots.push((fields[5].to_owned(), secret.to_owned()));
        assert_eq!(lines_of(&r.stderr, rank), [format!("err {rank}")]);
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
}

#[test]
fn wildcard_bind_gives_ranks_a_loopback_root() {
    let r = run(&[
        "-n",
        "1",
        "--bind",
        "0.0.0.0",
        "sh",
        "-c",
        "echo $OXCCL_ROOT",
    ]);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let root: std::net::SocketAddr = lines_of(&r.stdout, 0)[0].parse().unwrap();
    assert!(root.ip().is_loopback(), "{root}");
}

#[test]
fn env_for_all_and_rank_env_for_one() {
    let r = run(&[
        "-n",
        "3",
        "--env",
        "A=all=1",
        "--rank-env",
        "1:B=one",
        "--rank-env",
        "2:A=two",
        "sh",
        "-c",
        "echo \"A=$A B=$B\"",
    ]);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(lines_of(&r.stdout, 0), ["A=all=1 B="]);
    assert_eq!(lines_of(&r.stdout, 1), ["A=all=1 B=one"]);
    assert_eq!(lines_of(&r.stdout, 2), ["A=two B="]);
}

#[test]
fn failed_rank_exit_status_is_forwarded() {
    let r = run(&[
        "-n",
        "3",
        "sh",
        "-c",
        "if [ \"$OXCCL_RANK\" = 1 ]; then exit 3; fi",
    ]);
    assert_eq!(r.code, Some(3), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr
            .contains("oxccl-run: rank 1 exited with status 3; stopping the job"),
        "stderr:\n{}",
        r.stderr
    );
}

#[test]
fn rank_killed_by_signal_gives_128_plus_signal() {
    let r = run(&[
        "-n",
        "2",
        "sh",
        "-c",
        "if [ \"$OXCCL_RANK\" = 1 ]; then kill -9 $$; fi",
    ]);
    assert_eq!(r.code, Some(128 + 9), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr
            .contains("oxccl-run: rank 1 exited with signal 9 (SIGKILL); stopping the job"),
        "stderr:\n{}",
        r.stderr
    );
}

#[test]
fn others_are_stopped_after_the_grace_period() {
    let dir = scratch();
    let pidfile = dir.join("sleeper");
    // Rank 1 leaves a grandchild sleeping 1000 s; rank 0 fails once it is there.
    let script = format!(
        "if [ \"$OXCCL_RANK\" = 0 ]; then \
           while [ ! -s {p} ]; do sleep 0.05; done; exit 5; \
         fi; \
         sleep 1000 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pidfile.display()
    );
    let r = run(&["-n", "2", "--grace", "1", "sh", "-c", &script]);
    assert_eq!(r.code, Some(5), "stderr:\n{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(30), "took {:?}", r.elapsed);
    assert!(
        r.stderr
            .contains("grace period over; sending SIGTERM to rank(s) 1"),
        "stderr:\n{}",
        r.stderr
    );
    // The signal reached the rank's whole process group, grandchild included.
    assert_ends(read_pid(&pidfile));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn first_failure_decides_and_others_may_finish_within_grace() {
    let dir = scratch();
    let pidfile = dir.join("rank0");
    // Rank 1 fails only after the launcher has reaped rank 0's failure.
    let script = format!(
        "if [ \"$OXCCL_RANK\" = 0 ]; then echo $$ > {p}.tmp; mv {p}.tmp {p}; exit 4; fi; \
         while [ ! -s {p} ]; do sleep 0.05; done; \
         while kill -0 $(cat {p}) 2>/dev/null; do sleep 0.05; done; \
         echo finished; exit 7",
        p = pidfile.display()
    );
    let r = run(&["-n", "2", "--grace", "100", "sh", "-c", &script]);
    assert_eq!(r.code, Some(4), "stderr:\n{}", r.stderr);
    assert_eq!(lines_of(&r.stdout, 1), ["finished"]);
    assert!(r
        .stderr
        .contains("rank 0 exited with status 4; stopping the job"));
    assert!(r.stderr.contains("rank 1 exited with status 7"));
    assert!(!r.stderr.contains("SIGTERM"), "stderr:\n{}", r.stderr);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sigterm_to_launcher_stops_all_ranks_and_exits_130() {
    let started = Instant::now();
    let mut child = launcher()
        .args(["-n", "2", "sh", "-c", "echo ready; sleep 1000"])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            all += &line;
            all.push('\n');
        }
        all
    });
    for _ in 0..2 {
        let line = rx.recv_timeout(GUARD).expect("ranks did not start");
        assert!(line.ends_with("] ready"), "{line}");
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.stdout = None;
    let mut err = String::new();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        stderr.read_to_string(&mut err).unwrap();
        err
    });
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if started.elapsed() > GUARD {
            child.kill().unwrap();
            panic!("oxccl-run ignored SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stderr = err_reader.join().unwrap();
    reader.join().unwrap();
    assert_eq!(code, Some(130), "stderr:\n{stderr}");
    assert!(
        stderr.contains("interrupted; sending SIGTERM to all ranks"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn ranks_die_with_a_killed_launcher() {
    let dir = scratch();
    let pidfile = dir.join("rank");
    let script = format!(
        "echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 1000",
        p = pidfile.display()
    );
    let mut child = launcher()
        .args(["-n", "1", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rank_pid = read_pid(&pidfile);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_ends(rank_pid);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn program_not_found_is_a_usage_error() {
    let r = run(&["-n", "2", "oxccl-no-such-program"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr
            .contains("program not found: oxccl-no-such-program"),
        "stderr:\n{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    let r = run(&["-n", "2", "./no/such/program"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("no such file"), "stderr:\n{}", r.stderr);
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["-n", "0", "true"][..],
        &["-n", "2", "--env", "NOVALUE", "true"],
        &["-n", "2", "--rank-env", "2:K=v", "true"],
        &["-n", "2", "--rank-env", "K=v", "true"],
        &["-n", "2", "--grace", "soon", "true"],
        &["true"],
    ] {
        let r = run(args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn no_prefix_passes_output_through() {
    let r = run(&[
        "-n",
        "1",
        "--no-prefix",
        "sh",
        "-c",
        "echo hello; echo oops >&2",
    ]);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stdout, "hello\n");
    assert_eq!(r.stderr, "oops\n");
}

#[test]
fn partial_last_line_is_flushed() {
    let r = run(&["-n", "1", "sh", "-c", "printf 'a\\nbc'"]);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stdout, "[0] a\n[0] bc\n");
}

#[test]
fn lines_of_ranks_never_interleave() {
    let r = run(&[
        "-n",
        "4",
        "sh",
        "-c",
        "i=0; while [ $i -lt 500 ]; do \
           echo \"rank $OXCCL_RANK line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; \
           i=$((i+1)); done",
    ]);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stdout.lines().count(), 4 * 500);
    for line in r.stdout.lines() {
        let (prefix, rest) = line.split_once(' ').unwrap();
        let rank = prefix.trim_start_matches('[').trim_end_matches(']');
        assert!(rest.starts_with(&format!("rank {rank} line ")), "{line}");
        assert!(rest.ends_with('x'), "{line}");
    }
}

#[test]
fn rank_0_reads_piped_stdin() {
    let started = Instant::now();
    let mut child = launcher()
        .args(["-n", "2", "sh", "-c", "read x; echo \"got $x\""])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").unwrap();
    }
    let r = finish(child, started);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert_eq!(lines_of(&r.stdout, 0), ["got hello"]);
    assert_eq!(lines_of(&r.stdout, 1), ["got "]);
}
