//! `oxccl-sim` end to end: the built binary's predictions against closed forms, its speed at
//! 100 000 ranks, its command-line errors and `--validate`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// What one run printed.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn sim(args: &[&str]) -> Ran {
    let out = Command::new(env!("CARGO_BIN_EXE_oxccl-sim"))
        .args(args)
        .output()
        .expect("oxccl-sim runs");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A scratch file path unique to this test process.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("oxccl-sim-{}-{name}", std::process::id()))
}

#[test]
fn ring_all_reduce_on_one_node_matches_the_closed_form() {
    // p = 8 on one node; n divisible by p · 4 so every chunk has the same size.
    let (p, n) = (8.0f64, 8u64 << 20);
    let (alpha_us, gbps, reduce_gbps) = (1.5, 20.0, 7.0);
    let ran = sim(&[
        "--nodes",
        "1",
        "--ranks-per-node",
        "8",
        "--collective",
        "all_reduce",
        "--algo",
        "ring",
        "-b",
        "8M",
        "-e",
        "8M",
        "--intra-alpha-us",
        "1.5",
        "--intra-gbps",
        "20",
        "--reduce-gbps",
        "7",
        "--csv",
    ]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let row = ran
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{n},ring,")))
        .unwrap_or_else(|| panic!("no ring row in\n{}", ran.stdout));
    let fields: Vec<&str> = row.split(',').collect();
    let got_us: f64 = fields[2].parse().unwrap();
    let nf = n as f64;
    let want_s = 2.0 * (p - 1.0) * alpha_us * 1e-6
        + 2.0 * (p - 1.0) / p * nf / (gbps * 1e9)
        + (p - 1.0) / p * nf / (reduce_gbps * 1e9);
    let want_us = want_s * 1e6;
    assert!(
        (got_us - want_us).abs() <= 1e-6 * want_us,
        "predicted {got_us} us, closed form {want_us} us"
    );
    // busbw = 2(p-1)/p · n / t.
    let busbw: f64 = fields[4].parse().unwrap();
    let want_bw = 2.0 * (p - 1.0) / p * nf / want_s / 1e9;
    assert!(
        (busbw - want_bw).abs() <= 1e-6 * want_bw,
        "{busbw} vs {want_bw}"
    );
}

#[test]
fn a_hundred_thousand_ranks_take_seconds_and_print_every_algorithm() {
    let started = Instant::now();
    let ran = sim(&[
        "--nodes",
        "12500",
        "--ranks-per-node",
        "8",
        "--collective",
        "all_reduce",
        "-b",
        "8",
        "-e",
        "1G",
        "-f",
        "8",
    ]);
    let took = started.elapsed();
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(ran.stdout.contains("100000 ranks"), "{}", ran.stdout);
    // Every size has the same algorithms, and one of them is marked best.
    let rows: Vec<Vec<&str>> = ran
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let sizes: Vec<&str> = {
        let mut s: Vec<&str> = rows.iter().map(|r| r[0]).collect();
        s.dedup();
        s
    };
    assert_eq!(sizes.len(), 10, "{}", ran.stdout); // 8, 64, ..., 1G
    let algos: Vec<&str> = rows.iter().filter(|r| r[0] == "8").map(|r| r[1]).collect();
    assert!(algos.contains(&"ring"), "{algos:?}");
    assert!(
        !algos.contains(&"ls_one_shot"),
        "load/store on 12500 nodes: {algos:?}"
    );
    for size in &sizes {
        let of_size: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == *size).collect();
        assert_eq!(of_size.len(), algos.len(), "size {size}");
        let best = of_size.iter().filter(|r| r.contains(&"<-")).count();
        assert_eq!(best, 1, "size {size}: {}", ran.stdout);
        for r in of_size {
            let t: f64 = r[2].parse().unwrap();
            assert!(t > 0.0 && t.is_finite(), "{r:?}");
        }
    }
    // The footer names a winner.
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with("# ") && (l.contains(" beats ") || l.contains(" is best "))),
        "{}",
        ran.stdout
    );
}

#[test]
fn inter_node_links_slow_the_ring_down() {
    let run = |nodes: &str, rpn: &str| {
        let ran = sim(&[
            "--nodes",
            nodes,
            "--ranks-per-node",
            rpn,
            "--algo",
            "ring",
            "-b",
            "64M",
            "-e",
            "64M",
            "--csv",
        ]);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        let row = ran.stdout.lines().nth(1).unwrap().to_owned();
        row.split(',').nth(4).unwrap().parse::<f64>().unwrap()
    };
    // Same 16 ranks: busbw is bound by the 20 GB/s intra link on one node, by the 12.5 GB/s
    // inter link on two.
    let (one, two) = (run("1", "16"), run("2", "8"));
    assert!(one > two, "{one} vs {two}");
    assert!(two < 12.5 && one < 20.0 && one > 12.5, "{one} vs {two}");
}

