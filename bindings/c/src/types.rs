//! Datatypes and reduction operators: NCCL's values to oxccl's, and PreMulSum scaling.

use crate::error::{CResult, Failure};
use crate::ffi::{self, NcclDataType, NcclRedOp};
use half::{bf16, f16};
use oxccl::{DataType, ReduceOp};

/// A reduction as an op runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RedOp {
    /// sum, prod, max, min, avg.
    Builtin(ReduceOp),
    /// Multiply each input element by the scalar, then sum.
    PreMul(Scalar),
}

/// A PreMulSum scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// Read when the operator was created (`ncclScalarHostImmediate`): the bytes of one
    /// element of the op's datatype, zero-padded.
    Value([u8; 8]),
    /// Read each time an op with it runs (`ncclScalarDevice`; the memory is host memory in
    /// this build): the element's address.
    At(usize),
}

impl RedOp {
    /// The oxccl operator the op runs (PreMulSum sums the scaled inputs).
    pub fn reduce_op(self) -> ReduceOp {
        match self {
            RedOp::Builtin(r) => r,
            RedOp::PreMul(_) => ReduceOp::Sum,
        }
    }
}

/// oxccl's datatype for NCCL's `d` (0..=11, fp8 included); other values are argument errors.
pub fn datatype(d: NcclDataType) -> CResult<DataType> {
    let i = usize::try_from(d).ok();
    if let Some(t) = i.and_then(|i| DataType::ALL.get(i)) {
        return Ok(*t);
    }
    Err(Failure::invalid(format!(
        "invalid datatype {d} (expected 0..{})",
        ffi::NUM_TYPES
    )))
}

/// oxccl's operator for a built-in `ncclRedOp_t`.
pub fn builtin_op(op: NcclRedOp) -> Option<ReduceOp> {
    usize::try_from(op)
        .ok()
        .and_then(|i| ReduceOp::ALL.get(i))
        .copied()
}

/// Reads a scalar of `dtype` from `bytes` (at least `dtype.size()` long) into 8 bytes.
pub fn scalar_bytes(dtype: DataType, bytes: &[u8]) -> [u8; 8] {
    let mut s = [0u8; 8];
    let n = dtype.size().min(8).min(bytes.len());
    s[..n].copy_from_slice(&bytes[..n]);
    s
}

fn scale_as<T: bytemuck::Pod>(buf: &mut [u8], scalar: &[u8; 8], mul: impl Fn(T, T) -> T) {
    let k: T = bytemuck::pod_read_unaligned(&scalar[..std::mem::size_of::<T>()]);
    for chunk in buf.chunks_exact_mut(std::mem::size_of::<T>()) {
        let v: T = bytemuck::pod_read_unaligned(chunk);
        chunk.copy_from_slice(bytemuck::bytes_of(&mul(v, k)));
    }
}

/// Multiplies every `dtype` element of `buf` by the scalar (integers wrap; 16- and 8-bit
/// floats multiply in f32 and round once).
pub fn scale(dtype: DataType, buf: &mut [u8], scalar: &[u8; 8]) -> CResult<()> {
    match dtype {
        DataType::Int8 => scale_as::<i8>(buf, scalar, i8::wrapping_mul),
        DataType::Uint8 => scale_as::<u8>(buf, scalar, u8::wrapping_mul),
        DataType::Int32 => scale_as::<i32>(buf, scalar, i32::wrapping_mul),
        DataType::Uint32 => scale_as::<u32>(buf, scalar, u32::wrapping_mul),
        DataType::Int64 => scale_as::<i64>(buf, scalar, i64::wrapping_mul),
        DataType::Uint64 => scale_as::<u64>(buf, scalar, u64::wrapping_mul),
        DataType::Float16 => {
            scale_as::<f16>(buf, scalar, |a, b| f16::from_f32(a.to_f32() * b.to_f32()))
        }
        DataType::Bfloat16 => {
            scale_as::<bf16>(buf, scalar, |a, b| bf16::from_f32(a.to_f32() * b.to_f32()))
        }
        DataType::Float32 => scale_as::<f32>(buf, scalar, |a, b| a * b),
        DataType::Float64 => scale_as::<f64>(buf, scalar, |a, b| a * b),
        DataType::Float8E4M3 => scale_as::<oxccl::F8E4M3>(buf, scalar, |a, b| {
            oxccl::F8E4M3::from_f32(a.to_f32() * b.to_f32())
        }),
        DataType::Float8E5M2 => scale_as::<oxccl::F8E5M2>(buf, scalar, |a, b| {
            oxccl::F8E5M2::from_f32(a.to_f32() * b.to_f32())
        }),
        other => {
            return Err(Failure::new(
                ffi::INTERNAL_ERROR,
                format!("no PreMulSum scaling for datatype {other}"),
            ))
        }
    }
    Ok(())
}

