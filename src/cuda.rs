//! Collectives on GPU buffers (feature `cuda`): cudarc slices, ordered on a cudarc stream.
//!
//! [`StreamCommunicator`] owns a [`Communicator`] and a CUDA stream. Each call checks its
//! arguments, enqueues the collective on the stream and returns: work enqueued on the stream
//! before it is what the collective reads, work enqueued after it sees the result, and the
//! calling thread never waits for the GPU. Underneath, the buffers are staged through pinned
//! host memory and the collective runs on oxccl's host engine on a worker thread
//! ([`oxccl_transports::cuda::ordered`]), so any transport works, including between nodes;
//! the data crosses PCIe twice.
//!
//! ```no_run
//! # fn main() -> oxccl::Result<()> {
//! use oxccl::cuda::cudarc::driver::CudaContext;
//! oxccl::cuda::driver_available()?; // cudarc panics without a driver; this says why
//! let comm = oxccl::Communicator::from_env()?;
//! let ctx = CudaContext::new(0).expect("GPU 0");
//! let stream = ctx.default_stream();
//! let mut gpu = oxccl::cuda::StreamCommunicator::new(comm, stream.clone())?;
//! let mut grads = stream.clone_htod(&vec![1.0f32; 1 << 20]).expect("upload");
//! gpu.all_reduce_in_place(&mut grads, oxccl::ReduceOp::Sum)?;
//! gpu.synchronize()?; // the stream's work done; a failed collective is reported here
//! # Ok(()) }
//! ```
//!
//! With `OXCCL_CUDA_IPC=1` and every rank on one host, all-reduce, reduce, broadcast,
//! all-gather and reduce-scatter go through the peers' GPU memory instead (CUDA IPC,
//! [`oxccl_transports::cuda::peer`]): an all-reduce's ranks each reduce their share of every
//! rank's input and write it into every rank's output, one pass over NVLink/PCIe (or within
//! one GPU), no host copies. Ranks that are threads of one process use each other's
//! addresses as they are (cudarc's pool memory included); between processes, buffers CUDA
//! IPC cannot share (cudarc's stream-ordered pool memory, for one) make every rank take
//! that call through host memory instead ([`StreamCommunicator::peer_jobs`] counts the
//! calls by path). Opt-in until it has run on a GPU.
//!
//! A failed collective still lets the stream go on (its outputs are then undefined) and is
//! reported by the next [`StreamCommunicator::synchronize`] or
//! [`StreamCommunicator::take_error`]; the calls after it fail at once.

use std::sync::{Arc, Mutex, PoisonError};

/// The cudarc this API takes buffers and streams of (use it to get matching types).
pub use cudarc;
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use oxccl_transports::cuda::kernels::TYPES;
use oxccl_transports::cuda::ordered::{Enqueued, OrderedQueue, Region};
pub use oxccl_transports::cuda::peer::PeerJobs;
use oxccl_transports::cuda::peer::{PeerCollectives, PeerComm, PeerKind, PeerOp};
use oxccl_transports::cuda::stream::RawContext;

use crate::{Communicator, DataType, Element, Error, ReduceOp, Result};

/// A communicator whose collectives take GPU buffers and run in the order of one stream.
pub struct StreamCommunicator {
    comm: Arc<Mutex<Communicator>>,
    stream: Arc<CudaStream>,
    queue: Option<OrderedQueue>,
    /// The first failure of an enqueued collective, until taken.
    failure: Arc<Mutex<Option<Error>>>,
    rank: u32,
    size: u32,
    /// Collectives through peers' GPU memory (CUDA IPC): `OXCCL_CUDA_IPC=1` and every rank
    /// on this host.
    peer: Option<Arc<Mutex<PeerCollectives>>>,
}

impl std::fmt::Debug for StreamCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCommunicator")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("queue", &self.queue)
            .finish()
    }
}

/// `Ok(())` when the CUDA driver loads and initialises, otherwise why not. cudarc panics when
/// the driver is missing: call this before creating a cudarc context.
pub fn driver_available() -> Result<()> {
    oxccl_transports::cuda::stream::init().map_err(cuda_error)
}

/// The peer collectives' kernels for `dtype` and `op`: the element type, the kernel operator
/// name, and whether the sums are then divided by the rank count (`avg`).
pub fn peer_kernels(
    dtype: DataType,
    op: ReduceOp,
) -> Option<(
    &'static oxccl_transports::cuda::kernels::KernelType,
    &'static str,
    bool,
)> {
    let index = DataType::ALL.iter().position(|d| *d == dtype)?;
    let (name, average) = match op {
        ReduceOp::Sum => ("sum", false),
        ReduceOp::Prod => ("prod", false),
        ReduceOp::Max => ("max", false),
        ReduceOp::Min => ("min", false),
        ReduceOp::Avg => ("sum", true),
    };
    Some((&TYPES[index], name, average))
}

