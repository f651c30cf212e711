//! The exported collectives, point-to-point calls, groups and reduction operators.

use crate::error::{CResult, Failure};
use crate::ffi::{self, CudaStream, NcclDataType, NcclRedOp, NcclScalarResidence, NcclSimInfo};
use crate::group;
use crate::handle::{CommHandle, CommPtr, PreMul};
use crate::ops::{Kind, OpArgs};
use crate::types::{self, RedOp, Scalar};
use crate::{export, need};
use oxccl::ReduceOp;
use std::ffi::{c_int, c_void};

/// Resolves an op's arguments on `comm` and issues it (`op`: `None` for the calls
/// without a reduction).
#[allow(clippy::too_many_arguments)]
fn issue(
    kind: Kind,
    send: *const c_void,
    recv: *const c_void,
    count: usize,
    datatype: NcclDataType,
    op: Option<NcclRedOp>,
    root: c_int,
    comm: CommPtr,
    stream: CudaStream,
) -> CResult {
    group::issue(comm, |h| {
        let dtype = types::datatype(datatype)?;
        let op = match op {
            Some(op) => h.redop(op, dtype)?,
            None => RedOp::Builtin(ReduceOp::Sum),
        };
        Ok(OpArgs {
            kind,
            send: send as usize,
            recv: recv as usize,
            count,
            dtype,
            op,
            // A negative root or peer becomes out of range, and `check` says so.
            root: u32::try_from(root).unwrap_or(u32::MAX),
            stream: stream as usize,
            on_device: false,
        })
    })
}

export! {
    /// All-reduce `count` elements from `sendbuff` into `recvbuff` (in place if equal).
    fn ncclAllReduce / pncclAllReduce(sendbuff: *const c_void, recvbuff: *mut c_void, count: usize,
        datatype: NcclDataType, op: NcclRedOp, comm: CommPtr, stream: CudaStream) {
        issue(Kind::AllReduce, sendbuff, recvbuff, count, datatype, Some(op), 0, comm, stream)
    }
}

export! {
    /// Broadcast `count` elements from `root`'s `sendbuff` to every `recvbuff`.
    fn ncclBroadcast / pncclBroadcast(sendbuff: *const c_void, recvbuff: *mut c_void, count: usize,
        datatype: NcclDataType, root: c_int, comm: CommPtr, stream: CudaStream) {
        issue(Kind::Broadcast, sendbuff, recvbuff, count, datatype, None, root, comm, stream)
    }
}

export! {
    /// In-place broadcast (the legacy form of `ncclBroadcast`).
    fn ncclBcast / pncclBcast(buff: *mut c_void, count: usize, datatype: NcclDataType, root: c_int,
        comm: CommPtr, stream: CudaStream) {
        issue(Kind::Broadcast, buff, buff, count, datatype, None, root, comm, stream)
    }
}

export! {
    /// Reduce `count` elements onto `root`'s `recvbuff` (unused on other ranks).
    fn ncclReduce / pncclReduce(sendbuff: *const c_void, recvbuff: *mut c_void, count: usize,
        datatype: NcclDataType, op: NcclRedOp, root: c_int, comm: CommPtr, stream: CudaStream) {
        issue(Kind::Reduce, sendbuff, recvbuff, count, datatype, Some(op), root, comm, stream)
    }
}

export! {
    /// All-gather `sendcount` elements per rank into `recvbuff` (nranks × sendcount).
    fn ncclAllGather / pncclAllGather(sendbuff: *const c_void, recvbuff: *mut c_void, sendcount: usize,
        datatype: NcclDataType, comm: CommPtr, stream: CudaStream) {
        issue(Kind::AllGather, sendbuff, recvbuff, sendcount, datatype, None, 0, comm, stream)
    }
}

export! {
    /// Reduce-scatter: `recvbuff` gets this rank's `recvcount` block of the reduction.
    fn ncclReduceScatter / pncclReduceScatter(sendbuff: *const c_void, recvbuff: *mut c_void,
        recvcount: usize, datatype: NcclDataType, op: NcclRedOp, comm: CommPtr, stream: CudaStream) {
        issue(Kind::ReduceScatter, sendbuff, recvbuff, recvcount, datatype, Some(op), 0, comm, stream)
    }
}

export! {
    /// All-to-all: block `j` (`count` elements) of `sendbuff` goes to rank `j`.
    fn ncclAlltoAll / pncclAlltoAll(sendbuff: *const c_void, recvbuff: *mut c_void, count: usize,
        datatype: NcclDataType, comm: CommPtr, stream: CudaStream) {
        issue(Kind::AllToAll, sendbuff, recvbuff, count, datatype, None, 0, comm, stream)
    }
}

