//! Running `oxccl-run` with a worker program and collecting what it printed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a job may run before the test fails (a liveness guard, not a timing assertion).
pub const GUARD: Duration = Duration::from_secs(600);

/// What a finished job left.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub struct Ran {
    /// The launcher's exit code (`None`: killed by the guard).
    pub code: Option<i32>,
    /// Everything printed, stdout then stderr.
    pub output: String,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs `oxccl-run -n <n> [launcher_args] -- <program> <args>` with extra environment.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn run_job(
    n: u32,
    launcher_args: &[&str],
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Ran {
    let start = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oxccl-run"));
    cmd.arg("-n")
        .arg(n.to_string())
        .args(launcher_args)
        .arg("--")
        .arg(program)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start oxccl-run");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for oxccl-run") {
            break status.code();
        }
        if start.elapsed() > GUARD {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = format!(
        "{}{}",
        t_out.join().unwrap_or_default(),
        t_err.join().unwrap_or_default()
    );
    Ran {
        code,
        output,
        elapsed: start.elapsed(),
    }
}

/// The self-test worker binary.
pub fn selftest() -> &'static str {
    env!("CARGO_BIN_EXE_oxccl-selftest")
}

/// Fails if a shared-memory segment of oxccl created since `since` stays in /dev/shm.
///
/// Other tests' jobs may run at the same time; their segments exist only between a rank's
/// creation of its inbox and the end of that communicator's setup (milliseconds), so a
/// segment still there after a few seconds was leaked.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn assert_no_segments_left(since: std::time::SystemTime) {
    let leaked = || -> Vec<String> {
        let Ok(dir) = std::fs::read_dir("/dev/shm") else {
            return Vec::new();
        };
        dir.flatten()
            .filter(|e| {
                // Communicators' segments; the transport crate's unit tests use `oxccl-test-`.
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("oxccl-") && !name.starts_with("oxccl-test-")
            })
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= since)
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    for _ in 0..50 {
        if leaked().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("shared-memory segments left in /dev/shm: {:?}", leaked());
}