/// Keeps `e` as the stream's first failure (unless one is kept already) and returns its
/// message, for the queue's report.
fn keep_first(failure: &Mutex<Option<Error>>, e: Error) -> String {
    let message = e.to_string();
    failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert(e);
    message
}

fn cuda_error(e: oxccl_transports::Error) -> Error {
    match e {
        oxccl_transports::Error::Config(m) => Error::Cuda(m),
        other => Error::Cuda(other.to_string()),
    }
}

fn invalid(op: &'static str, detail: String) -> Error {
    Error::invalid(op, detail)
}

/// A staged region seen as elements of `T` (regions are 256-byte aligned, whole elements).
fn typed<T: Element>(bytes: &[u8]) -> Result<&[T]> {
    bytemuck::try_cast_slice(bytes).map_err(|e| Error::Internal(format!("staging region: {e}")))
}

fn typed_mut<T: Element>(bytes: &mut [u8]) -> Result<&mut [T]> {
    bytemuck::try_cast_slice_mut(bytes).map_err(|e| Error::Internal(format!("staging region: {e}")))
}

impl StreamCommunicator {
    /// Wraps `comm`; its collectives will be ordered on `stream`.
    pub fn new(comm: Communicator, stream: Arc<CudaStream>) -> Result<Self> {
        let (rank, size) = (comm.rank(), comm.size());
        let queue = OrderedQueue::new(
            RawContext::of(stream.context()),
            &format!("oxccl-gpu-{rank}"),
        )
        .map_err(cuda_error)?;
        let ipc = std::env::var("OXCCL_CUDA_IPC").is_ok_and(|v| v == "1");
        let one_host = comm.local_size() == comm.size();
        if ipc && !one_host {
            tracing::warn!(
                "OXCCL_CUDA_IPC=1 needs every rank on one host; collectives are staged instead"
            );
        }
        // Set up now, before any job: the first stream of a context may synchronise it.
        let peer = if ipc && one_host {
            let p = PeerCollectives::new(
                stream.context().clone(),
                size as usize,
                oxccl_transports::cuda::cache_dir(),
            )
            .map_err(cuda_error)?;
            Some(Arc::new(Mutex::new(p)))
        } else {
            None
        };
        Ok(Self {
            comm: Arc::new(Mutex::new(comm)),
            stream,
            queue: Some(queue),
            failure: Arc::new(Mutex::new(None)),
            rank,
            size,
            peer,
        })
    }

