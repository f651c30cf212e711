//! A peer-readable window in each rank's inbox, for one-sided (load/store) collectives.
//!
//! With `window_len > 0`, every rank's segment ends with a control area and two window
//! *halves* of [`ShmWindow::half_len`] bytes each. Only the owner writes its halves; every
//! local peer maps the segment and reads them directly, so data put there by one rank is
//! read by all others without a copy into a FIFO slot. The control area holds, per half,
//! a `posted` flag with [`INLINE_LEN`] inline bytes in the same cache line (small payloads
//! arrive with the flag, in one line transfer), and per local rank `r` a `done[r]` counter
//! that `r` stores into the owner's segment.
//!
//! # Protocol (followed by the engine; the transport does not enforce it)
//! Epochs `e = 1, 2, ...` alternate between the halves: epoch `e` uses half `e % 2`.
//! - **Owner:** before it writes half `e % 2` (or its inline bytes) for epoch `e`, it waits
//!   until every reader's [`ShmWindow::acked`] is `>= e - 2`, i.e. every reader finished the
//!   previous epoch that used this half. It writes ([`ShmWindow::own_mut`],
//!   [`ShmWindow::own_inline_mut`], [`ShmWindow::split_mut`]) and then [`ShmWindow::post`]s
//!   the half with a value larger than any posted before (e.g. `e`, or a finer count if it
//!   publishes a half in pieces). `post` stores with `Release` and rings every peer's
//!   [`Doorbell`], so a peer sleeping in [`wait_any`](crate::wait::wait_any) wakes.
//! - **Reader:** it waits until [`ShmWindow::posted`] (an `Acquire` load) of the owner's half
//!   reaches the value it needs, reads the bytes ([`ShmWindow::peer`],
//!   [`ShmWindow::peer_inline`], [`PeerHalves::get`]), and when it is finished with epoch `e`
//!   it [`ShmWindow::ack`]s `e` to the owner (a `Release` store into the owner's `done` line
//!   for this reader, then a ring of the owner's doorbell).
//! - Waits read the own doorbell's sequence number before checking the flags, as for FIFOs,
//!   and call [`ShmWindow::check_alive`] after about 100 ms without progress.
//!
//! # Why peers' bytes are handed out as `&[u8]`
//! Another process maps the same memory, so in general it could change under a shared
//! reference. The protocol rules that out for well-behaved peers: the owner never writes a
//! half between posting it and every reader acking it, which is exactly the window in which
//! readers hold references to it. This is the same hand-over the FIFO slots rely on (a
//! receiver reads a slot the sender does not touch until it is released). A misbehaving or
//! buggy peer that writes anyway can only make this process read wrong bytes (a wrong
//! result), never unsafety beyond what the FIFO slots already accept: the bytes are never
//! interpreted as anything but `u8` here, every offset and length comes from this process's
//! own [`Layout`], and every flag and counter a peer may write is read through atomics. A peer
//! that shrinks its file can still crash this process with `SIGBUS`, as with any shared
//! mapping (see the [module docs](super)).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::connect::PeerProcess;
use super::layout::{Layout, Mapping};
use crate::wait::Doorbell;
use crate::{Error, Result};

/// Bytes of inline payload that ride in the cache line of each `posted` flag.
pub const INLINE_LEN: usize = 56;

/// Largest accepted `window_len` (bytes per half): 1 GiB.
pub const MAX_WINDOW_LEN: usize = 1 << 30;

/// This rank's view of the node's windows: its own (writable) and every local peer's
/// (readable). Made once per context by [`ShmContext::window`](super::ShmContext::window).
///
/// `half` arguments select half `half & 1`: only 0 and 1 are meaningful, any other value is
/// a caller bug and is folded onto those two instead of panicking.
///
/// The window keeps every mapping alive; the context may be dropped before it.
pub struct ShmWindow {
    layout: Layout,
    local_rank: u32,
    /// Indexed by local rank; this rank's own entry is its own segment.
    maps: Vec<Arc<Mapping>>,
    /// Indexed by local rank, like `maps`.
    processes: Vec<PeerProcess>,
}

/// Which bytes of a window a [`PeerHalves`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    /// A whole half, `half_len` bytes.
    Half,
    /// The [`INLINE_LEN`] inline bytes after a `posted` flag.
    Inline,
}

/// Read-only views of the local peers' halves (or inline bytes) while this rank's own
/// half is borrowed mutably; from [`ShmWindow::split_mut`] and
/// [`ShmWindow::split_inline_mut`].
#[derive(Debug, Clone, Copy)]
pub struct PeerHalves<'a> {
    window: &'a ShmWindow,
    half: usize,
    area: Area,
}

