//! The CUDA driver calls behind stream-ordered operations on the caller's buffers and streams:
//! contexts, events, pinned host memory, a host-written counter a stream can wait on, and
//! asynchronous copies between any two addresses (device or host: unified addressing tells
//! them apart).
//!
//! Streams and buffers here are raw driver handles given by the program (the NCCL C ABI's
//! `cudaStream_t` and `void*`), so they travel as plain addresses ([`RawStream`],
//! `usize`), and every call that dereferences one is `unsafe` with the program's contract as
//! its precondition. Nothing here runs before [`init`] confirmed that the driver loads, as
//! cudarc panics on a missing library.

use std::ffi::c_void;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::OnceLock;

use cudarc::driver::sys;

use crate::{Error, Result};

/// A `CUstream` as the program gave it (0: the legacy default stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawStream(pub usize);

impl RawStream {
    fn handle(self) -> sys::CUstream {
        self.0 as sys::CUstream
    }
}

/// A `CUcontext` (the one a stream or a buffer belongs to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawContext(usize);

// SAFETY: a context handle is an opaque token the driver accepts from any thread.
unsafe impl Send for RawContext {}

impl RawContext {
    /// The context behind a cudarc context.
    pub fn of(ctx: &cudarc::driver::CudaContext) -> Self {
        Self(ctx.cu_ctx() as usize)
    }

    /// A `CUcontext` the driver returned.
    pub(super) fn from_raw(ctx: usize) -> Self {
        Self(ctx)
    }
}

fn check(r: sys::CUresult, what: impl FnOnce() -> String) -> Result<()> {
    r.result()
        .map_err(|e| Error::Config(format!("{}: CUDA driver error {e}", what())))
}

/// Loads the driver and runs `cuInit` once; `Ok` only when CUDA calls can be made.
pub fn init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let message = |e: Error| match e {
        Error::Config(m) => m,
        other => other.to_string(),
    };
    INIT.get_or_init(|| {
        super::device::driver_available().map_err(message)?;
        // SAFETY: the library loads (checked above); cuInit has no other precondition.
        check(unsafe { sys::cuInit(0) }, || "cuInit".into()).map_err(message)
    })
    .clone()
    .map_err(Error::Config)
}

/// The context of `stream`; for the legacy default stream (0), the calling thread's current
/// context, and failing that the one `buffer` was allocated in.
pub fn stream_context(stream: RawStream, buffer: usize) -> Result<RawContext> {
    init()?;
    let mut ctx: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: `stream` is a stream handle from the program or 0 (NCCL's contract); the call
    // writes one handle.
    let r = unsafe { sys::cuStreamGetCtx(stream.handle(), &mut ctx) };
    if r == sys::CUresult::CUDA_SUCCESS && !ctx.is_null() {
        return Ok(RawContext(ctx as usize));
    }
    // SAFETY: the attribute call writes one context handle; an unknown pointer is an error.
    let r = unsafe {
        sys::cuPointerGetAttribute(
            (&mut ctx as *mut sys::CUcontext).cast(),
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_CONTEXT,
            buffer as sys::CUdeviceptr,
        )
    };
    check(r, || {
        format!("finding the CUDA context of stream {:#x}", stream.0)
    })?;
    if ctx.is_null() {
        return Err(Error::Config(format!(
            "no CUDA context for stream {:#x} (is a device current on this thread?)",
            stream.0
        )));
    }
    Ok(RawContext(ctx as usize))
}

/// The device ordinal of `ctx`.
pub fn context_device(ctx: RawContext) -> Result<usize> {
    let _current = ContextGuard::push(ctx)?;
    let mut dev: sys::CUdevice = 0;
    // SAFETY: a context is current (above); writes one device handle.
    let r = unsafe { sys::cuCtxGetDevice(&mut dev) };
    check(r, || "finding the context's device".into())?;
    Ok(dev as usize)
}

/// Makes a context current on this thread until dropped, restoring the previous one.
/// Not `Send`: the push and the pop must happen on one thread.
#[derive(Debug)]
pub struct ContextGuard(std::marker::PhantomData<*const ()>);

impl ContextGuard {
    /// Pushes `ctx` onto this thread's context stack.
    pub fn push(ctx: RawContext) -> Result<Self> {
        // SAFETY: `ctx` came from the driver (stream_context) and is alive while the
        // program's stream or buffer is.
        let r = unsafe { sys::cuCtxPushCurrent_v2(ctx.0 as sys::CUcontext) };
        check(r, || "making the stream's CUDA context current".into())?;
        Ok(Self(std::marker::PhantomData))
    }
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        let mut old: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: pops what `push` pushed on this thread (the guard is not Send).
        let _ = unsafe { sys::cuCtxPopCurrent_v2(&mut old) };
    }
}

