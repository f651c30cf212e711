//! `ncclMemAlloc`/`ncclMemFree` and buffer registration.
//!
//! Where a CUDA driver and a GPU are present, `ncclMemAlloc` returns GPU memory, as NCCL's
//! does: a `cuMemAlloc` allocation in the calling thread's current context (device 0's
//! primary context when none is current), which CUDA IPC can share, so ops on it can go
//! through the peers' GPU memory (`OXCCL_CUDA_IPC=1`). Without a driver (oxccl on CPUs) it
//! returns zeroed, page-aligned host memory.
//!
//! oxccl reads and writes user buffers where they are, so `ncclCommRegister` only hands
//! out a handle (kept in a registry so that `ncclCommDeregister` can reject unknown ones).

use crate::error::Failure;
use crate::ffi;
use crate::handle::{CommHandle, CommPtr};
use crate::{export, need};
use oxccl_transports::cuda::memory as cuda_memory;
use std::alloc::Layout;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

/// One `ncclMemAlloc` allocation.
enum Allocation {
    Host(Layout),
    Device(cuda_memory::DeviceAllocation),
}

/// Live allocations by address.
static ALLOCS: Mutex<Option<HashMap<usize, Allocation>>> = Mutex::new(None);
/// A registration: the communicator's address, the buffer's, and its bytes.
type Registration = (usize, usize, usize);
/// Live registrations by handle.
static REGS: Mutex<Option<HashMap<usize, Registration>>> = Mutex::new(None);

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

fn remember(addr: usize, a: Allocation) {
    ALLOCS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(addr, a);
}

export! {
    /// Allocates `size` bytes of GPU memory, not zeroed (in the current context, else device
    /// 0's primary one), or of zeroed, page-aligned host memory where no CUDA driver is.
    fn ncclMemAlloc / pncclMemAlloc(ptr: *mut *mut c_void, size: usize) {
        need(ptr, "ptr")?;
        let p = if oxccl_transports::cuda::stream::init().is_ok() {
            let a = cuda_memory::alloc(size).map_err(|e| {
                Failure::new(ffi::UNHANDLED_CUDA_ERROR, format!("ncclMemAlloc of {size} bytes: {e}"))
            })?;
            let p = a.addr as usize;
            remember(p, Allocation::Device(a));
            p as *mut u8
        } else {
            let layout = Layout::from_size_align(size.max(1), page_size())
                .map_err(|_| Failure::invalid(format!("size {size} is too large")))?;
            // SAFETY: the layout has a non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            if p.is_null() {
                return Err(Failure::new(ffi::SYSTEM_ERROR, format!("out of memory allocating {size} bytes")));
            }
            remember(p as usize, Allocation::Host(layout));
            p
        };
        // SAFETY: checked non-null above.
        unsafe { ptr.write(p.cast()) };
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Frees memory from `ncclMemAlloc` (NULL is accepted; other pointers are rejected).
    fn ncclMemFree / pncclMemFree(ptr: *mut c_void) {
        if ptr.is_null() {
            return Ok(ffi::SUCCESS);
        }
        let a = ALLOCS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
            .and_then(|m| m.remove(&(ptr as usize)))
            .ok_or_else(|| Failure::invalid(format!("{ptr:p} was not allocated by ncclMemAlloc")))?;
        match a {
            // SAFETY: allocated by ncclMemAlloc with this layout, and removed from the
            // registry, so freed once.
            Allocation::Host(layout) => unsafe { std::alloc::dealloc(ptr.cast(), layout) },
            // SAFETY: from cuda_memory::alloc, removed from the registry, so freed once; the
            // program no longer uses it (ncclMemFree's contract).
            Allocation::Device(d) => unsafe { cuda_memory::free(d) }.map_err(|e| {
                Failure::new(ffi::UNHANDLED_CUDA_ERROR, format!("ncclMemFree({ptr:p}): {e}"))
            })?,
        }
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Registers `buff` with `comm`: returns a handle; the buffer is used as it is.
    fn ncclCommRegister / pncclCommRegister(comm: CommPtr, buff: *mut c_void, size: usize,
        handle: *mut *mut c_void) {
        need(handle, "handle")?;
        CommHandle::get(comm)?;
        if buff.is_null() && size > 0 {
            return Err(Failure::invalid("buff is NULL"));
        }
        let token = Box::into_raw(Box::new(0u8)) as usize;
        REGS.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(HashMap::new)
            .insert(token, (comm as usize, buff as usize, size));
        // SAFETY: checked non-null above.
        unsafe { handle.write(token as *mut c_void) };
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Forgets a registration of `comm`.
    fn ncclCommDeregister / pncclCommDeregister(comm: CommPtr, handle: *mut c_void) {
        CommHandle::get(comm)?;
        let mut regs = REGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let map = regs.get_or_insert_with(HashMap::new);
        match map.get(&(handle as usize)) {
            Some((c, _, _)) if *c == comm as usize => {}
            _ => return Err(Failure::invalid(format!("{handle:p} is not a registration of this comm"))),
        }
        map.remove(&(handle as usize));
        // SAFETY: the token was made by Box::into_raw in ncclCommRegister and is freed once
        // (just removed from the registry).
        drop(unsafe { Box::from_raw(handle as *mut u8) });
        Ok(ffi::SUCCESS)
    }
}
