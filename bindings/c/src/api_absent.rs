//! NCCL functions oxccl does not provide, exported so that programs linked against NVIDIA's
//! library still load: PyTorch's `libtorch_cuda.so` references them, and Python loads it
//! with immediate binding, so one missing name fails `import torch` outright. Each call
//! fails with `ncclInvalidUsage` and says what is not provided (none is called on PyTorch's
//! ordinary paths: scalable init above 128 ranks, shrink, symmetric windows, the device API).

use crate::error::Failure;
use crate::export;
use crate::handle::CommPtr;
use std::ffi::{c_int, c_void};

fn absent(name: &str) -> Failure {
    Failure::usage(format!(
        "{name} is not provided by oxccl's libnccl.so.2 (see bindings/c/README.md)"
    ))
}

export! {
    /// Not provided: fails with `ncclInvalidUsage`.
    fn ncclCommInitRankScalable / pncclCommInitRankScalable(_newcomm: *mut CommPtr,
        _nranks: c_int, _myrank: c_int, _n_id: c_int, _comm_ids: *mut c_void,
        _config: *mut c_void) {
        Err(absent("ncclCommInitRankScalable"))
    }
}

export! {
    /// Not provided (oxccl's own shrink is `Communicator::shrink`): fails with
    /// `ncclInvalidUsage`.
    fn ncclCommShrink / pncclCommShrink(_comm: CommPtr, _exclude: *mut c_int, _count: c_int,
        _newcomm: *mut CommPtr, _config: *mut c_void, _flags: c_int) {
        Err(absent("ncclCommShrink"))
    }
}

export! {
    /// Not provided: fails with `ncclInvalidUsage`.
    fn ncclCommWindowRegister / pncclCommWindowRegister(_comm: CommPtr, _buff: *mut c_void,
        _size: usize, _win: *mut c_void, _flags: c_int) {
        Err(absent("ncclCommWindowRegister"))
    }
}

export! {
    /// Not provided: fails with `ncclInvalidUsage`.
    fn ncclCommWindowDeregister / pncclCommWindowDeregister(_comm: CommPtr, _win: *mut c_void) {
        Err(absent("ncclCommWindowDeregister"))
    }
}

export! {
    /// Not provided (the device-side API): fails with `ncclInvalidUsage`.
    fn ncclDevCommCreate / pncclDevCommCreate(_comm: CommPtr, _reqs: *const c_void,
        _out: *mut c_void) {
        Err(absent("ncclDevCommCreate"))
    }
}

export! {
    /// Not provided (the device-side API): fails with `ncclInvalidUsage`.
    fn ncclDevCommDestroy / pncclDevCommDestroy(_comm: CommPtr, _dev_comm: *const c_void) {
        Err(absent("ncclDevCommDestroy"))
    }
}
