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

fn check(r: sys::CUresult, what: impl FnOnce() -> String) -> Result<()> {
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

/// Peers' allocations opened in this process, by handle.
#[derive(Debug, Default)]
struct Mappings {
    opened: HashMap<[u8; 64], sys::CUdeviceptr>,
}

impl Mappings {
    /// Where `e` is in this process.
    fn resolve(&mut self, e: &Exported) -> Result<u64> {
        if e.process == process_token() {
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
        check(r, || "opening a peer process's GPU buffer".into())?;
        self.opened.insert(e.handle, base);
        Ok(base + e.offset)
    }
}

impl Mappings {
    /// Closes every opened allocation (the owning context must be current).
    fn close_all(&mut self) {
        for (_, base) in self.opened.drain() {
            // SAFETY: an address cuIpcOpenMemHandle returned, closed once.
            let _ = unsafe { sys::cuIpcCloseMemHandle(base) };
        }
    }
}

/// What a rank keeps for peer all-reduces: the kernels (if they loaded), a stream of its
/// own, the peers' allocations opened so far, and a device array for the kernel's addresses.
pub struct PeerAllReduce {
    ctx: Arc<CudaContext>,
    device: u32,
    stream: Arc<CudaStream>,
    kernels: std::result::Result<Gpu, String>,
    maps: Mappings,
    /// `cuMemAlloc`ed (not from a pool: a pool could tie it to the program's stream, which
    /// waits for this rank's job), room for `capacity` addresses.
    addrs: sys::CUdeviceptr,
    capacity: usize,
}

impl std::fmt::Debug for PeerAllReduce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAllReduce")
            .field("device", &self.device)
            .field("kernels", &self.kernels.as_ref().map(|g| &g.name))
            .field("opened", &self.maps.opened.len())
            .finish()
    }
}

/// Exchanges bytes with every rank: gets this rank's, returns every rank's in rank order
/// (an all-gather over the host communicator).
pub type Exchange = Box<dyn FnMut(&[u8]) -> std::result::Result<Vec<u8>, String> + Send>;

/// All-reduces a host buffer of the job's elements in place over the host communicator
/// (the way every rank goes when some buffer cannot be shared).
pub type HostAllReduce = Box<dyn FnMut(&mut [u8]) -> std::result::Result<(), String> + Send>;

impl PeerAllReduce {
    /// Ready for jobs of up to `nranks` ranks in `ctx` (create it before the first job: the
    /// first stream of a context may synchronise it). Kernels that do not load (no cached
    /// PTX and no NVRTC, say) are not an error here: every rank then takes the host path.
    pub fn new(ctx: Arc<CudaContext>, nranks: usize, cache: Option<PathBuf>) -> Result<Self> {
        let map = |e: cudarc::driver::DriverError| Error::Config(format!("peer all-reduce: {e}"));
        let device = ctx.ordinal() as u32;
        let stream = ctx.new_stream().map_err(map)?;
        let kernels = Gpu::on(ctx.clone(), cache.as_deref()).map_err(|e| e.to_string());
        if let Err(e) = &kernels {
            tracing::warn!(error = %e, "peer all-reduce kernels unavailable: all-reduces go through the host");
        }
        let _current = ContextGuard::push(RawContext::of(&ctx))?;
        let capacity = 2 * nranks.max(1);
        let mut addrs: sys::CUdeviceptr = 0;
        // SAFETY: a context is current; writes one address of `capacity` u64s.
        let r = unsafe { sys::cuMemAlloc_v2(&mut addrs, capacity * 8) };
        check(r, || "allocating the peer address array".into())?;
        Ok(Self {
            ctx,
            device,
            stream,
            kernels,
            maps: Mappings::default(),
            addrs,
            capacity,
        })
    }

    fn stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    fn synchronize(&self) -> Result<()> {
        // SAFETY: this value's stream.
        let r = unsafe { sys::cuStreamSynchronize(self.stream()) };
        check(r, || "waiting for the peer all-reduce's stream".into())
    }

    /// One rank's share of an all-reduce whose every input and output is in `all`
    /// (`[send_0, …, send_{n-1}, recv_0, …, recv_{n-1}]`, resolved in this process). Waits
    /// for the stream whatever happens: peers' memory must not be touched after returning.
    fn run_share(
        &mut self,
        op: &str,
        t: &KernelType,
        all: &[u64],
        first: u64,
        count: u64,
        divide_by: Option<u32>,
    ) -> Result<()> {
        let launched = self.launch_share(op, t, all, first, count, divide_by);
        let waited = self.synchronize();
        launched.and(waited)
    }

