//! The memory layout of a rank's shared-memory inbox, and the mapping that holds it.
//!
//! ```text
//! offset 0      SegmentHeader   magic, version, owner pid, sizes (64 B), Doorbell (64 B)
//! offset 4096   FIFO 0          tail | head | closed | meta[nslots] | pad to 4096 | slots
//! ...           FIFO i          at 4096 + i * fifo_stride, i = sender_local * nchannels + channel
//! window_offset window control  posted[0] | posted[1] | done[0] | ... | done[nlocal-1] | pad to 4096
//! + ctrl_len    window half 0   half_len bytes (window_len rounded up to 4096)
//! + half_len    window half 1   half_len bytes
//! ```
//!
//! The window (control area and halves) exists only when `window_len > 0`; it starts right
//! after the last FIFO, `window_offset = 4096 + nlocal * nchannels * fifo_stride`. Every
//! control entry is a 64-byte line: `posted[h]` is an 8-byte flag the owner stores followed
//! by [`INLINE_LEN`] inline payload bytes in the same cache line; `done[r]` is an 8-byte
//! counter that local rank `r` stores (the rest of its line is padding). See `window.rs`
//! for the protocol.
//!
//! Each FIFO starts with its control block, every field on its own 64-byte line:
//! `tail` (written by the sender only), `head` (written by the receiver only), `closed`
//! (bits set by either side when it drops), then one 8-byte `meta` entry per slot: the
//! message's length (`u32`) and the sender's tag (`u32`), both written by the sender before
//! it publishes `tail`. The slots
//! follow, page-aligned, `slot_size` bytes apart (a multiple of 64, so every slot is
//! cache-line aligned; page-aligned too when `slot_size` is a multiple of 4096).
//!
//! Everything the peer can write is read through atomics and checked before use; only slot
//! and window bytes are plain memory, and those are never interpreted here.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};

use super::window::{INLINE_LEN, MAX_WINDOW_LEN};
use crate::wait::Doorbell;
use crate::{Error, FifoConfig, Result};

/// "OXCCLSHM", little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"OXCCLSHM");
/// Bumped on any change of this layout (2: per-slot tags next to the lengths; 3: the
/// peer-readable window after the FIFOs, and its length in the header).
pub(crate) const VERSION: u32 = 3;
pub(crate) const PAGE: usize = 4096;
const LINE: usize = 64;
/// Directory where POSIX shared-memory objects live on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// `closed` bit set by the sender when it drops.
pub(crate) const SENDER_CLOSED: u32 = 1;
/// `closed` bit set by the receiver when it drops.
pub(crate) const RECEIVER_CLOSED: u32 = 2;

const TAIL_OFFSET: usize = 0;
const HEAD_OFFSET: usize = LINE;
const CLOSED_OFFSET: usize = 2 * LINE;
/// Start of the per-slot `meta` entries: `len u32 | tag u32` for each slot.
const META_OFFSET: usize = 3 * LINE;
/// Bytes per `meta` entry.
const META_LEN: usize = 8;

/// Window control lines before the `done` lines: `posted[0]`, `posted[1]`.
const POSTED_LINES: usize = 2;
const _: () = assert!(8 + INLINE_LEN == LINE);

/// The first bytes of a segment.
#[repr(C)]
pub(crate) struct SegmentHeader {
    magic: AtomicU64,
    version: AtomicU32,
    owner_pid: AtomicU32,
    local_rank: AtomicU32,
    nlocal: AtomicU32,
    nchannels: AtomicU32,
    nslots: AtomicU32,
    slot_size: AtomicU64,
    fifo_stride: AtomicU64,
    total_len: AtomicU64,
    /// The window length the owner asked for (each half; 0 = no window), before rounding.
    window_len: AtomicU64,
    /// The owner's doorbell, on its own cache line (`Doorbell` is 64-byte aligned).
    pub(crate) doorbell: Doorbell,
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() <= PAGE);
const _: () = assert!(std::mem::align_of::<SegmentHeader>() <= PAGE);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, doorbell) == LINE);

/// Sizes and offsets of one segment, computed from the communicator's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) nlocal: u32,
    pub(crate) nchannels: u32,
    pub(crate) slot_size: usize,
    pub(crate) nslots: usize,
    /// Offset of the slots from the start of a FIFO.
    slots_offset: usize,
    /// Bytes from one FIFO to the next.
    fifo_stride: usize,
    /// The window length asked for (bytes per half, 0 = no window), as recorded in the header.
    pub(crate) window_len: usize,
    /// Bytes per window half: `window_len` rounded up to a page (0 without a window).
    pub(crate) half_len: usize,
    /// Offset of the window's control area: right after the FIFOs, page-aligned.
    window_offset: usize,
    /// Bytes of the control area, whole pages (0 without a window).
    ctrl_len: usize,
    /// Bytes in the whole segment.
    pub(crate) total_len: usize,
}