#[test]
fn bad_flags_fail_with_a_message_naming_the_flag() {
    let cases: [(&[&str], &str); 9] = [
        (&["--nodes", "0"], "--nodes"),
        (&["--ranks-per-node", "x"], "--ranks-per-node"),
        (&["--collective", "gather"], "--collective"),
        (&["--inter-gbps", "-1"], "--inter-gbps"),
        (&["--reduce-gbps", "0"], "--reduce-gbps"),
        (&["--intra-alpha-us", "fast"], "--intra-alpha-us"),
        (&["--algo", "ring,nope"], "--algo"),
        (&["-b", "1M", "-e", "1K"], "-b"),
        (&["--nodes", "20000", "--ranks-per-node", "8"], "--nodes"),
    ];
    for (args, flag) in cases {
        let ran = sim(args);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains(flag), "{args:?}: {}", ran.stderr);
        assert!(ran.stdout.is_empty(), "{args:?}: {}", ran.stdout);
    }
    // A rooted collective's root must exist.
    let ran = sim(&["--collective", "broadcast", "--root", "8"]);
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("--root"), "{}", ran.stderr);
}

#[test]
fn validate_prints_measured_predicted_and_the_error() {
    let path = scratch("measured.json");
    // An oxccl-perf -J file's shape (tools/src/perf/results.rs), 4 ranks, two sizes.
    let doc = r#"{"library": "oxccl 0.1.0", "collective": "all_reduce", "nranks": 4,
        "command": "oxccl-perf all_reduce -b 1K -e 1M -f 1024 -J x.json",
        "results": [
          {"size": 1024, "count": 256, "type": "float", "redop": "sum", "root": -1,
           "out_of_place": {"time": 12.5, "alg_bw": 0.08, "bus_bw": 0.12, "nwrong": 0},
           "in_place": {"time": 12.0, "alg_bw": 0.08, "bus_bw": 0.12, "nwrong": 0}},
          {"size": 1048576, "count": 262144, "type": "float", "redop": "sum", "root": -1,
           "out_of_place": {"time": 150.0, "alg_bw": 7.0, "bus_bw": 10.5, "nwrong": 0},
           "in_place": null}],
        "average_bus_bandwidth": 5.3}"#;
    std::fs::write(&path, doc).unwrap();
    let p = path.to_str().unwrap();
    let ran = sim(&["--nodes", "1", "--ranks-per-node", "4", "--validate", p]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("error(%)"), "{}", ran.stdout);
    assert!(ran.stdout.contains("algorithm ring"), "{}", ran.stdout);
    let rows: Vec<Vec<&str>> = ran
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", ran.stdout);
    // size type root measured predicted error
    for (row, measured) in rows.iter().zip([12.5, 150.0]) {
        let m: f64 = row[3].parse().unwrap();
        let pred: f64 = row[4].parse().unwrap();
        let err: f64 = row[5].parse().unwrap();
        assert_eq!(m, measured);
        assert!(
            (err - (pred - m) / m * 100.0).abs() < 0.11,
            "{row:?}: error column"
        );
    }
    // 1 KiB all-reduce on 4 ranks, ring, defaults: 6 α of 1 µs + bytes.
    let small: f64 = rows[0][4].parse().unwrap();
    assert!(small > 6.0 && small < 7.0, "{small}");
    assert!(ran.stdout.contains("mean |error|"), "{}", ran.stdout);

    // A file from another number of ranks is refused, naming the flags.
    std::fs::write(&path, doc).unwrap();
    let ran = sim(&["--nodes", "2", "--ranks-per-node", "4", "--validate", p]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr.contains("--validate") && ran.stderr.contains("--nodes"),
        "{}",
        ran.stderr
    );
}

#[test]
fn plot_writes_an_svg() {
    let path = scratch("plot.svg");
    let ran = sim(&[
        "--nodes",
        "4",
        "--ranks-per-node",
        "8",
        "-b",
        "1K",
        "-e",
        "16M",
        "-f",
        "4",
        "--plot",
        path.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(svg.contains("<svg") && svg.contains("ring"), "{svg:.200}");
}
