//! Transport errors.

use std::io;

/// Result alias for transport calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a transport call failed. Messages name the peer where one is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, including the peer or object.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The peer closed the connection or its process is gone.
    #[error("connection to {peer} closed: {detail}")]
    PeerClosed {
        /// The peer (rank or address).
        peer: String,
        /// What was observed.
        detail: String,
    },
    /// The peer sent something that breaks the protocol.
    #[error("protocol error with {peer}: {detail}")]
    Protocol {
        /// The peer (rank or address).
        peer: String,
        /// What was wrong.
        detail: String,
    },
    /// A connecting party could not prove it knows the job's secret.
    #[error("authentication failed with {peer}: {detail}")]
    Auth {
        /// The peer address.
        peer: String,
        /// What was wrong.
        detail: String,
    },
    /// A deadline passed.
    #[error("timed out after {waited_ms} ms: {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long it waited.
        waited_ms: u128,
    },
    /// A configuration value is unusable.
    #[error("invalid transport configuration: {0}")]
    Config(String),
}

impl Error {
    /// Wraps an `io::Error` with a description of what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
