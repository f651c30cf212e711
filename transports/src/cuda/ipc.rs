//! The all-reduce of ranks on one node through each other's GPU memory (CUDA IPC).
//!
//! Each rank exports the allocations holding its send and receive buffers
//! (`cuIpcGetMemHandle` on the allocation's base, plus the offset), the ranks swap these
//! records through the host communicator, and each opens the others' (`cuIpcOpenMemHandle`,
//! cached per allocation; ranks in one process use the addresses as they are). Every rank
//! then runs `oxccl_allreduce_*` on its share of the elements: it reads that share of every
//! rank's input and writes the result into every rank's output, so each byte is read once
//! and written once, over NVLink/PCIe or within one GPU when ranks share it. A last exchange
//! keeps every buffer in use until all ranks are done with it.
//!
//! The job runs on an [`OrderedQueue`] (the stream waits for it like for a staged one), so
//! the call does not block and the stream's order holds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::device::Gpu;
use super::kernels::{self, KernelType};
use super::ordered::{Enqueued, OrderedQueue};
use super::stream::{ContextGuard, RawContext, RawStream};
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
    /// The owning process.
    pub pid: u32,
}

/// Bytes of one [`Exported`] on the wire.
pub const EXPORTED_BYTES: usize = 64 + 8 + 8 + 4;

impl Exported {
    fn to_bytes(self) -> [u8; EXPORTED_BYTES] {
        let mut b = [0u8; EXPORTED_BYTES];
        b[..64].copy_from_slice(&self.handle);
        b[64..72].copy_from_slice(&self.offset.to_le_bytes());
        b[72..80].copy_from_slice(&self.addr.to_le_bytes());
        b[80..84].copy_from_slice(&self.pid.to_le_bytes());
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
            pid: u32::from_le_bytes(b[80..84].try_into().expect("4 bytes")),
        }
    }
}

fn check(r: sys::CUresult, what: impl FnOnce() -> String) -> Result<()> {
    r.result()
        .map_err(|e| Error::Config(format!("{}: CUDA driver error {e}", what())))
}

/// The record peers need to reach the device buffer at `addr` (a query: nothing is
/// dereferenced). Fails for memory CUDA IPC cannot share (cuMem virtual memory, host memory).
pub fn export(addr: u64) -> Result<Exported> {
    let (mut base, mut size): (sys::CUdeviceptr, usize) = (0, 0);
    // SAFETY: a query on an address; writes two values, or fails for an unknown address.
    let r = unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, addr) };
    check(r, || format!("finding the allocation of {addr:#x}"))?;
    let mut h = sys::CUipcMemHandle_st { reserved: [0; 64] };
    // SAFETY: `base` is the start of a live allocation (just queried); writes one handle.
    let r = unsafe { sys::cuIpcGetMemHandle(&mut h, base) };
    check(r, || {
        format!(
            "exporting the allocation at {base:#x} through CUDA IPC (memory from cuMemCreate, \
             e.g. PyTorch's expandable segments, cannot be)"
        )
    })?;
    Ok(Exported {
        handle: h.reserved.map(|c| c as u8),
        offset: addr - base,
        addr,
        pid: std::process::id(),
    })
}

/// Peers' allocations opened in this process, by handle.
#[derive(Debug, Default)]
struct Mappings {
    opened: HashMap<[u8; 64], sys::CUdeviceptr>,
}

impl Mappings {
    /// Where `e` is in this process.
    fn resolve(&mut self, e: &Exported) -> Result<u64> {
        if e.pid == std::process::id() {
            return Ok(e.addr);
        }
        if let Some(base) = self.opened.get(&e.handle) {
            return Ok(base + e.offset);
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
        check(r, || format!("opening process {}'s GPU buffer", e.pid))?;
        self.opened.insert(e.handle, base);
        Ok(base + e.offset)
    }
}

impl Drop for Mappings {
    fn drop(&mut self) {
        for base in self.opened.values() {
            // SAFETY: an address cuIpcOpenMemHandle returned, closed once.
            let _ = unsafe { sys::cuIpcCloseMemHandle(*base) };
        }
    }
}

/// What a rank keeps for peer all-reduces: the kernels, the stream they run on, the peers'
/// allocations opened so far, and a device array for the kernel's addresses.
pub struct PeerAllReduce {
    gpu: Gpu,
    maps: Mappings,
    addrs: Option<CudaSlice<u64>>,
}

impl std::fmt::Debug for PeerAllReduce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAllReduce")
            .field("gpu", &self.gpu.name)
            .field("opened", &self.maps.opened.len())
            .finish()
    }
}

/// Exchanges bytes with every rank: gets this rank's, returns every rank's in rank order
/// (an all-gather over the host communicator).
pub type Exchange = Box<dyn FnMut(&[u8]) -> std::result::Result<Vec<u8>, String> + Send>;