impl ShmWindow {
    /// Builds the window from the context's mappings, own one included (indexed by local
    /// rank). The context checked that the layout has a window and every peer is mapped.
    pub(crate) fn new(
        layout: Layout,
        local_rank: u32,
        maps: Vec<Arc<Mapping>>,
        processes: Vec<PeerProcess>,
    ) -> Self {
        debug_assert!(layout.has_window());
        debug_assert_eq!(maps.len(), layout.nlocal as usize);
        debug_assert_eq!(processes.len(), layout.nlocal as usize);
        Self {
            layout,
            local_rank,
            maps,
            processes,
        }
    }

    /// Bytes per half: the requested `window_len` rounded up to a page (4096).
    pub fn half_len(&self) -> usize {
        self.layout.half_len
    }

    /// This rank's index among the local ranks.
    pub fn local_rank(&self) -> u32 {
        self.local_rank
    }

    /// Number of local ranks.
    pub fn nlocal(&self) -> u32 {
        self.layout.nlocal
    }

    /// This rank's doorbell (the same as [`ShmContext::doorbell`](super::ShmContext::doorbell)),
    /// rung by peers when they post or ack; kept here so the context may be dropped.
    pub fn doorbell(&self) -> &Doorbell {
        &self.own().header().doorbell
    }

    /// This rank's half `half & 1`, to fill before [`ShmWindow::post`]ing it. Page-aligned,
    /// [`ShmWindow::half_len`] bytes.
    pub fn own_mut(&mut self, half: usize) -> &mut [u8] {
        let ptr = self
            .own()
            .bytes_at(self.layout.half_offset(half), self.half_len());
        // SAFETY: `bytes_at` checked that the range lies inside this rank's mapping, which
        // `self.maps` keeps alive for the borrow of `self`. Only this rank writes its halves
        // (`ShmContext::window` hands out one `ShmWindow` per context, and `&mut self` is
        // held for the slice's life, so no `&[u8]` from this window aliases it). Peers only
        // read it, and by the protocol (module docs) not while the owner rewrites it; a peer
        // that breaks the protocol reads or writes plain bytes, which have no invalid values.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.half_len()) }
    }

    /// The [`INLINE_LEN`] bytes in the cache line of this rank's `posted[half & 1]` flag, to
    /// fill before [`ShmWindow::post`]ing it. 8-byte aligned.
    pub fn own_inline_mut(&mut self, half: usize) -> &mut [u8] {
        let ptr = self
            .own()
            .bytes_at(self.layout.inline_offset(half), INLINE_LEN);
        // SAFETY: as in `own_mut`: inside the mapping kept alive by `self`, written only by
        // this rank through this exclusive borrow, and disjoint from the `posted` atomic
        // (bytes 0..8 of the line; these are bytes 8..64).
        unsafe { std::slice::from_raw_parts_mut(ptr, INLINE_LEN) }
    }

    /// Local rank `peer_local`'s half `half & 1`, read-only; this rank's own half when
    /// `peer_local` is this rank. Read it only once [`ShmWindow::posted`] says the owner
    /// posted what you need, and [`ShmWindow::ack`] when done (module docs).
    pub fn peer(&self, peer_local: u32, half: usize) -> Result<&[u8]> {
        self.area(peer_local, half, Area::Half)
    }

    /// The [`INLINE_LEN`] inline bytes after local rank `peer_local`'s `posted[half & 1]`
    /// flag, read-only; this rank's own when `peer_local` is this rank.
    pub fn peer_inline(&self, peer_local: u32, half: usize) -> Result<&[u8]> {
        self.area(peer_local, half, Area::Inline)
    }

    /// This rank's half `half & 1` mutably, and the peers' halves `half & 1` read-only, at
    /// the same time (e.g. to reduce peers' data straight into the own half).
    pub fn split_mut(&mut self, half: usize) -> (&mut [u8], PeerHalves<'_>) {
        self.split(half, Area::Half)
    }

    /// This rank's inline bytes of half `half & 1` mutably, and the peers' inline bytes of
    /// the same half read-only ([`PeerHalves::get`] returns [`INLINE_LEN`] bytes).
    pub fn split_inline_mut(&mut self, half: usize) -> (&mut [u8], PeerHalves<'_>) {
        self.split(half, Area::Inline)
    }

    /// Publishes half `half & 1` (and its inline bytes): a `Release` store of `value` into
    /// this rank's `posted[half & 1]`, then a ring of every local peer's doorbell. Values
    /// should increase; readers wait for `posted >= ` what they need.
    pub fn post(&self, half: usize, value: u64) {
        self.own()
            .u64_at(self.layout.posted_offset(half))
            .store(value, Ordering::Release);
        for (rank, map) in self.maps.iter().enumerate() {
            if rank != self.local_rank as usize {
                map.header().doorbell.ring();
            }
        }
    }

