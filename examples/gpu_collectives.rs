//! Collectives on GPU buffers through `oxccl::cuda::StreamCommunicator`, every result checked
//! (run by `scripts/device-check.sh`; several ranks may share one GPU):
//!
//! ```sh
//! cargo build --release --example gpu_collectives
//! oxccl-run -n 2 -- target/release/examples/gpu_collectives [COUNT]
//! target/release/examples/gpu_collectives --threads 4 [COUNT]   # 4 ranks, one process
//! ```
//!
//! With `--threads N` the ranks are threads of one process sharing GPU 0; with
//! `OXCCL_CUDA_IPC=1` their collectives then go through each other's GPU memory even on
//! cudarc's pool memory (which CUDA IPC cannot export to other processes: ranks in separate
//! processes take the host path for it).
//!
//! Inputs are uploaded on the communicator's stream just before each collective and the
//! results downloaded just after, with no synchronisation in between: the stream's order is
//! what makes them right.

use oxccl::cuda::cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use oxccl::cuda::StreamCommunicator;
use oxccl::{Communicator, Config, ReduceOp, UniqueId};
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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let threads = match args.iter().position(|a| a == "--threads") {
        Some(i) => {
            let n: u32 = args.get(i + 1).ok_or("--threads needs a count")?.parse()?;
            args.drain(i..i + 2);
            Some(n)
        }
        None => None,
    };
    let count: usize = args.first().map_or(Ok((1 << 20) + 3), |a| a.parse())?;
    oxccl::cuda::driver_available()?;
    let Some(n) = threads else {
        return run(Communicator::from_env()?, count);
    };
    let cfg = Config::from_env()?;
    let id = UniqueId::new("127.0.0.1:0".parse()?, cfg.timeout)?;
    let ranks: Vec<_> = (0..n)
        .map(|r| {
            let cfg = cfg.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let comm = Communicator::init(id, n, r, cfg).map_err(|e| e.to_string())?;
                run(comm, count).map_err(|e| format!("rank {r}: {e}"))
            })
        })
        .collect();
    let mut failed = None;
    for h in ranks {
        if let Err(e) = h.join().map_err(|_| "a rank thread panicked".to_string())? {
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(()), |e| Err(e.into()))
}

/// Every collective on this rank, each result checked.
fn run(comm: Communicator, count: usize) -> Res<()> {
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

    // In place: this rank's input is its block of the all-gather's buffer, and the
    // reduce-scatter's result lands in its block.
    let blocks: Vec<f32> = (0..n)
        .flat_map(|j| full(if j == rank { rank as f32 + 20.0 } else { -1.0 }, count))
        .collect();
    let mut all = upload(s, &blocks)?;
    gpu.all_gather_in_place(&mut all)?;
    let want: Vec<f32> = (0..n).flat_map(|r| full(r as f32 + 20.0, count)).collect();
    expect(s, "all_gather_in_place", &all, &want)?;
    let mut big = upload(s, &full(rank as f32 + 1.0, n * count))?;
    gpu.reduce_scatter_in_place(&mut big, ReduceOp::Max)?;
    let got = s.clone_dtoh(&big)?;
    if let Some(i) = (rank * count..(rank + 1) * count).find(|&i| got[i] != n as f32) {
        return Err(format!(
            "reduce_scatter_in_place: element {i} is {}, expected {n}",
            got[i]
        )
        .into());
    }

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
    let path = match gpu.peer_jobs() {
        None => "staged through host memory".to_owned(),
        Some(j) => format!(
            "OXCCL_CUDA_IPC=1: {} through peers' GPU memory, {} through host memory",
            j.through_peers, j.through_host
        ),
    };
    println!(
        "rank {rank}: every collective on GPU buffers checked ({n} ranks, {count} floats; {path})"
    );
    Ok(())
}
