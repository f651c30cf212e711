//! Collectives of ranks on one node through each other's GPU memory.
//!
//! The ranks swap [`Record`]s of their buffers ([`super::ipc`]), open each other's, and each
//! runs one `oxccl_peer_*` kernel on the addresses [`plan`] gives it:
//! - all-reduce: its share of the elements of every rank's input, reduced and written into
//!   every rank's output, so each byte is read once and written once;
//! - reduce: its share of every input, reduced into the root's output;
//! - broadcast: its share of the root's input, copied into every output;
//! - all-gather: its input, copied into its block of every output;
//! - reduce-scatter: its block of every input, reduced into its output.
//!
//! The bytes move over NVLink/PCIe, or within one GPU when ranks share it. What one rank
//! writes no other rank reads in the same job (in place included), so the ranks need no
//! step between reading and writing; a last exchange keeps every buffer in use until all
//! ranks are done with it. When some rank's buffer cannot be shared (pool memory, say) every
//! rank sees it in the records, and the job goes through host memory and the host
//! communicator instead.
//!
//! The job runs on an [`OrderedQueue`] (the stream waits for it like for a staged one), so
//! the call does not block and the stream's order holds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::device::Gpu;
use super::ipc::{check, export, unusable, Mappings, Record};
use super::kernels::{self, KernelType};
use super::ordered::{Enqueued, OrderedQueue};
use super::stream::{ContextGuard, RawContext, RawStream};
use crate::{Error, Result};

/// The collective a peer job runs, with its root where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Every output gets the reduction of every input.
    AllReduce,
    /// The root's output gets the reduction of every input.
    Reduce {
        /// The rank whose output gets the result.
        root: u32,
    },
    /// Every output gets the root's input.
    Broadcast {
        /// The rank whose input is copied.
        root: u32,
    },
    /// Block `r` of every output gets rank `r`'s input.
    AllGather,
    /// Rank `r`'s output gets the reduction of block `r` of every input.
    ReduceScatter,
}

impl PeerKind {
    /// Whether `rank`'s send and receive buffers take part: a broadcast reads only the
    /// root's input and a reduce writes only the root's output (NCCL lets the other ranks
    /// pass anything there).
    pub fn uses(self, rank: u32) -> (bool, bool) {
        match self {
            Self::Broadcast { root } => (rank == root, true),
            Self::Reduce { root } => (true, rank == root),
            Self::AllReduce | Self::AllGather | Self::ReduceScatter => (true, true),
        }
    }

    /// Elements of a rank's send and receive buffers in a job of `count`, NCCL's count: the
    /// block of one rank for all-gather (its input) and reduce-scatter (its output).
    pub fn lengths(self, count: u64, nranks: u32) -> (u64, u64) {
        let whole = count * u64::from(nranks);
        match self {
            Self::AllGather => (count, whole),
            Self::ReduceScatter => (whole, count),
            _ => (count, count),
        }
    }

    /// Whether the outputs are reductions (so `avg` divides them).
    pub fn reduces(self) -> bool {
        matches!(
            self,
            Self::AllReduce | Self::Reduce { .. } | Self::ReduceScatter
        )
    }

    /// The root, for the kinds with one.
    pub fn root(self) -> Option<u32> {
        match self {
            Self::Reduce { root } | Self::Broadcast { root } => Some(root),
            _ => None,
        }
    }

    /// The collective's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::AllReduce => "all-reduce",
            Self::Reduce { .. } => "reduce",
            Self::Broadcast { .. } => "broadcast",
            Self::AllGather => "all-gather",
            Self::ReduceScatter => "reduce-scatter",
        }
    }
}

/// One rank's kernel launch in a peer job: elements `first..first + count` of every output
/// get the reduction of the inputs' (a copy when there is one input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Input addresses.
    pub inputs: Vec<u64>,
    /// Output addresses.
    pub outputs: Vec<u64>,
    /// First element (of every buffer above).
    pub first: u64,
    /// Elements.
    pub count: u64,
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