impl Layout {
    /// Computes the layout, rejecting sizes that overflow or cannot be described.
    ///
    /// `window_len` is the length of each of the two window halves (0: no window); it is
    /// rounded up to a page, and at most [`MAX_WINDOW_LEN`].
    pub(crate) fn new(
        nlocal: u32,
        nchannels: u32,
        fifo: FifoConfig,
        window_len: usize,
    ) -> Result<Self> {
        fifo.validate()?;
        if window_len > MAX_WINDOW_LEN {
            return Err(Error::Config(format!(
                "shm window_len {window_len} is larger than the maximum {MAX_WINDOW_LEN}"
            )));
        }
        if nlocal == 0 || nchannels == 0 {
            return Err(Error::Config(format!(
                "shm needs nlocal >= 1 and nchannels >= 1 (got {nlocal}, {nchannels})"
            )));
        }
        let overflow = || {
            Error::Config(format!(
                "shm segment for {nlocal} local ranks x {nchannels} channels x {} slots x {} B \
                 plus a window of 2 x {window_len} B is too large",
                fifo.nslots, fifo.slot_size
            ))
        };
        let meta_len = fifo.nslots.checked_mul(META_LEN).ok_or_else(overflow)?;
        let slots_offset = META_OFFSET
            .checked_add(meta_len)
            .and_then(|n| round_up(n, PAGE))
            .ok_or_else(overflow)?;
        let slots_len = fifo
            .nslots
            .checked_mul(fifo.slot_size)
            .and_then(|n| round_up(n, PAGE))
            .ok_or_else(overflow)?;
        let fifo_stride = slots_offset.checked_add(slots_len).ok_or_else(overflow)?;
        let nfifos = (nlocal as usize)
            .checked_mul(nchannels as usize)
            .ok_or_else(overflow)?;
        let window_offset = nfifos
            .checked_mul(fifo_stride)
            .and_then(|n| n.checked_add(PAGE))
            .ok_or_else(overflow)?;
        let (half_len, ctrl_len) = if window_len == 0 {
            (0, 0)
        } else {
            let half_len = round_up(window_len, PAGE).ok_or_else(overflow)?;
            let ctrl_len = (nlocal as usize)
                .checked_add(POSTED_LINES)
                .and_then(|n| n.checked_mul(LINE))
                .and_then(|n| round_up(n, PAGE))
                .ok_or_else(overflow)?;
            (half_len, ctrl_len)
        };
        let total_len = half_len
            .checked_mul(2)
            .and_then(|n| n.checked_add(ctrl_len))
            .and_then(|n| n.checked_add(window_offset))
            .filter(|&n| n <= isize::MAX as usize && u64::try_from(n).is_ok())
            .ok_or_else(overflow)?;
        Ok(Self {
            nlocal,
            nchannels,
            slot_size: fifo.slot_size,
            nslots: fifo.nslots,
            slots_offset,
            fifo_stride,
            window_len,
            half_len,
            window_offset,
            ctrl_len,
            total_len,
        })
    }

    /// Most bytes of the segment that can ever be touched (and so allocated, the file being
    /// sparse): the header page, the FIFOs from the other local ranks and the window (its
    /// control area and both halves).
    pub(crate) fn touched_len(&self) -> u64 {
        let peers = u64::from(self.nlocal - 1) * u64::from(self.nchannels);
        let window = (self.half_len as u64)
            .saturating_mul(2)
            .saturating_add(self.ctrl_len as u64);
        (PAGE as u64)
            .saturating_add(peers.saturating_mul(self.fifo_stride as u64))
            .saturating_add(window)
    }

    /// Whether the segment has a window.
    pub(crate) fn has_window(&self) -> bool {
        self.half_len > 0
    }

    /// Offset of the window's control area (page-aligned, right after the FIFOs).
    #[cfg(test)]
    pub(crate) fn window_offset(&self) -> usize {
        debug_assert!(self.has_window());
        self.window_offset
    }

    /// Offset of the `posted[half & 1]` flag (a `u64` at the start of its own line).
    pub(crate) fn posted_offset(&self, half: usize) -> usize {
        debug_assert!(self.has_window());
        self.window_offset + (half & 1) * LINE
    }

