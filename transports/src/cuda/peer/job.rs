//! One rank's peer job: the record exchange, the agreement on the path, the kernel or the
//! host path, and the exchange that releases the buffers; and its place on the queue.

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::exec::through_host;
use super::{plan, PeerComm, PeerKind, PeerOp};
use crate::cuda::ipc::{export, unusable, Exported, Mappings, Record};
use crate::cuda::ordered::{Enqueued, OrderedQueue};
use crate::cuda::stream::{ContextGuard, RawContext, RawStream};
use crate::{Error, Result};

/// One rank's job: swap records, then the peer kernel or, when some rank cannot share, the
/// host path; then the exchange that releases the buffers.
fn run_job(
    spec: &PeerOp,
    send: u64,
    recv: u64,
    count: u64,
    comm: &mut PeerComm,
) -> std::result::Result<(), String> {
    let n = spec.nranks as usize;
    let (uses_send, uses_recv) = spec.kind.uses(spec.rank);
    let mut mine = {
        let p = spec.lock();
        let mut r = Record::new(p.device);
        r.kernels = p.kernels.is_ok();
        r
    };
    // Unused buffers stay zero; buffers that cannot be exported keep their address, which
    // ranks of this process can use.
    let device = mine.device;
    let exported = [(uses_send, send), (uses_recv, recv)]
        .map(|(used, addr)| used.then(|| export(addr, device).map_err(|e| (e, addr))));
    mine.shared = true;
    for (slot, e) in [&mut mine.send, &mut mine.recv].into_iter().zip(exported) {
        match e {
            None => {}
            Some(Ok(e)) => *slot = e,
            Some(Err((e, addr))) => {
                tracing::debug!(error = %e, "this rank's buffer cannot be exported");
                mine.shared = false;
                *slot = Exported::local(addr, device);
            }
        }
    }
    let records = Record::parse_all(&(comm.exchange)(&mine.to_bytes())?, n)?;
    if let Some(why) = unusable(&records) {
        return host_job(spec, send, recv, count, comm, &why);
    }
    // Open the peers' buffers (cached), and until every rank has once opened every other's,
    // agree that all could before anyone launches: GPUs without peer access to each other
    // fail here, and the job then goes through host memory on every rank instead.
    let resolved = {
        let mut p = spec.lock();
        p.maps.begin_job();
        let r = resolve_all(&mut p.maps, spec.kind, &records);
        (r, p.proven)
    };
    let (addrs, proven) = resolved;
    if !proven {
        let ok = (comm.exchange)(&[u8::from(addrs.is_ok())])?;
        if let Some(bad) = ok.iter().position(|&b| b != 1) {
            if let Err(e) = &addrs {
                tracing::warn!(error = %e, "opening the peers' GPU buffers");
            }
            let why = format!("rank {bad} could not open its peers' GPU buffers");
            return host_job(spec, send, recv, count, comm, &why);
        }
        spec.lock().proven = true;
    }
    let result = addrs.and_then(|(sends, recvs)| {
        let mut p = spec.lock();
        let plan = plan(spec.kind, spec.rank, count, spec.t.size, &sends, &recvs);
        let divide = (spec.average && spec.kind.reduces()).then_some(spec.nranks);
        p.jobs.through_peers += 1;
        p.run_share(spec.op, spec.t, &plan, divide)
    });
    // Always exchanged again, even after a failure here: a peer may be writing into this
    // rank's output or reading its input until every rank got this far.
    let done = (comm.exchange)(&[u8::from(result.is_ok())]);
    // No kernel of this rank uses the opened buffers any more: old ones may be closed.
    spec.lock().maps.evict_beyond(MAX_OPENED);
    result.map_err(|e| e.to_string())?;
    if let Some(bad) = done?.iter().position(|&b| b != 1) {
        return Err(format!(
            "rank {bad} failed its share of the peer {}",
            spec.kind.name()
        ));
    }
    Ok(())
}

/// Peers' allocations a rank keeps open between jobs; the least recently used beyond this
/// are closed (a program that frees and allocates buffers every step would otherwise pile
/// up mappings, keeping the peers' freed memory alive).
const MAX_OPENED: usize = 256;

/// Every rank's buffers of a `kind` job in this process: (sends, receives), zero where the
/// rank has none.
fn resolve_all(
    maps: &mut Mappings,
    kind: PeerKind,
    records: &[Record],
) -> Result<(Vec<u64>, Vec<u64>)> {
    let n = records.len();
    let (mut sends, mut recvs) = (vec![0u64; n], vec![0u64; n]);
    for (j, r) in records.iter().enumerate() {
        let (s, d) = kind.uses(j as u32);
        if s {
            sends[j] = maps.resolve(&r.send)?;
        }
        if d {
            recvs[j] = maps.resolve(&r.recv)?;
        }
    }
    Ok((sends, recvs))
}

