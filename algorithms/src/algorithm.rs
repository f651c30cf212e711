//! Choosing an algorithm and building a rank's [`Plan`] with it.
//!
//! [`build`] is the one entry point: it checks the arguments once (so every algorithm module
//! can assume a well-formed request) and hands over to the algorithm.

use std::fmt;
use std::str::FromStr;

use crate::{
    binomial, bruck, doubling, linear, load_store, one_shot, ring, tree, Collective, Nodes, Plan,
    Shape,
};

/// An algorithm that can build plans.
///
/// Names (see [`Algorithm::name`]) are what logs, configuration and the tuner use; parsing
/// ([`FromStr`]) is case-insensitive and also accepts the aliases documented on each
/// algorithm.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// The ring (see [`crate::ring`]): `r -> r+1 mod p` on every channel. Supports every
    /// collective but gather and scatter (which have no ring schedule worth the name: see
    /// [`Algorithm::Linear`] and [`Algorithm::Binomial`]); all-to-all and point-to-point
    /// are direct exchanges.
    Ring,
    /// One-shot all-reduce (see [`crate::one_shot`]), for small messages: every rank sends its
    /// whole input to every other rank at once, then reduces what it receives in rank order
    /// (so every rank's result is bit-identical). Per rank, `p-1` messages sent and received
    /// concurrently: `α + (p-1)·n·β + (p-1)·n·γ`, against the ring's
    /// `2(p-1)α + 2(p-1)/p·n·β + (p-1)/p·n·γ`; it wins while
    /// `(p-1)·n·((β+γ) - (2β+γ)/p) < (2p-3)·α`, roughly `n < 2α/(β+γ)`. Supports
    /// [`Collective::AllReduce`] only. Name `one_shot`; also parsed from `oneshot` and
    /// `one-shot`.
    OneShot,
    /// Load/store one-shot (see [`crate::load_store`]): every rank copies its data into its
    /// peer-readable window once, then every rank reads what it needs straight from the
    /// others' windows (all-reduce: folds every window into its output, in rank order). For
    /// ranks that can read each other's memory (one host); every collective but
    /// point-to-point (gather and scatter included); always one channel. Name
    /// `ls_one_shot`; also `load_store_one_shot`.
    LoadStoreOneShot,
    /// Load/store two-shot all-reduce (see [`crate::load_store`]): each rank reduces its
    /// `1/p` slice straight from the others' windows, then every rank copies the reduced
    /// slices from their owners. For large messages on one host; always one channel. Name
    /// `ls_two_shot`; also `load_store_two_shot`.
    LoadStoreTwoShot,
    /// Double binary tree all-reduce (see [`crate::tree`]): two complementary binary trees,
    /// each reducing then broadcasting half the data, pipelined chunk by chunk; every rank is
    /// interior in at most one tree. `2·log2(p)` latency steps instead of the ring's
    /// `2(p−1)`. Name `tree`.
    Tree,
    /// Recursive doubling (see [`crate::doubling`]): `⌈log2 p⌉` pairwise exchanges of the
    /// whole buffer (all-reduce) or of what was gathered so far (all-gather); ranks beyond
    /// the largest power of two fold in first and get the result last. For small messages.
    /// Name `recursive_doubling`; also `rd`.
    RecursiveDoubling,
    /// Recursive halving-doubling (Rabenseifner; see [`crate::doubling`]): reduce-scatter by
    /// recursive halving, then (all-reduce) all-gather by recursive doubling; bandwidth-optimal
    /// with `2⌈log2 p⌉` latency steps; non-powers of two fold the extra ranks in first. Name
    /// `halving_doubling`; also `rabenseifner`, `hd`.
    HalvingDoubling,
    /// Bruck (see [`crate::bruck`]): all-gather and all-to-all in `⌈log2 p⌉` steps, each
    /// sending to rank `r − 2^k` and receiving from `r + 2^k`. For small messages. Name
    /// `bruck`.
    Bruck,
    /// Binomial tree broadcast, reduce, gather and scatter (see [`crate::binomial`]):
    /// `⌈log2 p⌉` levels from or to the root (gather and scatter: one message per block, so
    /// a rank forwards its subtree's blocks one by one). Name `binomial`.
    Binomial,
    /// Linear all-to-all, gather and scatter (see [`crate::linear`]): every rank sends every
    /// block at once and then receives every block; gather and scatter talk to the root
    /// directly. Name `linear`.
    Linear,
    /// Hierarchical, node-aware plans (see [`crate::hierarchical`]): all-reduce as intra-node
    /// reduce-scatter, inter-node all-reduce of each shard among the ranks of the same local
    /// index, intra-node all-gather; all-gather and reduce-scatter in an inter-node and an
    /// intra-node phase; broadcast and reduce through one rank per node; all-to-all
    /// aggregated per node. Built over a [`Nodes`] layout with [`crate::build_with_nodes`];
    /// without one ([`build`]) every rank is on one node and the plans are flat. Name `hier`;
    /// also `hierarchical`.
    Hierarchical,
}

