//! Gather and scatter: every algorithm that implements them (linear, binomial, load/store
//! one-shot) verified for 1..=64 ranks (every root up to 16 ranks, roots 0, 1, p/2 and p−1
//! above; out of place and in place; 1 and 2 channels; 2 and 3 rounds; FIFOs of two chunks and
//! of one), then for 128, 256 and 1000 ranks; registered inputs; per-rank traffic and the
//! binomial trees' pipelining; plans broken on purpose, which the verifier must reject.

mod common;

use common::{ceil_log2, options, roots, verify_all, verify_modes};
use oxccl_algorithms::binomial::{reduce_children, reduce_parent, subtree};
use oxccl_algorithms::cost::{received, traffic};
use oxccl_algorithms::verify::{verify, verify_with, VerifyError, VerifyOptions};
use oxccl_algorithms::{build, Algorithm, Buf, Collective, Plan, Region, Step};

const LINEAR: Algorithm = Algorithm::Linear;
const BINOMIAL: Algorithm = Algorithm::Binomial;
const LS: Algorithm = Algorithm::LoadStoreOneShot;

/// Gather and scatter with `root`.
fn both(root: u32) -> [Collective; 2] {
    [Collective::Gather { root }, Collective::Scatter { root }]
}

fn plans(alg: Algorithm, c: Collective, p: u32) -> Vec<Plan> {
    common::plans(alg, c, p, 1)
}

/// Messages of one round on one channel, over all ranks: one per non-root for linear, one
/// per block and level climbed (the size of every non-root's subtree) for binomial.
fn messages(alg: Algorithm, root: u32, p: u32) -> u64 {
    match alg {
        BINOMIAL => (0..p)
            .filter(|&r| r != root)
            .map(|r| subtree(p, root, r).len() as u64)
            .sum(),
        _ => u64::from(p - 1),
    }
}

/// Verifies the message-passing `alg` for both collectives and every root of [`roots`], out
/// of place and in place, with `channels` and each `(fifo_chunks, rounds)` of `fifos`.
fn check_messages(alg: Algorithm, p: u32, channels: &[u32], fifos: &[(u32, u32)]) {
    for root in roots(p) {
        for c in both(root) {
            let reports = verify_all(alg, c, p, channels, &[false, true], fifos);
            let per_channel = reports.len() / channels.len();
            for (i, report) in reports.iter().enumerate() {
                let nchannels = u64::from(channels[i / per_channel]);
                let want = messages(alg, root, p) * nchannels;
                assert_eq!(report.messages_per_round, want, "{alg} {c:?} p={p}");
            }
        }
    }
}

/// Load/store plans: one channel whatever is asked, `rounds` rounds (three use both window
/// halves, then one again), out of place and in place.
fn check_load_store(p: u32, rounds: u32) {
    for root in roots(p) {
        for c in both(root) {
            let plans = common::plans(LS, c, p, 4);
            assert!(plans.iter().all(|plan| plan.channels.len() == 1));
            let what = format!("{LS} {c:?} p={p}");
            for report in verify_modes(&plans, &what, &[false, true], &[(2, rounds)]) {
                assert_eq!(report.messages_per_round, 0);
            }
        }
    }
}

#[test]
fn linear_up_to_64_ranks() {
    for p in 1..=64 {
        check_messages(LINEAR, p, &[1, 2], &[(2, 2), (1, 2), (2, 3)]);
    }
}

#[test]
fn binomial_up_to_64_ranks() {
    for p in 1..=64 {
        check_messages(BINOMIAL, p, &[1, 2], &[(2, 2), (1, 2), (2, 3)]);
    }
}

#[test]
fn load_store_up_to_64_ranks() {
    for p in 1..=64 {
        check_load_store(p, 3);
    }
}

#[test]
fn every_algorithm_at_128_256_and_1000_ranks() {
    for p in [128, 256, 1000] {
        check_messages(LINEAR, p, &[1], &[(2, 2), (1, 2)]);
        check_messages(BINOMIAL, p, &[1], &[(2, 2), (1, 2)]);
        check_load_store(p, 2);
    }
}