    fn launch_share(
        &mut self,
        op: &str,
        t: &KernelType,
        all: &[u64],
        first: u64,
        count: u64,
        divide_by: Option<u32>,
    ) -> Result<()> {
        let gpu = self
            .kernels
            .as_ref()
            .map_err(|e| Error::Config(e.clone()))?;
        if all.len() > self.capacity {
            return Err(Error::Config(format!(
                "{} addresses for an array of {}",
                all.len(),
                self.capacity
            )));
        }
        if count == 0 {
            return Ok(());
        }
        let map = |e: cudarc::driver::DriverError| Error::Config(format!("peer all-reduce: {e}"));
        // SAFETY: the array holds `capacity` >= all.len() u64s; the copy from pageable memory
        // returns once the bytes are staged, and `all` outlives it anyway (synchronised by
        // the caller before `all` is dropped).
        let r = unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                self.addrs,
                all.as_ptr().cast(),
                all.len() * 8,
                self.stream(),
            )
        };
        check(r, || "copying the peer addresses".into())?;
        let n = (all.len() / 2) as u32;
        let cfg: LaunchConfig = gpu.launch_config((count as usize * t.size) / 16);
        let f = gpu.function(&kernels::all_reduce_kernel_name(op, t))?;
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&self.addrs).arg(&n).arg(&first).arg(&count);
        // SAFETY: `oxccl_allreduce_*` takes (const u64* ptrs, u32 n, u64 first, u64 count);
        // the array holds the 2n addresses, each a buffer of at least first + count elements
        // that its owner keeps alive until every rank passed the exchange after this share.
        unsafe { launch.launch(cfg) }.map_err(map)?;
        if let Some(d) = divide_by {
            let div = gpu.function(&kernels::divide_kernel_name(t))?;
            for &out in &all[n as usize..] {
                let at = out + first * t.size as u64;
                let mut launch = self.stream.launch_builder(&div);
                launch.arg(&at).arg(&count).arg(&d);
                // SAFETY: `oxccl_divide_*` takes (T* buf, u64 n, u32 d): this rank's share of
                // one output, written by the launch before it on this stream.
                unsafe { launch.launch(cfg) }.map_err(map)?;
            }
        }
        Ok(())
    }

    /// The host path: this rank's input to host memory, `host` all-reduces it over the
    /// communicator, the result back into its output (on this value's stream, so the
    /// program's stream, which waits for the job, is not involved).
    fn through_host(
        &mut self,
        send: u64,
        recv: u64,
        bytes: usize,
        host: &mut HostAllReduce,
    ) -> std::result::Result<(), String> {
        // 8-byte aligned, so the host all-reduce can view it as any element type.
        let mut words = vec![0u64; bytes.div_ceil(8)];
        // SAFETY: `words` holds at least `bytes` bytes, any bit pattern is a valid u8, and
        // this is the only reference to it until `buf` is dropped.
        let buf = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), bytes) };
        if bytes > 0 {
            // SAFETY: `send` holds `bytes` (enqueue's contract); `buf` is writable.
            let r = unsafe {
                sys::cuMemcpyDtoHAsync_v2(buf.as_mut_ptr().cast(), send, bytes, self.stream())
            };
            check(r, || "copying the input to the host".into()).map_err(|e| e.to_string())?;
            self.synchronize().map_err(|e| e.to_string())?;
        }
        host(buf)?;
        if bytes > 0 {
            // SAFETY: `recv` holds `bytes`; `buf` lives until the synchronisation below.
            let r = unsafe {
                sys::cuMemcpyHtoDAsync_v2(recv, buf.as_ptr().cast(), bytes, self.stream())
            };
            let copied = check(r, || "copying the result to the device".into());
            let waited = self.synchronize();
            copied.and(waited).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl Drop for PeerAllReduce {
    fn drop(&mut self) {
        if let Ok(_current) = ContextGuard::push(RawContext::of(&self.ctx)) {
            let _ = self.synchronize();
            self.maps.close_all();
            // SAFETY: allocated in `new`, freed once; the stream is idle.
            let _ = unsafe { sys::cuMemFree_v2(self.addrs) };
        }
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

/// How a peer all-reduce talks to the other ranks, and where its failure goes.
pub struct PeerComm {
    /// Swaps records with every rank (an all-gather).
    pub exchange: Exchange,
    /// The host path, taken by every rank alike when some buffer cannot be shared.
    pub host: HostAllReduce,
    /// Told of a failure of the enqueued job.
    pub on_error: Box<dyn FnOnce(&str) + Send>,
}

impl std::fmt::Debug for PeerComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerComm")
    }
}

/// Bytes of one rank's record: usable flag, then the send and receive buffers' exports.
const RECORD: usize = 1 + 2 * EXPORTED_BYTES;

/// Why the records do not allow the peer path (the same answer on every rank: they all see
/// the same records), or `None`.
fn unusable(all: &[u8]) -> Option<String> {
    let records: Vec<&[u8]> = all.chunks(RECORD).collect();
    if let Some(bad) = records.iter().position(|r| r[0] != 1) {
        return Some(format!(
            "rank {bad}'s buffers cannot be shared through CUDA IPC (or its kernels did not load)"
        ));
    }
    let send = |r: &[u8]| Exported::from_bytes(&r[1..1 + EXPORTED_BYTES]);
    for (i, a) in records.iter().enumerate() {
        for (j, b) in records.iter().enumerate().skip(i + 1) {
            let (a, b) = (send(a), send(b));
            if a.process == b.process && a.device != b.device {
                return Some(format!(
                    "ranks {i} and {j} share a process but not a device (peer access between \
                     contexts of one process is not set up)"
                ));
            }
        }
    }
    None
}

impl OrderedQueue {
    /// Enqueues an all-reduce of `send` into `recv` (the same slice for in place: pass
    /// `send: None`) on `stream`, through peers' memory (see the module documentation).
    /// Every rank of the job must call it in the same order.
    pub fn enqueue_peer_all_reduce<T: cudarc::driver::DeviceRepr>(
        &mut self,
        stream: &CudaStream,
        send: Option<&CudaSlice<T>>,
        recv: &mut CudaSlice<T>,
        spec: PeerOp,
        comm: PeerComm,
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
        let r =
            unsafe { self.enqueue_peer_all_reduce_raw(raw, send_ptr, recv_ptr, count, spec, comm) };
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
    pub unsafe fn enqueue_peer_all_reduce_raw(
        &mut self,
        stream: RawStream,
        send: u64,
        recv: u64,
        count: u64,
        spec: PeerOp,
        comm: PeerComm,
    ) -> Result<Enqueued> {
        let ctx = self.context();
        let PeerComm {
            mut exchange,
            mut host,
            on_error,
        } = comm;
        let mut job = move || -> std::result::Result<(), String> {
            let _current = ContextGuard::push(ctx).map_err(|e| e.to_string())?;
            let (kernels_ok, device) = {
                let p = spec.exec.lock().unwrap_or_else(|e| e.into_inner());
                (p.kernels.is_ok(), p.device)
            };
            let mine = [export(send, device), export(recv, device)];
            let mut record = vec![0u8; RECORD];
            if let (Ok(s), Ok(r)) = (&mine[0], &mine[1]) {
                record[0] = u8::from(kernels_ok);
                record[1..1 + EXPORTED_BYTES].copy_from_slice(&s.to_bytes());
                record[1 + EXPORTED_BYTES..].copy_from_slice(&r.to_bytes());
            }
            let all = exchange(&record)?;
            let n = spec.nranks as usize;
            if all.len() != n * RECORD {
                return Err(format!(
                    "peer all-reduce: {} bytes of records for {n} ranks",
                    all.len()
                ));
            }
            let bytes = count as usize * spec.t.size;
            if let Some(why) = unusable(&all) {
                if let Some(e) = mine.iter().find_map(|e| e.as_ref().err()) {
                    tracing::debug!(error = %e, "this rank's buffer cannot be shared");
                }
                tracing::debug!("{why}: this all-reduce goes through host memory");
                let mut p = spec.exec.lock().unwrap_or_else(|e| e.into_inner());
                return p.through_host(send, recv, bytes, &mut host);
            }
            let result = (|| -> Result<()> {
                let mut p = spec.exec.lock().unwrap_or_else(|e| e.into_inner());
                let mut addrs = vec![0u64; 2 * n];
                for (j, r) in all.chunks(RECORD).enumerate() {
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

    fn record(usable: bool, process: u64, device: u32) -> Vec<u8> {
        let e = Exported {
            handle: [7; 64],
            offset: 0,
            addr: 0x1000,
            process,
            device,
        };
        let mut r = vec![u8::from(usable)];
        r.extend_from_slice(&e.to_bytes());
        r.extend_from_slice(&e.to_bytes());
        r
    }

    /// Every rank sees the same records, so every rank takes the same path: the peer path
    /// only when all can share and no process holds ranks on two devices.
    #[test]
    fn the_path_follows_from_the_records_alone() {
        let all = |rs: &[Vec<u8>]| rs.concat();
        assert_eq!(
            unusable(&all(&[
                record(true, 1, 0),
                record(true, 2, 0),
                record(true, 3, 1)
            ])),
            None
        );
        let why = unusable(&all(&[record(true, 1, 0), record(false, 2, 0)])).unwrap();
        assert!(why.contains("rank 1"), "{why}");
        let why = unusable(&all(&[record(true, 1, 0), record(true, 1, 1)])).unwrap();
        assert!(why.contains("ranks 0 and 1"), "{why}");
        // Two ranks of one process on one device (threads sharing a GPU) are fine.
        assert_eq!(
            unusable(&all(&[record(true, 1, 0), record(true, 1, 0)])),
            None
        );
    }

    #[test]
    fn exported_records_survive_the_wire() {
        let e = Exported {
            handle: std::array::from_fn(|i| i as u8),
            offset: 0x1234,
            addr: 0x7f00_0000_1234,
            process: 0x1122_3344_5566_7788,
            device: 3,
        };
        assert_eq!(Exported::from_bytes(&e.to_bytes()), e);
    }
}