impl Algorithm {
    /// Every algorithm, in the order the tuner should consider them.
    pub const ALL: &'static [Algorithm] = &[
        Algorithm::Ring,
        Algorithm::OneShot,
        Algorithm::LoadStoreOneShot,
        Algorithm::LoadStoreTwoShot,
        Algorithm::Tree,
        Algorithm::RecursiveDoubling,
        Algorithm::HalvingDoubling,
        Algorithm::Bruck,
        Algorithm::Binomial,
        Algorithm::Linear,
        Algorithm::Hierarchical,
    ];

    /// The lower-case name, as accepted by [`FromStr`].
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::Ring => "ring",
            Algorithm::OneShot => "one_shot",
            Algorithm::LoadStoreOneShot => "ls_one_shot",
            Algorithm::LoadStoreTwoShot => "ls_two_shot",
            Algorithm::Tree => "tree",
            Algorithm::RecursiveDoubling => "recursive_doubling",
            Algorithm::HalvingDoubling => "halving_doubling",
            Algorithm::Bruck => "bruck",
            Algorithm::Binomial => "binomial",
            Algorithm::Linear => "linear",
            Algorithm::Hierarchical => "hier",
        }
    }

    /// Other spellings [`FromStr`] accepts.
    fn aliases(&self) -> &'static [&'static str] {
        match self {
            Algorithm::Ring => &[],
            Algorithm::OneShot => &["oneshot", "one-shot"],
            Algorithm::LoadStoreOneShot => &["load_store_one_shot", "ls-one-shot"],
            Algorithm::LoadStoreTwoShot => &["load_store_two_shot", "ls-two-shot"],
            Algorithm::Tree => &["double_binary_tree"],
            Algorithm::RecursiveDoubling => &["rd", "recursive-doubling"],
            Algorithm::HalvingDoubling => &["hd", "rabenseifner", "halving-doubling"],
            Algorithm::Hierarchical => &["hierarchical"],
            Algorithm::Bruck | Algorithm::Binomial | Algorithm::Linear => &[],
        }
    }

    /// Whether this algorithm can build a plan for `collective`.
    pub fn supports(&self, collective: Collective) -> bool {
        match self {
            Algorithm::Ring => !matches!(
                collective,
                Collective::Gather { .. } | Collective::Scatter { .. }
            ),
            Algorithm::OneShot | Algorithm::LoadStoreTwoShot => collective == Collective::AllReduce,
            Algorithm::LoadStoreOneShot => !matches!(
                collective,
                Collective::Send { .. } | Collective::Recv { .. }
            ),
            Algorithm::Tree => collective == Collective::AllReduce,
            Algorithm::RecursiveDoubling => {
                matches!(collective, Collective::AllReduce | Collective::AllGather)
            }
            Algorithm::HalvingDoubling => {
                matches!(
                    collective,
                    Collective::AllReduce | Collective::ReduceScatter
                )
            }
            Algorithm::Bruck => matches!(collective, Collective::AllGather | Collective::AllToAll),
            Algorithm::Binomial => matches!(
                collective,
                Collective::Broadcast { .. }
                    | Collective::Reduce { .. }
                    | Collective::Gather { .. }
                    | Collective::Scatter { .. }
            ),
            Algorithm::Linear => matches!(
                collective,
                Collective::AllToAll | Collective::Gather { .. } | Collective::Scatter { .. }
            ),
            Algorithm::Hierarchical => !matches!(
                collective,
                Collective::Gather { .. }
                    | Collective::Scatter { .. }
                    | Collective::Send { .. }
                    | Collective::Recv { .. }
            ),
        }
    }

    /// Whether the algorithm's plans read other ranks' windows, so that every rank must be
    /// reachable by load/store (one host with shared memory).
    pub fn is_load_store(&self) -> bool {
        matches!(
            self,
            Algorithm::LoadStoreOneShot | Algorithm::LoadStoreTwoShot
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an [`Algorithm`] from a name that none has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseAlgorithmError {
    /// The name that was given.
    pub name: String,
}

impl fmt::Display for ParseAlgorithmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Algorithm::ALL.iter().map(Algorithm::name).collect();
        write!(
            f,
            "unknown algorithm {:?} (known: {})",
            self.name,
            known.join(", ")
        )
    }
}

