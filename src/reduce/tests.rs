use super::*;

fn bytes<T: Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

#[test]
fn integer_ops_wrap_and_truncate() {
    let a = bytes(&[100i8, -100, 7, -7]);
    let b = bytes(&[100i8, -100, 2, 3]);
    let mut d = vec![0u8; 4];
    reduce_to(DataType::Int8, ReduceOp::Sum, &mut d, &a, &b);
    assert_eq!(bytemuck::cast_slice::<u8, i8>(&d), &[-56, 56, 9, -4]);
    reduce_to(DataType::Int8, ReduceOp::Prod, &mut d, &a, &b);
    assert_eq!(bytemuck::cast_slice::<u8, i8>(&d), &[16, 16, 14, -21]);
    reduce_to(DataType::Int8, ReduceOp::Max, &mut d, &a, &b);
    assert_eq!(bytemuck::cast_slice::<u8, i8>(&d), &[100, -100, 7, 3]);
    let mut d = bytes(&[-7i8, 7, 127, -128]);
    divide(DataType::Int8, &mut d, 2);
    assert_eq!(bytemuck::cast_slice::<u8, i8>(&d), &[-3, 3, 63, -64]);
    let mut d = bytes(&[u64::MAX]);
    divide(DataType::Uint64, &mut d, 1000);
    assert_eq!(bytemuck::cast_slice::<u8, u64>(&d), &[u64::MAX / 1000]);
}

#[test]
fn float_ops_and_nan() {
    let a = bytes(&[1.5f32, f32::NAN, -2.0]);
    let b = bytes(&[2.0f32, 1.0, -3.0]);
    let mut d = vec![0u8; 12];
    reduce_to(DataType::Float32, ReduceOp::Max, &mut d, &a, &b);
    let r: &[f32] = bytemuck::cast_slice(&d);
    assert_eq!(r[0], 2.0);
    assert!(r[1].is_nan());
    assert_eq!(r[2], -2.0);
    let mut acc = a.clone();
    reduce_into(DataType::Float32, ReduceOp::Prod, &mut acc, &b);
    assert_eq!(bytemuck::cast_slice::<u8, f32>(&acc)[2], 6.0);
}

#[test]
fn half_types_round_once_per_combination() {
    // 2048 + 1 is not representable in f16: round-to-nearest-even gives 2048.
    let a = bytes(&[f16::from_f32(2048.0), f16::from_f32(0.5)]);
    let b = bytes(&[f16::from_f32(1.0), f16::from_f32(0.25)]);
    let mut d = vec![0u8; 4];
    reduce_to(DataType::Float16, ReduceOp::Sum, &mut d, &a, &b);
    let r: &[f16] = bytemuck::cast_slice(&d);
    assert_eq!(r[0].to_f32(), 2048.0);
    assert_eq!(r[1].to_f32(), 0.75);
    let a = bytes(&[bf16::from_f32(3.0)]);
    let b = bytes(&[bf16::from_f32(5.0)]);
    let mut d = vec![0u8; 2];
    reduce_to(DataType::Bfloat16, ReduceOp::Prod, &mut d, &a, &b);
    assert_eq!(bytemuck::cast_slice::<u8, bf16>(&d)[0].to_f32(), 15.0);
}

#[test]
fn unaligned_slices_take_the_copying_path() {
    let a = bytes(&[1u32, 2, 3, 4, 0]);
    let b = bytes(&[10u32, 20, 30, 40, 0]);
    let mut d = [0u8; 20];
    // Offset by one byte: misaligned for u32.
    reduce_to(
        DataType::Uint32,
        ReduceOp::Sum,
        &mut d[1..17],
        &a[1..17],
        &b[1..17],
    );
    // Compare against a byte-wise shifted computation on aligned copies.
    let sa: Vec<u8> = a[1..17].to_vec();
    let sb: Vec<u8> = b[1..17].to_vec();
    let mut sd = vec![0u8; 16];
    reduce_to(DataType::Uint32, ReduceOp::Sum, &mut sd, &sa, &sb);
    assert_eq!(&d[1..17], &sd[..]);
}