export! {
    /// Gather `count` elements per rank onto `root`'s `recvbuff`.
    fn ncclGather / pncclGather(sendbuff: *const c_void, recvbuff: *mut c_void, count: usize,
        datatype: NcclDataType, root: c_int, comm: CommPtr, stream: CudaStream) {
        issue(Kind::Gather, sendbuff, recvbuff, count, datatype, None, root, comm, stream)
    }
}

export! {
    /// Scatter `count` elements per rank from `root`'s `sendbuff`.
    fn ncclScatter / pncclScatter(sendbuff: *const c_void, recvbuff: *mut c_void, count: usize,
        datatype: NcclDataType, root: c_int, comm: CommPtr, stream: CudaStream) {
        issue(Kind::Scatter, sendbuff, recvbuff, count, datatype, None, root, comm, stream)
    }
}

export! {
    /// Send `count` elements to `peer` (matched with its `ncclRecv` in issue order).
    fn ncclSend / pncclSend(sendbuff: *const c_void, count: usize, datatype: NcclDataType, peer: c_int,
        comm: CommPtr, stream: CudaStream) {
        issue(Kind::Send, sendbuff, std::ptr::null(), count, datatype, None, peer, comm, stream)
    }
}

export! {
    /// Receive `count` elements from `peer`.
    fn ncclRecv / pncclRecv(recvbuff: *mut c_void, count: usize, datatype: NcclDataType, peer: c_int,
        comm: CommPtr, stream: CudaStream) {
        issue(Kind::Recv, std::ptr::null(), recvbuff, count, datatype, None, peer, comm, stream)
    }
}

export! {
    /// Opens a group (groups nest).
    fn ncclGroupStart / pncclGroupStart() {
        group::start()
    }
}

export! {
    /// Closes a group; the outermost runs its ops.
    fn ncclGroupEnd / pncclGroupEnd() {
        group::end()
    }
}

export! {
    /// Closes a group without running it and predicts its time (`estimatedTime`, µs).
    fn ncclGroupSimulateEnd / pncclGroupSimulateEnd(sim_info: *mut NcclSimInfo) {
        need(sim_info, "simInfo")?;
        // SAFETY: non-null; the caller passes an ncclSimInfo_t (at least its header fields).
        let (size, magic) = unsafe { ((*sim_info).size, (*sim_info).magic) };
        if magic != ffi::SIM_INFO_MAGIC || size < std::mem::size_of::<NcclSimInfo>() {
            // NCCL leaves the group open on this error; so do we.
            return Err(Failure::invalid(
                "simInfo was not initialised with NCCL_SIM_INFO_INITIALIZER",
            ));
        }
        let t = group::simulate_end()?;
        // SAFETY: checked non-null and of the full size above.
        unsafe { (*sim_info).estimated_time = t };
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Creates an operator that multiplies inputs by `*scalar` (read now), then sums.
    fn ncclRedOpCreatePreMulSum / pncclRedOpCreatePreMulSum(op: *mut NcclRedOp, scalar: *mut c_void,
        datatype: NcclDataType, residence: NcclScalarResidence, comm: CommPtr) {
        need(op, "op")?;
        need(scalar, "scalar")?;
        let dtype = types::datatype(datatype)?;
        if residence != ffi::SCALAR_DEVICE && residence != ffi::SCALAR_HOST_IMMEDIATE {
            return Err(Failure::invalid(format!("invalid scalar residence {residence}")));
        }
        let h = CommHandle::get(comm)?;
        let scalar = if residence == ffi::SCALAR_DEVICE {
            // Read when an op runs, as NCCL reads device scalars.
            Scalar::At(scalar as usize)
        } else {
            // SAFETY: non-null, and points to one element of `datatype` (NCCL's contract).
            let bytes = unsafe { std::slice::from_raw_parts(scalar as *const u8, dtype.size()) };
            Scalar::Value(types::scalar_bytes(dtype, bytes))
        };
        let id = h.add_redop(PreMul { dtype, scalar })?;
        // SAFETY: checked non-null above.
        unsafe { op.write(id) };
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Destroys an operator created by `ncclRedOpCreatePreMulSum` on `comm`.
    fn ncclRedOpDestroy / pncclRedOpDestroy(op: NcclRedOp, comm: CommPtr) {
        if (0..ffi::NUM_OPS).contains(&op) {
            return Err(Failure::invalid(format!("operator {op} is built in")));
        }
        CommHandle::get(comm)?.remove_redop(op)?;
        Ok(ffi::SUCCESS)
    }
}
