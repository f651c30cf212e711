//! oxccl's transports: move bytes between two ranks.
//!
//! Every transport offers the same model, NCCL's: a one-way connection is a FIFO of `nslots`
//! slots of `slot_size` bytes. The sender fills a free slot and commits it (advancing the
//! tail); the receiver reads the oldest committed slot and releases it (advancing the head).
//! Slot memory belongs to the transport, so a transport can place it where the peer can reach
//! it directly (shared memory, registered RDMA memory, later device memory).
//!
//! # Call protocol
//! - Sender: [`SendChannel::try_acquire`] → fill the returned slice → [`SendChannel::commit`]
//!   with the number of bytes written and a 32-bit tag. Call [`SendChannel::progress`]
//!   whenever nothing else can be done (a TCP sender pushes bytes there; shared memory needs
//!   no help).
//! - Receiver: [`RecvChannel::try_peek`] → read the returned [`Message`] (bytes and tag) →
//!   [`RecvChannel::release`]. Call [`RecvChannel::progress`] when `try_peek` returns `None`.
//! - Zero copy: a channel whose [`SendChannel::zero_copy`] is true also takes a whole
//!   message straight from the caller's memory ([`SendChannel::send_direct`]); one whose
//!   [`RecvChannel::zero_copy`] is true delivers the next message straight into the caller's
//!   memory ([`RecvChannel::recv_direct`]) when that message is not already in a slot. Both
//!   are resumable: a call that returns before the whole message moved is repeated with the
//!   same memory. The wire format is the same either way, so one end may use slots and the
//!   other its caller's memory.
//! - Tags are opaque to transports: a transport delivers each message's tag exactly as the
//!   sender committed it, and never reads, checks or orders by it. The engine uses it to tell
//!   which operation a message belongs to (so a stray message left on a connection by a
//!   mismatched op is detected, not consumed).
//! - All calls are non-blocking. To sleep, the engine asks each channel for its
//!   [`WaitSource`] and waits on them with a timeout (see [`wait`]). It reads its
//!   [`Doorbell`]'s sequence number *before* it polls the channels, and passes that number
//!   to [`wait::wait_any`], so a ring that lands between the poll and the sleep is not lost.
//! - After waiting about 100 ms without progress the engine calls `check_alive` on the
//!   channels it waits for; a peer whose process is gone gives [`Error::PeerClosed`] there
//!   instead of a hang until the op's deadline.
//! - A receiver returns [`Error::PeerClosed`] from `try_peek` only once every message the
//!   sender committed before closing has been read.
//!
//! **Architecture invariant:** transports know nothing of collectives, plans or datatypes;
//! algorithms know nothing of transports. The engine (crate `oxccl`) is where they meet.

#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod ib;
pub mod ifaddrs;
pub mod shm;
pub mod tcp;
pub mod wait;

#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
pub use wait::{Doorbell, WaitSource};

/// A received message: its bytes and the tag the sender gave it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The payload, exactly as long as committed, 8-byte aligned.
    pub data: &'a [u8],
    /// The sender's tag (meaning is the engine's business).
    pub tag: u32,
}

/// How far a zero-copy transfer got ([`SendChannel::send_direct`],
/// [`RecvChannel::recv_direct`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// The whole message moved; the caller's memory is free again.
    Done,
    /// Some bytes moved, not all: call again later with the same memory.
    Moved,
    /// Nothing moved: wait on the channel's [`WaitSource`], then call again with the same
    /// memory.
    Waiting,
    /// Receiving only: the next message does not go to the caller's memory (it is already in
    /// a slot, or its length or tag differ from what the caller expects): take it with
    /// [`RecvChannel::try_peek`].
    Slot,
}