    /// Local rank `peer_local`'s `posted[half & 1]` (an `Acquire` load: once it shows a
    /// value, the bytes the peer wrote before posting it are visible).
    pub fn posted(&self, peer_local: u32, half: usize) -> Result<u64> {
        let map = self.map(peer_local)?;
        Ok(map
            .u64_at(self.layout.posted_offset(half))
            .load(Ordering::Acquire))
    }

    /// Tells local rank `peer_local` that this rank is finished reading its window up to
    /// `value` (an epoch): a `Release` store into the peer's `done[this rank]`, then a ring
    /// of the peer's doorbell.
    pub fn ack(&self, peer_local: u32, value: u64) -> Result<()> {
        let map = self.map(peer_local)?;
        map.u64_at(self.layout.done_offset(self.local_rank))
            .store(value, Ordering::Release);
        map.header().doorbell.ring();
        Ok(())
    }

    /// What local rank `reader_local` last [`ShmWindow::ack`]ed to this rank (an `Acquire`
    /// load of the own `done[reader_local]`; 0 before any ack).
    pub fn acked(&self, reader_local: u32) -> Result<u64> {
        self.check_rank(reader_local)?;
        Ok(self
            .own()
            .u64_at(self.layout.done_offset(reader_local))
            .load(Ordering::Acquire))
    }

    /// `Err(PeerClosed)` if local rank `peer_local`'s process is gone (exited, a zombie, or
    /// its pid reused). Call it after waiting about 100 ms for the peer without progress.
    pub fn check_alive(&self, peer_local: u32) -> Result<()> {
        self.check_rank(peer_local)?;
        self.processes[peer_local as usize].check()
    }

    fn own(&self) -> &Mapping {
        &self.maps[self.local_rank as usize]
    }

    fn check_rank(&self, local: u32) -> Result<()> {
        if local >= self.layout.nlocal {
            return Err(Error::Config(format!(
                "local rank {local} out of range for {} local ranks",
                self.layout.nlocal
            )));
        }
        Ok(())
    }

    fn map(&self, local: u32) -> Result<&Mapping> {
        self.check_rank(local)?;
        Ok(&self.maps[local as usize])
    }

    /// Offset and length of `area` of half `half & 1`.
    fn range(&self, half: usize, area: Area) -> (usize, usize) {
        match area {
            Area::Half => (self.layout.half_offset(half), self.layout.half_len),
            Area::Inline => (self.layout.inline_offset(half), INLINE_LEN),
        }
    }

    fn area(&self, local: u32, half: usize, area: Area) -> Result<&[u8]> {
        let map = self.map(local)?;
        let (off, len) = self.range(half, area);
        let ptr = map.bytes_at(off, len);
        // SAFETY: `bytes_at` checked that the range lies inside the mapping, which
        // `self.maps` keeps alive for the borrow of `self`. For the own window, this shared
        // borrow of `self` excludes the `&mut` slices of `own_mut` & co. For a peer's window,
        // the owner does not write it between posting it and every reader acking it (module
        // docs), the same hand-over the FIFO slots rely on; a peer that breaks the protocol
        // can only change plain bytes under us (no invalid values, never interpreted here),
        // i.e. give a wrong result, not corrupt this process's memory.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    fn split(&mut self, half: usize, area: Area) -> (&mut [u8], PeerHalves<'_>) {
        let this: &Self = self;
        let (off, len) = this.range(half, area);
        let ptr = this.own().bytes_at(off, len);
        // SAFETY: as in `own_mut`: inside the own mapping, kept alive by `self` for the
        // returned lifetime, and written only through this slice while `&mut self` is held.
        // The `PeerHalves` returned alongside shares that borrow but refuses to hand out the
        // own rank's bytes, so nothing aliases this slice in this process.
        let own = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        (
            own,
            PeerHalves {
                window: this,
                half,
                area,
            },
        )
    }
}

impl<'a> PeerHalves<'a> {
    /// Local rank `peer_local`'s half (or inline bytes, after
    /// [`ShmWindow::split_inline_mut`]) of the split's half, read-only. [`Error::Config`] for
    /// this rank itself (its bytes are borrowed mutably) and for out-of-range ranks.
    pub fn get(&self, peer_local: u32) -> Result<&'a [u8]> {
        if peer_local == self.window.local_rank {
            return Err(Error::Config(format!(
                "local rank {peer_local} is this rank; its window is borrowed mutably by the \
                 split"
            )));
        }
        self.window.area(peer_local, self.half, self.area)
    }

    /// The half these views show (`half & 1` of the split).
    pub fn half(&self) -> usize {
        self.half & 1
    }
}

impl std::fmt::Debug for ShmWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmWindow")
            .field("local_rank", &self.local_rank)
            .field("nlocal", &self.layout.nlocal)
            .field("half_len", &self.layout.half_len)
            .field(
                "segments",
                &self.maps.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}
