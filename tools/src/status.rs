//! Reading the status lines ranks write to `OXCCL_STATUS_DIR` (`oxccl-status`, and
//! `oxccl-run` when interrupted): every rank's line, oldest reports flagged, and who is
//! behind the others.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// A status older than this means the rank's watchdog stopped writing (it rewrites every
/// 0.5 s): the process is stopped, hung hard, or gone.
const STALE: Duration = Duration::from_secs(3);

/// One rank's status file.
#[derive(Debug, Clone)]
pub struct RankStatus {
    /// The rank.
    pub rank: u32,
    /// Ranks in the job, from the line.
    pub nranks: u32,
    /// The line as written.
    pub line: String,
    /// How old the file is.
    pub age: Duration,
    /// The collective it is in or last finished, and whether it is in it.
    pub seq: Option<(u64, bool)>,
}

/// The number after `#` following `marker` in `line`.
fn seq_after(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let rest = &rest[rest.find('#')? + 1..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Every `rank<N>` file of `dir`, by rank.
pub fn read(dir: &Path) -> std::io::Result<Vec<RankStatus>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rank) = name
            .strip_prefix("rank")
            .and_then(|r| r.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let line = text.trim().to_owned();
        let nranks = line
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.split('/').nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        let seq = if line.contains(": in ") {
            seq_after(&line, ": in ").map(|s| (s, true))
        } else {
            seq_after(&line, "(finished ").map(|s| (s, false))
        };
        out.push(RankStatus {
            rank,
            nranks,
            line,
            age,
            seq,
        });
    }
    out.sort_by_key(|s| s.rank);
    Ok(out)
}

/// Every rank's line, then who is behind, silent or missing.
pub fn report(dir: &Path) -> String {
    let all = match read(dir) {
        Ok(all) => all,
        Err(e) => return format!("no status in {}: {e}\n", dir.display()),
    };
    let mut text = String::new();
    for s in &all {
        text += &s.line;
        if s.age > STALE {
            text += &format!(
                "  [written {:.0} s ago: stopped, hung or gone?]",
                s.age.as_secs_f64()
            );
        }
        text.push('\n');
    }
    let n = all.iter().map(|s| s.nranks).max().unwrap_or(0);
    let missing: Vec<u32> = (0..n)
        .filter(|r| !all.iter().any(|s| s.rank == *r))
        .collect();
    if !missing.is_empty() {
        text += &format!(
            "no status from rank(s) {missing:?} (not started, single-rank, or on a host that does \
             not share this directory)\n"
        );
    }
    // The furthest collective any rank has entered (a rank between ops after #k has entered
    // k); ranks short of it hold the others up.
    let reached = |s: &RankStatus| s.seq.map_or(0, |(k, _)| k);
    let front = all.iter().map(reached).max().unwrap_or(0);
    if front > 0 {
        let behind: Vec<String> = all
            .iter()
            .filter(|s| reached(s) < front)
            .map(|s| s.rank.to_string())
            .collect();
        if !behind.is_empty() && behind.len() < all.len() {
            text += &format!(
                "behind the others (not yet in collective #{front}): rank(s) {}\n",
                behind.join(", ")
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_lists_every_rank_and_who_is_behind() {
        let dir = std::env::temp_dir().join(format!("oxccl-status-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = [
            "rank 0/4 pid 1 host a: in all_reduce #57 for 3.0 s (finished #56)",
            "rank 1/4 pid 2 host a: in all_reduce #57 for 3.0 s (finished #56)",
            "rank 3/4 pid 4 host b: between ops for 3.1 s (finished broadcast #56)",
        ];
        for (r, l) in [0, 1, 3].iter().zip(lines) {
            std::fs::write(dir.join(format!("rank{r}")), format!("{l}\n")).unwrap();
        }
        std::fs::write(dir.join("rank1.tmp"), "half a li").unwrap();
        let text = report(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        for l in lines {
            assert!(text.contains(l), "{text}");
        }
        assert!(text.contains("no status from rank(s) [2]"), "{text}");
        assert!(
            text.contains("behind the others (not yet in collective #57): rank(s) 3"),
            "{text}"
        );
    }
}