/// The job through host memory (every rank takes it alike), counted, and said once.
fn host_job(
    spec: &PeerOp,
    send: u64,
    recv: u64,
    count: u64,
    comm: &mut PeerComm,
    why: &str,
) -> std::result::Result<(), String> {
    let first = {
        let mut p = spec.lock();
        p.jobs.through_host += 1;
        p.jobs.through_host == 1
    };
    if first {
        // Once per communicator: the user asked for the peer path and does not get it.
        tracing::warn!(
            "OXCCL_CUDA_IPC=1: {why}; this {} and others like it go through host memory",
            spec.kind.name()
        );
    } else {
        tracing::debug!("{why}: this {} goes through host memory", spec.kind.name());
    }
    let (uses_send, uses_recv) = spec.kind.uses(spec.rank);
    let (send_elems, recv_elems) = spec.kind.lengths(count, spec.nranks);
    let size = spec.t.size;
    through_host(
        &spec.exec,
        uses_send.then_some(send),
        send_elems as usize * size,
        uses_recv.then_some(recv),
        recv_elems as usize * size,
        &mut comm.host,
    )
}

impl OrderedQueue {
    /// Enqueues `spec.kind` on `stream` through peers' GPU memory (see the module
    /// documentation), from `send` into `recv`. In place, pass `send: None` and the whole
    /// buffer as `recv`: NCCL's in-place layouts then say where the input and the output
    /// are (this rank's block of it is the all-gather's input and the reduce-scatter's
    /// output). `count` is NCCL's count ([`PeerKind::lengths`]). Every rank of the job
    /// must call it in the same order.
    pub fn enqueue_peer<T: cudarc::driver::DeviceRepr>(
        &mut self,
        stream: &CudaStream,
        send: Option<&CudaSlice<T>>,
        recv: &mut CudaSlice<T>,
        count: usize,
        spec: PeerOp,
        comm: PeerComm,
    ) -> Result<Enqueued> {
        if RawContext::of(stream.context()) != self.context() {
            return Err(Error::Config(
                "the stream belongs to another CUDA context than this queue's".into(),
            ));
        }
        let (send_len, recv_len) = spec.kind.lengths(count as u64, spec.nranks);
        let block = count as u64 * spec.rank as u64;
        // Element offsets of the input and the output in the one buffer of an in-place op.
        let (send_at, recv_at) = match spec.kind {
            PeerKind::AllGather => (block, 0),
            PeerKind::ReduceScatter => (0, block),
            _ => (0, 0),
        };
        let fits = match send {
            Some(s) => s.len() as u64 >= send_len && recv.len() as u64 >= recv_len,
            None => recv.len() as u64 >= (send_at + send_len).max(recv_at + recv_len),
        };
        if !fits {
            return Err(Error::Config(format!(
                "peer {} of {count} elements per rank over buffers of {} and {} elements",
                spec.kind.name(),
                send.map_or(recv.len(), |s| s.len()),
                recv.len()
            )));
        }
        let size = std::mem::size_of::<T>() as u64;
        let (send_ptr, send_guard) = match send {
            Some(s) => {
                let (p, g) = s.device_ptr(stream);
                (Some(p), Some(g))
            }
            None => (None, None),
        };
        let (base, recv_guard) = recv.device_ptr_mut(stream);
        let (send_ptr, recv_ptr) = match send_ptr {
            Some(p) => (p, base),
            None => (base + send_at * size, base + recv_at * size),
        };
        let raw = RawStream(stream.cu_stream() as usize);
        // SAFETY: the stream is of this queue's context (checked above); the buffers are live
        // cudarc buffers holding what the job touches (checked above) that stay valid until
        // the stream passes the job: cudarc orders their later uses and frees after the
        // events the guards record when dropped below.
        let r = unsafe { self.enqueue_peer_raw(raw, send_ptr, recv_ptr, count as u64, spec, comm) };
        drop(send_guard);
        drop(recv_guard);
        r
    }

    /// [`enqueue_peer`](Self::enqueue_peer) on raw device addresses, for the NCCL C ABI
    /// (NCCL's in-place layouts: the addresses as the program passed them).
    ///
    /// # Safety
    /// The buffers [`PeerKind::uses`] names for this rank must be device memory of
    /// [`PeerKind::lengths`] elements of `spec.t`, valid until `stream` has passed the job
    /// (NCCL's contract), and `stream` a live stream of the queue's context.
    pub unsafe fn enqueue_peer_raw(
        &mut self,
        stream: RawStream,
        send: u64,
        recv: u64,
        count: u64,
        spec: PeerOp,
        comm: PeerComm,
    ) -> Result<Enqueued> {
        if spec.rank >= spec.nranks || spec.kind.root().is_some_and(|r| r >= spec.nranks) {
            return Err(Error::Config(format!(
                "peer {}: rank {} or root {:?} out of range for {} ranks",
                spec.kind.name(),
                spec.rank,
                spec.kind.root(),
                spec.nranks
            )));
        }
        let ctx = self.context();
        let work = Box::new(move |_: &mut [u8]| {
            let mut comm = comm;
            let r = ContextGuard::push(ctx)
                .map_err(|e| e.to_string())
                .and_then(|_current| run_job(&spec, send, recv, count, &mut comm));
            if let Err(e) = &r {
                (comm.on_error)(e);
            }
            r
        });
        // SAFETY: no copies; the buffers and the stream as this function's contract says.
        unsafe { self.enqueue(1, &[], &[], &[stream], work) }
    }
}
