//! Node-contiguous ordering (`build_with_nodes`): the relabelled plans of the ring, the
//! trees, binomial, doubling, Bruck and linear, verified against the ordinary reference
//! semantics for 1..=32 ranks over many node layouts (see `layouts`), every collective each
//! supports and every root up to 16 ranks (a sample beyond); and the count of messages that
//! cross between nodes, the same for interleaved placements as for contiguous ones.

mod common;
mod layouts;

use common::{in_place_modes, roots, verify_modes};
use layouts::{inter_node_sends, layouts};
use oxccl_algorithms::{build, build_with_nodes, Algorithm, Collective, Nodes, Plan};

fn plans(alg: Algorithm, c: Collective, nodes: &Nodes, nchannels: u32) -> Vec<Plan> {
    let p = nodes.nranks();
    (0..p)
        .map(|r| build_with_nodes(alg, c, p, r, nchannels, Some(nodes)).unwrap())
        .collect()
}

/// Every collective `alg` supports on `p` ranks (all roots from `roots`).
fn collectives(alg: Algorithm, p: u32) -> Vec<Collective> {
    let mut out = vec![
        Collective::AllReduce,
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::AllToAll,
    ];
    for root in roots(p) {
        out.extend([
            Collective::Broadcast { root },
            Collective::Reduce { root },
            Collective::Gather { root },
            Collective::Scatter { root },
        ]);
    }
    out.retain(|&c| alg.supports(c));
    out
}

fn verify_ordered(alg: Algorithm, max_p: u32, channels: &[u32]) {
    for p in 1..=max_p {
        for (name, nodes) in layouts(p) {
            for c in collectives(alg, p) {
                for &nchannels in channels {
                    let plans = plans(alg, c, &nodes, nchannels);
                    let what = format!("{alg} {c:?} {name} ch={nchannels}");
                    verify_modes(&plans, &what, in_place_modes(c), &[(2, 2)]);
                }
            }
        }
    }
}

#[test]
fn ring() {
    verify_ordered(Algorithm::Ring, 32, &[1, 2]);
}

#[test]
fn trees_and_doubling() {
    for alg in [
        Algorithm::Tree,
        Algorithm::Binomial,
        Algorithm::RecursiveDoubling,
        Algorithm::HalvingDoubling,
    ] {
        verify_ordered(alg, 32, &[1]);
    }
}

#[test]
fn bruck_and_linear() {
    for alg in [Algorithm::Bruck, Algorithm::Linear] {
        verify_ordered(alg, 20, &[1]);
    }
}

#[test]
fn contiguous_layouts_change_nothing() {
    let nodes = Nodes::uniform(3, 4, false);
    for c in collectives(Algorithm::Ring, 12) {
        let flat: Vec<Plan> = (0..12)
            .map(|r| build(Algorithm::Ring, c, 12, r, 2).unwrap())
            .collect();
        assert_eq!(plans(Algorithm::Ring, c, &nodes, 2), flat, "{c:?}");
    }
}

#[test]
fn interleaved_rings_cross_the_network_like_contiguous_ones() {
    for (n, l) in [(2, 2), (2, 4), (4, 2), (4, 4), (3, 5)] {
        let p = n * l;
        let contiguous = Nodes::uniform(n, l, false);
        let interleaved = Nodes::uniform(n, l, true);
        for c in [
            Collective::AllReduce,
            Collective::AllGather,
            Collective::ReduceScatter,
            Collective::Broadcast { root: 1 },
            Collective::Reduce { root: p - 1 },
        ] {
            let ordered =
                inter_node_sends(&plans(Algorithm::Ring, c, &interleaved, 1), &interleaved);
            let baseline =
                inter_node_sends(&plans(Algorithm::Ring, c, &contiguous, 1), &contiguous);
            if matches!(c, Collective::Broadcast { .. } | Collective::Reduce { .. }) {
                // An open chain: at most one crossing per node boundary, fewer when the
                // root's position in the order saves the wrap-around.
                assert!(
                    ordered <= n as usize && baseline <= n as usize,
                    "{c:?} {n}x{l}"
                );
            } else {
                assert_eq!(ordered, baseline, "{c:?} {n}x{l}");
            }
            // Without ordering, the interleaved ring crosses at every edge.
            let flat: Vec<Plan> = (0..p)
                .map(|r| build(Algorithm::Ring, c, p, r, 1).unwrap())
                .collect();
            assert!(
                inter_node_sends(&flat, &interleaved) > ordered,
                "{c:?} {n}x{l}"
            );
        }
        // All-reduce: each of the n crossing edges carries 2(p-1) chunks per round.
        let ar = plans(Algorithm::Ring, Collective::AllReduce, &interleaved, 1);
        assert_eq!(
            inter_node_sends(&ar, &interleaved),
            (n * 2 * (p - 1)) as usize
        );
    }
    // The example: 4 ranks on nodes [0, 1, 0, 1].
    let nodes = Nodes::new(vec![0, 1, 0, 1]).unwrap();
    let flat: Vec<Plan> = (0..4)
        .map(|r| build(Algorithm::Ring, Collective::AllGather, 4, r, 1).unwrap())
        .collect();
    let ordered = plans(Algorithm::Ring, Collective::AllGather, &nodes, 1);
    assert_eq!(
        (
            inter_node_sends(&flat, &nodes),
            inter_node_sends(&ordered, &nodes)
        ),
        (12, 6)
    );
}