    /// Offset of the [`INLINE_LEN`] inline bytes that follow `posted[half & 1]` in its line.
    pub(crate) fn inline_offset(&self, half: usize) -> usize {
        self.posted_offset(half) + 8
    }

    /// Offset of `done[reader]` (a `u64` at the start of its own line).
    pub(crate) fn done_offset(&self, reader: u32) -> usize {
        debug_assert!(self.has_window() && reader < self.nlocal);
        self.window_offset + (POSTED_LINES + reader as usize) * LINE
    }

    /// Offset of window half `half & 1` (page-aligned, `half_len` bytes).
    pub(crate) fn half_offset(&self, half: usize) -> usize {
        debug_assert!(self.has_window());
        self.window_offset + self.ctrl_len + (half & 1) * self.half_len
    }

    /// Offset of FIFO `index` (`sender_local * nchannels + channel`) in the segment.
    pub(crate) fn fifo_offset(&self, index: usize) -> usize {
        debug_assert!(index < self.nlocal as usize * self.nchannels as usize);
        PAGE + index * self.fifo_stride
    }

    /// Offset of slot `slot`'s length word within a FIFO.
    pub(crate) fn len_offset(slot: usize) -> usize {
        META_OFFSET + META_LEN * slot
    }

    /// Offset of slot `slot`'s tag word within a FIFO (right after its length).
    pub(crate) fn tag_offset(slot: usize) -> usize {
        Self::len_offset(slot) + 4
    }

    /// Offset of slot `slot`'s bytes within a FIFO.
    pub(crate) fn slot_offset(&self, slot: usize) -> usize {
        self.slots_offset + slot * self.slot_size
    }
}

/// `n` rounded up to a multiple of `align` (a power of two), `None` on overflow.
pub(crate) fn round_up(n: usize, align: usize) -> Option<usize> {
    n.checked_add(align - 1).map(|n| n / align * align)
}

/// A `MAP_SHARED` mapping of a whole segment (an inbox, or a registered region); unmapped on
/// drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    name: String,
    /// Mapped with `PROT_WRITE`; a read-only mapping hands out no atomics (see `u64_at`).
    writable: bool,
}

