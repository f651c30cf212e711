//! GPU buffers shared between the processes of one node through CUDA IPC.
//!
//! A rank exports the allocation holding a buffer (`cuIpcGetMemHandle` on the allocation's
//! base, plus the offset) into an [`Exported`] record; the ranks swap records through the
//! host communicator ([`Record`]: one per rank, with both buffers of a job); each opens the
//! others' allocations (`cuIpcOpenMemHandle`, cached per allocation in [`Mappings`]; ranks of
//! one process use the addresses as they are). [`unusable`] decides from the records alone,
//! so the same way on every rank, whether a job can go through peer memory at all. The
//! collectives themselves are in [`super::peer`].

use std::collections::HashMap;

use cudarc::driver::sys;

use crate::{Error, Result};

/// One buffer as a peer finds it: its allocation's IPC handle and the offset into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// `CUipcMemHandle` of the allocation.
    pub handle: [u8; 64],
    /// The buffer's offset in the allocation.
    pub offset: u64,
    /// The buffer's address in its own process (used as is by ranks of that process).
    pub addr: u64,
    /// The owning process (a random token: pids repeat across containers).
    pub process: u64,
    /// The device the buffer is on (in its process's numbering).
    pub device: u32,
}

/// Bytes of one [`Exported`] on the wire.
pub const EXPORTED_BYTES: usize = 64 + 8 + 8 + 8 + 4;

/// This process's token: the pid mixed with the clock and std's per-process hash keys.
fn process_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static TOKEN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    })
}

impl Exported {
    /// A buffer that only ranks of this process can reach (by its address).
    pub fn local(addr: u64, device: u32) -> Self {
        Self {
            handle: [0; 64],
            offset: 0,
            addr,
            process: process_token(),
            device,
        }
    }

    fn to_bytes(self) -> [u8; EXPORTED_BYTES] {
        let mut b = [0u8; EXPORTED_BYTES];
        b[..64].copy_from_slice(&self.handle);
        b[64..72].copy_from_slice(&self.offset.to_le_bytes());
        b[72..80].copy_from_slice(&self.addr.to_le_bytes());
        b[80..88].copy_from_slice(&self.process.to_le_bytes());
        b[88..92].copy_from_slice(&self.device.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Self {
        let mut handle = [0u8; 64];
        handle.copy_from_slice(&b[..64]);
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Self {
            handle,
            offset: u64_at(64),
            addr: u64_at(72),
            process: u64_at(80),
            device: u32::from_le_bytes(b[88..92].try_into().expect("4 bytes")),
        }
    }
}

pub(super) fn check(r: sys::CUresult, what: impl FnOnce() -> String) -> Result<()> {
    r.result()
        .map_err(|e| Error::Config(format!("{}: CUDA driver error {e}", what())))
}

/// The record peers need to reach the device buffer at `addr` on `device` (a query: nothing
/// is dereferenced). Fails for memory CUDA IPC cannot share: stream-ordered pool memory
/// (cuMemAllocAsync, which cudarc uses where the device has pools), cuMem virtual memory
/// (PyTorch's expandable segments), host memory.
pub fn export(addr: u64, device: u32) -> Result<Exported> {
    // Pool memory may still yield a handle that peers then fail to open: ask first.
    let mut capable: std::ffi::c_uint = 0;
    // SAFETY: a query on an address; writes one unsigned int, or fails for an unknown one.
    let r = unsafe {
        sys::cuPointerGetAttribute(
            (&mut capable as *mut std::ffi::c_uint).cast(),
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE,
            addr,
        )
    };
    check(r, || {
        format!("asking whether {addr:#x} can be shared through CUDA IPC")
    })?;
    if capable == 0 {
        return Err(Error::Config(format!(
            "{addr:#x} cannot be shared through CUDA IPC (pool or cuMem memory)"
        )));
    }
    let (mut base, mut size): (sys::CUdeviceptr, usize) = (0, 0);
    // SAFETY: a query on an address; writes two values, or fails for an unknown address.
    let r = unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, addr) };
    check(r, || format!("finding the allocation of {addr:#x}"))?;
    let mut h = sys::CUipcMemHandle_st { reserved: [0; 64] };
    // SAFETY: `base` is the start of a live allocation (just queried); writes one handle.
    let r = unsafe { sys::cuIpcGetMemHandle(&mut h, base) };
    check(r, || {
        format!(
            "exporting the allocation at {base:#x} through CUDA IPC (pool and cuMem memory \
             cannot be)"
        )
    })?;
    Ok(Exported {
        handle: h.reserved.map(|c| c as u8),
        offset: addr - base,
        addr,
        process: process_token(),
        device,
    })
}

/// Peers' allocations opened in this process, by handle, with the job that last used each.
#[derive(Debug, Default)]
pub struct Mappings {
    opened: HashMap<[u8; 64], (sys::CUdeviceptr, u64)>,
    /// The current job's number.
    job: u64,
}

