//! Datatypes, reduction operators and the element trait.

use std::fmt;

/// An element type, in NCCL's order (`ncclDataType_t` values 0..=11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataType {
    /// `i8`.
    Int8 = 0,
    /// `u8`.
    Uint8 = 1,
    /// `i32`.
    Int32 = 2,
    /// `u32`.
    Uint32 = 3,
    /// `i64`.
    Int64 = 4,
    /// `u64`.
    Uint64 = 5,
    /// IEEE 754 binary16 ([`half::f16`]).
    Float16 = 6,
    /// `f32`.
    Float32 = 7,
    /// `f64`.
    Float64 = 8,
    /// bfloat16 ([`half::bf16`]).
    Bfloat16 = 9,
    /// 8-bit float, 4 exponent and 3 mantissa bits, no infinities ([`float8::F8E4M3`]).
    Float8E4M3 = 10,
    /// 8-bit float, 5 exponent and 2 mantissa bits ([`float8::F8E5M2`]).
    Float8E5M2 = 11,
}

impl DataType {
    /// Every datatype, in NCCL's order.
    pub const ALL: [DataType; 12] = [
        DataType::Int8,
        DataType::Uint8,
        DataType::Int32,
        DataType::Uint32,
        DataType::Int64,
        DataType::Uint64,
        DataType::Float16,
        DataType::Float32,
        DataType::Float64,
        DataType::Bfloat16,
        DataType::Float8E4M3,
        DataType::Float8E5M2,
    ];

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DataType::Int8 | DataType::Uint8 | DataType::Float8E4M3 | DataType::Float8E5M2 => 1,
            DataType::Float16 | DataType::Bfloat16 => 2,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 4,
            DataType::Int64 | DataType::Uint64 | DataType::Float64 => 8,
        }
    }

    /// The name used by nccl-tests (`int8`, `float`, `bfloat16`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DataType::Int8 => "int8",
            DataType::Uint8 => "uint8",
            DataType::Int32 => "int32",
            DataType::Uint32 => "uint32",
            DataType::Int64 => "int64",
            DataType::Uint64 => "uint64",
            DataType::Float16 => "half",
            DataType::Float32 => "float",
            DataType::Float64 => "double",
            DataType::Bfloat16 => "bfloat16",
            DataType::Float8E4M3 => "f8e4m3",
            DataType::Float8E5M2 => "f8e5m2",
        }
    }

    /// Whether the type is a floating-point type.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Bfloat16
                | DataType::Float8E4M3
                | DataType::Float8E5M2
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reduction operator, in NCCL's order (`ncclRedOp_t` values 0..=4).
///
/// `Avg` sums, then divides each result element by the number of ranks once, at the rank that
/// holds the final result (integer types: truncating division, as NCCL). The sum is formed
/// in the element type, so an `f16` average whose sum exceeds 65504 becomes infinite (NCCL
/// pre-multiplies floats by 1/n instead; a scaled kernel is planned with the SIMD kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReduceOp {
    /// Sum (integers wrap).
    Sum = 0,
    /// Product (integers wrap).
    Prod = 1,
    /// Maximum (floats: a NaN operand propagates).
    Max = 2,
    /// Minimum (floats: a NaN operand propagates).
    Min = 3,
    /// Average: sum divided by the number of ranks.
    Avg = 4,
}

impl ReduceOp {
    /// Every operator, in NCCL's order.
    pub const ALL: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Avg,
    ];

    /// The name used by nccl-tests (`sum`, `prod`, `max`, `min`, `avg`).
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Avg => "avg",
        }
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type oxccl can communicate: one of the [`DataType`]s.
///
/// Sealed: implemented for `i8, u8, i32, u32, i64, u64, f16, f32, f64, bf16, F8E4M3, F8E5M2`
/// only.
pub trait Element: bytemuck::Pod + sealed::Sealed + Send + Sync {
    /// The datatype this Rust type stands for.
    const DATA_TYPE: DataType;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DATA_TYPE: DataType = DataType::$d;
        }
    )*};
}

element!(
    i8 => Int8, u8 => Uint8, i32 => Int32, u32 => Uint32, i64 => Int64, u64 => Uint64,
    half::f16 => Float16, f32 => Float32, f64 => Float64, half::bf16 => Bfloat16,
    float8::F8E4M3 => Float8E4M3, float8::F8E5M2 => Float8E5M2,
);
