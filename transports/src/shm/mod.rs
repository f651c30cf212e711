//! Shared-memory transport between ranks on one node.
//!
//! Every rank creates one POSIX shared-memory segment per communicator, its *inbox*, in
//! `/dev/shm`. The inbox holds a header with the rank's [`Doorbell`](crate::Doorbell) and one
//! FIFO per (local sender, channel), then optionally a window that every local peer reads in
//! place; `shm/layout.rs` describes the bytes. A sender writes straight into the receiver's
//! inbox, so a message is copied once on each side (into the slot, out of it) and never
//! passes through the kernel.
//!
//! - `connect.rs`: [`ShmContext`] creates the inbox, maps the peers', hands out channel ends.
//! - `fifo.rs`: [`ShmSender`] and [`ShmReceiver`], the [`SendChannel`](crate::SendChannel) and
//!   [`RecvChannel`](crate::RecvChannel) implementations.
//! - `window.rs`: [`ShmWindow`], an optional area of each inbox that only its owner writes and
//!   every local peer reads in place, for one-sided (load/store) collectives.
//! - `region.rs`: [`ShmRegion`], user memory a rank registers in a segment of its own, which
//!   local peers map read-only as [`PeerRegion`]s and read in place (NCCL's `ncclMemAlloc`).
//!
//! Trust: local peers are processes of the same job (they learned the segment name through
//! the authenticated bootstrap). Everything read from shared memory is bounds-checked, so a
//! corrupt counter or length gives [`Error::Protocol`](crate::Error::Protocol); a peer that
//! shrinks its file under us can still crash us with `SIGBUS`, as with any shared mapping.

mod connect;
mod fifo;
mod layout;
mod region;
mod window;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;

pub use connect::ShmContext;
pub use fifo::{ShmReceiver, ShmSender};
pub use region::{PeerRegion, RegionAnchor, ShmRegion, MAX_REGION_LEN};
pub use window::{PeerHalves, ShmWindow, INLINE_LEN, MAX_WINDOW_LEN};
