//! Test values and a plain sequential reference, written independently of oxccl's kernels.

use oxccl::{bf16, f16, Element, ReduceOp};
use std::fmt::Debug;

/// An element type with reference arithmetic.
pub trait TestElem: Element + PartialEq + Debug {
    /// The value `v`, wrapping for unsigned and narrow types.
    fn from_i64(v: i64) -> Self;
    /// `a ⊕ b` as the collective defines it (avg combines by sum).
    fn combine(op: ReduceOp, a: Self, b: Self) -> Self;
    /// `a / n` (the last step of avg).
    fn div(a: Self, n: u32) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl TestElem for $t {
            fn from_i64(v: i64) -> Self { v as $t }
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                match op {
                    ReduceOp::Prod => a.wrapping_mul(b),
                    ReduceOp::Max => if a > b { a } else { b },
                    ReduceOp::Min => if a < b { a } else { b },
                    _ => a.wrapping_add(b),
                }
            }
            fn div(a: Self, n: u32) -> Self { a / (n as $t) }
        }
    )*};
}
int_elem!(i8, u8, i32, u32, i64, u64);

macro_rules! float_elem {
    ($($t:ty),*) => {$(
        impl TestElem for $t {
            fn from_i64(v: i64) -> Self { v as $t }
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                match op {
                    ReduceOp::Prod => a * b,
                    ReduceOp::Max => if a > b { a } else { b },
                    ReduceOp::Min => if a < b { a } else { b },
                    _ => a + b,
                }
            }
            fn div(a: Self, n: u32) -> Self { a / n as $t }
        }
    )*};
}
float_elem!(f32, f64);

macro_rules! half_elem {
    ($($t:ty),*) => {$(
        impl TestElem for $t {
            fn from_i64(v: i64) -> Self { <$t>::from_f32(v as f32) }
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                <$t>::from_f32(f32::combine(op, a.to_f32(), b.to_f32()))
            }
            fn div(a: Self, n: u32) -> Self { <$t>::from_f32(a.to_f32() / n as f32) }
        }
    )*};
}
half_elem!(f16, bf16);

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
