//! Host work ordered on CUDA streams: the engine behind collectives on GPU buffers.
//!
//! A job is host work (a collective on oxccl's host engine) whose inputs live in GPU memory
//! and whose outputs must land there, in the order of the program's streams, without the
//! enqueuing thread waiting. [`OrderedQueue::enqueue`] splits it in three:
//! 1. on the streams: copy the inputs into a pinned staging block, then an event each;
//! 2. on the queue's worker thread: wait for those events, run the work on the block, then
//!    raise the queue's counter (a [`Flag`]) to the job's number;
//! 3. on the streams, enqueued at once behind a wait on the counter: copy the outputs back,
//!    then an event each, after which the block may be reused.
//!
//! A failed job still raises the counter, so no stream hangs on it; the work reports its
//! own failure (the NCCL C ABI keeps it for `ncclCommGetAsyncError`). Where the driver
//! refuses stream waits on host memory, or `OXCCL_CUDA_BLOCKING=1`, the enqueuing thread
//! runs part 2 itself before enqueueing part 3.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::stream::{self, ContextGuard, Event, Flag, Pinned, RawContext, RawStream};
use crate::{Error, Result};

/// Staging blocks are rounded up to this (fewer distinct sizes, more reuse).
const BLOCK_GRANULE: usize = 2 << 20;
/// Alignment of each region inside a block (every datatype, 16-byte vectors).
pub const REGION_ALIGN: usize = 256;

/// Host work on a staging block: gets the whole block, returns why it failed.
pub type Work = Box<dyn FnOnce(&mut [u8]) -> std::result::Result<(), String> + Send>;

/// One copy between a program's buffer and a region of the staging block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// The program's address (device, pinned or pageable host memory).
    pub user: usize,
    /// Where in the block.
    pub offset: usize,
    /// How many bytes.
    pub bytes: usize,
    /// The stream that orders the copy.
    pub stream: RawStream,
}

/// What [`OrderedQueue::enqueue`] did with the work.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Handed to the worker; part 3 waits for it on the streams.
    Queued,
    /// Run on the calling thread (blocking mode), with its result.
    Ran(std::result::Result<(), String>),
}

/// A staging block and the events after the copies that last used it.
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

/// Part 2 of a job.
struct Job {
    ctx: RawContext,
    inputs_ready: Vec<Event>,
    block: usize,
    bytes: usize,
    work: Work,
    flag: Arc<Flag>,
    seq: u64,
    aborting: Arc<AtomicBool>,
}

/// Raises the counter when dropped: a job that fails, panics or is skipped still releases
/// the streams waiting for it.
struct RaiseOnDrop(Arc<Flag>, u64);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.raise(self.1);
    }
}

/// Jobs ordered on the streams of one CUDA context, run one at a time in enqueue order.
pub struct OrderedQueue {
    ctx: RawContext,
    /// `None` only while dropping.
    flag: Option<Arc<Flag>>,
    /// The number of the last job enqueued.
    seq: u64,
    pool: Vec<Block>,
    /// `None`: jobs run on the enqueuing thread.
    worker: Option<Worker>,
    /// Set by [`OrderedQueue::abort`]: queued jobs are skipped.
    aborting: Arc<AtomicBool>,
}

impl std::fmt::Debug for OrderedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderedQueue")
            .field("ctx", &self.ctx)
            .field("seq", &self.seq)
            .field("blocks", &self.pool.len())
            .field("blocking", &self.worker.is_none())
            .finish()
    }
}

/// Waits, without holding the queue, until every job enqueued so far has run.
#[derive(Debug, Clone)]
pub struct IdleWait {
    flag: Arc<Flag>,
    seq: u64,
}

impl IdleWait {
    /// Polls until the jobs ran (`true`) or `stop()` says to give up (`false`).
    pub fn wait(&self, stop: impl Fn() -> bool) -> bool {
        let mut pause = std::time::Duration::from_micros(1);
        while self.flag.value() < self.seq {
            if stop() {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_micros(500));
        }
        true
    }
}

