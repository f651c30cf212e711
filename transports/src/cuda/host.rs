//! The device kernels' own source, compiled for the CPU with the system's C++ compiler, so
//! tests check their arithmetic element for element against oxccl's CPU reductions where no
//! GPU exists. The kernels are grid-strided, so one "thread" of a one-block "grid" runs the
//! whole range; both the 16-byte vector path and the element tail run, depending on the
//! buffers' alignment. Test support, not part of the API.

use std::path::PathBuf;
use std::process::Command;

use super::kernels::{self, KernelType};
use super::peer::{plan, PeerKind};
use crate::{Error, Result};

/// Definitions the CUDA source expects from the compiler, for a host build.
const HOST_SHIM: &str = r#"#include <cstring>
#define __global__
#define __device__
#define __forceinline__ inline
struct uint4 { unsigned int x, y, z, w; };
struct oxccl_dim3 { unsigned int x; };
static const oxccl_dim3 blockIdx = {0}, threadIdx = {0}, gridDim = {1}, blockDim = {1};
static inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
"#;

type ReduceFn = unsafe extern "C" fn(*mut u8, *const u8, *const u8, u64);
type DivideFn = unsafe extern "C" fn(*mut u8, u64, u32);
type PeerFn = unsafe extern "C" fn(*const u64, u32, u32, u64, u64);

/// One rank's buffers in a [`HostKernels::peer_job`].
#[derive(Debug)]
pub enum RankBuffers<'a> {
    /// Separate input and output.
    Split {
        /// The input.
        send: &'a [u8],
        /// The output.
        recv: &'a mut [u8],
    },
    /// One buffer, input and output as NCCL's in-place layouts place them.
    InPlace(&'a mut [u8]),
}

/// The kernels built as a shared library for this CPU.
pub struct HostKernels {
    lib: libloading::Library,
    dir: PathBuf,
}

impl std::fmt::Debug for HostKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKernels")
            .field("dir", &self.dir)
            .finish()
    }
}

