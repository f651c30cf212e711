//! The cluster model: per-rank α–β–γ costs with every message classified as intra- or
//! inter-node (see the crate doc of `oxccl-sim` for the model and its limits).
//!
//! The walk over one rank's plan follows [`oxccl_algorithms::cost::traffic`] step for step
//! (same α rule, same byte counts); the only difference is that each message's α and β are
//! those of the link to its peer.

use oxccl_algorithms::plan::channel_piece;
use oxccl_algorithms::{build, Algorithm, Collective, Plan, Region, Step};
use std::panic;

/// The two kinds of link a message can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// Both ranks are on the same node.
    Intra,
    /// The ranks are on different nodes.
    Inter,
}

/// Latency and bandwidth of one kind of link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Link {
    /// Latency of one message, seconds.
    pub(crate) alpha_s: f64,
    /// Transfer time, seconds per byte.
    pub(crate) beta_s_per_byte: f64,
}

/// The modelled cluster: `nodes` nodes of `ranks_per_node` ranks, rank `r` on node
/// `r / ranks_per_node`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cluster {
    /// Number of nodes.
    pub(crate) nodes: u32,
    /// Ranks on each node.
    pub(crate) ranks_per_node: u32,
    /// The link between two ranks of one node.
    pub(crate) intra: Link,
    /// The link between two ranks of different nodes (each rank's own share: no
    /// contention is modelled).
    pub(crate) inter: Link,
    /// Reduction time, seconds per byte reduced.
    pub(crate) gamma_s_per_byte: f64,
}

impl Cluster {
    /// The number of ranks, `nodes · ranks_per_node` (the caller checked it fits).
    pub(crate) fn nranks(&self) -> u32 {
        self.nodes * self.ranks_per_node
    }

    /// The node rank `rank` is on.
    pub(crate) fn node(&self, rank: u32) -> u32 {
        rank / self.ranks_per_node
    }

    /// Which link a message between `a` and `b` takes.
    pub(crate) fn class(&self, a: u32, b: u32) -> Class {
        if self.node(a) == self.node(b) {
            Class::Intra
        } else {
            Class::Inter
        }
    }

    /// The link of class `class`.
    pub(crate) fn link(&self, class: Class) -> Link {
        match class {
            Class::Intra => self.intra,
            Class::Inter => self.inter,
        }
    }
}

/// The cost of one rank's plan, split into its terms.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct RankCost {
    /// α: latencies on the critical path of the busiest channel, seconds.
    pub(crate) latency_s: f64,
    /// The number of those latencies (`cost::Traffic::latencies`).
    pub(crate) latencies: u64,
    /// β: bytes sent over all channels, each at its link's rate, seconds.
    pub(crate) transfer_s: f64,
    /// γ: bytes reduced over all channels, seconds.
    pub(crate) reduce_s: f64,
}

impl RankCost {
    /// The total, seconds.
    pub(crate) fn seconds(&self) -> f64 {
        self.latency_s + self.transfer_s + self.reduce_s
    }

    /// The β and γ terms, seconds.
    pub(crate) fn volume_s(&self) -> f64 {
        self.transfer_s + self.reduce_s
    }
}

/// "No chunk": a split index no plan uses (its
/// [`split_range`](oxccl_algorithms::plan::split_range) is empty).
const NONE: u32 = u32::MAX;

/// One step of a plan reduced to what its cost depends on, with its peer's link resolved
/// (built once per plan, walked once per size). Block indices do not matter (every block
/// has the same length), so the steps of a loop over blocks often compile to one op
/// repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A step on connections; each field is the split index of a chunk, or [`NONE`].
    Msg {
        /// The chunk sent.
        sent: u32,
        /// The chunk received before sending (a fused step's own receive).
        fused: u32,
        /// The chunk received independently of any send.
        received: u32,
        /// The chunk reduced.
        reduced: u32,
        /// The link of the send.
        class: Class,
    },
    /// A one-sided read of other ranks' windows.
    Load {
        /// The phase waited for.
        phase: u32,
        /// The chunk read from each peer.
        split: u32,
        /// How many peers' chunks are read.
        moved: u32,
        /// How many peers' chunks are reduced.
        reduced: u32,
        /// The link of the reads.
        class: Class,
    },
}

