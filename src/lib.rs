//! oxccl: collective communication for Rust.
//!
//! Ranks of a job create a [`Communicator`] and call all-reduce, all-gather,
//! reduce-scatter, broadcast, reduce, all-to-all, gather, scatter and send/receive on Rust
//! slices of any [`Element`] type. oxccl moves the bytes over shared memory within a host and TCP between
//! hosts, running algorithms that are plain data ([`oxccl_algorithms`]) verified before use.
//!
//! ```no_run
//! use oxccl::{Communicator, ReduceOp};
//! // Started by `oxccl-run -n 4 -- my-program` (or torchrun, mpirun, srun).
//! let mut comm = Communicator::from_env()?;
//! let mine = vec![comm.rank() as f32; 1024];
//! let mut sum = vec![0.0f32; 1024];
//! comm.all_reduce(&mine, &mut sum, ReduceOp::Sum)?;
//! # Ok::<(), oxccl::Error>(())
//! ```
//!
//! **Architecture invariant:** this crate contains no `unsafe`; all of it lives in
//! `oxccl-transports` (and later the C ABI bindings).
#![forbid(unsafe_code)]

pub mod bootstrap;
mod comm;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod health;
pub mod logging;
pub mod reduce;
pub mod topology;
pub mod tuner;
pub mod types;

pub use bootstrap::{LaunchEnv, UniqueId};
pub use comm::{AbortHandle, Communicator, Group, NodeMap, Pending, PendingInit, SharedBuffer};
pub use config::{Config, TransportChoice};
pub use error::{Error, Result};
pub use float8::{F8E4M3, F8E5M2};
pub use half::{bf16, f16};

/// The largest communicator oxccl creates.
pub const MAX_RANKS: u32 = 1 << 20;
pub use oxccl_algorithms::{Algorithm, Collective};
pub use types::{DataType, Element, ReduceOp};

/// The README's Rust example, compiled as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