/// What `rank` launches in a `kind` job of `count` elements (NCCL's count, see
/// [`PeerKind::lengths`]) of `size` bytes, with rank `j`'s buffers at `sends[j]` and
/// `recvs[j]` in this process (those a rank does not use are never read). The ranks' writes
/// never meet another rank's reads: shares of one range are disjoint, and block `r` is
/// written and read only by rank `r`'s launch.
pub fn plan(
    kind: PeerKind,
    rank: u32,
    count: u64,
    size: usize,
    sends: &[u64],
    recvs: &[u64],
) -> Plan {
    let n = sends.len() as u32;
    let block = |base: u64, r: u32| base + u64::from(r) * count * size as u64;
    let (first, len) = share(count, size, rank, n);
    let (inputs, outputs, first, count) = match kind {
        PeerKind::AllReduce => (sends.to_vec(), recvs.to_vec(), first, len),
        PeerKind::Reduce { root } => (sends.to_vec(), vec![recvs[root as usize]], first, len),
        PeerKind::Broadcast { root } => (vec![sends[root as usize]], recvs.to_vec(), first, len),
        PeerKind::AllGather => (
            vec![sends[rank as usize]],
            recvs.iter().map(|&r| block(r, rank)).collect(),
            0,
            count,
        ),
        PeerKind::ReduceScatter => (
            sends.iter().map(|&s| block(s, rank)).collect(),
            vec![recvs[rank as usize]],
            0,
            count,
        ),
    };
    Plan {
        inputs,
        outputs,
        first,
        count,
    }
}

/// What a rank keeps for peer collectives: the kernels (if they loaded), a stream of its
/// own, the peers' allocations opened so far, and a device array for the kernel's addresses.
pub struct PeerCollectives {
    ctx: Arc<CudaContext>,
    device: u32,
    stream: Arc<CudaStream>,
    kernels: std::result::Result<Gpu, String>,
    maps: Mappings,
    /// `cuMemAlloc`ed (not from a pool: a pool could tie it to the program's stream, which
    /// waits for this rank's job), room for `capacity` addresses.
    addrs: sys::CUdeviceptr,
    capacity: usize,
    jobs: PeerJobs,
    /// Every rank has once opened every other's buffers (learned together, from an
    /// exchange): later jobs skip that agreement round.
    proven: bool,
}

/// How a rank's peer jobs went so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerJobs {
    /// Through the peers' GPU memory.
    pub through_peers: u64,
    /// Through host memory, because some rank's buffer could not be reached (see the
    /// warning logged the first time).
    pub through_host: u64,
}

impl std::fmt::Debug for PeerCollectives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCollectives")
            .field("device", &self.device)
            .field("kernels", &self.kernels.as_ref().map(|g| &g.name))
            .field("opened", &self.maps.len())
            .field("jobs", &self.jobs)
            .finish()
    }
}

/// Exchanges bytes with every rank: gets this rank's, returns every rank's in rank order
/// (an all-gather over the host communicator).
pub type Exchange = Box<dyn FnMut(&[u8]) -> std::result::Result<Vec<u8>, String> + Send>;

/// Runs the job's collective over the host communicator on host copies of this rank's input
/// and output (the way every rank goes when some buffer cannot be shared). The input holds
/// [`PeerKind::lengths`]' send elements (zeros where the rank has no input), the output
/// its receive elements.
pub type HostCollective =
    Box<dyn FnMut(&[u8], &mut [u8]) -> std::result::Result<(), String> + Send>;

