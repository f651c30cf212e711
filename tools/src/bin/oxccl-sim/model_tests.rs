//! The model against cost.rs, split sizes, the ring walk and chain depth.
use super::*;
use oxccl_algorithms::cost::{estimate, LinkCost};
use oxccl_algorithms::plan::split_range;

fn cluster(nodes: u32, r: u32, same: bool) -> Cluster {
    let intra = Link {
        alpha_s: 1e-6,
        beta_s_per_byte: 5e-11,
    };
    let inter = if same {
        intra
    } else {
        Link {
            alpha_s: 5e-6,
            beta_s_per_byte: 8e-11,
        }
    };
    Cluster {
        nodes,
        ranks_per_node: r,
        intra,
        inter,
        gamma_s_per_byte: 5e-11,
    }
}

#[test]
fn split_bytes_match_split_range() {
    for window in [0u64, 1, 2, 7, 8, 1000, 1023, 1 << 40] {
        for splits in [1u32, 2, 3, 7, 8, 1000, 100_000] {
            let got = split_bytes(window, splits, 4);
            for (s, b) in got.iter().enumerate() {
                let r = split_range(window, splits, s as u32);
                assert_eq!(*b, (r.end - r.start) * 4, "{window} {splits} {s}");
            }
        }
    }
}

#[test]
fn every_algorithm_agrees_with_cost_rs_on_uniform_links() {
    let link = LinkCost {
        alpha_s: 1e-6,
        beta_s_per_byte: 5e-11,
        gamma_s_per_byte: 5e-11,
    };
    let colls = [
        Collective::AllReduce,
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::AllToAll,
        Collective::Broadcast { root: 2 },
        Collective::Reduce { root: 1 },
    ];
    for p in [1u32, 2, 5, 8, 13] {
        let cl = cluster(1, p, true);
        for &alg in Algorithm::ALL {
            for c in colls {
                for r in 0..p {
                    let Ok(plan) = build_quietly(alg, c, p, r, 2) else {
                        continue;
                    };
                    for n in [0u64, 4, 12, 4800, 1 << 20] {
                        let want = estimate(&plan, n, 4, &link);
                        let got = rank_cost(&compile(&plan, &cl), n, 4, &cl).seconds();
                        assert!(
                            (got - want).abs() <= 1e-9 * want.max(1e-12),
                            "{alg} {c:?} p={p} r={r} n={n}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn uniform_links_agree_with_cost_rs() {
    let cl = cluster(2, 3, true);
    let link = LinkCost {
        alpha_s: 1e-6,
        beta_s_per_byte: 5e-11,
        gamma_s_per_byte: 5e-11,
    };
    let colls = [
        Collective::AllReduce,
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::AllToAll,
        Collective::Broadcast { root: 1 },
    ];
    for alg in [Algorithm::Ring, Algorithm::OneShot] {
        for c in colls {
            for r in 0..6 {
                let Ok(plan) = build(alg, c, 6, r, 2) else {
                    continue;
                };
                let want = estimate(&plan, 4800, 4, &link);
                let got = rank_cost(&compile(&plan, &cl), 4800, 4, &cl).seconds();
                assert!((got - want).abs() <= 1e-12 * want.max(1e-9), "{alg} {c:?}");
            }
        }
    }
}

#[test]
fn inter_node_messages_cost_more() {
    let cl = cluster(2, 4, false);
    let plan = build(Algorithm::Ring, Collective::AllGather, 8, 3, 1).unwrap();
    // Rank 3 sends to rank 4, on the other node: every α and β is inter-node.
    let c = rank_cost(&compile(&plan, &cl), 4000, 4, &cl);
    assert!((c.latency_s - 7.0 * 5e-6).abs() < 1e-15);
    assert!((c.transfer_s - 7.0 * 4000.0 * 8e-11).abs() < 1e-15);
    let plan = build(Algorithm::Ring, Collective::AllGather, 8, 0, 1).unwrap();
    let c = rank_cost(&compile(&plan, &cl), 4000, 4, &cl);
    assert!((c.latency_s - 7.0 * 1e-6).abs() < 1e-15);
}

#[test]
fn ring_paths_cross_nodes_once_per_node() {
    let cl = cluster(2, 4, false);
    // Rank 3, 7 latencies: hops 5->6->7->0->1->2->3->4, entering a node at 0 and 4.
    let want = 2.0 * 5e-6 + 5.0 * 1e-6;
    assert!((ring_path_s(3, 7, &cl) - want).abs() < 1e-15);
    // One node: every hop intra.
    let one = cluster(1, 8, false);
    assert!((ring_path_s(5, 14, &one) - 14.0 * 1e-6).abs() < 1e-15);
    // All-reduce on 128 x 8: 2(p-1) hops, 2·128 - 1 or 2·128 of them inter-node.
    let big = cluster(128, 8, false);
    let t = ring_path_s(0, 2046, &big);
    let inter = (t - 2046.0 * 1e-6) / 4e-6;
    assert!((inter - 255.0).abs() < 1.5, "{inter}");
}

#[test]
fn chain_depth_counts_node_crossings() {
    let cl = cluster(2, 4, false);
    // Broadcast from 0: hops 0..6, one crossing (3 -> 4).
    let d = depth_s(Algorithm::Ring, Collective::Broadcast { root: 0 }, &cl);
    assert!((d - (6.0 * 1e-6 + 5e-6)).abs() < 1e-15);
    // Reduce onto 0: from 1 around to 0, crossings 3 -> 4 and 7 -> 0.
    let d = depth_s(Algorithm::Ring, Collective::Reduce { root: 0 }, &cl);
    assert!((d - (5.0 * 1e-6 + 2.0 * 5e-6)).abs() < 1e-15);
}
