//! Communicator handles: what an `ncclComm_t` points to, and the registry of live ones.
//!
//! An `ncclComm_t` is the address of a [`CommHandle`] held in an `Arc` by the registry, so a
//! call with a destroyed or made-up handle fails with `ncclInvalidArgument` instead of
//! touching freed memory, and a handle stays alive while a call on another thread uses it.
//! The [`Communicator`] sits behind a mutex: NCCL does not allow concurrent calls on one
//! communicator, and the mutex turns a program that does it anyway into serialised calls.

use crate::error::{CResult, Failure};
use crate::ffi;
use crate::types::RedOp;
use oxccl::{AbortHandle, Communicator, DataType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// The opaque C type behind `ncclComm_t`.
pub enum NcclComm {}

/// `ncclComm_t`.
pub type CommPtr = *mut NcclComm;

/// Where a communicator stands.
enum State {
    /// A non-blocking init still running on its thread.
    Initializing(JoinHandle<oxccl::Result<Communicator>>),
    /// Usable.
    Ready(Box<Communicator>),
    /// Init failed (or the communicator was aborted): every call reports this.
    Failed(Failure),
}

/// A PreMulSum operator created by `ncclRedOpCreatePreMulSum`.
#[derive(Debug, Clone, Copy)]
pub struct PreMul {
    /// The datatype it was created for.
    pub dtype: DataType,
    /// The scalar, or where to read it.
    pub scalar: crate::types::Scalar,
}

/// One rank of a communicator, as the C API sees it.
pub struct CommHandle {
    /// This rank.
    pub rank: u32,
    /// Number of ranks.
    pub nranks: u32,
    /// What `ncclCommCuDevice` reports: `ncclCommInitAll`'s device of this rank, else 0.
    pub device: std::sync::atomic::AtomicI32,
    state: Mutex<State>,
    abort: Mutex<Option<AbortHandle>>,
    /// The first failure of an operation (for `ncclCommGetAsyncError`).
    async_error: Mutex<Option<Failure>>,
    /// PreMulSum operators; operator `ncclNumOps + i` is entry `i`.
    redops: Mutex<Vec<Option<PreMul>>>,
    /// What GPU ops need (staging memory, the worker), from the first one on.
    staging: Mutex<GpuOps>,
}

/// A communicator's GPU ops.
#[derive(Default)]
pub struct GpuOps {
    /// Their queue, created with the first one.
    pub queue: Option<oxccl_transports::cuda::ordered::OrderedQueue>,
    /// Set by destroy, finalize and abort: no GPU op may be enqueued any more.
    pub closed: bool,
    /// Collectives through peers' GPU memory: `None` until the first GPU op decides
    /// (`OXCCL_CUDA_IPC=1` and every rank on this host), then the kernels once loaded.
    pub peer: Option<Option<crate::peer::PeerPath>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock was already reported; the data stays consistent
    // (every critical section is a plain replacement).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

static COMMS: Mutex<Option<HashMap<usize, Arc<CommHandle>>>> = Mutex::new(None);

impl CommHandle {
    /// A handle around a ready communicator.
    pub fn ready(comm: Communicator) -> Arc<Self> {
        let abort = comm.abort_handle();
        Arc::new(CommHandle {
            rank: comm.rank(),
            nranks: comm.size(),
            device: Default::default(),
            state: Mutex::new(State::Ready(Box::new(comm))),
            abort: Mutex::new(Some(abort)),
            async_error: Mutex::new(None),
            redops: Mutex::new(Vec::new()),
            staging: Mutex::new(GpuOps::default()),
        })
    }

    /// A handle whose communicator `init` creates on a background thread.
    pub fn initializing(
        rank: u32,
        nranks: u32,
        init: impl FnOnce() -> oxccl::Result<Communicator> + Send + 'static,
    ) -> CResult<Arc<Self>> {
        let thread = std::thread::Builder::new()
            .name(format!("oxccl-init-{rank}"))
            .spawn(init)
            .map_err(|e| {
                Failure::new(ffi::SYSTEM_ERROR, format!("cannot start init thread: {e}"))
            })?;
        Ok(Arc::new(CommHandle {
            rank,
            nranks,
            device: Default::default(),
            state: Mutex::new(State::Initializing(thread)),
            abort: Mutex::new(None),
            async_error: Mutex::new(None),
            redops: Mutex::new(Vec::new()),
            staging: Mutex::new(GpuOps::default()),
        }))
    }

    /// Adds the handle to the registry and returns its `ncclComm_t`.
    pub fn publish(self: Arc<Self>) -> CommPtr {
        let ptr = Arc::as_ptr(&self) as *mut NcclComm;
        lock(&COMMS)
            .get_or_insert_with(HashMap::new)
            .insert(ptr as usize, self);
        ptr
    }

    /// The live handle behind `ptr`.
    pub fn get(ptr: CommPtr) -> CResult<Arc<Self>> {
        if ptr.is_null() {
            return Err(Failure::invalid("comm is NULL"));
        }
        lock(&COMMS)
            .as_ref()
            .and_then(|m| m.get(&(ptr as usize)).cloned())
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "comm {ptr:p} is not a live communicator (destroyed?)"
                ))
            })
    }

    /// Removes `ptr` from the registry (destroy, abort); the handle itself goes once no
    /// call uses it.
    pub fn unpublish(ptr: CommPtr) -> CResult<Arc<Self>> {
        let h = Self::get(ptr)?;
        lock(&COMMS)
            .as_mut()
            .and_then(|m| m.remove(&(ptr as usize)));
        Ok(h)
    }

    /// Runs `f` on the communicator, waiting for a non-blocking init first. A failure that
    /// is not an argument error is kept for `ncclCommGetAsyncError`.
    pub fn with_comm<R>(&self, f: impl FnOnce(&mut Communicator) -> CResult<R>) -> CResult<R> {
        let mut state = lock(&self.state);
        self.settle(&mut state, true);
        match &mut *state {
            State::Ready(comm) => {
                let r = f(comm);
                if let Err(e) = &r {
                    if e.code != ffi::INVALID_ARGUMENT {
                        lock(&self.async_error).get_or_insert_with(|| e.clone());
                    }
                }
                r
            }
            State::Failed(f) => Err(Failure::invalid(format!(
                "communicator is in an error state: {}",
                f.message
            ))),
            State::Initializing(_) => Err(Failure::new(
                ffi::INTERNAL_ERROR,
                "init still running after waiting for it",
            )),
        }
    }

    /// Turns a finished (or, with `wait`, any) init into `Ready` or `Failed`.
    fn settle(&self, state: &mut State, wait: bool) {
        let State::Initializing(thread) = state else {
            return;
        };
        if !wait && !thread.is_finished() {
            return;
        }
        let State::Initializing(thread) = std::mem::replace(
            state,
            State::Failed(Failure::new(ffi::INTERNAL_ERROR, "init thread lost")),
        ) else {
            return;
        };
        *state = match thread.join() {
            Ok(Ok(comm)) => {
                *lock(&self.abort) = Some(comm.abort_handle());
                State::Ready(Box::new(comm))
            }
            Ok(Err(e)) => State::Failed(e.into()),
            Err(_) => State::Failed(Failure::new(ffi::INTERNAL_ERROR, "init thread panicked")),
        };
    }

    /// `ncclCommGetAsyncError`: `ncclInProgress` while a non-blocking init runs, then the
    /// init's failure, a rank found dead (`ncclRemoteError`) or the first failed operation's
    /// result, else `ncclSuccess`.
    pub fn async_error(&self) -> ffi::NcclResult {
        // A call in progress on another thread holds the state; it reports its own errors.
        if let Ok(mut state) = self.state.try_lock() {
            self.settle(&mut state, false);
            match &*state {
                State::Initializing(_) => return ffi::IN_PROGRESS,
                State::Failed(f) => return f.code,
                // A rank found dead by the watchdog while this one computes.
                State::Ready(comm) => {
                    if let Some(e) = comm.async_error() {
                        return crate::error::code_of(&e);
                    }
                }
            }
        }
        if let Some(f) = lock(&self.async_error).as_ref() {
            return f.code;
        }
        // A call in progress (a GPU op on the worker, say) holds the state: the watchdog's
        // verdict is read without it, so a dead peer is reported while the call still waits.
        if lock(&self.abort)
            .as_ref()
            .is_some_and(|a| a.dead_rank().is_some())
        {
            return ffi::REMOTE_ERROR;
        }
        ffi::SUCCESS
    }

    /// The state of this communicator's GPU ops.
    pub fn staging(&self) -> MutexGuard<'_, GpuOps> {
        lock(&self.staging)
    }

    /// Waits until the GPU ops enqueued so far have run, so that an op run on the calling
    /// thread (host buffers, split) comes after them on every rank, as it was issued.
    pub fn drain_gpu_ops(&self) {
        let wait = lock(&self.staging).queue.as_ref().map(|q| q.idle_wait());
        // Outside the lock: an abort on another thread must get it (and it releases the
        // wait by skipping the queued jobs).
        if let Some(w) = wait {
            w.wait(|| false);
        }
    }

    /// Keeps `e` for `ncclCommGetAsyncError` unless an earlier failure is kept.
    pub fn record_async_error(&self, e: &Failure) {
        lock(&self.async_error).get_or_insert_with(|| e.clone());
    }

    /// Closes the communicator to GPU ops. Without `abort`, waits for the ones enqueued
    /// (their worker ends after them) and frees their staging memory once the streams are
    /// past it; with `abort`, skips them (releasing their streams) and waits for nothing.
    pub fn finish_gpu_ops(&self, abort: bool) {
        // Taken out under the lock, dropped outside it: the worker needs `state` (which the
        // caller may hold next), and an enqueue racing with this sees `closed`.
        let queue = {
            let mut g = lock(&self.staging);
            g.closed = true;
            g.queue.take()
        };
        match (queue, abort) {
            (Some(q), true) => q.abort(),
            (Some(q), false) => drop(q),
            (None, _) => {}
        }
    }

    /// Aborts the communicator: a wait in progress on another thread fails promptly, and
    /// the connections close once it returns.
    pub fn abort(&self) {
        if let Some(a) = lock(&self.abort).as_ref() {
            a.abort();
        }
        // Queued GPU ops are skipped; their streams are released, none waits on another.
        self.finish_gpu_ops(true);
        let mut state = lock(&self.state);
        // An init in progress is left to finish on its thread; its result is dropped.
        let old = std::mem::replace(
            &mut *state,
            State::Failed(Failure::usage("communicator was aborted")),
        );
        if let State::Ready(comm) = old {
            comm.abort();
        }
    }

    /// Waits for a non-blocking init and drops the communicator (closing its connections).
    pub fn destroy(&self) {
        self.finish_gpu_ops(false);
        let mut state = lock(&self.state);
        self.settle(&mut state, true);
        *state = State::Failed(Failure::usage("communicator was destroyed"));
    }

    /// Records a PreMulSum operator and returns its `ncclRedOp_t`.
    pub fn add_redop(&self, p: PreMul) -> CResult<ffi::NcclRedOp> {
        let mut ops = lock(&self.redops);
        let i = match ops.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                ops.push(None);
                ops.len() - 1
            }
        };
        let id = ffi::NUM_OPS
            .checked_add(i32::try_from(i).map_err(|_| Failure::invalid("too many operators"))?)
            .ok_or_else(|| Failure::invalid("too many operators"))?;
        ops[i] = Some(p);
        Ok(id)
    }

    /// Forgets operator `op`.
    pub fn remove_redop(&self, op: ffi::NcclRedOp) -> CResult<()> {
        let mut ops = lock(&self.redops);
        let slot = usize::try_from(op - ffi::NUM_OPS)
            .ok()
            .and_then(|i| ops.get_mut(i))
            .filter(|s| s.is_some())
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "op {op} is not an operator created on this communicator"
                ))
            })?;
        *slot = None;
        Ok(())
    }

    /// The operator `op` for elements of `dtype`: built in, or created on this communicator.
    pub fn redop(&self, op: ffi::NcclRedOp, dtype: DataType) -> CResult<RedOp> {
        if let Some(r) = crate::types::builtin_op(op) {
            return Ok(RedOp::Builtin(r));
        }
        let ops = lock(&self.redops);
        let p = usize::try_from(op - ffi::NUM_OPS)
            .ok()
            .and_then(|i| ops.get(i).copied().flatten())
            .ok_or_else(|| Failure::invalid(format!("invalid reduction operator {op}")))?;
        if p.dtype != dtype {
            return Err(Failure::invalid(format!(
                "operator {op} was created for {} but is used with {dtype}",
                p.dtype
            )));
        }
        Ok(RedOp::PreMul(p.scalar))
    }
}
