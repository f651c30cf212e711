//! The communicator: a set of ranks that run collectives together.

mod api;
mod check;
mod group;
mod init;
#[cfg(feature = "mpi")]
mod mpi;
mod nodes;
mod shared;
mod shrink;
mod split;
mod tags;

pub use group::{Group, Pending};
pub(crate) use init::decode_rank_info;
pub use nodes::NodeMap;
pub use shared::SharedBuffer;
pub use shrink::PendingInit;
pub(crate) use tags::describe as describe_tag;
pub(crate) use tags::{CHECK as CHECK_TAG, P2P as P2P_TAG, SEQ as SEQ_TAG};

use crate::bootstrap::{LaunchEnv, RootServer, UniqueId};
use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A group of `nranks` processes (or threads) that run collectives together; this value is
/// one rank of it.
///
/// Create one per rank with [`Communicator::init`] (a shared [`UniqueId`]) or
/// [`Communicator::from_env`] (launchers). Every rank must issue the same collectives in the
/// same order with matching arguments; point-to-point sends and receives are matched per
/// peer in issue order. Dropping the communicator closes its connections.
///
/// Operations take `&mut self`: one op (or [`Group`]) is in flight at a time, and its
/// [`Pending`] handle borrows the buffers until it completes.
pub struct Communicator {
    /// Dropped first: its goodbye reaches the peers before the data connections close.
    _watchdog: Option<crate::health::watchdog::Watchdog>,
    rank: u32,
    nranks: u32,
    engine: Engine,
    advertised_ip: IpAddr,
    config: Config,
    failed: Option<String>,
    tags: tags::TagCounter,
    /// Plans by (algorithm, collective with root/peer, channels): at most a few per root
    /// and peer, so the cache stays small.
    /// A short list searched linearly: cheaper per op than hashing the key.
    plans: Vec<(PlanKey, std::sync::Arc<crate::engine::PreparedPlan>)>,
    /// The tuner's decisions from `OXCCL_TUNING_FILE`, if it measured this communicator's
    /// rank count and link class.
    tuned: Option<Box<crate::tuner::Decisions>>,
    /// How the ranks reach each other (the same on every rank).
    link_class: crate::tuner::LinkClass,
    /// The node of every rank (the same on every rank).
    nodes: NodeMap,
    /// `nodes` for the plan builder, when the ranks span several nodes.
    layout: Option<oxccl_algorithms::Nodes>,
    /// Where the hierarchical plans are predicted to win (several nodes, one with 2+ ranks).
    planner: Option<Box<crate::tuner::NodePlanner>>,
    /// Shrinks so far (the same count on every survivor: it tells their rendezvous apart).
    shrinks: u64,
    /// An `OXCCL_CHECK` exchange is being launched (it is not checked itself, and its tag
    /// is set apart from the caller's collectives).
    checking: bool,
}

/// What a plan depends on besides the communicator's rank and size.
type PlanKey = (crate::Algorithm, oxccl_algorithms::Collective, u32);

/// Aborts a communicator from another thread: its wait in progress (or next op) fails with
/// [`Error::Aborted`] within a few milliseconds.
#[derive(Clone, Debug)]
pub struct AbortHandle(Arc<crate::health::Health>);

impl AbortHandle {
    /// Requests the abort.
    pub fn abort(&self) {
        self.0.abort.store(true, Ordering::Relaxed);
    }

    /// The first rank the watchdog found dead, if any: readable while another thread is in a
    /// collective on the communicator (which then fails with [`Error::PeerDied`]).
    pub fn dead_rank(&self) -> Option<u32> {
        self.0.dead().map(|(rank, _)| rank)
    }
}

impl Communicator {
    /// Joins the communicator named by `id` as `rank` of `nranks`. Blocks until every rank
    /// joined and all connections are up, or fails within `config.timeout` with an error
    /// that names what is missing.
    pub fn init(id: UniqueId, nranks: u32, rank: u32, config: Config) -> Result<Self> {
        init::init(id, nranks, rank, config)
    }

    /// Joins the job described by the environment ([`LaunchEnv`]: oxccl-run, torchrun, Open
    /// MPI, PMI, Slurm), with [`Config::from_env`]. Rank 0 hosts the root rendezvous unless
    /// a launcher does (`OXCCL_ROOT_EXTERNAL=1`).
    pub fn from_env() -> Result<Self> {
        crate::logging::init();
        Self::from_launch(&LaunchEnv::from_env()?, Config::from_env()?)
    }