impl PeerCollectives {
    /// Ready for jobs of up to `nranks` ranks in `ctx` (create it before the first job: the
    /// first stream of a context may synchronise it). Kernels that do not load (no cached
    /// PTX and no NVRTC, say) are not an error here: every rank then takes the host path.
    pub fn new(ctx: Arc<CudaContext>, nranks: usize, cache: Option<PathBuf>) -> Result<Self> {
        let map = |e: cudarc::driver::DriverError| Error::Config(format!("peer collectives: {e}"));
        let device = ctx.ordinal() as u32;
        let stream = ctx.new_stream().map_err(map)?;
        let kernels = Gpu::on(ctx.clone(), cache.as_deref()).map_err(|e| e.to_string());
        if let Err(e) = &kernels {
            tracing::warn!(error = %e, "peer kernels unavailable: GPU collectives go through the host");
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
            jobs: PeerJobs::default(),
            proven: false,
        })
    }

    /// How this rank's jobs went so far.
    pub fn jobs(&self) -> PeerJobs {
        self.jobs
    }

    fn stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    fn synchronize(&self) -> Result<()> {
        // SAFETY: this value's stream.
        let r = unsafe { sys::cuStreamSynchronize(self.stream()) };
        check(r, || "waiting for the peer collective's stream".into())
    }

    /// Runs one rank's `plan` (addresses resolved in this process), then divides its outputs'
    /// share by `divide_by` (`avg`). Waits for the stream whatever happens: peers' memory
    /// must not be touched after returning.
    fn run_share(
        &mut self,
        op: &str,
        t: &KernelType,
        plan: &Plan,
        divide_by: Option<u32>,
    ) -> Result<()> {
        let launched = self.launch_share(op, t, plan, divide_by);
        let waited = self.synchronize();
        launched.and(waited)
    }

    fn launch_share(
        &mut self,
        op: &str,
        t: &KernelType,
        plan: &Plan,
        divide_by: Option<u32>,
    ) -> Result<()> {
        let gpu = self
            .kernels
            .as_ref()
            .map_err(|e| Error::Config(e.clone()))?;
        let all: Vec<u64> = plan.inputs.iter().chain(&plan.outputs).copied().collect();
        if plan.inputs.is_empty() || all.len() > self.capacity {
            return Err(Error::Config(format!(
                "{} inputs and {} outputs for an array of {}",
                plan.inputs.len(),
                plan.outputs.len(),
                self.capacity
            )));
        }
        if plan.count == 0 {
            return Ok(());
        }
        let map = |e: cudarc::driver::DriverError| Error::Config(format!("peer kernel: {e}"));
        // SAFETY: the array holds `capacity` >= all.len() u64s; a copy from pageable memory
        // has read its source when the call returns (the driver stages it), so `all` may be
        // dropped before the stream runs the copy.
        let r = unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                self.addrs,
                all.as_ptr().cast(),
                all.len() * 8,
                self.stream(),
            )
        };
        check(r, || "copying the peer addresses".into())?;
        let (nin, nout) = (plan.inputs.len() as u32, plan.outputs.len() as u32);
        let cfg: LaunchConfig = gpu.launch_config((plan.count as usize * t.size) / 16);
        let f = gpu.function(&kernels::peer_kernel_name(op, t))?;
        let mut launch = self.stream.launch_builder(&f);
        launch
            .arg(&self.addrs)
            .arg(&nin)
            .arg(&nout)
            .arg(&plan.first)
            .arg(&plan.count);
        // SAFETY: `oxccl_peer_*` takes (const u64* ptrs, u32 nin, u32 nout, u64 first,
        // u64 count); the array holds the nin + nout addresses, each a buffer of at least
        // first + count elements that its owner keeps alive until every rank passed the
        // exchange after this share.
        unsafe { launch.launch(cfg) }.map_err(map)?;
        if let Some(d) = divide_by {
            let div = gpu.function(&kernels::divide_kernel_name(t))?;
            for &out in &plan.outputs {
                let at = out + plan.first * t.size as u64;
                let mut launch = self.stream.launch_builder(&div);
                launch.arg(&at).arg(&plan.count).arg(&d);
                // SAFETY: `oxccl_divide_*` takes (T* buf, u64 n, u32 d): this rank's share of
                // one output, written by the launch before it on this stream.
                unsafe { launch.launch(cfg) }.map_err(map)?;
            }
        }
        Ok(())
    }

    /// Copies `bytes` of device memory at `src` into `dst` on this value's stream and waits.
    fn download(&self, dst: &mut [u8], src: u64) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: `src` holds `dst.len()` bytes (the job's contract); `dst` is writable and
        // outlives the synchronisation below.
        let r = unsafe {
            sys::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr().cast(), src, dst.len(), self.stream())
        };
        let copied = check(r, || "copying the input to the host".into());
        let waited = self.synchronize();
        copied.and(waited)
    }

    /// Copies `src` into device memory at `dst` on this value's stream and waits.
    fn upload(&self, dst: u64, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: `dst` holds `src.len()` bytes (the job's contract); `src` lives until the
        // synchronisation below.
        let r = unsafe {
            sys::cuMemcpyHtoDAsync_v2(dst, src.as_ptr().cast(), src.len(), self.stream())
        };
        let copied = check(r, || "copying the result to the device".into());
        let waited = self.synchronize();
        copied.and(waited)
    }
}