/// One rank's plan in the form [`rank_cost`] walks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Compiled {
    /// The rank.
    pub(crate) rank: u32,
    /// Chunks per block's channel piece.
    splits: u32,
    /// Per channel, the index of its step list in `lists` (channels usually share one).
    channels: Vec<usize>,
    /// The distinct step lists, as runs of one op repeated.
    lists: Vec<Vec<(Op, u64)>>,
}

impl Compiled {
    /// Whether no channel has a step.
    pub(crate) fn is_empty(&self) -> bool {
        self.lists.iter().all(Vec::is_empty)
    }
}

/// Reduces `plan` to its costing form on `cl` (the chunk roles follow
/// `oxccl_algorithms::cost::traffic`).
pub(crate) fn compile(plan: &Plan, cl: &Cluster) -> Compiled {
    let me = plan.rank;
    let everyone = if cl.nodes > 1 {
        Class::Inter
    } else {
        Class::Intra
    };
    let others = plan.nranks.saturating_sub(1);
    let op = |step: &Step| {
        let s = |r: Region| r.split;
        let (sent, fused, received, reduced) = match *step {
            Step::ReduceFromPeers { peers, phase, .. } => {
                return Op::Load {
                    phase,
                    split: peers.split,
                    moved: others,
                    reduced: others,
                    class: everyone,
                }
            }
            Step::CopyFromPeer {
                src, phase, peer, ..
            } => {
                return Op::Load {
                    phase,
                    split: src.split,
                    moved: 1,
                    reduced: 0,
                    class: cl.class(me, peer),
                }
            }
            Step::Send { src, .. } => (s(src), NONE, NONE, NONE),
            Step::SendRecv { src, dst, .. } => (s(src), NONE, s(dst), NONE),
            Step::RecvReduceSend { src, .. } => (s(src), s(src), NONE, s(src)),
            Step::RecvReduceCopySend { dst, .. } => (s(dst), s(dst), NONE, s(dst)),
            Step::RecvCopySend { dst, .. } => (s(dst), s(dst), NONE, NONE),
            Step::RecvReduce { dst, .. } => (NONE, NONE, s(dst), s(dst)),
            Step::Recv { dst, .. } => (NONE, NONE, s(dst), NONE),
            Step::Reduce { dst, .. } => (NONE, NONE, NONE, s(dst)),
            _ => (NONE, NONE, NONE, NONE),
        };
        Op::Msg {
            sent,
            fused,
            received,
            reduced,
            class: step.send_peer().map_or(everyone, |to| cl.class(me, to)),
        }
    };
    let mut lists: Vec<Vec<(Op, u64)>> = Vec::new();
    let mut channels = Vec::with_capacity(plan.channels.len());
    for (c, steps) in plan.channels.iter().enumerate() {
        if let Some(d) = (0..c).find(|&d| plan.channels[d] == *steps) {
            channels.push(channels[d]);
            continue;
        }
        let mut runs: Vec<(Op, u64)> = Vec::new();
        for o in steps.iter().map(op) {
            match runs.last_mut() {
                Some((last, n)) if *last == o => *n += 1,
                _ => runs.push((o, 1)),
            }
        }
        channels.push(lists.len());
        lists.push(runs);
    }
    Compiled {
        rank: me,
        splits: plan.splits,
        channels,
        lists,
    }
}

/// Bytes of every split `0..splits` of a window of `window` elements of `elem` bytes:
/// [`split_range`](oxccl_algorithms::plan::split_range)'s `[s·W/S, (s+1)·W/S)`, computed
/// incrementally (a plan may have as many splits as ranks).
fn split_bytes(window: u64, splits: u32, elem: u64) -> Vec<u64> {
    let parts = u64::from(splits.max(1));
    let (q, r) = (window / parts, window % parts);
    // at(i) = q·i + ⌊r·i / S⌋, with r·i mod S kept in `acc`.
    let (mut acc, mut carry, mut at) = (0u64, 0u64, 0u64);
    (0..splits)
        .map(|i| {
            acc += r;
            if acc >= parts {
                acc -= parts;
                carry += 1;
            }
            let next = q * (u64::from(i) + 1) + carry;
            let len = next - at;
            at = next;
            len * elem
        })
        .collect()
}

