//! The root rendezvous: ranks find each other through it.
//!
//! Protocol (one TCP connection per rank, authenticated with the job secret):
//! 1. A rank connects with the payload `nranks: u32, rank: u32`.
//! 2. Rounds: every rank sends one frame `[kind u8] body`; kind `ROUND` carries a blob, kind
//!    `CLOSE` ends the rank's participation. When all ranks sent `ROUND`, the root answers
//!    every rank with the list of all blobs in rank order (an all-gather). When all sent
//!    `CLOSE`, the root exits.
//! 3. If anything fails (a rank never arrives, two ranks claim one rank number, a rank
//!    disconnects), the root sends `ERROR` with a message naming the ranks concerned to every
//!    connected rank, so each rank's error says who is missing rather than just timing out.

use super::wire::{read_frame, write_frame, Dec, Enc};
use super::Secret;
use crate::error::{Error, Result};
use oxccl_transports::tcp::Listener;
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frame kinds.
pub(crate) const ROUND: u8 = 1;
pub(crate) const CLOSE: u8 = 2;
pub(crate) const ERROR: u8 = 3;

/// Purpose string of the key that authenticates connections to the root.
pub(crate) const ROOT_KEY: &str = "oxccl root rendezvous";

/// The root rendezvous service, running in a background thread.
pub struct RootServer {
    addr: SocketAddr,
    handle: JoinHandle<Result<()>>,
}

impl RootServer {
    /// Binds `bind` (port 0: any free port) and serves one rendezvous of `nranks` ranks.
    /// Gives up once `timeout` passes without the next expected message.
    pub fn start(bind: SocketAddr, secret: Secret, nranks: u32, timeout: Duration) -> Result<Self> {
        if nranks == 0 {
            return Err(Error::invalid(
                "RootServer::start",
                "nranks must be at least 1",
            ));
        }
        Self::spawn(bind, secret, Some(nranks), timeout)
    }

    /// Like [`RootServer::start`], learning the number of ranks from the first one that
    /// connects (used by `UniqueId::new`, which does not know it yet).
    pub fn start_any(bind: SocketAddr, secret: Secret, timeout: Duration) -> Result<Self> {
        Self::spawn(bind, secret, None, timeout)
    }

    fn spawn(
        bind: SocketAddr,
        secret: Secret,
        nranks: Option<u32>,
        timeout: Duration,
    ) -> Result<Self> {
        let listener = Listener::bind(bind).map_err(|e| Error::Bootstrap {
            rank: u32::MAX,
            detail: format!("root cannot listen on {bind}: {e}"),
        })?;
        let addr = listener.local_addr();
        let handle = std::thread::Builder::new()
            .name("oxccl-root".into())
            .spawn(move || {
                let r = serve(&listener, secret, nranks, timeout);
                if let Err(e) = &r {
                    tracing::warn!(target: "oxccl::bootstrap", "root rendezvous at {addr} failed: {e}");
                }
                r
            })
            .map_err(|e| Error::Internal(format!("cannot start the root thread: {e}")))?;
        Ok(RootServer { addr, handle })
    }

    /// The address the root listens on (port resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the rendezvous finished (all ranks closed) or failed.
    pub fn join(self) -> Result<()> {
        self.handle
            .join()
            .map_err(|_| Error::Internal("the root thread panicked".into()))?
    }

    /// Lets the rendezvous run on its own; it ends by itself.
    pub fn detach(self) {}
}

fn root_err(detail: String) -> Error {
    Error::Bootstrap {
        rank: u32::MAX,
        detail,
    }
}