/// The host path: this rank's input to host memory (`send_bytes` of it, when the rank has
/// an input), `host` runs the collective over the communicator, the result back into its
/// output (when it has one). The copies run on the rank's own stream, so the program's
/// stream, which waits for the job, is not involved; the lock is not held while `host`
/// waits for the other ranks. `host` runs even when the input could not be copied (with
/// zeros), so the other ranks are not left waiting; the failure is reported after it.
fn through_host(
    exec: &Mutex<PeerCollectives>,
    send: Option<u64>,
    send_bytes: usize,
    recv: Option<u64>,
    recv_bytes: usize,
    host: &mut HostCollective,
) -> std::result::Result<(), String> {
    let lock = || exec.lock().unwrap_or_else(|e| e.into_inner());
    // 8-byte aligned, so the host collective can view them as any element type.
    let mut input = vec![0u64; send_bytes.div_ceil(8)];
    let mut output = vec![0u64; recv_bytes.div_ceil(8)];
    // SAFETY: each vector holds at least the bytes viewed, any bit pattern is a valid u8,
    // and these views are the only references to them until dropped.
    let (inb, outb) = unsafe {
        (
            std::slice::from_raw_parts_mut(input.as_mut_ptr().cast::<u8>(), send_bytes),
            std::slice::from_raw_parts_mut(output.as_mut_ptr().cast::<u8>(), recv_bytes),
        )
    };
    let copied_in = match send {
        Some(send) => lock().download(inb, send),
        None => Ok(()),
    };
    if copied_in.is_err() {
        inb.fill(0);
    }
    host(inb, outb)?;
    copied_in.map_err(|e| e.to_string())?;
    if let Some(recv) = recv {
        lock().upload(recv, outb).map_err(|e| e.to_string())?;
    }
    Ok(())
}

impl Drop for PeerCollectives {
    fn drop(&mut self) {
        let PeerJobs {
            through_peers,
            through_host,
        } = self.jobs;
        tracing::info!(
            through_peers,
            through_host,
            "peer collectives: jobs by path"
        );
        if let Ok(_current) = ContextGuard::push(RawContext::of(&self.ctx)) {
            let _ = self.synchronize();
            self.maps.close_all();
            // SAFETY: allocated in `new`, freed once; the stream is idle.
            let _ = unsafe { sys::cuMemFree_v2(self.addrs) };
        }
    }
}

/// The arguments of one peer collective.
#[derive(Debug, Clone)]
pub struct PeerOp {
    /// The rank's kernels, stream and opened peer allocations.
    pub exec: Arc<Mutex<PeerCollectives>>,
    /// The collective.
    pub kind: PeerKind,
    /// Kernel operator name (`sum`, `prod`, `max`, `min`; any for broadcast and all-gather,
    /// whose one input is copied).
    pub op: &'static str,
    /// Divide the reductions by the rank count (`avg`).
    pub average: bool,
    /// The element type's kernels.
    pub t: &'static KernelType,
    /// This rank.
    pub rank: u32,
    /// Ranks (all on this node).
    pub nranks: u32,
}

/// How a peer collective talks to the other ranks, and where its failure goes.
pub struct PeerComm {
    /// Swaps records with every rank (an all-gather).
    pub exchange: Exchange,
    /// The host path, taken by every rank alike when some buffer cannot be shared.
    pub host: HostCollective,
    /// Told of a failure of the enqueued job.
    pub on_error: Box<dyn FnOnce(&str) + Send>,
}

impl std::fmt::Debug for PeerComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerComm")
    }
}

