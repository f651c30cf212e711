//! The CUDA C source of oxccl's device kernels, generated for every datatype × reduction.
//!
//! Every kernel is `extern "C"` (stable names for the module loader) and grid-strided. The
//! bulk moves in 16-byte vectors (`uint4`: one load per operand per thread and step) when all
//! pointers are 16-byte aligned, the tail element by element. The source needs no CUDA
//! header: 16-bit floats are converted with PTX `cvt` instructions (f16) and bit arithmetic
//! (bf16, round to nearest even), 8-bit floats with integer arithmetic (round to nearest
//! even, saturating to the largest finite value, NaN kept: what NVIDIA's `satfinite`
//! conversions do, on any architecture), so NVRTC compiles it with nothing but itself.
//!
//! Semantics match the CPU kernels (`oxccl::reduce`): integers wrap, max/min propagate NaN,
//! 16- and 8-bit floats are widened to f32, combined and rounded once per combination, `avg` is a sum
//! followed by `oxccl_divide_*`.

use std::fmt::Write as _;

/// An element type as the kernels see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelType {
    /// Suffix of the kernel names (`f32`, `bf16`).
    pub name: &'static str,
    /// The C type the kernel stores.
    c_type: &'static str,
    /// How two values combine: integers wrap through this unsigned type.
    kind: Kind,
    /// Bytes per element.
    pub size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Plain C arithmetic on `c_type` (f32, f64).
    Float,
    /// Integer with wrapping arithmetic through the given unsigned type.
    Int(&'static str),
    /// IEEE half, combined in f32.
    F16,
    /// bfloat16, combined in f32.
    Bf16,
    /// 8-bit float with 4 exponent and 3 mantissa bits, combined in f32.
    F8E4M3,
    /// 8-bit float with 5 exponent and 2 mantissa bits, combined in f32.
    F8E5M2,
}

/// Every element type, in `oxccl::DataType` order.
pub const TYPES: [KernelType; 12] = [
    KernelType {
        name: "i8",
        c_type: "signed char",
        kind: Kind::Int("unsigned char"),
        size: 1,
    },
    KernelType {
        name: "u8",
        c_type: "unsigned char",
        kind: Kind::Int("unsigned char"),
        size: 1,
    },
    KernelType {
        name: "i32",
        c_type: "int",
        kind: Kind::Int("unsigned int"),
        size: 4,
    },
    KernelType {
        name: "u32",
        c_type: "unsigned int",
        kind: Kind::Int("unsigned int"),
        size: 4,
    },
    KernelType {
        name: "i64",
        c_type: "long long",
        kind: Kind::Int("unsigned long long"),
        size: 8,
    },
    KernelType {
        name: "u64",
        c_type: "unsigned long long",
        kind: Kind::Int("unsigned long long"),
        size: 8,
    },
    KernelType {
        name: "f16",
        c_type: "unsigned short",
        kind: Kind::F16,
        size: 2,
    },
    KernelType {
        name: "f32",
        c_type: "float",
        kind: Kind::Float,
        size: 4,
    },
    KernelType {
        name: "f64",
        c_type: "double",
        kind: Kind::Float,
        size: 8,
    },
    KernelType {
        name: "bf16",
        c_type: "unsigned short",
        kind: Kind::Bf16,
        size: 2,
    },
    KernelType {
        name: "f8e4m3",
        c_type: "unsigned char",
        kind: Kind::F8E4M3,
        size: 1,
    },
    KernelType {
        name: "f8e5m2",
        c_type: "unsigned char",
        kind: Kind::F8E5M2,
        size: 1,
    },
];

/// The combining reductions (`avg` is `sum`, then a divide).
pub const OPS: [&str; 4] = ["sum", "prod", "max", "min"];

/// `oxccl_reduce_<op>_<type>(dst, a, b, n)`: `dst[i] = a[i] op b[i]` for `n` elements
/// (`dst` may be `a` or `b`).
pub fn reduce_kernel_name(op: &str, t: &KernelType) -> String {
    format!("oxccl_reduce_{op}_{}", t.name)
}

/// `oxccl_peer_<op>_<type>(ptrs, nin, nout, first, count)`: with `ptrs` holding `nin` input
/// addresses then `nout` output addresses (device memory, or peers' memory mapped through
/// CUDA IPC), writes `in_0[i] op … op in_{nin-1}[i]` to every output, for `i` in
/// `first..first + count`. Each element is read from every input before any output is
/// written, so an output may be an input (in place). One input is a copy to every output.
/// The peer collectives are this kernel with different address lists (`peer::plan`): an
/// all-reduce's ranks give it disjoint ranges of all inputs and outputs, and together they
/// reduce and distribute the whole buffer in one pass.
pub fn peer_kernel_name(op: &str, t: &KernelType) -> String {
    format!("oxccl_peer_{op}_{}", t.name)
}

