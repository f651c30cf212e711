//! One rank's benchmark: for every datatype, operator and root, warm up, then for every
//! size time the operation out-of-place and in-place, check it, and hand the row to the
//! report (rank 0 only).
//!
//! Every rank runs the same loop and issues the same operations; the time of each size is
//! combined over the ranks (`-a`) and the wrong elements summed over the ranks, both with
//! oxccl collectives, so every rank ends with the same summary and exit status.

use super::cli::{Average, Options};
use super::data::{flip, mismatches, write, Pattern};
use super::ops::Op;
use crate::elem::TestElem;
use oxccl::{Communicator, DataType, ReduceOp, Result};
use std::time::Instant;

/// Time, bandwidths and wrong elements of one size in one placement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Time per operation in microseconds.
    pub time_us: f64,
    /// Algorithm bandwidth, GB/s.
    pub algbw: f64,
    /// Bus bandwidth, GB/s.
    pub busbw: f64,
    /// Wrong elements summed over the ranks (`None`: not checked, `-c 0`).
    pub wrong: Option<u64>,
}

/// One line of the results table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Bytes of the larger buffer.
    pub size: u64,
    /// Elements passed to the operation (per rank for block collectives).
    pub count: usize,
    /// The datatype.
    pub dtype: DataType,
    /// The operator, or `None` (printed `none`) for non-reducing collectives.
    pub redop: Option<ReduceOp>,
    /// The root, or -1.
    pub root: i64,
    /// Out-of-place result.
    pub out_of_place: Placement,
    /// In-place result.
    pub in_place: Placement,
}

/// What all ranks agree on at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Results (size × placement) with at least one wrong element.
    pub failed: u64,
    /// Sum of the busbw of every result.
    pub bw_sum: f64,
    /// Number of results.
    pub results: u64,
}

impl Summary {
    /// The average bus bandwidth over every result (0 when there was none).
    pub fn avg_busbw(&self) -> f64 {
        if self.results == 0 {
            0.0
        } else {
            self.bw_sum / self.results as f64
        }
    }
}

/// Receives rank 0's rows as they are measured.
pub trait Sink {
    /// A row is about to be measured (for progress display).
    fn starting(&mut self, label: &str, size: u64);
    /// A row was measured.
    fn row(&mut self, row: &Row);
}

/// One rank's benchmark state.
pub struct Bench<'r> {
    pub(super) comm: &'r mut Communicator,
    pub(super) opts: &'r Options,
    sink: Option<&'r mut dyn Sink>,
    corrupt: bool,
    rep: u64,
    summary: Summary,
}

impl<'r> Bench<'r> {
    /// A benchmark on `comm`; `sink` is rank 0's report; `corrupt` makes this rank flip an
    /// output element before every check (`OXCCL_PERF_CORRUPT`).
    pub fn new(
        comm: &'r mut Communicator,
        opts: &'r Options,
        sink: Option<&'r mut dyn Sink>,
        corrupt: bool,
    ) -> Self {
        Bench {
            comm,
            opts,
            sink,
            corrupt,
            rep: 0,
            summary: Summary::default(),
        }
    }

    /// Runs every datatype, operator, root, cycle and size.
    pub fn run(mut self) -> Result<Summary> {
        for dtype in self.opts.dtypes.clone() {
            crate::for_dtype!(dtype, Ok(()), run_type, &mut self)?;
        }
        self.comm.barrier()?;
        Ok(self.summary)
    }

    pub(super) fn roots(&self) -> Vec<u32> {
        match (self.opts.coll.has_root(), self.opts.flags.root.0) {
            (false, _) => vec![0],
            (true, Some(r)) => vec![r],
            (true, None) => (0..self.comm.size()).collect(),
        }
    }