/// One rank's job: swap records, then the peer kernel or, when some rank cannot share, the
/// host path; then the exchange that releases the buffers.
fn run_job(
    spec: &PeerOp,
    send: u64,
    recv: u64,
    count: u64,
    comm: &mut PeerComm,
) -> std::result::Result<(), String> {
    let n = spec.nranks as usize;
    let (uses_send, uses_recv) = spec.kind.uses(spec.rank);
    let mut mine = {
        let p = spec.exec.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = Record::new(p.device);
        r.kernels = p.kernels.is_ok();
        r
    };
    // Unused buffers stay zero; buffers that cannot be exported keep their address, which
    // ranks of this process can use.
    let device = mine.device;
    let exported = [(uses_send, send), (uses_recv, recv)]
        .map(|(used, addr)| used.then(|| export(addr, device).map_err(|e| (e, addr))));
    mine.shared = true;
    for (slot, e) in [&mut mine.send, &mut mine.recv].into_iter().zip(exported) {
        match e {
            None => {}
            Some(Ok(e)) => *slot = e,
            Some(Err((e, addr))) => {
                tracing::debug!(error = %e, "this rank's buffer cannot be exported");
                mine.shared = false;
                *slot = super::ipc::Exported::local(addr, device);
            }
        }
    }
    let records = Record::parse_all(&(comm.exchange)(&mine.to_bytes())?, n)?;
    if let Some(why) = unusable(&records) {
        return host_job(spec, send, recv, count, comm, &why);
    }
    // Open the peers' buffers (cached), and until every rank has once opened every other's,
    // agree that all could before anyone launches: GPUs without peer access to each other
    // fail here, and the job then goes through host memory on every rank instead.
    let resolved = {
        let mut p = spec.exec.lock().unwrap_or_else(|e| e.into_inner());
        p.maps.begin_job();
        let r = resolve_all(&mut p.maps, spec.kind, &records);
        (r, p.proven)
    };
    let (addrs, proven) = resolved;
    if !proven {
        let ok = (comm.exchange)(&[u8::from(addrs.is_ok())])?;
        if let Some(bad) = ok.iter().position(|&b| b != 1) {
            if let Err(e) = &addrs {
                tracing::warn!(error = %e, "opening the peers' GPU buffers");
            }
            let why = format!("rank {bad} could not open its peers' GPU buffers");
            return host_job(spec, send, recv, count, comm, &why);
        }
        spec.exec.lock().unwrap_or_else(|e| e.into_inner()).proven = true;
    }
    let result = addrs.and_then(|(sends, recvs)| {
        let mut p = spec.exec.lock().unwrap_or_else(|e| e.into_inner());
        let plan = plan(spec.kind, spec.rank, count, spec.t.size, &sends, &recvs);
        let divide = (spec.average && spec.kind.reduces()).then_some(spec.nranks);
        p.jobs.through_peers += 1;
        p.run_share(spec.op, spec.t, &plan, divide)
    });
    // Always exchanged again, even after a failure here: a peer may be writing into this
    // rank's output or reading its input until every rank got this far.
    let done = (comm.exchange)(&[u8::from(result.is_ok())]);
    // No kernel of this rank uses the opened buffers any more: old ones may be closed.
    spec.exec
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .maps
        .evict_beyond(MAX_OPENED);
    result.map_err(|e| e.to_string())?;
    if let Some(bad) = done?.iter().position(|&b| b != 1) {
        return Err(format!(
            "rank {bad} failed its share of the peer {}",
            spec.kind.name()
        ));
    }
    Ok(())
}

/// Peers' allocations a rank keeps open between jobs; the least recently used beyond this
/// are closed (a program that frees and allocates buffers every step would otherwise pile
/// up mappings, keeping the peers' freed memory alive).
const MAX_OPENED: usize = 256;

/// Every rank's buffers of a `kind` job in this process: (sends, receives), zero where the
/// rank has none.
fn resolve_all(
    maps: &mut Mappings,
    kind: PeerKind,
    records: &[Record],
) -> Result<(Vec<u64>, Vec<u64>)> {
    let n = records.len();
    let (mut sends, mut recvs) = (vec![0u64; n], vec![0u64; n]);
    for (j, r) in records.iter().enumerate() {
        let (s, d) = kind.uses(j as u32);
        if s {
            sends[j] = maps.resolve(&r.send)?;
        }
        if d {
            recvs[j] = maps.resolve(&r.recv)?;
        }
    }
    Ok((sends, recvs))
}