impl Mappings {
    /// Starts a job: what it resolves is marked as in use by it.
    pub fn begin_job(&mut self) {
        self.job += 1;
    }

    /// Where `e` is in this process (opening its allocation the first time).
    pub fn resolve(&mut self, e: &Exported) -> Result<u64> {
        if e.process == process_token() {
            return Ok(e.addr);
        }
        if let Some((base, used)) = self.opened.get_mut(&e.handle) {
            *used = self.job;
            return Ok(*base + e.offset);
        }
        let h = sys::CUipcMemHandle_st {
            reserved: e.handle.map(|b| b as std::ffi::c_char),
        };
        let mut base: sys::CUdeviceptr = 0;
        // SAFETY: a handle a peer exported from a live allocation; writes one address.
        let r = unsafe {
            sys::cuIpcOpenMemHandle_v2(
                &mut base,
                h,
                sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32,
            )
        };
        check(r, || "opening a peer process's GPU buffer".into())?;
        self.opened.insert(e.handle, (base, self.job));
        Ok(base + e.offset)
    }

    /// Allocations opened so far.
    pub fn len(&self) -> usize {
        self.opened.len()
    }

    /// Whether none was opened.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty()
    }

    /// Closes the least recently used allocations beyond `keep`, never the current job's
    /// (call it when no kernel uses them; the owning context must be current).
    pub fn evict_beyond(&mut self, keep: usize) {
        for h in self.victims(keep) {
            if let Some((base, _)) = self.opened.remove(&h) {
                // SAFETY: an address cuIpcOpenMemHandle returned, closed once (just removed),
                // used by no kernel (the caller's contract).
                let _ = unsafe { sys::cuIpcCloseMemHandle(base) };
            }
        }
    }

    /// The least recently used handles beyond `keep`, none of the current job's.
    fn victims(&self, keep: usize) -> Vec<[u8; 64]> {
        let excess = self.opened.len().saturating_sub(keep);
        let mut by_age: Vec<([u8; 64], u64)> = self
            .opened
            .iter()
            .map(|(h, &(_, used))| (*h, used))
            .collect();
        by_age.sort_by_key(|&(_, used)| used);
        by_age
            .into_iter()
            .take(excess)
            .take_while(|&(_, used)| used != self.job)
            .map(|(h, _)| h)
            .collect()
    }

    /// Closes every opened allocation (the owning context must be current).
    pub fn close_all(&mut self) {
        for (_, (base, _)) in self.opened.drain() {
            // SAFETY: an address cuIpcOpenMemHandle returned, closed once.
            let _ = unsafe { sys::cuIpcCloseMemHandle(base) };
        }
    }
}

/// One rank's record for a job: whether its kernels loaded, whether its buffers could be
/// exported for other processes, which process and device it is, and its send and receive
/// buffers (zero where it has no such buffer; the addresses alone where they could not be
/// exported, which serve ranks of the same process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Its peer kernels loaded.
    pub kernels: bool,
    /// Its buffers are exported through CUDA IPC (other processes can open them).
    pub shared: bool,
    /// [`Exported::process`] of the rank.
    pub process: u64,
    /// The rank's device, in its process's numbering.
    pub device: u32,
    /// Its send buffer.
    pub send: Exported,
    /// Its receive buffer.
    pub recv: Exported,
}

/// Bytes of one [`Record`] on the wire.
pub const RECORD_BYTES: usize = 2 + 8 + 4 + 2 * EXPORTED_BYTES;

impl Record {
    /// This process's record of `device`, with no buffer yet, no kernels and nothing shared.
    pub fn new(device: u32) -> Self {
        let none = Exported::local(0, device);
        Self {
            kernels: false,
            shared: false,
            process: process_token(),
            device,
            send: none,
            recv: none,
        }
    }

    /// The record as bytes.
    pub fn to_bytes(self) -> [u8; RECORD_BYTES] {
        let mut b = [0u8; RECORD_BYTES];
        b[0] = u8::from(self.kernels);
        b[1] = u8::from(self.shared);
        b[2..10].copy_from_slice(&self.process.to_le_bytes());
        b[10..14].copy_from_slice(&self.device.to_le_bytes());
        b[14..14 + EXPORTED_BYTES].copy_from_slice(&self.send.to_bytes());
        b[14 + EXPORTED_BYTES..].copy_from_slice(&self.recv.to_bytes());
        b
    }

