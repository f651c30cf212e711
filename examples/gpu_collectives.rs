//! Collectives on GPU buffers through `oxccl::cuda::StreamCommunicator`, every result checked
//! (run by `scripts/device-check.sh`; several ranks may share one GPU):
//!
//! ```sh
//! cargo build --release --example gpu_collectives
//! oxccl-run -n 2 -- target/release/examples/gpu_collectives [COUNT]
//! ```
//!
//! Inputs are uploaded on the communicator's stream just before each collective and the
//! results downloaded just after, with no synchronisation in between: the stream's order is
//! what makes them right.

use oxccl::cuda::cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use oxccl::cuda::StreamCommunicator;
use oxccl::{Communicator, ReduceOp};
use std::sync::Arc;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn upload(s: &Arc<CudaStream>, v: &[f32]) -> Res<CudaSlice<f32>> {
    Ok(s.clone_htod(v)?)
}

fn expect(s: &Arc<CudaStream>, what: &str, got: &CudaSlice<f32>, want: &[f32]) -> Res<()> {
    let got = s.clone_dtoh(got)?;
    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
        return Err(format!("{what}: element {i} is {}, expected {}", got[i], want[i]).into());
    }
    Ok(())
}

fn main() -> Res<()> {
    let count: usize = std::env::args()
        .nth(1)
        .map_or(Ok((1 << 20) + 3), |a| a.parse())?;
    oxccl::cuda::driver_available()?;
    let comm = Communicator::from_env()?;
    let ctx = CudaContext::new(0)?;
    let stream = ctx.new_stream()?;
    let mut gpu = StreamCommunicator::new(comm, stream.clone())?;
    let (rank, n) = (gpu.rank() as usize, gpu.size() as usize);
    let s = &stream;
    let full = |v: f32, len: usize| vec![v; len];
    let tri = (n * (n + 1) / 2) as f32;

    let x = upload(s, &full(rank as f32 + 1.0, count))?;
    let mut y = s.alloc_zeros::<f32>(count)?;
    gpu.all_reduce(&x, &mut y, ReduceOp::Sum)?;
    expect(s, "all_reduce", &y, &full(tri, count))?;

    let mut x = upload(s, &full(rank as f32, count))?;
    gpu.all_reduce_in_place(&mut x, ReduceOp::Max)?;
    expect(
        s,
        "all_reduce_in_place max",
        &x,
        &full(n as f32 - 1.0, count),
    )?;

    let mut x = upload(s, &full(rank as f32 + 5.0, count))?;
    gpu.broadcast(&mut x, (n - 1) as u32)?;
    expect(s, "broadcast", &x, &full(n as f32 + 4.0, count))?;

    let mut x = upload(s, &full(rank as f32 + 1.0, count))?;
    gpu.reduce(&mut x, ReduceOp::Sum, 0)?;
    let want = if rank == 0 { tri } else { rank as f32 + 1.0 };
    expect(s, "reduce", &x, &full(want, count))?;

    let x = upload(s, &full(rank as f32 + 10.0, count))?;
    let mut all = s.alloc_zeros::<f32>(n * count)?;
    gpu.all_gather(&x, &mut all)?;
    let want: Vec<f32> = (0..n).flat_map(|r| full(r as f32 + 10.0, count)).collect();
    expect(s, "all_gather", &all, &want)?;

    let big: Vec<f32> = (0..n)
        .flat_map(|j| full((j + rank) as f32, count))
        .collect();
    let big = upload(s, &big)?;
    let mut mine = s.alloc_zeros::<f32>(count)?;
    gpu.reduce_scatter(&big, &mut mine, ReduceOp::Sum)?;
    let want = (n * rank + n * (n - 1) / 2) as f32;
    expect(s, "reduce_scatter", &mine, &full(want, count))?;

    let src: Vec<f32> = (0..n)
        .flat_map(|j| full((100 * rank + j) as f32, count))
        .collect();
    let src = upload(s, &src)?;
    let mut dst = s.alloc_zeros::<f32>(n * count)?;
    gpu.all_to_all(&src, &mut dst)?;
    let want: Vec<f32> = (0..n)
        .flat_map(|j| full((100 * j + rank) as f32, count))
        .collect();
    expect(s, "all_to_all", &dst, &want)?;

    if n > 1 {
        // A ring: even ranks send first, odd ranks receive first (each call is its own
        // collective, so the order must pair up).
        let x = upload(s, &full(rank as f32 + 7.0, count))?;
        let mut y = s.alloc_zeros::<f32>(count)?;
        let (next, prev) = (((rank + 1) % n) as u32, ((rank + n - 1) % n) as u32);
        if rank % 2 == 0 {
            gpu.send(&x, next)?;
            gpu.recv(&mut y, prev)?;
        } else {
            gpu.recv(&mut y, prev)?;
            gpu.send(&x, next)?;
        }
        expect(
            s,
            "send/recv ring",
            &y,
            &full(((rank + n - 1) % n) as f32 + 7.0, count),
        )?;
    }
    gpu.synchronize()?;
    println!("rank {rank}: every collective on GPU buffers checked ({n} ranks, {count} floats)");
    Ok(())
}