impl std::error::Error for ParseAlgorithmError {}

impl FromStr for Algorithm {
    type Err = ParseAlgorithmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Algorithm::ALL
            .iter()
            .copied()
            .find(|a| {
                std::iter::once(a.name())
                    .chain(a.aliases().iter().copied())
                    .any(|known| known.eq_ignore_ascii_case(name))
            })
            .ok_or_else(|| ParseAlgorithmError { name: s.to_owned() })
    }
}

/// Why [`build`] refused to build a plan.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// `nranks` was zero.
    NoRanks,
    /// `rank` was not below `nranks`.
    RankOutOfRange {
        /// The rank asked for.
        rank: u32,
        /// The communicator size.
        nranks: u32,
    },
    /// The collective's root (broadcast, reduce, gather, scatter) or peer (send, recv) was
    /// not below `nranks`.
    PeerOutOfRange {
        /// The collective, naming the root or peer.
        collective: Collective,
        /// The communicator size.
        nranks: u32,
    },
    /// `nchannels` was zero.
    NoChannels,
    /// A send or receive named the calling rank as its peer: the engine copies locally for
    /// self point-to-point, without a plan.
    SelfPeer {
        /// The collective (`Send` or `Recv`).
        collective: Collective,
        /// The calling rank.
        rank: u32,
    },
    /// The algorithm cannot implement this collective.
    Unsupported {
        /// The algorithm asked for.
        algorithm: Algorithm,
        /// The collective asked for.
        collective: Collective,
    },
    /// The node layout given to [`crate::build_with_nodes`] is for another number of ranks.
    NodesMismatch {
        /// Ranks in the layout.
        layout: u32,
        /// The communicator size.
        nranks: u32,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::NoRanks => f.write_str("a communicator needs at least one rank"),
            PlanError::RankOutOfRange { rank, nranks } => {
                write!(f, "rank {rank} is out of range for {nranks} ranks")
            }
            PlanError::PeerOutOfRange { collective, nranks } => write!(
                f,
                "{} names {}, out of range for {nranks} ranks",
                collective.name(),
                peer_words(collective)
            ),
            PlanError::NoChannels => f.write_str("a plan needs at least one channel"),
            PlanError::SelfPeer { collective, rank } => write!(
                f,
                "{} from rank {rank} to itself has no plan (the engine copies locally)",
                collective.name()
            ),
            PlanError::Unsupported {
                algorithm,
                collective,
            } => write!(
                f,
                "algorithm {algorithm} does not implement {}",
                collective.name()
            ),
            PlanError::NodesMismatch { layout, nranks } => write!(
                f,
                "the node layout has {layout} ranks, the communicator {nranks}"
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// "root 7" / "peer 7" for messages.
fn peer_words(collective: &Collective) -> String {
    match *collective {
        Collective::Broadcast { root }
        | Collective::Reduce { root }
        | Collective::Gather { root }
        | Collective::Scatter { root } => format!("root {root}"),
        Collective::Send { peer } | Collective::Recv { peer } => format!("peer {peer}"),
        _ => String::from("no peer"),
    }
}

/// Builds rank `rank`'s plan for `collective` on a communicator of `nranks` ranks, with
/// `nchannels` channels.
///
/// The plan's buffer shapes are exactly [`Collective::input_blocks`] and
/// [`Collective::output_blocks`]; the scratch is the algorithm's (none for the ring, at most
/// one block for one-shot); every channel gets the same step list unless the algorithm's doc
/// says otherwise. Load/store algorithms ignore `nchannels` and build one channel. Plans of all ranks built with the same arguments fit together (the
/// tests prove it with [`crate::verify`]).
pub fn build(
    algorithm: Algorithm,
    collective: Collective,
    nranks: u32,
    rank: u32,
    nchannels: u32,
) -> Result<Plan, PlanError> {
    check_args(algorithm, collective, nranks, rank, nchannels)?;
    if algorithm == Algorithm::Hierarchical {
        return Ok(crate::hierarchical::plan(
            collective,
            &Nodes::single(nranks),
            rank,
            nchannels,
        ));
    }
    Ok(flat(algorithm, collective, nranks, rank, nchannels))
}

/// The checks every entry point makes before building (see [`PlanError`]).
pub(crate) fn check_args(
    algorithm: Algorithm,
    collective: Collective,
    nranks: u32,
    rank: u32,
    nchannels: u32,
) -> Result<(), PlanError> {
    if nranks == 0 {
        return Err(PlanError::NoRanks);
    }
    if rank >= nranks {
        return Err(PlanError::RankOutOfRange { rank, nranks });
    }
    if nchannels == 0 {
        return Err(PlanError::NoChannels);
    }
    match collective {
        Collective::Broadcast { root: peer }
        | Collective::Reduce { root: peer }
        | Collective::Gather { root: peer }
        | Collective::Scatter { root: peer }
        | Collective::Send { peer }
        | Collective::Recv { peer }
            if peer >= nranks =>
        {
            return Err(PlanError::PeerOutOfRange { collective, nranks });
        }
        Collective::Send { peer } | Collective::Recv { peer } if peer == rank => {
            return Err(PlanError::SelfPeer { collective, rank });
        }
        _ => {}
    }
    if !algorithm.supports(collective) {
        return Err(PlanError::Unsupported {
            algorithm,
            collective,
        });
    }
    Ok(())
}

/// [`build`] for every algorithm but [`Algorithm::Hierarchical`], over rank order; the
/// arguments were checked.
pub(crate) fn flat(
    algorithm: Algorithm,
    collective: Collective,
    nranks: u32,
    rank: u32,
    nchannels: u32,
) -> Plan {
    let (splits, scratch, window, steps) = match algorithm {
        Algorithm::Ring => {
            let ring = ring::steps(collective, nranks, rank);
            (ring.splits, 0, 0, ring.steps)
        }
        Algorithm::OneShot => (
            1,
            one_shot::scratch_blocks(nranks, rank),
            0,
            one_shot::all_reduce(nranks, rank),
        ),
        Algorithm::Tree
        | Algorithm::RecursiveDoubling
        | Algorithm::HalvingDoubling
        | Algorithm::Bruck
        | Algorithm::Binomial
        | Algorithm::Linear => {
            let built = match algorithm {
                Algorithm::Tree => tree::steps(collective, nranks, rank),
                Algorithm::RecursiveDoubling | Algorithm::HalvingDoubling => {
                    doubling::steps(algorithm, collective, nranks, rank)
                }
                Algorithm::Bruck => bruck::steps(collective, nranks, rank),
                Algorithm::Binomial => binomial::steps(collective, nranks, rank),
                _ => linear::steps(collective, nranks, rank),
            };
            (built.splits, built.scratch, 0, built.steps)
        }
        Algorithm::LoadStoreOneShot | Algorithm::LoadStoreTwoShot => {
            let plan = if algorithm == Algorithm::LoadStoreOneShot {
                load_store::one_shot(collective, nranks, rank)
            } else {
                load_store::two_shot_all_reduce(nranks, rank)
            };
            // The window protocol is one sequence of posts per rank: one channel.
            return Plan {
                collective,
                nranks,
                rank,
                input: Shape {
                    blocks: collective.input_blocks(nranks, rank),
                },
                output: Shape {
                    blocks: collective.output_blocks(nranks, rank),
                },
                scratch: Shape { blocks: 0 },
                window: Shape {
                    blocks: plan.window,
                },
                splits: plan.splits,
                channels: vec![plan.steps],
            };
        }
        Algorithm::Hierarchical => unreachable!("build() hands hierarchical plans over"),
    };
    Plan {
        collective,
        nranks,
        rank,
        input: Shape {
            blocks: collective.input_blocks(nranks, rank),
        },
        output: Shape {
            blocks: collective.output_blocks(nranks, rank),
        },
        scratch: Shape { blocks: scratch },
        window: Shape { blocks: window },
        splits,
        channels: vec![steps; nchannels as usize],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(*a));
            assert_eq!(a.to_string(), a.name());
        }
        assert_eq!("RiNg".parse::<Algorithm>(), Ok(Algorithm::Ring));
        for alias in ["one_shot", "oneshot", "One-Shot", " ONESHOT "] {
            assert_eq!(
                alias.parse::<Algorithm>(),
                Ok(Algorithm::OneShot),
                "{alias}"
            );
        }
        for wrong in ["tree!", "one shot", "one__shot", "r-ing"] {
            let err = wrong.parse::<Algorithm>().unwrap_err();
            assert_eq!(err.name, wrong);
        }
        let message = "tree!".parse::<Algorithm>().unwrap_err().to_string();
        assert!(message.contains("ring, one_shot, ls_one_shot"), "{message}");
    }

    #[test]
    fn one_shot_supports_only_all_reduce() {
        let os = Algorithm::OneShot;
        for c in [
            Collective::AllGather,
            Collective::ReduceScatter,
            Collective::Broadcast { root: 0 },
            Collective::Reduce { root: 1 },
            Collective::AllToAll,
            Collective::Gather { root: 0 },
            Collective::Scatter { root: 2 },
            Collective::Send { peer: 1 },
            Collective::Recv { peer: 1 },
        ] {
            assert!(!os.supports(c));
            let err = build(os, c, 3, 0, 1).unwrap_err();
            assert_eq!(
                err,
                PlanError::Unsupported {
                    algorithm: os,
                    collective: c
                }
            );
            assert!(err.to_string().contains("one_shot"), "{err}");
        }
        let plan = build(os, Collective::AllReduce, 4, 2, 3).unwrap();
        assert_eq!((plan.splits, plan.scratch.blocks), (1, 1));
        assert_eq!((plan.input.blocks, plan.output.blocks), (1, 1));
        assert_eq!(plan.channels.len(), 3);
        assert_eq!(plan.channels[0], plan.channels[2]);
        let root = build(os, Collective::AllReduce, 4, 0, 1).unwrap();
        assert_eq!(root.scratch.blocks, 0);
    }

    #[test]
    fn rejects_bad_arguments() {
        let ring = Algorithm::Ring;
        let ar = Collective::AllReduce;
        assert_eq!(build(ring, ar, 0, 0, 1), Err(PlanError::NoRanks));
        assert_eq!(
            build(ring, ar, 4, 4, 1),
            Err(PlanError::RankOutOfRange { rank: 4, nranks: 4 })
        );
        assert_eq!(build(ring, ar, 4, 0, 0), Err(PlanError::NoChannels));
        for c in [
            Collective::Broadcast { root: 4 },
            Collective::Reduce { root: 9 },
            Collective::Gather { root: 4 },
            Collective::Scatter { root: 5 },
            Collective::Send { peer: 4 },
            Collective::Recv { peer: 5 },
        ] {
            let err = build(ring, c, 4, 0, 1).unwrap_err();
            assert_eq!(
                err,
                PlanError::PeerOutOfRange {
                    collective: c,
                    nranks: 4
                }
            );
            assert!(err.to_string().contains("out of range"), "{err}");
        }
        for c in [Collective::Send { peer: 2 }, Collective::Recv { peer: 2 }] {
            let err = build(ring, c, 4, 2, 1).unwrap_err();
            assert_eq!(
                err,
                PlanError::SelfPeer {
                    collective: c,
                    rank: 2
                }
            );
        }
    }

    #[test]
    fn gather_and_scatter_are_linear_binomial_and_load_store_only() {
        for c in [
            Collective::Gather { root: 1 },
            Collective::Scatter { root: 0 },
        ] {
            let supporting: Vec<Algorithm> = Algorithm::ALL
                .iter()
                .copied()
                .filter(|a| a.supports(c))
                .collect();
            assert_eq!(
                supporting,
                [
                    Algorithm::LoadStoreOneShot,
                    Algorithm::Binomial,
                    Algorithm::Linear
                ]
            );
            let err = build(Algorithm::Ring, c, 3, 0, 1).unwrap_err();
            assert_eq!(
                err,
                PlanError::Unsupported {
                    algorithm: Algorithm::Ring,
                    collective: c
                }
            );
            assert!(err.to_string().contains(c.name()), "{err}");
        }
        let err = build(Algorithm::Linear, Collective::Gather { root: 3 }, 3, 0, 1);
        assert!(err.unwrap_err().to_string().contains("gather names root 3"));
    }

    #[test]
    fn shapes_follow_the_collective() {
        let plan = build(Algorithm::Ring, Collective::Broadcast { root: 1 }, 3, 0, 2).unwrap();
        assert_eq!(plan.input.blocks, 0);
        assert_eq!(plan.output.blocks, 1);
        assert_eq!(plan.channels.len(), 2);
        assert_eq!(plan.channels[0], plan.channels[1]);
    }
}
