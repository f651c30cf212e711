//! Collectives of ranks on one node through each other's GPU memory.
//!
//! The ranks swap [`Record`](super::ipc::Record)s of their buffers ([`super::ipc`]), open each other's, and each
//! runs one `oxccl_peer_*` kernel on the addresses [`plan`] gives it:
//! - all-reduce: its share of the elements of every rank's input, reduced and written into
//!   every rank's output, so each byte is read once and written once;
//! - reduce: its share of every input, reduced into the root's output;
//! - broadcast: its share of the root's input, copied into every output;
//! - all-gather: its input, copied into its block of every output;
//! - reduce-scatter: its block of every input, reduced into its output.
//!
//! The bytes move over NVLink/PCIe, or within one GPU when ranks share it. What one rank
//! writes no other rank reads in the same job (in place included), so the ranks need no
//! step between reading and writing; a last exchange keeps every buffer in use until all
//! ranks are done with it. When some rank's buffer cannot be shared (pool memory, say) every
//! rank sees it in the records, and the job goes through host memory and the host
//! communicator instead.
//!
//! The job runs on an [`OrderedQueue`](super::ordered::OrderedQueue) (the stream waits for it like for a staged one), so
//! the call does not block and the stream's order holds.

use std::sync::{Arc, Mutex};

use super::kernels::KernelType;

mod exec;
mod job;

pub use exec::PeerCollectives;

/// The collective a peer job runs, with its root where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Every output gets the reduction of every input.
    AllReduce,
    /// The root's output gets the reduction of every input.
    Reduce {
        /// The rank whose output gets the result.
        root: u32,
    },
    /// Every output gets the root's input.
    Broadcast {
        /// The rank whose input is copied.
        root: u32,
    },
    /// Block `r` of every output gets rank `r`'s input.
    AllGather,
    /// Rank `r`'s output gets the reduction of block `r` of every input.
    ReduceScatter,
}

impl PeerKind {
    /// Whether `rank`'s send and receive buffers take part: a broadcast reads only the
    /// root's input and a reduce writes only the root's output (NCCL lets the other ranks
    /// pass anything there).
    pub fn uses(self, rank: u32) -> (bool, bool) {
        match self {
            Self::Broadcast { root } => (rank == root, true),
            Self::Reduce { root } => (true, rank == root),
            Self::AllReduce | Self::AllGather | Self::ReduceScatter => (true, true),
        }
    }

    /// Elements of a rank's send and receive buffers in a job of `count`, NCCL's count: the
    /// block of one rank for all-gather (its input) and reduce-scatter (its output).
    pub fn lengths(self, count: u64, nranks: u32) -> (u64, u64) {
        let whole = count * u64::from(nranks);
        match self {
            Self::AllGather => (count, whole),
            Self::ReduceScatter => (whole, count),
            _ => (count, count),
        }
    }

    /// Whether the outputs are reductions (so `avg` divides them).
    pub fn reduces(self) -> bool {
        matches!(
            self,
            Self::AllReduce | Self::Reduce { .. } | Self::ReduceScatter
        )
    }

    /// The root, for the kinds with one.
    pub fn root(self) -> Option<u32> {
        match self {
            Self::Reduce { root } | Self::Broadcast { root } => Some(root),
            _ => None,
        }
    }

    /// The collective's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::AllReduce => "all-reduce",
            Self::Reduce { .. } => "reduce",
            Self::Broadcast { .. } => "broadcast",
            Self::AllGather => "all-gather",
            Self::ReduceScatter => "reduce-scatter",
        }
    }
}

/// One rank's kernel launch in a peer job: elements `first..first + count` of every output
/// get the reduction of the inputs' (a copy when there is one input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Input addresses.
    pub inputs: Vec<u64>,
    /// Output addresses.
    pub outputs: Vec<u64>,
    /// First element (of every buffer above).
    pub first: u64,
    /// Elements.
    pub count: u64,
}

