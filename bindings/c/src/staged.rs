//! Ops on GPU buffers, in the order of the program's CUDA streams, through pinned host memory.
//!
//! oxccl's engine reduces and moves host memory, so a communicator's group of ops with a GPU
//! buffer becomes one job of an [`OrderedQueue`] (one per communicator): the ops' streams
//! copy the inputs into a pinned staging block; the queue's worker, once the streams got
//! there, runs the ops as one oxccl group on the block; the streams, told to wait for that,
//! copy the results back. So `ncclAllReduce` returns at once, work the program enqueues
//! after it sees its result, and the ops of one `ncclGroupEnd` run together whatever streams
//! they are on.
//!
//! A failed job still releases its streams; its failure is kept for
//! `ncclCommGetAsyncError`, which is how NCCL reports failures of enqueued work too.

use crate::error::{CResult, Failure};
use crate::ffi;
use crate::handle::{CommHandle, GpuOps};
use crate::ops::{Bufs, Kind, OpArgs};
use crate::types::{RedOp, Scalar};
use oxccl_transports::cuda::ordered::{Copy, Enqueued, OrderedQueue, REGION_ALIGN};
use oxccl_transports::cuda::stream::{self as cuda, RawContext, RawStream};
use std::ops::Range;
use std::sync::Arc;

/// A group's ops with their buffers as offsets in one staging block, and the copies around
/// them.
struct Layout {
    ops: Vec<OpArgs>,
    /// Ops whose PreMulSum scalar was staged too (its `Scalar::At` is then an offset).
    staged_scalar: Vec<bool>,
    copy_in: Vec<Copy>,
    copy_out: Vec<Copy>,
    bytes: usize,
}

fn cuda_failure(e: oxccl_transports::Error) -> Failure {
    Failure::new(ffi::UNHANDLED_CUDA_ERROR, e.to_string())
}

/// Which bytes of an in-place op's buffer (of `all` bytes) are read and which written, by
/// NCCL's in-place layouts: a block op reads or writes only this rank's block (`own`).
fn in_place_ranges(a: &OpArgs, rank: u32, all: usize) -> (Range<usize>, Range<usize>) {
    let block = a.count * a.dtype.size();
    let own = rank as usize * block..(rank as usize + 1) * block;
    match a.kind {
        Kind::AllGather | Kind::Gather => (own, 0..all),
        Kind::ReduceScatter | Kind::Scatter => (0..all, own),
        // A non-root reduce has no output; its buffer stays as the program left it.
        Kind::Reduce if rank != a.root => (0..all, 0..0),
        _ => (0..all, 0..all),
    }
}

