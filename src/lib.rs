//! oxccl: collective communication for Rust.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod error;

pub use error::{Error, Result};
