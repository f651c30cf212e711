//! The CUDA kernels' arithmetic, checked without a GPU: their source compiled for the CPU
//! (`oxccl_transports::cuda::host`) against `oxccl::reduce` on the same inputs, for every
//! datatype × reduction and the `avg` divide, through both the 16-byte vector path (aligned
//! buffers) and the element path (misaligned ones).
#![cfg(feature = "cuda")]

use oxccl::{reduce, DataType, ReduceOp};
use oxccl_transports::cuda::host::{HostKernels, RankBuffers};
use oxccl_transports::cuda::kernels::TYPES;
use oxccl_transports::cuda::peer::PeerKind;

/// The kernels' operators (`avg` is a sum, then a divide) and oxccl's.
const OPS: [(&str, ReduceOp); 4] = [
    ("sum", ReduceOp::Sum),
    ("prod", ReduceOp::Prod),
    ("max", ReduceOp::Max),
    ("min", ReduceOp::Min),
];

/// Deterministic bytes: integers that overflow when combined, floats with NaNs, infinities,
/// signed zeros and values that round differently in 16 bits.
fn input(dtype: DataType, n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(n * dtype.size());
    for i in 0..n {
        let r = next();
        let special = i % 17 == 3;
        match dtype {
            DataType::Float32 => {
                let v = if special {
                    [f32::NAN, f32::INFINITY, -0.0, 1e38][(r % 4) as usize]
                } else {
                    ((r % 20000) as f32 - 10000.0) / 7.0
                };
                out.extend_from_slice(&v.to_le_bytes());
            }
            DataType::Float64 => {
                let v = if special {
                    [f64::NAN, f64::NEG_INFINITY, -0.0, 1e300][(r % 4) as usize]
                } else {
                    ((r % 2_000_000) as f64 - 1e6) / 3.0
                };
                out.extend_from_slice(&v.to_le_bytes());
            }
            DataType::Float16 => {
                let v = if special {
                    [f32::NAN, 65504.0, -0.0, 1e-7][(r % 4) as usize]
                } else {
                    ((r % 4000) as f32 - 2000.0) / 3.0
                };
                out.extend_from_slice(&oxccl::f16::from_f32(v).to_le_bytes());
            }
            DataType::Bfloat16 => {
                let v = if special {
                    [f32::NAN, 3e38, -0.0, 1e-30][(r % 4) as usize]
                } else {
                    ((r % 4000) as f32 - 2000.0) / 3.0
                };
                out.extend_from_slice(&oxccl::bf16::from_f32(v).to_le_bytes());
            }
            _ => out.extend_from_slice(&r.to_le_bytes()[..dtype.size()]),
        }
    }
    out
}

/// Byte equality, except that any two NaNs of a float type are equal.
fn same(dtype: DataType, got: &[u8], want: &[u8]) -> Result<(), String> {
    let size = dtype.size();
    for (i, (g, w)) in got.chunks(size).zip(want.chunks(size)).enumerate() {
        if g == w {
            continue;
        }
        let nan = |b: &[u8]| match dtype {
            DataType::Float32 => f32::from_le_bytes(b.try_into().unwrap()).is_nan(),
            DataType::Float64 => f64::from_le_bytes(b.try_into().unwrap()).is_nan(),
            DataType::Float16 => oxccl::f16::from_le_bytes(b.try_into().unwrap()).is_nan(),
            DataType::Bfloat16 => oxccl::bf16::from_le_bytes(b.try_into().unwrap()).is_nan(),
            // S.1111.111 and S.11111.xx with xx != 0.
            DataType::Float8E4M3 => b[0] & 0x7f == 0x7f,
            DataType::Float8E5M2 => b[0] & 0x7f > 0x7c,
            _ => false,
        };
        if !(nan(g) && nan(w)) {
            return Err(format!("element {i}: kernel {g:?}, CPU {w:?}"));
        }
    }
    Ok(())
}

/// A byte buffer starting `offset` bytes past a 16-byte boundary.
struct Buf {
    words: Vec<u128>,
    offset: usize,
    len: usize,
}

impl Buf {
    fn new(bytes: &[u8], offset: usize) -> Self {
        let mut b = Buf {
            words: vec![0; (bytes.len() + offset).div_ceil(16) + 1],
            offset,
            len: bytes.len(),
        };
        b.bytes_mut().copy_from_slice(bytes);
        b
    }
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[self.offset..self.offset + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        let (o, l) = (self.offset, self.len);
        &mut bytemuck::cast_slice_mut(&mut self.words)[o..o + l]
    }
}

