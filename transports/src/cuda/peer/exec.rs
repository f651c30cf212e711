//! What a rank keeps for its peer jobs, and the work on its own stream: the kernel launch,
//! the host path's copies.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext, CudaStream};
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{HostCollective, PeerJobs, Plan};
use crate::cuda::device::Gpu;
use crate::cuda::ipc::{check, Mappings};
use crate::cuda::kernels::{self, KernelType};
use crate::cuda::stream::{ContextGuard, RawContext};
use crate::{Error, Result};

/// What a rank keeps for peer collectives: the kernels (if they loaded), a stream of its
/// own, the peers' allocations opened so far, and a device array for the kernel's addresses.
pub struct PeerCollectives {
    ctx: Arc<CudaContext>,
    pub(super) device: u32,
    stream: Arc<CudaStream>,
    pub(super) kernels: std::result::Result<Gpu, String>,
    pub(super) maps: Mappings,
    /// `cuMemAlloc`ed (not from a pool: a pool could tie it to the program's stream, which
    /// waits for this rank's job), room for `capacity` addresses.
    addrs: sys::CUdeviceptr,
    capacity: usize,
    pub(super) jobs: PeerJobs,
    /// Every rank has once opened every other's buffers (learned together, from an
    /// exchange): later jobs skip that agreement round.
    pub(super) proven: bool,
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
    pub(super) fn run_share(
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
pub(super) fn through_host(
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
