//! `ncclGroupStart`/`ncclGroupEnd`: recording ops and running them as oxccl groups.
//!
//! Groups nest with a per-thread depth. Inside a group, each op is checked and recorded
//! (its pointers and arguments); at the outermost `ncclGroupEnd` the ops of each
//! communicator run as one oxccl [`oxccl::Group`], so sends and receives between ranks never
//! deadlock whatever their order. Ops of several communicators run on one scoped thread
//! per communicator, concurrently (the single-process multi-rank pattern of
//! `ncclCommInitAll`, where one thread drives every rank, needs that); their relative order
//! is not kept, so a program must not make one communicator's op wait for another's within
//! a group (NCCL gives no such ordering either).
//!
//! Ops of a communicator of which one has a GPU buffer are enqueued on their CUDA streams
//! together, as one job ([`crate::staged`]); the others run before `ncclGroupEnd` returns.
//!
//! `ncclCommInitRank(Config)` inside a group creates the communicator on a thread and the
//! outermost `ncclGroupEnd` waits for it. An op outside any group runs at once, as a group
//! of one. As in NCCL, an op rejected
//! inside a group makes the outermost `ncclGroupEnd` fail with that error without running
//! any of the group's ops.

use crate::error::{CResult, Failure};
use crate::ffi;
use crate::handle::{CommHandle, CommPtr};
use crate::ops::{self, Bufs, Kind, OpArgs};
use crate::types::{RedOp, Scalar};
use oxccl::Communicator;
use oxccl_algorithms::cost::{estimate, LinkCost};
use oxccl_algorithms::Collective;
use std::cell::RefCell;
use std::sync::Arc;

/// An op waiting for its group's end.
struct Recorded {
    comm: Arc<CommHandle>,
    args: OpArgs,
}

#[derive(Default)]
struct GroupState {
    depth: u32,
    ops: Vec<Recorded>,
    /// Communicators whose creation was issued in the group (created on threads).
    inits: Vec<Arc<CommHandle>>,
    error: Option<Failure>,
}

/// Whether this thread is inside a group.
pub fn in_group() -> bool {
    GROUP.with(|g| g.borrow().depth > 0)
}

/// Records a communicator being created inside a group: the outermost `ncclGroupEnd` waits
/// for it (so one thread can create every rank of a communicator in one group, as NCCL
/// allows).
pub fn defer_init(h: Arc<CommHandle>) {
    GROUP.with(|g| g.borrow_mut().inits.push(h));
}

thread_local! {
    static GROUP: RefCell<GroupState> = RefCell::new(GroupState::default());
}

/// Issues one op on `comm`, whose arguments `build` resolves (datatype, operator): checks
/// it, then records it (inside a group) or runs it.
pub fn issue(comm: CommPtr, build: impl FnOnce(&CommHandle) -> CResult<OpArgs>) -> CResult {
    let in_group = GROUP.with(|g| g.borrow().depth > 0);
    let checked = CommHandle::get(comm).and_then(|h| {
        let mut args = build(&h)?;
        args.on_device = args.check(h.rank, h.nranks)?;
        // A PreMulSum scalar in GPU memory is read on the stream too.
        if let RedOp::PreMul(Scalar::At(p)) = args.op {
            args.on_device |= crate::device_ptr::is_device_memory(p);
        }
        Ok((h, args))
    });
    let (h, args) = match checked {
        Ok(v) => v,
        Err(e) => {
            if in_group {
                GROUP.with(|g| g.borrow_mut().error.get_or_insert_with(|| e.clone()).code);
            }
            return Err(e);
        }
    };
    if in_group {
        GROUP.with(|g| g.borrow_mut().ops.push(Recorded { comm: h, args }));
        return Ok(ffi::SUCCESS);
    }
    run(vec![Recorded { comm: h, args }])
}

/// `ncclGroupStart`.
pub fn start() -> CResult {
    GROUP.with(|g| g.borrow_mut().depth += 1);
    Ok(ffi::SUCCESS)
}

/// Closes one level; at the outermost, waits for the communicators created in the group
/// and takes the group's ops (and its error, if an op or a creation failed).
fn close() -> CResult<Option<(Vec<Recorded>, Option<Failure>)>> {
    let taken = close_level()?;
    let Some((ops, mut error, inits)) = taken else {
        return Ok(None);
    };
    for h in inits {
        if let Err(e) = h.with_comm(|_| Ok(())) {
            error.get_or_insert(e);
        }
    }
    Ok(Some((ops, error)))
}