#[test]
fn kernels_compute_what_the_cpu_reductions_compute() {
    let host = HostKernels::build().expect("a C++ compiler (c++) for the host build");
    let mut checked = 0;
    for (k, dtype) in DataType::ALL.into_iter().enumerate() {
        let t = &TYPES[k];
        assert_eq!(t.size, dtype.size(), "{} is {dtype:?}", t.name);
        // 1031 elements: a vector bulk and an element tail; offset 0 takes the vector path,
        // one element off 16-byte alignment the element path.
        let n = 1031;
        let a = input(dtype, n, 1 + k as u64);
        let b = input(dtype, n, 101 + k as u64);
        for offset in [0, dtype.size()] {
            for (name, op) in OPS {
                let mut want = vec![0u8; a.len()];
                reduce::reduce_to(dtype, op, &mut want, &a, &b);
                let (ba, bb) = (Buf::new(&a, offset), Buf::new(&b, offset));
                let mut got = Buf::new(&vec![0u8; a.len()], offset);
                host.reduce(name, t, got.bytes_mut(), ba.bytes(), bb.bytes())
                    .unwrap();
                if let Err(e) = same(dtype, got.bytes(), &want) {
                    panic!("{name} {dtype:?} (offset {offset}): {e}");
                }
                checked += 1;
            }
            for d in [1u32, 3, 8, 1000] {
                let mut want = a.clone();
                reduce::divide(dtype, &mut want, d);
                let mut got = Buf::new(&a, offset);
                host.divide(t, got.bytes_mut(), d).unwrap();
                if let Err(e) = same(dtype, got.bytes(), &want) {
                    panic!("divide by {d} {dtype:?}: {e}");
                }
            }
        }
    }
    assert_eq!(checked, DataType::ALL.len() * 2 * 4);
}

