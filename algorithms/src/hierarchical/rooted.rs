//! Broadcast and reduce through one representative per node (any layout, any root).
//!
//! The **representative** of a node is the root on the root's node and the leader (lowest
//! rank) elsewhere. The tree: a binomial tree over the nodes ([`crate::binomial`], node
//! indices as ranks, the root's node as root) joins the representatives; inside each node
//! the representative heads a chain of the node's other ranks in increasing rank order.
//! Broadcast sends down it (a representative serves its inter-node children first: they
//! have the most left to forward), reduce folds up it (a representative folds its node's
//! chain first, then its inter-node children in the binomial reduce tree's order).

use crate::binomial::{self, input, output, scratch};
use crate::{Nodes, Step};

/// Where `rank` sits in the tree of `root`.
struct Place {
    /// The rank's parent (`None` at the root).
    parent: Option<u32>,
    /// The rank's children, in the order a broadcast serves them.
    down: Vec<u32>,
    /// The rank's children, in the order a reduce folds them.
    up: Vec<u32>,
}

/// `rank`'s place in the hierarchical tree rooted at `root`; `broadcast` picks the binomial
/// broadcast tree between nodes, else the reduce tree.
fn place(nodes: &Nodes, root: u32, rank: u32, broadcast: bool) -> Place {
    let root_node = nodes.node_of(root);
    let node = nodes.node_of(rank);
    let rep = |n: u32| {
        if n == root_node {
            root
        } else {
            nodes.leader(n)
        }
    };
    // The node's chain: its representative, then the others in increasing rank order.
    let chain: Vec<u32> = std::iter::once(rep(node))
        .chain(
            nodes
                .ranks_on(node)
                .iter()
                .copied()
                .filter(|&r| r != rep(node)),
        )
        .collect();
    let at = chain.iter().position(|&r| r == rank).unwrap_or(0);
    let chain_next = chain.get(at + 1).copied();
    if at > 0 {
        return Place {
            parent: Some(chain[at - 1]),
            down: chain_next.into_iter().collect(),
            up: chain_next.into_iter().collect(),
        };
    }
    let nn = nodes.nnodes();
    let (parent, inter) = if broadcast {
        (
            binomial::broadcast_parent(nn, root_node, node),
            binomial::broadcast_children(nn, root_node, node),
        )
    } else {
        (
            binomial::reduce_parent(nn, root_node, node),
            binomial::reduce_children(nn, root_node, node),
        )
    };
    let inter: Vec<u32> = inter.into_iter().map(rep).collect();
    Place {
        parent: parent.map(rep),
        down: inter.iter().copied().chain(chain_next).collect(),
        up: chain_next
            .into_iter()
            .chain(inter.iter().copied())
            .collect(),
    }
}

/// Broadcast from `root`: receive (forwarding to the first child on the fly), then send to
/// the other children.
pub(super) fn broadcast(nodes: &Nodes, root: u32, rank: u32) -> Vec<Step> {
    let place = place(nodes, root, rank, true);
    binomial::tree_broadcast(place.parent, place.down)
}

/// Reduce onto `root`: fold the children in (in scratch off the root, as the binomial
/// reduce does), the last one fused with the send to the parent.
pub(super) fn reduce(nodes: &Nodes, root: u32, rank: u32) -> Vec<Step> {
    let place = place(nodes, root, rank, false);
    let Some(last) = place.up.len().checked_sub(1) else {
        return vec![match place.parent {
            Some(to) => Step::Send { to, src: input() },
            None => Step::Copy {
                src: input(),
                dst: output(),
            },
        }];
    };
    let dst = if place.parent.is_some() {
        scratch()
    } else {
        output()
    };
    let mut acc = input();
    let mut steps = Vec::with_capacity(place.up.len());
    for (i, from) in place.up.into_iter().enumerate() {
        steps.push(match place.parent {
            Some(to) if i == last => Step::RecvReduceSend { from, to, src: acc },
            _ => Step::RecvReduce {
                from,
                src: acc,
                dst,
            },
        });
        acc = dst;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representatives_and_chains() {
        // Nodes [0, 1, 0, 1, 0]: node 0 = {0, 2, 4}, node 1 = {1, 3}; root 2.
        let nodes = Nodes::new(vec![0, 1, 0, 1, 0]).unwrap();
        let root = place(&nodes, 2, 2, true);
        assert_eq!((root.parent, root.down), (None, vec![1, 0]));
        let zero = place(&nodes, 2, 0, true);
        assert_eq!((zero.parent, zero.down), (Some(2), vec![4]));
        let leader = place(&nodes, 2, 1, false);
        assert_eq!((leader.parent, leader.up), (Some(2), vec![3]));
        assert_eq!(place(&nodes, 2, 2, false).up, [0, 1]);
    }
}
