//! Ops on GPU buffers, in the order of the program's CUDA streams, through pinned host memory.
//!
//! oxccl's engine reduces and moves host memory, so an op whose buffers are GPU memory
//! runs in three parts, each ordered on the op's own `cudaStream_t` as NCCL orders its
//! kernels:
//! 1. on the stream: copy the inputs into a pinned staging block, then an event;
//! 2. on this communicator's worker thread: wait for that event (the stream's earlier work
//!    and the copies), run the ops as one oxccl group on the staging block, then raise the
//!    communicator's flag to the job's number;
//! 3. on the stream, enqueued at once behind a wait on the flag (`cuStreamWaitValue64`):
//!    copy the outputs back, then an event that frees the staging block for reuse.
//!
//! So `ncclAllReduce` returns as soon as the work is enqueued, work the program enqueues
//! after it waits for it, and the ops of one `ncclGroupEnd` run as one job (one event per
//! stream, one oxccl group, one flag). Where the driver refuses stream waits on host memory,
//! the calling thread runs part 2 itself before enqueueing part 3 (correct, but blocking).
//!
//! A failed job still raises the flag, so streams never hang on it; the failure is kept for
//! `ncclCommGetAsyncError`, which is how NCCL reports failures of enqueued work too.

use crate::error::{CResult, Failure};
use crate::ffi;
use crate::handle::CommHandle;
use crate::ops::{Bufs, Kind, OpArgs};
use crate::types::{RedOp, Scalar};
use oxccl_transports::cuda::stream::{
    self as cuda, ContextGuard, Event, Flag, Pinned, RawContext, RawStream,
};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Staging blocks are rounded up to this (fewer distinct sizes, more reuse).
const BLOCK_GRANULE: usize = 2 << 20;
/// Alignment of each region inside a block (covers every datatype and 16-byte vectors).
const REGION_ALIGN: usize = 256;

/// What a communicator keeps for its GPU ops (created with its first one).
pub struct Staging {
    ctx: RawContext,
    flag: Arc<Flag>,
    /// The number of the last job enqueued (the flag reaches it when the job is done).
    seq: u64,
    pool: Vec<Block>,
    /// `None`: the driver refused stream waits on host memory, jobs run on the caller.
    worker: Option<Worker>,
}

/// A staging block and the events after the copies that last used it (one per stream).
struct Block {
    mem: Pinned,
    released: Vec<Event>,
}