fn serve(
    listener: &Listener,
    secret: Secret,
    nranks: Option<u32>,
    timeout: Duration,
) -> Result<()> {
    let key = secret.subkey(ROOT_KEY);
    let mut expected = nranks;
    let mut conns: Vec<Option<TcpStream>> = Vec::new();
    let mut arrived = 0u32;
    let result = (|| -> Result<()> {
        // Phase 1: every rank connects.
        let deadline = Instant::now() + timeout;
        while expected.is_none_or(|n| arrived < n) {
            let (stream, payload, from) = listener.accept(&key, deadline).map_err(|e| {
                let missing = missing_ranks(&conns, expected);
                root_err(format!(
                    "{arrived} of {} ranks arrived; missing ranks {missing}: {e}",
                    expected.map_or("?".into(), |n| n.to_string())
                ))
            })?;
            let mut d = Dec(&payload);
            let (n, rank) = match (d.u32(), d.u32()) {
                (Ok(n), Ok(r)) => (n, r),
                _ => {
                    tracing::warn!(target: "oxccl::bootstrap", "root: malformed hello from {from}");
                    continue;
                }
            };
            if n > crate::MAX_RANKS {
                return Err(root_err(format!(
                    "rank {rank} at {from} asks for {n} ranks, more than the {} oxccl supports",
                    crate::MAX_RANKS
                )));
            }
            let n_expected = *expected.get_or_insert(n);
            if n != n_expected || n == 0 {
                return Err(root_err(format!(
                    "rank {rank} at {from} says the job has {n} ranks, others say {n_expected}"
                )));
            }
            if conns.len() < n as usize {
                conns.resize_with(n as usize, || None);
            }
            if rank >= n {
                return Err(root_err(format!(
                    "rank {rank} at {from} is out of range for {n} ranks"
                )));
            }
            if conns[rank as usize].is_some() {
                return Err(root_err(format!(
                    "two processes claim rank {rank} (the second from {from})"
                )));
            }
            conns[rank as usize] = Some(stream);
            arrived += 1;
        }
        // Phase 2: all-gather rounds until every rank closes.
        loop {
            let deadline = Instant::now() + timeout;
            let mut blobs = Vec::with_capacity(conns.len());
            let mut closed = 0;
            for (rank, c) in conns.iter_mut().enumerate() {
                let s = c
                    .as_mut()
                    .ok_or_else(|| Error::Internal("root lost a rank".into()))?;
                let frame = read_frame(s, deadline).map_err(|e| {
                    root_err(format!(
                        "rank {rank} did not send its next bootstrap message: {e}"
                    ))
                })?;
                match frame.first() {
                    Some(&ROUND) => blobs.push(frame[1..].to_vec()),
                    Some(&CLOSE) => closed += 1,
                    _ => return Err(root_err(format!("rank {rank} sent a malformed frame"))),
                }
            }
            if closed == conns.len() {
                return Ok(());
            }
            if closed != 0 {
                return Err(root_err(format!(
                    "{closed} ranks finished the bootstrap while the others started another round"
                )));
            }
            let mut out = Enc::default();
            out.u8(ROUND).u32(blobs.len() as u32);
            for b in &blobs {
                out.bytes(b);
            }
            for (rank, c) in conns.iter_mut().enumerate() {
                if let Some(s) = c {
                    write_frame(s, &out.0, timeout)
                        .map_err(|e| root_err(format!("cannot answer rank {rank}: {e}")))?;
                }
            }
        }
    })();
    if let Err(e) = &result {
        let mut msg = Enc::default();
        msg.u8(ERROR).str(&e.to_string());
        for s in conns.iter_mut().flatten() {
            let _ = write_frame(s, &msg.0, timeout);
        }
    }
    result
}

fn missing_ranks(conns: &[Option<TcpStream>], expected: Option<u32>) -> String {
    let Some(n) = expected else {
        return "(unknown: no rank arrived)".into();
    };
    let missing: Vec<String> = (0..n as usize)
        .filter(|&r| conns.get(r).is_none_or(|c| c.is_none()))
        .map(|r| r.to_string())
        .collect();
    if missing.len() > 16 {
        format!(
            "{} and {} more",
            missing[..16].join(", "),
            missing.len() - 16
        )
    } else {
        missing.join(", ")
    }
}