    /// Every rank's record from an exchange's bytes, or why they do not parse.
    pub fn parse_all(bytes: &[u8], nranks: usize) -> std::result::Result<Vec<Self>, String> {
        if bytes.len() != nranks * RECORD_BYTES {
            return Err(format!(
                "{} bytes of peer records for {nranks} ranks",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks(RECORD_BYTES)
            .map(|b| Self {
                kernels: b[0] == 1,
                shared: b[1] == 1,
                process: u64::from_le_bytes(b[2..10].try_into().expect("8 bytes")),
                device: u32::from_le_bytes(b[10..14].try_into().expect("4 bytes")),
                send: Exported::from_bytes(&b[14..14 + EXPORTED_BYTES]),
                recv: Exported::from_bytes(&b[14 + EXPORTED_BYTES..]),
            })
            .collect())
    }
}

/// Why the records do not allow the peer path (the same answer on every rank: they all see
/// the same records), or `None`. Buffers that could not be exported (stream-ordered pool
/// memory, say) are fine between ranks of one process, which use the addresses as they are.
pub fn unusable(records: &[Record]) -> Option<String> {
    if let Some(bad) = records.iter().position(|r| !r.kernels) {
        return Some(format!("rank {bad}'s peer kernels did not load"));
    }
    for (i, a) in records.iter().enumerate() {
        for (j, b) in records.iter().enumerate().skip(i + 1) {
            if a.process == b.process && a.device != b.device {
                return Some(format!(
                    "ranks {i} and {j} share a process but not a device (peer access between \
                     contexts of one process is not set up)"
                ));
            }
            if a.process != b.process && !(a.shared && b.shared) {
                let k = if a.shared { j } else { i };
                return Some(format!(
                    "rank {k}'s buffers cannot be shared through CUDA IPC with the ranks of \
                     other processes (pool or cuMem memory)"
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(shared: bool, process: u64, device: u32) -> Record {
        Record {
            kernels: true,
            shared,
            process,
            device,
            ..Record::new(device)
        }
    }

    /// Every rank sees the same records, so every rank takes the same path: the peer path
    /// only when every rank's kernels loaded, ranks of different processes can open each
    /// other's buffers, and no process holds ranks on two devices.
    #[test]
    fn the_path_follows_from_the_records_alone() {
        assert_eq!(
            unusable(&[record(true, 1, 0), record(true, 2, 0), record(true, 3, 1)]),
            None
        );
        let why = unusable(&[record(true, 1, 0), record(false, 2, 0)]).unwrap();
        assert!(why.contains("rank 1's buffers"), "{why}");
        let why = unusable(&[record(false, 1, 0), record(true, 2, 0)]).unwrap();
        assert!(why.contains("rank 0's buffers"), "{why}");
        let why = unusable(&[record(true, 1, 0), record(true, 1, 1)]).unwrap();
        assert!(why.contains("ranks 0 and 1"), "{why}");
        let no_kernels = Record {
            kernels: false,
            ..record(true, 2, 0)
        };
        let why = unusable(&[record(true, 1, 0), no_kernels]).unwrap();
        assert!(why.contains("rank 1's peer kernels"), "{why}");
        // Two ranks of one process on one device (threads sharing a GPU) are fine, even
        // with buffers CUDA IPC cannot export (cudarc's pool memory).
        assert_eq!(unusable(&[record(true, 1, 0), record(true, 1, 0)]), None);
        assert_eq!(unusable(&[record(false, 1, 0), record(false, 1, 0)]), None);
    }

    /// The oldest mappings go first, and never one the current job uses.
    #[test]
    fn eviction_takes_the_least_recently_used_beyond_the_cap() {
        let mut m = Mappings::default();
        for (k, job) in [(1u8, 3u64), (2, 1), (3, 5), (4, 2)] {
            m.opened.insert([k; 64], (0x1000 * k as u64, job));
        }
        m.job = 5;
        let mut v = m.victims(2);
        v.sort();
        assert_eq!(v, vec![[2; 64], [4; 64]]);
        assert!(m.victims(4).is_empty());
        // Everything used by the current job stays, whatever the cap.
        m.job = 3;
        for e in m.opened.values_mut() {
            e.1 = 3;
        }
        assert!(m.victims(0).is_empty());
    }

    #[test]
    fn records_survive_the_wire() {
        let e = Exported {
            handle: std::array::from_fn(|i| i as u8),
            offset: 0x1234,
            addr: 0x7f00_0000_1234,
            process: 0x1122_3344_5566_7788,
            device: 3,
        };
        assert_eq!(Exported::from_bytes(&e.to_bytes()), e);
        let r = Record {
            kernels: true,
            shared: true,
            process: 42,
            device: 3,
            send: e,
            recv: Exported { offset: 7, ..e },
        };
        let two = [r.to_bytes(), Record::new(1).to_bytes()].concat();
        let back = Record::parse_all(&two, 2).unwrap();
        assert_eq!(back, vec![r, Record::new(1)]);
        let e = Record::parse_all(&two[1..], 2).unwrap_err();
        assert!(e.contains("for 2 ranks"), "{e}");
    }
}
