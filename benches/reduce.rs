//! Reduction kernels against a plain copy (the memory-bound ceiling).
//! `cargo bench --bench reduce`; the ratio kernel/copy is the number to watch.
//!
//! Throughput is memory traffic: a copy reads and writes each byte (2 × 4 MiB), a reduction
//! reads two operands and writes the result (3 × 4 MiB), so equal GiB/s means the kernel runs
//! at the speed of memory.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oxccl::{reduce, DataType, ReduceOp};

fn kernels(c: &mut Criterion) {
    let bytes = 4 << 20;
    let a = vec![1u8; bytes];
    let b = vec![2u8; bytes];
    let mut d = vec![0u8; bytes];
    let mut out = vec![0u8; bytes];
    let mut g = c.benchmark_group("reduce_4MiB");
    g.throughput(Throughput::Bytes(2 * bytes as u64));
    g.bench_function("copy (reference)", |bench| {
        bench.iter(|| d.copy_from_slice(&a))
    });
    g.throughput(Throughput::Bytes(3 * bytes as u64));
    for dtype in DataType::ALL {
        for op in [ReduceOp::Sum, ReduceOp::Max] {
            g.bench_with_input(
                BenchmarkId::new(format!("{dtype}"), op),
                &(),
                |bench, ()| bench.iter(|| reduce::reduce_to(dtype, op, &mut d, &a, &b)),
            );
        }
    }
    // The fused kernel writes two outputs: 4 streams.
    g.throughput(Throughput::Bytes(4 * bytes as u64));
    g.bench_function("float/sum fused reduce+copy", |bench| {
        bench.iter(|| {
            reduce::reduce_to_both(DataType::Float32, ReduceOp::Sum, &mut d, &mut out, &a, &b)
        })
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
