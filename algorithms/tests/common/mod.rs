//! Helpers shared by the integration tests: building every rank's plan and verifying it over
//! combinations of channels, in-place modes, FIFO depths and rounds.
//!
//! Each test file compiles this module on its own, so an item that some files do not use is
//! marked `#[allow(dead_code)]`.

use oxccl_algorithms::verify::{verify_with, Report, VerifyOptions};
use oxccl_algorithms::{build, Algorithm, Collective, Plan, Step};

/// Every rank's plan of `alg`'s `c` on `p` ranks, asking for `nchannels` channels.
pub fn plans(alg: Algorithm, c: Collective, p: u32, nchannels: u32) -> Vec<Plan> {
    (0..p)
        .map(|r| build(alg, c, p, r, nchannels).unwrap())
        .collect()
}

/// The default options but for these three.
pub fn options(in_place: bool, rounds: u32, fifo_chunks: u32) -> VerifyOptions {
    VerifyOptions {
        in_place,
        rounds,
        fifo_chunks,
        ..VerifyOptions::default()
    }
}

/// Verifies `plans` in each mode of `in_place` with each `(fifo_chunks, rounds)` of `fifos`,
/// in that nesting order; the first failure panics with `what`, the options and the error.
/// Returns the reports in that order.
pub fn verify_modes(
    plans: &[Plan],
    what: &str,
    in_place: &[bool],
    fifos: &[(u32, u32)],
) -> Vec<Report> {
    let mut reports = Vec::new();
    for &in_place in in_place {
        for &(fifo_chunks, rounds) in fifos {
            let options = options(in_place, rounds, fifo_chunks);
            let report =
                verify_with(plans, &options).unwrap_or_else(|e| panic!("{what} {options:?}: {e}"));
            reports.push(report);
        }
    }
    reports
}

/// Builds `alg`'s `c` plans on `p` ranks with each of `channels` and verifies them with
/// [`verify_modes`], asserting that every report counts those channels. Returns every
/// report, channels outermost.
// Not every test file sweeps channels this way (some assert per channel count themselves).
#[allow(dead_code)]
pub fn verify_all(
    alg: Algorithm,
    c: Collective,
    p: u32,
    channels: &[u32],
    in_place: &[bool],
    fifos: &[(u32, u32)],
) -> Vec<Report> {
    let mut reports = Vec::new();
    for &nchannels in channels {
        let plans = plans(alg, c, p, nchannels);
        let what = format!("{alg} {c:?} p={p} ch={nchannels}");
        for report in verify_modes(&plans, &what, in_place, fifos) {
            assert_eq!(report.nchannels, nchannels);
            reports.push(report);
        }
    }
    reports
}

/// Out of place and in place, except all-to-all: in place, the ring's and Bruck's
/// all-to-all would overwrite blocks they have yet to send, so the engine gives them a
/// private copy of the input instead (load/store plans need none).
// Only the files that verify all-to-all next to other collectives use it.
#[allow(dead_code)]
pub fn in_place_modes(c: Collective) -> &'static [bool] {
    if c == Collective::AllToAll {
        &[false]
    } else {
        &[false, true]
    }
}

/// Every root up to 16 ranks, then 0, 1, p/2, p−1 (keeps the tests quick).
// Only the files with rooted collectives use it.
#[allow(dead_code)]
pub fn roots(p: u32) -> Vec<u32> {
    if p <= 16 {
        (0..p).collect()
    } else {
        let mut roots = vec![0, 1, p / 2, p - 1];
        roots.dedup();
        roots
    }
}

/// `⌈log2 p⌉`.
// Only the tree-shaped algorithms' files use it.
#[allow(dead_code)]
pub fn ceil_log2(p: u32) -> u32 {
    p.next_power_of_two().trailing_zeros()
}

/// Channel 0's steps.
// Only the files that break plans through channel 0 this way use it.
#[allow(dead_code)]
pub fn steps(plan: &mut Plan) -> &mut Vec<Step> {
    &mut plan.channels[0]
}