    /// The operation of one size (out of place; the caller flips `in_place`).
    pub(super) fn op_for(&self, size: u64, redop: ReduceOp, root: u32, elt: usize) -> Op {
        let n = self.comm.size();
        Op {
            coll: self.opts.coll,
            in_place: false,
            counts: self.opts.coll.counts(size as usize / elt, elt, n as usize),
            redop,
            root,
            rank: self.comm.rank(),
            nranks: n,
        }
    }

    /// The report's label of a datatype × operator × root combination.
    pub(super) fn label<T: TestElem>(&self, redop: ReduceOp, root: u32) -> String {
        let coll = self.opts.coll;
        format!(
            "{} {}{}{}",
            coll,
            T::DATA_TYPE,
            if coll.shows_op() {
                format!(" {redop}")
            } else {
                String::new()
            },
            if coll.has_root() {
                format!(" root {root}")
            } else {
                String::new()
            },
        )
    }

    /// Tells the report a size is starting.
    pub(super) fn starting(&mut self, label: &str, size: u64) {
        if let Some(s) = self.sink.as_deref_mut() {
            s.starting(label, size);
        }
    }

    /// Counts a measured row in the summary and hands it to the report.
    pub(super) fn record(&mut self, row: Row) {
        for p in [&row.out_of_place, &row.in_place] {
            self.summary.results += 1;
            self.summary.bw_sum += p.busbw;
            if p.wrong.unwrap_or(0) > 0 {
                self.summary.failed += 1;
            }
        }
        if let Some(s) = self.sink.as_deref_mut() {
            s.row(&row);
        }
    }

    /// The pattern number of the next check.
    pub(super) fn next_rep(&mut self) -> u64 {
        self.rep += 1;
        self.rep
    }

    /// Combines this rank's seconds per operation over the ranks (`-a`).
    pub(super) fn combine_time(&mut self, secs: f64) -> Result<f64> {
        let mut v = [secs];
        match self.opts.average {
            Average::Rank0 => self.comm.broadcast_in_place(&mut v, 0)?,
            Average::Mean => {
                self.comm.all_reduce_in_place(&mut v, ReduceOp::Sum)?;
                v[0] /= self.comm.size() as f64;
            }
            Average::Min => self.comm.all_reduce_in_place(&mut v, ReduceOp::Min)?,
            Average::Max => self.comm.all_reduce_in_place(&mut v, ReduceOp::Max)?,
        }
        Ok(v[0])
    }
}

/// A send or receive buffer: ordinary memory, or with `-R 1` a registered buffer from
/// `Communicator::alloc_shared` that the other ranks of the host read in place.
enum Mem<T: TestElem> {
    Heap(Vec<T>),
    Shared(oxccl::SharedBuffer<T>),
}

impl<T: TestElem> std::ops::Deref for Mem<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Mem::Heap(v) => v,
            Mem::Shared(s) => s,
        }
    }
}

impl<T: TestElem> std::ops::DerefMut for Mem<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Mem::Heap(v) => v,
            Mem::Shared(s) => s,
        }
    }
}

/// Send and receive buffers: one pair per operation aggregated in an iteration (`-m`).
struct Buffers<T: TestElem> {
    pairs: Vec<(Mem<T>, Mem<T>)>,
    /// Elements in each buffer (the largest size's).
    len: usize,
}

