//! Where a communicator's ranks sit: which node (host) each is on, fused at creation from
//! every rank's host identity (`OXCCL_HOSTNAME`, else hostname + boot id), so every rank
//! holds the same map.

/// The node of every rank. Nodes are numbered in the order of their lowest rank (rank 0 is
/// on node 0), so every rank numbers them alike whatever the placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMap {
    node_of: Vec<u32>,
    /// Each node's host identity.
    hosts: Vec<String>,
}

impl NodeMap {
    /// The map of ranks whose host identities are `hosts` (index = rank).
    pub fn from_hosts<S: AsRef<str>>(hosts: &[S]) -> Self {
        let mut names: Vec<String> = Vec::new();
        let node_of = hosts
            .iter()
            .map(|h| {
                let h = h.as_ref();
                match names.iter().position(|n| n == h) {
                    Some(i) => i as u32,
                    None => {
                        names.push(h.to_owned());
                        (names.len() - 1) as u32
                    }
                }
            })
            .collect();
        NodeMap {
            node_of,
            hosts: names,
        }
    }

    /// Number of ranks.
    pub fn nranks(&self) -> u32 {
        self.node_of.len() as u32
    }

    /// Number of nodes.
    pub fn nnodes(&self) -> u32 {
        self.hosts.len() as u32
    }

    /// The node of every rank, indexed by rank.
    pub fn node_of_each(&self) -> &[u32] {
        &self.node_of
    }

    /// The node `rank` is on (`None` past the last rank).
    pub fn node_of(&self, rank: u32) -> Option<u32> {
        self.node_of.get(rank as usize).copied()
    }

    /// The host identity of `node` (`None` past the last node).
    pub fn host(&self, node: u32) -> Option<&str> {
        self.hosts.get(node as usize).map(String::as_str)
    }

    /// The ranks on `node`, ascending.
    pub fn ranks_on(&self, node: u32) -> Vec<u32> {
        (0..self.nranks())
            .filter(|&r| self.node_of[r as usize] == node)
            .collect()
    }

    /// `rank`'s index among the ranks of its node (`None` past the last rank).
    pub fn local_rank(&self, rank: u32) -> Option<u32> {
        let node = self.node_of(rank)?;
        Some(
            self.node_of[..rank as usize]
                .iter()
                .filter(|&&n| n == node)
                .count() as u32,
        )
    }

    /// Number of ranks on `rank`'s node (`None` past the last rank).
    pub fn local_size(&self, rank: u32) -> Option<u32> {
        let node = self.node_of(rank)?;
        Some(self.node_of.iter().filter(|&&n| n == node).count() as u32)
    }

    /// Whether every node holds the same number of ranks.
    pub fn is_uniform(&self) -> bool {
        let first = self.ranks_on(0).len();
        (1..self.nnodes()).all(|n| self.ranks_on(n).len() == first)
    }

    /// Whether each node's ranks are consecutive (`0 0 1 1`, not `0 1 0 1`).
    pub fn is_contiguous(&self) -> bool {
        self.node_of.windows(2).all(|w| w[0] <= w[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_ranks_number_nodes_by_lowest_rank() {
        let m = NodeMap::from_hosts(&["b", "a", "b", "a", "c"]);
        assert_eq!(m.node_of_each(), &[0, 1, 0, 1, 2]);
        assert_eq!((m.nnodes(), m.host(1), m.host(3)), (3, Some("a"), None));
        assert_eq!(m.ranks_on(1), vec![1, 3]);
        assert_eq!((m.local_rank(3), m.local_size(3)), (Some(1), Some(2)));
        assert_eq!((m.local_rank(4), m.local_size(4)), (Some(0), Some(1)));
        assert_eq!(m.local_rank(5), None);
        assert!(!m.is_contiguous() && !m.is_uniform());
        let c = NodeMap::from_hosts(&["x", "x", "y", "y"]);
        assert!(c.is_contiguous() && c.is_uniform());
    }
}
