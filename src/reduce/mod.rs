//! Reduction kernels on byte slices, dispatched on [`DataType`] × [`ReduceOp`].
//!
//! Loops are compiled once per instruction set (AVX-512, AVX2+FMA on x86-64; NEON on
//! aarch64; scalar elsewhere) through `pulp` and the best one is chosen at run time.
//!
//! Integers wrap on overflow (sum, product), as NCCL. `f16`, `bf16` and the 8-bit floats are
//! widened to `f32`, combined, and rounded back to nearest-even once per pairwise combination
//! (8-bit floats saturate to their largest finite value, as NVIDIA's conversions do); a ring reduction
//! of `p` ranks therefore rounds `p-1` times, exactly like a sequential left fold in the
//! 16-bit type. Max/min propagate NaN. `Avg` reduces with sum; the engine then calls
//! [`divide`] once on the final result.
//!
//! Buffers are byte slices whose lengths are multiples of the element size. Aligned slices
//! (the normal case: user slices, transport slots) are processed in place through `bytemuck`
//! casts; an unaligned slice takes a copying path instead of failing.

use crate::types::{DataType, ReduceOp};
use bytemuck::Pod;
use float8::{F8E4M3, F8E5M2};
use half::{bf16, f16};

/// Arithmetic of one element type.
trait Arith: Pod {
    fn sum(a: Self, b: Self) -> Self;
    fn prod(a: Self, b: Self) -> Self;
    fn max(a: Self, b: Self) -> Self;
    fn min(a: Self, b: Self) -> Self;
    fn div(a: Self, n: u32) -> Self;
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            #[inline(always)]
            fn sum(a: Self, b: Self) -> Self { a.wrapping_add(b) }
            #[inline(always)]
            fn prod(a: Self, b: Self) -> Self { a.wrapping_mul(b) }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self { Ord::max(a, b) }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self { Ord::min(a, b) }
            #[inline(always)]
            fn div(a: Self, n: u32) -> Self {
                // Truncating division in a wide type: `n` may not fit `Self`.
                (a as i128 / n as i128) as Self
            }
        }
    )*};
}
int_arith!(i8, u8, i32, u32, i64, u64);

macro_rules! float_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            #[inline(always)]
            fn sum(a: Self, b: Self) -> Self { a + b }
            #[inline(always)]
            fn prod(a: Self, b: Self) -> Self { a * b }
            // IEEE 754-2019's maximum/minimum: NaN wins, and +0 is above -0 (the sum of two
            // zeros is -0 only when both are; -(-a - b) the reverse). std's max/min leave
            // the zeros' order open; the GPU kernels do the same as here.
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                if a.is_nan() || b.is_nan() { <$t>::NAN }
                else if a == b && a == 0.0 { a + b }
                else if a > b { a } else { b }
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                if a.is_nan() || b.is_nan() { <$t>::NAN }
                else if a == b && a == 0.0 { -(-a - b) }
                else if a < b { a } else { b }
            }
            #[inline(always)]
            fn div(a: Self, n: u32) -> Self { a / n as $t }
        }
    )*};
}
float_arith!(f32, f64);

macro_rules! half_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            #[inline(always)]
            fn sum(a: Self, b: Self) -> Self { <$t>::from_f32(a.to_f32() + b.to_f32()) }
            #[inline(always)]
            fn prod(a: Self, b: Self) -> Self { <$t>::from_f32(a.to_f32() * b.to_f32()) }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self { <$t>::from_f32(f32::max_nan(a.to_f32(), b.to_f32())) }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self { <$t>::from_f32(f32::min_nan(a.to_f32(), b.to_f32())) }
            #[inline(always)]
            fn div(a: Self, n: u32) -> Self { <$t>::from_f32(a.to_f32() / n as f32) }
        }
    )*};
}
half_arith!(f16, bf16);

// 8-bit floats the same way: widened to f32, combined, rounded back once (nearest even,
// saturating to the largest finite value, NaN kept), as NVIDIA's conversions do.
half_arith!(F8E4M3, F8E5M2);

/// NaN-propagating max/min on `f32`, shared by the 16-bit types.
trait NanMinMax {
    fn max_nan(a: f32, b: f32) -> f32;
    fn min_nan(a: f32, b: f32) -> f32;
}
impl NanMinMax for f32 {
    fn max_nan(a: f32, b: f32) -> f32 {
        <f32 as Arith>::max(a, b)
    }
    fn min_nan(a: f32, b: f32) -> f32 {
        <f32 as Arith>::min(a, b)
    }
}

/// The best instruction set of this CPU (AVX-512, AVX2+FMA, NEON, or scalar), detected once.
fn arch() -> pulp::Arch {
    static ARCH: std::sync::OnceLock<pulp::Arch> = std::sync::OnceLock::new();
    *ARCH.get_or_init(pulp::Arch::new)
}

/// `dst[i] = f(a[i], b[i])`.
struct Zip2<'a, T, F> {
    dst: &'a mut [T],
    a: &'a [T],
    b: &'a [T],
    f: F,
}