/// Lays `ops` (on `rank` of `nranks`) out in one staging block: the staged ops' `send` and
/// `recv` are offsets from the block's start. Staged regions never overlap, so an op is in
/// place on the block exactly when it was in place on the program's buffers.
fn layout(ops: &[OpArgs], rank: u32, nranks: u32) -> CResult<Layout> {
    let mut out = Layout {
        ops: Vec::with_capacity(ops.len()),
        staged_scalar: Vec::with_capacity(ops.len()),
        copy_in: Vec::new(),
        copy_out: Vec::new(),
        bytes: 0,
    };
    // Offsets start at REGION_ALIGN: 0 stays "no buffer".
    let mut used = REGION_ALIGN;
    let mut take = |bytes: usize| {
        let at = used;
        used += bytes.next_multiple_of(REGION_ALIGN);
        at
    };
    for a in ops {
        let size = a.dtype.size();
        let stream = RawStream(a.stream);
        let copy = |user, offset, bytes| Copy {
            user,
            offset,
            bytes,
            stream,
        };
        let mut staged = *a;
        match a.bufs(rank, nranks, None)? {
            Bufs::InPlace { buf, len } => {
                let bytes = len * size;
                let at = take(bytes);
                // Both pointers keep their offset inside the buffer (all-gather's input is
                // its block of the output, and so on).
                staged.send = at + a.send.wrapping_sub(buf);
                staged.recv = at + a.recv.wrapping_sub(buf);
                let (read, written) = in_place_ranges(a, rank, bytes);
                out.copy_in
                    .push(copy(buf + read.start, at + read.start, read.len()));
                out.copy_out
                    .push(copy(buf + written.start, at + written.start, written.len()));
            }
            Bufs::Split {
                send,
                send_len,
                recv,
                recv_len,
            } => {
                staged.send = 0;
                staged.recv = 0;
                if send_len > 0 {
                    staged.send = take(send_len * size);
                    out.copy_in.push(copy(send, staged.send, send_len * size));
                }
                if recv_len > 0 {
                    staged.recv = take(recv_len * size);
                    out.copy_out.push(copy(recv, staged.recv, recv_len * size));
                }
            }
        }
        // A PreMulSum scalar in GPU memory is read on the stream, like the inputs.
        let mut scalar_staged = false;
        if let RedOp::PreMul(Scalar::At(p)) = a.op {
            if crate::device_ptr::is_device_memory(p) {
                let at = take(size);
                out.copy_in.push(copy(p, at, size));
                staged.op = RedOp::PreMul(Scalar::At(at));
                scalar_staged = true;
            }
        }
        out.ops.push(staged);
        out.staged_scalar.push(scalar_staged);
    }
    out.bytes = used;
    out.copy_in.retain(|c| c.bytes > 0);
    out.copy_out.retain(|c| c.bytes > 0);
    Ok(out)
}

/// `op` with its staged offsets turned into addresses in the block at `base`.
fn placed(mut op: OpArgs, base: usize, scalar_staged: bool) -> OpArgs {
    if op.send != 0 {
        op.send += base;
    }
    if op.recv != 0 {
        op.recv += base;
    }
    if let (true, RedOp::PreMul(Scalar::At(at))) = (scalar_staged, op.op) {
        op.op = RedOp::PreMul(Scalar::At(base + at));
    }
    op
}

/// The distinct streams of `ops`, in first-use order.
fn streams(ops: &[OpArgs]) -> Vec<RawStream> {
    let mut s: Vec<RawStream> = Vec::new();
    for a in ops {
        if !s.contains(&RawStream(a.stream)) {
            s.push(RawStream(a.stream));
        }
    }
    s
}

/// The context of the group: its GPU buffers' (the device they are on), which every stream
/// of the group must share.
fn group_context(ops: &[OpArgs], streams: &[RawStream]) -> CResult<RawContext> {
    let device_buffer = ops
        .iter()
        .flat_map(|a| [a.send, a.recv])
        .find(|&p| p != 0 && crate::device_ptr::is_device_memory(p))
        .unwrap_or(0);
    let mut ctx = None;
    for &s in streams {
        let c = cuda::stream_context(s, device_buffer).map_err(cuda_failure)?;
        match ctx {
            None => ctx = Some(c),
            Some(first) if first != c => {
                return Err(Failure::invalid(format!(
                    "stream {:#x} belongs to another CUDA context (device) than the group's \
                     other streams",
                    s.0
                )))
            }
            Some(_) => {}
        }
    }
    ctx.ok_or_else(|| Failure::invalid("a GPU op without a stream"))
}

