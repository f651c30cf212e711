//! `oxccl-kernels`: checks oxccl's CUDA kernels on a GPU against the CPU reductions, and
//! times them next to a plain device-to-device copy, in one table.
//!
//! `oxccl-kernels --precompile sm_90 --cache DIR` only compiles the PTX into DIR (with
//! NVRTC, no GPU needed), so a GPU machine without NVRTC can run from that cache.

use clap::Parser;
use cudarc::driver::CudaSlice;
use oxccl::{reduce, DataType, ReduceOp};
use oxccl_transports::cuda::{self, device::Gpu, kernels::TYPES};
use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Check oxccl's CUDA kernels against the CPU and time them next to a device copy")]
struct Args {
    /// GPU ordinal.
    #[arg(long, default_value_t = 0)]
    gpu: usize,
    /// Bytes per buffer for the timings (K/M/G suffixes).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    bytes: usize,
    /// Timed repetitions (after 3 warm-up ones).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Kernel cache directory (default: OXCCL_CACHE_DIR, XDG_CACHE_HOME/oxccl, ~/.cache/oxccl).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Only compile the kernels for this architecture (e.g. sm_90) into the cache and exit.
    #[arg(long)]
    precompile: Option<String>,
}

fn parse_size(s: &str) -> Result<usize, String> {
    oxccl::config::parse_size(s).ok_or_else(|| format!("{s:?} is not a size like 256M"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("oxccl-kernels: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let cache = args.cache.clone().or_else(cuda::cache_dir);
    if let Some(arch) = &args.precompile {
        let k = cuda::compile_kernels(arch, cache.as_deref()).map_err(|e| e.to_string())?;
        println!(
            "{arch}: {} bytes of PTX{}",
            k.ptx.len(),
            k.cache_file
                .map(|f| format!(" in {}", f.display()))
                .unwrap_or_default()
        );
        return Ok(true);
    }
    let gpu = Gpu::open(args.gpu, cache.as_deref()).map_err(|e| e.to_string())?;
    println!("# oxccl-kernels on {} ({})", gpu.name, gpu.arch);
    let ok = check(&gpu)?;
    time(&gpu, args)?;
    Ok(ok)
}

/// Inputs with the awkward values of each type (as the host-build test uses).
fn input(dtype: DataType, n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .flat_map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = ((x % 20000) as f64 - 10000.0) / 7.0;
            let v = if i % 17 == 3 { f64::NAN } else { v };
            match dtype {
                DataType::Float32 => (v as f32).to_le_bytes().to_vec(),
                DataType::Float64 => v.to_le_bytes().to_vec(),
                DataType::Float16 => oxccl::f16::from_f64(v / 8.0).to_le_bytes().to_vec(),
                DataType::Bfloat16 => oxccl::bf16::from_f64(v).to_le_bytes().to_vec(),
                _ => x.to_le_bytes()[..dtype.size()].to_vec(),
            }
        })
        .collect()
}

fn same(dtype: DataType, got: &[u8], want: &[u8]) -> bool {
    got.chunks(dtype.size())
        .zip(want.chunks(dtype.size()))
        .all(|(g, w)| {
            g == w
                || match dtype {
                    DataType::Float32 => {
                        f32::from_le_bytes(g.try_into().unwrap()).is_nan()
                            && f32::from_le_bytes(w.try_into().unwrap()).is_nan()
                    }
                    DataType::Float64 => {
                        f64::from_le_bytes(g.try_into().unwrap()).is_nan()
                            && f64::from_le_bytes(w.try_into().unwrap()).is_nan()
                    }
                    DataType::Float16 => {
                        oxccl::f16::from_le_bytes(g.try_into().unwrap()).is_nan()
                            && oxccl::f16::from_le_bytes(w.try_into().unwrap()).is_nan()
                    }
                    DataType::Bfloat16 => {
                        oxccl::bf16::from_le_bytes(g.try_into().unwrap()).is_nan()
                            && oxccl::bf16::from_le_bytes(w.try_into().unwrap()).is_nan()
                    }
                    // NaN codes: S.1111.111 (e4m3) and S.11111.xx, xx != 0 (e5m2).
                    DataType::Float8E4M3 => g[0] & 0x7f == 0x7f && w[0] & 0x7f == 0x7f,
                    DataType::Float8E5M2 => g[0] & 0x7f > 0x7c && w[0] & 0x7f > 0x7c,
                    _ => false,
                }
        })
}

/// Every type × op and divide on the GPU against the CPU; prints one line per type.
fn check(gpu: &Gpu) -> Result<bool, String> {
    let e = |e: cudarc::driver::DriverError| e.to_string();
    let ops = [
        ("sum", ReduceOp::Sum),
        ("prod", ReduceOp::Prod),
        ("max", ReduceOp::Max),
        ("min", ReduceOp::Min),
    ];
    let mut all_ok = true;
    // An odd count: vector bulk and element tail.
    let n = (1 << 20) + 3;
    for (k, dtype) in DataType::ALL.into_iter().enumerate() {
        let t = &TYPES[k];
        let a = input(dtype, n, 1 + k as u64);
        let b = input(dtype, n, 7 + k as u64);
        let da = gpu.stream.clone_htod(&a).map_err(e)?;
        let db = gpu.stream.clone_htod(&b).map_err(e)?;
        let mut dd: CudaSlice<u8> = gpu.stream.alloc_zeros(a.len()).map_err(e)?;
        let mut wrong = Vec::new();
        for (name, op) in ops {
            gpu.reduce(name, t, &mut dd, &da, &db)
                .map_err(|e| e.to_string())?;
            let got = gpu.stream.clone_dtoh(&dd).map_err(e)?;
            let mut want = vec![0u8; a.len()];
            reduce::reduce_to(dtype, op, &mut want, &a, &b);
            if !same(dtype, &got, &want) {
                wrong.push(name);
            }
        }
        let mut dbuf = gpu.stream.clone_htod(&a).map_err(e)?;
        gpu.divide(t, &mut dbuf, 3).map_err(|e| e.to_string())?;
        let got = gpu.stream.clone_dtoh(&dbuf).map_err(e)?;
        let mut want = a.clone();
        reduce::divide(dtype, &mut want, 3);
        if !same(dtype, &got, &want) {
            wrong.push("divide");
        }
        println!(
            "# check {:>5}: sum prod max min divide on {n} elements: {}",
            t.name,
            if wrong.is_empty() {
                "OK".to_owned()
            } else {
                format!("WRONG: {}", wrong.join(" "))
            }
        );
        all_ok &= wrong.is_empty();
    }
    Ok(all_ok)
}

/// Milliseconds per run of `f`, from events around `iters` runs after 3 warm-up ones.
fn timed(
    gpu: &Gpu,
    iters: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    let e = |e: cudarc::driver::DriverError| e.to_string();
    for _ in 0..3 {
        f()?;
    }
    let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = gpu.stream.record_event(flags).map_err(e)?;
    for _ in 0..iters {
        f()?;
    }
    let end = gpu.stream.record_event(flags).map_err(e)?;
    Ok(f64::from(start.elapsed_ms(&end).map_err(e)?) / iters as f64)
}

/// Bandwidth of the copy baselines and of every type's sum kernel.
fn time(gpu: &Gpu, args: &Args) -> Result<(), String> {
    let e = |e: cudarc::driver::DriverError| e.to_string();
    let bytes = args.bytes / 16 * 16;
    let a: CudaSlice<u8> = gpu.stream.alloc_zeros(bytes).map_err(e)?;
    let b: CudaSlice<u8> = gpu.stream.alloc_zeros(bytes).map_err(e)?;
    let mut d: CudaSlice<u8> = gpu.stream.alloc_zeros(bytes).map_err(e)?;
    let gbps = |moved: usize, ms: f64| moved as f64 / (ms * 1e-3) / 1e9;
    let memcpy_ms = timed(gpu, args.iters, || {
        gpu.stream.memcpy_dtod(&a, &mut d).map_err(e)
    })?;
    let memcpy = gbps(2 * bytes, memcpy_ms);
    println!(
        "# {bytes} bytes per buffer, {} iterations; GB/s count bytes read + written",
        args.iters
    );
    println!(
        "# {:<22} {:>10} {:>10} {:>12}",
        "kernel", "time(ms)", "GB/s", "vs memcpy"
    );
    println!(
        "  {:<22} {:>10.3} {:>10.1} {:>12}",
        "cuMemcpyDtoD", memcpy_ms, memcpy, "1.00"
    );
    let copy_ms = timed(gpu, args.iters, || {
        gpu.copy(&mut d, &a).map_err(|e| e.to_string())
    })?;
    let copy = gbps(2 * bytes, copy_ms);
    println!(
        "  {:<22} {:>10.3} {:>10.1} {:>12.2}",
        "oxccl_copy",
        copy_ms,
        copy,
        copy / memcpy
    );
    for t in &TYPES {
        let ms = timed(gpu, args.iters, || {
            gpu.reduce("sum", t, &mut d, &a, &b)
                .map_err(|e| e.to_string())
        })?;
        let bw = gbps(3 * bytes, ms);
        let name = format!("oxccl_reduce_sum_{}", t.name);
        println!("  {name:<22} {ms:>10.3} {bw:>10.1} {:>12.2}", bw / memcpy);
    }
    Ok(())
}
