//! Linear all-to-all is verified for 1..=64 ranks and 128, 256 and 1000, out of place and in
//! place, with 1 and 2 channels, 2 and 3 rounds, and FIFOs of two chunks and of one; then its
//! cost and a broken plan.

use oxccl_algorithms::cost::traffic;
mod common;

use common::{options, verify_all};
use oxccl_algorithms::verify::{verify, verify_with, Report, VerifyError};
use oxccl_algorithms::{build, Algorithm, Collective, Plan, Step};

fn plans(p: u32, nchannels: u32) -> Vec<Plan> {
    common::plans(Algorithm::Linear, Collective::AllToAll, p, nchannels)
}

/// Every combination of channels (1, 2), in place or not, rounds (2, 3) and FIFO depth
/// (2, 1); returns the first report.
fn check(p: u32) -> Report {
    let fifos = [(2, 2), (1, 2), (2, 3), (1, 3)];
    verify_all(
        Algorithm::Linear,
        Collective::AllToAll,
        p,
        &[1, 2],
        &[false, true],
        &fifos,
    )
    .remove(0)
}

#[test]
fn all_to_all() {
    for p in (1..=64).chain([128, 256]) {
        let report = check(p);
        assert_eq!(report.max_sends, p as usize - 1);
        assert_eq!(report.max_steps, 2 * p as usize - 1);
        assert_eq!(report.messages_per_round, u64::from(p * (p - 1)));
    }
}

#[test]
fn all_to_all_1000_ranks() {
    // One channel, two rounds, both FIFO depths, out of place and in place.
    let plans = plans(1000, 1);
    for in_place in [false, true] {
        for fifo in [2, 1] {
            let report = verify_with(&plans, &options(in_place, 2, fifo))
                .unwrap_or_else(|e| panic!("in_place={in_place} fifo={fifo}: {e}"));
            assert_eq!(report.messages_per_round, 1000 * 999);
        }
    }
}

#[test]
fn cost() {
    for p in (1..=64u32).chain([128, 256]) {
        for channels in [1, 2] {
            let n = u64::from(channels * 4) * 1000;
            for r in [0, p / 2, p - 1] {
                let plan = build(Algorithm::Linear, Collective::AllToAll, p, r, channels);
                let t = traffic(&plan.unwrap(), n, 4);
                // The sends are issued back to back: one latency.
                assert_eq!(t.latencies, u64::from(p > 1), "p={p}");
                assert_eq!(t.messages, u64::from(p - 1));
                assert_eq!(t.bytes_sent, u64::from(p - 1) * n);
                assert_eq!(t.bytes_reduced, 0);
                let ring = build(Algorithm::Ring, Collective::AllToAll, p, r, channels);
                let ring = traffic(&ring.unwrap(), n, 4);
                assert_eq!(ring.bytes_sent, t.bytes_sent);
                assert_eq!(ring.latencies, u64::from(p - 1));
            }
        }
    }
}

#[test]
fn block_sent_to_the_wrong_rank_is_rejected() {
    // Rank 2 of 6 sends its block for rank 3 to rank 4 instead.
    let mut plans = plans(6, 1);
    let steps = &mut plans[2].channels[0];
    let Step::Send { to, .. } = &mut steps[1] else {
        panic!("{}", steps[1])
    };
    assert_eq!(*to, 3);
    *to = 4;
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Deadlock { .. }
                | VerifyError::UnmatchedSend { .. }
                | VerifyError::WrongResult { .. }
        ),
        "{err}"
    );
}

#[test]
fn dropped_receive_is_an_unmatched_send() {
    let mut plans = plans(5, 1);
    plans[0].channels[0].pop();
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(err, VerifyError::UnmatchedSend { to: 0, .. }),
        "{err}"
    );
}

#[test]
fn supports_only_all_to_all() {
    for c in [
        Collective::AllReduce,
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::Broadcast { root: 0 },
        Collective::Reduce { root: 0 },
    ] {
        assert!(!Algorithm::Linear.supports(c));
        assert!(build(Algorithm::Linear, c, 4, 0, 1).is_err());
    }
}
