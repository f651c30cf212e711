//! Binomial broadcast and reduce: every plan verified for 1..=64 ranks (every root up to 16
//! ranks, roots 0, 1, p/2 and p−1 above; out of place and in place, 1 and 2 channels, 2 and
//! 3 rounds), then for 128, 256 and 1000 ranks; the trees' shape, the reduce's fold order,
//! the `⌈log2 p⌉` critical path and per-rank traffic; broken plans.

use oxccl_algorithms::binomial::{
    broadcast_children, broadcast_parent, reduce_children, reduce_parent,
};
mod common;

use common::{ceil_log2, operands, options, roots, verify_modes};
use oxccl_algorithms::cost::traffic;
use oxccl_algorithms::verify::{verify_with, VerifyError, VerifyOptions, Wait};
use oxccl_algorithms::{build, Algorithm, Buf, Collective, Plan, Region, Step};

fn plans(c: Collective, p: u32, nchannels: u32) -> Vec<Plan> {
    common::plans(Algorithm::Binomial, c, p, nchannels)
}

/// Verifies with every combination of `channels`, out of place and in place, and `rounds`.
fn check(c: Collective, p: u32, channels: &[u32], rounds: &[u32]) {
    let fifos: Vec<(u32, u32)> = rounds.iter().map(|&rounds| (2, rounds)).collect();
    for &nchannels in channels {
        let plans = plans(c, p, nchannels);
        let what = format!("{c:?} p={p} ch={nchannels}");
        for report in verify_modes(&plans, &what, &[false, true], &fifos) {
            assert_eq!(report.messages_per_round, u64::from((p - 1) * nchannels));
            assert!(report.max_sends <= ceil_log2(p) as usize);
        }
    }
}

#[test]
fn broadcast_up_to_64_ranks() {
    for p in 1..=64 {
        for root in roots(p) {
            check(Collective::Broadcast { root }, p, &[1, 2], &[2, 3]);
        }
    }
}

#[test]
fn reduce_up_to_64_ranks() {
    for p in 1..=64 {
        for root in roots(p) {
            check(Collective::Reduce { root }, p, &[1, 2], &[2, 3]);
        }
    }
}

#[test]
fn broadcast_and_reduce_at_128_256_and_1000_ranks() {
    for p in [128, 256, 1000] {
        for root in roots(p) {
            check(Collective::Broadcast { root }, p, &[1, 2], &[2, 3]);
            check(Collective::Reduce { root }, p, &[1, 2], &[2, 3]);
        }
    }
}

#[test]
fn one_chunk_fifos_suffice() {
    for p in (1..=33).chain([100]) {
        for root in [0, p / 3, p - 1] {
            for c in [Collective::Broadcast { root }, Collective::Reduce { root }] {
                for in_place in [false, true] {
                    verify_with(&plans(c, p, 1), &options(in_place, 3, 1))
                        .unwrap_or_else(|e| panic!("{c:?} p={p} in_place={in_place}: {e}"));
                }
            }
        }
    }
}

/// A tree's parent and children functions: `(nranks, root, rank)`.
type Tree = (
    fn(u32, u32, u32) -> Option<u32>,
    fn(u32, u32, u32) -> Vec<u32>,
);

#[test]
fn trees_are_binomial() {
    for p in (1..=70).chain([128, 255, 256, 257, 1000]) {
        let k = ceil_log2(p);
        for root in [0, 1 % p, p / 2, p - 1] {
            let trees: [Tree; 2] = [
                (broadcast_parent, broadcast_children),
                (reduce_parent, reduce_children),
            ];
            for (parent_of, children_of) in trees {
                let parent = |r| parent_of(p, root, r);
                let children = |r| children_of(p, root, r);
                assert_eq!(parent(root), None);
                assert_eq!(children(root).len() as u32, k, "p={p} root={root}");
                for r in 0..p {
                    let kids = children(r);
                    assert!(kids.len() as u32 <= k);
                    for c in kids {
                        assert_eq!(parent(c), Some(r), "p={p} root={root} {r}->{c}");
                    }
                    let (mut at, mut hops) = (r, 0);
                    while let Some(u) = parent(at) {
                        assert!(children(u).contains(&at));
                        at = u;
                        hops += 1;
                    }
                    assert_eq!(at, root);
                    assert!(hops <= k, "p={p} root={root} r={r}: {hops} hops");
                }
            }
        }
    }
}

