//! Bruck all-gather (out of place and in place) and all-to-all (out of place: in place the
//! engine gives all-to-all plans a private copy of the input) are verified for 1..=64 ranks
//! and 128, 256, with 1 and 2 channels, 2 and 3 rounds, FIFOs of two chunks and of one; for
//! 1000 ranks with one channel (all-to-all: two rounds, two-chunk FIFOs only, about 10 s);
//! then their cost and some broken plans.

use oxccl_algorithms::bruck::{all_to_all_scratch, step_count};
use oxccl_algorithms::cost::traffic;
mod common;

use common::{in_place_modes, options, verify_all};
use oxccl_algorithms::verify::{verify, verify_with, Report, VerifyError};
use oxccl_algorithms::{build, Algorithm, Buf, Collective, Plan, Region, Step};

fn plans(c: Collective, p: u32, nchannels: u32) -> Vec<Plan> {
    common::plans(Algorithm::Bruck, c, p, nchannels)
}

/// Verifies with 1 and 2 channels, 2 and 3 rounds, out of place (and in place for
/// all-gather), with FIFOs of two chunks and of one; returns the 1-channel report.
fn check(c: Collective, p: u32) -> Report {
    let fifos = [(2, 2), (1, 2), (2, 3), (1, 3)];
    verify_all(Algorithm::Bruck, c, p, &[1, 2], in_place_modes(c), &fifos).remove(0)
}

/// `Σ_{i<p} popcount(i)`: the all-to-all's messages per rank.
fn popcounts(p: u32) -> u64 {
    (0..p).map(|i| u64::from(i.count_ones())).sum()
}

#[test]
fn all_gather() {
    for p in (1..=64).chain([128, 256]) {
        let report = check(Collective::AllGather, p);
        assert_eq!(report.max_sends, p as usize - 1, "p={p}");
        assert_eq!(report.messages_per_round, u64::from(p * (p - 1)));
    }
}

#[test]
fn all_gather_1000_ranks() {
    // One channel, two rounds, out of place and in place, FIFOs of two chunks and of one.
    let plans = plans(Collective::AllGather, 1000, 1);
    for in_place in [false, true] {
        for fifo_chunks in [2, 1] {
            let options = options(in_place, 2, fifo_chunks);
            let report = verify_with(&plans, &options)
                .unwrap_or_else(|e| panic!("in_place={in_place} fifo={fifo_chunks}: {e}"));
            assert_eq!(report.messages_per_round, 1000 * 999);
        }
    }
}

#[test]
fn all_to_all() {
    for p in (1..=64).chain([128, 256]) {
        let report = check(Collective::AllToAll, p);
        assert_eq!(report.max_sends as u64, popcounts(p), "p={p}");
        assert_eq!(report.messages_per_round, u64::from(p) * popcounts(p));
    }
}

#[test]
fn all_to_all_1000_ranks() {
    // One channel, two rounds, out of place, FIFOs of two chunks: 5 million messages a round.
    let plans = plans(Collective::AllToAll, 1000, 1);
    let report = verify(&plans).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.messages_per_round, 1000 * popcounts(1000));
}

#[test]
fn shapes_and_scratch() {
    for p in (1..=64).chain([128, 256, 1000]) {
        for r in [0, p / 2, p - 1] {
            let ag = build(Algorithm::Bruck, Collective::AllGather, p, r, 2).unwrap();
            assert_eq!((ag.splits, ag.scratch.blocks), (1, 0));
            let a2a = build(Algorithm::Bruck, Collective::AllToAll, p, r, 2).unwrap();
            assert_eq!(a2a.splits, 1);
            assert_eq!(a2a.scratch.blocks, all_to_all_scratch(p));
            assert!(3 * a2a.scratch.blocks <= p, "p={p}: {}", a2a.scratch.blocks);
            assert_eq!(a2a.channels[0], a2a.channels[1]);
            // Every step exchanges with the ranks 2^k away, k rising.
            let mut ks: Vec<u32> = a2a.channels[0]
                .iter()
                .filter_map(|s| match *s {
                    Step::SendRecv { to, from, .. } => {
                        let d = (to + p - r) % p;
                        assert_eq!((r + p - from) % p, d);
                        assert!(d.is_power_of_two(), "{s}");
                        Some(d.trailing_zeros())
                    }
                    Step::Copy { .. } => None,
                    _ => panic!("unexpected {s}"),
                })
                .collect();
            assert!(ks.is_sorted());
            ks.dedup();
            assert_eq!(ks.len() as u32, step_count(p), "p={p}");
        }
    }
    // Where the count stands for a few sizes (it is the same on every rank).
    let got: Vec<u32> = [2, 3, 4, 8, 16, 64, 256].map(all_to_all_scratch).to_vec();
    assert_eq!(got, [0, 0, 1, 1, 5, 14, 52]);
}

