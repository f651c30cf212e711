//! GPU ops through the peers' GPU memory (`OXCCL_CUDA_IPC=1`, every rank on this host):
//! which ops take that path, and their jobs ([`oxccl_transports::cuda::peer`]).
//!
//! Every rank must swap records for the same ops, so what goes this way is decided from what
//! all ranks share (NCCL requires the same collectives, counts, types and operators on every
//! rank, in the same order): each all-reduce, reduce, broadcast, all-gather and
//! reduce-scatter with a built-in reduction and elements to move becomes a peer job of its
//! own, in group order, and the rest of the group (other collectives, send/receive, which
//! may differ between ranks) is staged as one job after them.
//!
//! A rank that cannot take part in a peer job (its peer setup failed, or its buffers are
//! not GPU memory) stages that op and swaps an "unusable" record before it, so every rank
//! takes the host path together. Whether a job really goes through peer memory is decided
//! by every rank alike from the records (pool memory between processes cannot be shared,
//! say: the job then goes through host memory).

use crate::error::{CResult, Failure};
use crate::ffi;
use crate::handle::{CommHandle, GpuOps};
use crate::ops::{Kind, OpArgs};
use crate::types::RedOp;
use oxccl_transports::cuda::ipc::Record;
use oxccl_transports::cuda::ordered::Enqueued;
use oxccl_transports::cuda::peer::{PeerCollectives, PeerComm, PeerKind, PeerOp};
use oxccl_transports::cuda::stream::{self as cuda, RawContext, RawStream};
use std::sync::{Arc, Mutex, Weak};

/// A communicator's peer collectives: set up in its context, or why they could not be.
pub struct PeerPath {
    exec: std::result::Result<Arc<Mutex<PeerCollectives>>, String>,
    /// The setup failure was reported (once per communicator).
    warned: bool,
}

impl PeerPath {
    /// Decides, once per communicator before its first GPU job, whether its GPU ops may go
    /// through peer memory: `OXCCL_CUDA_IPC=1` and every rank on this host (the same answer
    /// on every rank), then sets up in `ctx`.
    pub fn decide(comm: &CommHandle, ctx: RawContext) -> CResult<Option<Self>> {
        let wanted = std::env::var("OXCCL_CUDA_IPC").is_ok_and(|v| v == "1");
        let one_host = wanted && comm.with_comm(|c| Ok(c.local_size() == c.size()))?;
        if wanted && !one_host {
            tracing::warn!(
                "OXCCL_CUDA_IPC=1 needs every rank on one host: GPU collectives are staged"
            );
        }
        Ok(one_host.then(|| Self {
            exec: setup(ctx, comm.nranks as usize).map_err(|e| e.to_string()),
            warned: false,
        }))
    }
}

/// The peer collective for NCCL's `kind`, or `None` for the kinds it does not do.
fn peer_kind(kind: Kind, root: u32) -> Option<PeerKind> {
    Some(match kind {
        Kind::AllReduce => PeerKind::AllReduce,
        Kind::Reduce => PeerKind::Reduce { root },
        Kind::Broadcast => PeerKind::Broadcast { root },
        Kind::AllGather => PeerKind::AllGather,
        Kind::ReduceScatter => PeerKind::ReduceScatter,
        _ => return None,
    })
}

/// `a` as a peer op, when it is one: a collective the peer kernels do, a built-in
/// reduction, and elements to move. Only what every rank shares decides.
fn peer_shape(a: &OpArgs) -> Option<(PeerKind, &'static str, bool, OpKernels)> {
    let RedOp::Builtin(op) = a.op else {
        return None;
    };
    let kind = peer_kind(a.kind, a.root)?;
    if a.count == 0 {
        return None;
    }
    let (t, name, average) = oxccl::cuda::peer_kernels(a.dtype, op)?;
    Some((kind, name, average, t))
}

/// Whether this rank's buffers of `a` can be read and written by kernels: GPU memory where
/// it takes part (a non-root's broadcast input or reduce output may be anything, NULL
/// included, as in NCCL).
fn on_device(a: &OpArgs, kind: PeerKind, rank: u32) -> bool {
    let device = |p: usize| p != 0 && crate::device_ptr::is_device_memory(p);
    let (uses_send, uses_recv) = kind.uses(rank);
    (!uses_send || device(a.send)) && (!uses_recv || device(a.recv))
}

type OpKernels = &'static oxccl_transports::cuda::kernels::KernelType;

/// Enqueues the group's peer ops (see the module documentation) and returns the ops left to
/// stage, in group order.
pub fn route(comm: &Arc<CommHandle>, staging: &mut GpuOps, ops: &[OpArgs]) -> CResult<Vec<OpArgs>> {
    let exec = match &mut staging.peer {
        Some(Some(path)) => match &path.exec {
            Ok(exec) => Some(exec.clone()),
            Err(why) => {
                if !std::mem::replace(&mut path.warned, true) {
                    tracing::warn!(
                        "OXCCL_CUDA_IPC=1 could not be set up on rank {}: {why}; its GPU \
                         collectives are staged, and its peers follow",
                        comm.rank
                    );
                }
                None
            }
        },
        _ => return Ok(ops.to_vec()),
    };
    let mut rest = Vec::new();
    for a in ops {
        let Some((kind, name, average, t)) = peer_shape(a) else {
            rest.push(*a);
            continue;
        };
        let exec = match &exec {
            Some(exec) if on_device(a, kind, comm.rank) => exec.clone(),
            _ => {
                crate::staged::enqueue_staged(comm, staging, std::slice::from_ref(a), true)?;
                continue;
            }
        };
        let spec = PeerOp {
            exec,
            kind,
            op: name,
            average,
            t,
            rank: comm.rank,
            nranks: comm.nranks,
        };
        let queue = staging.queue.as_mut().expect("created by the caller");
        // SAFETY: the buffers this rank uses are GPU memory (checked by `on_device`) of the
        // op's lengths (checked when it was issued) that the program keeps valid until the
        // stream passed the op (NCCL's contract); the stream is the program's, of the
        // queue's context (checked by the caller).
        let done = unsafe {
            queue.enqueue_peer_raw(
                RawStream(a.stream),
                a.send as u64,
                a.recv as u64,
                a.count as u64,
                spec,
                peer_comm(comm, *a),
            )
        }
        .map_err(|e| Failure::new(ffi::UNHANDLED_CUDA_ERROR, e.to_string()))?;
        if let Enqueued::Ran(Err(m)) = done {
            return Err(Failure::new(ffi::INTERNAL_ERROR, m));
        }
    }
    Ok(rest)
}