/// The job through host memory (every rank takes it alike), counted, and said once.
fn host_job(
    spec: &PeerOp,
    send: u64,
    recv: u64,
    count: u64,
    comm: &mut PeerComm,
    why: &str,
) -> std::result::Result<(), String> {
    let first = {
        let mut p = spec.exec.lock().unwrap_or_else(|e| e.into_inner());
        p.jobs.through_host += 1;
        p.jobs.through_host == 1
    };
    if first {
        // Once per communicator: the user asked for the peer path and does not get it.
        tracing::warn!(
            "OXCCL_CUDA_IPC=1: {why}; this {} and others like it go through host memory",
            spec.kind.name()
        );
    } else {
        tracing::debug!("{why}: this {} goes through host memory", spec.kind.name());
    }
    let (uses_send, uses_recv) = spec.kind.uses(spec.rank);
    let (send_elems, recv_elems) = spec.kind.lengths(count, spec.nranks);
    let size = spec.t.size;
    through_host(
        &spec.exec,
        uses_send.then_some(send),
        send_elems as usize * size,
        uses_recv.then_some(recv),
        recv_elems as usize * size,
        &mut comm.host,
    )
}

impl OrderedQueue {
    /// Enqueues `spec.kind` on `stream` through peers' GPU memory (see the module
    /// documentation), from `send` into `recv`. In place, pass `send: None` and the whole
    /// buffer as `recv`: NCCL's in-place layouts then say where the input and the output
    /// are (this rank's block of it is the all-gather's input and the reduce-scatter's
    /// output). `count` is NCCL's count ([`PeerKind::lengths`]). Every rank of the job
    /// must call it in the same order.
    pub fn enqueue_peer<T: cudarc::driver::DeviceRepr>(
        &mut self,
        stream: &CudaStream,
        send: Option<&CudaSlice<T>>,
        recv: &mut CudaSlice<T>,
        count: usize,
        spec: PeerOp,
        comm: PeerComm,
    ) -> Result<Enqueued> {
        if RawContext::of(stream.context()) != self.context() {
            return Err(Error::Config(
                "the stream belongs to another CUDA context than this queue's".into(),
            ));
        }
        let (send_len, recv_len) = spec.kind.lengths(count as u64, spec.nranks);
        let block = count as u64 * spec.rank as u64;
        // Element offsets of the input and the output in the one buffer of an in-place op.
        let (send_at, recv_at) = match spec.kind {
            PeerKind::AllGather => (block, 0),
            PeerKind::ReduceScatter => (0, block),
            _ => (0, 0),
        };
        let fits = match send {
            Some(s) => s.len() as u64 >= send_len && recv.len() as u64 >= recv_len,
            None => recv.len() as u64 >= (send_at + send_len).max(recv_at + recv_len),
        };
        if !fits {
            return Err(Error::Config(format!(
                "peer {} of {count} elements per rank over buffers of {} and {} elements",
                spec.kind.name(),
                send.map_or(recv.len(), |s| s.len()),
                recv.len()
            )));
        }
        let size = std::mem::size_of::<T>() as u64;
        let (send_ptr, send_guard) = match send {
            Some(s) => {
                let (p, g) = s.device_ptr(stream);
                (Some(p), Some(g))
            }
            None => (None, None),
        };
        let (base, recv_guard) = recv.device_ptr_mut(stream);
        let (send_ptr, recv_ptr) = match send_ptr {
            Some(p) => (p, base),
            None => (base + send_at * size, base + recv_at * size),
        };
        let raw = RawStream(stream.cu_stream() as usize);
        // SAFETY: the stream is of this queue's context (checked above); the buffers are live
        // cudarc buffers holding what the job touches (checked above) that stay valid until
        // the stream passes the job: cudarc orders their later uses and frees after the
        // events the guards record when dropped below.
        let r = unsafe { self.enqueue_peer_raw(raw, send_ptr, recv_ptr, count as u64, spec, comm) };
        drop(send_guard);
        drop(recv_guard);
        r
    }

