//! Bootstrap: how the ranks of a job find each other.
//!
//! A [`UniqueId`] names a root rendezvous (an address and a secret). Every rank connects to
//! the root, proves it knows the secret, and the root all-gathers each rank's connection
//! details ([`RootServer`] documents the protocol). [`LaunchEnv`] reads the launch conventions
//! of oxccl-run, torchrun, Open MPI, PMI and Slurm.

mod client;
mod env;
mod root;
mod secret;
mod slurm;
pub(crate) mod wire;

pub(crate) use client::{decode_reply, BootstrapClient};
pub use env::LaunchEnv;
pub use root::RootServer;
pub use secret::{Secret, UniqueId};