    /// Joins the job described by `env` with `config` (what [`Communicator::from_env`] does,
    /// for programs that build their configuration themselves, e.g. from flags).
    pub fn from_launch(env: &LaunchEnv, config: Config) -> Result<Self> {
        crate::logging::init();
        if env.hosts_root {
            let root = RootServer::start(env.id.root, env.id.secret, env.nranks, config.timeout)
                .or_else(|first| {
                    // The advertised address may not be local (a NAT or a name); listen on
                    // every interface at that port instead, and say so.
                    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), env.id.root.port());
                    tracing::warn!(target: "oxccl::bootstrap", "{first}; listening on {any} instead");
                    RootServer::start(any, env.id.secret, env.nranks, config.timeout)
                })?;
            root.detach();
        }
        Self::init(env.id, env.nranks, env.rank, config)
    }

    /// This rank, `0..size()`.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> u32 {
        self.nranks
    }

    /// Which node (host) every rank of this communicator is on, and this rank's place on
    /// its node: the same map on every rank.
    pub fn nodes(&self) -> &NodeMap {
        &self.nodes
    }

    /// This rank's index among the ranks of its node.
    pub fn local_rank(&self) -> u32 {
        self.nodes.local_rank(self.rank).unwrap_or(0)
    }

    /// Number of ranks on this rank's node.
    pub fn local_size(&self) -> u32 {
        self.nodes.local_size(self.rank).unwrap_or(1)
    }

    /// The IP address this rank's data listener bound and advertised to its peers
    /// (`OXCCL_SOCKET_ADDR`, `OXCCL_SOCKET_IFNAME` or the route to the root).
    pub fn advertised_ip(&self) -> std::net::IpAddr {
        self.advertised_ip
    }

    /// How this communicator's ranks reach each other: the link class tuning files are
    /// keyed by.
    pub fn link_class(&self) -> crate::tuner::LinkClass {
        self.link_class
    }

    /// What the tuner runs an op of `collective` over `count` elements of `dtype` per
    /// block with (the algorithm and channel count), given this communicator's
    /// configuration, tuning file and links.
    pub fn choice(
        &self,
        collective: oxccl_algorithms::Collective,
        dtype: crate::DataType,
        count: usize,
    ) -> crate::tuner::Choice {
        let choice = crate::tuner::choose(
            &self.config,
            self.tuned.as_deref(),
            collective,
            dtype,
            count,
            self.nranks,
            self.engine.links.window.is_some(),
        );
        crate::tuner::refine(
            &self.config,
            self.tuned.as_deref(),
            self.planner.as_deref(),
            (collective, dtype, count),
            choice,
        )
    }

    /// The links the multi-node choice assumed (intra-node, inter-node), when the ranks
    /// span several nodes and one of them holds more than one rank.
    pub fn node_links(&self) -> Option<oxccl_algorithms::cost::NodeLinks> {
        self.planner.as_ref().map(|p| p.links())
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle that aborts this communicator from another thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(self.engine.health.clone())
    }

    /// Closes every connection now; peers waiting on this rank get an error promptly.
    pub fn abort(mut self) {
        self.engine.health.abort.store(true, Ordering::Relaxed);
        self.engine.links.close();
    }

    /// Fails if an earlier op broke the communicator or it was aborted.
    fn check_usable(&self) -> Result<()> {
        if let Some(first) = &self.failed {
            return Err(Error::Failed {
                rank: self.rank,
                first: first.clone(),
            });
        }
        if self.engine.health.abort.load(Ordering::Relaxed) {
            return Err(Error::Aborted { rank: self.rank });
        }
        if let Some((dead, _)) = self.engine.health.dead() {
            return Err(Error::PeerDied {
                rank: self.rank,
                dead,
                op: "the next operation".into(),
            });
        }
        Ok(())
    }

    /// Records a failure that leaves the connections in an unknown state.
    fn fail(&mut self, e: &Error) {
        if !e.is_recoverable() && self.failed.is_none() {
            self.failed = Some(e.to_string());
            tracing::warn!(target: "oxccl::coll", "{e}");
        }
    }
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicator")
            .field("rank", &self.rank)
            .field("nranks", &self.nranks)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}
