//! Jobs started the ways other engines start them, each checked by `oxccl-selftest` on every
//! rank: torchrun's and Slurm's variables on processes started here, and the real `mpirun`
//! of Open MPI and `mpiexec` of MPICH (their variables, with `OXCCL_ROOT` passed through).
//! The MPI launchers are part of the test set-up (`scripts/test.sh` installs them); a missing
//! one fails the test with the package to install.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Small counts and two types: the launch is under test, not the collectives.
const SELFTEST_ARGS: &[&str] = &["--counts", "0,7,1031", "--dtypes", "float,int32"];

/// A port free right now on the loopback address.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    l.local_addr().expect("probe address").port()
}

/// A port `p` such that `p + 1` is free on every address too: the MASTER_PORT of the
/// torchrun-style tests, whose root listens on MASTER_PORT + 1 (a port taken by another
/// test at that moment failed `torchrun_variables` once with "Address already in use").
fn free_master_port() -> u16 {
    for _ in 0..100 {
        let p = free_port();
        if p < u16::MAX && TcpListener::bind(("0.0.0.0", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no port p with p + 1 free in 100 tries");
}

/// Waits for every child, killing all of them past the guard; each rank's output.
fn wait_all(children: Vec<Child>) -> Vec<(Option<i32>, String)> {
    let start = Instant::now();
    let mut children: Vec<Option<Child>> = children.into_iter().map(Some).collect();
    let mut done: Vec<Option<(Option<i32>, String)>> = vec![None; children.len()];
    while done.iter().any(Option::is_none) {
        for (i, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot.as_mut() else { continue };
            let finished = child.try_wait().expect("wait for a rank").is_some();
            if finished || start.elapsed() > common::GUARD {
                let mut child = slot.take().expect("present");
                if !finished {
                    let _ = child.kill();
                }
                let out = child.wait_with_output().expect("collect a rank's output");
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                done[i] = Some((out.status.code(), text));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done.into_iter().map(|d| d.expect("finished")).collect()
}

/// Starts `n` self-test ranks, rank `r` with `vars(r)` as its whole launch environment.
fn run_ranks(n: u32, vars: impl Fn(u32) -> Vec<(String, String)>) {
    let children = (0..n)
        .map(|r| {
            let mut cmd = Command::new(common::selftest());
            cmd.args(SELFTEST_ARGS)
                .env("OXCCL_TIMEOUT", "60")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // Whatever launched this test must not leak its own conventions in.
            for k in [
                "OXCCL_RANK",
                "OXCCL_WORLD_SIZE",
                "OXCCL_ROOT",
                "RANK",
                "WORLD_SIZE",
            ] {
                cmd.env_remove(k);
            }
            cmd.envs(vars(r));
            cmd.spawn().expect("start a self-test rank")
        })
        .collect();
    for (r, (code, out)) in wait_all(children).into_iter().enumerate() {
        assert!(
            code == Some(0) && out.contains("selftest OK"),
            "rank {r}: exit {code:?}\n{out}"
        );
    }
}

fn pairs(kv: &[(&str, String)]) -> Vec<(String, String)> {
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn torchrun_variables() {
    let port = free_master_port().to_string();
    run_ranks(3, |r| {
        pairs(&[
            ("RANK", r.to_string()),
            ("WORLD_SIZE", "3".into()),
            ("LOCAL_RANK", r.to_string()),
            ("LOCAL_WORLD_SIZE", "3".into()),
            ("MASTER_ADDR", "127.0.0.1".into()),
            // oxccl's root takes MASTER_PORT + 1 (torchrun's store owns MASTER_PORT).
            ("MASTER_PORT", port.clone()),
            ("TORCHELASTIC_RUN_ID", format!("oxccl-test-{port}")),
        ])
    });
}

#[test]
fn slurm_variables_without_a_root_address() {
    // What srun sets; no OXCCL_ROOT or MASTER_ADDR: the root is the step's first node.
    let job = format!("{}", std::process::id());
    run_ranks(3, |r| {
        pairs(&[
            ("SLURM_PROCID", r.to_string()),
            ("SLURM_NTASKS", "3".into()),
            ("SLURM_LOCALID", r.to_string()),
            ("SLURM_JOB_ID", job.clone()),
            ("SLURM_STEP_ID", "0".into()),
            ("SLURM_JOB_NODELIST", "localhost".into()),
            ("SLURM_STEP_NODELIST", "localhost".into()),
        ])
    });
}

/// Runs the self-test under an MPI launcher; `launcher` is its command line up to the
/// program.
fn run_mpi(launcher: &[&str], package: &str) {
    let exe = launcher[0];
    let found = Command::new(exe)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{exe} not found: install {package} (scripts/test.sh does: apt-get install {package})"
    );
    let start = Instant::now();
    let child = Command::new(exe)
        .args(&launcher[1..])
        .arg(common::selftest())
        .args(SELFTEST_ARGS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the MPI launcher");
    let (code, out) = wait_all(vec![child]).pop().expect("one launcher");
    let ok = out.matches("selftest OK").count();
    assert!(
        code == Some(0) && ok == 3,
        "{exe}: exit {code:?}, {ok} of 3 ranks OK after {:?}\n{out}",
        start.elapsed()
    );
}

#[test]
fn open_mpi_mpirun() {
    let root = format!("OXCCL_ROOT=127.0.0.1:{}", free_port());
    run_mpi(
        &[
            "mpirun.openmpi",
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "3",
            "-x",
            &root,
            "-x",
            "OXCCL_TIMEOUT=60",
        ],
        "openmpi-bin",
    );
}

#[test]
fn mpich_mpiexec() {
    let port = free_port().to_string();
    run_mpi(
        &[
            "mpiexec.hydra",
            "-np",
            "3",
            "-genv",
            "OXCCL_ROOT",
            &format!("127.0.0.1:{port}"),
            "-genv",
            "OXCCL_TIMEOUT",
            "60",
        ],
        "mpich",
    );
}
