//! Where the ranks sit: the node (host) of every rank, as plans need it.
//!
//! # Nomenclature
//! - **node**: a host; ranks on one node talk through fast intra-node links (shared memory),
//!   ranks on different nodes through the network.
//! - Nodes are numbered `0..` in the order of their lowest rank, so rank 0 is on node 0 and
//!   every rank numbers them alike whatever the placement (the communicator's `NodeMap`
//!   uses the same convention).
//! - **local rank**: a rank's index among the ranks of its node, in increasing rank order.
//! - **leader**: the lowest rank of a node (local rank 0).
//! - **node-contiguous order** ([`Nodes::order`]): every rank sorted by `(node, rank)`; a
//!   ring over it crosses between nodes exactly once per node ([`crate::build_with_nodes`]).
//!
//! The type is pure data: the communicator fills it from its topology detection.

use std::fmt;

/// The node of every rank, validated (see the module doc for the numbering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    /// `node_of[r]`: the node of rank `r`.
    node_of: Vec<u32>,
    /// `members[n]`: the ranks of node `n`, increasing.
    members: Vec<Vec<u32>>,
    /// `local[r]`: the local rank of rank `r`.
    local: Vec<u32>,
}

/// Why a node assignment was refused by [`Nodes::new`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodesError {
    /// There were no ranks.
    NoRanks,
    /// Nodes must be numbered in the order of their lowest rank: rank `rank` is on node
    /// `node`, but the next new node's number at that rank is `expected`.
    Numbering {
        /// The first rank whose node breaks the numbering.
        rank: u32,
        /// The node given for it.
        node: u32,
        /// The highest number it may have (an existing node, or this one for a new node).
        expected: u32,
    },
}

impl fmt::Display for NodesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodesError::NoRanks => f.write_str("a node layout needs at least one rank"),
            NodesError::Numbering {
                rank,
                node,
                expected,
            } => write!(
                f,
                "rank {rank} is on node {node}, but nodes must be numbered 0.. by their lowest \
                 rank, so rank {rank}'s node must be at most {expected} (use Nodes::from_labels \
                 to renumber)"
            ),
        }
    }
}

impl std::error::Error for NodesError {}

impl Nodes {
    /// The layout in which rank `r` is on node `node_of[r]`. Nodes must be numbered in the
    /// order of their lowest rank (so no node is empty); [`Nodes::from_labels`] renumbers
    /// arbitrary labels instead.
    pub fn new(node_of: Vec<u32>) -> Result<Self, NodesError> {
        if node_of.is_empty() {
            return Err(NodesError::NoRanks);
        }
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut local = Vec::with_capacity(node_of.len());
        for (rank, &node) in node_of.iter().enumerate() {
            let rank = rank as u32;
            let count = members.len() as u32;
            if node > count {
                return Err(NodesError::Numbering {
                    rank,
                    node,
                    expected: count,
                });
            }
            if node == count {
                members.push(Vec::new());
            }
            let on = &mut members[node as usize];
            local.push(on.len() as u32);
            on.push(rank);
        }
        Ok(Self {
            node_of,
            members,
            local,
        })
    }

    /// The layout in which rank `r` is on the node labelled `labels[r]` (any labels: host
    /// names, hashes); nodes are numbered by their lowest rank. `None` for no ranks.
    pub fn from_labels<T: PartialEq>(labels: &[T]) -> Option<Self> {
        let mut seen: Vec<&T> = Vec::new();
        let node_of = labels
            .iter()
            .map(|label| match seen.iter().position(|s| *s == label) {
                Some(i) => i as u32,
                None => {
                    seen.push(label);
                    (seen.len() - 1) as u32
                }
            })
            .collect();
        Self::new(node_of).ok()
    }

    /// Every rank on one node (what a plan assumes without a layout).
    ///
    /// # Panics
    /// If `nranks` is 0.
    pub fn single(nranks: u32) -> Self {
        assert!(nranks > 0, "a node layout needs at least one rank");
        Self::new(vec![0; nranks as usize]).unwrap_or_else(|_| unreachable!())
    }

    /// `nnodes` nodes of `per_node` ranks each, ranks placed contiguously (node `r / per_node`)
    /// or, with `interleaved`, round-robin (node `r mod nnodes`).
    ///
    /// # Panics
    /// If `nnodes` or `per_node` is 0.
    pub fn uniform(nnodes: u32, per_node: u32, interleaved: bool) -> Self {
        assert!(nnodes > 0 && per_node > 0, "a node layout needs ranks");
        let labels: Vec<u32> = (0..nnodes * per_node)
            .map(|r| {
                if interleaved {
                    r % nnodes
                } else {
                    r / per_node
                }
            })
            .collect();
        Self::from_labels(&labels).unwrap_or_else(|| unreachable!())
    }