/// The group's ops, error and pending creations.
type Taken = (Vec<Recorded>, Option<Failure>, Vec<Arc<CommHandle>>);

/// Closes one level; at the outermost, takes what the group recorded.
fn close_level() -> CResult<Option<Taken>> {
    GROUP.with(|g| {
        let mut g = g.borrow_mut();
        if g.depth == 0 {
            return Err(Failure::usage("ncclGroupEnd without ncclGroupStart"));
        }
        g.depth -= 1;
        if g.depth > 0 {
            return Ok(None);
        }
        Ok(Some((
            std::mem::take(&mut g.ops),
            g.error.take(),
            std::mem::take(&mut g.inits),
        )))
    })
}

/// `ncclGroupEnd`: runs the ops at the outermost level.
pub fn end() -> CResult {
    match close()? {
        None => Ok(ffi::SUCCESS),
        Some((_, Some(e))) => Err(e),
        Some((ops, None)) => run(ops),
    }
}

/// `ncclGroupSimulateEnd`: closes the group like `ncclGroupEnd` but runs nothing; returns
/// the predicted time in microseconds (per communicator the sum of its ops' α–β–γ
/// estimates, over communicators the maximum, as they run concurrently).
pub fn simulate_end() -> CResult<f32> {
    let ops = match close()? {
        None => return Ok(0.0),
        Some((_, Some(e))) => return Err(e),
        Some((ops, None)) => ops,
    };
    let mut worst = 0.0f64;
    for (comm, ops) in by_comm(ops) {
        let secs = comm.with_comm(|c| ops.iter().map(|a| predict(c, a)).sum::<CResult<f64>>())?;
        worst = worst.max(secs);
    }
    Ok((worst * 1e6) as f32)
}

/// Link parameters when the tuning file has none for the communicator's link class
/// (oxccl's tuner table assumes the same).
const SHM_LINK: LinkCost = LinkCost {
    alpha_s: 1e-6,
    beta_s_per_byte: 1e-10,
    gamma_s_per_byte: 5e-11,
};
const TCP_LINK: LinkCost = LinkCost {
    alpha_s: 10e-6,
    beta_s_per_byte: 1e-9,
    gamma_s_per_byte: 5e-11,
};

/// The oxccl collective of an op.
fn collective(a: &OpArgs) -> Collective {
    let root = a.root;
    match a.kind {
        Kind::AllReduce => Collective::AllReduce,
        Kind::Broadcast => Collective::Broadcast { root },
        Kind::Reduce => Collective::Reduce { root },
        Kind::AllGather => Collective::AllGather,
        Kind::ReduceScatter => Collective::ReduceScatter,
        Kind::AllToAll => Collective::AllToAll,
        Kind::Gather => Collective::Gather { root },
        Kind::Scatter => Collective::Scatter { root },
        Kind::Send => Collective::Send { peer: root },
        Kind::Recv => Collective::Recv { peer: root },
    }
}

/// Predicted seconds of one op: the plan the tuner would pick, costed with the tuning
/// file's link parameters for this communicator's links, or the built-in ones.
fn predict(c: &Communicator, a: &OpArgs) -> CResult<f64> {
    let coll = collective(a);
    let choice = c.choice(coll, a.dtype, a.count);
    let plan =
        oxccl_algorithms::build(choice.algorithm, coll, c.size(), c.rank(), choice.nchannels)
            .map_err(|e| Failure::invalid(e.to_string()))?;
    let class = c.link_class();
    let link = c
        .config()
        .tuning
        .as_ref()
        .and_then(|f| f.links.get(&class).copied())
        .unwrap_or(if class == oxccl::tuner::LinkClass::Shm {
            SHM_LINK
        } else {
            TCP_LINK
        });
    let bytes = (a.count * a.dtype.size()) as u64;
    Ok(estimate(&plan, bytes, a.dtype.size() as u32, &link))
}

/// Ops grouped by communicator, in first-use order, each group in issue order.
fn by_comm(ops: Vec<Recorded>) -> Vec<(Arc<CommHandle>, Vec<OpArgs>)> {
    let mut out: Vec<(Arc<CommHandle>, Vec<OpArgs>)> = Vec::new();
    for r in ops {
        match out.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &r.comm)) {
            Some((_, v)) => v.push(r.args),
            None => out.push((r.comm, vec![r.args])),
        }
    }
    out
}

