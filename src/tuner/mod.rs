//! Which algorithm runs an op, and on how many channels.
//!
//! In order (every input is the same on every rank, so all ranks choose alike):
//!
//! 1. `OXCCL_ALGO` naming one algorithm forces it wherever it supports the collective (for
//!    the load/store algorithms: and the communicator has a window).
//! 2. **Measured decisions** ([`decisions`], [`Decisions`]): with `OXCCL_TUNING_FILE`
//!    ([`TuningFile`], written by `oxccl-perf tune`) measuring this communicator's rank
//!    count and [`LinkClass`], the (algorithm, channel cap) with the least predicted time
//!    among those usable and allowed by `OXCCL_ALGO`'s selection.
//! 3. **Built-in thresholds** (`builtin`), measured on the 2-core development machine
//!    (oxccl-perf and `oxccl-perf tune`, f32 sum, 2–8 ranks, shm and tcp; README
//!    "Algorithms"):
//!    - Broadcast and reduce of at most [`SMALL_ROOTED_MAX`] (32 KiB) run the binomial
//!      tree, larger reduces the chain; gather and scatter run linear (over a window only
//!      up to 32 KiB).
//!    - When every rank is on this host and the communicator has a shared-memory window
//!      (`OXCCL_SHM_WINDOW`), load/store otherwise: an all-reduce of at most
//!      `OXCCL_LS_ONE_SHOT_MAX` bytes runs load/store one-shot, a larger one two-shot; a
//!      reduce-scatter above it the ring; the rest one-shot (a direct copy from the
//!      owner's window, already the least traffic).
//!    - Without a window an all-reduce of at most `OXCCL_RD_MAX` (32 KiB) bytes runs
//!      recursive doubling on fewer than 8 ranks; on 8 or more, one of at most
//!      `OXCCL_TREE_MAX` (256 KiB) runs the double binary tree; larger ones run ring. Over
//!      TCP at 4 ranks recursive doubling took 38–90 µs up to 32 KiB against the ring's
//!      70–159; at 8 ranks the tree took 97–188 µs up to 32 KiB and 1.05 ms at 256 KiB
//!      against the ring's 199–558 µs and 1.56 ms, and the ring won from 2 MiB. An
//!      all-to-all up to `OXCCL_TREE_MAX` runs linear, the rest the ring (chains for
//!      broadcast, pairwise all-to-all).
//!
//! 4. **Several nodes** ([`NodePlanner`], `tuner/nodes.rs`): when the ranks span several
//!    hosts and one holds more than one rank, the choice of steps 2–3 is replaced by the
//!    hierarchical plans ([`Algorithm::Hierarchical`]) for every collective and block size
//!    where the α–β–γ model with an intra-node (shared memory) and an inter-node (TCP)
//!    link predicts them faster, unless an algorithm is forced or the tuning file decided
//!    the op. Every plan is built over the node-contiguous rank order
//!    (`oxccl_algorithms::build_with_nodes`), so interleaved placements cross the network
//!    no more than contiguous ones.
//!
//! A selection in NCCL_ALGO's syntax ([`AlgoRules`]) keeps the built-in choice when it
//! allows it and otherwise takes the first allowed algorithm in a size-dependent order of
//! preference.

mod decide;
mod file;
mod nodes;
mod rules;
mod table;

pub use decide::{Candidate, Decisions};
pub use file::{CollectiveKind, LinkClass, TimeKey, TuningFile};
pub(crate) use nodes::refine;
pub use nodes::NodePlanner;
pub use rules::AlgoRules;
pub(crate) use table::log_table;

use crate::config::Config;
use crate::types::DataType;
use oxccl_algorithms::{Algorithm, Collective};

/// Per-channel share below which an op uses fewer channels (each channel adds a message
/// per step, which costs more than it brings for small blocks).
pub const MIN_BYTES_PER_CHANNEL: usize = 64 * 1024;

/// The decision for one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Channels to spread the op over.
    pub nchannels: u32,
}