    /// Enqueues `kind` through the peers' GPU memory (see [`oxccl_transports::cuda::peer`]);
    /// `send: None` for in place, `count` NCCL's count ([`PeerKind::lengths`]).
    fn peer_collective<T: Element + DeviceRepr>(
        &mut self,
        kind: PeerKind,
        send: Option<&CudaSlice<T>>,
        recv: &mut CudaSlice<T>,
        count: usize,
        op: ReduceOp,
    ) -> Result<()> {
        let what = kind.name();
        self.refuse_after_failure(what)?;
        let exec = self.peer.clone().expect("checked by the caller");
        let (t, name, average) = peer_kernels(T::DATA_TYPE, op)
            .ok_or_else(|| Error::Internal(format!("no peer kernels for {} {op}", T::DATA_TYPE)))?;
        let spec = PeerOp {
            exec,
            kind,
            op: name,
            average,
            t,
            rank: self.rank,
            nranks: self.size,
        };
        let (comm, failure) = (self.comm.clone(), self.failure.clone());
        let n = self.size as usize;
        // Keeps a host communicator failure as itself (a dead peer, say), not as a string.
        let keep = {
            let failure = failure.clone();
            move |e: Error| keep_first(&failure, e)
        };
        let (comm2, keep2) = (comm.clone(), keep.clone());
        let exchange = Box::new(move |mine: &[u8]| {
            let mut all = vec![0u8; mine.len() * n];
            let r = comm
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .all_gather(mine, &mut all);
            r.map(|()| all).map_err(&keep)
        });
        let host = Box::new(move |input: &[u8], output: &mut [u8]| {
            let (s, r) = (typed::<T>(input), typed_mut::<T>(output));
            let (s, r) = (s.map_err(|e| e.to_string())?, r.map_err(|e| e.to_string())?);
            let mut c = comm2.lock().unwrap_or_else(PoisonError::into_inner);
            match kind {
                PeerKind::AllReduce => c.all_reduce(s, r, op),
                PeerKind::Reduce { root } => c.reduce(s, r, op, root),
                PeerKind::Broadcast { root } => c.broadcast(s, r, root),
                PeerKind::AllGather => c.all_gather(s, r),
                PeerKind::ReduceScatter => c.reduce_scatter(s, r, op),
            }
            .map_err(&keep2)
        });
        let on_error = Box::new(move |m: &str| {
            failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| Error::Cuda(format!("peer {what}: {m}")));
        });
        let queue = self.queue.as_mut().expect("present until into_inner");
        let peer_comm = PeerComm {
            exchange,
            host,
            on_error,
        };
        match queue
            .enqueue_peer(&self.stream, send, recv, count, spec, peer_comm)
            .map_err(cuda_error)?
        {
            Enqueued::Queued | Enqueued::Ran(Ok(())) => Ok(()),
            Enqueued::Ran(Err(_)) => Err(self
                .take_error()
                .unwrap_or_else(|| Error::Internal(format!("{what} failed")))),
        }
    }

    /// This rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// How the collectives that could go through the peers' GPU memory went so far
    /// (`OXCCL_CUDA_IPC=1`; `None` without it): how many did, and how many went through
    /// host memory because some rank's buffer could not be reached (logged as a warning the
    /// first time). Counted as the jobs run, so after [`synchronize`](Self::synchronize)
    /// every enqueued one is in.
    pub fn peer_jobs(&self) -> Option<PeerJobs> {
        self.peer
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(PoisonError::into_inner).jobs())
    }

    /// The stream the collectives are ordered on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The first failure of an enqueued collective since the last call, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Waits for the stream (so for every collective enqueued so far), then reports the
    /// first failure among them.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| Error::Cuda(format!("synchronizing the stream: {e}")))?;
        self.take_error().map_or(Ok(()), Err)
    }

    /// Waits for the collectives enqueued so far and returns the communicator.
    pub fn into_inner(self) -> Result<Communicator> {
        let comm = self.comm.clone();
        // Runs the queued collectives; their closures, holding the other references, go.
        drop(self);
        match Arc::try_unwrap(comm) {
            Ok(m) => Ok(m.into_inner().unwrap_or_else(PoisonError::into_inner)),
            Err(_) => Err(Error::Internal(
                "the communicator is still used by a queued collective".into(),
            )),
        }
    }

    /// An earlier failure stays for synchronize()/take_error(); nothing more is enqueued.
    fn refuse_after_failure(&self, op: &'static str) -> Result<()> {
        match self
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            Some(e) => Err(Error::invalid(
                op,
                format!("an earlier collective on this stream failed: {e}"),
            )),
            None => Ok(()),
        }
    }

    /// Enqueues `run` on the staged `regions`, after the common checks.
    fn enqueue<T: Element + DeviceRepr>(
        &mut self,
        op: &'static str,
        regions: &mut [Region<'_, T>],
        run: impl FnOnce(&mut Communicator, Vec<&mut [u8]>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.refuse_after_failure(op)?;
        let (comm, failure) = (self.comm.clone(), self.failure.clone());
        let work = move |parts: Vec<&mut [u8]>| {
            let mut c = comm.lock().unwrap_or_else(PoisonError::into_inner);
            run(&mut c, parts).map_err(|e| keep_first(&failure, e))
        };
        let queue = self.queue.as_mut().expect("present until into_inner");
        match queue
            .enqueue_slices(&self.stream, regions, work)
            .map_err(cuda_error)?
        {
            Enqueued::Queued | Enqueued::Ran(Ok(())) => Ok(()),
            Enqueued::Ran(Err(_)) => Err(self
                .take_error()
                .unwrap_or_else(|| Error::Internal(format!("{op} failed on the calling thread")))),
        }
    }

    /// Enqueues an all-reduce: `recv = ⊕ over ranks of send`.
    pub fn all_reduce<T: Element + DeviceRepr>(
        &mut self,
        send: &CudaSlice<T>,
        recv: &mut CudaSlice<T>,
        op: ReduceOp,
    ) -> Result<()> {
        same_len("all_reduce", send.len(), recv.len())?;
        if self.peer.is_some() {
            let count = recv.len();
            return self.peer_collective(PeerKind::AllReduce, Some(send), recv, count, op);
        }
        self.enqueue(
            "all_reduce",
            &mut [Region::In(send), Region::Out(recv)],
            move |c, mut p| {
                let (s, r) = two(&mut p);
                c.all_reduce(typed::<T>(s)?, typed_mut::<T>(r)?, op)
            },
        )
    }

    /// Enqueues an in-place all-reduce.
    pub fn all_reduce_in_place<T: Element + DeviceRepr>(
        &mut self,
        buf: &mut CudaSlice<T>,
        op: ReduceOp,
    ) -> Result<()> {
        if self.peer.is_some() {
            let count = buf.len();
            return self.peer_collective(PeerKind::AllReduce, None, buf, count, op);
        }
        self.enqueue("all_reduce", &mut [Region::InOut(buf)], move |c, mut p| {
            c.all_reduce_in_place(typed_mut::<T>(p[0])?, op)
        })
    }

    /// Enqueues a broadcast of `root`'s `buf` into every rank's `buf`.
    pub fn broadcast<T: Element + DeviceRepr>(
        &mut self,
        buf: &mut CudaSlice<T>,
        root: u32,
    ) -> Result<()> {
        self.check_rank("broadcast", "root", root)?;
        if self.peer.is_some() {
            let (kind, count) = (PeerKind::Broadcast { root }, buf.len());
            return self.peer_collective(kind, None, buf, count, ReduceOp::Sum);
        }
        self.enqueue("broadcast", &mut [Region::InOut(buf)], move |c, mut p| {
            c.broadcast_in_place(typed_mut::<T>(p[0])?, root)
        })
    }

    /// Enqueues a reduce onto `root`'s `buf` (other ranks' `buf` is only read).
    pub fn reduce<T: Element + DeviceRepr>(
        &mut self,
        buf: &mut CudaSlice<T>,
        op: ReduceOp,
        root: u32,
    ) -> Result<()> {
        self.check_rank("reduce", "root", root)?;
        if self.peer.is_some() {
            let (kind, count) = (PeerKind::Reduce { root }, buf.len());
            return self.peer_collective(kind, None, buf, count, op);
        }
        let region = if self.rank == root {
            Region::InOut(buf)
        } else {
            Region::In(buf)
        };
        self.enqueue("reduce", &mut [region], move |c, mut p| {
            c.reduce_in_place(typed_mut::<T>(p[0])?, op, root)
        })
    }

    /// Enqueues an all-gather: `recv` (`size() * send.len()`) gets every rank's `send`.
    pub fn all_gather<T: Element + DeviceRepr>(
        &mut self,
        send: &CudaSlice<T>,
        recv: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.check_blocks("all_gather", send.len(), recv.len())?;
        if self.peer.is_some() {
            let count = send.len();
            return self.peer_collective(
                PeerKind::AllGather,
                Some(send),
                recv,
                count,
                ReduceOp::Sum,
            );
        }
        self.enqueue(
            "all_gather",
            &mut [Region::In(send), Region::Out(recv)],
            move |c, mut p| {
                let (s, r) = two(&mut p);
                c.all_gather(typed::<T>(s)?, typed_mut::<T>(r)?)
            },
        )
    }

    /// Enqueues an in-place all-gather: `buf` holds `size()` blocks, this rank's input already
    /// in block `rank`.
    pub fn all_gather_in_place<T: Element + DeviceRepr>(
        &mut self,
        buf: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.check_divides("all_gather", buf.len())?;
        if self.peer.is_some() {
            let count = buf.len() / self.size as usize;
            return self.peer_collective(PeerKind::AllGather, None, buf, count, ReduceOp::Sum);
        }
        self.enqueue("all_gather", &mut [Region::InOut(buf)], move |c, mut p| {
            c.all_gather_in_place(typed_mut::<T>(p[0])?)
        })
    }

    /// Enqueues an in-place reduce-scatter: `buf` holds `size()` blocks of input, the result
    /// lands in block `rank`.
    pub fn reduce_scatter_in_place<T: Element + DeviceRepr>(
        &mut self,
        buf: &mut CudaSlice<T>,
        op: ReduceOp,
    ) -> Result<()> {
        self.check_divides("reduce_scatter", buf.len())?;
        if self.peer.is_some() {
            let count = buf.len() / self.size as usize;
            return self.peer_collective(PeerKind::ReduceScatter, None, buf, count, op);
        }
        self.enqueue(
            "reduce_scatter",
            &mut [Region::InOut(buf)],
            move |c, mut p| c.reduce_scatter_in_place(typed_mut::<T>(p[0])?, op),
        )
    }

    /// Enqueues an in-place all-to-all.
    pub fn all_to_all_in_place<T: Element + DeviceRepr>(
        &mut self,
        buf: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.check_divides("all_to_all", buf.len())?;
        self.enqueue("all_to_all", &mut [Region::InOut(buf)], move |c, mut p| {
            c.all_to_all_in_place(typed_mut::<T>(p[0])?)
        })
    }

    /// Enqueues a reduce-scatter: `recv` gets this rank's block of `⊕ over ranks of send`.
    pub fn reduce_scatter<T: Element + DeviceRepr>(
        &mut self,
        send: &CudaSlice<T>,
        recv: &mut CudaSlice<T>,
        op: ReduceOp,
    ) -> Result<()> {
        self.check_blocks("reduce_scatter", recv.len(), send.len())?;
        if self.peer.is_some() {
            let count = recv.len();
            return self.peer_collective(PeerKind::ReduceScatter, Some(send), recv, count, op);
        }
        self.enqueue(
            "reduce_scatter",
            &mut [Region::In(send), Region::Out(recv)],
            move |c, mut p| {
                let (s, r) = two(&mut p);
                c.reduce_scatter(typed::<T>(s)?, typed_mut::<T>(r)?, op)
            },
        )
    }

    /// Enqueues an all-to-all: block `j` of `send` goes to rank `j`, block `i` of `recv`
    /// comes from rank `i`.
    pub fn all_to_all<T: Element + DeviceRepr>(
        &mut self,
        send: &CudaSlice<T>,
        recv: &mut CudaSlice<T>,
    ) -> Result<()> {
        same_len("all_to_all", send.len(), recv.len())?;
        if send.len() % self.size as usize != 0 {
            return Err(invalid(
                "all_to_all",
                format!(
                    "{} elements do not split into {} blocks",
                    send.len(),
                    self.size
                ),
            ));
        }
        self.enqueue(
            "all_to_all",
            &mut [Region::In(send), Region::Out(recv)],
            move |c, mut p| {
                let (s, r) = two(&mut p);
                c.all_to_all(typed::<T>(s)?, typed_mut::<T>(r)?)
            },
        )
    }

    /// Enqueues a send of `buf` to `peer` (matched by its [`recv`](Self::recv)).
    pub fn send<T: Element + DeviceRepr>(&mut self, buf: &CudaSlice<T>, peer: u32) -> Result<()> {
        self.check_rank("send", "peer", peer)?;
        self.enqueue("send", &mut [Region::In(buf)], move |c, p| {
            c.send(typed::<T>(p[0])?, peer)
        })
    }

    /// Enqueues a receive into `buf` from `peer`.
    pub fn recv<T: Element + DeviceRepr>(
        &mut self,
        buf: &mut CudaSlice<T>,
        peer: u32,
    ) -> Result<()> {
        self.check_rank("recv", "peer", peer)?;
        self.enqueue("recv", &mut [Region::Out(buf)], move |c, mut p| {
            c.recv(typed_mut::<T>(p[0])?, peer)
        })
    }

    fn check_rank(&self, op: &'static str, what: &str, r: u32) -> Result<()> {
        if r >= self.size {
            return Err(invalid(
                op,
                format!("{what} {r} is out of range for {} ranks", self.size),
            ));
        }
        Ok(())
    }

    /// `len` elements must split into `size()` blocks.
    fn check_divides(&self, op: &'static str, len: usize) -> Result<()> {
        if len % self.size as usize != 0 {
            return Err(invalid(
                op,
                format!("{len} elements do not split into {} blocks", self.size),
            ));
        }
        Ok(())
    }

    /// `whole` must be `size()` blocks of `block` elements.
    fn check_blocks(&self, op: &'static str, block: usize, whole: usize) -> Result<()> {
        if block.checked_mul(self.size as usize) != Some(whole) {
            return Err(invalid(
                op,
                format!(
                    "the larger buffer has {whole} elements, not {} ranks x {block}",
                    self.size
                ),
            ));
        }
        Ok(())
    }
}

impl Drop for StreamCommunicator {
    fn drop(&mut self) {
        // The queue's drop runs what is queued and waits for the streams to be past it.
        drop(self.queue.take());
    }
}

fn same_len(op: &'static str, send: usize, recv: usize) -> Result<()> {
    if send != recv {
        return Err(invalid(
            op,
            format!("send has {send} elements but recv has {recv}"),
        ));
    }
    Ok(())
}

/// The two regions of a two-buffer op, the first read-only.
fn two<'p>(parts: &'p mut [&mut [u8]]) -> (&'p [u8], &'p mut [u8]) {
    let (first, rest) = parts.split_at_mut(1);
    (&*first[0], &mut *rest[0])
}
