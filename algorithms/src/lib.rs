//! oxccl's collective algorithms as pure data.
//!
//! An algorithm is a function from (collective, nranks, rank, nchannels) to a [`Plan`]: per
//! channel, the ordered steps the rank performs, in NCCL's vocabulary of fused primitives
//! plus a local reduction. [`build`] is the entry point; the algorithms are the [`ring`] (every
//! collective but gather and scatter), [`one_shot`] all-reduce (small messages), the
//! [`load_store`] family for ranks that read each other's memory, and the latency-oriented
//! [`tree`], [`doubling`], [`bruck`], [`binomial`] and [`linear`] plans (the last two also
//! gather and scatter). For multi-node jobs, [`build_with_nodes`] takes the node of every
//! rank ([`Nodes`]): it builds the plans over the node-contiguous order ([`order`]) and the
//! node-aware [`hierarchical`] plans. The [`verify`] module runs every rank's plan against the
//! others with chunks as sets of contributions and proves deadlock freedom and the
//! collective's result; [`cost`] gives the α–β–γ cost of a plan for the tuner.
//!
//! ```
//! use oxccl_algorithms::{build, verify::verify, Algorithm, Collective};
//!
//! let plans = (0..4)
//!     .map(|rank| build(Algorithm::Ring, Collective::AllReduce, 4, rank, 2))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let report = verify(&plans)?;
//! assert_eq!(report.max_sends, 6); // 2(p-1) messages per rank and channel
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Architecture invariant:** this crate does no I/O, spawns no thread, reads no clock and
//! contains no `unsafe`; it depends on no other crate.
#![forbid(unsafe_code)]

mod algorithm;
pub mod binomial;
pub mod bruck;
mod built;
pub mod collective;
pub mod cost;
pub mod doubling;
pub mod hierarchical;
pub mod linear;
pub mod load_store;
pub mod nodes;
pub mod one_shot;
pub mod order;
pub mod plan;
pub mod ring;
pub mod tree;
pub mod verify;

pub use algorithm::{build, Algorithm, ParseAlgorithmError, PlanError};
pub use collective::Collective;
pub use nodes::{Nodes, NodesError};
pub use order::build_with_nodes;
pub use plan::{Buf, Plan, Region, Shape, Step};