/// Swaps this rank's records with every rank (an all-gather over the communicator).
pub fn exchange(weak: &Weak<CommHandle>, mine: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let h = weak
        .upgrade()
        .ok_or_else(|| "the communicator was destroyed".to_owned())?;
    let n = h.nranks as usize;
    h.with_comm(|c| {
        let mut all = vec![0u8; mine.len() * n];
        c.all_gather(mine, &mut all)?;
        Ok(all)
    })
    .map_err(|e| e.message)
}

/// What a rank that cannot take part swaps before its op: a record no peer can use.
pub fn unusable_record() -> Vec<u8> {
    Record::new(0).to_bytes().to_vec()
}

/// The peer job's ways to the other ranks: the record exchange, `a` itself on host copies
/// of its buffers (the host path), and the communicator's async error.
fn peer_comm(comm: &Arc<CommHandle>, a: OpArgs) -> PeerComm {
    let weak = Arc::downgrade(comm);
    let exchange = Box::new(move |mine: &[u8]| exchange(&weak, mine));
    let (weak, mut host_op) = (Arc::downgrade(comm), a);
    let host = Box::new(move |input: &[u8], output: &mut [u8]| {
        let h = weak
            .upgrade()
            .ok_or_else(|| "the communicator was destroyed".to_owned())?;
        // The op itself, out of place on host copies of its buffers.
        host_op.send = input.as_ptr() as usize;
        host_op.recv = output.as_mut_ptr() as usize;
        h.with_comm(|c| crate::group::run_group(c, &[host_op]))
            .map(drop)
            .map_err(|e| e.message)
    });
    let weak = Arc::downgrade(comm);
    let on_error = Box::new(move |m: &str| {
        if let Some(h) = weak.upgrade() {
            h.record_async_error(&Failure::new(ffi::INTERNAL_ERROR, m.to_owned()));
        }
    });
    PeerComm {
        exchange,
        host,
        on_error,
    }
}

/// The peer collectives set up in `ctx` (a primary context, as the CUDA runtime and PyTorch
/// use), for `nranks` ranks.
fn setup(ctx: RawContext, nranks: usize) -> oxccl_transports::Result<Arc<Mutex<PeerCollectives>>> {
    let ordinal = cuda::context_device(ctx)?;
    // cudarc makes the primary context current: pushed over ours, popped with the guard, so
    // the program's thread keeps the context it had.
    let current = cuda::ContextGuard::push(ctx)?;
    let cx = oxccl::cuda::cudarc::driver::CudaContext::new(ordinal)
        .map_err(|e| oxccl_transports::Error::Config(format!("opening GPU {ordinal}: {e}")))?;
    drop(current);
    if RawContext::of(&cx) != ctx {
        return Err(oxccl_transports::Error::Config(
            "the program's CUDA context is not its device's primary context".into(),
        ));
    }
    // SAFETY: this cudarc context object serves only the peer collectives' own stream and
    // module (no cudarc buffer is made with it), so cudarc's cross-stream event tracking has
    // nothing to track; without it, creating that stream does not synchronise the whole
    // context (which could wait for streams that wait for this rank's jobs).
    unsafe { cx.disable_event_tracking() };
    let exec = PeerCollectives::new(cx, nranks, oxccl_transports::cuda::cache_dir())?;
    Ok(Arc::new(Mutex::new(exec)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl::ReduceOp;

    /// The shape alone (what every rank shares) decides; host memory makes a rank answer
    /// rather than leave the job.
    #[test]
    fn only_collectives_with_builtin_reductions_are_peer_ops() {
        let op = |kind, red, count| OpArgs {
            op: red,
            ..OpArgs::example(kind, 0x1000, 0x2000, count, 0)
        };
        let sum = RedOp::Builtin(ReduceOp::Sum);
        let (kind, ..) = peer_shape(&op(Kind::AllReduce, sum, 10)).unwrap();
        assert_eq!(kind, PeerKind::AllReduce);
        // Not device memory (no driver here, or host addresses): this rank answers.
        assert!(!on_device(&op(Kind::AllReduce, sum, 10), kind, 0));
        assert!(peer_shape(&op(Kind::AllReduce, sum, 0)).is_none());
        for kind in [
            Kind::AllToAll,
            Kind::Send,
            Kind::Recv,
            Kind::Gather,
            Kind::Scatter,
        ] {
            assert!(peer_kind(kind, 0).is_none(), "{kind:?}");
        }
        assert_eq!(
            peer_kind(Kind::Reduce, 3),
            Some(PeerKind::Reduce { root: 3 })
        );
        assert_eq!(
            peer_kind(Kind::Broadcast, 1),
            Some(PeerKind::Broadcast { root: 1 })
        );
        let premul = RedOp::PreMul(crate::types::Scalar::Value([0; 8]));
        assert!(peer_shape(&op(Kind::AllReduce, premul, 10)).is_none());
    }
}
