//! The root address of a Slurm job step that names none: the first node of the step's node
//! list, at a port derived from the job and step ids.
//!
//! Slurm starts every task of a step with `SLURM_PROCID`/`SLURM_NTASKS` but no rendezvous
//! address; task 0 runs on the first node of the allocation under every standard task
//! distribution, so that node is where the root can listen. The port is spread over
//! 20000..40000 by the job and step ids, so concurrent steps and jobs whose first node is
//! the same pick different ports (a collision fails at bind time with a clear error, and
//! `OXCCL_ROOT` overrides all of this).

use crate::error::{Error, Result};

/// The first host name of a Slurm node list: `node[07-09,12],gpu1` → `node07`.
pub(crate) fn first_host(nodelist: &str) -> Result<String> {
    let bad = || {
        Error::Environment(format!(
            "SLURM_JOB_NODELIST={nodelist:?} is not a Slurm node list (e.g. node[01-04],gpu7); \
             set OXCCL_ROOT=host:port"
        ))
    };
    let list = nodelist.trim();
    // The first entry ends at the first comma outside brackets.
    let mut depth = 0i32;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let entry = &list[..end];
    let host = match entry.split_once('[') {
        None => entry.to_owned(),
        Some((prefix, rest)) => {
            let inner = rest.strip_suffix(']').ok_or_else(bad)?;
            let first = inner.split(',').next().unwrap_or("");
            let start = first.split('-').next().unwrap_or("");
            if start.is_empty() || !start.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            // Zero padding is part of the name (`node007`), so the text is kept as is.
            format!("{prefix}{start}")
        }
    };
    if host.is_empty() || host.contains(['[', ']', ' ']) {
        return Err(bad());
    }
    Ok(host)
}

/// The root port of job `job_id`, step `step_id` (either may be empty).
pub(crate) fn port(job_id: &str, step_id: &str) -> u16 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in job_id.bytes().chain([b'.']).chain(step_id.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    20000 + (h % 20000) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_host_of_node_lists() {
        let ok = |l: &str| first_host(l).unwrap();
        assert_eq!(ok("node07"), "node07");
        assert_eq!(ok("node[07-09,12],gpu1"), "node07");
        assert_eq!(ok("gpu1,node[1-2]"), "gpu1");
        assert_eq!(ok("rack1-n[003,005-006]"), "rack1-n003");
        assert_eq!(ok(" localhost "), "localhost");
        for bad in ["", "node[", "node[]", "node[a-b]", "node[1-2", "[1-2]x"] {
            assert!(first_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ports_differ_by_step_and_stay_in_range() {
        let a = port("4242", "0");
        assert_ne!(a, port("4242", "1"));
        assert_eq!(a, port("4242", "0"));
        for j in 0..1000 {
            assert!((20000..40000).contains(&port(&j.to_string(), "")));
        }
    }
}