#[test]
fn plan_shapes() {
    for p in [1, 2, 5, 8] {
        for root in 0..p {
            for r in 0..p {
                let b = build(Algorithm::Binomial, Collective::Broadcast { root }, p, r, 2);
                let b = b.unwrap();
                assert_eq!((b.splits, b.scratch.blocks), (1, 0));
                assert_eq!(b.input.blocks, u32::from(r == root));
                assert_eq!(b.channels.len(), 2);
                assert_eq!(b.channels[0], b.channels[1]);
                let c = build(Algorithm::Binomial, Collective::Reduce { root }, p, r, 1);
                let c = c.unwrap();
                assert_eq!(c.output.blocks, u32::from(r == root));
                // Scratch only where a non-root folds two or more children.
                let folds = r != root && reduce_children(p, root, r).len() >= 2;
                assert_eq!(
                    c.scratch.blocks,
                    u32::from(folds),
                    "p={p} root={root} r={r}"
                );
                // A non-root never names an output it does not have.
                let names_output = c.channels[0]
                    .iter()
                    .flat_map(|s| s.regions())
                    .any(|region| region.buf == Buf::Output);
                assert_eq!(names_output, r == root);
            }
        }
    }
    for c in [
        Collective::AllReduce,
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::AllToAll,
    ] {
        assert!(build(Algorithm::Binomial, c, 4, 0, 1).is_err(), "{c:?}");
    }
}

/// [`common::run`] with every send keeping its rank busy; every rank's output (block 0,
/// split 0) and the finish time.
fn run(plans: &[Plan]) -> (Vec<Option<String>>, u64) {
    let (outputs, finish) = common::run(plans, true);
    let outputs = outputs
        .into_iter()
        .map(|mut out| out.remove(&(0, 0)))
        .collect();
    (outputs, finish)
}

#[test]
fn reduce_folds_in_virtual_rank_order_pairwise() {
    let (out, _) = run(&plans(Collective::Reduce { root: 0 }, 8, 1));
    assert_eq!(
        out[0].as_deref(),
        Some("(((x0+x1)+(x2+x3))+((x4+x5)+(x6+x7)))")
    );
    let (out, _) = run(&plans(Collective::Reduce { root: 4 }, 6, 1));
    assert_eq!(out[4].as_deref(), Some("(((x4+x5)+(x0+x1))+(x2+x3))"));
    for p in (1..=40).chain([100, 1000]) {
        for root in [0, p / 2, p - 1] {
            let (out, _) = run(&plans(Collective::Reduce { root }, p, 1));
            let result = out[root as usize].clone().unwrap();
            let order = operands(&result);
            let virtual_order: Vec<u32> = (0..p).map(|v| (root + v) % p).collect();
            assert_eq!(order, virtual_order, "p={p} root={root}");
            let nesting = result
                .chars()
                .scan(0i32, |d, c| {
                    *d += i32::from(c == '(') - i32::from(c == ')');
                    Some(*d)
                })
                .max()
                .unwrap();
            assert!(nesting as u32 <= ceil_log2(p), "p={p}: {result}");
            for (r, o) in out.iter().enumerate() {
                assert_eq!(o.is_some(), r as u32 == root);
            }
        }
    }
}

#[test]
fn critical_path_is_ceil_log2_sends() {
    for p in (1..=70).chain([100, 128, 1000]) {
        for root in [0, p / 2, p - 1] {
            let (out, finish) = run(&plans(Collective::Broadcast { root }, p, 1));
            assert_eq!(
                finish,
                u64::from(ceil_log2(p)),
                "broadcast p={p} root={root}"
            );
            let want = format!("x{root}");
            assert!(out.iter().all(|o| o.as_deref() == Some(&want[..])));
            let (_, finish) = run(&plans(Collective::Reduce { root }, p, 1));
            // Truncated subtrees finish early (with 3 ranks both children are leaves); only
            // the receiver's link, which this model leaves free, would serialise them.
            assert!(
                finish <= u64::from(ceil_log2(p)),
                "reduce p={p} root={root}"
            );
            if p.is_power_of_two() {
                assert_eq!(finish, u64::from(ceil_log2(p)), "reduce p={p} root={root}");
            }
        }
    }
}