#[test]
fn blocked_half_path_matches_element_wise_reference() {
    // Lengths around the block size, every op, values that round.
    for len in [0usize, 1, 255, 256, 257, 1000] {
        let a: Vec<f16> = (0..len)
            .map(|i| f16::from_f32(i as f32 * 0.37 - 50.0))
            .collect();
        let b: Vec<f16> = (0..len)
            .map(|i| f16::from_f32(i as f32 * -0.91 + 3.0))
            .collect();
        for op in ReduceOp::ALL {
            let mut d = vec![0u8; 2 * len];
            reduce_to(DataType::Float16, op, &mut d, &bytes(&a), &bytes(&b));
            let got: Vec<f16> = bytemuck::pod_collect_to_vec(&d);
            for i in 0..len {
                let (x, y) = (a[i].to_f32(), b[i].to_f32());
                let want = match op {
                    ReduceOp::Prod => x * y,
                    ReduceOp::Max => x.max(y),
                    ReduceOp::Min => x.min(y),
                    _ => x + y,
                };
                assert_eq!(got[i], f16::from_f32(want), "{op} {i}");
            }
            let mut acc = bytes(&a);
            reduce_into(DataType::Float16, op, &mut acc, &bytes(&b));
            assert_eq!(acc, d);
        }
    }
}

#[test]
fn fused_reduce_writes_both_outputs() {
    for dtype in DataType::ALL {
        let n = 37 * dtype.size();
        let a: Vec<u8> = (0..n).map(|i| (i % 7) as u8).collect();
        let b: Vec<u8> = (0..n).map(|i| (i % 5) as u8).collect();
        let (mut d1, mut d2, mut out) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
        reduce_to(dtype, ReduceOp::Sum, &mut d1, &a, &b);
        reduce_to_both(dtype, ReduceOp::Sum, &mut d2, &mut out, &a, &b);
        assert_eq!(d1, d2, "{dtype}");
        assert_eq!(d1, out, "{dtype}");
    }
}

#[test]
fn max_and_min_order_signed_zeros() {
    let a = bytes(&[-0.0f32, 0.0, -0.0, 0.0]);
    let b = bytes(&[0.0f32, -0.0, -0.0, 0.0]);
    let mut d = vec![0u8; 16];
    let signs = |d: &[u8]| -> Vec<bool> {
        bytemuck::cast_slice::<u8, f32>(d)
            .iter()
            .map(|x| x.is_sign_negative())
            .collect()
    };
    reduce_to(DataType::Float32, ReduceOp::Max, &mut d, &a, &b);
    assert_eq!(signs(&d), [false, false, true, false]);
    reduce_to(DataType::Float32, ReduceOp::Min, &mut d, &a, &b);
    assert_eq!(signs(&d), [true, true, true, false]);
}

#[test]
fn fp8_rounds_once_saturates_and_keeps_nan() {
    use float8::{F8E4M3, F8E5M2};
    let e4 = |v: &[f32]| -> Vec<u8> { v.iter().map(|&x| F8E4M3::from_f32(x).to_bits()).collect() };
    // 1.5 + 0.0625 = 1.5625: between 1.5 and 1.625, a tie, rounded to even (1.5); 448 + 448
    // saturates at 448 (e4m3 has no infinity); NaN stays NaN (S.1111.111).
    let a = e4(&[1.5, 448.0, f32::NAN, -3.0]);
    let b = e4(&[0.0625, 448.0, 1.0, -0.5]);
    let mut d = vec![0u8; 4];
    reduce_to(DataType::Float8E4M3, ReduceOp::Sum, &mut d, &a, &b);
    assert_eq!(d[..2], e4(&[1.5, 448.0])[..]);
    assert_eq!(d[2] & 0x7f, 0x7f);
    assert_eq!(d[3], e4(&[-3.5])[0]);
    // e5m2 has infinities, but conversions saturate: 57344 * 2 stays 57344.
    let a = [F8E5M2::from_f32(57344.0).to_bits()];
    let b = [F8E5M2::from_f32(2.0).to_bits()];
    let mut d = [0u8];
    reduce_to(DataType::Float8E5M2, ReduceOp::Prod, &mut d, &a, &b);
    assert_eq!(F8E5M2::from_bits(d[0]).to_f32(), 57344.0);
}
