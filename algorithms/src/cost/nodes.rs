//! The α–β–γ cost with two link classes: intra-node (α_i, β_i) and inter-node (α_e, β_e).
//!
//! Each message is charged to the class of the link it takes, by whether its peer is on the
//! sender's node ([`Nodes`]): its bytes to that class's β, and the α it adds on the critical
//! path (the rules of the parent module's doc) to that class's α. Reductions cost the intra
//! class's γ (they are local work), one-sided loads count as intra-node (load/store is one
//! host).
//!
//! - [`estimate_with_nodes`] costs one rank's plan: with one node it is exactly
//!   [`super::estimate`] on the intra-node link.
//! - [`estimate_op`] costs an operation from every rank's plan: the ranks of a node share
//!   its network link, so a rank's inter-node bytes are charged as its node's total
//!   (`β_e · Σ bytes sent off the node by the node's ranks`), and the op takes as long as
//!   its slowest rank. This is what tells a hierarchical all-reduce (every node sends
//!   `2(N−1)/N·n` off the node) from a flat ring (`2(p−1)/p·n` over the one crossing edge of
//!   each node), and a node-ordered ring from a rank-ordered one over an interleaved
//!   placement. With one node it is the slowest rank's [`super::estimate`].
//! - [`estimate_algorithm`] builds the plans ([`crate::build_with_nodes`]) and calls
//!   [`estimate_op`]: what a tuner compares across algorithms for a given layout.

use super::{walk, LinkCost, Traffic};
use crate::{build_with_nodes, Algorithm, Collective, Nodes, Plan, PlanError};

/// The links of a multi-node job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeLinks {
    /// Between ranks of one node (and the reduction's γ).
    pub intra: LinkCost,
    /// Between ranks on different nodes (γ unused).
    pub inter: LinkCost,
}

/// One plan's traffic split by link class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkTraffic {
    /// Messages to ranks of the same node, and every reduction.
    pub intra: Traffic,
    /// Messages to ranks of other nodes.
    pub inter: Traffic,
}

impl LinkTraffic {
    /// The time of this traffic on `links`, seconds, with `inter_bytes` charged to the
    /// inter-node β in place of [`LinkTraffic::inter`]'s own bytes (a node's total in
    /// [`estimate_op`]).
    fn seconds_with(&self, links: &NodeLinks, inter_bytes: u64) -> f64 {
        self.intra.seconds(&links.intra)
            + self.inter.latencies as f64 * links.inter.alpha_s
            + inter_bytes as f64 * links.inter.beta_s_per_byte
    }

    /// The time of this traffic on `links`, seconds.
    pub fn seconds(&self, links: &NodeLinks) -> f64 {
        self.seconds_with(links, self.inter.bytes_sent)
    }
}

/// [`super::traffic`] of `plan`, split by whether each message's peer is on the plan's rank's
/// node.
///
/// # Panics
/// If `nodes` has fewer ranks than the plan names.
pub fn traffic_by_link(
    plan: &Plan,
    nodes: &Nodes,
    bytes_per_rank: u64,
    elem_size: u32,
) -> LinkTraffic {
    let [intra, inter] = walk(plan, bytes_per_rank, elem_size, |peer| {
        usize::from(!nodes.same_node(plan.rank, peer))
    });
    LinkTraffic { intra, inter }
}

/// One rank's time on two link classes, seconds (see the module doc).
///
/// # Panics
/// If `nodes` has fewer ranks than the plan names.
pub fn estimate_with_nodes(
    plan: &Plan,
    nodes: &Nodes,
    bytes_per_rank: u64,
    elem_size: u32,
    links: &NodeLinks,
) -> f64 {
    traffic_by_link(plan, nodes, bytes_per_rank, elem_size).seconds(links)
}

/// An operation's time from every rank's plan (`plans[r]` is rank `r`'s), seconds: the
/// slowest rank, each rank's inter-node bytes charged as its node's total (see the module
/// doc). `0` for no plans.
///
/// # Panics
/// If `nodes` has fewer ranks than the plans name.
pub fn estimate_op(
    plans: &[Plan],
    nodes: &Nodes,
    bytes_per_rank: u64,
    elem_size: u32,
    links: &NodeLinks,
) -> f64 {
    let traffic: Vec<LinkTraffic> = plans
        .iter()
        .map(|plan| traffic_by_link(plan, nodes, bytes_per_rank, elem_size))
        .collect();
    let mut off_node = vec![0u64; nodes.nnodes() as usize];
    for (plan, t) in plans.iter().zip(&traffic) {
        off_node[nodes.node_of(plan.rank) as usize] += t.inter.bytes_sent;
    }
    plans
        .iter()
        .zip(&traffic)
        .map(|(plan, t)| t.seconds_with(links, off_node[nodes.node_of(plan.rank) as usize]))
        .fold(0.0, f64::max)
}

