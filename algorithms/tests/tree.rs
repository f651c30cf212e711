//! Double binary tree all-reduce: the trees' shape and the "interior in at most one tree"
//! property for 1..=1000 ranks; every plan verified for 1..=64 ranks (out of place and in
//! place, 1 and 2 channels, 2 and 3 rounds), then for 128, 256 and 1000 ranks; bit-identical
//! results, the critical path and per-rank traffic; broken plans.

mod common;

use common::{ceil_log2, operands, options, run, verify_all};
use oxccl_algorithms::cost::traffic;
use oxccl_algorithms::tree::{depth, node};
use oxccl_algorithms::verify::{verify_with, Report, VerifyError, VerifyOptions, Wait};
use oxccl_algorithms::{build, Algorithm, Buf, Collective, Plan, Region, Shape, Step};

fn plans(p: u32, nchannels: u32) -> Vec<Plan> {
    common::plans(Algorithm::Tree, Collective::AllReduce, p, nchannels)
}

/// Verifies with every combination of `channels`, out of place and in place, and `rounds`;
/// returns the last report.
fn check(p: u32, channels: &[u32], rounds: &[u32]) -> Report {
    let fifos: Vec<(u32, u32)> = rounds.iter().map(|&rounds| (2, rounds)).collect();
    let (alg, c) = (Algorithm::Tree, Collective::AllReduce);
    let mut reports = verify_all(alg, c, p, channels, &[false, true], &fifos);
    reports.pop().unwrap()
}

#[test]
fn every_rank_is_interior_in_at_most_one_tree() {
    for p in 1..=1000u32 {
        let mut roots = [None; 2];
        for t in 0..2 {
            let nodes: Vec<_> = (0..p).map(|r| node(p, t, r)).collect();
            for (r, n) in nodes.iter().enumerate() {
                let r = r as u32;
                if n.children[1].is_some() {
                    assert!(n.children[0].is_some(), "p={p} t={t} r={r}");
                }
                for c in n.children() {
                    assert_ne!(c, r);
                    assert_eq!(nodes[c as usize].parent, Some(r), "p={p} t={t} {r}->{c}");
                }
                match n.parent {
                    Some(u) => assert!(nodes[u as usize].children().any(|c| c == r)),
                    None => {
                        assert_eq!(roots[t as usize], None, "p={p} t={t}: two roots");
                        roots[t as usize] = Some(r);
                    }
                }
            }
            // Every rank reaches the root within the depth: a tree, and shallow.
            let mut deepest = 0;
            for r in 0..p {
                let (mut at, mut hops) = (r, 0);
                while let Some(u) = nodes[at as usize].parent {
                    at = u;
                    hops += 1;
                    assert!(
                        hops <= depth(p),
                        "p={p} t={t} r={r}: deeper than {}",
                        depth(p)
                    );
                }
                assert_eq!(Some(at), roots[t as usize]);
                deepest = deepest.max(hops);
            }
            assert_eq!(deepest, depth(p), "p={p} t={t}");
            assert!(deepest <= ceil_log2(p) + 1);
            let interior = nodes.iter().filter(|n| n.is_interior()).count();
            assert_eq!(interior, p as usize / 2, "p={p} t={t}");
        }
        for r in 0..p {
            let both = (0..2).filter(|&t| node(p, t, r).is_interior()).count();
            assert!(both <= 1, "p={p}: rank {r} is interior in both trees");
        }
        if p > 1 {
            let [Some(a), Some(b)] = roots else {
                panic!("p={p}: {roots:?}")
            };
            assert_ne!(a, b, "p={p}: one root for both trees");
            assert!(node(p, 0, a).is_interior() && !node(p, 1, a).is_interior());
        }
    }
}

#[test]
fn plan_shape() {
    for p in [1, 2, 7, 8] {
        for r in 0..p {
            let plan = build(Algorithm::Tree, Collective::AllReduce, p, r, 3).unwrap();
            assert_eq!(
                (plan.splits, plan.scratch, plan.window),
                (2, Shape { blocks: 0 }, Shape { blocks: 0 })
            );
            assert_eq!((plan.input.blocks, plan.output.blocks), (1, 1));
            assert_eq!(plan.channels.len(), 3);
            assert!(plan.channels.iter().all(|c| *c == plan.channels[0]));
        }
    }
    for c in [
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::Broadcast { root: 0 },
        Collective::Reduce { root: 0 },
        Collective::AllToAll,
    ] {
        assert!(build(Algorithm::Tree, c, 4, 0, 1).is_err(), "{c:?}");
    }
}

#[test]
fn verifies_up_to_64_ranks() {
    for p in 1..=64 {
        let report = check(p, &[1, 2], &[2, 3]);
        // Two channels: every tree edge carries a chunk up and one down, per channel.
        let edges = 2 * u64::from(p - 1);
        assert_eq!(report.messages_per_round, 2 * 2 * edges, "p={p}");
        assert!(report.max_sends <= 4);
    }
}

#[test]
fn verifies_128_256_and_1000_ranks() {
    check(128, &[1, 2], &[2, 3]);
    check(256, &[1, 2], &[2, 3]);
    check(1000, &[1, 2], &[2, 3]);
}

#[test]
fn one_chunk_fifos_suffice() {
    for p in (1..=40).chain([64, 100]) {
        for in_place in [false, true] {
            verify_with(&plans(p, 1), &options(in_place, 3, 1))
                .unwrap_or_else(|e| panic!("p={p} in_place={in_place}: {e}"));
        }
    }
}

