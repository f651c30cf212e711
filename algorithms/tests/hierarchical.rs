//! Every hierarchical plan (`hier`), verified for 1..=32 ranks over many node layouts (see
//! `layouts`), every root of broadcast and reduce up to 16 ranks (a sample beyond), 1 and 2
//! channels, out of place and in place; then 64 ranks as 8×8 and 128 as 16×8.

mod common;
mod layouts;

use common::{in_place_modes, roots, verify_modes};
use layouts::{inter_node_sends, layouts};
use oxccl_algorithms::verify::Report;
use oxccl_algorithms::{build, build_with_nodes, Algorithm, Collective, Nodes, Plan};

const HIER: Algorithm = Algorithm::Hierarchical;

fn plans(c: Collective, nodes: &Nodes, nchannels: u32) -> Vec<Plan> {
    let p = nodes.nranks();
    (0..p)
        .map(|r| build_with_nodes(HIER, c, p, r, nchannels, Some(nodes)).unwrap())
        .collect()
}

/// Verifies `c` over `nodes` with 1 and 2 channels; returns the 1-channel report.
fn check(c: Collective, name: &str, nodes: &Nodes) -> Report {
    let mut first = None;
    for nchannels in [1, 2] {
        let plans = plans(c, nodes, nchannels);
        let what = format!("hier {c:?} {name} ch={nchannels}");
        let reports = verify_modes(&plans, &what, in_place_modes(c), &[(2, 2)]);
        first.get_or_insert(reports[0].clone());
    }
    first.unwrap()
}

fn every_layout(c: impl Fn(u32) -> Vec<Collective>) {
    for p in 1..=32 {
        for (name, nodes) in layouts(p) {
            for c in c(p) {
                check(c, &name, &nodes);
            }
        }
    }
}

#[test]
fn all_reduce() {
    every_layout(|_| vec![Collective::AllReduce]);
}

#[test]
fn all_gather_and_reduce_scatter() {
    every_layout(|_| vec![Collective::AllGather, Collective::ReduceScatter]);
}

#[test]
fn all_to_all() {
    every_layout(|_| vec![Collective::AllToAll]);
}

#[test]
fn broadcast_and_reduce_every_root() {
    every_layout(|p| {
        roots(p)
            .into_iter()
            .flat_map(|root| [Collective::Broadcast { root }, Collective::Reduce { root }])
            .collect()
    });
}

#[test]
fn large_uniform_layouts() {
    for (n, l) in [(8, 8), (16, 8)] {
        for interleaved in [false, true] {
            let nodes = Nodes::uniform(n, l, interleaved);
            let name = format!("{n}x{l} interleaved={interleaved}");
            for c in [
                Collective::AllReduce,
                Collective::AllGather,
                Collective::ReduceScatter,
                Collective::AllToAll,
                Collective::Broadcast { root: 5 },
                Collective::Reduce { root: n * l - 1 },
            ] {
                check(c, &name, &nodes);
            }
        }
    }
}

#[test]
fn without_a_layout_it_is_flat() {
    for p in 1..=12 {
        for c in [
            Collective::AllReduce,
            Collective::AllGather,
            Collective::ReduceScatter,
            Collective::AllToAll,
        ] {
            let hier: Vec<Plan> = (0..p).map(|r| build(HIER, c, p, r, 1).unwrap()).collect();
            let one = plans(c, &Nodes::single(p), 1);
            assert_eq!(hier, one, "{c:?} p={p}");
            // The ring's messages, the same count.
            let ring: Vec<Plan> = (0..p)
                .map(|r| build(Algorithm::Ring, c, p, r, 1).unwrap())
                .collect();
            let sends = |plans: &[Plan]| -> usize {
                plans
                    .iter()
                    .map(|p| {
                        p.channels[0]
                            .iter()
                            .filter(|s| s.send_peer().is_some())
                            .count()
                    })
                    .sum()
            };
            assert_eq!(sends(&hier), sends(&ring), "{c:?} p={p}");
        }
    }
}

#[test]
fn all_reduce_crosses_the_network_less_than_the_ring() {
    // 2 nodes x 2 ranks: per round the ring sends 2(p-1) = 6 chunks of n/4 over each of
    // its 2 crossing edges; hier sends 2(N-1) = 2 chunks of n/4 per rank, 4 per node pair.
    for interleaved in [false, true] {
        let nodes = Nodes::uniform(2, 2, interleaved);
        let hier = plans(Collective::AllReduce, &nodes, 1);
        let ring: Vec<Plan> = (0..4)
            .map(|r| {
                build_with_nodes(
                    Algorithm::Ring,
                    Collective::AllReduce,
                    4,
                    r,
                    1,
                    Some(&nodes),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(inter_node_sends(&ring, &nodes), 12);
        assert_eq!(inter_node_sends(&hier, &nodes), 8);
    }
}

#[test]
fn names() {
    assert_eq!("hier".parse::<Algorithm>(), Ok(HIER));
    assert_eq!("Hierarchical".parse::<Algorithm>(), Ok(HIER));
    assert_eq!(HIER.to_string(), "hier");
    assert!(!HIER.supports(Collective::Gather { root: 0 }));
    assert!(HIER.supports(Collective::AllToAll));
}