/// Enqueues one communicator's group of ops, some of whose buffers are GPU memory, on their
/// streams (see the module documentation).
pub fn enqueue(comm: &Arc<CommHandle>, ops: &[OpArgs]) -> CResult {
    let streams = streams(ops);
    let ctx = group_context(ops, &streams)?;
    let mut staging = comm.staging();
    if staging.closed {
        return Err(Failure::usage("the communicator was destroyed or aborted"));
    }
    if staging.queue.is_none() {
        let q =
            OrderedQueue::new(ctx, &format!("oxccl-gpu-{}", comm.rank)).map_err(cuda_failure)?;
        staging.queue = Some(q);
        // Decided once, before any job (setting up the kernels' stream may synchronise the
        // context), from what every rank sees alike.
        staging.peer = Some(crate::peer::PeerPath::decide(comm, ctx)?);
    }
    if staging.queue.as_ref().expect("created above").context() != ctx {
        return Err(Failure::invalid(
            "this communicator's GPU ops use buffers or streams of two CUDA contexts (devices)",
        ));
    }
    {
        let _current = cuda::ContextGuard::push(ctx).map_err(cuda_failure)?;
        for &s in &streams {
            // SAFETY: the program's stream (NCCL's contract), of the context made current.
            if unsafe { cuda::is_capturing(s) }.map_err(cuda_failure)? {
                return Err(Failure::usage(format!(
                    "stream {:#x} is being captured into a CUDA graph: oxccl's collectives \
                     on GPU buffers run host work and cannot be captured",
                    s.0
                )));
            }
        }
    }
    let rest = crate::peer::route(comm, &mut staging, ops)?;
    if rest.is_empty() {
        return Ok(ffi::SUCCESS);
    }
    enqueue_staged(comm, &mut staging, &rest, false)
}

