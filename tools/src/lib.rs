//! oxccl's command-line tools.
//!
//! The binaries in `src/bin/` are thin: each calls into a module of this library, so the
//! logic can be unit-tested and read without the argument plumbing.
//!
//! - [`launch`]: `oxccl-run`, the local launcher that starts the N ranks of a job on one
//!   host (like `torchrun --standalone` or `mpirun` on one node).
//! - [`perf`]: `oxccl-perf` and the nccl-tests binary names (`all_reduce_perf`, ...):
//!   bandwidth and correctness of every collective, in nccl-tests' output format.
//! - [`topo`]: `oxccl-topo`, this host's topology or, under a job, the cluster's.
//! - [`elem`]: reference arithmetic on the element types (the self-test and `oxccl-perf`
//!   predict every result with it).
#![forbid(unsafe_code)]

pub mod elem;
pub mod launch;
pub mod perf;
pub mod status;
pub mod topo;