/// The α state of one channel's walk (see [`rank_cost`]).
struct Walk<'c> {
    /// The cluster.
    cl: &'c Cluster,
    /// α so far, seconds.
    latency: f64,
    /// α count so far.
    count: u64,
    /// The link class of the open group of back-to-back sends sharing one α.
    group: Option<Class>,
    /// A non-empty chunk was received since the last α (the first send always adds one).
    waited: bool,
    /// The highest phase a one-sided read waited for so far.
    phase_waited: u32,
}

impl Walk<'_> {
    /// Closes the open group (its α counts) and opens one for a send on `class`.
    fn new_group(&mut self, class: Class) {
        self.latency += self.group.map_or(0.0, |g| self.cl.link(g).alpha_s);
        self.group = Some(class);
        self.count += 1;
    }

    /// `n` times a step that sends `sent` bytes on `class` after receiving `fused` bytes and
    /// receives `received` bytes independently (cost.rs's rule, run `n` times in O(1)).
    fn msg(&mut self, sent: u64, fused: u64, received: u64, class: Class, n: u64) {
        for _ in 0..n.min(2) {
            self.waited |= fused > 0;
            if sent > 0 {
                if std::mem::take(&mut self.waited) {
                    self.new_group(class);
                } else {
                    self.group = self.group.max(Some(class));
                }
            }
            self.waited |= received > 0;
        }
        // From the second repetition on the state repeats: every further one opens a group
        // of its own when anything is received, else joins the open one (done above).
        if n > 2 && sent > 0 && (fused > 0 || received > 0) {
            let more = n - 2;
            self.latency += more as f64 * self.cl.link(class).alpha_s;
            self.count += more;
        }
    }

    /// The channel's α once its steps are walked.
    fn finish(&self) -> f64 {
        self.latency + self.group.map_or(0.0, |g| self.cl.link(g).alpha_s)
    }
}

/// The cost of a compiled plan for blocks of `bytes_per_rank` bytes of `elem_size`-byte
/// elements on `cl`.
///
/// Same rules as [`oxccl_algorithms::cost::traffic`]: a sending step with a non-empty chunk
/// adds an α when it is the channel's first or a non-empty chunk was received since the last
/// α; sends issued back to back share that α, which is then the slowest of their links (an
/// inter-node one if any of them leaves the node). Bytes sent cost their link's β; bytes
/// reduced cost γ. Channels overlap their latencies (the busiest counts) and share the links
/// and the reducer (all channels' bytes count). One-sided reads (load/store plans) count as
/// in `cost.rs`: every new phase waited for is one α, the bytes read are β. Chunk sizes are
/// [`channel_piece`] and [`split_range`](oxccl_algorithms::plan::split_range)'s, in one round.
pub(crate) fn rank_cost(
    plan: &Compiled,
    bytes_per_rank: u64,
    elem_size: u32,
    cl: &Cluster,
) -> RankCost {
    let elem = u64::from(elem_size.max(1));
    let block_len = bytes_per_rank / elem;
    let nchannels = u32::try_from(plan.channels.len()).unwrap_or(u32::MAX);
    let beta = |c: Class| cl.link(c).beta_s_per_byte;
    let mut out = RankCost::default();
    // Bytes of each split for the last window length seen (channels mostly share one).
    let mut table: (u64, Vec<u64>) = (u64::MAX, Vec::new());
    for (c, &list) in plan.channels.iter().enumerate() {
        let piece = channel_piece(block_len, nchannels, c as u32);
        let window = piece.end - piece.start;
        if table.0 != window {
            table = (window, split_bytes(window, plan.splits, elem));
        }
        let bytes = |split: u32| table.1.get(split as usize).copied().unwrap_or(0);
        let mut walk = Walk {
            cl,
            latency: 0.0,
            count: 0,
            group: None,
            waited: true,
            phase_waited: 0,
        };
        for &(op, n) in &plan.lists[list] {
            match op {
                Op::Load {
                    phase,
                    split,
                    moved,
                    reduced,
                    class,
                } => {
                    let moved = bytes(split) * u64::from(moved);
                    if moved > 0 && phase > walk.phase_waited {
                        // Repeats wait for the same phase: one α.
                        walk.phase_waited = phase;
                        walk.latency += cl.link(class).alpha_s;
                        walk.count += 1;
                    }
                    out.transfer_s += (n * moved) as f64 * beta(class);
                    let reduced = bytes(split) * u64::from(reduced);
                    out.reduce_s += (n * reduced) as f64 * cl.gamma_s_per_byte;
                }
                Op::Msg {
                    sent,
                    fused,
                    received,
                    reduced,
                    class,
                } => {
                    let b = bytes(sent);
                    walk.msg(b, bytes(fused), bytes(received), class, n);
                    out.transfer_s += (n * b) as f64 * beta(class);
                    out.reduce_s += (n * bytes(reduced)) as f64 * cl.gamma_s_per_byte;
                }
            }
        }
        out.latency_s = out.latency_s.max(walk.finish());
        out.latencies = out.latencies.max(walk.count);
    }
    out
}

