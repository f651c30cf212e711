//! `oxccl-topo` end to end: the built binary alone (this host) and under `oxccl-run`
//! (the fused view of a job). Each run has a liveness guard, not a timing assertion.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a run may take before the test fails (liveness, not timing).
const GUARD: Duration = Duration::from_secs(120);

/// Runs `cmd` to completion under the guard; returns (exit code, stdout, stderr).
fn run(mut cmd: Command) -> (Option<i32>, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A launcher's variables in the test's own environment would turn oxccl-topo into a rank.
    for k in [
        "OXCCL_RANK",
        "RANK",
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "SLURM_PROCID",
    ] {
        cmd.env_remove(k);
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > GUARD {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still running after {GUARD:?}: {}", e.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), o.join().unwrap(), e.join().unwrap())
}

fn topo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oxccl-topo"))
}

fn launched(nranks: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oxccl-run"));
    c.args(["-n", nranks, "--no-prefix", "--"])
        .arg(env!("CARGO_BIN_EXE_oxccl-topo"))
        .args(args);
    c
}

#[test]
fn json_of_this_host_parses() {
    let mut cmd = topo();
    cmd.arg("--json");
    let (code, out, err) = run(cmd);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], "oxccl-topology");
    assert!(v["cpu"]["online"].as_u64().unwrap() >= 1, "{out}");
    let nics = v["nics"].as_array().unwrap();
    let lo = nics
        .iter()
        .find(|n| n["kind"] == "loopback")
        .expect("loopback listed");
    assert!(
        lo["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "127.0.0.1/8"),
        "{out}"
    );
}

#[test]
fn tree_and_xml_of_this_host() {
    let (code, out, err) = run(topo());
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("host ") && out.contains("numa 0") && out.contains("nic lo loopback"),
        "{out}"
    );
    let mut cmd = topo();
    cmd.arg("--xml");
    let (code, out, err) = run(cmd);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("<?xml") && out.trim_end().ends_with("</system>"),
        "{out}"
    );
}

#[test]
fn under_a_job_rank_zero_prints_two_ranks_on_one_node() {
    let (code, out, err) = run(launched("2", &["--json"]));
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("only rank 0 prints, once");
    assert_eq!(
        (v["nranks"].as_u64(), v["nnodes"].as_u64()),
        (Some(2), Some(1)),
        "{out}"
    );
    assert_eq!(v["nodes"][0]["ranks"], serde_json::json!([0, 1]));
    assert_eq!(v["ranks"][1]["local_rank"], 1);
    assert_eq!(v["ranks"][1]["advertised_ip"], "127.0.0.1");
    assert!(v["nodes"][0]["topology"]["cpu"]["online"].as_u64().unwrap() >= 1);

    let (code, out, err) = run(launched("2", &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("cluster: 2 ranks on 1 node "), "{out}");
    assert!(
        out.contains("rank 1: local rank 1, advertises 127.0.0.1"),
        "{out}"
    );
}

#[test]
fn per_namespace_hostnames_make_two_nodes() {
    // OXCCL_HOSTNAME per rank is how the namespace cluster emulates hosts; interleaved
    // placement (ranks 0 and 2 on a, 1 and 3 on b) keeps each node's local ranks.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oxccl-run"));
    cmd.args(["-n", "4", "--no-prefix"]);
    for (r, h) in [(0, "a"), (1, "b"), (2, "a"), (3, "b")] {
        cmd.args(["--rank-env", &format!("{r}:OXCCL_HOSTNAME={h}")]);
    }
    cmd.arg("--")
        .arg(env!("CARGO_BIN_EXE_oxccl-topo"))
        .arg("--json");
    let (code, out, err) = run(cmd);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nnodes"], 2, "{out}");
    assert_eq!(v["nodes"][1]["host"], "b");
    assert_eq!(v["nodes"][1]["ranks"], serde_json::json!([1, 3]));
    assert_eq!(v["ranks"][3]["local_rank"], 1);
}

#[test]
fn an_interface_name_that_matches_nothing_fails_listing_the_interfaces() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oxccl-run"));
    cmd.args(["-n", "2", "--env", "OXCCL_SOCKET_IFNAME==no-such-if0", "--"])
        .arg(env!("CARGO_BIN_EXE_oxccl-topo"));
    let (code, _, err) = run(cmd);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("OXCCL_SOCKET_IFNAME==no-such-if0") && err.contains("lo (loopback"),
        "{err}"
    );
}

#[test]
fn topo_dump_file_is_written_at_creation() {
    let dir = std::env::temp_dir().join(format!("oxccl-topo-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (template, expect) in [
        (
            "per-rank-%h-%r.json",
            vec!["per-rank-h-0.json", "per-rank-h-1.json"],
        ),
        ("per-host-%h.xml", vec!["per-host-h.xml"]),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_oxccl-run"));
        cmd.args(["-n", "2", "--env", "OXCCL_HOSTNAME=h", "--env"])
            .arg(format!(
                "OXCCL_TOPO_DUMP_FILE={}",
                dir.join(template).display()
            ))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_oxccl-topo"));
        let (code, _, err) = run(cmd);
        assert_eq!(code, Some(0), "{err}");
        for name in expect {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            if name.ends_with(".json") {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["host"]["identity"], "h");
            } else {
                assert!(text.contains("identity=\"h\""), "{text}");
            }
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["per-host-h.xml", "per-rank-h-0.json", "per-rank-h-1.json"],
        "without %r one rank per host writes"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