/// Chooses the algorithm and channel count for `count` elements of `dtype` per block;
/// `window`: every rank is on this host and has a shared-memory window; `tuned`: the
/// communicator's decisions from a tuning file ([`decisions`]).
pub fn choose(
    config: &Config,
    tuned: Option<&Decisions>,
    collective: Collective,
    dtype: DataType,
    count: usize,
    nranks: u32,
    window: bool,
) -> Choice {
    let block_bytes = count.saturating_mul(dtype.size());
    let default = builtin(config, collective, block_bytes, nranks, window);
    let usable = |a: Algorithm| a.supports(collective) && (window || !a.is_load_store());
    let allowed = |a: Algorithm| {
        usable(a)
            && config
                .algo_rules
                .as_ref()
                .is_none_or(|r| r.allows(collective, a))
    };
    let measured = || {
        let kind = CollectiveKind::of(collective)?;
        tuned?.lookup(kind, block_bytes)
    };
    let mut cap = config.nchannels;
    let forced = config.algorithm.filter(|&a| usable(a));
    // Decisions were built with the same usability and selection rules.
    let measured = if forced.is_none() { measured() } else { None };
    if let Some(c) = measured {
        cap = cap.min(c.channels);
    }
    let algorithm = match (forced, measured) {
        (Some(forced), _) => forced,
        (None, Some(c)) => c.algorithm,
        _ if allowed(default) => default,
        // The selection rules out the default: the first allowed algorithm in the order of
        // preference for this size, else the default (a selection that allows nothing
        // for this collective does not stop it).
        _ => preference(block_bytes)
            .iter()
            .copied()
            .find(|&a| allowed(a))
            .unwrap_or(default),
    };
    let nchannels = (block_bytes / MIN_BYTES_PER_CHANNEL).clamp(1, cap.max(1) as usize) as u32;
    Choice {
        algorithm,
        nchannels,
    }
}

/// Blocks of broadcast and reduce up to this size run the binomial tree, and of gather and
/// scatter the linear exchange, also where a shared-memory window would allow load/store
/// (`oxccl-perf tune` on the development machine, 2–8 ranks, shm and tcp: binomial 1.1–2.6×
/// faster than the chain or load/store one-shot at 3 ranks and more, linear 1.3–2.2× faster
/// than load/store gather and scatter).
pub const SMALL_ROOTED_MAX: usize = 32 * 1024;

/// The built-in choice (step 3 of the module doc). A one-rank communicator and
/// point-to-point always take the ring (a local copy, a direct exchange).
fn builtin(
    config: &Config,
    collective: Collective,
    block_bytes: usize,
    nranks: u32,
    window: bool,
) -> Algorithm {
    use Algorithm::*;
    use Collective as C;
    let small_rooted = block_bytes <= SMALL_ROOTED_MAX;
    match collective {
        _ if nranks <= 1 => Ring,
        C::Send { .. } | C::Recv { .. } => Ring,
        C::Broadcast { .. } | C::Reduce { .. } if small_rooted => Binomial,
        // Load/store reduce makes every rank's input cross to the root at once; the chain
        // pipelines it (1.4–1.7× faster measured above 32 KiB at 2–8 ranks).
        C::Reduce { .. } => Ring,
        // The ring has no gather or scatter: the direct exchange with the root.
        C::Gather { .. } | C::Scatter { .. } if small_rooted || !window => Linear,
        // Large load/store reduce-scatters lose to the ring's pipelined fold (1.1–1.4×).
        C::ReduceScatter if window && block_bytes > config.ls_one_shot_max => Ring,
        C::AllReduce if window && block_bytes > config.ls_one_shot_max => LoadStoreTwoShot,
        _ if window => LoadStoreOneShot,
        C::AllReduce if nranks < 8 && block_bytes <= config.rd_max => RecursiveDoubling,
        C::AllReduce if nranks >= 8 && block_bytes <= config.tree_max => Tree,
        // Over TCP the linear all-to-all posts every block at once (1.07–1.16× faster than
        // the pairwise exchange up to 256 KiB at 4 and 8 ranks).
        C::AllToAll if block_bytes <= config.tree_max => Linear,
        _ => Ring,
    }
}