impl PeerAllReduce {
    /// The kernels loaded in `ctx` (PTX from `cache` or NVRTC).
    pub fn new(ctx: Arc<CudaContext>, cache: Option<PathBuf>) -> Result<Self> {
        Ok(Self {
            gpu: Gpu::on(ctx, cache.as_deref())?,
            maps: Mappings::default(),
            addrs: None,
        })
    }

    /// One rank's share of an all-reduce whose every input and output is in `all`
    /// (`[send_0, …, send_{n-1}, recv_0, …, recv_{n-1}]`, resolved in this process).
    fn run_share(
        &mut self,
        op: &str,
        t: &KernelType,
        all: &[u64],
        first: u64,
        count: u64,
        divide_by: Option<u32>,
    ) -> Result<()> {
        let n = all.len() / 2;
        let stream = self.gpu.stream.clone();
        let map = |e: cudarc::driver::DriverError| Error::Config(format!("peer all-reduce: {e}"));
        if self.addrs.as_ref().is_none_or(|a| a.len() < all.len()) {
            self.addrs = Some(stream.alloc_zeros::<u64>(all.len().max(16)).map_err(map)?);
        }
        let addrs = self.addrs.as_mut().expect("allocated above");
        stream.memcpy_htod(all, addrs).map_err(map)?;
        if count > 0 {
            let name = kernels::all_reduce_kernel_name(op, t);
            let f = self.gpu.function(&name)?;
            let cfg: LaunchConfig = self.gpu.launch_config((count as usize * t.size) / 16);
            let nranks = n as u32;
            let mut launch = stream.launch_builder(&f);
            launch.arg(&*addrs).arg(&nranks).arg(&first).arg(&count);
            // SAFETY: `oxccl_allreduce_*` takes (const u64* ptrs, u32 n, u64 first, u64 count);
            // `addrs` holds the 2n addresses, each a buffer of at least first + count
            // elements that its owner keeps alive until every rank passed the exchange that
            // follows this share.
            unsafe { launch.launch(cfg) }.map_err(map)?;
            if let Some(d) = divide_by {
                let div = self.gpu.function(&kernels::divide_kernel_name(t))?;
                for &out in &all[n..] {
                    let at = out + first * t.size as u64;
                    let mut launch = stream.launch_builder(&div);
                    launch.arg(&at).arg(&count).arg(&d);
                    // SAFETY: `oxccl_divide_*` takes (T* buf, u64 n, u32 d): this rank's share
                    // of one output, written by the launch before it on this stream.
                    unsafe { launch.launch(cfg) }.map_err(map)?;
                }
            }
        }
        stream.synchronize().map_err(map)
    }
}

/// This rank's share of `count` elements of `size` bytes among `n` ranks: whole 16-byte
/// vectors where possible, so every share starts aligned when the buffers do.
pub fn share(count: u64, size: usize, rank: u32, n: u32) -> (u64, u64) {
    let per = (16 / size.max(1)).max(1) as u64;
    let vectors = count / per;
    let (lo, hi) = (
        vectors * rank as u64 / n as u64,
        vectors * (rank as u64 + 1) / n as u64,
    );
    let first = lo * per;
    let end = if rank + 1 == n { count } else { hi * per };
    (first, end - first)
}

/// The arguments of one peer all-reduce.
#[derive(Debug, Clone)]
pub struct PeerOp {
    /// The rank's kernels, stream and opened peer allocations.
    pub exec: Arc<Mutex<PeerAllReduce>>,
    /// Kernel operator name (`sum`, `prod`, `max`, `min`).
    pub op: &'static str,
    /// Divide the sums by the rank count (`avg`).
    pub average: bool,
    /// The element type's kernels.
    pub t: &'static KernelType,
    /// This rank.
    pub rank: u32,
    /// Ranks (all on this node).
    pub nranks: u32,
}

impl OrderedQueue {
    /// Enqueues an all-reduce of `send` into `recv` (the same slice for in place: pass
    /// `send: None`) on `stream`, through peers' memory: `exchange` swaps this rank's
    /// records with every rank's (twice: before, and after to keep the buffers in use until
    /// all are done). Every rank of the job must call it in the same order.
    pub fn enqueue_peer_all_reduce<T: cudarc::driver::DeviceRepr>(
        &mut self,
        stream: &CudaStream,
        send: Option<&CudaSlice<T>>,
        recv: &mut CudaSlice<T>,
        spec: PeerOp,
        exchange: Exchange,
        on_error: impl FnOnce(&str) + Send + 'static,
    ) -> Result<Enqueued> {
        if RawContext::of(stream.context()) != self.context() {
            return Err(Error::Config(
                "the stream belongs to another CUDA context than this queue's".into(),
            ));
        }
        let count = recv.len() as u64;
        if send.is_some_and(|s| s.len() != recv.len()) {
            return Err(Error::Config("all-reduce of buffers of two lengths".into()));
        }
        let (send_ptr, send_guard) = match send {
            Some(s) => {
                let (p, g) = s.device_ptr(stream);
                (Some(p), Some(g))
            }
            None => (None, None),
        };
        let (recv_ptr, recv_guard) = recv.device_ptr_mut(stream);
        let send_ptr = send_ptr.unwrap_or(recv_ptr);
        let raw = RawStream(stream.cu_stream() as usize);
        // SAFETY: the stream is of this queue's context (checked above); the buffers are live
        // cudarc buffers of `count` elements that stay valid until the stream passes the job:
        // cudarc orders their later uses and frees after the events the guards record when
        // dropped below.
        let r = unsafe {
            self.enqueue_peer_all_reduce_raw(
                raw, send_ptr, recv_ptr, count, spec, exchange, on_error,
            )
        };
        drop(send_guard);
        drop(recv_guard);
        r
    }