/// `oxccl_divide_<type>(buf, n, divisor)`: `buf[i] /= divisor`.
pub fn divide_kernel_name(t: &KernelType) -> String {
    format!("oxccl_divide_{}", t.name)
}

/// `oxccl_copy(dst, src, bytes)`.
pub const COPY_KERNEL: &str = "oxccl_copy";

/// Checks the byte lengths of a reduction's three buffers: equal, whole elements of `t`.
pub fn check_reduce_lengths(t: &KernelType, dst: usize, a: usize, b: usize) -> crate::Result<()> {
    if a != dst || b != dst || dst % t.size != 0 {
        return Err(crate::Error::Config(format!(
            "reduce of {dst} / {a} / {b} bytes of {}-byte elements",
            t.size
        )));
    }
    Ok(())
}

/// Every kernel name in [`source`].
pub fn kernel_names() -> Vec<String> {
    let mut v: Vec<String> = TYPES
        .iter()
        .flat_map(|t| OPS.iter().map(move |op| reduce_kernel_name(op, t)))
        .collect();
    v.extend(
        TYPES
            .iter()
            .flat_map(|t| OPS.iter().map(move |op| peer_kernel_name(op, t))),
    );
    v.extend(TYPES.iter().map(divide_kernel_name));
    v.push(COPY_KERNEL.to_owned());
    v
}

/// Helpers shared by the kernels.
const PRELUDE: &str = r#"// Generated by oxccl (transports/src/cuda/kernels.rs). Do not edit.
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short f32_to_f16(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
#else  // the host build of the tests (host.rs): the compiler's own IEEE half
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    _Float16 v; std::memcpy(&v, &h, 2); return (float)v;
}
__device__ __forceinline__ unsigned short f32_to_f16(float f) {
    _Float16 v = (_Float16)f; unsigned short h; std::memcpy(&h, &v, 2); return h;
}
#endif
__device__ __forceinline__ float bf16_to_f32(unsigned short b) {
    return __uint_as_float(((unsigned int)b) << 16);
}
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                                  // nearest even
    return (unsigned short)(u >> 16);
}
// 8-bit floats. f32 -> fp8 with `m` mantissa bits and exponent `bias`: round to nearest even,
// magnitudes from `sat` (f32 bits; infinities included) saturate to `max_code`, NaN becomes
// `nan_code`; below the smallest subnormal's half, a signed zero.
__device__ __forceinline__ unsigned char f32_to_fp8(float f, int m, int bias, unsigned sat,
                                                    unsigned char max_code, unsigned char nan_code) {
    unsigned u = __float_as_uint(f);
    unsigned char sign = (unsigned char)((u >> 24) & 0x80u);
    unsigned a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | nan_code;
    if (a >= sat) return sign | max_code;
    int ef = (int)(a >> 23) - 127;
    if (ef < -126) return sign;                       // zero or an f32 subnormal
    unsigned sig = (a & 0x7fffffu) | 0x800000u;       // value = sig * 2^(ef - 23)
    int e = ef < 1 - bias ? 1 - bias : ef;            // fp8 exponent (subnormals: the minimum)
    int s = 23 + e - m - ef;                          // sig >> s counts fp8 steps of 2^(e - m)
    if (s > 24) return sign;
    unsigned k = sig >> s, rem = sig & ((1u << s) - 1u), half = 1u << (s - 1);
    if (rem > half || (rem == half && (k & 1u))) k += 1u;
    if (k >= (2u << m)) { e += 1; k >>= 1; }          // rounded up into the next binade
    if (k < (1u << m)) return sign | (unsigned char)k; // subnormal (exponent field 0)
    return sign | (unsigned char)((((unsigned)(e + bias)) << m) | (k - (1u << m)));
}
// e4m3: bias 7, no infinities, S.1111.111 is NaN, 448 the largest; above 464 saturates.
__device__ __forceinline__ unsigned char f32_to_f8e4m3(float f) {
    return f32_to_fp8(f, 3, 7, 0x43e80001u, 0x7e, 0x7f);
}
// e5m2: bias 15, IEEE-like; 57344 the largest; from 61440 on saturates.
__device__ __forceinline__ unsigned char f32_to_f8e5m2(float f) {
    return f32_to_fp8(f, 2, 15, 0x47700000u, 0x7b, 0x7e);
}
__device__ __forceinline__ float f8e4m3_to_f32(unsigned char c) {
    unsigned sign = ((unsigned)c & 0x80u) << 24, e = ((unsigned)c >> 3) & 0xfu, m = (unsigned)c & 7u;
    if (e == 15u && m == 7u) return __uint_as_float(0x7fc00000u);
    if (e == 0u) return __uint_as_float(sign | __float_as_uint((float)m * 0.001953125f)); // m * 2^-9
    return __uint_as_float(sign | ((e + 120u) << 23) | (m << 20));
}
__device__ __forceinline__ float f8e5m2_to_f32(unsigned char c) {
    unsigned sign = ((unsigned)c & 0x80u) << 24, e = ((unsigned)c >> 2) & 0x1fu, m = (unsigned)c & 3u;
    if (e == 31u) return __uint_as_float(sign | (m ? 0x7fc00000u : 0x7f800000u));
    if (e == 0u) return __uint_as_float(sign | __float_as_uint((float)m * 0.0000152587890625f)); // m * 2^-16
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 21));
}
// max/min as IEEE 754-2019's maximum/minimum (and oxccl's CPU kernels): a NaN operand wins,
// and +0 is above -0 (the sum of two zeros is -0 only when both are; -(-a - b) the reverse).
template <typename T> __device__ __forceinline__ T fmax_nan(T a, T b) {
    if (a != a) return a;
    if (b != b) return b;
    if (a == b && a == (T)0) return a + b;
    return a > b ? a : b;
}
template <typename T> __device__ __forceinline__ T fmin_nan(T a, T b) {
    if (a != a) return a;
    if (b != b) return b;
    if (a == b && a == (T)0) return -(-a - b);
    return a < b ? a : b;
}
__device__ __forceinline__ bool aligned16(const void* p) { return (((unsigned long long)p) & 15ull) == 0; }
"#;