/// The decisions of a communicator of `nranks` ranks connected as `class` from the
/// configuration's tuning file, among the algorithms it may use (supported, load/store
/// only with a `window`, allowed by `OXCCL_ALGO`'s selection); `None` without a file or
/// without matching measurements.
pub fn decisions(
    config: &Config,
    class: LinkClass,
    nranks: u32,
    window: bool,
) -> Option<Decisions> {
    let file = config.tuning.as_ref()?;
    Decisions::build(file, class, nranks, |a, kind| {
        let collective = kind.collective();
        a.supports(collective)
            && (window || !a.is_load_store())
            && config
                .algo_rules
                .as_ref()
                .is_none_or(|r| r.allows(collective, a))
    })
}

/// Algorithms in the order the tuner prefers them when a selection rules out its default:
/// latency-bound ones first for small blocks, bandwidth-optimal ones first for large.
fn preference(block_bytes: usize) -> &'static [Algorithm] {
    use Algorithm::*;
    if block_bytes <= 64 * 1024 {
        &[
            LoadStoreOneShot,
            OneShot,
            RecursiveDoubling,
            Tree,
            Bruck,
            Binomial,
            Linear,
            HalvingDoubling,
            LoadStoreTwoShot,
            Ring,
        ]
    } else {
        &[
            LoadStoreTwoShot,
            LoadStoreOneShot,
            HalvingDoubling,
            Ring,
            Tree,
            Linear,
            Binomial,
            Bruck,
            RecursiveDoubling,
            OneShot,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_all_reduce_goes_latency_first_and_forcing_respects_support() {
        let mut c = Config::default();
        let pick = |c: &Config, coll, count| {
            choose(c, None, coll, DataType::Float32, count, 4, false).algorithm
        };
        let at = |p, count| {
            choose(
                &Config::default(),
                None,
                Collective::AllReduce,
                DataType::Float32,
                count,
                p,
                false,
            )
            .algorithm
        };
        assert_eq!(
            pick(&c, Collective::AllReduce, 16),
            Algorithm::RecursiveDoubling
        );
        assert_eq!(at(8, 16), Algorithm::Tree);
        assert_eq!(at(8, 64 << 10), Algorithm::Tree);
        assert_eq!(at(8, 1 << 20), Algorithm::Ring);
        assert_eq!(at(4, 64 << 10), Algorithm::Ring);
        assert_eq!(pick(&c, Collective::AllReduce, 16 << 20), Algorithm::Ring);
        assert_eq!(pick(&c, Collective::AllGather, 16), Algorithm::Ring);
        assert_eq!(
            choose(
                &c,
                None,
                Collective::AllReduce,
                DataType::Float32,
                16,
                1,
                false
            )
            .algorithm,
            Algorithm::Ring
        );
        c.algorithm = Some(Algorithm::Ring);
        assert_eq!(pick(&c, Collective::AllReduce, 16), Algorithm::Ring);
        c.algorithm = Some(Algorithm::OneShot);
        assert_eq!(
            pick(&c, Collective::AllReduce, 16 << 20),
            Algorithm::OneShot
        );
        // One-shot cannot broadcast: the built-in choice stands.
        assert_eq!(
            pick(&c, Collective::Broadcast { root: 0 }, 16),
            Algorithm::Binomial
        );
        assert_eq!(
            choose(
                &c,
                None,
                Collective::AllReduce,
                DataType::Float32,
                1 << 20,
                4,
                false
            )
            .nchannels,
            2
        );
    }

    #[test]
    fn selections_restrict_the_choice() {
        let mut c = Config::default();
        let pick = |c: &Config, coll, count| {
            choose(c, None, coll, DataType::Float32, count, 8, false).algorithm
        };
        c.algo_rules = Some("^tree".parse().unwrap());
        // The default (tree) is ruled out: the first allowed in the small-size preference.
        assert_eq!(pick(&c, Collective::AllReduce, 16), Algorithm::OneShot);
        c.algo_rules = Some("^tree,one_shot".parse().unwrap());
        assert_eq!(
            pick(&c, Collective::AllReduce, 16),
            Algorithm::RecursiveDoubling
        );
        assert_eq!(pick(&c, Collective::AllReduce, 16 << 20), Algorithm::Ring);
        c.algo_rules = Some("allreduce:tree;allgather:bruck,ring".parse().unwrap());
        assert_eq!(pick(&c, Collective::AllReduce, 16 << 20), Algorithm::Tree);
        assert_eq!(pick(&c, Collective::AllGather, 16), Algorithm::Ring);
        c.algo_rules = Some("allgather:bruck".parse().unwrap());
        assert_eq!(pick(&c, Collective::AllGather, 16), Algorithm::Bruck);
        assert_eq!(pick(&c, Collective::AllReduce, 16), Algorithm::Tree);
        // Nothing allowed that can run the collective: the default stands.
        c.algo_rules = Some("broadcast:tree".parse().unwrap());
        assert_eq!(
            pick(&c, Collective::Broadcast { root: 0 }, 16),
            Algorithm::Binomial
        );
    }

    #[test]
    fn rooted_and_exchange_collectives_follow_the_measured_thresholds() {
        use Algorithm::*;
        let c = Config::default();
        let pick = |coll, bytes: usize, window| {
            choose(&c, None, coll, DataType::Float32, bytes / 4, 4, window).algorithm
        };
        let (bcast, reduce) = (
            Collective::Broadcast { root: 1 },
            Collective::Reduce { root: 2 },
        );
        let (gather, scatter) = (
            Collective::Gather { root: 0 },
            Collective::Scatter { root: 3 },
        );
        for window in [false, true] {
            assert_eq!(pick(bcast, SMALL_ROOTED_MAX, window), Binomial);
            assert_eq!(pick(reduce, 8, window), Binomial);
            assert_eq!(pick(reduce, 1 << 20, window), Ring);
            assert_eq!(pick(gather, 64, window), Linear);
            assert_eq!(pick(scatter, SMALL_ROOTED_MAX, window), Linear);
        }
        assert_eq!(pick(bcast, 1 << 20, false), Ring);
        assert_eq!(pick(bcast, 1 << 20, true), LoadStoreOneShot);
        assert_eq!(pick(gather, 1 << 20, false), Linear);
        assert_eq!(pick(gather, 1 << 20, true), LoadStoreOneShot);
        assert_eq!(pick(Collective::ReduceScatter, 1 << 20, true), Ring);
        assert_eq!(
            pick(Collective::ReduceScatter, 4096, true),
            LoadStoreOneShot
        );
        assert_eq!(pick(Collective::AllToAll, 4096, false), Linear);
        assert_eq!(pick(Collective::AllToAll, 16 << 20, false), Ring);
        assert_eq!(pick(Collective::AllToAll, 4096, true), LoadStoreOneShot);
    }

    #[test]
    fn one_host_with_a_window_goes_load_store() {
        let mut c = Config::default();
        let pick = |c: &Config, coll, count, window| {
            choose(c, None, coll, DataType::Float32, count, 4, window).algorithm
        };
        let ar = Collective::AllReduce;
        assert_eq!(pick(&c, ar, 16, true), Algorithm::LoadStoreOneShot);
        assert_eq!(pick(&c, ar, 16 << 20, true), Algorithm::LoadStoreTwoShot);
        assert_eq!(
            pick(&c, Collective::AllToAll, 16 << 20, true),
            Algorithm::LoadStoreOneShot
        );
        assert_eq!(
            pick(&c, Collective::Send { peer: 1 }, 16, true),
            Algorithm::Ring
        );
        // Forcing a load/store algorithm without a window keeps the default.
        c.algorithm = Some(Algorithm::LoadStoreTwoShot);
        assert_eq!(pick(&c, ar, 16 << 20, false), Algorithm::Ring);
        assert_eq!(pick(&c, ar, 16, true), Algorithm::LoadStoreTwoShot);
        c.algorithm = Some(Algorithm::Ring);
        assert_eq!(pick(&c, ar, 16, true), Algorithm::Ring);
    }
}
