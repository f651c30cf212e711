//! A rank's side of the root rendezvous.

use super::root::{CLOSE, ERROR, ROOT_KEY, ROUND};
use super::wire::{read_frame, write_frame, Dec, Enc};
use super::UniqueId;
use crate::error::{Error, Result};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

/// A rank's connection to the root, used for the all-gathers of communicator creation.
pub(crate) struct BootstrapClient {
    stream: TcpStream,
    rank: u32,
    nranks: u32,
    timeout: Duration,
    root: std::net::SocketAddr,
}

impl BootstrapClient {
    /// Connects to the root of `id`, retrying with backoff until `timeout`.
    pub fn connect(id: &UniqueId, rank: u32, nranks: u32, timeout: Duration) -> Result<Self> {
        let mut hello = Enc::default();
        hello.u32(nranks).u32(rank);
        let key = id.secret.subkey(ROOT_KEY);
        let stream =
            oxccl_transports::tcp::connect(id.root, &key, &hello.0, Instant::now() + timeout)
                .map_err(|e| Error::Bootstrap {
                    rank,
                    detail: format!(
                "cannot reach the root at {} within {timeout:?}: {e} (is rank 0 or the launcher \
                     running, and is the address reachable from this host?)",
                id.root
            ),
                })?;
        Ok(Self {
            stream,
            rank,
            nranks,
            timeout,
            root: id.root,
        })
    }

    /// The local address of the connection to the root: an address peers can likely reach.
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.stream.local_addr().ok().map(|a| a.ip())
    }

    fn fail(&self, detail: String) -> Error {
        Error::Bootstrap {
            rank: self.rank,
            detail,
        }
    }

    /// All-gathers one blob per rank through the root, in rank order.
    pub fn allgather(&mut self, blob: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut msg = Vec::with_capacity(blob.len() + 1);
        msg.push(ROUND);
        msg.extend_from_slice(blob);
        write_frame(&mut self.stream, &msg, self.timeout)
            .map_err(|e| self.fail(format!("lost the root at {}: {e}", self.root)))?;
        // Wait a little longer than the root does, so that when a rank is missing the root's
        // message (which names it) arrives before our own timeout.
        let patience = self.timeout + self.timeout / 10 + Duration::from_secs(2);
        let reply = read_frame(&mut self.stream, Instant::now() + patience).map_err(|e| {
            self.fail(format!(
                "no answer from the root at {} within {:?}: {e} (a rank may be missing)",
                self.root, self.timeout
            ))
        })?;
        decode_reply(&reply, self.nranks).map_err(|why| self.fail(why))
    }

    /// Ends this rank's part in the rendezvous.
    pub fn close(mut self) {
        let _ = write_frame(&mut self.stream, &[CLOSE], self.timeout);
    }
}

/// The root's answer to an all-gather round: one blob per rank, or why it is unusable.
pub(crate) fn decode_reply(reply: &[u8], nranks: u32) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut d = Dec(reply);
    let malformed = |m: super::wire::Malformed| format!("malformed reply from the root: {}", m.0);
    match d.u8().map_err(malformed)? {
        ROUND => {}
        ERROR => {
            let why = d.str().unwrap_or_else(|_| "(unreadable)".into());
            return Err(format!("the root reports: {why}"));
        }
        k => return Err(format!("unexpected frame kind {k} from the root")),
    }
    let n = d.u32().map_err(malformed)?;
    if n != nranks {
        return Err(format!("root answered with {n} blobs for {nranks} ranks"));
    }
    (0..n)
        .map(|_| d.bytes().map(<[u8]>::to_vec).map_err(malformed))
        .collect()
}
