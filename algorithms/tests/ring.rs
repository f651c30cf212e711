//! Every ring plan, for every collective (and every root), is verified for 1..=64 ranks,
//! out of place and in place, with 1 and 2 channels; then for 100 and 128 ranks.

mod common;

use common::{in_place_modes, verify_all};
use oxccl_algorithms::verify::{verify_p2p, Report};
use oxccl_algorithms::{build, Algorithm, Collective};

/// Verifies out of place and in place (all-to-all out of place only: see `in_place_modes`),
/// with 1 and 2 channels; returns the 1-channel report.
fn check(c: Collective, p: u32) -> Report {
    verify_all(Algorithm::Ring, c, p, &[1, 2], in_place_modes(c), &[(2, 2)]).remove(0)
}

#[test]
fn all_reduce() {
    for p in 1..=64 {
        let report = check(Collective::AllReduce, p);
        let sends = 2 * (p as usize - 1);
        assert_eq!(report.max_sends, sends);
        assert_eq!(report.messages_per_round, (p * sends as u32) as u64);
    }
}

#[test]
fn all_gather() {
    for p in 1..=64 {
        let report = check(Collective::AllGather, p);
        assert_eq!(report.max_sends, p as usize - 1);
    }
}

#[test]
fn reduce_scatter() {
    for p in 1..=64 {
        let report = check(Collective::ReduceScatter, p);
        assert_eq!(report.max_sends, p as usize - 1);
    }
}

#[test]
fn all_to_all() {
    for p in 1..=64 {
        let report = check(Collective::AllToAll, p);
        assert_eq!(report.messages_per_round, u64::from(p * (p - 1)));
    }
}

#[test]
fn broadcast_every_root() {
    for p in 1..=64 {
        for root in 0..p {
            let report = check(Collective::Broadcast { root }, p);
            assert_eq!(report.messages_per_round, u64::from(p - 1));
        }
    }
}

#[test]
fn reduce_every_root() {
    for p in 1..=64 {
        for root in 0..p {
            let report = check(Collective::Reduce { root }, p);
            assert_eq!(report.messages_per_round, u64::from(p - 1));
        }
    }
}

#[test]
fn larger_rings() {
    for p in [100, 128] {
        for c in [
            Collective::AllReduce,
            Collective::AllGather,
            Collective::ReduceScatter,
            Collective::AllToAll,
        ] {
            check(c, p);
        }
        for root in [0, 1, p / 2, p - 1] {
            check(Collective::Broadcast { root }, p);
            check(Collective::Reduce { root }, p);
        }
    }
}

#[test]
fn send_recv_pairs() {
    for p in 2..=12 {
        for a in 0..p {
            for b in (0..p).filter(|&b| b != a) {
                for nchannels in [1, 2] {
                    let send = build(
                        Algorithm::Ring,
                        Collective::Send { peer: b },
                        p,
                        a,
                        nchannels,
                    );
                    let recv = build(
                        Algorithm::Ring,
                        Collective::Recv { peer: a },
                        p,
                        b,
                        nchannels,
                    );
                    let report = verify_p2p(&send.unwrap(), &recv.unwrap())
                        .unwrap_or_else(|e| panic!("{a}->{b} of {p}: {e}"));
                    assert_eq!(report.messages_per_round, u64::from(nchannels));
                }
            }
        }
    }
}
