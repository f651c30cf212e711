//! Registered shared-memory regions: user memory of one rank that every local peer maps and
//! reads in place (oxccl's counterpart of NCCL's `ncclMemAlloc` + registration).
//!
//! A rank allocates a region with [`ShmRegion::create`] instead of ordinary memory; local
//! peers map it with [`PeerRegion::open`] and read its bytes directly, so data the owner put
//! there needs no copy into a FIFO slot or window.
//!
//! # Layout
//! ```text
//! offset 0      header page  magic "OXCCLREG" (u64) | version (u32) | owner pid (u32) | data_len (u64)
//! offset 4096   data         data_len bytes, page-aligned; the file is 4096 + round_up(data_len, 4096)
//! ```
//! The owner writes the header through atomics (in this host's byte order; the magic reads
//! "OXCCLREG" on little-endian hosts), the magic last with `Release`. The file is created
//! with `O_EXCL` and mode 0600 and sized sparsely; `data_len` may be 0 (the file is then just
//! the header page, so names stay uniform).
//!
//! # Protocol (followed by the engine; not enforced here)
//! 1. The owner calls [`ShmRegion::create`] with a name unique on the node (starting with
//!    `oxccl-`), and publishes the name, its pid and the length to its local peers.
//! 2. Each peer calls [`PeerRegion::open`] with what was published; it checks the header
//!    (magic, version, owner pid, length) and that the owner's process lives.
//! 3. After a barrier (every peer has opened the region), the owner calls
//!    [`ShmRegion::unlink`]. The mappings stay valid, and nothing is left in `/dev/shm` even
//!    if a process is killed later. Dropping the region unlinks it too, if step 3 did not
//!    happen.
//! 4. The owner writes its data through [`ShmRegion::data_mut`] only while no reader relies
//!    on the bytes, and readers read [`PeerRegion::data`] only between a synchronisation that
//!    tells them the owner finished writing and one that tells the owner they are done (the
//!    engine's flags, FIFO messages or barriers).
//!
//! [`RegionAnchor`] keeps the owner's mapping alive without access to the bytes, so the
//! engine can remember "this address range is registered" and be sure the addresses are not
//! reused by another mapping while it does.
//!
//! # Why a peer's bytes are handed out as `&[u8]`
//! Another process maps the same memory, so in general it could change under a shared
//! reference. The protocol above rules that out for well-behaved ranks: the owner does not
//! write the data while a reader holds references to it, the same hand-over the FIFO slots
//! and the window rely on (see `window.rs`). A misbehaving or buggy peer that writes anyway
//! (peers map the region read-only, but any process of the same user could open the file
//! read-write) can only make this process read wrong bytes, i.e. give a wrong result: the
//! bytes are never interpreted as anything but `u8` here, and every offset and length comes
//! from this process's own checks (the file's size is checked against the length the caller
//! expects before mapping, and the header is read once, at open). The same holds for the
//! owner's own `&mut [u8]`: only the owner's handle can hand it out, and a peer writing into
//! the file breaks the protocol in the same way. A process that shrinks the file under us can
//! still crash this process with `SIGBUS`, as with any shared mapping.

use std::fs::File;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::connect::{valid_name, PeerProcess, MAX_NAME_LEN, NAME_PREFIX};
use super::layout::{round_up, shm_free_bytes, shm_path, unlink_once, Mapping, PAGE, SHM_DIR};
use crate::{Error, Result};

/// Largest accepted region length in bytes (1 TiB).
pub const MAX_REGION_LEN: u64 = 1 << 40;

/// "OXCCLREG", little-endian.
const REGION_MAGIC: u64 = u64::from_le_bytes(*b"OXCCLREG");
/// Bumped on any change of the region layout.
const REGION_VERSION: u32 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 8;
const PID_OFFSET: usize = 12;
const LEN_OFFSET: usize = 16;
/// Bytes of the header that carry something.
const HEADER_LEN: usize = 24;
/// Offset of the data: right after the header page.
const DATA_OFFSET: usize = PAGE;

/// This rank's registered region: the only handle that can write its data.
///
/// Dropping it unlinks the name if it is still linked; the memory stays mapped until the
/// region and every [`RegionAnchor`] from it are gone.
#[derive(Debug)]
pub struct ShmRegion {
    map: Arc<Mapping>,
    data_len: usize,
    unlinked: bool,
}

/// Keeps an own region mapped (so its addresses are never reused while the anchor lives) and
/// tells its address range. Gives no access to the bytes.
#[derive(Clone, Debug)]
pub struct RegionAnchor {
    /// Only held: keeps the mapping (and so the address range) alive.
    _map: Arc<Mapping>,
    start: usize,
    len: usize,
}

/// A local peer's region, mapped read-only.
#[derive(Debug)]
pub struct PeerRegion {
    map: Mapping,
    data_len: usize,
}