fn run_type<T: TestElem>(b: &mut Bench<'_>) -> Result<()> {
    if let Some(ordinal) = b.opts.flags.gpu {
        #[cfg(feature = "cuda")]
        return super::gpu::run_type::<T>(b, ordinal);
        #[cfg(not(feature = "cuda"))]
        return Err(oxccl::Error::InvalidArgument {
            op: "oxccl-perf",
            detail: format!("--gpu {ordinal}: this oxccl-perf was built without feature cuda"),
        });
    }
    let o = b.opts;
    let elt = T::DATA_TYPE.size();
    let len = (o.flags.maxbytes as usize / elt).max(1);
    let zero = T::from_i64(0);
    let mut pairs = Vec::with_capacity(o.flags.agg_iters as usize);
    for _ in 0..o.flags.agg_iters {
        pairs.push(if o.flags.local_register > 0 {
            // Collective: every rank allocates the same buffers in the same order.
            let send = b.comm.alloc_shared::<T>(len)?;
            let recv = b.comm.alloc_shared::<T>(len)?;
            (Mem::Shared(send), Mem::Shared(recv))
        } else {
            (Mem::Heap(vec![zero; len]), Mem::Heap(vec![zero; len]))
        });
    }
    let mut bufs = Buffers { pairs, len };
    let ops = o.ops.clone();
    for redop in ops {
        for root in b.roots() {
            run_combination::<T>(b, &mut bufs, redop, root)?;
        }
    }
    Ok(())
}

fn run_combination<T: TestElem>(
    b: &mut Bench<'_>,
    bufs: &mut Buffers<T>,
    redop: ReduceOp,
    root: u32,
) -> Result<()> {
    let o = b.opts;
    let elt = T::DATA_TYPE.size();
    b.comm.barrier()?;
    for size in o.warmup_sizes() {
        let op = b.op_for(size, redop, root, elt);
        for iter in 0..o.flags.warmup_iters as usize {
            run_single(b.comm, bufs, &op, iter)?;
        }
    }
    let coll = o.coll;
    let label = b.label::<T>(redop, root);
    let mut cycle = 0;
    while o.flags.run_cycles == 0 || cycle < o.flags.run_cycles {
        cycle += 1;
        for size in o.sizes() {
            b.starting(&label, size);
            let mut op = b.op_for(size, redop, root, elt);
            let out_of_place = bench_time(b, bufs, &op)?;
            op.in_place = true;
            let in_place = bench_time(b, bufs, &op)?;
            let row = Row {
                size: (op.counts.total() * elt) as u64,
                count: op.counts.param,
                dtype: T::DATA_TYPE,
                redop: coll.shows_op().then_some(redop),
                root: if coll.has_root() { root as i64 } else { -1 },
                out_of_place,
                in_place,
            };
            b.record(row);
        }
    }
    Ok(())
}

/// Where the `k`-th operation of a run works in a buffer of `len` elements: successive
/// operations move through the buffer (as nccl-tests does, so small sizes do not always
/// hit the same cache lines).
fn shift(total: usize, len: usize, k: usize) -> usize {
    if total == 0 {
        return 0;
    }
    total * (k % (len / total).max(1))
}

/// Runs one operation on the first buffer pair.
fn run_single<T: TestElem>(
    comm: &mut Communicator,
    bufs: &mut Buffers<T>,
    op: &Op,
    k: usize,
) -> Result<()> {
    let total = op.counts.total();
    let at = shift(total, bufs.len, k);
    let (s, r) = &mut bufs.pairs[0];
    op.stage(&mut s[at..], &r[at..]);
    let mut g = comm.group();
    op.issue(&mut g, &s[at..at + total], &mut r[at..at + total])?;
    g.run()
}

/// One timed iteration: `-m` operations, in one group (`-z 0`, `-z 3`) or one at a time.
fn run_iteration<T: TestElem>(
    b: &mut Bench<'_>,
    bufs: &mut Buffers<T>,
    op: &Op,
    iter: usize,
) -> Result<()> {
    let total = op.counts.total();
    let m = bufs.pairs.len();
    let z = b.opts.flags.blocking;
    if z == 0 || z == 3 {
        let mut g = b.comm.group();
        for (j, (s, r)) in bufs.pairs.iter_mut().enumerate() {
            let at = shift(total, bufs.len, iter * m + j);
            op.stage(&mut s[at..], &r[at..]);
            op.issue(&mut g, &s[at..at + total], &mut r[at..at + total])?;
        }
        return g.run();
    }
    for (j, (s, r)) in bufs.pairs.iter_mut().enumerate() {
        let at = shift(total, bufs.len, iter * m + j);
        op.stage(&mut s[at..], &r[at..]);
        let mut g = b.comm.group();
        op.issue(&mut g, &s[at..at + total], &mut r[at..at + total])?;
        g.run()?;
        if z == 1 {
            b.comm.barrier()?;
        }
    }
    Ok(())
}

