//! Which algorithm runs an op, and on how many channels.
//!
//! Size thresholds decide, measured on the 2-core development machine (oxccl-perf, f32 sum,
//! every algorithm forced in turn; README "Algorithms"):
//!
//! - Without a shared-memory window (ranks on several hosts, or TCP): an all-reduce of at
//!   most `OXCCL_RD_MAX` (32 KiB) bytes runs recursive doubling on fewer than 8 ranks; on 8
//!   or more, one of at most `OXCCL_TREE_MAX` (256 KiB) runs the double binary tree; larger
//!   ones run ring. Over TCP at 4 ranks recursive doubling took 38–90 µs up to 32 KiB against
//!   the ring's 70–159; at 8 ranks the tree took 97–188 µs up to 32 KiB and 1.05 ms at
//!   256 KiB against the ring's 199–558 µs and 1.56 ms, and the ring won from 2 MiB.
//!   Other collectives run ring (chains for broadcast and reduce, pairwise all-to-all).
//!
//! When every rank is on this host and the communicator has a shared-memory window
//! (`OXCCL_SHM_WINDOW`), the load/store algorithms replace both for every collective but
//! point-to-point: an all-reduce of at most `OXCCL_LS_ONE_SHOT_MAX` bytes runs
//! load/store one-shot, a larger one two-shot; the other collectives run load/store
//! one-shot (a direct copy from the owner's window, which is already the least traffic).
//!
//! `OXCCL_ALGO` naming one algorithm forces it wherever it supports the collective (for the
//! load/store algorithms: and the communicator has a window); elsewhere the default choice
//! stands. A selection in NCCL_ALGO's syntax ([`AlgoRules`]) keeps the default when it
//! allows it and otherwise takes the first allowed algorithm in a size-dependent order of
//! preference. Every input to the decision (collective, count, datatype, ranks, shared
//! settings) is the same on every rank, so all ranks choose alike.

mod rules;
mod table;

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
/// `window`: every rank is on this host and has a shared-memory window.
pub fn choose(
    config: &Config,
    collective: Collective,
    dtype: DataType,
    count: usize,
    nranks: u32,
    window: bool,
) -> Choice {
    let block_bytes = count.saturating_mul(dtype.size());
    let p2p = matches!(
        collective,
        Collective::Send { .. } | Collective::Recv { .. }
    );
    let default = if window && nranks > 1 && !p2p {
        if collective == Collective::AllReduce && block_bytes > config.ls_one_shot_max {
            Algorithm::LoadStoreTwoShot
        } else {
            Algorithm::LoadStoreOneShot
        }
    } else if collective == Collective::AllReduce
        && nranks > 1
        && nranks < 8
        && block_bytes <= config.rd_max
    {
        Algorithm::RecursiveDoubling
    } else if collective == Collective::AllReduce && nranks >= 8 && block_bytes <= config.tree_max {
        Algorithm::Tree
    } else {
        Algorithm::Ring
    };
    let usable = |a: Algorithm| a.supports(collective) && (window || !a.is_load_store());
    let allowed = |a: Algorithm| {
        usable(a)
            && config
                .algo_rules
                .as_ref()
                .is_none_or(|r| r.allows(collective, a))
    };
    let algorithm = match config.algorithm {
        Some(forced) if usable(forced) => forced,
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
    let nchannels =
        (block_bytes / MIN_BYTES_PER_CHANNEL).clamp(1, config.nchannels as usize) as u32;
    Choice {
        algorithm,
        nchannels,
    }
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
        let pick =
            |c: &Config, coll, count| choose(c, coll, DataType::Float32, count, 4, false).algorithm;
        let at = |p, count| {
            choose(
                &Config::default(),
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
            choose(&c, Collective::AllReduce, DataType::Float32, 16, 1, false).algorithm,
            Algorithm::Ring
        );
        c.algorithm = Some(Algorithm::Ring);
        assert_eq!(pick(&c, Collective::AllReduce, 16), Algorithm::Ring);
        c.algorithm = Some(Algorithm::OneShot);
        assert_eq!(
            pick(&c, Collective::AllReduce, 16 << 20),
            Algorithm::OneShot
        );
        assert_eq!(
            pick(&c, Collective::Broadcast { root: 0 }, 16),
            Algorithm::Ring
        );
        assert_eq!(
            choose(
                &c,
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
        let pick =
            |c: &Config, coll, count| choose(c, coll, DataType::Float32, count, 8, false).algorithm;
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
            Algorithm::Ring
        );
    }

    #[test]
    fn one_host_with_a_window_goes_load_store() {
        let mut c = Config::default();
        let pick = |c: &Config, coll, count, window| {
            choose(c, coll, DataType::Float32, count, 4, window).algorithm
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
