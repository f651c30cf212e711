//! Reference arithmetic on oxccl's element types, written independently of oxccl's kernels,
//! shared by `oxccl-selftest` and `oxccl-perf` to predict collective results exactly.

use oxccl::{bf16, f16, Element, ReduceOp, F8E4M3, F8E5M2};
use std::fmt::Debug;

/// What the GPU side needs of an element type: cudarc's marker (every oxccl element type has
/// it) with feature `cuda`, nothing without.
#[cfg(feature = "cuda")]
pub trait GpuElem: oxccl::cuda::cudarc::driver::DeviceRepr {}
#[cfg(feature = "cuda")]
impl<T: oxccl::cuda::cudarc::driver::DeviceRepr> GpuElem for T {}
/// What the GPU side needs of an element type (nothing without feature `cuda`).
#[cfg(not(feature = "cuda"))]
pub trait GpuElem {}
#[cfg(not(feature = "cuda"))]
impl<T> GpuElem for T {}

/// An element type with reference arithmetic.
pub trait TestElem: Element + PartialEq + Debug + GpuElem {
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
            // In i128: the rank count may not fit the element type (int8 on 200 ranks).
            fn div(a: Self, n: u32) -> Self { (a as i128 / n as i128) as $t }
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

// 8-bit floats hold integers exactly only up to 16 (e4m3) and 8 (e5m2): the small values of
// the sum and product patterns (|v| <= 5) are squeezed into -1..=1, so a sum of 8 of them
// is exact in any order; larger values (the max/min patterns) are rounded, the same way on
// every rank and in the reference, so maxima and minima stay exact.
macro_rules! fp8_elem {
    ($($t:ty),*) => {$(
        impl TestElem for $t {
            fn from_i64(v: i64) -> Self {
                let v = if v.abs() <= 5 { v.clamp(-1, 1) } else { v };
                <$t>::from_f32(v as f32)
            }
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                <$t>::from_f32(f32::combine(op, a.to_f32(), b.to_f32()))
            }
            fn div(a: Self, n: u32) -> Self { <$t>::from_f32(a.to_f32() / n as f32) }
        }
    )*};
}
fp8_elem!(F8E4M3, F8E5M2);

/// Calls `$f::<T>($args)` with `T` the Rust type of the [`oxccl::DataType`] `$dt`.
///
/// `$otherwise` is the value for a datatype this crate does not know (the enum is
/// non-exhaustive).
#[macro_export]
macro_rules! for_dtype {
    ($dt:expr, $otherwise:expr, $f:ident, $($arg:expr),*) => {
        match $dt {
            ::oxccl::DataType::Int8 => $f::<i8>($($arg),*),
            ::oxccl::DataType::Uint8 => $f::<u8>($($arg),*),
            ::oxccl::DataType::Int32 => $f::<i32>($($arg),*),
            ::oxccl::DataType::Uint32 => $f::<u32>($($arg),*),
            ::oxccl::DataType::Int64 => $f::<i64>($($arg),*),
            ::oxccl::DataType::Uint64 => $f::<u64>($($arg),*),
            ::oxccl::DataType::Float16 => $f::<::oxccl::f16>($($arg),*),
            ::oxccl::DataType::Float32 => $f::<f32>($($arg),*),
            ::oxccl::DataType::Float64 => $f::<f64>($($arg),*),
            ::oxccl::DataType::Bfloat16 => $f::<::oxccl::bf16>($($arg),*),
            ::oxccl::DataType::Float8E4M3 => $f::<::oxccl::F8E4M3>($($arg),*),
            ::oxccl::DataType::Float8E5M2 => $f::<::oxccl::F8E5M2>($($arg),*),
            _ => $otherwise,
        }
    };
}