/// The peer-memory all-reduce kernel: 3 ranks' inputs, each rank's share (a third of the
/// elements, as a job splits them) written to all 3 outputs, compared with the CPU
/// reduction folded over the inputs in rank order; aligned (vector path) and misaligned
/// (element path), out of place and in place (outputs = inputs).
#[test]
fn the_peer_all_reduce_kernel_reduces_every_rank_share_into_every_output() {
    let host = HostKernels::build().expect("a C++ compiler (c++) for the host build");
    let n = 1031;
    let nranks = 3;
    let mut checked = 0;
    for (k, dtype) in DataType::ALL.into_iter().enumerate() {
        let t = &TYPES[k];
        let inputs: Vec<Vec<u8>> = (0..nranks)
            .map(|r| input(dtype, n, 7 + 31 * k as u64 + r as u64))
            .collect();
        for (name, op) in OPS {
            let mut want = inputs[0].clone();
            for input in &inputs[1..] {
                let acc = want.clone();
                reduce::reduce_to(dtype, op, &mut want, &acc, input);
            }
            for offset in [0, dtype.size()] {
                for in_place in [false, true] {
                    let mut ins: Vec<Buf> = inputs.iter().map(|b| Buf::new(b, offset)).collect();
                    let mut outs: Vec<Buf> = (0..nranks)
                        .map(|_| Buf::new(&vec![0u8; n * dtype.size()], offset))
                        .collect();
                    // Shares as a job cuts them: rank r takes [r*n/3, (r+1)*n/3).
                    for r in 0..nranks {
                        let (first, end) = (r * n / nranks, (r + 1) * n / nranks);
                        if in_place {
                            let mut bufs: Vec<&mut [u8]> =
                                ins.iter_mut().map(|b| b.bytes_mut()).collect();
                            host.all_reduce_in_place(name, t, &mut bufs, first, end - first)
                                .unwrap();
                        } else {
                            let views: Vec<&[u8]> = ins.iter().map(|b| b.bytes()).collect();
                            let mut outs_mut: Vec<&mut [u8]> =
                                outs.iter_mut().map(|b| b.bytes_mut()).collect();
                            host.peer(name, t, &views, &mut outs_mut, first, end - first)
                                .unwrap();
                        }
                    }
                    let results = if in_place { &ins } else { &outs };
                    for (r, out) in results.iter().enumerate() {
                        if let Err(e) = same(dtype, out.bytes(), &want) {
                            panic!(
                                "all-reduce {name} {dtype:?} offset {offset} in place \
                                 {in_place}, output {r}: {e}"
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, DataType::ALL.len() * 4 * 2 * 2);
}

/// Each rank's buffers of one peer collective, in this process's memory.
struct RankBufs {
    /// One buffer in place; the send then the receive buffer otherwise.
    bufs: Vec<Buf>,
}

/// Every peer collective as its ranks run it: each rank's `peer::plan` on host copies of
/// 3 ranks' buffers (out of place, and in place with NCCL's layouts), run through the host
/// build of `oxccl_peer_*`, compared with the collective computed from the inputs with the
/// CPU reductions. What a rank does not use (a non-root reduce output) must stay as it was.
#[test]
fn every_peer_collective_computes_its_result_from_the_plans() {
    let host = HostKernels::build().expect("a C++ compiler (c++) for the host build");
    let (n, count) = (3u32, 37usize);
    let kinds = [
        PeerKind::AllReduce,
        PeerKind::Reduce { root: 1 },
        PeerKind::Broadcast { root: 2 },
        PeerKind::AllGather,
        PeerKind::ReduceScatter,
    ];
    let mut checked = 0;
    for (k, dtype) in DataType::ALL.into_iter().enumerate() {
        let (t, size) = (&TYPES[k], dtype.size());
        for (name, op) in [("sum", ReduceOp::Sum), ("max", ReduceOp::Max)] {
            for kind in kinds {
                let (send_len, recv_len) = kind.lengths(count as u64, n);
                let (send_len, recv_len) = (send_len as usize, recv_len as usize);
                let inputs: Vec<Vec<u8>> = (0..n)
                    .map(|r| input(dtype, send_len, 500 + 17 * k as u64 + r as u64))
                    .collect();
                // What each rank's receive buffer must hold.
                let fold = |pick: &dyn Fn(&[u8]) -> Vec<u8>| {
                    let mut acc = pick(&inputs[0]);
                    for i in &inputs[1..] {
                        let prev = acc.clone();
                        reduce::reduce_to(dtype, op, &mut acc, &prev, &pick(i));
                    }
                    acc
                };
                let want: Vec<Option<Vec<u8>>> = (0..n as usize)
                    .map(|r| match kind {
                        PeerKind::AllReduce => Some(fold(&|b| b.to_vec())),
                        PeerKind::Reduce { root } => {
                            (r == root as usize).then(|| fold(&|b| b.to_vec()))
                        }
                        PeerKind::Broadcast { root } => Some(inputs[root as usize].clone()),
                        PeerKind::AllGather => Some(inputs.concat()),
                        PeerKind::ReduceScatter => Some(fold(&|b| {
                            b[r * count * size..(r + 1) * count * size].to_vec()
                        })),
                    })
                    .collect();
                for in_place in [false, true] {
                    let untouched = vec![0xA5u8; recv_len * size];
                    let mut ranks: Vec<RankBufs> = (0..n as usize)
                        .map(|r| {
                            let bufs = if !in_place {
                                vec![Buf::new(&inputs[r], 0), Buf::new(&untouched, 0)]
                            } else if kind == PeerKind::AllGather {
                                let mut b = untouched.clone();
                                b[r * count * size..(r + 1) * count * size]
                                    .copy_from_slice(&inputs[r]);
                                vec![Buf::new(&b, 0)]
                            } else {
                                vec![Buf::new(&inputs[r], 0)]
                            };
                            RankBufs { bufs }
                        })
                        .collect();
                    let mut views: Vec<RankBuffers<'_>> = ranks
                        .iter_mut()
                        .map(|rb| match rb.bufs.as_mut_slice() {
                            [one] => RankBuffers::InPlace(one.bytes_mut()),
                            [send, recv] => RankBuffers::Split {
                                send: send.bytes(),
                                recv: recv.bytes_mut(),
                            },
                            _ => unreachable!("one or two buffers per rank"),
                        })
                        .collect();
                    host.peer_job(name, t, kind, count, &mut views).unwrap();
                    drop(views);
                    for (r, rb) in ranks.iter().enumerate() {
                        let got = match (in_place, kind) {
                            (false, _) => rb.bufs[1].bytes().to_vec(),
                            (true, PeerKind::ReduceScatter) => {
                                rb.bufs[0].bytes()[r * count * size..][..count * size].to_vec()
                            }
                            (true, _) => rb.bufs[0].bytes().to_vec(),
                        };
                        // A non-root reduce output: untouched out of place, the input in place.
                        let expected = want[r].clone().unwrap_or_else(|| {
                            if in_place {
                                inputs[r].clone()
                            } else {
                                untouched.clone()
                            }
                        });
                        if let Err(e) = same(dtype, &got, &expected) {
                            panic!("{kind:?} {name} {dtype:?} in place {in_place}, rank {r}: {e}");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, DataType::ALL.len() * 2 * 5 * 2 * 3);
}

/// The 8-bit float kernels convert with integer arithmetic of their own: every pair of
/// codes, every reduction, and the `avg` divide by several rank counts, against the CPU
/// (the `float8` crate's conversions, NVIDIA's rounding and saturation).
#[test]
fn fp8_kernels_agree_with_the_cpu_on_every_pair_of_codes() {
    let host = HostKernels::build().expect("a C++ compiler (c++) for the host build");
    let a: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
    let b: Vec<u8> = (0..65536u32).map(|i| (i >> 8) as u8).collect();
    for dtype in [DataType::Float8E4M3, DataType::Float8E5M2] {
        let t = &TYPES[DataType::ALL.iter().position(|d| *d == dtype).unwrap()];
        for (name, op) in OPS {
            let mut want = vec![0u8; a.len()];
            reduce::reduce_to(dtype, op, &mut want, &a, &b);
            let mut got = vec![0u8; a.len()];
            host.reduce(name, t, &mut got, &a, &b).unwrap();
            if let Err(e) = same(dtype, &got, &want) {
                panic!("{name} {dtype:?}: {e}");
            }
        }
        for d in [2u32, 3, 7, 1000] {
            let mut want = a[..256].to_vec();
            reduce::divide(dtype, &mut want, d);
            let mut got = a[..256].to_vec();
            host.divide(t, &mut got, d).unwrap();
            if let Err(e) = same(dtype, &got, &want) {
                panic!("divide by {d} {dtype:?}: {e}");
            }
        }
    }
}
