//! Reduction kernels against a plain copy of the same bytes (the memory-bound ceiling).
//! `cargo bench --bench reduce`; the ratio kernel/copy is the number to watch.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oxccl::{reduce, DataType, ReduceOp};

fn kernels(c: &mut Criterion) {
    let bytes = 4 << 20;
    let a = vec![1u8; bytes];
    let b = vec![2u8; bytes];
    let mut d = vec![0u8; bytes];
    let mut g = c.benchmark_group("reduce_4MiB");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("copy (reference)", |bench| {
        bench.iter(|| d.copy_from_slice(&a))
    });
    for dtype in [
        DataType::Float32,
        DataType::Bfloat16,
        DataType::Float16,
        DataType::Int32,
        DataType::Float64,
    ] {
        for op in [ReduceOp::Sum, ReduceOp::Max] {
            g.bench_with_input(
                BenchmarkId::new(format!("{dtype}"), op),
                &(),
                |bench, ()| bench.iter(|| reduce::reduce_to(dtype, op, &mut d, &a, &b)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
