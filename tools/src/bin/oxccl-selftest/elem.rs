//! Test values and a plain sequential reference (the element arithmetic is shared with
//! `oxccl-perf` in `oxccl_tools::elem`).

use oxccl::ReduceOp;
pub use oxccl_tools::elem::TestElem;

/// Input element `i` of rank `rank`, chosen so every result is exact in every type:
/// sums of at most 8 values in -5..=5, products of at most two 2s, maxima of small values.
pub fn value(op: ReduceOp, rank: usize, i: usize) -> i64 {
    match op {
        ReduceOp::Prod => [1, 2, 1, -1, 1][(rank + i) % 5],
        ReduceOp::Max | ReduceOp::Min => ((rank * 31 + i * 17) % 101) as i64 - 50,
        _ => ((rank * 7 + i * 13) % 11) as i64 - 5,
    }
}

/// The reduction over all ranks of element `i` (sequential left fold, then avg's division).
pub fn reduced<T: TestElem>(op: ReduceOp, nranks: usize, i: usize) -> T {
    let mut acc = T::from_i64(value(op, 0, i));
    for r in 1..nranks {
        acc = T::combine(op, acc, T::from_i64(value(op, r, i)));
    }
    if op == ReduceOp::Avg {
        acc = T::div(acc, nranks as u32);
    }
    acc
}