    /// Number of ranks.
    pub fn nranks(&self) -> u32 {
        self.node_of.len() as u32
    }

    /// Number of nodes.
    pub fn nnodes(&self) -> u32 {
        self.members.len() as u32
    }

    /// The node of every rank, indexed by rank.
    pub fn node_of_each(&self) -> &[u32] {
        &self.node_of
    }

    /// The node of `rank`.
    ///
    /// # Panics
    /// If `rank` is not below [`Nodes::nranks`].
    pub fn node_of(&self, rank: u32) -> u32 {
        self.node_of[rank as usize]
    }

    /// The ranks of `node`, increasing (index = local rank).
    ///
    /// # Panics
    /// If `node` is not below [`Nodes::nnodes`].
    pub fn ranks_on(&self, node: u32) -> &[u32] {
        &self.members[node as usize]
    }

    /// `rank`'s index among the ranks of its node.
    ///
    /// # Panics
    /// If `rank` is not below [`Nodes::nranks`].
    pub fn local_rank(&self, rank: u32) -> u32 {
        self.local[rank as usize]
    }

    /// Number of ranks on `rank`'s node.
    ///
    /// # Panics
    /// If `rank` is not below [`Nodes::nranks`].
    pub fn local_size(&self, rank: u32) -> u32 {
        self.ranks_on(self.node_of(rank)).len() as u32
    }

    /// The lowest rank of `node`.
    ///
    /// # Panics
    /// If `node` is not below [`Nodes::nnodes`].
    pub fn leader(&self, node: u32) -> u32 {
        self.members[node as usize][0]
    }

    /// Whether `a` and `b` are on the same node.
    ///
    /// # Panics
    /// If either is not below [`Nodes::nranks`].
    pub fn same_node(&self, a: u32, b: u32) -> bool {
        self.node_of(a) == self.node_of(b)
    }

    /// The number of ranks of every node, if all nodes have the same.
    pub fn ranks_per_node(&self) -> Option<u32> {
        let first = self.members[0].len();
        self.members
            .iter()
            .all(|m| m.len() == first)
            .then_some(first as u32)
    }

    /// Whether every node has the same number of ranks.
    pub fn is_uniform(&self) -> bool {
        self.ranks_per_node().is_some()
    }

    /// The fewest ranks of any node.
    pub fn min_ranks_per_node(&self) -> u32 {
        self.members.iter().map(Vec::len).min().unwrap_or(0) as u32
    }

    /// The node-contiguous order: every rank sorted by `(node, rank)`; position `v` of it is
    /// the **virtual rank** `v` of a node-ordered plan.
    pub fn order(&self) -> Vec<u32> {
        self.members.iter().flatten().copied().collect()
    }

    /// Whether rank order already is node-contiguous (every node a range of ranks), so that
    /// ordering changes nothing.
    pub fn is_contiguous(&self) -> bool {
        self.node_of
            .windows(2)
            .all(|w| w[1] == w[0] || w[1] == w[0] + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_helpers() {
        let nodes = Nodes::new(vec![0, 1, 0, 2, 1, 0]).unwrap();
        assert_eq!((nodes.nranks(), nodes.nnodes()), (6, 3));
        assert_eq!(nodes.ranks_on(0), [0, 2, 5]);
        assert_eq!((nodes.local_rank(5), nodes.local_size(4)), (2, 2));
        assert_eq!((nodes.leader(1), nodes.leader(2)), (1, 3));
        assert_eq!(nodes.order(), [0, 2, 5, 1, 4, 3]);
        assert!(!nodes.is_uniform() && !nodes.is_contiguous());
        assert_eq!(nodes.min_ranks_per_node(), 1);
        assert!(nodes.same_node(0, 5) && !nodes.same_node(0, 1));
        let uniform = Nodes::uniform(2, 3, true);
        assert_eq!(uniform.node_of_each(), [0, 1, 0, 1, 0, 1]);
        assert_eq!(uniform.ranks_per_node(), Some(3));
        assert!(Nodes::uniform(3, 2, false).is_contiguous());
        assert_eq!(Nodes::single(4).nnodes(), 1);
        let labels = Nodes::from_labels(&["b", "a", "b"]).unwrap();
        assert_eq!(labels.node_of_each(), [0, 1, 0]);
    }

    #[test]
    fn rejects_bad_numbering() {
        assert_eq!(Nodes::new(vec![]), Err(NodesError::NoRanks));
        let err = Nodes::new(vec![0, 2, 1]).unwrap_err();
        assert_eq!(
            err,
            NodesError::Numbering {
                rank: 1,
                node: 2,
                expected: 1
            }
        );
        assert!(err.to_string().contains("rank 1 is on node 2"), "{err}");
        assert!(Nodes::new(vec![1]).is_err());
        assert!(Nodes::from_labels::<u8>(&[]).is_none());
    }
}