/// The sending half of a one-way connection to one peer.
pub trait SendChannel: Send {
    /// Bytes per slot. Every committed message is at most this long.
    fn slot_size(&self) -> usize;
    /// Number of slots in the FIFO.
    fn nslots(&self) -> usize;
    /// A free slot to fill, or `None` while every slot is in flight.
    ///
    /// The slice is `slot_size` bytes long, 8-byte aligned. Calling it twice without a
    /// commit returns the same slot.
    fn try_acquire(&mut self) -> Result<Option<&mut [u8]>>;
    /// Hand the slot from the last `try_acquire` to the peer, holding `len` bytes, labelled
    /// with `tag`. The receiver gets `tag` back unchanged with the message; transports give
    /// it no meaning.
    fn commit(&mut self, len: usize, tag: u32) -> Result<()>;
    /// Move bytes without blocking; `Ok(true)` when something moved.
    fn progress(&mut self) -> Result<bool>;
    /// `true` once every committed slot has been handed over to the peer's side (a TCP
    /// sender has written it to the socket), so the sender may stop calling `progress`.
    fn flushed(&self) -> bool;
    /// What to sleep on while waiting for a slot to come free.
    fn wait_source(&self) -> WaitSource;
    /// Checks that the peer still exists; called by the engine after it waited about 100 ms
    /// without progress. `Err(PeerClosed)` when the peer's process is gone or it closed the
    /// connection. Transports whose other calls already report a dead peer keep the default.
    fn check_alive(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether [`Self::send_direct`] saves a copy on this channel. Where the peer reads the
    /// slots themselves (shared memory) it does not, and the default is `false`.
    fn zero_copy(&self) -> bool {
        false
    }
    /// Sends `data` (at most `slot_size` bytes) as one message tagged `tag`, straight from
    /// the caller's memory, after every committed slot. `Done` once the whole message has
    /// left; otherwise the caller repeats the call with the same `data` and `tag` (the
    /// channel remembers how far it got) and, until `Done`, neither changes `data` nor
    /// acquires a slot. The receiver sees an ordinary message.
    fn send_direct(&mut self, data: &[u8], tag: u32) -> Result<Direct> {
        let _ = (data, tag);
        Err(Error::Config(
            "send_direct on a channel that sends through its slots only".into(),
        ))
    }
}

/// The receiving half of a one-way connection from one peer.
pub trait RecvChannel: Send {
    /// Bytes per slot.
    fn slot_size(&self) -> usize;
    /// Number of slots in the FIFO.
    fn nslots(&self) -> usize;
    /// The oldest committed message, or `None` while there is none.
    ///
    /// The message's data is exactly as long as the sender committed, 8-byte aligned; its tag
    /// is the one the sender committed it with. Calling it twice without a release returns
    /// the same message.
    fn try_peek(&mut self) -> Result<Option<Message<'_>>>;
    /// Give the slot of the message from the last `try_peek` back to the sender.
    fn release(&mut self) -> Result<()>;
    /// Move bytes without blocking; `Ok(true)` when something moved.
    fn progress(&mut self) -> Result<bool>;
    /// What to sleep on while waiting for a message.
    fn wait_source(&self) -> WaitSource;
    /// Checks that the peer still exists; called by the engine after it waited about 100 ms
    /// without progress. `Err(PeerClosed)` when the peer's process is gone, or it closed the
    /// connection and no message is left to read. Transports whose other calls already report
    /// a dead peer keep the default.
    fn check_alive(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether [`Self::recv_direct`] can save a copy on this channel (default `false`).
    fn zero_copy(&self) -> bool {
        false
    }
    /// Receives the next message straight into `dst` when it is exactly `dst.len()` bytes
    /// tagged `tag` and no part of it is in a slot yet; `Slot` when it is not for `dst`
    /// (then [`Self::try_peek`] returns it, so the caller can report the mismatch). Until
    /// `Done` the caller repeats the call with the same `dst` and takes no slot message.
    fn recv_direct(&mut self, dst: &mut [u8], tag: u32) -> Result<Direct> {
        let _ = (dst, tag);
        Ok(Direct::Slot)
    }
}

/// Sizes of a connection's FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FifoConfig {
    /// Bytes per slot; a multiple of 64.
    pub slot_size: usize,
    /// Slots per one-way connection; at least 2.
    pub nslots: usize,
}

impl FifoConfig {
    /// Largest accepted `slot_size` (1 GiB): a message length must fit the 32-bit length
    /// fields of the shm FIFO and the TCP wire header.
    pub const MAX_SLOT_SIZE: usize = 1 << 30;
    /// Largest accepted `nslots`.
    pub const MAX_NSLOTS: usize = 1 << 16;

    /// Checks the sizes: `slot_size` a nonzero multiple of 64 and at most
    /// [`Self::MAX_SLOT_SIZE`], `nslots` in `2..=`[`Self::MAX_NSLOTS`].
    pub fn validate(&self) -> Result<()> {
        if self.slot_size == 0 || self.slot_size % 64 != 0 || self.slot_size > Self::MAX_SLOT_SIZE {
            return Err(Error::Config(format!(
                "slot_size {} must be a nonzero multiple of 64 and at most {}",
                self.slot_size,
                Self::MAX_SLOT_SIZE
            )));
        }
        if !(2..=Self::MAX_NSLOTS).contains(&self.nslots) {
            return Err(Error::Config(format!(
                "nslots {} must be in 2..={}",
                self.nslots,
                Self::MAX_NSLOTS
            )));
        }
        Ok(())
    }
}

impl Default for FifoConfig {
    fn default() -> Self {
        Self {
            slot_size: 128 * 1024,
            nslots: 8,
        }
    }
}