impl Block {
    fn idle(&self) -> bool {
        self.released.iter().all(Event::is_complete)
    }
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

/// Part 2 of a GPU group: what the worker runs.
struct Job {
    comm: Arc<CommHandle>,
    ctx: RawContext,
    ops: Vec<OpArgs>,
    inputs_ready: Vec<Event>,
    flag: Arc<Flag>,
    seq: u64,
}

/// One copy between the program's buffer and the staging block, on the op's stream.
struct Copy {
    user: usize,
    staged: usize,
    bytes: usize,
    stream: RawStream,
}

/// A group's ops rewritten onto the staging block, and the copies around them.
struct Layout {
    ops: Vec<OpArgs>,
    copy_in: Vec<Copy>,
    copy_out: Vec<Copy>,
    bytes: usize,
}

fn cuda_failure(e: oxccl_transports::Error) -> Failure {
    Failure::new(ffi::UNHANDLED_CUDA_ERROR, e.to_string())
}

/// Lays `ops` (on `rank` of `nranks`) out in one staging block starting at `base` (0 to
/// only measure). Staged regions never overlap, so an op is in place on the staging block
/// exactly when it was in place on the program's buffers.
fn layout(ops: &[OpArgs], rank: u32, nranks: u32, base: usize) -> CResult<Layout> {
    let mut out = Layout {
        ops: Vec::with_capacity(ops.len()),
        copy_in: Vec::new(),
        copy_out: Vec::new(),
        bytes: 0,
    };
    let mut used = 0usize;
    let mut take = |bytes: usize| {
        let at = used;
        used += bytes.next_multiple_of(REGION_ALIGN);
        base + at
    };
    for a in ops {
        let size = a.dtype.size();
        let stream = RawStream(a.stream);
        let copy = |user, staged, bytes| Copy {
            user,
            staged,
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
                out.copy_in.push(copy(buf, at, bytes));
                // A non-root reduce has no output; its buffer stays as the program left it.
                if !(a.kind == Kind::Reduce && rank != a.root) {
                    out.copy_out.push(copy(buf, at, bytes));
                }
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
        out.ops.push(staged);
    }
    out.bytes = used;
    out.copy_in.retain(|c| c.bytes > 0);
    out.copy_out.retain(|c| c.bytes > 0);
    Ok(out)
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

/// The first buffer address of the group (to find its context on the default stream).
fn some_buffer(ops: &[OpArgs]) -> usize {
    ops.iter()
        .flat_map(|a| [a.send, a.recv])
        .find(|&p| p != 0)
        .unwrap_or(0)
}

/// Enqueues one communicator's group of ops, some of whose buffers are GPU memory, on their
/// streams (see the module documentation).
pub fn enqueue(comm: &Arc<CommHandle>, ops: &[OpArgs]) -> CResult {
    let first = RawStream(ops.first().map_or(0, |a| a.stream));
    let ctx = cuda::stream_context(first, some_buffer(ops)).map_err(cuda_failure)?;
    let _current = ContextGuard::push(ctx).map_err(cuda_failure)?;
    let mut guard = comm.staging();
    if guard.is_none() {
        *guard = Some(Staging::new(ctx, comm.rank)?);
    }
    let st = guard.as_mut().expect("created above");
    if st.ctx != ctx {
        return Err(Failure::invalid(
            "this communicator's GPU ops use buffers or streams of two CUDA contexts (devices)",
        ));
    }
    let measured = layout(ops, comm.rank, comm.nranks, 0)?;
    let block = st.acquire(measured.bytes)?;
    let plan = layout(ops, comm.rank, comm.nranks, block.mem.addr())?;
    let streams = streams(ops);

    // Part 1: the inputs, then an event per stream.
    let mut inputs_ready = Vec::with_capacity(streams.len());
    let enqueued = (|| -> oxccl_transports::Result<()> {
        for c in &plan.copy_in {
            // SAFETY: the program's buffer holds `bytes` (checked when the op was issued) and
            // stays valid until the stream has run the copy (NCCL's contract); the staging
            // region is inside `block`, which is not reused before its release events.
            unsafe { cuda::copy_async(c.staged, c.user, c.bytes, c.stream)? };
        }
        for &s in &streams {
            let e = Event::new()?;
            // SAFETY: the op's stream, of the context made current above.
            unsafe { e.record(s)? };
            inputs_ready.push(e);
        }
        Ok(())
    })();
    if let Err(e) = enqueued {
        st.pool.push(block);
        return Err(cuda_failure(e));
    }
    st.seq += 1;
    let seq = st.seq;

    // Part 3's wait first: if the driver refuses it, part 2 runs here instead.
    let mut waiting = true;
    if st.worker.is_some() {
        for &s in &streams {
            // SAFETY: the op's stream, of the current context; the flag outlives the wait
            // (Staging's drop waits for every release event, enqueued after these waits).
            if let Err(e) = unsafe { st.flag.wait(s, seq) } {
                tracing::warn!(
                    error = %e,
                    "streams cannot wait on host memory here: GPU ops block the calling thread"
                );
                st.stop_worker();
                waiting = false;
                break;
            }
        }
    } else {
        waiting = false;
    }
    let job = Job {
        comm: comm.clone(),
        ctx,
        ops: plan.ops,
        inputs_ready,
        flag: st.flag.clone(),
        seq,
    };
    let mut result = Ok(ffi::SUCCESS);
    match (&st.worker, waiting) {
        (Some(w), true) => {
            if let Err(mpsc::SendError(job)) = w.jobs.send(job) {
                // The worker is gone (it never exits first); run here rather than hang.
                result = job.run();
            }
        }
        _ => result = job.run(),
    }

    // Part 3: the outputs, then the events that free the block.
    let mut block = block;
    let finished = (|| -> oxccl_transports::Result<()> {
        for c in &plan.copy_out {
            // SAFETY: as for the inputs; the copy runs after the flag wait (or after the job
            // ran on this thread), so it reads the results.
            unsafe { cuda::copy_async(c.user, c.staged, c.bytes, c.stream)? };
        }
        for &s in &streams {
            let e = Event::new()?;
            // SAFETY: the op's stream, of the current context.
            unsafe { e.record(s)? };
            block.released.push(e);
        }
        Ok(())
    })();
    if let Err(e) = finished {
        // The block may still be read by copies already enqueued: wait for the streams
        // before giving it back.
        for &s in &streams {
            if let Ok(e) = Event::new() {
                // SAFETY: as above.
                if unsafe { e.record(s) }.is_ok() {
                    let _ = e.synchronize();
                }
            }
        }
        st.pool.push(block);
        return Err(cuda_failure(e));
    }
    st.pool.push(block);
    result
}

impl Staging {
    fn new(ctx: RawContext, rank: u32) -> CResult<Self> {
        let flag = Arc::new(Flag::new().map_err(cuda_failure)?);
        let blocking = std::env::var("OXCCL_CUDA_BLOCKING").is_ok_and(|v| v == "1");
        let worker = if blocking {
            None
        } else {
            let (jobs, rx) = mpsc::channel::<Job>();
            let thread = std::thread::Builder::new()
                .name(format!("oxccl-gpu-{rank}"))
                .spawn(move || {
                    for job in rx {
                        let _ = job.run();
                    }
                })
                .map_err(|e| {
                    Failure::new(
                        ffi::SYSTEM_ERROR,
                        format!("cannot start the GPU ops thread: {e}"),
                    )
                })?;
            Some(Worker { jobs, thread })
        };
        Ok(Self {
            ctx,
            flag,
            seq: 0,
            pool: Vec::new(),
            worker,
        })
    }

    /// An idle block of at least `bytes` (taken out of the pool), else a new one; idle
    /// blocks too small are freed on the way.
    fn acquire(&mut self, bytes: usize) -> CResult<Block> {
        if let Some(i) = self
            .pool
            .iter()
            .position(|b| b.mem.len() >= bytes && b.idle())
        {
            let mut b = self.pool.swap_remove(i);
            b.released.clear();
            return Ok(b);
        }
        self.pool.retain(|b| !b.idle());
        let size = bytes.max(1).next_multiple_of(BLOCK_GRANULE);
        let mem = Pinned::new(size).map_err(cuda_failure)?;
        Ok(Block {
            mem,
            released: Vec::new(),
        })
    }

    /// Ends the worker after the jobs already sent to it.
    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            drop(w.jobs);
            let _ = w.thread.join();
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.stop_worker();
        // Every job's flag is raised now; the streams may still be behind, reading the flag
        // or a block: wait for each block's last copies (enqueued after the flag waits).
        let ctx = ContextGuard::push(self.ctx);
        for b in &self.pool {
            for e in &b.released {
                let _ = e.synchronize();
            }
        }
        drop(ctx);
    }
}

impl Job {
    /// Part 2: waits for the inputs, runs the ops as one oxccl group, raises the flag (also
    /// on failure, which `ncclCommGetAsyncError` then reports).
    fn run(mut self) -> CResult {
        let result = (|| {
            let _current = ContextGuard::push(self.ctx).map_err(cuda_failure)?;
            for e in &self.inputs_ready {
                e.synchronize().map_err(cuda_failure)?;
            }
            for a in &mut self.ops {
                read_device_scalar(a)?;
            }
            self.comm
                .with_comm(|c| crate::group::run_group(c, &self.ops))
        })();
        if let Err(e) = &result {
            self.comm.record_async_error(e);
            tracing::error!(rank = self.comm.rank, error = %e.message, "GPU op failed");
        }
        self.flag.raise(self.seq);
        result
    }
}

/// A PreMulSum scalar that lives in GPU memory, read now (after the stream's earlier work,
/// as NCCL reads it).
fn read_device_scalar(a: &mut OpArgs) -> CResult<()> {
    let RedOp::PreMul(Scalar::At(p)) = a.op else {
        return Ok(());
    };
    if !crate::device_ptr::is_device_memory(p) {
        return Ok(());
    }
    let mut bytes = [0u8; 8];
    let n = a.dtype.size().min(8);
    // SAFETY: the scalar's address given to ncclRedOpCreatePreMulSum, one element, valid
    // while ops use the operator (NCCL's contract); the context is current (Job::run).
    unsafe { cuda::read(p, &mut bytes[..n]) }.map_err(cuda_failure)?;
    a.op = RedOp::PreMul(Scalar::Value(crate::types::scalar_bytes(
        a.dtype,
        &bytes[..n],
    )));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl::DataType;

    fn op(kind: Kind, send: usize, recv: usize, count: usize, root: u32) -> OpArgs {
        OpArgs {
            kind,
            send,
            recv,
            count,
            dtype: DataType::Float32,
            op: RedOp::Builtin(oxccl::ReduceOp::Sum),
            root,
            stream: 0x77,
            on_device: true,
        }
    }

    /// In-place ops stay in place on the staging block, with their inner offsets; the
    /// whole buffer is copied in and out.
    #[test]
    fn in_place_ops_keep_their_offsets() {
        // All-gather on rank 2 of 4, 10 floats each: input at recvbuff + 80.
        let a = op(Kind::AllGather, 0x10_0000 + 80, 0x10_0000, 10, 0);
        let l = layout(&[a], 2, 4, 0x9000_0000).unwrap();
        let s = l.ops[0];
        assert_eq!((s.recv, s.send), (0x9000_0000, 0x9000_0000 + 80));
        assert_eq!(
            s.bufs(2, 4, None).unwrap(),
            Bufs::InPlace {
                buf: 0x9000_0000,
                len: 40
            }
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
        let l = layout(&[a], 1, 4, 0x9000_0000).unwrap();
        let s = l.ops[0];
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
            0x9000_0000,
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
        let l = layout(&[a], 1, 2, 0x9000_0000).unwrap();
        assert_eq!(l.copy_in.len(), 1);
        assert!(l.copy_out.is_empty());
        let l = layout(&[a], 0, 2, 0x9000_0000).unwrap();
        assert_eq!(l.copy_out.len(), 1);
    }

    /// Measuring (base 0) and placing give the same sizes, so the block always fits.
    #[test]
    fn measured_size_matches_the_placed_one() {
        let ops = [
            op(Kind::AllReduce, 0x1000, 0x1000, 1000, 0),
            op(Kind::AllGather, 0x5000, 0x9000, 3, 0),
        ];
        let measured = layout(&ops, 1, 3, 0).unwrap();
        let placed = layout(&ops, 1, 3, 0x7000_0000).unwrap();
        assert_eq!(measured.bytes, placed.bytes);
        let last = placed.copy_out.iter().map(|c| c.staged + c.bytes).max();
        assert!(last.unwrap() <= 0x7000_0000 + placed.bytes);
    }
}