impl<T: Pod, F: Fn(T, T) -> T> pulp::WithSimd for Zip2<'_, T, F> {
    type Output = ();
    // Inlined into pulp's per-instruction-set entry points, so the plain loop below is
    // compiled (and auto-vectorised) once for each instruction set and picked at run time.
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for ((d, &x), &y) in self.dst.iter_mut().zip(self.a).zip(self.b) {
            *d = (self.f)(x, y);
        }
    }
}

/// `dst[i] = out[i] = f(a[i], b[i])`: one pass for a step that keeps its result and sends it.
struct Zip2Both<'a, T, F> {
    dst: &'a mut [T],
    out: &'a mut [T],
    a: &'a [T],
    b: &'a [T],
    f: F,
}

impl<T: Pod, F: Fn(T, T) -> T> pulp::WithSimd for Zip2Both<'_, T, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let it = self.dst.iter_mut().zip(self.out.iter_mut());
        for (((d, o), &x), &y) in it.zip(self.a).zip(self.b) {
            let v = (self.f)(x, y);
            *d = v;
            *o = v;
        }
    }
}

/// `acc[i] = f(acc[i], b[i])`.
struct Zip1<'a, T, F> {
    acc: &'a mut [T],
    b: &'a [T],
    f: F,
}

impl<T: Pod, F: Fn(T, T) -> T> pulp::WithSimd for Zip1<'_, T, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (d, &y) in self.acc.iter_mut().zip(self.b) {
            *d = (self.f)(*d, y);
        }
    }
}

/// `dst[i] = f(a[i], b[i])` with runtime SIMD dispatch.
#[inline(always)]
fn zip2<T: Pod>(dst: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    arch().dispatch(Zip2 { dst, a, b, f });
}

fn reduce_to_both_typed<T: Arith>(
    op: ReduceOp,
    dst: &mut [u8],
    out: &mut [u8],
    a: &[u8],
    b: &[u8],
) {
    let (a, b) = (view::<T>(a), view::<T>(b));
    with_mut::<T>(dst, |dst| {
        with_mut::<T>(out, |out| {
            let (a, b): (&[T], &[T]) = (&a, &b);
            match op {
                ReduceOp::Sum | ReduceOp::Avg => arch().dispatch(Zip2Both {
                    dst,
                    out,
                    a,
                    b,
                    f: T::sum,
                }),
                ReduceOp::Prod => arch().dispatch(Zip2Both {
                    dst,
                    out,
                    a,
                    b,
                    f: T::prod,
                }),
                ReduceOp::Max => arch().dispatch(Zip2Both {
                    dst,
                    out,
                    a,
                    b,
                    f: T::max,
                }),
                ReduceOp::Min => arch().dispatch(Zip2Both {
                    dst,
                    out,
                    a,
                    b,
                    f: T::min,
                }),
            }
        })
    });
}

/// `acc[i] = f(acc[i], b[i])` with runtime SIMD dispatch.
#[inline(always)]
fn zip1<T: Pod>(acc: &mut [T], b: &[T], f: impl Fn(T, T) -> T) {
    arch().dispatch(Zip1 { acc, b, f });
}

/// Typed view of a byte slice, or an owned aligned copy when it is unaligned.
fn view<T: Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

/// Runs `f` on a typed mutable view of `bytes`, copying through an aligned buffer if needed.
fn with_mut<T: Pod>(bytes: &mut [u8], f: impl FnOnce(&mut [T])) {
    match bytemuck::try_cast_slice_mut(bytes) {
        Ok(s) => f(s),
        Err(_) => {
            let mut tmp: Vec<T> = bytemuck::pod_collect_to_vec(bytes);
            f(&mut tmp);
            bytes.copy_from_slice(bytemuck::cast_slice(&tmp));
        }
    }
}

fn reduce_to_typed<T: Arith>(op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    let (a, b) = (view::<T>(a), view::<T>(b));
    with_mut::<T>(dst, |d| match op {
        ReduceOp::Sum | ReduceOp::Avg => zip2(d, &a, &b, T::sum),
        ReduceOp::Prod => zip2(d, &a, &b, T::prod),
        ReduceOp::Max => zip2(d, &a, &b, T::max),
        ReduceOp::Min => zip2(d, &a, &b, T::min),
    });
}

fn reduce_into_typed<T: Arith>(op: ReduceOp, acc: &mut [u8], b: &[u8]) {
    let b = view::<T>(b);
    with_mut::<T>(acc, |d| match op {
        ReduceOp::Sum | ReduceOp::Avg => zip1(d, &b, T::sum),
        ReduceOp::Prod => zip1(d, &b, T::prod),
        ReduceOp::Max => zip1(d, &b, T::max),
        ReduceOp::Min => zip1(d, &b, T::min),
    });
}

/// 16-bit floats in blocks: widen both operands to `f32` with `half`'s slice conversions
/// (F16C instructions where the CPU has them, detected at run time), combine in `f32`, and
/// round back once. Same results as the element-wise path, several times faster.
trait Half16: Arith
where
    [Self]: half::slice::HalfFloatSliceExt,
{
}
impl Half16 for f16 {}
impl Half16 for bf16 {}

const BLOCK: usize = 256;