/// A CUDA event without timing (the cheap kind), created in the current context.
#[derive(Debug)]
pub struct Event(sys::CUevent);

// SAFETY: events may be recorded, queried and synchronised from any thread.
unsafe impl Send for Event {}

impl Event {
    /// A new event in the current context.
    pub fn new() -> Result<Self> {
        let mut e: sys::CUevent = std::ptr::null_mut();
        // SAFETY: writes one event handle.
        let r = unsafe {
            sys::cuEventCreate(&mut e, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32)
        };
        check(r, || "creating a CUDA event".into())?;
        Ok(Self(e))
    }

    /// Records the event on `stream`: it completes once the work before it there has.
    ///
    /// # Safety
    /// `stream` must be a live stream of the event's context, or 0.
    pub unsafe fn record(&self, stream: RawStream) -> Result<()> {
        // SAFETY: the caller's contract; the event is alive.
        let r = unsafe { sys::cuEventRecord(self.0, stream.handle()) };
        check(r, || {
            format!("recording an event on stream {:#x}", stream.0)
        })
    }

    /// Whether the event completed; errors count as complete (for releasing memory after a
    /// context failure, when nothing more will run).
    pub fn is_complete(&self) -> bool {
        self.query().unwrap_or(true)
    }

    /// Blocks until the event completes.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: the event is alive.
        check(unsafe { sys::cuEventSynchronize(self.0) }, || {
            "waiting for the stream's earlier work".into()
        })
    }

    /// Whether the event completed (or was never recorded); an error (a sticky context
    /// error, say) is reported as such, not as completion.
    pub fn query(&self) -> Result<bool> {
        // SAFETY: the event is alive.
        let r = unsafe { sys::cuEventQuery(self.0) };
        if r == sys::CUresult::CUDA_ERROR_NOT_READY {
            return Ok(false);
        }
        check(r, || "querying an event".into())?;
        Ok(true)
    }

    /// Waits for the event by polling (a short spin, then sleeps of up to 200 µs), so the
    /// thread neither burns a core nor sleeps through a long wait, and gives up when
    /// `stop()` says so (returning `Ok(false)`).
    pub fn wait_polling(&self, stop: impl Fn() -> bool) -> Result<bool> {
        let mut pause = std::time::Duration::from_micros(1);
        for spin in 0u32.. {
            if self.query()? {
                return Ok(true);
            }
            if stop() {
                return Ok(false);
            }
            if spin < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_micros(200));
            }
        }
        unreachable!("the loop only ends by returning")
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: destroys the event this value owns; the driver defers it past pending
        // records.
        let _ = unsafe { sys::cuEventDestroy_v2(self.0) };
    }
}

