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
            Collective::Broadcast { root } if root != rank => 0,
            Collective::Recv { .. } => 0,
            _ => 1,
        }
    }

    /// Number of output blocks on `rank` of `nranks` (`0`: the output is not written).
    pub fn output_blocks(&self, nranks: u32, rank: u32) -> u32 {
        match *self {
            Collective::AllGather | Collective::AllToAll => nranks,
            Collective::Reduce { root } if root != rank => 0,
            Collective::Send { .. } => 0,
            _ => 1,
        }
    }

    /// For an in-place op, the `(input block, output block)` pair that is the same memory on
    /// `rank` (NCCL's conventions: all-reduce, broadcast and reduce on the root pass one
    /// buffer; all-gather's input is output block `rank`; reduce-scatter's output is input
    /// block `rank`). `None` where in-place has no meaning (all-to-all, send, recv, and ranks
    /// that have no input or no output).
    pub fn in_place_blocks(&self, rank: u32) -> Option<(u32, u32)> {
        match *self {
            Collective::AllReduce => Some((0, 0)),
            Collective::Broadcast { root } | Collective::Reduce { root } if root == rank => {
                Some((0, 0))
            }
            Collective::AllGather => Some((0, rank)),
            Collective::ReduceScatter => Some((rank, 0)),
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
            Collective::Send { .. } => "send",
            Collective::Recv { .. } => "recv",
        }
    }
}