#[test]
fn registered_inputs_out_of_place() {
    // Peers read the gather inputs and the scatter root's blocks where they lie instead of a
    // staged copy; in place the engine stages as usual.
    let options = VerifyOptions {
        registered_input: true,
        rounds: 3,
        ..VerifyOptions::default()
    };
    for p in 1..=24 {
        for root in roots(p) {
            for c in both(root) {
                verify_with(&plans(LS, c, p), &options)
                    .unwrap_or_else(|e| panic!("{c:?} p={p} registered: {e}"));
            }
        }
    }
}

#[test]
fn supported_by_linear_binomial_and_load_store_only() {
    for c in both(1) {
        for alg in Algorithm::ALL {
            let supported = matches!(*alg, LINEAR | BINOMIAL | LS);
            assert_eq!(alg.supports(c), supported, "{alg} {c:?}");
            assert_eq!(build(*alg, c, 3, 0, 1).is_ok(), supported, "{alg} {c:?}");
        }
    }
}

#[test]
fn shapes_and_scratch() {
    for p in [1, 2, 5, 8, 13] {
        for root in 0..p {
            for r in 0..p {
                let is_root = r == root;
                let n = |yes: bool| if yes { p } else { 0 };
                for alg in [LINEAR, BINOMIAL, LS] {
                    let g = build(alg, Collective::Gather { root }, p, r, 2).unwrap();
                    assert_eq!((g.input.blocks, g.output.blocks), (1, n(is_root)));
                    let s = build(alg, Collective::Scatter { root }, p, r, 2).unwrap();
                    assert_eq!((s.input.blocks, s.output.blocks), (n(is_root), 1));
                    for plan in [&g, &s] {
                        // A rank never names a buffer it does not have.
                        for region in plan.channels.iter().flatten().flat_map(|s| s.regions()) {
                            if region.buf != Buf::Window {
                                assert!(region.block < plan.shape(region.buf).blocks);
                            }
                        }
                        let scratch =
                            alg == BINOMIAL && !is_root && !reduce_children(p, root, r).is_empty();
                        assert_eq!(plan.scratch.blocks, u32::from(scratch), "{alg} p={p}");
                    }
                }
            }
        }
    }
}

#[test]
fn binomial_subtrees_partition_the_ranks() {
    for p in (1..=70).chain([128, 255, 256, 257, 1000]) {
        for root in [0, 1 % p, p / 2, p - 1] {
            assert_eq!(subtree(p, root, root).len() as u32, p);
            for r in 0..p {
                // A subtree is the rank and its children's subtrees, in order.
                let mut joined = vec![r];
                for c in reduce_children(p, root, r) {
                    assert_eq!(reduce_parent(p, root, c), Some(r));
                    joined.extend(subtree(p, root, c));
                }
                assert_eq!(joined, subtree(p, root, r), "p={p} root={root} r={r}");
            }
        }
    }
}

#[test]
fn per_rank_traffic() {
    let n: u64 = 4 * 1000;
    for p in 1..=100u32 {
        for root in [0, p / 2, p - 1] {
            let q = u64::from(p - 1);
            for alg in [LINEAR, BINOMIAL] {
                let gather = plans(alg, Collective::Gather { root }, p);
                let scatter = plans(alg, Collective::Scatter { root }, p);
                // The root receives p-1 blocks (gather) or sends them back to back (scatter).
                let g = &gather[root as usize];
                assert_eq!(traffic(g, n, 4).messages, 0);
                assert_eq!(received(g, n, 4), q * n, "{alg} p={p}");
                let t = traffic(&scatter[root as usize], n, 4);
                assert_eq!((t.messages, t.bytes_sent), (q, q * n), "{alg} p={p}");
                assert_eq!(t.latencies, u64::from(p > 1));
                let mut wire = 0;
                for r in (0..p).filter(|&r| r != root) {
                    // Linear: one block each; binomial: the rank's whole subtree, each block
                    // forwarded as its own message.
                    let size = match alg {
                        BINOMIAL => subtree(p, root, r).len() as u64,
                        _ => 1,
                    };
                    let t = traffic(&gather[r as usize], n, 4);
                    assert_eq!((t.messages, t.bytes_sent), (size, size * n));
                    assert_eq!(t.latencies, size, "{alg} p={p} r={r}");
                    assert_eq!(received(&gather[r as usize], n, 4), (size - 1) * n);
                    let t = traffic(&scatter[r as usize], n, 4);
                    assert_eq!((t.messages, t.bytes_sent), (size - 1, (size - 1) * n));
                    assert_eq!(received(&scatter[r as usize], n, 4), size * n);
                    wire += size;
                }
                assert_eq!(wire, messages(alg, root, p));
                if alg == BINOMIAL && p.is_power_of_two() {
                    // Every block climbs one level per set bit of its virtual rank.
                    assert_eq!(wire, u64::from(p / 2 * ceil_log2(p)), "p={p}");
                }
            }
        }
    }
}