    /// [`enqueue_peer_all_reduce`](Self::enqueue_peer_all_reduce) on raw device addresses
    /// (`send == recv` for in place), for the NCCL C ABI.
    ///
    /// # Safety
    /// `send` and `recv` must be device buffers of `count` elements of `spec.t`, valid until
    /// `stream` has passed the job (NCCL's contract), and `stream` a live stream of the
    /// queue's context.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn enqueue_peer_all_reduce_raw(
        &mut self,
        stream: RawStream,
        send: u64,
        recv: u64,
        count: u64,
        spec: PeerOp,
        mut exchange: Exchange,
        on_error: impl FnOnce(&str) + Send + 'static,
    ) -> Result<Enqueued> {
        let ctx = self.context();
        let mut job = move || -> std::result::Result<(), String> {
            let _current = ContextGuard::push(ctx).map_err(|e| e.to_string())?;
            let mine = [export(send), export(recv)];
            let mut record = vec![0u8; 1 + 2 * EXPORTED_BYTES];
            let failure = mine
                .iter()
                .find_map(|e| e.as_ref().err().map(|e| e.to_string()));
            if let (Ok(s), Ok(r)) = (&mine[0], &mine[1]) {
                record[0] = 1;
                record[1..1 + EXPORTED_BYTES].copy_from_slice(&s.to_bytes());
                record[1 + EXPORTED_BYTES..].copy_from_slice(&r.to_bytes());
            }
            let all = exchange(&record)?;
            let n = spec.nranks as usize;
            if all.len() != n * record.len() {
                return Err(format!(
                    "peer all-reduce: {} bytes of records for {n} ranks",
                    all.len()
                ));
            }
            if let Some(bad) = all.chunks(record.len()).position(|r| r[0] != 1) {
                // Every rank saw the same records, so every rank fails here alike.
                return Err(match (bad as u32 == spec.rank, failure) {
                    (true, Some(f)) => f,
                    _ => format!("rank {bad}'s buffers cannot be shared through CUDA IPC"),
                });
            }
            let result = (|| -> Result<()> {
                let mut p = spec.exec.lock().unwrap_or_else(|e| e.into_inner());
                let mut addrs = vec![0u64; 2 * n];
                for (j, r) in all.chunks(record.len()).enumerate() {
                    let s = Exported::from_bytes(&r[1..1 + EXPORTED_BYTES]);
                    let d = Exported::from_bytes(&r[1 + EXPORTED_BYTES..]);
                    addrs[j] = p.maps.resolve(&s)?;
                    addrs[n + j] = p.maps.resolve(&d)?;
                }
                let (first, len) = share(count, spec.t.size, spec.rank, spec.nranks);
                let divide = spec.average.then_some(spec.nranks);
                p.run_share(spec.op, spec.t, &addrs, first, len, divide)
            })();
            // Always exchanged again, even after a failure here: a peer may be writing into
            // this rank's output or reading its input until every rank got this far.
            let done = exchange(&[u8::from(result.is_ok())]);
            result.map_err(|e| e.to_string())?;
            let done = done?;
            if let Some(bad) = done.iter().position(|&b| b != 1) {
                return Err(format!(
                    "rank {bad} failed its share of the peer all-reduce"
                ));
            }
            Ok(())
        };
        let work = Box::new(move |_: &mut [u8]| {
            let r = job();
            if let Err(e) = &r {
                on_error(e);
            }
            r
        });
        // SAFETY: no copies; the buffers and the stream as this function's contract says.
        unsafe { self.enqueue(1, &[], &[], &[stream], work) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_buffer_in_aligned_pieces() {
        for (count, size, n) in [(1031u64, 4usize, 3u32), (7, 2, 4), (0, 8, 2), (4096, 1, 8)] {
            let mut next = 0;
            for r in 0..n {
                let (first, len) = share(count, size, r, n);
                assert_eq!(first, next, "{count} x {size} B over {n}: rank {r}");
                assert_eq!(first * size as u64 % 16, 0);
                next = first + len;
            }
            assert_eq!(next, count);
        }
    }

    #[test]
    fn exported_records_survive_the_wire() {
        let e = Exported {
            handle: std::array::from_fn(|i| i as u8),
            offset: 0x1234,
            addr: 0x7f00_0000_1234,
            pid: 4242,
        };
        assert_eq!(Exported::from_bytes(&e.to_bytes()), e);
    }
}