/// Stages `ops` as one job of the communicator's queue (created by the caller). When
/// `answering`, the job swaps an "unusable" record before each op, as a rank that cannot
/// take part in the peer jobs its peers run (see [`crate::peer`]).
pub(crate) fn enqueue_staged(
    comm: &Arc<CommHandle>,
    staging: &mut GpuOps,
    ops: &[OpArgs],
    answering: bool,
) -> CResult {
    let streams = streams(ops);
    let queue = staging.queue.as_mut().expect("created by the caller");
    let plan = layout(ops, comm.rank, comm.nranks)?;
    // Weak: the last reference to the handle must never be the worker's (dropping the
    // handle there would wait for the worker itself).
    let (handle, staged_ops, scalars) = (Arc::downgrade(comm), plan.ops, plan.staged_scalar);
    let work = Box::new(move |block: &mut [u8]| {
        let base = block.as_mut_ptr() as usize;
        let Some(h) = handle.upgrade() else {
            return Err("the communicator was destroyed".to_owned());
        };
        let ops: Vec<OpArgs> = staged_ops
            .iter()
            .zip(&scalars)
            .map(|(&a, &staged)| placed(a, base, staged))
            .collect();
        let ran = if answering {
            // Peers swap records before each op, see no usable one from this rank, and run
            // it over the communicator: so does this rank, op by op.
            ops.iter().try_for_each(|op| {
                crate::peer::exchange(&handle, &crate::peer::unusable_record())
                    .map_err(|m| Failure::new(ffi::INTERNAL_ERROR, m))?;
                h.with_comm(|c| crate::group::run_group(c, std::slice::from_ref(op)))
                    .map(drop)
            })
        } else {
            h.with_comm(|c| crate::group::run_group(c, &ops)).map(drop)
        };
        ran.map_err(|e| {
            h.record_async_error(&e);
            e.message
        })
    });
    // SAFETY: every copy's user range was checked when its op was issued (non-null,
    // aligned, sized by NCCL's rules) and the program keeps it valid until the stream ran
    // the op (NCCL's contract); the streams are the program's, of this context.
    let done = unsafe { queue.enqueue(plan.bytes, &plan.copy_in, &plan.copy_out, &streams, work) }
        .map_err(cuda_failure)?;
    match done {
        Enqueued::Queued | Enqueued::Ran(Ok(())) => Ok(ffi::SUCCESS),
        Enqueued::Ran(Err(message)) => Err(Failure::new(ffi::INTERNAL_ERROR, message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, send: usize, recv: usize, count: usize, root: u32) -> OpArgs {
        OpArgs {
            stream: 0x77,
            on_device: true,
            ..OpArgs::example(kind, send, recv, count, root)
        }
    }

    /// In-place ops stay in place on the staging block, with their inner offsets; only
    /// what the op reads is copied in, only what it writes copied out.
    #[test]
    fn in_place_ops_keep_their_offsets() {
        // All-gather on rank 2 of 4, 10 floats each: input at recvbuff + 80.
        let a = op(Kind::AllGather, 0x10_0000 + 80, 0x10_0000, 10, 0);
        let l = layout(&[a], 2, 4).unwrap();
        let s = placed(l.ops[0], 0x9000_0000, false);
        let at = 0x9000_0000 + l.copy_out[0].offset;
        assert_eq!((s.recv, s.send), (at, at + 80));
        assert_eq!(
            s.bufs(2, 4, None).unwrap(),
            Bufs::InPlace { buf: at, len: 40 }
        );
        assert_eq!(l.copy_in.len(), 1);
        assert_eq!(l.copy_out.len(), 1);
        assert_eq!((l.copy_out[0].user, l.copy_out[0].bytes), (0x10_0000, 160));
        assert_eq!(l.copy_out[0].stream, RawStream(0x77));
    }

    /// Separate buffers get separate regions that can never look in place, and only the
    /// used ones are copied: the input in, the output out.
    #[test]
    fn split_ops_copy_inputs_in_and_outputs_out() {
        // Reduce-scatter on rank 1 of 4: 40 floats in, 10 out.
        let a = op(Kind::ReduceScatter, 0x1000_0000, 0x2000_0000, 10, 0);
        let l = layout(&[a], 1, 4).unwrap();
        let s = placed(l.ops[0], 0x9000_0000, false);
        assert!(matches!(
            s.bufs(1, 4, None).unwrap(),
            Bufs::Split {
                send_len: 40,
                recv_len: 10,
                ..
            }
        ));
        assert_eq!(s.send % REGION_ALIGN, 0);
        assert!(s.recv >= s.send + 160);
        assert_eq!((l.copy_in[0].user, l.copy_in[0].bytes), (0x1000_0000, 160));
        assert_eq!((l.copy_out[0].user, l.copy_out[0].bytes), (0x2000_0000, 40));
        // A receive copies nothing in; a send nothing out.
        let l = layout(
            &[
                op(Kind::Recv, 0, 0x3000_0000, 5, 0),
                op(Kind::Send, 0x4000_0000, 0, 5, 0),
            ],
            1,
            2,
        )
        .unwrap();
        assert_eq!(l.copy_in.len(), 1);
        assert_eq!(l.copy_in[0].user, 0x4000_0000);
        assert_eq!(l.copy_out.len(), 1);
        assert_eq!(l.copy_out[0].user, 0x3000_0000);
        assert!(l.bytes >= 2 * REGION_ALIGN);
    }

    /// A non-root rank of an in-place reduce leaves its buffer alone.
    #[test]
    fn non_root_reduce_copies_nothing_back() {
        let a = op(Kind::Reduce, 0x1000_0000, 0x1000_0000, 8, 0);
        let l = layout(&[a], 1, 2).unwrap();
        assert_eq!(l.copy_in.len(), 1);
        assert!(l.copy_out.is_empty());
        let l = layout(&[a], 0, 2).unwrap();
        assert_eq!(l.copy_out.len(), 1);
    }

    /// Every region fits in the block, none overlaps another, and no staged buffer is at
    /// offset 0 (which would read as "no buffer").
    #[test]
    fn regions_fit_and_do_not_overlap() {
        let ops = [
            op(Kind::AllReduce, 0x1000, 0x1000, 1000, 0),
            op(Kind::AllGather, 0x5000, 0x9000, 3, 0),
            op(Kind::Send, 0x7000, 0, 5, 1),
        ];
        let l = layout(&ops, 1, 3).unwrap();
        let mut regions: Vec<(usize, usize)> = l
            .copy_in
            .iter()
            .chain(&l.copy_out)
            .map(|c| (c.offset, c.offset + c.bytes))
            .collect();
        regions.sort();
        regions.dedup();
        assert!(regions.iter().all(|&(a, b)| a > 0 && b <= l.bytes));
        assert!(regions.windows(2).all(|w| w[0].1 <= w[1].0), "{regions:?}");
        assert!(l.ops.iter().all(|o| o.send != 0 || o.kind == Kind::Recv));
    }
}