impl OrderedQueue {
    /// A queue for streams of `ctx`, whose worker thread is called `name`.
    pub fn new(ctx: RawContext, name: &str) -> Result<Self> {
        let _current = ContextGuard::push(ctx)?;
        let flag = Arc::new(Flag::new()?);
        let blocking = std::env::var("OXCCL_CUDA_BLOCKING").is_ok_and(|v| v == "1");
        let worker = if blocking {
            None
        } else {
            let (jobs, rx) = mpsc::channel::<Job>();
            let thread = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    for job in rx {
                        let _ = job.run();
                    }
                })
                .map_err(|e| Error::Config(format!("cannot start thread {name}: {e}")))?;
            Some(Worker { jobs, thread })
        };
        Ok(Self {
            ctx,
            flag: Some(flag),
            seq: 0,
            pool: Vec::new(),
            worker,
            aborting: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The context whose streams this queue orders.
    pub fn context(&self) -> RawContext {
        self.ctx
    }

    fn flag(&self) -> &Arc<Flag> {
        self.flag.as_ref().expect("present until drop")
    }

    /// A wait for the jobs enqueued so far, to run without holding the queue.
    pub fn idle_wait(&self) -> IdleWait {
        IdleWait {
            flag: self.flag().clone(),
            seq: self.seq,
        }
    }

    /// Enqueues a job: `copy_in` into a fresh `bytes`-byte staging block, `work` on it, then
    /// `copy_out`, each ordered on `streams` (every stream of the copies, and any stream the
    /// job must order without copying).
    ///
    /// # Safety
    /// Each copy's `user` range must be valid for `bytes` until its stream has run the copy,
    /// and not be used meanwhile in a way that conflicts with it (NCCL's contract on
    /// buffers); the streams must be live streams of the queue's context.
    pub unsafe fn enqueue(
        &mut self,
        bytes: usize,
        copy_in: &[Copy],
        copy_out: &[Copy],
        streams: &[RawStream],
        work: Work,
    ) -> Result<Enqueued> {
        let _current = ContextGuard::push(self.ctx)?;
        if let Some(c) = copy_in
            .iter()
            .chain(copy_out)
            .find(|c| c.offset + c.bytes > bytes)
        {
            return Err(Error::Config(format!(
                "staging copy of {} bytes at offset {} overruns a {bytes}-byte block",
                c.bytes, c.offset
            )));
        }
        for &s in streams {
            // SAFETY: a live stream of the current context (this function's contract).
            if unsafe { stream::is_capturing(s)? } {
                return Err(Error::Config(format!(
                    "stream {:#x} is being captured into a CUDA graph: oxccl's collectives on \
                     GPU buffers run host work and cannot be captured",
                    s.0
                )));
            }
        }
        let block = self.acquire(bytes)?;
        let base = block.mem.addr();

        // Part 1.
        let mut inputs_ready = Vec::with_capacity(streams.len());
        let enqueued = (|| -> Result<()> {
            for c in copy_in {
                // SAFETY: the program's range is valid (this function's contract); the block
                // holds the region (checked above) and is ours until its release events.
                unsafe { stream::copy_async(base + c.offset, c.user, c.bytes, c.stream)? };
            }
            for &s in streams {
                let e = Event::new()?;
                // SAFETY: a live stream of the current context (this function's contract).
                unsafe { e.record(s)? };
                inputs_ready.push(e);
            }
            Ok(())
        })();
        if let Err(e) = enqueued {
            self.give_back(block, streams);
            return Err(e);
        }
        self.seq += 1;
        let job = Job {
            ctx: self.ctx,
            inputs_ready,
            block: base,
            bytes,
            work,
            flag: self.flag().clone(),
            seq: self.seq,
            aborting: self.aborting.clone(),
        };

        // Part 3's waits first: if the driver refuses them, part 2 runs here instead.
        let mut queued = false;
        if self.worker.is_some() {
            queued = true;
            for &s in streams {
                // SAFETY: a live stream of the current context; the flag outlives the wait
                // (drop waits for every release event, enqueued after these waits, or leaks
                // the flag).
                if let Err(e) = unsafe { self.flag().wait(s, self.seq) } {
                    tracing::warn!(
                        error = %e,
                        "streams cannot wait on host memory here: GPU collectives block the \
                         calling thread"
                    );
                    self.stop_worker();
                    queued = false;
                    break;
                }
            }
        }
        let outcome = match (&self.worker, queued) {
            (Some(w), true) => match w.jobs.send(job) {
                Ok(()) => Enqueued::Queued,
                // The worker only ends with the queue; run here rather than hang a stream.
                Err(mpsc::SendError(job)) => Enqueued::Ran(job.run()),
            },
            _ => Enqueued::Ran(job.run()),
        };

        // Part 3. A failure here is logged, not returned: the job is enqueued or ran, so the
        // caller must not issue it again (the other ranks would not match it).
        let mut block = block;
        let finished = (|| -> Result<()> {
            for c in copy_out {
                // SAFETY: as for the inputs; the copy runs after the wait on the counter (or
                // after the work ran on this thread), so it reads the results.
                unsafe { stream::copy_async(c.user, base + c.offset, c.bytes, c.stream)? };
            }
            for &s in streams {
                let e = Event::new()?;
                // SAFETY: as above.
                unsafe { e.record(s)? };
                block.released.push(e);
            }
            Ok(())
        })();
        match finished {
            Ok(()) => self.pool.push(block),
            Err(e) => {
                tracing::error!(error = %e, "copying a collective's results back failed");
                self.give_back(block, streams);
                if outcome == Enqueued::Queued {
                    return Ok(Enqueued::Ran(Err(format!(
                        "copying the results back failed: {e}"
                    ))));
                }
            }
        }
        Ok(outcome)
    }

    /// Returns a block after a failure, once the streams are past every copy enqueued so far.
    fn give_back(&mut self, mut block: Block, streams: &[RawStream]) {
        block.released.clear();
        for &s in streams {
            if let Ok(e) = Event::new() {
                // SAFETY: a live stream of the current context (enqueue's contract).
                if unsafe { e.record(s) }.is_ok() {
                    block.released.push(e);
                }
            }
        }
        self.pool.push(block);
    }

    /// An idle block of at least `bytes`, else a new one (idle blocks too small are freed).
    fn acquire(&mut self, bytes: usize) -> Result<Block> {
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
        let mem = Pinned::new(bytes.max(1).next_multiple_of(BLOCK_GRANULE))?;
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

    /// Ends the queue at once: queued jobs are skipped (their streams released, their
    /// outputs undefined), and memory the streams may still use is left allocated rather
    /// than waited for (a stream may be stuck behind another communicator's work).
    pub fn abort(self) {
        self.aborting.store(true, Ordering::SeqCst);
        drop(self);
    }
}

impl Drop for OrderedQueue {
    fn drop(&mut self) {
        self.stop_worker();
        let flag = self.flag.take();
        let Ok(_current) = ContextGuard::push(self.ctx) else {
            // The context is gone (device reset): so is everything allocated in it.
            std::mem::forget(flag);
            std::mem::forget(std::mem::take(&mut self.pool));
            return;
        };
        if let Some(f) = &flag {
            f.raise(self.seq);
        }
        let aborting = self.aborting.load(Ordering::SeqCst);
        // The streams may still be behind, reading the counter or a block. Normally wait
        // for each block's last copies (they follow the counter waits); when aborting, keep
        // what they may still touch allocated for the life of the process instead.
        let mut busy = false;
        for b in std::mem::take(&mut self.pool) {
            let done = if aborting {
                b.idle()
            } else {
                b.released.iter().all(|e| e.synchronize().is_ok())
            };
            if done {
                drop(b);
            } else {
                busy = true;
                std::mem::forget(b.mem);
            }
        }
        if busy {
            std::mem::forget(flag);
        } else {
            drop(flag);
        }
    }
}

impl Job {
    /// Part 2: waits for the inputs, runs the work, raises the counter whatever happened.
    fn run(self) -> std::result::Result<(), String> {
        let _raise = RaiseOnDrop(self.flag.clone(), self.seq);
        let current = ContextGuard::push(self.ctx).map_err(|e| e.to_string())?;
        let aborting = &self.aborting;
        let stop = || aborting.load(Ordering::Relaxed);
        for e in &self.inputs_ready {
            match e.wait_polling(stop) {
                Ok(true) => {}
                Ok(false) => return Err("aborted before its inputs were ready".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
        if stop() {
            return Err("aborted".into());
        }
        let (block, bytes, work) = (self.block, self.bytes, self.work);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            // SAFETY: the block's `bytes` are allocated (acquire) and only this job touches
            // them now: the inputs' copies are done (events above) and the outputs' copies
            // wait for the counter, raised after this.
            let block = unsafe { std::slice::from_raw_parts_mut(block as *mut u8, bytes) };
            work(block)
        }))
        .unwrap_or_else(|_| Err("the job panicked".into()));
        if let Err(e) = &result {
            tracing::error!(error = %e, "a stream-ordered job failed");
        }
        // The input events are destroyed with their context current.
        drop(self.inputs_ready);
        drop(current);
        result
    }
}

/// A cudarc buffer of a job, and which way it is staged.
#[derive(Debug)]
pub enum Region<'a, T> {
    /// Read by the work: copied in.
    In(&'a cudarc::driver::CudaSlice<T>),
    /// Written by the work: copied out.
    Out(&'a mut cudarc::driver::CudaSlice<T>),
    /// Read and written: copied in and out.
    InOut(&'a mut cudarc::driver::CudaSlice<T>),
}

impl OrderedQueue {
    /// [`enqueue`](Self::enqueue) for cudarc buffers on one cudarc stream, safely: `work`
    /// gets one staged byte region per entry of `regions`, in order (inputs filled, outputs
    /// to fill). cudarc's own event tracking orders the copies against the buffers' other
    /// uses on other streams, and against their frees.
    pub fn enqueue_slices<T: cudarc::driver::DeviceRepr>(
        &mut self,
        stream: &cudarc::driver::CudaStream,
        regions: &mut [Region<'_, T>],
        work: impl FnOnce(Vec<&mut [u8]>) -> std::result::Result<(), String> + Send + 'static,
    ) -> Result<Enqueued> {
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        if RawContext::of(stream.context()) != self.ctx {
            return Err(Error::Config(
                "the stream belongs to another CUDA context than this queue's".into(),
            ));
        }
        let raw = RawStream(stream.cu_stream() as usize);
        let size = std::mem::size_of::<T>();
        let mut sizes = Vec::with_capacity(regions.len());
        let (mut copy_in, mut copy_out) = (Vec::new(), Vec::new());
        // The guards record, when dropped after the enqueue, that `stream` used the buffers.
        let mut guards = Vec::with_capacity(regions.len());
        let mut offset = 0;
        for r in regions.iter_mut() {
            let (ptr, guard, bytes, input, output) = match r {
                Region::In(s) => {
                    let (p, g) = s.device_ptr(stream);
                    (p, g, s.len() * size, true, false)
                }
                Region::Out(s) => {
                    let bytes = s.len() * size;
                    let (p, g) = s.device_ptr_mut(stream);
                    (p, g, bytes, false, true)
                }
                Region::InOut(s) => {
                    let bytes = s.len() * size;
                    let (p, g) = s.device_ptr_mut(stream);
                    (p, g, bytes, true, true)
                }
            };
            let copy = Copy {
                user: ptr as usize,
                offset,
                bytes,
                stream: raw,
            };
            if input && bytes > 0 {
                copy_in.push(copy);
            }
            if output && bytes > 0 {
                copy_out.push(copy);
            }
            guards.push(guard);
            sizes.push((offset, bytes));
            offset += bytes.next_multiple_of(REGION_ALIGN);
        }
        let split = Box::new(move |block: &mut [u8]| {
            let mut parts = Vec::with_capacity(sizes.len());
            let mut rest = block;
            let mut at = 0;
            for (offset, bytes) in sizes {
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(offset - at);
                let (part, tail) = tail.split_at_mut(bytes);
                parts.push(part);
                rest = tail;
                at = offset + bytes;
            }
            work(parts)
        });
        // SAFETY: every range is a live cudarc buffer of `bytes`; `device_ptr(_mut)` made
        // `stream` wait for its earlier writes, and the guards (dropped below, after the
        // copies are enqueued) make its later uses and its free wait for `stream`; the
        // stream is of this queue's context (checked above).
        let r = unsafe { self.enqueue(offset.max(1), &copy_in, &copy_out, &[raw], split) };
        drop(guards);
        r
    }
}
