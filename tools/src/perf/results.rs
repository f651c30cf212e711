//! Results files: writing `-J` output and reading files back (`--compare`, `plot`).
//!
//! The file is one JSON object. These keys are always there, and the peer benchmarks
//! (`bench/peers/`) write the same ones, so files from either compare and plot together:
//!
//! ```json
//! {"library": "oxccl 0.1.0", "collective": "all_reduce", "nranks": 4,
//!  "hostname": "node1", "date": "2026-11-28T10:00:00Z", "command": "oxccl-perf all_reduce -b 8",
//!  "results": [{"size": 8, "count": 2, "type": "float", "redop": "sum", "root": -1,
//!               "out_of_place": {"time": 12.5, "alg_bw": 0.0, "bus_bw": 0.0, "nwrong": 0},
//!               "in_place": {"time": 12.1, "alg_bw": 0.0, "bus_bw": 0.0, "nwrong": 0}}],
//!  "average_bus_bandwidth": 0.0}
//! ```
//!
//! Times are in microseconds, bandwidths in GB/s (1e9 bytes/s); `nwrong` is null when not
//! checked; a peer without in-place runs writes `"in_place": null`. oxccl adds nccl-tests'
//! other keys where they apply (`start_time`, `end_time`, `args`, `config` with `devices`,
//! `out_of_bounds`, `errors`, and per row `actual_iterations`, `experiment_name`), except
//! `env`: the environment holds the job secret. Two keys differ from nccl-tests' files:
//! `root` is a number (nccl-tests writes it as a padded string) and
//! `average_bus_bandwidth` is a number (nccl-tests writes an object with `bandwidth`).
//! The reader accepts both forms, so nccl-tests' own files can be compared and plotted.

use super::run::{Placement, Row};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// One row of a results file, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct RefRow {
    /// Bytes.
    pub size: u64,
    /// Datatype name (`float`, ...).
    pub dtype: String,
    /// Operator name or `none`.
    pub redop: String,
    /// Root, or -1.
    pub root: i64,
    /// Out-of-place busbw, GB/s.
    pub out_of_place: Option<f64>,
    /// In-place busbw, GB/s.
    pub in_place: Option<f64>,
}

impl RefRow {
    /// The busbw to compare and plot: out-of-place, else in-place.
    pub fn busbw(&self) -> Option<f64> {
        self.out_of_place.or(self.in_place)
    }
}

/// A results file read back.
#[derive(Debug, Clone, PartialEq)]
pub struct RefFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// `library` (e.g. `oxccl 0.1.0`, `openmpi 4.1.6`), or a name made up from the file.
    pub library: String,
    /// `collective`, or empty.
    pub collective: String,
    /// The rows.
    pub rows: Vec<RefRow>,
}