/// Runs `$body` with `$T` bound to the Rust element type of the oxccl `DataType` `$dt`.
#[macro_export]
#[doc(hidden)]
macro_rules! with_element {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            oxccl::DataType::Int8 => {
                type $T = i8;
                $body
            }
            oxccl::DataType::Uint8 => {
                type $T = u8;
                $body
            }
            oxccl::DataType::Int32 => {
                type $T = i32;
                $body
            }
            oxccl::DataType::Uint32 => {
                type $T = u32;
                $body
            }
            oxccl::DataType::Int64 => {
                type $T = i64;
                $body
            }
            oxccl::DataType::Uint64 => {
                type $T = u64;
                $body
            }
            oxccl::DataType::Float16 => {
                type $T = half::f16;
                $body
            }
            oxccl::DataType::Float32 => {
                type $T = f32;
                $body
            }
            oxccl::DataType::Float64 => {
                type $T = f64;
                $body
            }
            oxccl::DataType::Bfloat16 => {
                type $T = half::bf16;
                $body
            }
            oxccl::DataType::Float8E4M3 => {
                type $T = oxccl::F8E4M3;
                $body
            }
            oxccl::DataType::Float8E5M2 => {
                type $T = oxccl::F8E5M2;
                $body
            }
            other => Err($crate::error::Failure::new(
                $crate::ffi::INTERNAL_ERROR,
                format!("datatype {other} has no element type"),
            )),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatypes_and_ops() {
        assert_eq!(datatype(0).unwrap(), DataType::Int8);
        assert_eq!(datatype(9).unwrap(), DataType::Bfloat16);
        assert_eq!(datatype(10).unwrap(), DataType::Float8E4M3);
        assert_eq!(datatype(11).unwrap(), DataType::Float8E5M2);
        let e = datatype(12).unwrap_err();
        assert!(e.message.contains("invalid datatype 12"), "{e:?}");
        assert_eq!(e.code, ffi::INVALID_ARGUMENT);
        assert!(datatype(-1).is_err());
        assert_eq!(builtin_op(4), Some(ReduceOp::Avg));
        assert_eq!(builtin_op(5), None);
    }

    #[test]
    fn premul_scaling() {
        let mut b = bytemuck::cast_slice::<f32, u8>(&[1.0, -2.0]).to_vec();
        scale(
            DataType::Float32,
            &mut b,
            &scalar_bytes(DataType::Float32, &0.5f32.to_le_bytes()),
        )
        .unwrap();
        assert_eq!(bytemuck::cast_slice::<u8, f32>(&b), &[0.5, -1.0]);
        let mut b = vec![3u8, 200];
        scale(
            DataType::Uint8,
            &mut b,
            &scalar_bytes(DataType::Uint8, &[2]),
        )
        .unwrap();
        assert_eq!(b, [6, 144]);
        // fp8 e4m3, times 2: 3 -> 6, 448 saturates at 448 (0x7e), -1 -> -2.
        let mut b = vec![0x44u8, 0x7e, 0xb8];
        let two = oxccl::F8E4M3::from_f32(2.0).to_bits();
        scale(
            DataType::Float8E4M3,
            &mut b,
            &scalar_bytes(DataType::Float8E4M3, &[two]),
        )
        .unwrap();
        assert_eq!(b, [0x44 + 8, 0x7e, 0xb8 + 8]);
    }
}