/// The C expression combining `a` and `b` of type `t` with `op`.
fn combine(op: &str, t: &KernelType) -> String {
    let (to, from) = match t.kind {
        Kind::F16 => ("f16_to_f32", "f32_to_f16"),
        Kind::Bf16 => ("bf16_to_f32", "f32_to_bf16"),
        Kind::F8E4M3 => ("f8e4m3_to_f32", "f32_to_f8e4m3"),
        Kind::F8E5M2 => ("f8e5m2_to_f32", "f32_to_f8e5m2"),
        Kind::Float | Kind::Int(_) => ("", ""),
    };
    match t.kind {
        Kind::Int(u) => {
            let c = t.c_type;
            match op {
                "sum" => format!("({c})(({u})a + ({u})b)"),
                "prod" => format!("({c})(({u})a * ({u})b)"),
                "max" => "(a > b ? a : b)".to_owned(),
                _ => "(a < b ? a : b)".to_owned(),
            }
        }
        Kind::Float => match op {
            "sum" => "(a + b)".to_owned(),
            "prod" => "(a * b)".to_owned(),
            "max" => "fmax_nan(a, b)".to_owned(),
            _ => "fmin_nan(a, b)".to_owned(),
        },
        Kind::F16 | Kind::Bf16 | Kind::F8E4M3 | Kind::F8E5M2 => {
            let inner = match op {
                "sum" => format!("{to}(a) + {to}(b)"),
                "prod" => format!("{to}(a) * {to}(b)"),
                "max" => format!("fmax_nan({to}(a), {to}(b))"),
                _ => format!("fmin_nan({to}(a), {to}(b))"),
            };
            format!("{from}({inner})")
        }
    }
}

/// `value / d` in type `t`.
fn divide(t: &KernelType) -> &'static str {
    match (t.kind, t.name) {
        (Kind::F16, _) => "f32_to_f16(f16_to_f32(v) / (float)d)",
        (Kind::Bf16, _) => "f32_to_bf16(bf16_to_f32(v) / (float)d)",
        (Kind::F8E4M3, _) => "f32_to_f8e4m3(f8e4m3_to_f32(v) / (float)d)",
        (Kind::F8E5M2, _) => "f32_to_f8e5m2(f8e5m2_to_f32(v) / (float)d)",
        (Kind::Float, "f64") => "v / (double)d",
        (Kind::Float, _) => "v / (float)d",
        // C division truncates toward zero, as the CPU kernels do; 64-bit so that no
        // divisor turns negative.
        (Kind::Int(_), "u64") => "v / (unsigned long long)d",
        (Kind::Int(_), _) => "(long long)v / (long long)d",
    }
}