#[test]
fn binomial_pipelines_through_the_tree() {
    // Every send occupies its rank for one unit and arrives one unit later (receives are
    // free). A scatter's root sends its p-1 blocks back to back, deepest subtree first, and
    // the forwarding keeps up: the last block, the root's own nearest child's, lands at p-1.
    // A gather finishes when the root's largest child has sent its whole subtree, one block
    // per unit: the forwarding below it keeps up too.
    for p in (1..=70).chain([100, 128, 1000]) {
        for root in [0, p / 2, p - 1] {
            let run = |c| common::run(&plans(BINOMIAL, c, p), true).1;
            let scatter = run(Collective::Scatter { root });
            assert_eq!(scatter, u64::from(p - 1), "scatter p={p} root={root}");
            let largest = reduce_children(p, root, root)
                .into_iter()
                .map(|c| subtree(p, root, c).len() as u64)
                .max()
                .unwrap_or(0);
            assert_eq!(run(Collective::Gather { root }), largest, "gather p={p}");
            if p.is_power_of_two() {
                assert_eq!(largest, u64::from(p / 2));
            }
        }
    }
}

/// The first step of `plan` (channel 0) that matches `f`, mutably.
fn find(plan: &mut Plan, f: impl Fn(&Step) -> bool) -> &mut Step {
    plan.channels[0].iter_mut().find(|s| f(s)).unwrap()
}

#[test]
fn gathered_block_in_the_wrong_place_is_caught() {
    // The root of a linear gather stores rank 3's block at index 4.
    let (p, root) = (6, 1);
    let mut plans = plans(LINEAR, Collective::Gather { root }, p);
    *find(&mut plans[root as usize], |s| s.recv_peer() == Some(3)) = Step::Recv {
        from: 3,
        dst: Region::new(Buf::Output, 4, 0),
    };
    let err = verify(&plans).unwrap_err();
    let VerifyError::WrongResult {
        rank,
        region,
        expected,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*rank, root, "{err}");
    assert!(matches!(region.block, 3 | 4), "{err}");
    assert_eq!(expected[0].rank, region.block, "{err}");
}

#[test]
fn scattered_block_for_another_rank_is_caught() {
    // The root sends rank 2 the block meant for rank 0: both have the right shapes and the
    // message flow is intact, only the contents are wrong.
    let (p, root) = (4, 3);
    for alg in [LINEAR, BINOMIAL] {
        let mut plans = plans(alg, Collective::Scatter { root }, p);
        let send = find(
            &mut plans[root as usize],
            |s| matches!(s, Step::Send { src, .. } if src.block == 2),
        );
        let Step::Send { to, .. } = *send else {
            panic!("{send}")
        };
        *send = Step::Send {
            to,
            src: Region::new(Buf::Input, 0, 0),
        };
        let err = verify(&plans).unwrap_err();
        let VerifyError::WrongResult {
            rank,
            expected,
            got: Some(got),
            ..
        } = &err
        else {
            panic!("{alg}: {err}")
        };
        assert_eq!(*rank, 2, "{alg}: {err}");
        assert_eq!((expected[0].rank, expected[0].block), (root, 2), "{err}");
        assert_eq!((got[0].rank, got[0].block), (root, 0), "{err}");
    }
}

