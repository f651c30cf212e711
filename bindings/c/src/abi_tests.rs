//! The exported functions called in-process, ranks on threads (C programs that test the
//! built library live in `tests/c/`).

use crate::api_coll::*;
use crate::api_comm::*;
use crate::ffi::{self, NcclUniqueId};
use crate::handle::CommPtr;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

const FLOAT: i32 = 7;
const INT64: i32 = 4;
const SUM: i32 = 0;

fn unique_id() -> NcclUniqueId {
    let mut id = NcclUniqueId { internal: [0; 128] };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { ncclGetUniqueId(&mut id) }, ffi::SUCCESS);
    id
}

/// Runs `body(rank, comm)` on `n` threads, each with its rank of a new communicator.
fn ranks(n: i32, body: impl Fn(i32, CommPtr) + Sync) {
    let id = unique_id();
    std::thread::scope(|s| {
        for r in 0..n {
            let body = &body;
            s.spawn(move || {
                let mut comm = null_mut();
                // SAFETY: valid out-pointer and id.
                let res = unsafe { ncclCommInitRank(&mut comm, n, id, r) };
                assert_eq!(res, ffi::SUCCESS);
                body(r, comm);
                // SAFETY: a live communicator.
                assert_eq!(unsafe { ncclCommDestroy(comm) }, ffi::SUCCESS);
            });
        }
    });
}

#[test]
fn collectives_groups_and_argument_errors_on_three_ranks() {
    ranks(3, |rank, comm| {
        let send = [rank as f32 + 1.0; 8];
        let mut recv = [0f32; 8];
        let (sp, rp) = (
            send.as_ptr().cast::<c_void>(),
            recv.as_mut_ptr().cast::<c_void>(),
        );
        // SAFETY: 8-float buffers.
        let r = unsafe { ncclAllReduce(sp, rp, 8, FLOAT, SUM, comm, null_mut()) };
        assert_eq!(r, ffi::SUCCESS);
        assert_eq!(recv, [6.0; 8]);
        // In-place all-gather: this rank's block is at recvbuff + rank * count.
        let mut all = [0f32; 6];
        all[2 * rank as usize] = rank as f32;
        all[2 * rank as usize + 1] = rank as f32;
        let base = all.as_mut_ptr();
        // SAFETY: 6 floats; the send block lies inside them, as NCCL's in-place rule says.
        let r = unsafe {
            ncclAllGather(
                base.add(2 * rank as usize).cast(),
                base.cast(),
                2,
                FLOAT,
                comm,
                null_mut(),
            )
        };
        assert_eq!(r, ffi::SUCCESS);
        assert_eq!(all, [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
        // A ring of send/receive, receive first, inside a group.
        let out = [i64::from(rank); 3];
        let mut inp = [-1i64; 3];
        let (next, prev) = ((rank + 1) % 3, (rank + 2) % 3);
        // SAFETY: 3-element buffers that outlive the group.
        unsafe {
            assert_eq!(ncclGroupStart(), ffi::SUCCESS);
            assert_eq!(
                ncclRecv(inp.as_mut_ptr().cast(), 3, INT64, prev, comm, null_mut()),
                0
            );
            assert_eq!(
                ncclSend(out.as_ptr().cast(), 3, INT64, next, comm, null_mut()),
                0
            );
            assert_eq!(ncclGroupEnd(), ffi::SUCCESS);
        }
        assert_eq!(inp, [i64::from(prev); 3]);
        // Argument errors leave the communicator usable.
        // SAFETY: the invalid arguments are rejected before any memory is touched.
        unsafe {
            assert_eq!(
                ncclAllReduce(null(), rp, 8, FLOAT, SUM, comm, null_mut()),
                ffi::INVALID_ARGUMENT
            );
            assert_eq!(
                ncclAllReduce(sp, rp, 8, 12, SUM, comm, null_mut()),
                ffi::INVALID_ARGUMENT
            );
            assert_eq!(
                ncclBroadcast(sp, rp, 8, FLOAT, 3, comm, null_mut()),
                ffi::INVALID_ARGUMENT
            );
            assert_eq!(
                ncclSend(sp, 8, FLOAT, -1, comm, null_mut()),
                ffi::INVALID_ARGUMENT
            );
            assert_eq!(
                ncclAllReduce(sp, rp, 8, FLOAT, SUM, comm, null_mut()),
                ffi::SUCCESS
            );
        }
        let mut n = 0;
        let mut async_err = -1;
        // SAFETY: valid out-pointers.
        unsafe {
            assert_eq!(ncclCommCount(comm, &mut n), ffi::SUCCESS);
            assert_eq!(ncclCommGetAsyncError(comm, &mut async_err), ffi::SUCCESS);
        }
        assert_eq!((n, async_err), (3, ffi::SUCCESS));
    });
}

#[test]
fn one_thread_drives_every_rank_through_groups() {
    let mut comms = [null_mut(); 2];
    // SAFETY: room for 2 handles.
    let res = unsafe { ncclCommInitAll(comms.as_mut_ptr(), 2, null()) };
    assert_eq!(res, ffi::SUCCESS);
    let mut bufs = [[1.0f32, 2.0], [10.0, 20.0]];
    // SAFETY: each rank's buffer holds 2 floats and outlives the group.
    unsafe {
        assert_eq!(ncclGroupStart(), ffi::SUCCESS);
        for (b, c) in bufs.iter_mut().zip(comms) {
            let p = b.as_mut_ptr().cast();
            assert_eq!(
                ncclAllReduce(p, p, 2, FLOAT, SUM, c, null_mut()),
                ffi::SUCCESS
            );
        }
        assert_eq!(ncclGroupEnd(), ffi::SUCCESS);
    }
    assert_eq!(bufs, [[11.0, 22.0], [11.0, 22.0]]);
    for c in comms {
        // SAFETY: live communicators, destroyed once.
        assert_eq!(unsafe { ncclCommDestroy(c) }, ffi::SUCCESS);
        let mut n = 0;
        // SAFETY: a destroyed handle is rejected without being dereferenced.
        assert_eq!(unsafe { ncclCommCount(c, &mut n) }, ffi::INVALID_ARGUMENT);
    }
    // SAFETY: no group is open.
    assert_eq!(unsafe { ncclGroupEnd() }, ffi::INVALID_USAGE);
}