impl ShmRegion {
    /// Creates `/dev/shm/<name>` holding `data_len` bytes of data (zeroed), and maps it.
    ///
    /// `name` must be unique on the node, start with `oxccl-`, be at most 200 bytes and hold
    /// only ASCII letters, digits, `-`, `_` and `.` (the rules of [`ShmContext`] names).
    /// `data_len` may be 0 and at most [`MAX_REGION_LEN`].
    ///
    /// Fails with [`Error::Config`] for a bad name or length, or if `/dev/shm` has less free
    /// space than the region needs (touching a page of a full tmpfs kills the process with
    /// `SIGBUS`), and with [`Error::Io`] if the file exists already or cannot be created.
    ///
    /// [`ShmContext`]: super::ShmContext
    pub fn create(name: &str, data_len: usize) -> Result<Self> {
        check_name(name)?;
        let total = total_len(data_len)?;
        if let Some(free) = shm_free_bytes() {
            if free < total as u64 {
                return Err(Error::Config(format!(
                    "{SHM_DIR} has {free} bytes free, but shared memory region {name} needs \
                     {total} ({data_len} bytes of data plus its header page); enlarge \
                     {SHM_DIR} (e.g. `docker run --shm-size`) or register less memory"
                )));
            }
        }
        let map = Mapping::create_len(name, total)?;
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        let r = Ordering::Relaxed;
        map.u32_at(VERSION_OFFSET).store(REGION_VERSION, r);
        map.u32_at(PID_OFFSET).store(pid, r);
        map.u64_at(LEN_OFFSET).store(data_len as u64, r);
        map.u64_at(MAGIC_OFFSET)
            .store(REGION_MAGIC, Ordering::Release);
        tracing::debug!(region = %name, data_len, "created shm region");
        Ok(Self {
            map: Arc::new(map),
            data_len,
            unlinked: false,
        })
    }

    /// The region's name (without `/dev/shm/`), to publish to the local peers.
    pub fn name(&self) -> &str {
        self.map.name()
    }

    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.data_len
    }

    /// Whether the region holds no data.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }

    /// The data, [`ShmRegion::len`] bytes from a page-aligned address.
    pub fn data(&self) -> &[u8] {
        let ptr = self.map.bytes_at(DATA_OFFSET, self.data_len);
        // SAFETY: `bytes_at` checked that the range lies inside the mapping (the file is at
        // least `DATA_OFFSET + data_len` bytes), which `self.map` keeps alive for the borrow
        // of `self`; the pointer is non-null and `u8` needs no alignment. In this process the
        // bytes are written only through `data_mut`, which needs `&mut self` and so cannot
        // overlap this borrow. Other processes (and `PeerRegion`s of this region) map it
        // read-only; one that writes anyway breaks the protocol and can only make us read
        // wrong bytes (module docs).
        unsafe { std::slice::from_raw_parts(ptr, self.data_len) }
    }

    /// The data, writable, [`ShmRegion::len`] bytes from a page-aligned address. Write only
    /// while no local peer relies on the bytes (module docs).
    pub fn data_mut(&mut self) -> &mut [u8] {
        let ptr = self.map.bytes_at(DATA_OFFSET, self.data_len);
        // SAFETY: inside the mapping and kept alive as in `data`; the mapping is writable
        // (created by `Mapping::create_len`). `&mut self` is held for the returned lifetime,
        // and this handle is the only one that hands out the bytes in this process (anchors
        // give only addresses), so nothing in this process aliases the slice except through
        // a `PeerRegion` of the same region, which the protocol keeps from reading while the
        // owner writes, as for any peer; breaking it gives wrong bytes, not memory
        // unsafety beyond what any shared mapping accepts (module docs).
        unsafe { std::slice::from_raw_parts_mut(ptr, self.data_len) }
    }

    /// Removes the name from `/dev/shm`; the mappings (own, anchors, peers') stay valid. Call
    /// it once every local peer opened the region. Idempotent; also done on drop.
    pub fn unlink(&mut self) -> Result<()> {
        unlink_once(self.map.name(), &mut self.unlinked)
    }

    /// A handle that keeps the mapping alive and tells where the data is, without access to
    /// the bytes.
    pub fn anchor(&self) -> RegionAnchor {
        RegionAnchor {
            _map: self.map.clone(),
            start: self.map.bytes_at(DATA_OFFSET, self.data_len) as usize,
            len: self.data_len,
        }
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        if let Err(e) = self.unlink() {
            tracing::warn!(error = %e, "could not remove shm region");
        }
    }
}

impl RegionAnchor {
    /// The data's address range (for "is this slice inside the region" checks; never
    /// dereferenced). Fixed for the anchor's life.
    pub fn addr_range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// If `bytes` lies entirely inside the region's data: its byte offset from the data
    /// start. An empty slice counts as inside if its pointer is within `start..=end`.
    pub fn offset_of(&self, bytes: &[u8]) -> Option<usize> {
        let addr = bytes.as_ptr() as usize;
        let end = addr.checked_add(bytes.len())?;
        (addr >= self.start && end <= self.start + self.len).then(|| addr - self.start)
    }
}