impl HostKernels {
    /// Compiles [`kernels::source`] with `c++` (or `$CXX`) and loads it.
    pub fn build() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "oxccl-host-kernels-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating a build directory", e))?;
        let src = dir.join("kernels.cpp");
        let lib = dir.join("kernels.so");
        std::fs::write(&src, format!("{HOST_SHIM}{}", kernels::source()))
            .map_err(|e| Error::io("writing the kernel source", e))?;
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(&cxx)
            .args([
                "-std=c++17",
                "-O1",
                "-shared",
                "-fPIC",
                "-fno-strict-aliasing",
            ])
            .args(["-Wno-unknown-pragmas", "-o"])
            .arg(&lib)
            .arg(&src)
            .output()
            .map_err(|e| Error::io(format!("running {cxx}"), e))?;
        if !out.status.success() {
            return Err(Error::Config(format!(
                "{cxx} could not build the kernels for the host: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        // SAFETY: the library is the kernel source just compiled: plain functions, no
        // initialisers beyond the C++ runtime's.
        let lib = unsafe { libloading::Library::new(&lib) }
            .map_err(|e| Error::Config(format!("loading the host kernels: {e}")))?;
        Ok(Self { lib, dir })
    }

    /// The kernel `name`, as a function of type `F`.
    ///
    /// # Safety
    /// `F` must be the kernel's C signature (see kernels.rs).
    unsafe fn symbol<F>(&self, name: &str) -> Result<libloading::Symbol<'_, F>> {
        // SAFETY: the caller's contract on `F`.
        unsafe { self.lib.get(name.as_bytes()) }.map_err(|e| Error::Config(format!("{name}: {e}")))
    }

    /// `dst = a op b` through `oxccl_reduce_<op>_<type>`.
    pub fn reduce(
        &self,
        op: &str,
        t: &KernelType,
        dst: &mut [u8],
        a: &[u8],
        b: &[u8],
    ) -> Result<()> {
        kernels::check_reduce_lengths(t, dst.len(), a.len(), b.len())?;
        let name = kernels::reduce_kernel_name(op, t);
        // SAFETY: every `oxccl_reduce_*` has this C signature (see kernels.rs); the three
        // buffers hold `n` elements each (checked above) and the kernel reads and writes no
        // further; `dst` may alias neither input here (distinct borrows).
        unsafe {
            let f = self.symbol::<ReduceFn>(&name)?;
            f(
                dst.as_mut_ptr(),
                a.as_ptr(),
                b.as_ptr(),
                (dst.len() / t.size) as u64,
            );
        }
        Ok(())
    }

    /// Elements `first..first + count` of every output get the reduction of the inputs'
    /// through `oxccl_peer_<op>_<type>` (one rank's share of a peer-memory collective: as
    /// many inputs and outputs as its plan has; one input is a copy).
    pub fn peer(
        &self,
        op: &str,
        t: &KernelType,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        first: usize,
        count: usize,
    ) -> Result<()> {
        let end = (first + count) * t.size;
        if inputs.is_empty()
            || inputs.iter().any(|b| b.len() < end)
            || outputs.iter().any(|b| b.len() < end)
        {
            return Err(Error::Config(format!(
                "peer kernel on elements {first}..{} over {} inputs and {} outputs",
                first + count,
                inputs.len(),
                outputs.len()
            )));
        }
        let mut ptrs: Vec<u64> = inputs.iter().map(|b| b.as_ptr() as u64).collect();
        ptrs.extend(outputs.iter_mut().map(|b| b.as_mut_ptr() as u64));
        // SAFETY: `oxccl_peer_*` has this signature (kernels.rs); every buffer holds the
        // elements up to `first + count` (checked above), the only ones it touches; outputs
        // are distinct mutable borrows, inputs are not written.
        unsafe {
            let f = self.symbol::<PeerFn>(&kernels::peer_kernel_name(op, t))?;
            f(
                ptrs.as_ptr(),
                inputs.len() as u32,
                outputs.len() as u32,
                first as u64,
                count as u64,
            );
        }
        Ok(())
    }

    /// Runs a whole peer job of `kind` on host memory: every rank's launch as
    /// [`peer::plan`](super::peer::plan) gives it, on `ranks`' buffers (NCCL's in-place
    /// layouts for [`RankBuffers::InPlace`]: the all-gather's input and the reduce-scatter's
    /// output are the rank's block of the one buffer). `count` is NCCL's count.
    pub fn peer_job(
        &self,
        op: &str,
        t: &KernelType,
        kind: PeerKind,
        count: usize,
        ranks: &mut [RankBuffers<'_>],
    ) -> Result<()> {
        let n = ranks.len() as u32;
        let (send_len, recv_len) = kind.lengths(count as u64, n);
        let (send_bytes, recv_bytes) = (send_len as usize * t.size, recv_len as usize * t.size);
        let mut sends = Vec::with_capacity(ranks.len());
        let mut recvs = Vec::with_capacity(ranks.len());
        for (r, bufs) in ranks.iter_mut().enumerate() {
            let block = (r * count * t.size) as u64;
            let (send, recv, fits) = match bufs {
                RankBuffers::Split { send, recv } => (
                    send.as_ptr() as u64,
                    recv.as_mut_ptr() as u64,
                    send.len() >= send_bytes && recv.len() >= recv_bytes,
                ),
                RankBuffers::InPlace(buf) => {
                    let base = buf.as_mut_ptr() as u64;
                    let (s, d) = match kind {
                        PeerKind::AllGather => (base + block, base),
                        PeerKind::ReduceScatter => (base, base + block),
                        _ => (base, base),
                    };
                    let whole = send_bytes.max(recv_bytes);
                    (s, d, buf.len() >= whole)
                }
            };
            if !fits {
                return Err(Error::Config(format!(
                    "rank {r}'s buffers are too small for a {} of {count}",
                    kind.name()
                )));
            }
            sends.push(send);
            recvs.push(recv);
        }
        for r in 0..n {
            let p = plan(kind, r, count as u64, t.size, &sends, &recvs);
            let ptrs: Vec<u64> = p.inputs.iter().chain(&p.outputs).copied().collect();
            // SAFETY: `oxccl_peer_*` has this signature (kernels.rs); the plan's addresses are
            // in `ranks`' buffers, which hold every element it names (checked above against
            // `lengths`) and are borrowed mutably by this call, so nothing else uses them.
            unsafe {
                let f = self.symbol::<PeerFn>(&kernels::peer_kernel_name(op, t))?;
                f(
                    ptrs.as_ptr(),
                    p.inputs.len() as u32,
                    p.outputs.len() as u32,
                    p.first,
                    p.count,
                );
            }
        }
        Ok(())
    }

    /// [`peer`](Self::peer) with every buffer both input and output (the in-place
    /// all-reduce: the same addresses passed twice).
    pub fn all_reduce_in_place(
        &self,
        op: &str,
        t: &KernelType,
        bufs: &mut [&mut [u8]],
        first: usize,
        count: usize,
    ) -> Result<()> {
        let end = (first + count) * t.size;
        if bufs.is_empty() || bufs.iter().any(|b| b.len() < end) {
            return Err(Error::Config(format!(
                "in-place all-reduce of elements {first}..{} over {} buffers",
                first + count,
                bufs.len()
            )));
        }
        let mut ptrs: Vec<u64> = bufs.iter_mut().map(|b| b.as_mut_ptr() as u64).collect();
        ptrs.extend_from_within(..);
        let n = bufs.len() as u32;
        // SAFETY: as in `peer`; each buffer is both read and written, through the one
        // mutable borrow this function holds, and the kernel reads every input of an element
        // before writing any output of it.
        unsafe {
            let f = self.symbol::<PeerFn>(&kernels::peer_kernel_name(op, t))?;
            f(ptrs.as_ptr(), n, n, first as u64, count as u64);
        }
        Ok(())
    }

    /// `buf[i] /= d` through `oxccl_divide_<type>`.
    pub fn divide(&self, t: &KernelType, buf: &mut [u8], d: u32) -> Result<()> {
        if buf.len() % t.size != 0 {
            return Err(Error::Config(format!(
                "divide of {} bytes of {}-byte elements",
                buf.len(),
                t.size
            )));
        }
        let name = kernels::divide_kernel_name(t);
        // SAFETY: `oxccl_divide_*` has this signature; `buf` holds the `n` elements it
        // touches.
        unsafe {
            let f = self.symbol::<DivideFn>(&name)?;
            f(buf.as_mut_ptr(), (buf.len() / t.size) as u64, d);
        }
        Ok(())
    }
}

impl Drop for HostKernels {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
