//! `oxccl-train`: GPT-style decoder training on oxccl's collectives, with data, tensor and
//! pipeline parallelism, checked against single-process training.
//!
//! Pieces: a character [`tokenizer`], deterministic [`data`] batches, the [`model`] (candle,
//! CPU, f32), AdamW in [`optim`], data parallelism over oxccl in [`dp`], and the loop in
//! [`trainer`]. Everything random comes from [`rng`] and is keyed by the seed, so a run's
//! numbers do not depend on the parallel layout.
#![forbid(unsafe_code)]

pub mod data;
pub mod dp;
pub mod model;
pub mod optim;
pub mod rng;
pub mod tokenizer;
pub mod tp;
pub mod trainer;

/// The training text shipped with the crate (Tiny Shakespeare, public domain).
pub const TINY_SHAKESPEARE: &str = include_str!("../data/tinyshakespeare.txt");