// SAFETY: the mapping is plain shared memory owned by this value; all access to memory a
// peer may change goes through atomics or through slots whose exclusive use the FIFO
// protocol hands to one side at a time, so sharing the pointer across threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out atomics and raw slot pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Creates `/dev/shm/<name>` (exclusively, mode 0600), sizes it (sparse) and maps it.
    /// The header is not written yet. On failure nothing is left behind.
    pub(crate) fn create(name: &str, layout: &Layout) -> Result<Self> {
        check_space(layout)?;
        Self::create_len(name, layout.total_len)
    }

    /// Creates `/dev/shm/<name>` (exclusively, mode 0600), sizes it sparsely to `len` bytes
    /// and maps it read-write. The caller checked `len` (and the free space). On failure
    /// nothing is left behind.
    pub(crate) fn create_len(name: &str, len: usize) -> Result<Self> {
        let path = shm_path(name);
        let fd = rustix::fs::open(
            &path,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| Error::io(format!("creating shared memory segment {path}"), e.into()))?;
        let mapped = rustix::fs::ftruncate(&fd, len as u64)
            .map_err(|e| {
                Error::io(
                    format!("sizing shared memory segment {path} to {len} bytes"),
                    e.into(),
                )
            })
            .and_then(|()| Self::map_fd(fd, name, len, true));
        if mapped.is_err() {
            let _ = rustix::fs::unlink(&path);
        }
        mapped
    }

    /// Opens and maps a peer's existing segment, checking that its size is `layout`'s.
    pub(crate) fn open(name: &str, layout: &Layout) -> Result<Self> {
        let path = shm_path(name);
        let fd = rustix::fs::open(
            &path,
            OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| {
            Error::io(
                format!("opening peer's shared memory segment {path}"),
                e.into(),
            )
        })?;
        let stat = rustix::fs::fstat(&fd)
            .map_err(|e| Error::io(format!("stat of shared memory segment {path}"), e.into()))?;
        if u64::try_from(stat.st_size).ok() != Some(layout.total_len as u64) {
            return Err(Error::Config(format!(
                "shared memory segment {path} is {} bytes, expected {} (do the local ranks \
                 agree on nlocal={}, nchannels={}, slot_size={}, nslots={}, window_len={}?)",
                stat.st_size,
                layout.total_len,
                layout.nlocal,
                layout.nchannels,
                layout.slot_size,
                layout.nslots,
                layout.window_len
            )));
        }
        Self::map_fd(fd, name, layout.total_len, true)
    }

    /// Maps the first `len` bytes (nonzero) of `fd`, a file the caller checked is at least
    /// that long, shared; read-write if `writable`, else read-only (then only
    /// [`Mapping::bytes_at`] may be used, for reading).
    pub(crate) fn map_fd(fd: OwnedFd, name: &str, len: usize, writable: bool) -> Result<Self> {
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a fresh mapping (null hint, no MAP_FIXED) of `len` bytes of a file that is
        // at least `len` bytes long; it replaces no existing memory. The fd may be closed
        // afterwards; the mapping keeps the file alive.
        let ptr =
            unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, &fd, 0) }
                .map_err(|e| {
                    Error::io(format!("mapping shared memory segment {name}"), e.into())
                })?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::Config(format!("mmap of {name} returned null")))?;
        Ok(Self {
            ptr,
            len,
            name: name.to_owned(),
            writable,
        })
    }

    /// The segment's name (without `/dev/shm/`).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The segment header (of an inbox).
    pub(crate) fn header(&self) -> &SegmentHeader {
        debug_assert!(self.writable, "internal: atomic in a read-only mapping");
        // SAFETY: the mapping is page-aligned and at least one page long (Layout::new adds
        // a header page), so a `SegmentHeader` (atomics only, any bit pattern valid) fits
        // at offset 0 and lives as long as `self`.
        unsafe { &*self.ptr.as_ptr().cast::<SegmentHeader>() }
    }

    /// The atomic `u64` at byte offset `off`.
    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(self.writable, "internal: atomic in a read-only mapping");
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "internal: bad shm offset {off}"
        );
        // SAFETY: in bounds and 8-aligned (checked above; the base is page-aligned);
        // AtomicU64 accepts any bit pattern and the memory lives as long as `self`.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// The atomic `u32` at byte offset `off`.
    pub(crate) fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(self.writable, "internal: atomic in a read-only mapping");
        assert!(
            off % 4 == 0 && off + 4 <= self.len,
            "internal: bad shm offset {off}"
        );
        // SAFETY: in bounds and 4-aligned (checked above; the base is page-aligned);
        // AtomicU32 accepts any bit pattern and the memory lives as long as `self`.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// A raw pointer to `len` bytes at `off`. Offsets come from our own [`Layout`], never
    /// from shared memory.
    pub(crate) fn bytes_at(&self, off: usize, len: usize) -> *mut u8 {
        assert!(
            off.checked_add(len).is_some_and(|end| end <= self.len),
            "internal: bad shm range {off}+{len}"
        );
        // SAFETY: `off + len <= self.len`, so the result stays within the mapping.
        unsafe { self.ptr.as_ptr().add(off) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; every reference into the
        // mapping borrows `self` (or an `Arc` of it), so none outlives this call.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("name", &self.name)
            .field("len", &self.len)
            .finish()
    }
}

/// Fails if `/dev/shm` cannot hold this rank's inbox once fully touched: writing to a page
/// of a full tmpfs kills the process with `SIGBUS`, so a clear error now is far better.
/// Warns if it cannot hold every local rank's inbox (the others are checked by their ranks).
fn check_space(layout: &Layout) -> Result<()> {
    let Some(free) = shm_free_bytes() else {
        return Ok(());
    };
    let need = layout.touched_len();
    if free < need {
        return Err(Error::Config(format!(
            "{SHM_DIR} has {free} bytes free, but this rank's shared memory inbox may use \
             {need} ({} local ranks x {} channels x {} slots x {} B, window 2 x {} B); \
             enlarge {SHM_DIR} (e.g. `docker run --shm-size`), or use fewer channels, smaller \
             FIFOs or a smaller window",
            layout.nlocal, layout.nchannels, layout.nslots, layout.slot_size, layout.half_len
        )));
    }
    let need_all = need.saturating_mul(u64::from(layout.nlocal));
    if free < need_all {
        tracing::warn!(
            free,
            need_all,
            dir = SHM_DIR,
            "shared memory may run out when every local rank's inbox fills"
        );
    }
    Ok(())
}