impl PeerRegion {
    /// Maps `name`, published by local peer process `peer_pid` for `data_len` bytes.
    ///
    /// Fails with [`Error::Config`] for a bad name or length, or if the file is not such a
    /// region (naming what differs: magic, version, owner pid, data length or file size);
    /// with [`Error::PeerClosed`] if `peer_pid` is not a live process visible from here; and
    /// with [`Error::Io`] if the file cannot be opened (e.g. it does not exist, or its owner
    /// already unlinked it).
    pub fn open(name: &str, data_len: usize, peer_pid: u32) -> Result<Self> {
        check_name(name)?;
        let total = total_len(data_len)?;
        PeerProcess::with_desc(
            format!("the owner of shm region {name} (pid {peer_pid})"),
            peer_pid,
        )?;
        let path = shm_path(name);
        let fd = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| {
            let hint = if e == Errno::NOENT {
                " (not created yet, or its owner already unlinked it)"
            } else {
                ""
            };
            Error::io(
                format!("opening local peer's shared memory region {path}{hint}"),
                e.into(),
            )
        })?;
        let file = File::from(fd);
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("stat of shared memory region {path}"), e))?
            .len();
        if size < PAGE as u64 {
            return Err(Error::Config(format!(
                "shared memory file {path} is not an oxccl region: it is {size} bytes, shorter \
                 than a region's header page"
            )));
        }
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| Error::io(format!("reading the header of {path}"), e))?;
        validate_header(&path, &header, data_len, peer_pid)?;
        if size != total as u64 {
            return Err(Error::Config(format!(
                "shared memory region {path} is {size} bytes, expected {total} for {data_len} \
                 bytes of data (truncated or resized?)"
            )));
        }
        let map = Mapping::map_fd(OwnedFd::from(file), name, total, false)?;
        Ok(Self { map, data_len })
    }

    /// The peer's data, [`PeerRegion::len`] bytes from a page-aligned address. Read it only
    /// while the owner does not write it (module docs).
    pub fn data(&self) -> &[u8] {
        let ptr = self.map.bytes_at(DATA_OFFSET, self.data_len);
        // SAFETY: `bytes_at` checked that the range lies inside the mapping (whose length
        // `open` checked against the file's size), which `self.map` keeps alive for the
        // borrow of `self`; the pointer is non-null and `u8` needs no alignment. The mapping
        // is read-only here, and the owner does not write the data while readers rely on it
        // (module docs); an owner that breaks this can only make us read wrong bytes, and one
        // that shrinks the file can raise `SIGBUS`, as with any shared mapping.
        unsafe { std::slice::from_raw_parts(ptr, self.data_len) }
    }

    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.data_len
    }

    /// Whether the region holds no data.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }

    /// The region's name (without `/dev/shm/`).
    pub fn name(&self) -> &str {
        self.map.name()
    }
}

/// `Error::Config` unless `name` follows the shared-memory name rules.
fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "shm region name {name:?} must start with {NAME_PREFIX:?}, be at most {MAX_NAME_LEN} \
         bytes and hold only ASCII letters, digits, '-', '_' or '.'"
    )))
}

/// Bytes of the file for `data_len` bytes of data: the header page plus the data rounded up
/// to a page.
fn total_len(data_len: usize) -> Result<usize> {
    if data_len as u64 > MAX_REGION_LEN {
        return Err(Error::Config(format!(
            "shm region length {data_len} is larger than the maximum {MAX_REGION_LEN}"
        )));
    }
    round_up(data_len, PAGE)
        .and_then(|n| n.checked_add(DATA_OFFSET))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| {
            Error::Config(format!(
                "shm region length {data_len} does not fit this platform's address space"
            ))
        })
}

/// Checks a region header read from `path` against what the peer published.
fn validate_header(path: &str, header: &[u8; HEADER_LEN], data_len: usize, pid: u32) -> Result<()> {
    // The owner stored these through native-endian atomics.
    let u64_at = |off: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[off..off + 8]);
        u64::from_ne_bytes(b)
    };
    let u32_at = |off: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&header[off..off + 4]);
        u32::from_ne_bytes(b)
    };
    let magic = u64_at(MAGIC_OFFSET);
    if magic != REGION_MAGIC {
        return Err(Error::Config(format!(
            "shared memory file {path} is not an oxccl region (magic {magic:#018x}; not \
             initialised yet, an inbox, or another program's file)"
        )));
    }
    let version = u32_at(VERSION_OFFSET);
    if version != REGION_VERSION {
        return Err(Error::Config(format!(
            "shared memory region {path}: layout version is {version}, expected \
             {REGION_VERSION} (mixed oxccl versions?)"
        )));
    }
    let owner = u32_at(PID_OFFSET);
    if owner != pid {
        return Err(Error::Config(format!(
            "shared memory region {path}: owner pid is {owner}, expected {pid}"
        )));
    }
    let found = u64_at(LEN_OFFSET);
    if found != data_len as u64 {
        return Err(Error::Config(format!(
            "shared memory region {path}: data length is {found} bytes, expected {data_len} \
             (do the ranks agree on the region's length?)"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "region_tests.rs"]
mod tests;