/// The whole module: every reduction, divide and the copy kernel.
pub fn source() -> String {
    let mut s = String::from(PRELUDE);
    for t in &TYPES {
        let c = t.c_type;
        for op in OPS {
            let name = reduce_kernel_name(op, t);
            let expr = combine(op, t);
            // Writing to a String cannot fail.
            let _ = write!(
                s,
                r#"
extern "C" __global__ void {name}({c}* dst, const {c}* pa, const {c}* pb, unsigned long long n) {{
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned long long tid = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int per = 16 / sizeof({c});
    unsigned long long done = 0;
    if (aligned16(dst) && aligned16(pa) && aligned16(pb)) {{
        const unsigned long long nvec = n / per;
        for (unsigned long long i = tid; i < nvec; i += stride) {{
            uint4 va = ((const uint4*)pa)[i];
            uint4 vb = ((const uint4*)pb)[i];
            uint4 vd;
            const {c}* ea = (const {c}*)&va;
            const {c}* eb = (const {c}*)&vb;
            {c}* ed = ({c}*)&vd;
            #pragma unroll
            for (unsigned int k = 0; k < per; ++k) {{ {c} a = ea[k]; {c} b = eb[k]; ed[k] = {expr}; }}
            ((uint4*)dst)[i] = vd;
        }}
        done = nvec * per;
    }}
    for (unsigned long long i = done + tid; i < n; i += stride) {{ {c} a = pa[i]; {c} b = pb[i]; dst[i] = {expr}; }}
}}
"#
            );
        }
        for op in OPS {
            let name = peer_kernel_name(op, t);
            let expr = combine(op, t);
            let _ = write!(
                s,
                r#"
extern "C" __global__ void {name}(const unsigned long long* ptrs, unsigned int nin, unsigned int nout, unsigned long long first, unsigned long long count) {{
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned long long tid = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int per = 16 / sizeof({c});
    const unsigned long long* outs = ptrs + nin;
    bool vec = ((first * sizeof({c})) & 15ull) == 0;
    for (unsigned int j = 0; j < nin + nout; ++j) vec = vec && aligned16((const void*)ptrs[j]);
    unsigned long long done = 0;
    if (vec) {{
        const unsigned long long nvec = count / per;
        const unsigned long long base = first / per;
        for (unsigned long long i = tid; i < nvec; i += stride) {{
            uint4 vacc = ((const uint4*)ptrs[0])[base + i];
            {c}* ea = ({c}*)&vacc;
            for (unsigned int j = 1; j < nin; ++j) {{
                uint4 vb = ((const uint4*)ptrs[j])[base + i];
                const {c}* eb = (const {c}*)&vb;
                #pragma unroll
                for (unsigned int k = 0; k < per; ++k) {{ {c} a = ea[k]; {c} b = eb[k]; ea[k] = {expr}; }}
            }}
            for (unsigned int j = 0; j < nout; ++j) ((uint4*)outs[j])[base + i] = vacc;
        }}
        done = nvec * per;
    }}
    for (unsigned long long i = done + tid; i < count; i += stride) {{
        const unsigned long long at = first + i;
        {c} a = ((const {c}*)ptrs[0])[at];
        for (unsigned int j = 1; j < nin; ++j) {{ {c} b = ((const {c}*)ptrs[j])[at]; a = {expr}; }}
        for (unsigned int j = 0; j < nout; ++j) (({c}*)outs[j])[at] = a;
    }}
}}
"#
            );
        }
        let name = divide_kernel_name(t);
        let expr = divide(t);
        let _ = write!(
            s,
            r#"
extern "C" __global__ void {name}({c}* buf, unsigned long long n, unsigned int d) {{
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {{
        {c} v = buf[i]; buf[i] = {expr};
    }}
}}
"#
        );
    }
    s.push_str(
        r#"
extern "C" __global__ void oxccl_copy(unsigned char* dst, const unsigned char* src, unsigned long long bytes) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned long long tid = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long done = 0;
    if (aligned16(dst) && aligned16(src)) {
        const unsigned long long nvec = bytes / 16;
        for (unsigned long long i = tid; i < nvec; i += stride) ((uint4*)dst)[i] = ((const uint4*)src)[i];
        done = nvec * 16;
    }
    for (unsigned long long i = done + tid; i < bytes; i += stride) dst[i] = src[i];
}
"#,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_and_op_has_a_kernel_in_the_source() {
        let src = source();
        let names = kernel_names();
        assert_eq!(names.len(), 2 * TYPES.len() * OPS.len() + TYPES.len() + 1);
        for name in &names {
            assert!(
                src.contains(&format!("void {name}(")),
                "{name} missing from the generated source"
            );
        }
        // Integers wrap through unsigned arithmetic (signed overflow is undefined in C).
        assert!(src.contains("(int)((unsigned int)a + (unsigned int)b)"));
        assert!(src.contains("f32_to_bf16(bf16_to_f32(a) + bf16_to_f32(b))"));
    }
}
