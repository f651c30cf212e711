//! Bootstrap (stub of the public API; being written).
use std::net::SocketAddr;
use std::time::Duration;

/// The job's shared secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);
impl Secret {
    /// A fresh random secret.
    pub fn random() -> crate::Result<Self> { todo!() }
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String { todo!() }
    /// Parses 64 hex characters.
    pub fn from_hex(_s: &str) -> crate::Result<Self> { todo!() }
}

/// The root rendezvous service.
pub struct RootServer;
impl RootServer {
    /// Binds `bind` and serves one rendezvous of `nranks` ranks in a background thread.
    pub fn start(_bind: SocketAddr, _secret: Secret, _nranks: u32, _timeout: Duration) -> crate::Result<Self> { todo!() }
    /// The bound address (port resolved).
    pub fn addr(&self) -> SocketAddr { todo!() }
    /// Waits for the rendezvous to finish.
    pub fn join(self) -> crate::Result<()> { todo!() }
}