#[test]
fn results_are_bit_identical_and_the_critical_path_is_two_depths() {
    for p in (1..=70).chain([128, 255, 256, 257, 1000]) {
        let plans = plans(p, 1);
        let (outputs, finish) = run(&plans, false);
        for split in 0..2 {
            let first = &outputs[0][&(0, split)];
            let mut ranks = operands(first);
            ranks.sort_unstable();
            assert_eq!(ranks, (0..p).collect::<Vec<_>>(), "p={p} split={split}");
            for (r, out) in outputs.iter().enumerate() {
                assert_eq!(
                    &out[&(0, split)],
                    first,
                    "p={p}: rank {r} differs on split {split}"
                );
            }
            // Nesting: one level per tree level.
            let nesting = first
                .chars()
                .scan(0i32, |d, c| {
                    *d += i32::from(c == '(') - i32::from(c == ')');
                    Some(*d)
                })
                .max()
                .unwrap_or(0);
            assert!(nesting as u32 <= 2 * (depth(p) + 1), "p={p}: {nesting}");
        }
        // Up from a deepest leaf and back down to one: 2·⌊log2 p⌋ message latencies.
        assert_eq!(finish, u64::from(2 * depth(p)), "p={p}");
    }
    // Tree 0 of 4 ranks: root rank 3 (position 4) over rank 1 (position 2) over ranks 0, 2;
    // the pre-order fold `(x_self + left) + right`.
    let (outputs, _) = run(&plans(4, 1), false);
    assert_eq!(outputs[2][&(0, 0)], "(x3+((x1+x0)+x2))");
}

#[test]
fn per_rank_traffic() {
    let n: u64 = 4 * 1000 * 2; // bytes: two equal halves, two equal channel pieces
    for p in 2..=200u32 {
        for nchannels in [1, 2] {
            let plans = plans(p, nchannels);
            let (mut sent, mut reduced) = (0, 0);
            for plan in &plans {
                let t = traffic(plan, n, 4);
                assert!(t.messages <= 4, "p={p} r={}: {t:?}", plan.rank);
                assert!(t.latencies <= 3, "p={p} r={}: {t:?}", plan.rank);
                assert!(t.bytes_sent <= 2 * n && t.bytes_reduced <= n, "{t:?}");
                sent += t.bytes_sent;
                reduced += t.bytes_reduced;
            }
            let edges = u64::from(p - 1);
            // Every edge of each tree carries half the buffer up and down; every split is
            // reduced once per edge.
            assert_eq!(sent, 2 * 2 * edges * n / 2, "p={p}");
            assert_eq!(reduced, 2 * edges * n / 2, "p={p}");
        }
    }
    let single = build(Algorithm::Tree, Collective::AllReduce, 1, 0, 1).unwrap();
    assert_eq!(traffic(&single, n, 4).messages, 0);
}

#[test]
fn receiving_the_result_before_contributing_deadlocks() {
    // With 7 ranks, rank 6 is a leaf of both trees (positions 7 and 1): let it wait for
    // tree 0's result before it sends its contribution to it.
    let (p, r) = (7, 6);
    let parent = node(p, 0, r).parent.unwrap();
    assert!(!node(p, 0, r).is_interior() && !node(p, 1, r).is_interior());
    let mut plans = plans(p, 1);
    let steps = &mut plans[r as usize].channels[0];
    let recv = steps
        .iter()
        .position(|s| matches!(s, Step::Recv { dst, .. } if dst.split == 0))
        .unwrap();
    let moved = steps.remove(recv);
    steps.insert(0, moved);
    let err = verify_with(&plans, &VerifyOptions::default()).unwrap_err();
    let VerifyError::Deadlock { blocked, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        blocked
            .iter()
            .any(|b| b.at.rank == r && b.waiting == Wait::Message { from: parent }),
        "{err}"
    );
}

#[test]
fn sending_the_wrong_half_is_caught() {
    let mut plans = plans(8, 1);
    let step = plans[0].channels[0]
        .iter_mut()
        .find(|s| matches!(s, Step::Send { src, .. } if src.split == 0))
        .unwrap();
    let Step::Send { to, .. } = *step else {
        unreachable!()
    };
    *step = Step::Send {
        to,
        src: Region::new(Buf::Input, 0, 1),
    };
    let err = verify_with(&plans, &VerifyOptions::default()).unwrap_err();
    assert!(matches!(err, VerifyError::SplitMismatch { .. }), "{err}");
}

#[test]
fn folding_the_output_before_it_is_written_is_caught() {
    // Out of place, an interior node that starts its fold from the output reads garbage; in
    // place the same memory holds the input, and the plan is fine.
    let mut plans = plans(8, 1);
    let step = plans[1].channels[0]
        .iter_mut()
        .find(|s| matches!(s, Step::RecvReduce { .. }))
        .unwrap();
    let Step::RecvReduce { from, dst, .. } = *step else {
        unreachable!()
    };
    *step = Step::RecvReduce {
        from,
        src: dst,
        dst,
    };
    let err = verify_with(&plans, &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(err, VerifyError::ReadUninitialised { ref at, .. } if at.rank == 1),
        "{err}"
    );
    verify_with(&plans, &options(true, 2, 2)).unwrap();
}