/// Why an algorithm is left out of a simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skip {
    /// `supports()` is false for the collective.
    Unsupported,
    /// A load/store algorithm on more than one node.
    LoadStore,
    /// `build` returned an error.
    Failed(String),
    /// `build` panicked (a plan being written).
    Panicked,
    /// Every evaluated rank's plan is empty although there are several ranks (a plan not
    /// written yet).
    Empty,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Unsupported => f.write_str("does not support the collective"),
            Skip::LoadStore => f.write_str("load/store: needs every rank on one node"),
            Skip::Failed(e) => write!(f, "no plan: {e}"),
            Skip::Panicked => f.write_str("building a plan panicked"),
            Skip::Empty => f.write_str("empty plan (not written yet)"),
        }
    }
}

/// An algorithm ready to be evaluated at any size: the plans of the representative ranks
/// and the dependency depth that one rank's plan cannot show.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The algorithm.
    pub(crate) algorithm: Algorithm,
    /// The plans of the evaluated ranks, compiled.
    pub(crate) plans: Vec<Compiled>,
    /// The latency of the algorithm's dependency chain across ranks (ring chains of
    /// broadcast and reduce, binomial and binary trees), seconds; 0 when one rank's plan
    /// already shows it.
    pub(crate) depth_s: f64,
    /// Whether the latencies are those of a walk around the ring (ring all-reduce,
    /// all-gather and reduce-scatter; see [`ring_path_s`]).
    pub(crate) ring_path: bool,
}

/// The ranks whose plans are evaluated: 0, the last rank of node 0 and the first of node 1
/// (a node boundary), p/2, p−1 and, for rooted collectives, the root.
pub(crate) fn representative_ranks(collective: Collective, cl: &Cluster) -> Vec<u32> {
    let p = cl.nranks();
    let mut ranks = vec![0, cl.ranks_per_node - 1, cl.ranks_per_node, p / 2, p - 1];
    if let Collective::Broadcast { root } | Collective::Reduce { root } = collective {
        ranks.push(root);
    }
    ranks.retain(|&r| r < p);
    ranks.sort_unstable();
    ranks.dedup();
    ranks
}

/// Builds `rank`'s plan, turning a panic of a plan being written into an error.
fn build_quietly(
    algorithm: Algorithm,
    collective: Collective,
    nranks: u32,
    rank: u32,
    nchannels: u32,
) -> Result<Plan, Skip> {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let built = panic::catch_unwind(|| build(algorithm, collective, nranks, rank, nchannels));
    panic::set_hook(hook);
    match built {
        Ok(Ok(plan)) => Ok(plan),
        Ok(Err(e)) => Err(Skip::Failed(e.to_string())),
        Err(_) => Err(Skip::Panicked),
    }
}

