//! TCP transport, between any two ranks that can reach each other.
//!
//! Connections are authenticated: the connecting side proves it knows the job's 32-byte
//! secret without sending it, and the accepting side proves it back (`tcp/layout.rs` has
//! the bytes). After the handshake each socket carries one FIFO in each direction, framed
//! as `len | seq | tag | payload`. Sockets are non-blocking; [`TcpSender`] and [`TcpReceiver`]
//! move bytes in `progress` and ask to be woken by `poll` through their
//! [`WaitSource`](crate::WaitSource).
//!
//! - `connect.rs`: [`connect`], [`Listener`], [`channel_pair`].
//! - `fifo.rs`: [`TcpSender`] and [`TcpReceiver`], the [`SendChannel`](crate::SendChannel)
//!   and [`RecvChannel`](crate::RecvChannel) implementations; `fifo/direct.rs` their
//!   zero-copy halves (`send_direct`, `recv_direct`).
//!
//! Nothing a peer sends can make us panic or allocate more than a slot ring: handshake
//! payloads are capped at [`MAX_PAYLOAD`] bytes, message lengths at the slot size.

pub(crate) mod connect;
mod fifo;
mod layout;

#[cfg(test)]
mod direct_tests;
#[cfg(test)]
mod tests;

pub use connect::{channel_pair, connect, Listener};
pub use fifo::{TcpReceiver, TcpSender};
pub use layout::MAX_PAYLOAD;
