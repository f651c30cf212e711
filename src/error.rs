//! oxccl's error type.

use std::time::Duration;

/// Result alias used across oxccl.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an oxccl call failed. Every message names the rank and, where one is involved, the
/// peer, operation and step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument was wrong (buffer length, root, peer, count). Nothing was sent; the
    /// communicator stays usable.
    #[error("invalid argument to {op}: {detail}")]
    InvalidArgument {
        /// The call that rejected it.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A configuration value (environment variable or `Config` field) is unusable.
    #[error("invalid configuration {knob}: {detail}")]
    Config {
        /// The knob, e.g. `OXCCL_TIMEOUT`.
        knob: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The launch environment does not say how to start (missing rank, size or root).
    #[error("cannot start from the environment: {0}")]
    Environment(String),
    /// Finding the other ranks failed (root unreachable, bad peer, mismatched job).
    #[error("bootstrap failed on {}: {detail}", who(*rank))]
    Bootstrap {
        /// This rank (or `u32::MAX` for the root service).
        rank: u32,
        /// What went wrong, including the address involved.
        detail: String,
    },
    /// A transport failed while talking to a peer.
    #[error("rank {rank}: {op} with peer {peer} failed: {source}")]
    Transport {
        /// This rank.
        rank: u32,
        /// The peer rank.
        peer: u32,
        /// The operation (e.g. `all_reduce`, `connect`).
        op: String,
        /// The transport's error.
        #[source]
        source: oxccl_transports::Error,
    },
    /// An operation made no progress within the deadline (`OXCCL_TIMEOUT`).
    #[error(
        "rank {rank}: {op} made no progress for {waited:.1?} (deadline): waiting on {waiting_for} \
         at {at}{ranks}"
    )]
    Timeout {
        /// This rank.
        rank: u32,
        /// The operation, with its sequence number (`all_reduce #57`).
        op: String,
        /// What the stuck step waits for, e.g. `data from rank 3`.
        waiting_for: String,
        /// Where the op is stuck: channel, step and round.
        at: String,
        /// How long nothing moved.
        waited: Duration,
        /// Where every rank stands, from their answers at the deadline (`; rank 3 has not
        /// entered all_reduce #57 (it finished all_reduce #56); ranks 0-2 are in
        /// all_reduce #57`), or empty. (Boxed: it keeps [`Error`] small.)
        ranks: Box<str>,
    },
    /// A rank of the communicator died (its process ended without leaving the
    /// communicator: killed, crashed) while this rank needed it; or the network to it failed,
    /// which looks the same from here.
    #[error(
        "rank {rank}: {op} failed: rank {dead} died (its control connection closed without a \
         goodbye: the process ended, or the network to it failed)"
    )]
    PeerDied {
        /// This rank.
        rank: u32,
        /// The rank found dead.
        dead: u32,
        /// The operation in flight (or about to start).
        op: String,
    },
    /// The communicator was aborted (`abort()` or an [`AbortHandle`](crate::AbortHandle)).
    #[error("rank {rank}: communicator aborted")]
    Aborted {
        /// This rank.
        rank: u32,
    },
    /// An earlier operation failed midway, so the communicator's connections are in an
    /// unknown state; create a new communicator.
    #[error("rank {rank}: communicator unusable after an earlier failure: {first}")]
    Failed {
        /// This rank.
        rank: u32,
        /// The first failure.
        first: String,
    },
    /// The CUDA driver is missing or refused a call (GPU buffers, feature `cuda`).
    #[error("CUDA: {0}")]
    Cuda(String),
    /// A bug in oxccl (an invariant did not hold). Please report it.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Names the party of a bootstrap error.
fn who(rank: u32) -> String {
    if rank == u32::MAX {
        "the root".into()
    } else {
        format!("rank {rank}")
    }
}

impl Error {
    /// Whether the communicator remains usable after this error (argument errors only).
    pub fn is_recoverable(&self) -> bool {
        matches!(self, Error::InvalidArgument { .. })
    }

    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            detail: detail.into(),
        }
    }
}
