//! `--gpu`: the benchmark on GPU buffers, each operation enqueued on a CUDA stream through
//! [`oxccl::cuda::StreamCommunicator`] (on a communicator split off the benchmark's, which
//! keeps the host-side agreement: barriers, time and error combining).
//!
//! Times cover enqueueing `-n` operations and waiting for the stream, as nccl-tests times
//! its launches. Inputs are built on the host as for host buffers, uploaded on the stream,
//! and the results downloaded and checked the same way.

use super::coll::Coll;
use super::data::{write, Pattern};
use super::ops::Op;
use super::run::{Bench, Placement, Row};
use crate::elem::TestElem;
use oxccl::cuda::cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use oxccl::cuda::StreamCommunicator;
use oxccl::{Error, ReduceOp, Result};
use std::sync::Arc;
use std::time::Instant;

fn cuda<T>(r: std::result::Result<T, oxccl::cuda::cudarc::driver::DriverError>) -> Result<T> {
    r.map_err(|e| Error::Cuda(e.to_string()))
}

/// The GPU side of one datatype's run.
struct Gpu {
    comm: StreamCommunicator,
    stream: Arc<CudaStream>,
}

impl Gpu {
    fn upload<T: TestElem>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        cuda(self.stream.clone_htod(host))
    }

    fn download<T: TestElem>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        cuda(self.stream.clone_dtoh(dev))
    }

    /// Enqueues `op` on `send`/`recv` (each holding exactly what the operation uses).
    fn issue<T: TestElem>(
        &mut self,
        op: &Op,
        send: &mut CudaSlice<T>,
        recv: &mut CudaSlice<T>,
    ) -> Result<()> {
        let (g, root, red, c) = (&mut self.comm, op.root, op.redop, op.counts.param);
        let is_root = op.rank == root;
        match (op.coll, op.in_place) {
            (Coll::AllReduce, false) => g.all_reduce(send, recv, red),
            (Coll::AllReduce, true) => g.all_reduce_in_place(recv, red),
            (Coll::AllGather, false) => g.all_gather(send, recv),
            (Coll::AllGather, true) => g.all_gather_in_place(recv),
            (Coll::ReduceScatter, false) => g.reduce_scatter(send, recv, red),
            (Coll::ReduceScatter, true) => g.reduce_scatter_in_place(recv, red),
            (Coll::AllToAll, false) => g.all_to_all(send, recv),
            (Coll::AllToAll, true) => g.all_to_all_in_place(recv),
            // Out of place: the root's input is first copied into its output on the stream
            // (part of the timed work, as the copy is part of the operation).
            (Coll::Broadcast, false) if is_root => {
                cuda(self.stream.memcpy_dtod(send, recv))?;
                self.comm.broadcast(recv, root)
            }
            (Coll::Broadcast, _) => g.broadcast(recv, root),
            (Coll::Reduce, false) if is_root => {
                cuda(self.stream.memcpy_dtod(send, recv))?;
                self.comm.reduce(recv, red, root)
            }
            (Coll::Reduce, false) => g.reduce(send, red, root),
            (Coll::Reduce, true) => g.reduce(recv, red, root),
            (Coll::SendRecv, in_place) => {
                if in_place {
                    cuda(self.stream.memcpy_dtod(recv, send))?;
                }
                let n = op.nranks;
                let (next, prev) = ((op.rank + 1) % n, (op.rank + n - 1) % n);
                // Each call is its own operation: even ranks send first, odd ones receive
                // first, so every send meets its receive.
                if n == 1 || op.rank % 2 == 0 {
                    self.comm.send(send, next)?;
                    self.comm.recv(recv, prev)
                } else {
                    self.comm.recv(recv, prev)?;
                    self.comm.send(send, next)
                }
            }
            (Coll::Gather | Coll::Scatter, _) if c == 0 => Ok(()),
            (Coll::Gather | Coll::Scatter, _) => Err(Error::InvalidArgument {
                op: "oxccl-perf",
                detail: format!("--gpu: {} does not take GPU buffers yet", op.coll),
            }),
        }
    }

    /// Uploads the inputs of a check of `op` (the whole of both buffers).
    fn prepare<T: TestElem>(
        &self,
        op: &Op,
        p: &Pattern<T>,
    ) -> Result<(CudaSlice<T>, CudaSlice<T>)> {
        let zero = T::from_i64(0);
        let mut send = vec![zero; op.counts.send.max(op.counts.param)];
        let mut recv = vec![zero; op.counts.total()];
        let (s, r) = op.inputs(p);
        for (range, fill) in s {
            write(&mut send[range], fill);
        }
        for (range, fill) in r {
            write(&mut recv[range], fill);
        }
        Ok((self.upload(&send)?, self.upload(&recv)?))
    }
}

