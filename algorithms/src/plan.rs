//! The `Plan`: what one rank does for one collective, as data.
//!
//! # Nomenclature
//! - **buffer**: one of the op's memory areas: [`Buf::Input`], [`Buf::Output`], or
//!   [`Buf::Scratch`] (engine-owned, as many blocks as declared in [`Plan::scratch`], each as
//!   long as the op's blocks).
//! - **block**: a buffer is `blocks` equal blocks of `block_len` elements. Per-rank data of
//!   all-gather, reduce-scatter and all-to-all are blocks; all-reduce, broadcast and reduce
//!   buffers are one block.
//! - **channel**: the engine splits every block into `nchannels` contiguous pieces and runs
//!   `Plan::channels[c]` on piece `c` of every block, over channel `c`'s own connections.
//! - **split**: a plan may cut each block's channel piece into `splits` chunks (ring
//!   all-reduce cuts it into `nranks`).
//! - **chunk**: `Region { buf, block, split }`, the unit steps name. Its size is decided by the
//!   engine (see below); a plan never knows byte counts.
//! - **window**: [`Buf::Window`], this rank's memory that the other ranks of the node can
//!   read directly (load/store transports: shared memory, GPU peer access). One-sided steps
//!   ([`Step::Post`], [`Step::ReduceFromPeers`], [`Step::CopyFromPeer`]) use it; see
//!   [`crate::load_store`]. Unlike the other buffers a window holds **one round**: block `b`,
//!   split `s` of the window is split `s` of the round's window of block `b`.
//! - **round**: the engine runs the channel's step list once per round over successive windows
//!   of the piece, so that **two** chunks of a round fit the connection FIFO (NCCL's "loop";
//!   a ring needs one chunk in flight while the next is produced, see [`crate::verify`]).
//!
//! # How the engine maps a region to elements
//! A block of `n` elements is cut into `C` channel pieces, piece `c` being
//! `[c*n/C, (c+1)*n/C)` ([`channel_piece`]).
//! For piece length `L` (elements of one block on one channel), `S` splits and a chunk size
//! limit `K` elements (at most half a connection FIFO): round size `R = S*K`, `nrounds = ceil(L / R)`; in round `k` the window is
//! `[k*R, min(L, (k+1)*R))` of length `W`, and split `s` is `[s*W/S, (s+1)*W/S)` of it
//! ([`split_range`]). Matched send/receive regions always have the same split index and the
//! same block length, so both sides compute the same byte count without exchanging it.
//! Zero-length chunks are skipped by both sides.

use std::fmt;
use std::ops::Range;

/// `[i*len/parts, (i+1)*len/parts)`: part `i` of `parts` near-equal contiguous parts.
fn part(len: u64, parts: u32, i: u32) -> Range<u64> {
    let parts = u128::from(parts.max(1));
    // The quotient is at most `len`, so it fits a u64.
    let at = |i: u128| (u128::from(len) * i.min(parts) / parts) as u64;
    at(u128::from(i))..at(u128::from(i) + 1)
}

/// Elements of a block of `block_len` elements that channel `channel` of `nchannels` works
/// on: `[c*n/C, (c+1)*n/C)` (see the module doc). Empty when `channel >= nchannels`.
pub fn channel_piece(block_len: u64, nchannels: u32, channel: u32) -> Range<u64> {
    part(block_len, nchannels, channel)
}

/// Elements of split `split` of `splits` within a round's window of `window_len` elements:
/// `[s*W/S, (s+1)*W/S)` (see the module doc). Empty when `split >= splits`.
pub fn split_range(window_len: u64, splits: u32, split: u32) -> Range<u64> {
    part(window_len, splits, split)
}

/// Which memory area a region lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buf {
    /// The user's send buffer (same memory as `Output` for an in-place op).
    Input,
    /// The user's receive buffer.
    Output,
    /// A buffer the engine allocates for the op, shaped like [`Plan::scratch`].
    Scratch,
    /// This rank's peer-readable window, shaped like [`Plan::window`], one round deep (see
    /// the module doc).
    Window,
}

/// A chunk of one buffer: `split` of block `block` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region {
    /// The buffer.
    pub buf: Buf,
    /// Block index within the buffer, `< Shape::blocks`.
    pub block: u32,
    /// Split index within the block's channel piece, `< Plan::splits`.
    pub split: u32,
}

impl Region {
    /// Shorthand constructor.
    pub const fn new(buf: Buf, block: u32, split: u32) -> Self {
        Self { buf, block, split }
    }
}

/// The block structure of one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Number of equal blocks (`0` means the buffer is not used).
    pub blocks: u32,
}

