//! oxccl's NCCL C ABI: `libnccl.so.2`, a drop-in for programs written against NCCL, with host
//! or GPU buffers.
//!
//! `include/nccl.h` declares the interface (NCCL 2.28's types, values and signatures);
//! every function is exported as `ncclX` and `pncclX`. The library maps each call onto
//! oxccl's [`Communicator`](oxccl::Communicator) and [`Group`](oxccl::Group):
//!
//! - [`ffi`]: NCCL's types and constants; [`types`]: datatypes and operators;
//! - [`handle`]: what an `ncclComm_t` is (a registry of live communicators, non-blocking
//!   init on a thread); [`group`]: `ncclGroupStart`/`End` and the running of ops;
//!   [`ops`]: one op's arguments, NCCL's in-place rules and checks; [`staged`]: ops on GPU
//!   buffers, ordered on the program's streams through pinned host memory;
//! - [`error`]: results, `ncclGetLastError`, the panic boundary; [`mod@env`]: `NCCL_*`
//!   variables mapped to `OXCCL_*`;
//! - `api_comm`, `api_coll`, `api_mem`: the exported functions.
//!
//! **Architecture invariant:** only this crate knows about C. Every export runs its body
//! through [`error::guard`], so no panic crosses the boundary, and writes its
//! out-parameters only on success.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod device_ptr;
pub mod env;
pub mod error;
pub mod ffi;
pub mod group;
pub mod handle;
pub mod ops;
pub mod peer;
pub mod staged;
pub mod types;

mod api_absent;
pub(crate) mod api_coll;
pub(crate) mod api_comm;
mod api_mem;

#[cfg(test)]
mod abi_tests;

/// Defines an export under NCCL's name and its `pnccl` profiling alias, both calling one
/// implementation wrapped in [`error::guard`].
macro_rules! export {
    ($(#[doc = $doc:literal])* fn $name:ident / $pname:ident ($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// Pointer arguments must be valid as NCCL documents for this call.
        #[no_mangle]
        #[allow(non_snake_case)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $crate::ffi::NcclResult {
            $crate::error::guard(stringify!($name), || $body)
        }

        #[doc = concat!("The profiling alias of [`", stringify!($name), "`].")]
        ///
        /// # Safety
        /// As the function it aliases.
        #[no_mangle]
        #[allow(non_snake_case)]
        pub unsafe extern "C" fn $pname($($arg: $ty),*) -> $crate::ffi::NcclResult {
            // SAFETY: the same contract as the aliased function.
            unsafe { $name($($arg),*) }
        }
    };
}
pub(crate) use export;

/// Writes `value` through an out-parameter after checking it is non-null.
///
/// # Safety
/// `ptr`, if non-null, must be valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(ptr: *mut T, name: &str, value: T) -> error::CResult<()> {
    if ptr.is_null() {
        return Err(error::Failure::invalid(format!("{name} is NULL")));
    }
    // SAFETY: non-null, and valid for writes by the caller's contract.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Checks an out-parameter before any work, so a NULL one fails without side effects.
pub(crate) fn need<T>(ptr: *const T, name: &str) -> error::CResult<()> {
    if ptr.is_null() {
        return Err(error::Failure::invalid(format!("{name} is NULL")));
    }
    Ok(())
}
