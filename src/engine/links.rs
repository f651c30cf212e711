//! A communicator's connections: one send and one receive channel per peer and channel.

use crate::error::Error;
use oxccl_transports::shm::ShmContext;
use oxccl_transports::{RecvChannel, SendChannel};

/// One direction of a connection, as seen from this rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Dir {
    /// Sending to a peer.
    To(u32),
    /// Receiving from a peer.
    From(u32),
    /// The window protocol (every load/store op uses it, so such ops run in issue order).
    Window,
    /// Waiting for a peer to post its window.
    Posted(u32),
    /// Waiting for a peer to finish reading this rank's window.
    Acked(u32),
}

impl std::fmt::Display for Dir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dir::To(p) => write!(f, "a free slot towards rank {p}"),
            Dir::From(p) => write!(f, "data from rank {p}"),
            Dir::Window => f.write_str("the shared-memory window"),
            Dir::Posted(p) => write!(f, "rank {p} to post its shared-memory window"),
            Dir::Acked(p) => write!(
                f,
                "rank {p} to finish reading this rank's shared-memory window (from the \
                 op before last)"
            ),
        }
    }
}

/// All connections of one communicator, indexed `[peer][channel]`.
pub(crate) struct Links {
    /// This rank.
    pub rank: u32,
    /// Number of ranks.
    pub nranks: u32,
    /// Bytes per FIFO slot (the same on every connection).
    pub slot_size: usize,
    /// Whether steps may move data straight from and to the op's memory on channels that
    /// support it (`OXCCL_ZERO_COPY`).
    pub zero_copy: bool,
    /// Largest plan chunk in bytes (half a FIFO).
    pub chunk_bytes: usize,
    /// Sending halves.
    pub send: Vec<Vec<Option<Box<dyn SendChannel>>>>,
    /// Receiving halves.
    pub recv: Vec<Vec<Option<Box<dyn RecvChannel>>>>,
    /// Shared-memory context (owns this rank's doorbell), if any peer is local.
    pub shm: Option<ShmContext>,
    /// The peer-readable window, when every rank is on this host (load/store algorithms).
    pub window: Option<super::window::Window>,
    /// Buffers from `alloc_shared` that peers have mapped.
    pub registry: super::registry::Registry,
}

impl Links {
    /// Number of channels.
    pub fn nchannels(&self) -> usize {
        self.send.first().map_or(0, Vec::len)
    }

    /// The sending half towards `peer` on `ch`.
    pub fn sender(&mut self, peer: u32, ch: usize) -> Result<&mut dyn SendChannel, Error> {
        let rank = self.rank;
        match self.send.get_mut(peer as usize).and_then(|v| v.get_mut(ch)) {
            Some(Some(s)) => Ok(s.as_mut()),
            _ => Err(Error::Internal(format!(
                "rank {rank} has no connection to rank {peer} on channel {ch}"
            ))),
        }
    }

    /// The receiving half from `peer` on `ch`.
    pub fn receiver(&mut self, peer: u32, ch: usize) -> Result<&mut dyn RecvChannel, Error> {
        let rank = self.rank;
        match self.recv.get_mut(peer as usize).and_then(|v| v.get_mut(ch)) {
            Some(Some(r)) => Ok(r.as_mut()),
            _ => Err(Error::Internal(format!(
                "rank {rank} has no connection from rank {peer} on channel {ch}"
            ))),
        }
    }

    /// The sending half towards `peer` on `ch` when data may leave straight from the op's
    /// memory on it.
    pub fn direct_sender(
        &mut self,
        peer: u32,
        ch: usize,
    ) -> Result<Option<&mut dyn SendChannel>, Error> {
        let zero_copy = self.zero_copy;
        let s = self.sender(peer, ch)?;
        Ok((zero_copy && s.zero_copy()).then_some(s))
    }

    /// Whether data from `peer` on `ch` may land straight in the op's memory.
    pub fn direct_from(&mut self, peer: u32, ch: usize) -> Result<bool, Error> {
        let zero_copy = self.zero_copy;
        Ok(zero_copy && self.receiver(peer, ch)?.zero_copy())
    }

    /// Both halves at once (different peers or directions never alias).
    pub fn pair(
        &mut self,
        from: u32,
        to: u32,
        ch: usize,
    ) -> Result<(&mut dyn RecvChannel, &mut dyn SendChannel), Error> {
        let rank = self.rank;
        let missing = |d: &str, p: u32| {
            Error::Internal(format!(
                "rank {rank} has no connection {d} rank {p} on channel {ch}"
            ))
        };
        let r = match self.recv.get_mut(from as usize).and_then(|v| v.get_mut(ch)) {
            Some(Some(r)) => r.as_mut(),
            _ => return Err(missing("from", from)),
        };
        let s = match self.send.get_mut(to as usize).and_then(|v| v.get_mut(ch)) {
            Some(Some(s)) => s.as_mut(),
            _ => return Err(missing("to", to)),
        };
        Ok((r, s))
    }

    /// Drops every connection (shared-memory FIFOs are marked closed for the peers).
    pub fn close(&mut self) {
        self.send.iter_mut().flatten().for_each(|s| *s = None);
        self.recv.iter_mut().flatten().for_each(|r| *r = None);
    }
}
