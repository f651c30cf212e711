//! GPU memory for `ncclMemAlloc`: plain `cuMemAlloc` allocations, which CUDA IPC can share
//! with the ranks of other processes (unlike stream-ordered pool memory), so buffers from
//! here can take the peer path ([`super::peer`]).
//!
//! The allocation goes to the calling thread's current context, the current device's as the
//! CUDA runtime sets it (from CUDA 12 `cudaSetDevice` makes it current at once). With no
//! context current, it goes to device 0's primary context, which stays retained until the
//! allocation is freed: a program on another device that has not used the runtime yet (or
//! a runtime older than 12 that has not initialised the device it set) should make its
//! device current first.

use cudarc::driver::sys;

use super::stream::{init, ContextGuard, RawContext};
use crate::{Error, Result};

/// One allocation: where it is and the context it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAllocation {
    /// Its device address.
    pub addr: u64,
    /// Its context.
    pub ctx: RawContext,
    /// The primary context's device when this allocation retained it (no context was
    /// current), released on free.
    retained: Option<i32>,
}

fn check(r: sys::CUresult, what: impl FnOnce() -> String) -> Result<()> {
    r.result()
        .map_err(|e| Error::Config(format!("{}: CUDA driver error {e}", what())))
}

/// `bytes` (at least 1) of GPU memory, not zeroed (as NCCL's: a memset here would run on
/// the legacy default stream, which the program's non-blocking streams do not wait for);
/// `Err` without a driver or a device, or when the device is out of memory.
pub fn alloc(bytes: usize) -> Result<DeviceAllocation> {
    init()?;
    let mut current: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: writes one context handle (null when none is current).
    let r = unsafe { sys::cuCtxGetCurrent(&mut current) };
    check(r, || "asking for the current CUDA context".into())?;
    let mut retained = None;
    if current.is_null() {
        let mut dev: sys::CUdevice = 0;
        // SAFETY: writes one device handle; fails when there is no device 0.
        let r = unsafe { sys::cuDeviceGet(&mut dev, 0) };
        check(r, || {
            "no CUDA context is current and there is no GPU 0".into()
        })?;
        // SAFETY: `dev` is a device; writes one context handle, retained until released.
        let r = unsafe { sys::cuDevicePrimaryCtxRetain(&mut current, dev) };
        check(r, || "opening GPU 0's primary context".into())?;
        retained = Some(dev);
    }
    let ctx = RawContext::from_raw(current as usize);
    let made = (|| {
        let _current = ContextGuard::push(ctx)?;
        let mut addr: sys::CUdeviceptr = 0;
        // SAFETY: a context is current; writes one address.
        let r = unsafe { sys::cuMemAlloc_v2(&mut addr, bytes.max(1)) };
        check(r, || format!("allocating {bytes} bytes of GPU memory"))?;
        Ok(addr)
    })();
    match made {
        Ok(addr) => Ok(DeviceAllocation {
            addr,
            ctx,
            retained,
        }),
        Err(e) => {
            if let Some(dev) = retained {
                // SAFETY: retained above, released once.
                let _ = unsafe { sys::cuDevicePrimaryCtxRelease_v2(dev) };
            }
            Err(e)
        }
    }
}

/// Frees an allocation from [`alloc`] (and releases the primary context it retained).
///
/// # Safety
/// `a` must come from [`alloc`] and not have been freed, and no work may still use it.
pub unsafe fn free(a: DeviceAllocation) -> Result<()> {
    let freed = ContextGuard::push(a.ctx).and_then(|_current| {
        // SAFETY: the caller's contract: a live allocation of this context, freed once.
        let r = unsafe { sys::cuMemFree_v2(a.addr) };
        check(r, || format!("freeing GPU memory at {:#x}", a.addr))
    });
    if let Some(dev) = a.retained {
        // SAFETY: retained by `alloc` for this allocation, released once.
        let _ = unsafe { sys::cuDevicePrimaryCtxRelease_v2(dev) };
    }
    freed
}