/// This rank's share of `count` elements of `size` bytes among `n` ranks: whole 16-byte
/// vectors where possible, so every share starts aligned when the buffers do.
pub fn share(count: u64, size: usize, rank: u32, n: u32) -> (u64, u64) {
    let per = (16 / size.max(1)).max(1) as u64;
    let vectors = count / per;
    let (lo, hi) = (
        vectors * rank as u64 / n as u64,
        vectors * (rank as u64 + 1) / n as u64,
    );
    let first = lo * per;
    let end = if rank + 1 == n { count } else { hi * per };
    (first, end - first)
}

/// What `rank` launches in a `kind` job of `count` elements (NCCL's count, see
/// [`PeerKind::lengths`]) of `size` bytes, with rank `j`'s buffers at `sends[j]` and
/// `recvs[j]` in this process (those a rank does not use are never read). The ranks' writes
/// never meet another rank's reads: shares of one range are disjoint, and block `r` is
/// written and read only by rank `r`'s launch.
pub fn plan(
    kind: PeerKind,
    rank: u32,
    count: u64,
    size: usize,
    sends: &[u64],
    recvs: &[u64],
) -> Plan {
    let n = sends.len() as u32;
    let block = |base: u64, r: u32| base + u64::from(r) * count * size as u64;
    let (first, len) = share(count, size, rank, n);
    let (inputs, outputs, first, count) = match kind {
        PeerKind::AllReduce => (sends.to_vec(), recvs.to_vec(), first, len),
        PeerKind::Reduce { root } => (sends.to_vec(), vec![recvs[root as usize]], first, len),
        PeerKind::Broadcast { root } => (vec![sends[root as usize]], recvs.to_vec(), first, len),
        PeerKind::AllGather => (
            vec![sends[rank as usize]],
            recvs.iter().map(|&r| block(r, rank)).collect(),
            0,
            count,
        ),
        PeerKind::ReduceScatter => (
            sends.iter().map(|&s| block(s, rank)).collect(),
            vec![recvs[rank as usize]],
            0,
            count,
        ),
    };
    Plan {
        inputs,
        outputs,
        first,
        count,
    }
}

/// How a rank's peer jobs went so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerJobs {
    /// Through the peers' GPU memory.
    pub through_peers: u64,
    /// Through host memory, because some rank's buffer could not be reached (see the
    /// warning logged the first time).
    pub through_host: u64,
}

/// Exchanges bytes with every rank: gets this rank's, returns every rank's in rank order
/// (an all-gather over the host communicator).
pub type Exchange = Box<dyn FnMut(&[u8]) -> std::result::Result<Vec<u8>, String> + Send>;

/// Runs the job's collective over the host communicator on host copies of this rank's input
/// and output (the way every rank goes when some buffer cannot be shared). The input holds
/// [`PeerKind::lengths`]' send elements (zeros where the rank has no input), the output
/// its receive elements.
pub type HostCollective =
    Box<dyn FnMut(&[u8], &mut [u8]) -> std::result::Result<(), String> + Send>;

/// The arguments of one peer collective.
#[derive(Debug, Clone)]
pub struct PeerOp {
    /// The rank's kernels, stream and opened peer allocations.
    pub exec: Arc<Mutex<PeerCollectives>>,
    /// The collective.
    pub kind: PeerKind,
    /// Kernel operator name (`sum`, `prod`, `max`, `min`; any for broadcast and all-gather,
    /// whose one input is copied).
    pub op: &'static str,
    /// Divide the reductions by the rank count (`avg`).
    pub average: bool,
    /// The element type's kernels.
    pub t: &'static KernelType,
    /// This rank.
    pub rank: u32,
    /// Ranks (all on this node).
    pub nranks: u32,
}