fn reduce_to_half<T: Half16>(op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8])
where
    [T]: half::slice::HalfFloatSliceExt,
{
    use half::slice::HalfFloatSliceExt;
    let (a, b) = (view::<T>(a), view::<T>(b));
    let (mut fa, mut fb) = ([0f32; BLOCK], [0f32; BLOCK]);
    with_mut::<T>(dst, |d| {
        for ((d, a), b) in d
            .chunks_mut(BLOCK)
            .zip(a.chunks(BLOCK))
            .zip(b.chunks(BLOCK))
        {
            let n = d.len();
            a.convert_to_f32_slice(&mut fa[..n]);
            b.convert_to_f32_slice(&mut fb[..n]);
            combine_f32(op, &mut fa[..n], &fb[..n]);
            d.convert_from_f32_slice(&fa[..n]);
        }
    });
}

fn reduce_into_half<T: Half16>(op: ReduceOp, acc: &mut [u8], b: &[u8])
where
    [T]: half::slice::HalfFloatSliceExt,
{
    use half::slice::HalfFloatSliceExt;
    let b = view::<T>(b);
    let (mut fa, mut fb) = ([0f32; BLOCK], [0f32; BLOCK]);
    with_mut::<T>(acc, |d| {
        for (d, b) in d.chunks_mut(BLOCK).zip(b.chunks(BLOCK)) {
            let n = d.len();
            d.convert_to_f32_slice(&mut fa[..n]);
            b.convert_to_f32_slice(&mut fb[..n]);
            combine_f32(op, &mut fa[..n], &fb[..n]);
            d.convert_from_f32_slice(&fa[..n]);
        }
    });
}

/// `acc = acc ⊕ b` on widened values.
fn combine_f32(op: ReduceOp, acc: &mut [f32], b: &[f32]) {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => zip1(acc, b, f32::sum),
        ReduceOp::Prod => zip1(acc, b, f32::prod),
        ReduceOp::Max => zip1(acc, b, <f32 as Arith>::max),
        ReduceOp::Min => zip1(acc, b, <f32 as Arith>::min),
    }
}

fn divide_typed<T: Arith>(buf: &mut [u8], n: u32) {
    with_mut::<T>(buf, |d| d.iter_mut().for_each(|x| *x = T::div(*x, n)));
}

macro_rules! dispatch {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DataType::Int8 => $f::<i8>($($arg),*),
            DataType::Uint8 => $f::<u8>($($arg),*),
            DataType::Int32 => $f::<i32>($($arg),*),
            DataType::Uint32 => $f::<u32>($($arg),*),
            DataType::Int64 => $f::<i64>($($arg),*),
            DataType::Uint64 => $f::<u64>($($arg),*),
            DataType::Float16 => $f::<f16>($($arg),*),
            DataType::Float32 => $f::<f32>($($arg),*),
            DataType::Float64 => $f::<f64>($($arg),*),
            DataType::Bfloat16 => $f::<bf16>($($arg),*),
            DataType::Float8E4M3 => $f::<F8E4M3>($($arg),*),
            DataType::Float8E5M2 => $f::<F8E5M2>($($arg),*),
        }
    };
}

/// `dst = a ⊕ b`. All three slices have the same length, a multiple of the element size.
pub fn reduce_to(dtype: DataType, op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    debug_assert!(dst.len() == a.len() && a.len() == b.len());
    match dtype {
        DataType::Float16 => reduce_to_half::<f16>(op, dst, a, b),
        DataType::Bfloat16 => reduce_to_half::<bf16>(op, dst, a, b),
        _ => dispatch!(dtype, reduce_to_typed, op, dst, a, b),
    }
}

/// `dst = out = a ⊕ b` in one pass (the recv-reduce-copy-send step keeps the result and
/// sends it). 16-bit floats take the blocked path and then copy.
pub fn reduce_to_both(
    dtype: DataType,
    op: ReduceOp,
    dst: &mut [u8],
    out: &mut [u8],
    a: &[u8],
    b: &[u8],
) {
    debug_assert!(dst.len() == a.len() && a.len() == b.len() && out.len() == dst.len());
    match dtype {
        DataType::Float16 | DataType::Bfloat16 => {
            reduce_to(dtype, op, dst, a, b);
            out.copy_from_slice(dst);
        }
        _ => dispatch!(dtype, reduce_to_both_typed, op, dst, out, a, b),
    }
}

/// `acc = acc ⊕ b`.
pub fn reduce_into(dtype: DataType, op: ReduceOp, acc: &mut [u8], b: &[u8]) {
    debug_assert_eq!(acc.len(), b.len());
    match dtype {
        DataType::Float16 => reduce_into_half::<f16>(op, acc, b),
        DataType::Bfloat16 => reduce_into_half::<bf16>(op, acc, b),
        _ => dispatch!(dtype, reduce_into_typed, op, acc, b),
    }
}

/// Divides every element by `n` (the final step of `Avg`).
pub fn divide(dtype: DataType, buf: &mut [u8], n: u32) {
    dispatch!(dtype, divide_typed, buf, n)
}

#[cfg(test)]
mod tests;