/// Fills the first buffer pair with the inputs of a check.
fn prepare<T: TestElem>(bufs: &mut Buffers<T>, op: &Op, p: &Pattern<T>) {
    let (s, r) = &mut bufs.pairs[0];
    let (send, recv) = op.inputs(p);
    for (range, fill) in send {
        write(&mut s[range], fill);
    }
    for (range, fill) in recv {
        write(&mut r[range], fill);
    }
}

/// Times `op` and checks it (nccl-tests' `BenchTime`).
fn bench_time<T: TestElem>(b: &mut Bench<'_>, bufs: &mut Buffers<T>, op: &Op) -> Result<Placement> {
    let o = b.opts;
    let f = &o.flags;
    let (iters, m, n) = (f.iters as usize, bufs.pairs.len(), b.comm.size() as usize);
    if f.check > 0 {
        prepare(bufs, op, &Pattern::new(op.pattern_op(), n, 0));
    }
    run_single(b.comm, bufs, op, 0)?;
    b.comm.barrier()?;

    let start = Instant::now();
    let mut ops_only = 0.0;
    for iter in 0..iters {
        let t = Instant::now();
        run_iteration(b, bufs, op, iter)?;
        if f.blocking == 3 {
            ops_only += t.elapsed().as_secs_f64();
            b.comm.barrier()?;
        }
    }
    let elapsed = if f.blocking == 3 {
        ops_only
    } else {
        start.elapsed().as_secs_f64()
    };
    let secs = b.combine_time(elapsed / (iters * m) as f64)?;
    let elt = T::DATA_TYPE.size();
    let (algbw, busbw) = op.coll.bandwidths(op.counts.param, elt, secs, n);
    b.comm.barrier()?;

    let mut wrong = None;
    for _ in 0..f.check {
        let p = Pattern::new(op.pattern_op(), n, b.next_rep());
        prepare(bufs, op, &p);
        run_single(b.comm, bufs, op, 0)?;
        let all = b.count_wrong(op, &p, &mut bufs.pairs[0].1)?;
        wrong = Some(all);
        if all > 0 {
            break;
        }
    }
    Ok(Placement::new(secs, algbw, busbw, wrong))
}

impl Placement {
    /// A measured placement (bandwidths of a zero time read as 0).
    pub(super) fn new(secs: f64, algbw: f64, busbw: f64, wrong: Option<u64>) -> Self {
        Placement {
            time_us: secs * 1e6,
            algbw: if algbw.is_finite() { algbw } else { 0.0 },
            busbw: if busbw.is_finite() { busbw } else { 0.0 },
            wrong,
        }
    }
}

impl Bench<'_> {
    /// The wrong elements of `recv` after a checked run of `op` with pattern `p`, summed over
    /// the ranks (this rank first flips one if it corrupts, `OXCCL_PERF_CORRUPT`).
    pub(super) fn count_wrong<T: TestElem>(
        &mut self,
        op: &Op,
        p: &Pattern<T>,
        recv: &mut [T],
    ) -> Result<u64> {
        let expected = op.results(p);
        if self.corrupt {
            if let Some((range, _)) = expected.iter().find(|(range, _)| !range.is_empty()) {
                flip(&mut recv[range.start]);
            }
        }
        let mine: u64 = expected
            .into_iter()
            .map(|(range, fill)| mismatches(&recv[range], fill))
            .sum();
        let mut all = [mine];
        self.comm.all_reduce_in_place(&mut all, ReduceOp::Sum)?;
        Ok(all[0])
    }
}
