//! `--validate`: predictions against an oxccl-perf results file.

use super::*;

/// One measured row of a results file.
struct Measured {
    /// Benchmark size, bytes.
    size: u64,
    /// Datatype name.
    dtype: String,
    /// Root, or -1.
    root: i64,
    /// Microseconds: out-of-place, else in-place.
    time_us: f64,
}

/// A number, or a number written as a string (nccl-tests writes some that way).
fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Bytes of a datatype named as in nccl-tests' files.
fn dtype_size(name: &str) -> Option<u32> {
    Some(match name {
        "int8" | "uint8" | "char" => 1,
        "half" | "float16" | "bfloat16" => 2,
        "float" | "float32" | "int32" | "uint32" | "int" => 4,
        "double" | "float64" | "int64" | "uint64" => 8,
        _ => return None,
    })
}

/// The `--algo` of the command that produced a results file, if it names one.
fn file_algorithm(doc: &Value) -> Option<Algorithm> {
    let words: Vec<String> = match doc.get("args").and_then(Value::as_array) {
        Some(args) => args
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        None => doc
            .get("command")?
            .as_str()?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    };
    words.iter().enumerate().find_map(|(i, w)| {
        let value = match w.strip_prefix("--algo") {
            Some("") => words.get(i + 1)?.as_str(),
            Some(rest) => rest.strip_prefix('=')?,
            None => return None,
        };
        value.parse().ok()
    })
}

/// `--validate FILE`: measured against predicted time per size; returns the exit status.
pub(crate) fn validate(a: &Args, path: &Path) -> ExitCode {
    let doc: Value = match std::fs::read_to_string(path)
        .map_err(|e| format!("--validate: cannot read {}: {e}", path.display()))
        .and_then(|t| {
            serde_json::from_str(&t)
                .map_err(|e| format!("--validate: {} is not JSON: {e}", path.display()))
        }) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let bad = |what: &str| usage(format!("--validate {}: {what}", path.display()));
    let Some(results) = doc.get("results").and_then(Value::as_array) else {
        return bad("no \"results\" list (not an oxccl-perf -J file)");
    };
    let p = u64::from(a.nodes) * u64::from(a.ranks_per_node);
    if let Some(n) = number(doc.get("nranks")) {
        if n as u64 != p {
            return bad(&format!(
                "measured on {n} ranks, but --nodes {} × --ranks-per-node {} = {p}",
                a.nodes, a.ranks_per_node
            ));
        }
    }
    let file_coll = doc.get("collective").and_then(Value::as_str);
    let coll = match (a.collective, file_coll) {
        (Some(c), Some(f)) if parse_collective(f).ok() != Some(c) => {
            return bad(&format!(
                "the file measured {f}, not --collective {}",
                c.name()
            ))
        }
        (Some(c), _) => c,
        (None, Some(f)) => match parse_collective(f) {
            Ok(c) => c,
            Err(e) => return bad(&e),
        },
        (None, None) => Coll::AllReduce,
    };
    let algorithm = match a.algo.as_slice() {
        [one] => *one,
        [] => file_algorithm(&doc).unwrap_or(Algorithm::Ring),
        _ => return usage("--validate compares one algorithm: give --algo a single name"),
    };
    let mut rows = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let time = ["out_of_place", "in_place"]
            .iter()
            .find_map(|k| number(r.get(k)?.get("time")).filter(|t| t.is_finite()));
        let (Some(size), Some(time_us)) = (number(r.get("size")), time) else {
            return bad(&format!("result {i} has no numeric \"size\" and \"time\""));
        };
        rows.push(Measured {
            size: size as u64,
            dtype: r
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("float")
                .to_owned(),
            root: number(r.get("root")).unwrap_or(-1.0) as i64,
            time_us,
        });
    }
    // One setup per root (rooted collectives measured with -r all have several).
    let mut setups: Vec<(u32, Setup)> = Vec::new();
    if a.csv {
        println!("size,type,root,measured_us,predicted_us,rel_error");
    } else {
        println!(
            "# oxccl-sim --validate {}: {} on {} node(s) x {} ranks, algorithm {algorithm}",
            path.display(),
            coll.name(),
            a.nodes,
            a.ranks_per_node
        );
        println!(
            "# {:>10}  {:>8}  {:>5}  {:>12}  {:>12}  {:>9}",
            "size(B)", "type", "root", "measured(us)", "predicted(us)", "error(%)"
        );
    }
    let mut errors = Vec::new();
    for row in &rows {
        let root = if coll.has_root() {
            u32::try_from(row.root).unwrap_or(a.root)
        } else {
            0
        };
        if !setups.iter().any(|(r, _)| *r == root) {
            match setup(a, coll, root, &[algorithm]) {
                Ok(s) => setups.push((root, s)),
                Err(e) => return usage(e),
            }
        }
        let Some((_, s)) = setups.iter().find(|(r, _)| *r == root) else {
            continue;
        };
        let Some(elem) = dtype_size(&row.dtype) else {
            return bad(&format!("unknown datatype {:?}", row.dtype));
        };
        let count = (row.size / u64::from(elem)) as usize;
        let param = coll
            .counts(count, elem as usize, s.cluster.nranks() as usize)
            .param;
        let predicted = model::predict(
            &s.prepared[0],
            param as u64 * u64::from(elem),
            elem,
            &s.cluster,
        ) * 1e6;
        let err = if row.time_us > 0.0 {
            (predicted - row.time_us) / row.time_us
        } else {
            f64::NAN
        };
        if err.is_finite() {
            errors.push(err.abs());
        }
        let root_col = if coll.has_root() {
            root.to_string()
        } else {
            "-1".into()
        };
        if a.csv {
            println!(
                "{},{},{root_col},{},{},{}",
                row.size, row.dtype, row.time_us, predicted, err
            );
        } else {
            println!(
                "  {:>10}  {:>8}  {root_col:>5}  {}  {}  {:>9}",
                row.size,
                row.dtype,
                fit(row.time_us, 12),
                fit(predicted, 13),
                format!("{:+.1}", err * 100.0)
            );
        }
    }
    if !a.csv && !errors.is_empty() {
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        let worst = errors.iter().copied().fold(0.0, f64::max);
        println!(
            "# {} sizes: mean |error| {:.1} %, worst {:.1} %",
            errors.len(),
            mean * 100.0,
            worst * 100.0
        );
    }
    ExitCode::SUCCESS
}
