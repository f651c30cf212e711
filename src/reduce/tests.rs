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