    /// [`enqueue_peer`](Self::enqueue_peer) on raw device addresses, for the NCCL C ABI
    /// (NCCL's in-place layouts: the addresses as the program passed them).
    ///
    /// # Safety
    /// The buffers [`PeerKind::uses`] names for this rank must be device memory of
    /// [`PeerKind::lengths`] elements of `spec.t`, valid until `stream` has passed the job
    /// (NCCL's contract), and `stream` a live stream of the queue's context.
    pub unsafe fn enqueue_peer_raw(
        &mut self,
        stream: RawStream,
        send: u64,
        recv: u64,
        count: u64,
        spec: PeerOp,
        comm: PeerComm,
    ) -> Result<Enqueued> {
        if spec.rank >= spec.nranks || spec.kind.root().is_some_and(|r| r >= spec.nranks) {
            return Err(Error::Config(format!(
                "peer {}: rank {} or root {:?} out of range for {} ranks",
                spec.kind.name(),
                spec.rank,
                spec.kind.root(),
                spec.nranks
            )));
        }
        let ctx = self.context();
        let work = Box::new(move |_: &mut [u8]| {
            let mut comm = comm;
            let r = ContextGuard::push(ctx)
                .map_err(|e| e.to_string())
                .and_then(|_current| run_job(&spec, send, recv, count, &mut comm));
            if let Err(e) = &r {
                (comm.on_error)(e);
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

    /// Every element of every output is written by exactly one rank's launch, and no
    /// launch reads an element another launch writes (so the ranks need no step between).
    #[test]
    fn plans_write_each_output_element_once_and_never_where_another_rank_reads() {
        let (n, count, size) = (3u32, 37u64, 4usize);
        // Buffers far apart; in place, the input and the output share NCCL's layouts.
        let base: Vec<u64> = (0..n as u64).map(|j| 0x10_0000 * (j + 1)).collect();
        let apart: Vec<u64> = (0..n as u64).map(|j| 0x100_0000 * (j + 1)).collect();
        let blocks = |b: &[u64]| -> Vec<u64> {
            b.iter()
                .enumerate()
                .map(|(j, &a)| a + j as u64 * count * size as u64)
                .collect()
        };
        let kinds = [
            PeerKind::AllReduce,
            PeerKind::Reduce { root: 1 },
            PeerKind::Broadcast { root: 2 },
            PeerKind::AllGather,
            PeerKind::ReduceScatter,
        ];
        for kind in kinds {
            for in_place in [false, true] {
                let (send_len, recv_len) = kind.lengths(count, n);
                let (sends, recvs) = match (kind, in_place) {
                    (_, false) => (base.clone(), apart.clone()),
                    (PeerKind::AllGather, true) => (blocks(&base), base.clone()),
                    (PeerKind::ReduceScatter, true) => (base.clone(), blocks(&base)),
                    (_, true) => (base.clone(), base.clone()),
                };
                let mut written = std::collections::HashMap::new();
                let mut read = std::collections::HashMap::new();
                for r in 0..n {
                    let p = plan(kind, r, count, size, &sends, &recvs);
                    for e in p.first..p.first + p.count {
                        for &o in &p.outputs {
                            let at = o + e * size as u64;
                            assert!(
                                written.insert(at, r).is_none(),
                                "{kind:?} in place {in_place}: {at:#x} written twice"
                            );
                        }
                        for &i in &p.inputs {
                            read.entry(i + e * size as u64)
                                .or_insert_with(Vec::new)
                                .push(r);
                        }
                    }
                }
                for (at, w) in &written {
                    if let Some(readers) = read.get(at) {
                        assert!(
                            readers.iter().all(|r| r == w),
                            "{kind:?} in place {in_place}: rank {w} writes {at:#x} that ranks \
                             {readers:?} read"
                        );
                    }
                }
                // Every output element the collective defines is written.
                let outputs: Vec<u32> = match kind {
                    PeerKind::Reduce { root } => vec![root],
                    _ => (0..n).collect(),
                };
                assert_eq!(
                    written.len() as u64,
                    outputs.len() as u64 * recv_len,
                    "{kind:?} in place {in_place}"
                );
                assert!(send_len > 0);
            }
        }
    }
}
