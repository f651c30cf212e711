//! `oxccl-perf` end to end: the built binaries on real ranks (processes through
//! `oxccl-run`, or `-t` threads), their output read by a parser written from nccl-tests'
//! documented output format, not from oxccl-perf's code.
//!
//! Every run has a liveness guard ([`GUARD`]); it is generous and not a timing assertion.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest one run may take before the test fails.
const GUARD: Duration = Duration::from_secs(120);

/// The rank variables of launchers; removed so `-t` runs are not mistaken for launched ones.
const RANK_VARS: [&str; 5] = [
    "OXCCL_RANK",
    "RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
    "SLURM_PROCID",
];

const COLLECTIVES: [&str; 9] = [
    "all_reduce",
    "all_gather",
    "reduce_scatter",
    "broadcast",
    "reduce",
    "alltoall",
    "sendrecv",
    "gather",
    "scatter",
];

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn bin(name: &str) -> PathBuf {
    // Cargo puts every binary of the package in the same folder.
    Path::new(env!("CARGO_BIN_EXE_oxccl-perf"))
        .with_file_name(name)
        .to_owned()
}

/// `oxccl-perf ARGS` (or an alias binary) without a launcher's environment.
fn perf(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin(program));
    cmd.args(args);
    for k in RANK_VARS {
        cmd.env_remove(k);
    }
    cmd
}

/// `oxccl-run -n N --no-prefix -- oxccl-perf ARGS`.
fn launched(n: u32, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oxccl-run"));
    cmd.args(["-n", &n.to_string(), "--no-prefix", "--grace", "20", "--"])
        .arg(env!("CARGO_BIN_EXE_oxccl-perf"))
        .args(args);
    cmd
}

