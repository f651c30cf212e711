//! Running the kernels on a GPU through cudarc's driver API.
//!
//! [`Gpu::open`] checks that the driver library loads before cudarc touches it (cudarc
//! panics otherwise), compiles or takes from the cache the PTX for the device's own
//! architecture, and loads it. Launches go on the `Gpu`'s stream; cudarc orders them against
//! the buffers' other uses.

use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use super::kernels::{self, KernelType};
use crate::{Error, Result};

/// Threads per block of every launch.
const BLOCK: u32 = 256;
/// Blocks per multiprocessor at most: enough to hide memory latency, few enough that the
/// grid-stride loops amortise their set-up.
const BLOCKS_PER_SM: u32 = 8;

/// `Ok(())` when the CUDA driver library loads; otherwise why not.
pub fn driver_available() -> Result<()> {
    // SAFETY: loading libcuda runs only its own initialisers; the handle is dropped at once
    // (cudarc opens the library again for its calls).
    match unsafe { libloading::Library::new("libcuda.so.1") } {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Config(format!(
            "no CUDA driver (libcuda.so.1: {e}): this machine has no NVIDIA GPU driver"
        ))),
    }
}

fn driver(what: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    let what = what.into();
    move |e| Error::Config(format!("{what}: {e}"))
}

/// One GPU with oxccl's kernels loaded.
#[derive(Debug)]
pub struct Gpu {
    /// The device's primary context.
    pub ctx: Arc<CudaContext>,
    /// The stream launches go on.
    pub stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    /// Every kernel, loaded when the GPU was opened (see `on`).
    functions: std::collections::HashMap<String, cudarc::driver::CudaFunction>,
    /// `sm_90`.
    pub arch: String,
    /// `NVIDIA H200`.
    pub name: String,
    multiprocessors: u32,
}

impl Gpu {
    /// Opens GPU `ordinal` and loads the kernels (PTX from `cache` when it has them for this
    /// architecture, else compiled with NVRTC and stored there).
    pub fn open(ordinal: usize, cache: Option<&Path>) -> Result<Self> {
        driver_available()?;
        let ctx = CudaContext::new(ordinal).map_err(driver(format!("opening GPU {ordinal}")))?;
        let gpu = Self::on(ctx, cache)?;
        Ok(Self {
            stream: gpu.ctx.default_stream(),
            ..gpu
        })
    }

    /// The kernels loaded in `ctx` (a program's context), launched on a new stream of it.
    pub fn on(ctx: Arc<CudaContext>, cache: Option<&Path>) -> Result<Self> {
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("reading the compute capability"))?;
        let arch = format!("sm_{major}{minor}");
        let compiled = super::compile_kernels(&arch, cache)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(compiled.ptx))
            .map_err(driver(format!("loading oxccl's kernels for {arch}")))?;
        let name = ctx.name().map_err(driver("reading the device name"))?;
        let multiprocessors = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(driver("reading the multiprocessor count"))?
            .max(1) as u32;
        // Every kernel loaded now, not at its first launch: with lazy module loading (the
        // driver's default, and PyTorch's) a first load may synchronise the context, which
        // could wait for a program's stream that waits for the very job launching it.
        let mut functions = std::collections::HashMap::new();
        for name in kernels::kernel_names() {
            let f = module
                .load_function(&name)
                .map_err(driver(format!("finding {name}")))?;
            f.occupancy_max_active_blocks_per_multiprocessor(BLOCK, 0, None)
                .map_err(driver(format!("loading {name}")))?;
            functions.insert(name, f);
        }
        let stream = ctx.new_stream().map_err(driver("creating a stream"))?;
        Ok(Self {
            ctx,
            stream,
            module,
            functions,
            arch,
            name,
            multiprocessors,
        })
    }

    /// The kernel `name` of the loaded module.
    pub(crate) fn function(&self, name: &str) -> Result<cudarc::driver::CudaFunction> {
        match self.functions.get(name) {
            Some(f) => Ok(f.clone()),
            None => self
                .module
                .load_function(name)
                .map_err(driver(format!("finding {name}"))),
        }
    }

    /// A grid for `units` 16-byte vectors of work.
    pub(crate) fn launch_config(&self, units: usize) -> LaunchConfig {
        let wanted = units.div_ceil(BLOCK as usize).max(1);
        let grid = wanted.min((self.multiprocessors * BLOCKS_PER_SM) as usize) as u32;
        LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Enqueues `dst = a op b` (`op` one of [`kernels::OPS`]) on the stream.
    pub fn reduce(
        &self,
        op: &str,
        t: &KernelType,
        dst: &mut CudaSlice<u8>,
        a: &CudaSlice<u8>,
        b: &CudaSlice<u8>,
    ) -> Result<()> {
        if !kernels::OPS.contains(&op) {
            return Err(Error::Config(format!("no reduction kernel {op:?}")));
        }
        kernels::check_reduce_lengths(t, dst.len(), a.len(), b.len())?;
        let name = kernels::reduce_kernel_name(op, t);
        let f = self.function(&name)?;
        let n = (dst.len() / t.size) as u64;
        let cfg = self.launch_config(dst.len() / 16);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(dst).arg(a).arg(b).arg(&n);
        // SAFETY: `oxccl_reduce_*` takes (T* dst, const T* a, const T* b, u64 n); the three
        // buffers hold `n` elements each (checked above) and the kernel touches no more.
        unsafe { launch.launch(cfg) }.map_err(driver(format!("launching {name}")))?;
        Ok(())
    }

    /// Enqueues `buf[i] /= d`.
    pub fn divide(&self, t: &KernelType, buf: &mut CudaSlice<u8>, d: u32) -> Result<()> {
        let name = kernels::divide_kernel_name(t);
        let f = self.function(&name)?;
        let n = (buf.len() / t.size) as u64;
        let cfg = self.launch_config(buf.len() / 16);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(buf).arg(&n).arg(&d);
        // SAFETY: `oxccl_divide_*` takes (T* buf, u64 n, u32 d); `buf` holds `n` elements.
        unsafe { launch.launch(cfg) }.map_err(driver(format!("launching {name}")))?;
        Ok(())
    }

    /// Enqueues a copy of `src` into `dst` with oxccl's copy kernel.
    pub fn copy(&self, dst: &mut CudaSlice<u8>, src: &CudaSlice<u8>) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::Config(format!(
                "copy of {} bytes into {}",
                src.len(),
                dst.len()
            )));
        }
        let f = self.function(kernels::COPY_KERNEL)?;
        let bytes = dst.len() as u64;
        let cfg = self.launch_config(dst.len() / 16);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(dst).arg(src).arg(&bytes);
        // SAFETY: `oxccl_copy` takes (u8* dst, const u8* src, u64 bytes); both hold `bytes`.
        unsafe { launch.launch(cfg) }.map_err(driver("launching oxccl_copy"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where there is no driver, opening a GPU is an error that says so (not cudarc's panic).
    #[test]
    fn without_a_driver_opening_a_gpu_says_so() {
        if driver_available().is_ok() {
            return; // a GPU machine: the device check script covers it
        }
        let e = Gpu::open(0, None).unwrap_err().to_string();
        assert!(
            e.contains("no CUDA driver") && e.contains("libcuda.so.1"),
            "{e}"
        );
    }
}
