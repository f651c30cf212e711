//! The operations a plan can implement, and their reference semantics.

/// A collective (or point-to-point) operation, with its root or peer.
///
/// Reference semantics with `p` ranks, `in_j` the input of rank `j` and `⊕` the reduction:
/// - `AllReduce`: every rank's output is `⊕_j in_j`.
/// - `AllGather`: output block `j` of every rank is `in_j` (input: 1 block, output: `p`).
/// - `ReduceScatter`: output of rank `r` is `⊕_j (block r of in_j)` (input: `p` blocks).
/// - `Broadcast`: every rank's output is `in_root`.
/// - `Reduce`: the root's output is `⊕_j in_j`; other ranks have no output.
/// - `AllToAll`: output block `j` of rank `r` is block `r` of `in_j` (`p` blocks each way).
/// - `Gather`: output block `j` of the root is `in_j` (input: 1 block on every rank; output:
///   `p` blocks on the root, none elsewhere).
/// - `Scatter`: the output of rank `r` is block `r` of `in_root` (input: `p` blocks on the
///   root, none elsewhere; output: 1 block on every rank).
/// - `Send`/`Recv`: the receiver's output is the sender's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collective {
    /// Reduce across ranks; everyone gets the result.
    AllReduce,
    /// Concatenate every rank's input, in rank order, on every rank.
    AllGather,
    /// Reduce across ranks; rank `r` gets block `r` of the result.
    ReduceScatter,
    /// Copy the root's input to every rank.
    Broadcast {
        /// The rank whose input is broadcast.
        root: u32,
    },
    /// Reduce across ranks onto the root.
    Reduce {
        /// The rank that receives the result.
        root: u32,
    },
    /// Block `j` of rank `r`'s input goes to rank `j`'s output block `r`.
    AllToAll,
    /// Concatenate every rank's input, in rank order, on the root.
    Gather {
        /// The rank that receives every input.
        root: u32,
    },
    /// Block `r` of the root's input goes to rank `r`.
    Scatter {
        /// The rank whose input is distributed.
        root: u32,
    },
    /// Send the input to `peer`.
    Send {
        /// The receiving rank.
        peer: u32,
    },
    /// Receive the output from `peer`.
    Recv {
        /// The sending rank.
        peer: u32,
    },
}

impl Collective {
    /// Whether the operation combines data with a reduction operator.
    pub fn reduces(&self) -> bool {
        matches!(
            self,
            Collective::AllReduce | Collective::ReduceScatter | Collective::Reduce { .. }
        )
    }

    /// Number of input blocks on `rank` of `nranks` (`0`: the input is not read).
    pub fn input_blocks(&self, nranks: u32, rank: u32) -> u32 {
        match *self {
            Collective::ReduceScatter | Collective::AllToAll => nranks,
            Collective::Scatter { root } => u32::from(root == rank) * nranks,
            Collective::Broadcast { root } if root != rank => 0,
            Collective::Recv { .. } => 0,
            _ => 1,
        }
    }

    /// Number of output blocks on `rank` of `nranks` (`0`: the output is not written).
    pub fn output_blocks(&self, nranks: u32, rank: u32) -> u32 {
        match *self {
            Collective::AllGather | Collective::AllToAll => nranks,
            Collective::Gather { root } => u32::from(root == rank) * nranks,
            Collective::Reduce { root } if root != rank => 0,
            Collective::Send { .. } => 0,
            _ => 1,
        }
    }

    /// For an in-place op, the `(input block, output block)` pair that is the same memory on
    /// `rank` (NCCL's conventions: all-reduce, broadcast and reduce on the root pass one
    /// buffer; all-gather's input is output block `rank`; reduce-scatter's output is input
    /// block `rank`; on the root, gather's input is output block `root` and scatter's output
    /// is input block `root`). `None` where in-place has no meaning (all-to-all, send, recv,
    /// and ranks that have no input or no output, such as gather's and scatter's non-roots).
    pub fn in_place_blocks(&self, rank: u32) -> Option<(u32, u32)> {
        match *self {
            Collective::AllReduce => Some((0, 0)),
            Collective::Broadcast { root } | Collective::Reduce { root } if root == rank => {
                Some((0, 0))
            }
            Collective::AllGather => Some((0, rank)),
            Collective::ReduceScatter => Some((rank, 0)),
            Collective::Gather { root } if root == rank => Some((0, root)),
            Collective::Scatter { root } if root == rank => Some((root, 0)),
            _ => None,
        }
    }

    /// A short lower-case name, as used in logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Collective::AllReduce => "all_reduce",
            Collective::AllGather => "all_gather",
            Collective::ReduceScatter => "reduce_scatter",
            Collective::Broadcast { .. } => "broadcast",
            Collective::Reduce { .. } => "reduce",
            Collective::AllToAll => "all_to_all",
            Collective::Gather { .. } => "gather",
            Collective::Scatter { .. } => "scatter",
            Collective::Send { .. } => "send",
            Collective::Recv { .. } => "recv",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_and_scatter_shapes() {
        let (g, s) = (
            Collective::Gather { root: 2 },
            Collective::Scatter { root: 2 },
        );
        assert_eq!((g.input_blocks(5, 2), g.output_blocks(5, 2)), (1, 5));
        assert_eq!((g.input_blocks(5, 0), g.output_blocks(5, 0)), (1, 0));
        assert_eq!((s.input_blocks(5, 2), s.output_blocks(5, 2)), (5, 1));
        assert_eq!((s.input_blocks(5, 4), s.output_blocks(5, 4)), (0, 1));
        assert_eq!(g.in_place_blocks(2), Some((0, 2)));
        assert_eq!(s.in_place_blocks(2), Some((2, 0)));
        assert_eq!((g.in_place_blocks(1), s.in_place_blocks(1)), (None, None));
        assert_eq!((g.name(), s.name()), ("gather", "scatter"));
        assert!(!g.reduces() && !s.reduces());
    }
}