/// One step of a channel, NCCL's primitive vocabulary plus a local reduction. "incoming" is
/// the chunk received from `from`; every step that sends sends exactly one chunk to `to`; `⊕`
/// is the op's reduction.
///
/// A step completes when all of its parts completed; the next step of the channel starts
/// only then. The two halves of [`Step::SendRecv`] progress independently of each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send `src` to `to`.
    Send {
        /// Destination rank.
        to: u32,
        /// What to send.
        src: Region,
    },
    /// Receive from `from` into `dst`.
    Recv {
        /// Source rank.
        from: u32,
        /// Where the data lands.
        dst: Region,
    },
    /// `dst = src ⊕ incoming` (NCCL's recvReduceCopy; `src` may equal `dst`).
    RecvReduce {
        /// Source rank.
        from: u32,
        /// Local operand.
        src: Region,
        /// Where the result lands.
        dst: Region,
    },
    /// Send `src ⊕ incoming` to `to` without storing it.
    RecvReduceSend {
        /// Source rank.
        from: u32,
        /// Destination rank.
        to: u32,
        /// Local operand.
        src: Region,
    },
    /// `dst = src ⊕ incoming`, and send `dst` to `to`.
    RecvReduceCopySend {
        /// Source rank.
        from: u32,
        /// Destination rank.
        to: u32,
        /// Local operand.
        src: Region,
        /// Where the result lands.
        dst: Region,
    },
    /// `dst = incoming`, and forward incoming to `to`.
    RecvCopySend {
        /// Source rank.
        from: u32,
        /// Destination rank.
        to: u32,
        /// Where the data lands.
        dst: Region,
    },
    /// Local copy `dst = src` (skipped by the engine when both name the same memory).
    Copy {
        /// Source.
        src: Region,
        /// Destination.
        dst: Region,
    },
    /// Local reduction `dst = dst ⊕ src`, no communication. `src` and `dst` must be different
    /// memory (for an in-place op, an output chunk on top of an input chunk is the same
    /// memory as that input chunk). `dst`, the accumulator, is the left operand, as `src` is
    /// in the reducing receives (`src ⊕ incoming`): a fold chained through both keeps one
    /// operand order. For floating point the fold order decides the result's bits.
    Reduce {
        /// The operand added in.
        src: Region,
        /// The accumulator: read, then overwritten with the result.
        dst: Region,
    },
    /// One-sided: make every write to this rank's window so far readable by the other ranks,
    /// as phase `phase`. A step list's posts are numbered `1, 2, …` in order; readers name
    /// the phase they need. A window region must not be written again after a post that a
    /// reader of it relies on (the verifier checks this).
    Post {
        /// This post's number within the round, from 1.
        phase: u32,
    },
    /// One-sided: `dst = x_0 ⊕ x_1 ⊕ … ⊕ x_{p-1}` folded in rank order, where `x_j` is
    /// region `peers` of rank `j`'s window once rank `j` posted phase `phase`, and this
    /// rank's own term is the local region `own` (which may be the same memory as `dst`: the
    /// engine reads it before writing). Every rank folding in the same order gets a
    /// bit-identical result.
    ReduceFromPeers {
        /// The window region read on every other rank.
        peers: Region,
        /// This rank's own term.
        own: Region,
        /// The phase every other rank must have posted.
        phase: u32,
        /// Where the result lands.
        dst: Region,
    },
    /// One-sided: `dst = ` region `src` of rank `peer`'s window, once `peer` posted phase
    /// `phase`.
    CopyFromPeer {
        /// The rank whose window is read.
        peer: u32,
        /// The window region read.
        src: Region,
        /// The phase `peer` must have posted.
        phase: u32,
        /// Where the data lands.
        dst: Region,
    },
    /// Send `src` to `to` and receive from `from` into `dst`, both at once (pairwise
    /// exchange: neither half waits for the other).
    SendRecv {
        /// Destination rank.
        to: u32,
        /// What to send.
        src: Region,
        /// Source rank.
        from: u32,
        /// Where the data lands.
        dst: Region,
    },
}

impl fmt::Display for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Buf::Input => "input",
            Buf::Output => "output",
            Buf::Scratch => "scratch",
            Buf::Window => "window",
        })
    }
}

impl fmt::Display for Region {
    /// `output[b2.s1]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[b{}.s{}]", self.buf, self.block, self.split)
    }
}

impl fmt::Display for Step {
    /// NCCL's primitive name, then peers and regions: `recv_reduce_send from 2 with
    /// input[b0.s1] to 4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Send { to, src } => write!(f, "send {src} to {to}"),
            Step::Recv { from, dst } => write!(f, "recv from {from} into {dst}"),
            Step::RecvReduce { from, src, dst } => {
                write!(f, "recv_reduce from {from} with {src} into {dst}")
            }
            Step::RecvReduceSend { from, to, src } => {
                write!(f, "recv_reduce_send from {from} with {src} to {to}")
            }
            Step::RecvReduceCopySend { from, to, src, dst } => write!(
                f,
                "recv_reduce_copy_send from {from} with {src} into {dst} to {to}"
            ),
            Step::RecvCopySend { from, to, dst } => {
                write!(f, "recv_copy_send from {from} into {dst} to {to}")
            }
            Step::Copy { src, dst } => write!(f, "copy {src} into {dst}"),
            Step::Reduce { src, dst } => write!(f, "reduce {src} into {dst}"),
            Step::SendRecv { to, src, from, dst } => {
                write!(f, "send_recv {src} to {to}, from {from} into {dst}")
            }
            Step::Post { phase } => write!(f, "post phase {phase}"),
            Step::ReduceFromPeers {
                peers,
                own,
                phase,
                dst,
            } => write!(
                f,
                "reduce_from_peers {peers} (phase {phase}) with {own} into {dst}"
            ),
            Step::CopyFromPeer {
                peer,
                src,
                phase,
                dst,
            } => write!(f, "copy_from_peer {peer} {src} (phase {phase}) into {dst}"),
        }
    }
}

