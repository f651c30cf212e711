//! `ncclMemAlloc`/`ncclMemFree` (page-aligned host memory) and buffer registration.
//!
//! oxccl reads and writes user buffers where they are, so `ncclCommRegister` only hands
//! out a handle (kept in a registry so that `ncclCommDeregister` can reject unknown ones).

use crate::error::Failure;
use crate::ffi;
use crate::handle::{CommHandle, CommPtr};
use crate::{export, need};
use std::alloc::Layout;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

/// Live allocations: address → layout.
static ALLOCS: Mutex<Option<HashMap<usize, Layout>>> = Mutex::new(None);
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

export! {
    /// Allocates `size` bytes of zeroed, page-aligned host memory.
    fn ncclMemAlloc / pncclMemAlloc(ptr: *mut *mut c_void, size: usize) {
        need(ptr, "ptr")?;
        let layout = Layout::from_size_align(size.max(1), page_size())
            .map_err(|_| Failure::invalid(format!("size {size} is too large")))?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(Failure::new(ffi::SYSTEM_ERROR, format!("out of memory allocating {size} bytes")));
        }
        ALLOCS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(HashMap::new)
            .insert(p as usize, layout);
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
        let layout = ALLOCS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
            .and_then(|m| m.remove(&(ptr as usize)))
            .ok_or_else(|| Failure::invalid(format!("{ptr:p} was not allocated by ncclMemAlloc")))?;
        // SAFETY: allocated by ncclMemAlloc with this layout, and removed from the registry,
        // so freed once.
        unsafe { std::alloc::dealloc(ptr.cast(), layout) };
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