#[test]
fn cost() {
    for p in (1..=64u32).chain([128, 256]) {
        for channels in [1, 2] {
            let n = u64::from(channels * 4) * 1000;
            for r in [0, p / 2, p - 1] {
                let ag = build(Algorithm::Bruck, Collective::AllGather, p, r, channels).unwrap();
                let t = traffic(&ag, n, 4);
                assert_eq!(t.messages, u64::from(p - 1), "p={p}");
                assert_eq!(t.bytes_sent, u64::from(p - 1) * n);
                assert_eq!(t.bytes_reduced, 0);
                // One α per SendRecv (each waits for its incoming block): ⌈log2 p⌉ only
                // while every step moves one block (p <= 3).
                assert_eq!(t.latencies, u64::from(p - 1));
                assert!(t.latencies >= u64::from(step_count(p)));
                assert_eq!(t.latencies == u64::from(step_count(p)), p <= 3);

                let a2a = build(Algorithm::Bruck, Collective::AllToAll, p, r, channels).unwrap();
                let t = traffic(&a2a, n, 4);
                assert_eq!(t.messages, popcounts(p), "p={p}");
                assert_eq!(t.bytes_sent, popcounts(p) * n);
                assert_eq!(t.latencies, popcounts(p));
                if p.is_power_of_two() {
                    // (p/2)·log2 p blocks sent.
                    assert_eq!(t.bytes_sent, u64::from(p / 2 * step_count(p)) * n);
                }
            }
        }
    }
}

#[test]
fn block_sent_to_the_wrong_rank_is_rejected() {
    // All-gather on 8 ranks: rank 3's first message of step 1 goes to 2 instead of 1.
    let mut plans = plans(Collective::AllGather, 8, 1);
    let steps = &mut plans[3].channels[0];
    let at = steps
        .iter()
        .position(|s| matches!(*s, Step::SendRecv { to: 1, .. }))
        .unwrap();
    let Step::SendRecv { to, .. } = &mut steps[at] else {
        unreachable!()
    };
    *to = 2;
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Deadlock { .. }
                | VerifyError::UnmatchedSend { .. }
                | VerifyError::SplitMismatch { .. }
                | VerifyError::WrongResult { .. }
        ),
        "{err}"
    );
}

#[test]
fn all_to_all_block_swapped_is_rejected() {
    // Rank 5 of 8 sends position 3's block where position 1's belongs: wrong results.
    let mut plans = plans(Collective::AllToAll, 8, 1);
    let steps = &mut plans[5].channels[0];
    let Step::SendRecv { src, .. } = &mut steps[1] else {
        panic!("{}", steps[1])
    };
    assert_eq!(*src, Region::new(Buf::Input, 6, 0));
    *src = Region::new(Buf::Input, 0, 0);
    let err = verify(&plans).unwrap_err();
    assert!(matches!(err, VerifyError::WrongResult { .. }), "{err}");
}

#[test]
fn all_to_all_in_place_is_not_safe() {
    // In the verifier's in-place model every output block is the input block of the same
    // index; Bruck's all-to-all overwrites blocks it still has to send, which is why the
    // engine gives it a private copy of the input.
    let plans = plans(Collective::AllToAll, 4, 1);
    assert!(verify_with(&plans, &options(true, 2, 2)).is_err());
}

#[test]
fn unsupported_collectives() {
    for c in [
        Collective::AllReduce,
        Collective::ReduceScatter,
        Collective::Broadcast { root: 0 },
        Collective::Reduce { root: 0 },
    ] {
        assert!(!Algorithm::Bruck.supports(c));
        assert!(build(Algorithm::Bruck, c, 4, 0, 1).is_err());
    }
}