impl Step {
    /// The peer this step sends to, if any.
    pub fn send_peer(&self) -> Option<u32> {
        match *self {
            Step::Send { to, .. }
            | Step::RecvReduceSend { to, .. }
            | Step::RecvReduceCopySend { to, .. }
            | Step::RecvCopySend { to, .. }
            | Step::SendRecv { to, .. } => Some(to),
            Step::Recv { .. }
            | Step::RecvReduce { .. }
            | Step::Copy { .. }
            | Step::Reduce { .. }
            | Step::Post { .. }
            | Step::ReduceFromPeers { .. }
            | Step::CopyFromPeer { .. } => None,
        }
    }

    /// The peer this step receives from, if any.
    pub fn recv_peer(&self) -> Option<u32> {
        match *self {
            Step::Recv { from, .. }
            | Step::RecvReduce { from, .. }
            | Step::RecvReduceSend { from, .. }
            | Step::RecvReduceCopySend { from, .. }
            | Step::RecvCopySend { from, .. }
            | Step::SendRecv { from, .. } => Some(from),
            Step::Send { .. }
            | Step::Copy { .. }
            | Step::Reduce { .. }
            | Step::Post { .. }
            | Step::ReduceFromPeers { .. }
            | Step::CopyFromPeer { .. } => None,
        }
    }

    /// Whether this step uses the window protocol (posting, or reading peers' windows)
    /// rather than connections. Copies into or out of the own window are local steps.
    pub fn is_one_sided(&self) -> bool {
        matches!(
            self,
            Step::Post { .. } | Step::ReduceFromPeers { .. } | Step::CopyFromPeer { .. }
        )
    }

    /// Every region the step names, sources first.
    pub fn regions(&self) -> impl Iterator<Item = Region> {
        let (a, b, c) = match *self {
            Step::Send { src, .. } | Step::RecvReduceSend { src, .. } => (Some(src), None, None),
            Step::Recv { dst, .. } | Step::RecvCopySend { dst, .. } => (Some(dst), None, None),
            Step::RecvReduce { src, dst, .. }
            | Step::RecvReduceCopySend { src, dst, .. }
            | Step::Copy { src, dst }
            | Step::Reduce { src, dst }
            | Step::SendRecv { src, dst, .. }
            | Step::CopyFromPeer { src, dst, .. } => (Some(src), Some(dst), None),
            Step::ReduceFromPeers {
                peers, own, dst, ..
            } => (Some(peers), Some(own), Some(dst)),
            Step::Post { .. } => (None, None, None),
        };
        [a, b, c].into_iter().flatten()
    }
}

/// What one rank does for one operation: per channel, the ordered steps.
///
/// Call protocol (engine side): allocate scratch if `scratch.blocks > 0`; run a plan with a
/// window (`window.blocks > 0`) only where every rank is reachable by load/store, with the
/// window protocol of [`crate::load_store`]; for every channel
/// `c` and every round, run `channels[c]` in order; a channel never waits for another channel.
/// After the last round, an average reduction divides the rank's final output by `nranks`
/// (plans only ever sum contributions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The operation this plan implements.
    pub collective: crate::Collective,
    /// Number of ranks in the communicator.
    pub nranks: u32,
    /// The rank this plan belongs to.
    pub rank: u32,
    /// Block structure of the input buffer.
    pub input: Shape,
    /// Block structure of the output buffer.
    pub output: Shape,
    /// Block structure of the scratch buffer (`blocks == 0`: none).
    pub scratch: Shape,
    /// Block structure of one round of the peer-readable window (`blocks == 0`: the plan
    /// uses none and runs on connections only).
    pub window: Shape,
    /// Number of chunks each block's channel piece is cut into.
    pub splits: u32,
    /// The step list of each channel.
    pub channels: Vec<Vec<Step>>,
}

impl Plan {
    /// The shape of buffer `buf`.
    pub fn shape(&self, buf: Buf) -> Shape {
        match buf {
            Buf::Input => self.input,
            Buf::Output => self.output,
            Buf::Scratch => self.scratch,
            Buf::Window => self.window,
        }
    }
}