impl RefFile {
    /// Reads `path`; the error names the file and what is wrong with it.
    pub fn read(path: &Path) -> Result<RefFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        Self::from_value(path, &v)
    }

    /// Interprets a parsed results document.
    pub fn from_value(path: &Path, v: &Value) -> Result<RefFile, String> {
        let bad = |what: &str| format!("{}: {what}", path.display());
        let results = v
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no \"results\" list (not a results file)"))?;
        let mut rows = Vec::with_capacity(results.len());
        for (i, r) in results.iter().enumerate() {
            let size = r
                .get("size")
                .and_then(number)
                .ok_or_else(|| bad(&format!("result {i} has no numeric \"size\"")))?;
            rows.push(RefRow {
                size: size as u64,
                dtype: text(r.get("type")).unwrap_or_else(|| "float".into()),
                redop: text(r.get("redop")).unwrap_or_else(|| "none".into()),
                root: r.get("root").and_then(number).unwrap_or(-1.0) as i64,
                out_of_place: r.get("out_of_place").and_then(bus_bw),
                in_place: r.get("in_place").and_then(bus_bw),
            });
        }
        let library = text(v.get("library")).unwrap_or_else(|| {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            if v.get("nccl_version").is_some() {
                "nccl-tests".to_owned()
            } else {
                stem.unwrap_or_else(|| "results".into())
            }
        });
        Ok(RefFile {
            path: path.to_owned(),
            library,
            collective: text(v.get("collective")).unwrap_or_default(),
            rows,
        })
    }

    /// The busbw of the row for (size, type, operator), preferring the same root; when no
    /// row has that operator, one whose operator is `none` (or ours is) matches.
    pub fn busbw_for(&self, size: u64, dtype: &str, redop: &str, root: i64) -> Option<f64> {
        let same = |r: &&RefRow| r.size == size && r.dtype == dtype;
        let exact: Vec<&RefRow> = self
            .rows
            .iter()
            .filter(same)
            .filter(|r| r.redop == redop)
            .collect();
        let candidates = if exact.is_empty() {
            self.rows
                .iter()
                .filter(same)
                .filter(|r| r.redop == "none" || redop == "none")
                .collect()
        } else {
            exact
        };
        candidates
            .iter()
            .find(|r| r.root == root)
            .or(candidates.first())
            .and_then(|r| r.busbw())
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

fn bus_bw(placement: &Value) -> Option<f64> {
    placement
        .get("bus_bw")
        .and_then(number)
        .filter(|b| b.is_finite())
}

fn placement(p: &Placement) -> Value {
    json!({"time": p.time_us, "alg_bw": p.algbw, "bus_bw": p.busbw, "nwrong": p.wrong})
}

/// One row in results-file form.
pub fn row_value(row: &Row, iters: u32) -> Value {
    json!({
        "size": row.size,
        "count": row.count,
        "type": row.dtype.name(),
        "redop": row.redop.map_or("none", |o| o.name()),
        "root": row.root,
        "out_of_place": placement(&row.out_of_place),
        "in_place": placement(&row.in_place),
        "actual_iterations": iters,
        "experiment_name": "",
    })
}

/// Writes `doc` to `path` (pretty-printed, with a final newline).
pub fn write(path: &Path, doc: &Value) -> Result<(), String> {
    let mut text =
        serde_json::to_string_pretty(doc).map_err(|e| format!("cannot encode the results: {e}"))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `t` as an RFC 3339 UTC timestamp, e.g. `2026-11-28T10:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar, eras of 400
    // years = 146097 days, years starting in March so the leap day comes last).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn reads_nccl_tests_and_peer_shapes() {
        let nccl = json!({"nccl_version": 22703, "results": [
            {"size": 1024, "count": 256, "type": "float", "redop": "sum", "root": "    -1",
             "out_of_place": {"time": 10.0, "alg_bw": 0.1, "bus_bw": 0.15, "nwrong": 0.0},
             "in_place": {"time": 10.0, "alg_bw": 0.1, "bus_bw": "nan", "nwrong": 0.0}}],
            "average_bus_bandwidth": {"bandwidth": 0.15, "okay": "unchecked"}});
        let f = RefFile::from_value(Path::new("n.json"), &nccl).unwrap();
        assert_eq!(f.library, "nccl-tests");
        assert_eq!(f.rows[0].root, -1);
        assert_eq!(f.rows[0].in_place, None);
        assert_eq!(f.busbw_for(1024, "float", "sum", -1), Some(0.15));
        assert_eq!(f.busbw_for(1024, "float", "max", -1), None);
        assert_eq!(f.busbw_for(2048, "float", "sum", -1), None);

        let peer = json!({"library": "gloo 2.5", "collective": "all_gather", "results": [
            {"size": 64, "count": 4, "type": "float", "redop": "none", "root": -1,
             "out_of_place": {"time": 3.0, "alg_bw": 0.02, "bus_bw": 0.01, "nwrong": null},
             "in_place": null}]});
        let f = RefFile::from_value(Path::new("p.json"), &peer).unwrap();
        assert_eq!(
            (f.library.as_str(), f.collective.as_str()),
            ("gloo 2.5", "all_gather")
        );
        assert_eq!(f.busbw_for(64, "float", "sum", 0), Some(0.01));
        assert!(RefFile::from_value(Path::new("x.json"), &json!({"a": 1})).is_err());
    }
}