#[test]
fn per_rank_traffic() {
    let n: u64 = 4 * 1000;
    for p in 1..=100u32 {
        let k = u64::from(ceil_log2(p));
        for root in [0, p / 2, p - 1] {
            for nchannels in [1, 2] {
                let bcast = plans(Collective::Broadcast { root }, p, nchannels);
                let reduce = plans(Collective::Reduce { root }, p, nchannels);
                let t = traffic(&bcast[root as usize], n, 4);
                assert_eq!(t.messages, k, "p={p}");
                assert_eq!(t.bytes_sent, k * n);
                // Sends issued back to back: one latency.
                assert_eq!(t.latencies, u64::from(p > 1));
                let t = traffic(&reduce[root as usize], n, 4);
                assert_eq!((t.messages, t.bytes_sent), (0, 0));
                assert_eq!(t.bytes_reduced, k * n);
                let (mut sent, mut reduced) = (0, 0);
                for r in (0..p).filter(|&r| r != root) {
                    let t = traffic(&reduce[r as usize], n, 4);
                    assert_eq!((t.messages, t.bytes_sent), (1, n));
                    sent += t.bytes_sent;
                    reduced += t.bytes_reduced;
                    let t = traffic(&bcast[r as usize], n, 4);
                    let kids = broadcast_children(p, root, r).len() as u64;
                    assert_eq!((t.messages, t.bytes_sent), (kids, kids * n));
                    assert_eq!(t.bytes_reduced, 0);
                }
                // Every rank's contribution crosses one edge and is folded in once.
                assert_eq!(sent, u64::from(p - 1) * n);
                assert_eq!(reduced + k * n, u64::from(p - 1) * n);
            }
        }
    }
}

#[test]
fn dropped_forwarder_deadlocks_a_broadcast() {
    let (p, root) = (8, 3);
    let mut plans = plans(Collective::Broadcast { root }, p, 1);
    // Virtual rank 1 (rank 4) forwards to virtual ranks 3 and 5 (ranks 6 and 0).
    assert_eq!(broadcast_children(p, root, 4), [6, 0]);
    plans[4].channels[0].clear();
    let err = verify_with(&plans, &VerifyOptions::default()).unwrap_err();
    let VerifyError::Deadlock { blocked, .. } = &err else {
        panic!("{err}")
    };
    let mut waiting: Vec<_> = blocked.iter().map(|b| (b.at.rank, b.waiting)).collect();
    waiting.sort_by_key(|w| w.0);
    assert!(waiting.contains(&(6, Wait::Message { from: 4 })), "{err}");
    assert!(waiting.contains(&(0, Wait::Message { from: 4 })), "{err}");
}

#[test]
fn restarting_the_fold_loses_a_subtree() {
    // The root folds its second child into its input instead of the accumulator: the first
    // child's subtree is lost (out of place; in place the input is the accumulator).
    let (p, root) = (8, 0);
    let mut plans = plans(Collective::Reduce { root }, p, 1);
    let step = &mut plans[0].channels[0][1];
    let Step::RecvReduce { from, dst, .. } = *step else {
        panic!("{step}")
    };
    *step = Step::RecvReduce {
        from,
        src: Region::new(Buf::Input, 0, 0),
        dst,
    };
    let err = verify_with(&plans, &VerifyOptions::default()).unwrap_err();
    let VerifyError::WrongResult {
        rank,
        got: Some(got),
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*rank, got.len()), (0, 7), "{err}");
    verify_with(&plans, &options(true, 2, 2)).unwrap();
}

#[test]
fn counting_a_child_twice_is_caught() {
    // A leaf of the reduce tree sends to its parent twice: its parent folds it twice.
    let (p, root) = (4, 0);
    let mut plans = plans(Collective::Reduce { root }, p, 1);
    // Rank 2 folds its child, rank 3, then sends to the root: make it fold rank 3 in twice.
    assert_eq!(reduce_children(p, root, 2), [3]);
    let leaf = plans[3].channels[0][0];
    plans[3].channels[0].push(leaf);
    let Step::RecvReduceSend { from, to, src } = plans[2].channels[0][0] else {
        panic!("{:?}", plans[2].channels[0])
    };
    plans[2].channels[0] = vec![
        Step::RecvReduce {
            from,
            src,
            dst: Region::new(Buf::Scratch, 0, 0),
        },
        Step::RecvReduceSend {
            from,
            to,
            src: Region::new(Buf::Scratch, 0, 0),
        },
    ];
    plans[2].scratch.blocks = 1;
    let err = verify_with(&plans, &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(err, VerifyError::DoubleContribution { ref at, contribution } if at.rank == 2 && contribution.rank == 3),
        "{err}"
    );
}