impl PeerOp {
    /// The rank's peer state, locked (a panic elsewhere leaves it usable: every change to
    /// it is a plain update).
    fn lock(&self) -> std::sync::MutexGuard<'_, PeerCollectives> {
        self.exec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How a peer collective talks to the other ranks, and where its failure goes.
pub struct PeerComm {
    /// Swaps records with every rank (an all-gather).
    pub exchange: Exchange,
    /// The host path, taken by every rank alike when some buffer cannot be shared.
    pub host: HostCollective,
    /// Told of a failure of the enqueued job.
    pub on_error: Box<dyn FnOnce(&str) + Send>,
}

impl std::fmt::Debug for PeerComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerComm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_buffer_in_aligned_pieces() {
        for (count, size, n) in [(1031u64, 4usize, 3u32), (7, 2, 4), (0, 8, 2), (4096, 1, 8)] {
            let mut next = 0;
            for r in 0..n {
                let (first, len) = share(count, size, r, n);
                assert_eq!(first, next, "{count} x {size} B over {n}: rank {r}");
                assert_eq!(first * size as u64 % 16, 0);
                next = first + len;
            }
            assert_eq!(next, count);
        }
    }

    /// Every element of every output is written by exactly one rank's launch, and no
    /// launch reads an element another launch writes (so the ranks need no step between).
    #[test]
    fn plans_write_each_output_element_once_and_never_where_another_rank_reads() {
        let (n, count, size) = (3u32, 37u64, 4usize);
        // Buffers far apart; in place, the input and the output share NCCL's layouts.
        let base: Vec<u64> = (0..n as u64).map(|j| 0x10_0000 * (j + 1)).collect();
        let apart: Vec<u64> = (0..n as u64).map(|j| 0x100_0000 * (j + 1)).collect();
        let blocks = |b: &[u64]| -> Vec<u64> {
            b.iter()
                .enumerate()
                .map(|(j, &a)| a + j as u64 * count * size as u64)
                .collect()
        };
        let kinds = [
            PeerKind::AllReduce,
            PeerKind::Reduce { root: 1 },
            PeerKind::Broadcast { root: 2 },
            PeerKind::AllGather,
            PeerKind::ReduceScatter,
        ];
        for kind in kinds {
            for in_place in [false, true] {
                let (send_len, recv_len) = kind.lengths(count, n);
                let (sends, recvs) = match (kind, in_place) {
                    (_, false) => (base.clone(), apart.clone()),
                    (PeerKind::AllGather, true) => (blocks(&base), base.clone()),
                    (PeerKind::ReduceScatter, true) => (base.clone(), blocks(&base)),
                    (_, true) => (base.clone(), base.clone()),
                };
                let mut written = std::collections::HashMap::new();
                let mut read = std::collections::HashMap::new();
                for r in 0..n {
                    let p = plan(kind, r, count, size, &sends, &recvs);
                    for e in p.first..p.first + p.count {
                        for &o in &p.outputs {
                            let at = o + e * size as u64;
                            assert!(
                                written.insert(at, r).is_none(),
                                "{kind:?} in place {in_place}: {at:#x} written twice"
                            );
                        }
                        for &i in &p.inputs {
                            read.entry(i + e * size as u64)
                                .or_insert_with(Vec::new)
                                .push(r);
                        }
                    }
                }
                for (at, w) in &written {
                    if let Some(readers) = read.get(at) {
                        assert!(
                            readers.iter().all(|r| r == w),
                            "{kind:?} in place {in_place}: rank {w} writes {at:#x} that ranks \
                             {readers:?} read"
                        );
                    }
                }
                // Every output element the collective defines is written.
                let outputs: Vec<u32> = match kind {
                    PeerKind::Reduce { root } => vec![root],
                    _ => (0..n).collect(),
                };
                assert_eq!(
                    written.len() as u64,
                    outputs.len() as u64 * recv_len,
                    "{kind:?} in place {in_place}"
                );
                assert!(send_len > 0);
            }
        }
    }
}
