//! CUDA support (feature `cuda`): the device kernels, compiled at run time with NVRTC and
//! cached on disk.
//!
//! cudarc is built with dynamic loading, so nothing of CUDA is needed to build oxccl. cudarc
//! panics when a library it needs is missing, so every entry point here first opens the
//! library itself ([`nvrtc_available`]) and answers with an error saying what is missing.
//!
//! - `kernels.rs`: the CUDA C source, every datatype × reduction, divide (for `avg`), copy.
//! - [`compile_kernels`]: NVRTC to PTX for one architecture, through the on-disk cache.
//! - `host.rs` (tests): the same source compiled for the CPU, checked against oxccl's CPU
//!   reductions in `tests/cuda_kernels.rs`.
//!
//! - `device.rs`: [`device::Gpu`], the kernels loaded on a GPU and launched on its stream.
//! - `stream.rs`: events, pinned memory, host-raised flags streams wait on, and copies on
//!   the program's own streams;
//! - `ordered.rs`: [`ordered::OrderedQueue`], host work ordered on CUDA streams through
//!   pinned staging memory: collectives on GPU buffers in the NCCL C ABI and the Rust API;
//! - `memory.rs`: GPU memory for `ncclMemAlloc` (`cuMemAlloc`, shareable through CUDA IPC);
//! - `ipc.rs`: GPU buffers shared between the processes of one node (CUDA IPC records);
//! - `peer/`: all-reduce, reduce, broadcast, all-gather and reduce-scatter of ranks on one
//!   node through each other's GPU memory, one pass of the `oxccl_peer_*` kernels, ordered
//!   on the same queue.

pub mod device;
#[doc(hidden)]
pub mod host;
pub mod ipc;
pub mod kernels;
pub mod memory;
pub mod ordered;
pub mod peer;
pub mod stream;

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Sonames of NVRTC oxccl accepts (CUDA 12, and an unversioned development link).
const NVRTC_NAMES: [&str; 2] = ["libnvrtc.so.12", "libnvrtc.so"];

/// `Ok(())` when NVRTC can be loaded; otherwise what is missing and how to get it.
pub fn nvrtc_available() -> Result<()> {
    let mut tried = Vec::new();
    for name in NVRTC_NAMES {
        // SAFETY: loading NVRTC runs only its own initialisers; the handle is dropped at once
        // (cudarc opens the library again for its calls).
        match unsafe { libloading::Library::new(name) } {
            Ok(_) => return Ok(()),
            Err(e) => tried.push(format!("{name}: {e}")),
        }
    }
    Err(Error::Config(format!(
        "NVRTC not found ({}): install the CUDA toolkit's libnvrtc, or `pip install \
         nvidia-cuda-nvrtc-cu12` and add its nvidia/cuda_nvrtc/lib to LD_LIBRARY_PATH",
        tried.join("; ")
    )))
}

/// PTX of every kernel for `arch` (e.g. `sm_90`), and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct CompiledKernels {
    /// The PTX text.
    pub ptx: String,
    /// Taken from the cache rather than compiled now.
    pub from_cache: bool,
    /// The cache file (written after a compilation when the directory is writable).
    pub cache_file: Option<PathBuf>,
}

/// Where compiled kernels are kept: `OXCCL_CACHE_DIR`, else `$XDG_CACHE_HOME/oxccl`, else
/// `~/.cache/oxccl`; `None` when none of them is set.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    env("OXCCL_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| env("XDG_CACHE_HOME").map(|d| Path::new(&d).join("oxccl")))
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cache/oxccl")))
}

/// Compiles [`kernels::source`] for `arch` with NVRTC (`-O3`), or reads the PTX a previous
/// compilation of the same source for the same architecture left in `cache` (the file name
/// holds a hash of both). A cache that cannot be written only costs the next compilation.
pub fn compile_kernels(arch: &str, cache: Option<&Path>) -> Result<CompiledKernels> {
    if !arch.starts_with("sm_") || arch[3..].parse::<u32>().is_err() {
        return Err(Error::Config(format!(
            "GPU architecture {arch:?} is not of the form sm_90"
        )));
    }
    let src = kernels::source();
    let key = blake3::hash(format!("{arch}\n{src}").as_bytes()).to_hex();
    let file = cache.map(|d| d.join(format!("kernels-{arch}-{}.ptx", &key[..16])));
    if let Some(f) = &file {
        if let Ok(ptx) = std::fs::read_to_string(f) {
            if ptx.contains(".entry") {
                return Ok(CompiledKernels {
                    ptx,
                    from_cache: true,
                    cache_file: file,
                });
            }
        }
    }
    nvrtc_available()?;
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(leak_arch(arch)),
        options: vec!["-default-device".into(), "--std=c++17".into()],
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(&src, opts)
        .map_err(|e| {
            Error::Config(format!(
                "NVRTC could not compile oxccl's kernels for {arch}: {e}"
            ))
        })?
        .to_src();
    let cache_file = file.filter(|f| {
        let written = f
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                // Write then rename, so a concurrent reader never sees half a file.
                let tmp = f.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, &ptx).and_then(|()| std::fs::rename(&tmp, f))
            });
        if let Err(e) = &written {
            tracing::debug!(file = %f.display(), error = %e, "kernel cache not written");
        }
        written.is_ok()
    });
    Ok(CompiledKernels {
        ptx,
        from_cache: false,
        cache_file,
    })
}

/// cudarc wants the architecture as `&'static str`; the few distinct values a process uses
/// are kept for its lifetime.
fn leak_arch(arch: &str) -> &'static str {
    use std::sync::Mutex;
    static ARCHES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut known = ARCHES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(a) = known.iter().find(|a| **a == arch) {
        return a;
    }
    let a: &'static str = Box::leak(arch.to_owned().into_boxed_str());
    known.push(a);
    a
}

#[cfg(test)]
mod tests;