/// Runs one communicator's ops (all on host memory) as one group on this thread, after its
/// GPU ops still queued (every rank then runs them in issue order).
fn run_host(comm: &Arc<CommHandle>, ops: &[OpArgs]) -> CResult {
    comm.drain_gpu_ops();
    comm.with_comm(|c| run_group(c, ops))
}

/// Runs recorded ops: one oxccl group per communicator. Communicators with a GPU op are
/// enqueued on their streams first, one after the other on this thread (so the order on a
/// shared stream is the issue order on every rank, and the per-thread default stream is
/// this thread's); the others run concurrently, one thread each when there are several.
fn run(ops: Vec<Recorded>) -> CResult {
    let (gpu, mut host): (Vec<_>, Vec<_>) = by_comm(ops)
        .into_iter()
        .partition(|(_, ops)| ops.iter().any(|a| a.on_device));
    let mut first_error = None;
    for (comm, ops) in &gpu {
        if let Err(e) = crate::staged::enqueue(comm, ops) {
            first_error.get_or_insert(e);
        }
    }
    let results: Vec<CResult> = if host.len() == 1 {
        let (comm, ops) = host.remove(0);
        vec![run_host(&comm, &ops)]
    } else {
        std::thread::scope(|s| {
            let threads: Vec<_> = host
                .iter()
                .map(|(comm, ops)| s.spawn(move || run_host(comm, ops)))
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join().unwrap_or_else(|_| {
                        Err(Failure::new(ffi::INTERNAL_ERROR, "a group thread panicked"))
                    })
                })
                .collect()
        })
    };
    match first_error.or_else(|| results.into_iter().find_map(Result::err)) {
        Some(e) => Err(e),
        None => Ok(ffi::SUCCESS),
    }
}

/// The scaled copy of a PreMulSum op's input, 8-byte aligned.
fn premul_copy(a: &OpArgs, nranks: u32, scalar: Scalar) -> CResult<Vec<u64>> {
    let scalar = match scalar {
        Scalar::Value(v) => v,
        Scalar::At(p) => {
            // SAFETY: the address given to ncclRedOpCreatePreMulSum (checked non-null), which
            // NCCL requires to stay valid while ops with the operator run.
            let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, a.dtype.size()) };
            crate::types::scalar_bytes(a.dtype, bytes)
        }
    };
    let scalar = &scalar;
    let (ptr, bytes) = a.premul_input(nranks)?;
    let mut copy = vec![0u64; bytes.div_ceil(8)];
    if bytes > 0 {
        if ptr == 0 {
            return Err(Failure::invalid("sendbuff is NULL"));
        }
        let dst = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut copy)[..bytes];
        // SAFETY: the op's input: `bytes` readable bytes at `ptr` (checked non-null; the
        // caller keeps the buffer valid during the call, as NCCL requires).
        let src = unsafe { std::slice::from_raw_parts(ptr as *const u8, bytes) };
        dst.copy_from_slice(src);
        crate::types::scale(a.dtype, dst, scalar)?;
    }
    Ok(copy)
}

/// Runs one communicator's ops (on host memory) as one oxccl group.
pub(crate) fn run_group(c: &mut Communicator, ops: &[OpArgs]) -> CResult {
    let (rank, nranks) = (c.rank(), c.size());
    let copies: Vec<Option<Vec<u64>>> = ops
        .iter()
        .map(|a| match a.op {
            RedOp::PreMul(k)
                if matches!(a.kind, Kind::AllReduce | Kind::Reduce | Kind::ReduceScatter) =>
            {
                premul_copy(a, nranks, k).map(Some)
            }
            _ => Ok(None),
        })
        .collect::<CResult<_>>()?;
    let bufs: Vec<Bufs> = ops
        .iter()
        .zip(&copies)
        .map(|(a, copy)| a.bufs(rank, nranks, copy.as_ref().map(|v| v.as_ptr() as usize)))
        .collect::<CResult<_>>()?;
    let mut g = c.group();
    for (a, b) in ops.iter().zip(bufs) {
        // SAFETY: `check` validated the user's buffers when the op was issued, and the
        // program keeps them valid until the group ends (NCCL's contract; host memory
        // here, so until this call returns); the PreMulSum copies outlive the group.
        unsafe { ops::add(&mut g, a, b)? };
    }
    g.run().map_err(Failure::from)?;
    drop(copies);
    Ok(ffi::SUCCESS)
}
