//! oxccl's collective algorithms as pure data.
//!
//! An algorithm is a function from (collective, nranks, rank, nchannels) to a [`Plan`]: per
//! channel, the ordered steps the rank performs, in NCCL's vocabulary of fused primitives.
//! The [`verify`] module runs every rank's plan against the others with chunks as sets of
//! contributions and proves deadlock freedom and the collective's result; [`cost`] gives the
//! α–β–γ cost of a plan for the tuner.
//!
//! **Architecture invariant:** this crate does no I/O, spawns no thread, reads no clock and
//! contains no `unsafe`; it depends on no other crate.
#![forbid(unsafe_code)]

pub mod collective;
pub mod plan;

pub use collective::Collective;
pub use plan::{Buf, Plan, Region, Shape, Step};