/// Prepares `algorithm` for `collective` on `cl` with `nchannels` channels, or says why it
/// is left out. Only the representative ranks' plans are built.
pub(crate) fn prepare(
    algorithm: Algorithm,
    collective: Collective,
    cl: &Cluster,
    nchannels: u32,
) -> Result<Prepared, Skip> {
    if !algorithm.supports(collective) {
        return Err(Skip::Unsupported);
    }
    if algorithm.is_load_store() && cl.nodes > 1 {
        return Err(Skip::LoadStore);
    }
    let p = cl.nranks();
    let plans = representative_ranks(collective, cl)
        .into_iter()
        .map(|r| {
            Ok(compile(
                &build_quietly(algorithm, collective, p, r, nchannels)?,
                cl,
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if p > 1 && plans.iter().all(Compiled::is_empty) {
        return Err(Skip::Empty);
    }
    Ok(Prepared {
        algorithm,
        plans,
        depth_s: depth_s(algorithm, collective, cl),
        ring_path: algorithm == Algorithm::Ring
            && matches!(
                collective,
                Collective::AllReduce | Collective::AllGather | Collective::ReduceScatter
            ),
    })
}

/// The latency of the dependency chain across ranks that one rank's plan does not show.
///
/// - Ring broadcast and reduce run a chain `root → root+1 → … → root−1` (reduce: from
///   `root+1` around to the root): its `p−1` hops, each intra- or inter-node.
/// - Binomial broadcast/reduce: `⌈log2 p⌉` levels; level `k`'s hops span `2^k` ranks and
///   count as inter-node when `2^k ≥ ranks per node` (rank-contiguous nodes; an
///   approximation: a shorter hop can straddle a node boundary too).
/// - Tree all-reduce: the trees' `⌊log2 p⌋` levels (same rule) twice, up then down.
fn depth_s(algorithm: Algorithm, collective: Collective, cl: &Cluster) -> f64 {
    let p = cl.nranks();
    if p < 2 {
        return 0.0;
    }
    let alpha = |c: Class| cl.link(c).alpha_s;
    let levels = |n: u32| {
        (0..n)
            .map(|k| {
                let inter = cl.nodes > 1 && (1u64 << k) >= u64::from(cl.ranks_per_node);
                alpha(if inter { Class::Inter } else { Class::Intra })
            })
            .sum::<f64>()
    };
    match (algorithm, collective) {
        (Algorithm::Ring, Collective::Broadcast { root } | Collective::Reduce { root }) => {
            let first = match collective {
                Collective::Broadcast { .. } => root,
                _ => (root + 1) % p,
            };
            let pu = u64::from(p);
            (0..u64::from(p - 1))
                .map(|k| {
                    let a = ((u64::from(first) + k) % pu) as u32;
                    let b = ((u64::from(a) + 1) % pu) as u32;
                    alpha(cl.class(a, b))
                })
                .sum()
        }
        (Algorithm::Binomial, _) => levels(32 - (p - 1).leading_zeros()),
        (Algorithm::Tree, _) => 2.0 * levels(31 - p.leading_zeros()),
        _ => 0.0,
    }
}

/// The latency of the critical path of a ring step list that ends at rank `rank` after
/// `latencies` dependent messages, seconds.
///
/// Each of the ring's messages waits for the one its predecessor sent a step earlier, so the
/// critical path ending at `rank` is the walk `rank−L+1 → … → rank → rank+1` of `L` hops
/// around the ring: only the hops entering a new node cost the inter-node α (about `L/R` of
/// them, NCCL's `2·nNodes` inter steps for all-reduce), not every hop of the node-boundary
/// rank.
pub(crate) fn ring_path_s(rank: u32, latencies: u64, cl: &Cluster) -> f64 {
    let (p, r) = (u64::from(cl.nranks()), u64::from(cl.ranks_per_node));
    let inter = if cl.nodes > 1 && latencies > 0 {
        // Hops (a+j) -> (a+j+1) for j in 0..L; one enters a node when a+j+1 is a multiple
        // of R (p is, so the wrap-around needs no care).
        let a = u64::from(rank) + 2 * p * (latencies / p + 1) + 1 - latencies;
        (a + latencies) / r - a / r
    } else {
        0
    };
    inter as f64 * cl.inter.alpha_s + (latencies - inter) as f64 * cl.intra.alpha_s
}

/// The predicted time of `prep`, seconds, for blocks of `bytes_per_rank` bytes of
/// `elem_size`-byte elements: the slowest evaluated rank, or, for algorithms with a
/// dependency depth, that depth's latency plus the slowest rank's β and γ terms when it is
/// larger (a perfectly pipelined chain).
pub(crate) fn predict(prep: &Prepared, bytes_per_rank: u64, elem_size: u32, cl: &Cluster) -> f64 {
    let costs: Vec<RankCost> = prep
        .plans
        .iter()
        .map(|plan| {
            let mut c = rank_cost(plan, bytes_per_rank, elem_size, cl);
            if prep.ring_path {
                c.latency_s = ring_path_s(plan.rank, c.latencies, cl);
            }
            c
        })
        .collect();
    let slowest = costs.iter().map(RankCost::seconds).fold(0.0, f64::max);
    if slowest == 0.0 {
        return 0.0;
    }
    let volume = costs.iter().map(RankCost::volume_s).fold(0.0, f64::max);
    slowest.max(prep.depth_s + volume)
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
