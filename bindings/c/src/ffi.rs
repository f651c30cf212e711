//! NCCL's C types and constants, with the values of `include/nccl.h` (NCCL 2.28).

use std::ffi::{c_char, c_int, c_uint};

/// `ncclResult_t`.
pub type NcclResult = c_int;
/// `ncclDataType_t`.
pub type NcclDataType = c_int;
/// `ncclRedOp_t`.
pub type NcclRedOp = c_int;
/// `ncclScalarResidence_t`.
pub type NcclScalarResidence = c_int;
/// `cudaStream_t` (ignored: oxccl moves host memory).
pub type CudaStream = *mut std::ffi::c_void;

/// `ncclSuccess`.
pub const SUCCESS: NcclResult = 0;
/// `ncclUnhandledCudaError`.
pub const UNHANDLED_CUDA_ERROR: NcclResult = 1;
/// `ncclSystemError`.
pub const SYSTEM_ERROR: NcclResult = 2;
/// `ncclInternalError`.
pub const INTERNAL_ERROR: NcclResult = 3;
/// `ncclInvalidArgument`.
pub const INVALID_ARGUMENT: NcclResult = 4;
/// `ncclInvalidUsage`.
pub const INVALID_USAGE: NcclResult = 5;
/// `ncclRemoteError`.
pub const REMOTE_ERROR: NcclResult = 6;
/// `ncclInProgress`.
pub const IN_PROGRESS: NcclResult = 7;

/// `ncclNumTypes`.
pub const NUM_TYPES: NcclDataType = 12;
/// `ncclNumOps`: the first value of a created operator.
pub const NUM_OPS: NcclRedOp = 5;
/// `ncclScalarDevice`.
pub const SCALAR_DEVICE: NcclScalarResidence = 0;
/// `ncclScalarHostImmediate`.
pub const SCALAR_HOST_IMMEDIATE: NcclScalarResidence = 1;
/// `NCCL_SPLIT_NOCOLOR`.
pub const SPLIT_NOCOLOR: c_int = -1;
/// `NCCL_CONFIG_UNDEF_INT`.
pub const CONFIG_UNDEF_INT: c_int = c_int::MIN;
/// `NCCL_API_MAGIC`: the `magic` of an initialised `ncclConfig_t`.
pub const CONFIG_MAGIC: c_uint = 0xcafe_beef;
/// The `magic` of an initialised `ncclSimInfo_t`.
pub const SIM_INFO_MAGIC: c_uint = 0x7468_5283;

/// The NCCL release whose interface we provide: 2.28.7.
pub const NCCL_VERSION: (c_int, c_int, c_int) = (2, 28, 7);

/// `NCCL_VERSION(x, y, z)`: `x*1000 + y*100 + z` up to 2.8, `x*10000 + y*100 + z` after.
pub const fn version_code(x: c_int, y: c_int, z: c_int) -> c_int {
    if x <= 2 && y <= 8 {
        x * 1000 + y * 100 + z
    } else {
        x * 10000 + y * 100 + z
    }
}

/// `NCCL_VERSION_CODE` of this library.
pub const VERSION_CODE: c_int = version_code(NCCL_VERSION.0, NCCL_VERSION.1, NCCL_VERSION.2);

/// `ncclUniqueId`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NcclUniqueId {
    /// The id's bytes (oxccl's `UniqueId::to_bytes`).
    pub internal: [c_char; 128],
}

/// `ncclConfig_t` (NCCL 2.28's `ncclConfig_v22800`). Fields after `netName` exist only
/// when `size` says so (a program built against an older header passes a smaller struct).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NcclConfig {
    /// `sizeof(ncclConfig_t)` of the caller's header.
    pub size: usize,
    /// [`CONFIG_MAGIC`].
    pub magic: c_uint,
    /// The caller's `NCCL_VERSION_CODE`.
    pub version: c_uint,
    /// 0: non-blocking communicator; otherwise (or undefined) blocking.
    pub blocking: c_int,
    /// Ignored.
    pub cga_cluster_size: c_int,
    /// Ignored.
    pub min_ctas: c_int,
    /// Ignored.
    pub max_ctas: c_int,
    /// Ignored.
    pub net_name: *const c_char,
    /// Ignored.
    pub split_share: c_int,
    /// Ignored.
    pub traffic_class: c_int,
    /// Ignored.
    pub comm_name: *const c_char,
    /// Ignored.
    pub collnet_enable: c_int,
    /// Ignored.
    pub cta_policy: c_int,
    /// Ignored.
    pub shrink_share: c_int,
    /// Ignored.
    pub nvls_ctas: c_int,
    /// Ignored.
    pub n_channels_per_net_peer: c_int,
    /// Ignored.
    pub nvlink_centric_sched: c_int,
}

/// `ncclSimInfo_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NcclSimInfo {
    /// `sizeof(ncclSimInfo_t)`.
    pub size: usize,
    /// [`SIM_INFO_MAGIC`].
    pub magic: c_uint,
    /// The caller's `NCCL_VERSION_CODE`.
    pub version: c_uint,
    /// Predicted time of the group, microseconds.
    pub estimated_time: f32,
}

/// The fixed text of each result (`ncclGetErrorString`), NUL-terminated.
pub fn result_string(r: NcclResult) -> &'static [u8] {
    match r {
        SUCCESS => b"no error\0",
        UNHANDLED_CUDA_ERROR => b"unhandled cuda error (oxccl does not use CUDA)\0",
        SYSTEM_ERROR => b"unhandled system error (socket, shared memory or OS call failed)\0",
        INTERNAL_ERROR => b"internal error - please report this issue to the oxccl developers\0",
        INVALID_ARGUMENT => b"invalid argument (run with NCCL_DEBUG=WARN for details)\0",
        INVALID_USAGE => b"invalid usage (run with NCCL_DEBUG=WARN for details)\0",
        REMOTE_ERROR => b"remote process exited or there was a network error\0",
        IN_PROGRESS => b"NCCL operation in progress\0",
        _ => b"unknown result code\0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_version_match_ncclh() {
        // x86-64 / aarch64 LP64 sizes of NCCL 2.28's structs.
        assert_eq!(std::mem::size_of::<NcclConfig>(), 80);
        assert_eq!(std::mem::offset_of!(NcclConfig, net_name), 32);
        assert_eq!(std::mem::offset_of!(NcclConfig, comm_name), 48);
        assert_eq!(std::mem::size_of::<NcclSimInfo>(), 24);
        assert_eq!(std::mem::size_of::<NcclUniqueId>(), 128);
        assert_eq!(VERSION_CODE, 22807);
        assert_eq!(version_code(2, 8, 4), 2804);
        assert!(result_string(99).ends_with(b"\0"));
    }
}
