//! Results, the thread's last error message, and the panic boundary.
//!
//! Every export returns an [`NcclResult`]. A failure keeps its message for
//! `ncclGetLastError` (per thread, NUL-terminated, valid until the next call on that thread
//! that fails) and logs it at WARN. oxccl errors map to results as follows:
//!
//! | oxccl error | result |
//! |---|---|
//! | `InvalidArgument`, `Config` | `ncclInvalidArgument` |
//! | `Failed` (an earlier op broke the communicator) | `ncclInvalidArgument` |
//! | `Environment`, `Aborted` | `ncclInvalidUsage` |
//! | `Bootstrap` (rendezvous, sockets) | `ncclSystemError` |
//! | `Transport` (a peer's connection broke), `Timeout` (a peer made no progress) | `ncclRemoteError` |
//! | `Internal`, a panic | `ncclInternalError` |

use crate::ffi::{self, NcclResult};
use std::cell::RefCell;
use std::ffi::CString;

/// A failed call: the result to return and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The NCCL result code.
    pub code: NcclResult,
    /// The message for `ncclGetLastError`.
    pub message: String,
}

/// What an export's body returns: `Ok` carries the result code of success (`ncclSuccess`
/// or `ncclInProgress`).
pub type CResult<T = NcclResult> = Result<T, Failure>;

impl Failure {
    /// A failure with `code`.
    pub fn new(code: NcclResult, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// An `ncclInvalidArgument` failure.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ffi::INVALID_ARGUMENT, message)
    }

    /// An `ncclInvalidUsage` failure.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ffi::INVALID_USAGE, message)
    }
}

impl From<oxccl::Error> for Failure {
    fn from(e: oxccl::Error) -> Self {
        Failure::new(code_of(&e), e.to_string())
    }
}

/// The NCCL result for an oxccl error (see the module doc).
pub fn code_of(e: &oxccl::Error) -> NcclResult {
    use oxccl::Error as E;
    match e {
        E::InvalidArgument { .. } | E::Config { .. } | E::Failed { .. } => ffi::INVALID_ARGUMENT,
        E::Environment(_) | E::Aborted { .. } => ffi::INVALID_USAGE,
        E::Bootstrap { .. } => ffi::SYSTEM_ERROR,
        E::Transport { .. } | E::Timeout { .. } | E::PeerDied { .. } => ffi::REMOTE_ERROR,
        E::Cuda(_) => ffi::UNHANDLED_CUDA_ERROR,
        _ => ffi::INTERNAL_ERROR,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
pub fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

/// This thread's last error message; the pointer stays valid until the thread's next
/// failing call replaces it.
pub fn last_error_ptr() -> *const std::ffi::c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Runs an export's body: catches panics (→ `ncclInternalError`), records failures for
/// `ncclGetLastError` and logs them.
pub fn guard(name: &str, body: impl FnOnce() -> CResult) -> NcclResult {
    crate::env::setup();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let failure = match outcome {
        Ok(Ok(code)) => return code,
        Ok(Err(f)) => f,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Failure::new(ffi::INTERNAL_ERROR, format!("panic in oxccl: {what}"))
        }
    };
    let message = format!("{name}: {}", failure.message);
    tracing::warn!(target: "oxccl::nccl", "{message}");
    set_last_error(&message);
    failure.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_nccl_results() {
        assert_eq!(
            code_of(&oxccl::Error::Internal("x".into())),
            ffi::INTERNAL_ERROR
        );
        assert_eq!(
            code_of(&oxccl::Error::Aborted { rank: 1 }),
            ffi::INVALID_USAGE
        );
        let e = oxccl::Error::Failed {
            rank: 0,
            first: "boom".into(),
        };
        assert_eq!(code_of(&e), ffi::INVALID_ARGUMENT);
        let e = oxccl::Error::Bootstrap {
            rank: 0,
            detail: "refused".into(),
        };
        assert_eq!(code_of(&e), ffi::SYSTEM_ERROR);
    }

    #[test]
    fn panics_become_internal_errors_with_the_message_kept() {
        let r = guard("ncclTest", || panic!("kaboom"));
        assert_eq!(r, ffi::INTERNAL_ERROR);
        // SAFETY: the pointer is this thread's NUL-terminated last error, not yet replaced.
        let msg = unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) };
        assert!(msg.to_string_lossy().contains("kaboom"), "{msg:?}");
        assert_eq!(guard("ncclTest", || Err(Failure::invalid("bad"))), 4);
        assert_eq!(guard("ncclTest", || Ok(ffi::SUCCESS)), 0);
    }
}