/// [`estimate_op`] of `algorithm`'s plans for `collective` over `nodes`
/// ([`crate::build_with_nodes`] on every rank, `nchannels` channels).
///
/// # Errors
/// What [`crate::build_with_nodes`] refuses.
pub fn estimate_algorithm(
    algorithm: Algorithm,
    collective: Collective,
    nodes: &Nodes,
    nchannels: u32,
    bytes_per_rank: u64,
    elem_size: u32,
    links: &NodeLinks,
) -> Result<f64, PlanError> {
    let p = nodes.nranks();
    let plans = (0..p)
        .map(|r| build_with_nodes(algorithm, collective, p, r, nchannels, Some(nodes)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(estimate_op(&plans, nodes, bytes_per_rank, elem_size, links))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use crate::cost::estimate;

    const INTRA: LinkCost = LinkCost {
        alpha_s: 1e-6,
        beta_s_per_byte: 1e-10,
        gamma_s_per_byte: 1e-11,
    };
    /// The network: 10× the latency and 10× the time per byte.
    const LINKS: NodeLinks = NodeLinks {
        intra: INTRA,
        inter: LinkCost {
            alpha_s: 1e-5,
            beta_s_per_byte: 1e-9,
            gamma_s_per_byte: 0.0,
        },
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
    }

    #[test]
    fn one_node_is_the_old_model() {
        for p in [1, 3, 4, 8] {
            let nodes = Nodes::single(p);
            for alg in Algorithm::ALL.iter().copied() {
                for c in [
                    Collective::AllReduce,
                    Collective::AllGather,
                    Collective::ReduceScatter,
                    Collective::AllToAll,
                    Collective::Broadcast { root: p / 2 },
                    Collective::Reduce { root: 0 },
                ] {
                    if !alg.supports(c) {
                        continue;
                    }
                    let plans: Vec<Plan> =
                        (0..p).map(|r| build(alg, c, p, r, 2).unwrap()).collect();
                    let n = u64::from(p) * 4096;
                    let old: Vec<f64> = plans.iter().map(|pl| estimate(pl, n, 4, &INTRA)).collect();
                    for (plan, &want) in plans.iter().zip(&old) {
                        let got = estimate_with_nodes(plan, &nodes, n, 4, &LINKS);
                        assert!(close(got, want), "{alg} {c:?} p={p}: {got} vs {want}");
                    }
                    let slowest = old.iter().copied().fold(0.0, f64::max);
                    let op = estimate_op(&plans, &nodes, n, 4, &LINKS);
                    assert!(close(op, slowest), "{alg} {c:?} p={p}");
                }
            }
        }
    }

    #[test]
    fn hierarchical_all_reduce_wins_on_two_nodes_of_two() {
        let n = 64 << 20;
        let ar = Collective::AllReduce;
        for interleaved in [false, true] {
            let nodes = Nodes::uniform(2, 2, interleaved);
            let cost = |alg| estimate_algorithm(alg, ar, &nodes, 2, n, 4, &LINKS).unwrap();
            let (hier, ring) = (cost(Algorithm::Hierarchical), cost(Algorithm::Ring));
            // 1.5n·β_e on each node's link against n·β_e.
            assert!(ring / hier > 1.3, "ring {ring} hier {hier}");
        }
        // Rank order over the interleaved placement crosses at every edge: worse still.
        let interleaved = Nodes::uniform(2, 2, true);
        let flat: Vec<Plan> = (0..4)
            .map(|r| build(Algorithm::Ring, ar, 4, r, 2).unwrap())
            .collect();
        let ordered = estimate_algorithm(Algorithm::Ring, ar, &interleaved, 2, n, 4, &LINKS);
        assert!(estimate_op(&flat, &interleaved, n, 4, &LINKS) > ordered.unwrap());
    }

    #[test]
    fn messages_go_to_their_class() {
        // Ring all-gather over [0, 0, 1, 1]: rank 1 sends its 3 blocks to rank 2 (off node).
        let nodes = Nodes::uniform(2, 2, false);
        let plan = build(Algorithm::Ring, Collective::AllGather, 4, 1, 1).unwrap();
        let t = traffic_by_link(&plan, &nodes, 1000, 4);
        assert_eq!((t.intra.messages, t.inter.messages), (0, 3));
        assert_eq!((t.inter.bytes_sent, t.inter.latencies), (3000, 3));
        let plan = build(Algorithm::Ring, Collective::AllGather, 4, 0, 1).unwrap();
        let t = traffic_by_link(&plan, &nodes, 1000, 4);
        assert_eq!((t.intra.bytes_sent, t.inter.bytes_sent), (3000, 0));
    }
}
