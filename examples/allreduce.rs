//! All-reduce on every rank of a local job: checks the result, then measures bandwidth.
//!
//! ```text
//! cargo build --release -p oxccl-tools --bins --examples && \
//!   target/release/oxccl-run -n 4 -- target/release/examples/allreduce
//! ```

use oxccl::{Communicator, ReduceOp};
use std::time::Instant;

fn main() -> oxccl::Result<()> {
    let mut comm = Communicator::from_env()?;
    let (rank, n) = (comm.rank(), comm.size());

    // Every rank contributes rank + 1; the sum is n(n+1)/2 everywhere.
    let mine = vec![(rank + 1) as f32; 1 << 20];
    let mut sum = vec![0.0f32; mine.len()];
    comm.all_reduce(&mine, &mut sum, ReduceOp::Sum)?;
    let expected = (n * (n + 1) / 2) as f32;
    let wrong = sum.iter().filter(|&&x| x != expected).count();
    println!(
        "rank {rank}/{n}: all_reduce of {} floats: element 0 = {} (expected {expected}), {wrong} wrong",
        sum.len(),
        sum[0]
    );
    if wrong != 0 {
        std::process::exit(1);
    }

    // Bandwidth, as nccl-tests reports it: busbw = algbw * 2(n-1)/n.
    comm.barrier()?;
    if rank == 0 {
        println!(
            "\n{:>12} {:>10} {:>10} {:>10}",
            "size (B)", "time (us)", "algbw GB/s", "busbw GB/s"
        );
    }
    let mut bytes = 4096usize;
    while bytes <= 64 << 20 {
        let mut buf = vec![1.0f32; bytes / 4];
        let iters = (256 << 20) / bytes.max(1 << 20) * 4 + 2;
        for _ in 0..2 {
            comm.all_reduce_in_place(&mut buf, ReduceOp::Sum)?;
        }
        comm.barrier()?;
        let t = Instant::now();
        for _ in 0..iters {
            comm.all_reduce_in_place(&mut buf, ReduceOp::Sum)?;
        }
        let secs = t.elapsed().as_secs_f64() / iters as f64;
        if rank == 0 {
            let algbw = bytes as f64 / secs / 1e9;
            let busbw = algbw * 2.0 * (n as f64 - 1.0) / n as f64;
            println!(
                "{bytes:>12} {:>10.1} {algbw:>10.3} {busbw:>10.3}",
                secs * 1e6
            );
        }
        bytes *= 4;
    }
    Ok(())
}
