//! oxccl's command-line tools.
//!
//! The binaries in `src/bin/` are thin: each calls into a module of this library, so the
//! logic can be unit-tested and read without the argument plumbing.
//!
//! - [`launch`]: `oxccl-run`, the local launcher that starts the N ranks of a job on one
//!   host (like `torchrun --standalone` or `mpirun` on one node).
#![forbid(unsafe_code)]

pub mod launch;