/// Page-locked host memory, usable by every context and mapped into the device's address
/// space (so a stream can copy from it at full speed and wait on values in it).
#[derive(Debug)]
pub struct Pinned {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: plain host memory owned by this value.
unsafe impl Send for Pinned {}
// SAFETY: shared access hands out addresses only; what is done through them is the user's
// `unsafe` (Flag's counter is an atomic).
unsafe impl Sync for Pinned {}

impl Pinned {
    /// `len` bytes (at least 1), zeroed. Needs a current context.
    pub fn new(len: usize) -> Result<Self> {
        let len = len.max(1);
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: writes one host pointer to `len` bytes.
        let r = unsafe {
            sys::cuMemHostAlloc(
                &mut p,
                len,
                sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP,
            )
        };
        check(r, || {
            format!("allocating {len} bytes of pinned host memory")
        })?;
        // SAFETY: `p` holds `len` writable bytes, owned by this value from now on.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, len) };
        Ok(Self { ptr: p.cast(), len })
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: the allocation has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Its host address.
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// The address the device uses for it.
    fn device_addr(&self) -> Result<sys::CUdeviceptr> {
        let mut d: sys::CUdeviceptr = 0;
        // SAFETY: `ptr` was allocated with DEVICEMAP; writes one address.
        let r = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut d, self.ptr.cast(), 0) };
        check(r, || "mapping pinned memory for the device".into())?;
        Ok(d)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: frees the allocation this value owns; users wait for the copies that read
        // or write it before dropping it (an event each).
        let _ = unsafe { sys::cuMemFreeHost(self.ptr.cast()) };
    }
}

/// A 64-bit counter in pinned memory: the host raises it, streams wait until it reaches a
/// value (`cuStreamWaitValue64`), so work enqueued after the wait runs only once the host
/// says so, without the enqueuing thread blocking.
#[derive(Debug)]
pub struct Flag {
    mem: Pinned,
    device_addr: sys::CUdeviceptr,
}

impl Flag {
    /// A counter at 0. Needs a current context.
    pub fn new() -> Result<Self> {
        let mem = Pinned::new(64)?;
        let device_addr = mem.device_addr()?;
        Ok(Self { mem, device_addr })
    }

    /// The counter's value.
    pub fn value(&self) -> u64 {
        // SAFETY: as in `raise`.
        let counter = unsafe { &*self.mem.ptr.cast::<AtomicU64>() };
        counter.load(Ordering::Acquire)
    }

    /// Raises the counter to `value` (callers raise it in increasing order).
    pub fn raise(&self, value: u64) {
        // SAFETY: the first 8 bytes of the allocation (page-aligned, so 8-aligned), which
        // only this atomic accesses on the host while the value lives.
        let counter = unsafe { &*self.mem.ptr.cast::<AtomicU64>() };
        // Release, and a full fence after it: the staging data written before must be
        // visible to the device's copies that run once it sees the value.
        counter.fetch_max(value, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Makes `stream` wait until the counter is at least `value`.
    ///
    /// # Safety
    /// `stream` must be a live stream (or 0) of a context that can map this memory (every
    /// context: it is portable).
    pub unsafe fn wait(&self, stream: RawStream, value: u64) -> Result<()> {
        // SAFETY: the caller's contract; the address is this value's mapped counter.
        let r = unsafe {
            sys::cuStreamWaitValue64_v2(
                stream.handle(),
                self.device_addr,
                value,
                sys::CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32,
            )
        };
        check(r, || {
            format!("making stream {:#x} wait on a host flag", stream.0)
        })
    }
}

/// Whether `stream` is being captured into a CUDA graph (work on it is then recorded, not
/// run: host work ordered on it cannot be captured).
///
/// # Safety
/// `stream` must be a live stream (or 0) of the current context.
pub unsafe fn is_capturing(stream: RawStream) -> Result<bool> {
    let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    // SAFETY: the caller's contract; writes one status.
    let r = unsafe { sys::cuStreamIsCapturing(stream.handle(), &mut status) };
    check(r, || {
        format!("asking whether stream {:#x} is captured", stream.0)
    })?;
    Ok(status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
}

/// Enqueues a copy of `bytes` from `src` to `dst` on `stream` (either address may be device,
/// pinned or pageable host memory).
///
/// # Safety
/// Both ranges must be valid for `bytes` until the copy has run on `stream`, and `stream`
/// must be a live stream (or 0) of the current context.
pub unsafe fn copy_async(dst: usize, src: usize, bytes: usize, stream: RawStream) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract.
    let r = unsafe {
        sys::cuMemcpyAsync(
            dst as sys::CUdeviceptr,
            src as sys::CUdeviceptr,
            bytes,
            stream.handle(),
        )
    };
    check(r, || {
        format!("copying {bytes} bytes from {src:#x} to {dst:#x}")
    })
}