fn run(mut cmd: Command) -> Ran {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the program");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
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
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > GUARD {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{cmd:?} still running after {GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        code,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

fn ok(cmd: Command) -> Ran {
    let desc = format!("{cmd:?}");
    let r = run(cmd);
    assert_eq!(
        r.code,
        Some(0),
        "{desc} failed\nstdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    r
}

// ---------------------------------------------------------------------------------------
// A parser for nccl-tests' text output, from its documentation: comment lines start with
// '#'; the parameter line starts with "# nThread"; device lines with "#  Rank"; a data
// row is 13 whitespace-separated fields (size, count, type, redop, root, then time, algbw,
// busbw, #wrong out-of-place and the same in-place; #wrong may be N/A), possibly followed
// by extra columns; the footer has "# Out of bounds values : N OK|FAILED" and
// "# Avg bus bandwidth    : X".

#[derive(Debug, Clone, Copy)]
struct Measure {
    time: f64,
    algbw: f64,
    busbw: f64,
    wrong: Option<u64>,
}

#[derive(Debug, Clone)]
struct TableRow {
    size: u64,
    count: u64,
    dtype: String,
    redop: String,
    root: i64,
    oop: Measure,
    ip: Measure,
    extra: Vec<String>,
}

#[derive(Debug, Default)]
struct Table {
    program: String,
    params: Vec<(String, String)>,
    ranks: Vec<(u32, u32, String)>,
    columns: Vec<String>,
    rows: Vec<TableRow>,
    out_of_bounds: Option<(u64, String)>,
    avg_busbw: Option<f64>,
    concluded: bool,
}

impl Table {
    fn param(&self, key: &str) -> &str {
        &self.params.iter().find(|(k, _)| k == key).unwrap().1
    }
}

fn measure(f: &[&str]) -> Measure {
    Measure {
        time: f[0].parse().unwrap(),
        algbw: f[1].parse().unwrap(),
        busbw: f[2].parse().unwrap(),
        wrong: (f[3] != "N/A").then(|| f[3].parse().unwrap()),
    }
}

fn parse(out: &str) -> Table {
    let mut t = Table::default();
    for line in out.lines() {
        if let Some(c) = line.strip_prefix('#') {
            let c = c.trim();
            if let Some(p) = c.strip_prefix("Collective test starting:") {
                t.program = p.trim().to_owned();
            } else if c.starts_with("nThread ") {
                // "nThread 1 nGpus 1 minBytes 8 maxBytes 65536 step: 4(factor) warmup iters: 1 ..."
                let words: Vec<&str> = c.split_whitespace().collect();
                let mut key = String::new();
                for w in words {
                    if w.parse::<f64>().is_ok() || w.contains('(') {
                        t.params.push((key.trim().to_owned(), w.to_owned()));
                        key.clear();
                    } else {
                        key = format!("{key} {w}");
                    }
                }
            } else if let Some(r) = c.strip_prefix("Rank") {
                let w: Vec<&str> = r.split_whitespace().collect();
                // N Group G Pid P on HOST device D [..] ...
                t.ranks.push((
                    w[0].parse().unwrap(),
                    w[4].parse().unwrap(),
                    w[6].to_owned(),
                ));
            } else if c.starts_with("size ") {
                t.columns = c.split_whitespace().map(str::to_owned).collect();
            } else if let Some(v) = c.strip_prefix("Out of bounds values") {
                let w: Vec<&str> = v
                    .trim_start_matches([' ', ':'])
                    .split_whitespace()
                    .collect();
                t.out_of_bounds = Some((w[0].parse().unwrap(), w[1].to_owned()));
            } else if let Some(v) = c.strip_prefix("Avg bus bandwidth") {
                let w: Vec<&str> = v
                    .trim_start_matches([' ', ':'])
                    .split_whitespace()
                    .collect();
                t.avg_busbw = Some(w[0].parse().unwrap());
            } else if c.starts_with("Collective test concluded:") {
                t.concluded = true;
            }
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        assert!(f.len() >= 13, "short data row: {line:?}");
        t.rows.push(TableRow {
            size: f[0].parse().unwrap(),
            count: f[1].parse().unwrap(),
            dtype: f[2].to_owned(),
            redop: f[3].to_owned(),
            root: f[4].parse().unwrap(),
            oop: measure(&f[5..9]),
            ip: measure(&f[9..13]),
            extra: f[13..].iter().map(|s| s.to_string()).collect(),
        });
    }
    t
}

fn elt_size(dtype: &str) -> u64 {
    match dtype {
        "int8" | "uint8" | "f8e4m3" | "f8e5m2" => 1,
        "half" | "bfloat16" => 2,
        "int32" | "uint32" | "float" => 4,
        _ => 8,
    }
}

/// What every complete, correct run must show.
fn check_table(t: &Table, coll: &str, nranks: u64) {
    assert_eq!(t.program, format!("{coll}_perf"));
    assert_eq!(t.ranks.len() as u64, nranks, "one device line per rank");
    assert_eq!(
        &t.columns[..13],
        [
            "size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
            "algbw", "busbw", "#wrong"
        ]
    );
    assert!(!t.rows.is_empty());
    for r in &t.rows {
        assert_eq!(r.oop.wrong, Some(0), "{coll}: {r:?}");
        assert_eq!(r.ip.wrong, Some(0), "{coll}: {r:?}");
        assert!(r.oop.time > 0.0 && r.ip.time > 0.0, "{coll}: {r:?}");
        let blocks = match coll {
            "all_gather" | "reduce_scatter" | "alltoall" | "gather" | "scatter" => nranks,
            _ => 1,
        };
        assert_eq!(
            r.size,
            r.count * blocks * elt_size(&r.dtype),
            "{coll}: {r:?}"
        );
        let reduces = matches!(
            coll,
            "all_reduce" | "reduce_scatter" | "reduce" | "sendrecv"
        );
        assert_eq!(r.redop != "none", reduces, "{coll}: {r:?}");
        let rooted = matches!(coll, "broadcast" | "reduce" | "gather" | "scatter");
        assert_eq!(r.root >= 0, rooted, "{coll}: {r:?}");
    }
    assert_eq!(t.out_of_bounds, Some((0, "OK".to_owned())), "{coll}");
    let avg = t.avg_busbw.expect("an average bus bandwidth line");
    let mean =
        t.rows.iter().map(|r| r.oop.busbw + r.ip.busbw).sum::<f64>() / (2 * t.rows.len()) as f64;
    assert!(
        (avg - mean).abs() < 0.01 + avg * 1e-3,
        "{coll}: avg {avg} vs rows {mean}"
    );
    assert!(t.concluded, "{coll}: no closing line");
}

#[test]
fn every_collective_on_three_processes_reads_as_nccl_tests_output() {
    for coll in COLLECTIVES {
        let r = ok(launched(
            3,
            &[coll, "-b", "8", "-e", "64K", "-f", "4", "-c", "1"],
        ));
        let t = parse(&r.stdout);
        check_table(&t, coll, 3);
        assert_eq!(t.param("minBytes"), "8");
        assert_eq!(t.param("maxBytes"), "65536");
        assert_eq!(t.param("step:"), "4(factor)");
        assert_eq!(t.param("nThread"), "1");
        assert_eq!(t.rows.len(), 7, "{coll}: 8 B to 64 KiB by 4");
        let pids: Vec<u32> = t.ranks.iter().map(|r| r.1).collect();
        assert!(
            pids[0] != pids[1] && pids[1] != pids[2],
            "one process per rank"
        );
    }
}

#[test]
fn every_type_operator_and_root_in_threads() {
    let r = ok(perf(
        "oxccl-perf",
        &[
            "all_reduce",
            "-t",
            "3",
            "-d",
            "all",
            "-o",
            "all",
            "-b",
            "8",
            "-e",
            "1K",
            "-f",
            "4",
        ],
    ));
    let t = parse(&r.stdout);
    check_table(&t, "all_reduce", 3);
    assert_eq!(t.param("nThread"), "3");
    assert_eq!(t.rows.len(), 12 * 5 * 4);
    for dtype in [
        "int8", "uint8", "int32", "uint32", "int64", "uint64", "half", "float", "double",
        "bfloat16", "f8e4m3", "f8e5m2",
    ] {
        for op in ["sum", "prod", "max", "min", "avg"] {
            let n = t
                .rows
                .iter()
                .filter(|r| r.dtype == dtype && r.redop == op)
                .count();
            assert_eq!(n, 4, "{dtype} {op}");
        }
    }
    for (coll, extra) in [("reduce_scatter", "-o"), ("reduce", "-r"), ("gather", "-r")] {
        let r = ok(perf(
            "oxccl-perf",
            &[
                coll, "-t", "3", "-d", "all", extra, "all", "-b", "64", "-e", "1K", "-f", "4",
                "-n", "2",
            ],
        ));
        let t = parse(&r.stdout);
        check_table(&t, coll, 3);
        let combos = if extra == "-o" { 5 } else { 3 };
        assert_eq!(t.rows.len(), 12 * combos * 3, "{coll}");
    }
}

#[test]
fn a_wrong_result_is_counted_and_fails_the_run() {
    let mut cmd = launched(3, &["all_reduce", "-b", "8", "-e", "1K", "-f", "4"]);
    cmd.env("OXCCL_PERF_CORRUPT", "2");
    let r = run(cmd);
    assert_eq!(
        r.code,
        Some(7),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    let t = parse(&r.stdout);
    assert_eq!(t.rows.len(), 4);
    for row in &t.rows {
        assert_eq!(row.oop.wrong, Some(1), "{row:?}");
        assert_eq!(row.ip.wrong, Some(1), "{row:?}");
    }
    assert_eq!(t.out_of_bounds, Some((8, "FAILED".to_owned())));

    // Threads, a rooted collective, and a rank whose output must stay untouched.
    let mut cmd = perf(
        "gather_perf",
        &["-t", "3", "-b", "1K", "-e", "1K", "-r", "0"],
    );
    cmd.env("OXCCL_PERF_CORRUPT", "1");
    let r = run(cmd);
    assert_ne!(r.code, Some(0));
    let t = parse(&r.stdout);
    assert!(t
        .rows
        .iter()
        .all(|r| r.oop.wrong > Some(0) && r.ip.wrong > Some(0)));
    assert_eq!(t.out_of_bounds.unwrap().1, "FAILED");
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oxccl-perf-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn json_round_trip_compare_and_plot() {
    let dir = temp_dir("json");
    let json = dir.join("ours.json");
    let svg = dir.join("run.svg");
    let r = ok(perf(
        "oxccl-perf",
        &[
            "all_gather",
            "-t",
            "2",
            "-b",
            "1K",
            "-e",
            "16K",
            "-f",
            "2",
            "-J",
            json.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
    ));
    let t = parse(&r.stdout);
    check_table(&t, "all_gather", 2);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        doc["library"],
        format!("oxccl {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(doc["collective"], "all_gather");
    assert_eq!(doc["nranks"], 2);
    assert!(doc["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    let date = doc["date"].as_str().unwrap();
    assert!(
        date.len() == 20 && date.ends_with('Z') && &date[10..11] == "T",
        "{date}"
    );
    assert!(doc["command"].as_str().unwrap().contains("all_gather"));
    let avg = doc["average_bus_bandwidth"].as_f64().unwrap();
    assert!((avg - t.avg_busbw.unwrap()).abs() <= avg * 1e-5 + 1e-6);
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), t.rows.len());
    for (j, row) in results.iter().zip(&t.rows) {
        assert_eq!(j["size"], row.size);
        assert_eq!(j["count"], row.count);
        assert_eq!(j["type"], row.dtype.as_str());
        assert_eq!(j["redop"], "none");
        assert_eq!(j["root"], -1);
        for (key, m) in [("out_of_place", row.oop), ("in_place", row.ip)] {
            let p = &j[key];
            assert_eq!(p["nwrong"], 0);
            for (field, printed) in [("time", m.time), ("alg_bw", m.algbw), ("bus_bw", m.busbw)] {
                let v = p[field].as_f64().unwrap();
                assert!(
                    (v - printed).abs() <= 0.006 + v * 1e-4,
                    "{key}.{field}: {v} vs {printed}"
                );
            }
        }
    }
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.starts_with("<svg") && picture.contains("oxccl"),
        "{svg:?}"
    );

    // A peer's file: its busbw is 2 GB/s at every size, no in-place, one size we lack.
    let mut peer_rows: Vec<serde_json::Value> = t
        .rows
        .iter()
        .map(|r| {
            serde_json::json!({"size": r.size, "count": r.count, "type": "float", "redop": "none",
                "root": -1, "out_of_place": {"time": 1.0, "alg_bw": 2.0, "bus_bw": 2.0, "nwrong": null},
                "in_place": null})
        })
        .collect();
    peer_rows.push(
        serde_json::json!({"size": 3, "count": 1, "type": "float", "redop": "none",
        "root": -1, "out_of_place": {"time": 1.0, "alg_bw": 2.0, "bus_bw": 2.0, "nwrong": null},
        "in_place": null}),
    );
    let peer = dir.join("peer.json");
    let peer_doc = serde_json::json!({"library": "gloo 2.5", "collective": "all_gather",
        "nranks": 2, "hostname": "h", "date": "2026-01-01T00:00:00Z", "command": "peer",
        "results": peer_rows, "average_bus_bandwidth": 2.0});
    std::fs::write(&peer, peer_doc.to_string()).unwrap();

    let r = ok(perf(
        "oxccl-perf",
        &[
            "all_gather",
            "-t",
            "2",
            "-b",
            "1K",
            "-e",
            "16K",
            "-f",
            "2",
            "-c",
            "0",
            "--compare",
            peer.to_str().unwrap(),
        ],
    ));
    let t = parse(&r.stdout);
    assert!(
        r.stdout.contains("# ratio1:") && r.stdout.contains("gloo 2.5"),
        "{}",
        r.stdout
    );
    assert_eq!(t.columns.last().unwrap(), "ratio1");
    for row in &t.rows {
        assert_eq!(
            (row.oop.wrong, row.ip.wrong),
            (None, None),
            "-c 0 shows N/A"
        );
        assert_eq!(row.extra.len(), 1, "{row:?}");
        let ratio: f64 = row.extra[0].parse().unwrap();
        assert!((ratio - row.oop.busbw / 2.0).abs() <= 0.006, "{row:?}");
    }

    let out = dir.join("both.svg");
    let r = ok(perf(
        "oxccl-perf",
        &[
            "plot",
            json.to_str().unwrap(),
            peer.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    ));
    assert!(r.stdout.contains("both.svg"));
    let picture = std::fs::read_to_string(&out).unwrap();
    assert!(picture.starts_with("<svg"));
    assert!(
        picture.contains("oxccl") && picture.contains("gloo 2.5"),
        "one line per file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn alias_binaries_run_their_collective() {
    for coll in COLLECTIVES {
        let name = format!("{coll}_perf");
        let r = ok(perf(
            &name,
            &["-t", "2", "-b", "64", "-e", "64", "-n", "2", "-w", "0"],
        ));
        let t = parse(&r.stdout);
        check_table(&t, coll, 2);
        assert_eq!(t.rows.len(), 1);
        let help = ok(perf(&name, &["--help"]));
        assert!(help.stdout.contains("--minbytes"), "{}", help.stdout);
    }
}

#[test]
fn bad_command_lines_exit_2() {
    let bad: &[(&str, &[&str])] = &[
        ("oxccl-perf", &[]),
        ("oxccl-perf", &["allreduce"]),
        ("oxccl-perf", &["all_reduce", "--frobnicate"]),
        ("oxccl-perf", &["all_reduce", "-d", "float32"]),
        ("oxccl-perf", &["all_reduce", "-o", "mulsum"]),
        ("oxccl-perf", &["all_reduce", "-b", "1M", "-e", "1K"]),
        ("oxccl-perf", &["all_reduce", "-b", "12Q"]),
        ("oxccl-perf", &["all_reduce", "-g", "2"]),
        ("oxccl-perf", &["all_reduce", "-n", "0"]),
        ("oxccl-perf", &["all_reduce", "--transport", "ib"]),
        ("oxccl-perf", &["all_reduce", "--algo", "treee"]),
        (
            "oxccl-perf",
            &["all_reduce", "--compare", "/nonexistent/x.json"],
        ),
        (
            "oxccl-perf",
            &["broadcast", "-t", "2", "-b", "8", "-e", "8", "-r", "5"],
        ),
        ("oxccl-perf", &["plot", "-o", "x.svg"]),
        ("reduce_perf", &["-z", "7"]),
        ("sendrecv_perf", &["-b"]),
    ];
    for (program, args) in bad {
        let r = run(perf(program, args));
        assert_eq!(
            r.code,
            Some(2),
            "{program} {args:?}: {}{}",
            r.stdout,
            r.stderr
        );
        assert!(
            !r.stderr.trim().is_empty(),
            "{program} {args:?}: no message"
        );
    }
    // Threads cannot be combined with a launcher's ranks.
    let mut cmd = perf("oxccl-perf", &["all_reduce", "-t", "2"]);
    cmd.env("RANK", "0").env("WORLD_SIZE", "1");
    let r = run(cmd);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let mut cmd = perf("all_reduce_perf", &["-t", "2", "-b", "8", "-e", "8"]);
    cmd.env("OXCCL_PERF_CORRUPT", "zero");
    assert_eq!(run(cmd).code, Some(2));
}

#[test]
fn tune_writes_a_file_that_steers_the_tuner() {
    let dir = temp_dir("tune");
    let file = dir.join("threads.tuning");
    let report = dir.join("report.md");
    let (f, rep) = (file.to_str().unwrap(), report.to_str().unwrap());
    let args = [
        "tune", "-t", "2", "-b", "64", "-e", "4K", "-f", "8", "--repeat", "1",
    ];
    let r = ok(perf(
        "oxccl-perf",
        &[
            &args[..],
            &["-n", "2", "--point-ms", "1", "-o", f, "--report", rep],
        ]
        .concat(),
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    // Every tunable collective at every size, and the ring with both channel caps.
    for coll in COLLECTIVES.iter().filter(|&&c| c != "sendrecv") {
        for bytes in [64, 512, 4096] {
            // Blocks are per rank (the size / 2 ranks) but for all-reduce, broadcast and
            // reduce; tuning files name collectives as oxccl does.
            let (name, block) = match *coll {
                "all_reduce" | "broadcast" | "reduce" => (*coll, bytes),
                "alltoall" => ("all_to_all", bytes / 2),
                other => (other, bytes / 2),
            };
            let line = format!("time,{name},shm,2,{block},");
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
    }
    assert!(
        text.contains(",ring,1,") && text.contains(",ring,2,"),
        "{text}"
    );
    let all_reduce_rows = text
        .lines()
        .filter(|l| l.starts_with("time,all_reduce,"))
        .count();
    // 3 sizes × (8 message algorithms × 2 caps + 2 load/store), fewer where one cannot run.
    assert!(all_reduce_rows >= 3 * 10, "{all_reduce_rows} rows:\n{text}");
    assert!(text.lines().any(|l| l.starts_with("link,shm,")), "{text}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert_eq!(md, r.stdout, "the report file is what was printed");
    assert!(
        md.contains("## alltoall") && md.contains("best forced"),
        "{md}"
    );
    assert!(md.contains("Tuned within 10% of the best"), "{md}");

    // The tuner reads it (and says so), and the results stay right.
    let mut cmd = perf(
        "all_reduce_perf",
        &["-t", "2", "-b", "64", "-e", "4K", "-f", "8"],
    );
    cmd.env("OXCCL_TUNING_FILE", &file);
    let r = ok(cmd);
    assert!(r.stdout.contains("from OXCCL_TUNING_FILE"), "{}", r.stdout);
    check_table(&parse(&r.stdout), "all_reduce", 2);

    // A damaged file is refused, naming the file, the line and the field.
    std::fs::write(
        &file,
        format!("{text}time,all_reduce,shm,2,64,ring,1,fast\n"),
    )
    .unwrap();
    let mut cmd = perf("all_reduce_perf", &["-t", "2"]);
    cmd.env("OXCCL_TUNING_FILE", &file);
    let r = run(cmd);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("OXCCL_TUNING_FILE") && r.stderr.contains("time_us"),
        "{}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}