/// Bytes free in `/dev/shm` for an unprivileged process, or `None` if `statvfs` fails (then
/// callers skip their check rather than refuse to run).
pub(crate) fn shm_free_bytes() -> Option<u64> {
    let st = rustix::fs::statvfs(SHM_DIR).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// `/dev/shm/<name>`.
/// Removes `/dev/shm/<name>` unless `unlinked` says it already went (a name already gone
/// counts as removed); sets `unlinked`. Shared by the inbox and registered regions.
pub(crate) fn unlink_once(name: &str, unlinked: &mut bool) -> Result<()> {
    if *unlinked {
        return Ok(());
    }
    let path = shm_path(name);
    match rustix::fs::unlink(&path) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {
            *unlinked = true;
            Ok(())
        }
        Err(e) => Err(Error::io(format!("unlinking {path}"), e.into())),
    }
}

pub(crate) fn shm_path(name: &str) -> String {
    format!("{SHM_DIR}/{name}")
}

impl SegmentHeader {
    /// Fills a fresh header; the magic is stored last, with `Release`, so a peer that sees
    /// it sees the rest.
    pub(crate) fn init(&self, layout: &Layout, local_rank: u32, pid: u32) {
        let r = Ordering::Relaxed;
        self.version.store(VERSION, r);
        self.owner_pid.store(pid, r);
        self.local_rank.store(local_rank, r);
        self.nlocal.store(layout.nlocal, r);
        self.nchannels.store(layout.nchannels, r);
        self.nslots.store(layout.nslots as u32, r);
        self.slot_size.store(layout.slot_size as u64, r);
        self.fifo_stride.store(layout.fifo_stride as u64, r);
        self.total_len.store(layout.total_len as u64, r);
        self.window_len.store(layout.window_len as u64, r);
        self.magic.store(MAGIC, Ordering::Release);
    }

    /// Checks a peer's header against what we expect, naming the first mismatch.
    pub(crate) fn validate(
        &self,
        name: &str,
        layout: &Layout,
        local_rank: u32,
        pid: u32,
    ) -> Result<()> {
        let magic = self.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(Error::Config(format!(
                "shared memory segment {name} is not an oxccl inbox (magic {magic:#018x}; not \
                 initialised yet, or another program's file)"
            )));
        }
        let r = Ordering::Relaxed;
        let checks: [(&str, u64, u64); 10] = [
            (
                "layout version",
                self.version.load(r).into(),
                VERSION.into(),
            ),
            ("owner pid", self.owner_pid.load(r).into(), pid.into()),
            (
                "local rank",
                self.local_rank.load(r).into(),
                local_rank.into(),
            ),
            ("nlocal", self.nlocal.load(r).into(), layout.nlocal.into()),
            (
                "nchannels",
                self.nchannels.load(r).into(),
                layout.nchannels.into(),
            ),
            ("nslots", self.nslots.load(r).into(), layout.nslots as u64),
            ("slot_size", self.slot_size.load(r), layout.slot_size as u64),
            (
                "fifo stride",
                self.fifo_stride.load(r),
                layout.fifo_stride as u64,
            ),
            (
                "window_len",
                self.window_len.load(r),
                layout.window_len as u64,
            ),
            (
                "total length",
                self.total_len.load(r),
                layout.total_len as u64,
            ),
        ];
        for (what, found, expected) in checks {
            if found != expected {
                return Err(Error::Config(format!(
                    "shared memory segment {name}: {what} is {found}, expected {expected}"
                )));
            }
        }
        Ok(())
    }
}

/// Offsets of one FIFO's fields inside a mapping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FifoOffsets {
    pub(crate) tail: usize,
    pub(crate) head: usize,
    pub(crate) closed: usize,
    base: usize,
}

impl FifoOffsets {
    /// The offsets of FIFO `index`.
    pub(crate) fn new(layout: &Layout, index: usize) -> Self {
        let base = layout.fifo_offset(index);
        Self {
            tail: base + TAIL_OFFSET,
            head: base + HEAD_OFFSET,
            closed: base + CLOSED_OFFSET,
            base,
        }
    }

    /// Offset of slot `slot`'s length word.
    pub(crate) fn len(&self, slot: usize) -> usize {
        self.base + Layout::len_offset(slot)
    }

    /// Offset of slot `slot`'s tag word.
    pub(crate) fn tag(&self, slot: usize) -> usize {
        self.base + Layout::tag_offset(slot)
    }

    /// Offset of slot `slot`'s bytes.
    pub(crate) fn slot(&self, layout: &Layout, slot: usize) -> usize {
        self.base + layout.slot_offset(slot)
    }
}