/// Runs every operator, root and size of datatype `T` on GPU `ordinal`.
pub fn run_type<T: TestElem>(b: &mut Bench<'_>, ordinal: usize) -> Result<()> {
    oxccl::cuda::driver_available()?;
    let ctx = cuda(CudaContext::new(ordinal))?;
    let stream = cuda(ctx.new_stream())?;
    let rank = b.comm.rank();
    let split = b.comm.split(Some(0), rank as i32)?.ok_or_else(|| {
        Error::Internal("splitting the benchmark's communicator returned none".into())
    })?;
    let mut gpu = Gpu {
        comm: StreamCommunicator::new(split, stream.clone())?,
        stream,
    };
    for redop in b.opts.ops.clone() {
        for root in b.roots() {
            run_combination::<T>(b, &mut gpu, redop, root)?;
        }
    }
    gpu.comm.synchronize()
}

fn run_combination<T: TestElem>(
    b: &mut Bench<'_>,
    gpu: &mut Gpu,
    redop: ReduceOp,
    root: u32,
) -> Result<()> {
    let elt = T::DATA_TYPE.size();
    b.comm.barrier()?;
    for size in b.opts.warmup_sizes() {
        let op = b.op_for(size, redop, root, elt);
        let (mut s, mut r) = gpu.prepare::<T>(&op, &Pattern::new(op.pattern_op(), 1, 0))?;
        for _ in 0..b.opts.flags.warmup_iters {
            gpu.issue(&op, &mut s, &mut r)?;
        }
        gpu.comm.synchronize()?;
    }
    let label = b.label::<T>(redop, root);
    let mut cycle = 0;
    while b.opts.flags.run_cycles == 0 || cycle < b.opts.flags.run_cycles {
        cycle += 1;
        for size in b.opts.sizes() {
            b.starting(&label, size);
            let mut op = b.op_for(size, redop, root, elt);
            let out_of_place = bench_time::<T>(b, gpu, &op)?;
            op.in_place = true;
            let in_place = bench_time::<T>(b, gpu, &op)?;
            b.record(Row {
                size: (op.counts.total() * elt) as u64,
                count: op.counts.param,
                dtype: T::DATA_TYPE,
                redop: op.coll.shows_op().then_some(redop),
                root: if op.coll.has_root() { root as i64 } else { -1 },
                out_of_place,
                in_place,
            });
        }
    }
    Ok(())
}

/// Times `op` on GPU buffers and checks it.
fn bench_time<T: TestElem>(b: &mut Bench<'_>, gpu: &mut Gpu, op: &Op) -> Result<Placement> {
    let f = &b.opts.flags;
    let (iters, check, n) = (f.iters as usize, f.check, b.comm.size() as usize);
    let (mut s, mut r) = gpu.prepare::<T>(op, &Pattern::new(op.pattern_op(), n, 0))?;
    gpu.issue(op, &mut s, &mut r)?;
    gpu.comm.synchronize()?;
    b.comm.barrier()?;
    let start = Instant::now();
    for _ in 0..iters {
        gpu.issue(op, &mut s, &mut r)?;
    }
    gpu.comm.synchronize()?;
    let secs = b.combine_time(start.elapsed().as_secs_f64() / iters.max(1) as f64)?;
    let (algbw, busbw) = op
        .coll
        .bandwidths(op.counts.param, T::DATA_TYPE.size(), secs, n);
    b.comm.barrier()?;

    let mut wrong = None;
    for _ in 0..check {
        let p = Pattern::new(op.pattern_op(), n, b.next_rep());
        let (mut s, mut r) = gpu.prepare::<T>(op, &p)?;
        gpu.issue(op, &mut s, &mut r)?;
        let mut recv = gpu.download(&r)?;
        gpu.comm.synchronize()?;
        let all = b.count_wrong(op, &p, &mut recv)?;
        wrong = Some(all);
        if all > 0 {
            break;
        }
    }
    Ok(Placement::new(secs, algbw, busbw, wrong))
}