#[test]
fn forwarding_in_the_wrong_order_is_caught() {
    // Rank 4 of a binomial gather rooted at 0 forwards rank 6's subtree before rank 5's block:
    // the root, which takes rank 5's block first, files the blocks under the wrong ranks.
    let mut plans = plans(BINOMIAL, Collective::Gather { root: 0 }, 8);
    assert_eq!(subtree(8, 0, 4), [4, 5, 6, 7]);
    plans[4].channels[0].swap(1, 3);
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(err, VerifyError::WrongResult { rank: 0, .. }),
        "{err}"
    );
    // Scatter: a rank that keeps the first block it receives keeps another rank's block.
    let err = verify(&plans_scatter_keeping_first(8, 0, 4)).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::WrongResult { .. } | VerifyError::Deadlock { .. }
        ),
        "{err}"
    );
}

/// Binomial scatter plans in which rank `r` receives its own block first instead of last.
fn plans_scatter_keeping_first(p: u32, root: u32, r: u32) -> Vec<Plan> {
    let mut plans = plans(BINOMIAL, Collective::Scatter { root }, p);
    let steps = &mut plans[r as usize].channels[0];
    let own = steps.pop().unwrap();
    assert!(matches!(own, Step::Recv { .. }), "{own}");
    steps.insert(0, own);
    plans
}

#[test]
fn a_forwarder_that_drops_a_block_is_caught() {
    let mut plans = plans(BINOMIAL, Collective::Gather { root: 2 }, 8);
    // Virtual rank 4 (rank 6) forwards three blocks; drop the last. Its parent waits for it,
    // and takes the next round's first block instead (or is left waiting).
    plans[6].channels[0].pop();
    let err = verify_with(&plans, &options(false, 2, 2)).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Deadlock { .. }
                | VerifyError::UnmatchedSend { .. }
                | VerifyError::SplitMismatch { .. }
        ),
        "{err}"
    );
}

#[test]
fn in_place_root_that_overwrites_its_own_block_is_caught() {
    // A gather root that lands rank 1's block in its own output block and moves it later is
    // fine out of place, but in place that block is the root's input, still to be copied.
    let (p, root) = (3, 0);
    let mut plans = plans(LINEAR, Collective::Gather { root }, p);
    let steps = &mut plans[root as usize].channels[0];
    let own = |b| Region::new(Buf::Output, b, 0);
    *steps = vec![
        Step::Recv {
            from: 1,
            dst: own(0),
        },
        Step::Copy {
            src: own(0),
            dst: own(1),
        },
        Step::Copy {
            src: Region::new(Buf::Input, 0, 0),
            dst: own(0),
        },
        Step::Recv {
            from: 2,
            dst: own(2),
        },
    ];
    verify(&plans).unwrap();
    let err = verify_with(&plans, &options(true, 2, 2)).unwrap_err();
    assert!(
        matches!(err, VerifyError::WrongResult { rank: 0, .. }),
        "{err}"
    );
}

#[test]
fn load_store_reads_of_the_wrong_window_block_are_caught() {
    // Scatter: rank 2 reads the root's window block of rank 1; gather: the root reads rank
    // 1's window into rank 2's output block. Both are one-sided, so no message reveals it.
    let (p, root) = (4, 0);
    let mut scatter = plans(LS, Collective::Scatter { root }, p);
    let Step::CopyFromPeer { src, .. } = find(&mut scatter[2], |s| s.is_one_sided()) else {
        panic!()
    };
    *src = Region::new(Buf::Window, 1, 0);
    let err = verify(&scatter).unwrap_err();
    assert!(
        matches!(err, VerifyError::WrongResult { rank: 2, .. }),
        "{err}"
    );
    let mut gather = plans(LS, Collective::Gather { root }, p);
    let read = find(&mut gather[0], |s| {
        matches!(s, Step::CopyFromPeer { peer: 1, .. })
    });
    let Step::CopyFromPeer { dst, .. } = read else {
        panic!("{read}")
    };
    *dst = Region::new(Buf::Output, 2, 0);
    let err = verify(&gather).unwrap_err();
    assert!(
        matches!(err, VerifyError::WrongResult { rank: 0, .. }),
        "{err}"
    );
}
