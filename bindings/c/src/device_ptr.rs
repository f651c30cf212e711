//! Telling GPU memory from host memory: an op with a GPU buffer is staged on its CUDA stream
//! ([`crate::staged`]) instead of being read as host memory (a crash, or wrong data).
//!
//! The CUDA driver is opened at first use. Without it (no NVIDIA driver: the common case on
//! CPU machines) every pointer is host memory and the check costs one atomic load.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

/// `CU_POINTER_ATTRIBUTE_MEMORY_TYPE`.
const ATTR_MEMORY_TYPE: c_int = 2;
/// `CU_POINTER_ATTRIBUTE_IS_MANAGED`.
const ATTR_IS_MANAGED: c_int = 8;
/// `CU_MEMORYTYPE_DEVICE`.
const MEMORYTYPE_DEVICE: c_uint = 2;

type PointerGetAttribute = unsafe extern "C" fn(*mut c_void, c_int, u64) -> c_int;

struct Driver {
    get_attribute: PointerGetAttribute,
    _lib: libloading::Library,
}

/// The driver's `cuPointerGetAttribute`, after a successful `cuInit(0)`; `None` without a
/// usable driver.
fn driver() -> Option<&'static Driver> {
    static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            // SAFETY: libcuda's initialisers only set up its own state; the two symbols have
            // the C prototypes of cuda.h (`CUresult cuInit(unsigned)`,
            // `CUresult cuPointerGetAttribute(void*, CUpointer_attribute, CUdeviceptr)`),
            // and `_lib` keeps the library loaded while the pointer is used.
            unsafe {
                let lib = libloading::Library::new("libcuda.so.1").ok()?;
                let init: unsafe extern "C" fn(c_uint) -> c_int = *lib.get(b"cuInit\0").ok()?;
                if init(0) != 0 {
                    return None;
                }
                let get_attribute: PointerGetAttribute =
                    *lib.get(b"cuPointerGetAttribute\0").ok()?;
                Some(Driver {
                    get_attribute,
                    _lib: lib,
                })
            }
        })
        .as_ref()
}

/// Whether `ptr` is GPU memory the CPU cannot read (device memory that is not managed).
pub fn is_device_memory(ptr: usize) -> bool {
    let Some(d) = driver() else {
        return false;
    };
    let mut kind: c_uint = 0;
    let mut managed: c_uint = 0;
    // SAFETY: the attribute calls write one `unsigned int` each; for a pointer the driver does
    // not know they return an error and write nothing.
    unsafe {
        if (d.get_attribute)(
            (&mut kind as *mut c_uint).cast(),
            ATTR_MEMORY_TYPE,
            ptr as u64,
        ) != 0
        {
            return false;
        }
        if (d.get_attribute)(
            (&mut managed as *mut c_uint).cast(),
            ATTR_IS_MANAGED,
            ptr as u64,
        ) != 0
        {
            managed = 0;
        }
    }
    kind == MEMORYTYPE_DEVICE && managed == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_is_not_device_memory() {
        let heap = vec![0u8; 4096];
        let stack = 0u64;
        assert!(!is_device_memory(heap.as_ptr() as usize));
        assert!(!is_device_memory(&stack as *const u64 as usize));
    }
}
