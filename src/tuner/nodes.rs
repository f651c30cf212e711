//! Multi-node jobs: whether the hierarchical plans beat the flat choice, predicted by the
//! α–β–γ model with two link classes (`oxccl_algorithms::cost::estimate_op`): inside a node
//! the shared-memory link, between nodes the TCP link (the tuning file's measured α and β
//! for `shm` and `tcp` when it has them, else the built-in ones of `table.rs`).
//!
//! The model charges a rank's off-node bytes as its whole node's (the node's ranks share its
//! network link), which is what separates a hierarchical all-reduce (each node sends
//! `2(N−1)/N·n` off the node) from a flat ring over the node-contiguous order. It is
//! evaluated once per communicator, for every collective the hierarchical plans support and
//! every power-of-two block size, so an op only looks up a bit.

use super::{builtin, Choice, CollectiveKind, Decisions, LinkClass, TuningFile};
use crate::config::Config;
use crate::types::DataType;
use oxccl_algorithms::cost::{estimate_op, LinkCost, NodeLinks};
use oxccl_algorithms::{build_with_nodes, Algorithm, Collective, Nodes, Plan};

/// Block sizes 2^0 .. 2^BUCKETS-1 bytes are predicted; larger ones take the last bucket.
const BUCKETS: usize = 34;

/// Per collective, the block sizes at which the hierarchical plans are predicted faster.
#[derive(Debug, Clone)]
pub struct NodePlanner {
    /// Bit `k` set: hierarchical wins at blocks of `2^k` bytes.
    wins: Vec<(CollectiveKind, u64)>,
    links: NodeLinks,
}

impl NodePlanner {
    /// The predictions for `nodes` (every rank's node), or `None` when the layout leaves
    /// nothing to arrange: one node, or one rank per node.
    /// `class` says whether hosts talk through verbs or TCP.
    pub fn build(config: &Config, nodes: &Nodes, class: LinkClass) -> Option<Self> {
        let (p, n) = (nodes.nranks(), nodes.nnodes());
        if n <= 1 || n >= p {
            return None;
        }
        let links = node_links(config.tuning.as_deref(), class.verbs_between_hosts());
        let plans = |a: Algorithm, c: Collective| -> Option<Vec<Plan>> {
            (0..p)
                .map(|r| build_with_nodes(a, c, p, r, 1, Some(nodes)).ok())
                .collect()
        };
        let mut wins = Vec::new();
        for kind in CollectiveKind::ALL {
            let c = kind.collective();
            if !Algorithm::Hierarchical.supports(c) {
                continue;
            }
            let Some(hier) = plans(Algorithm::Hierarchical, c) else {
                continue;
            };
            let mut flat: Vec<(Algorithm, Vec<Plan>)> = Vec::new();
            let mut bits = 0u64;
            for k in 0..BUCKETS {
                let bytes = 1usize << k;
                let a = builtin(config, c, bytes, p, false);
                if !flat.iter().any(|(fa, _)| *fa == a) {
                    let Some(pl) = plans(a, c) else { continue };
                    flat.push((a, pl));
                }
                let Some((_, flat_plans)) = flat.iter().find(|(fa, _)| *fa == a) else {
                    continue;
                };
                let t = |pl: &[Plan]| estimate_op(pl, nodes, bytes as u64, 4, &links);
                if t(&hier) < t(flat_plans) {
                    bits |= 1 << k;
                }
            }
            wins.push((kind, bits));
        }
        Some(NodePlanner { wins, links })
    }

    /// The links the predictions assumed.
    pub fn links(&self) -> NodeLinks {
        self.links
    }

    /// Whether the hierarchical plans are predicted faster for blocks of `block_bytes`.
    pub fn prefers_hierarchical(&self, collective: Collective, block_bytes: usize) -> bool {
        let Some(kind) = CollectiveKind::of(collective) else {
            return false;
        };
        let k = (usize::BITS - block_bytes.max(1).leading_zeros() - 1) as usize;
        self.wins
            .iter()
            .find(|(w, _)| *w == kind)
            .is_some_and(|(_, bits)| bits >> k.min(BUCKETS - 1) & 1 == 1)
    }
}

/// The intra-node (shared memory) and inter-node (verbs or TCP) links: measured in the
/// tuning file when it has them, else the built-in assumptions.
fn node_links(file: Option<&TuningFile>, verbs: bool) -> NodeLinks {
    let measured = |class| file.and_then(|f| f.links.get(&class).copied());
    let intra: LinkCost = measured(LinkClass::Shm).unwrap_or(super::table::SHM_LINK);
    let inter: LinkCost = if verbs {
        measured(LinkClass::Ib).unwrap_or(super::table::IB_LINK)
    } else {
        measured(LinkClass::Tcp).unwrap_or(super::table::TCP_LINK)
    };
    NodeLinks { intra, inter }
}

/// `choice` (what [`super::choose`] picked), switched to the hierarchical plans where
/// `planner` predicts they win, unless an algorithm is forced, the tuning file decided this
/// op, or `OXCCL_ALGO`'s selection rules them out.
pub(crate) fn refine(
    config: &Config,
    tuned: Option<&Decisions>,
    planner: Option<&NodePlanner>,
    (collective, dtype, count): (Collective, DataType, usize),
    choice: Choice,
) -> Choice {
    let Some(planner) = planner else {
        return choice;
    };
    let block_bytes = count.saturating_mul(dtype.size());
    let measured = CollectiveKind::of(collective)
        .and_then(|k| tuned?.lookup(k, block_bytes))
        .is_some();
    let allowed = config
        .algo_rules
        .as_ref()
        .is_none_or(|r| r.allows(collective, Algorithm::Hierarchical));
    if config.algorithm.is_some() || measured || !allowed {
        return choice;
    }
    match planner.prefers_hierarchical(collective, block_bytes) {
        true => Choice {
            algorithm: Algorithm::Hierarchical,
            ..choice
        },
        false => choice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_all_reduce_on_two_nodes_of_two_goes_hierarchical() {
        let config = Config::default();
        let nodes = Nodes::new(vec![0, 1, 0, 1]).unwrap();
        let planner =
            NodePlanner::build(&config, &nodes, LinkClass::Mixed).expect("two ranks per node");
        assert!(planner.prefers_hierarchical(Collective::AllReduce, 64 << 20));
        let one_per_node = Nodes::new(vec![0, 1, 2]).unwrap();
        assert!(NodePlanner::build(&config, &one_per_node, LinkClass::Mixed).is_none());
        assert!(NodePlanner::build(&config, &Nodes::single(4), LinkClass::Mixed).is_none());
        // A forced algorithm is never overridden.
        let forced = Config {
            algorithm: Some(Algorithm::Ring),
            ..Config::default()
        };
        let ring = Choice {
            algorithm: Algorithm::Ring,
            nchannels: 2,
        };
        let op = (Collective::AllReduce, DataType::Float32, 16 << 20);
        assert_eq!(refine(&forced, None, Some(&planner), op, ring), ring);
        assert_eq!(
            refine(&config, None, Some(&planner), op, ring).algorithm,
            Algorithm::Hierarchical
        );
    }
}
