//! `oxccl-train`: GPT-style decoder training on oxccl's collectives, with data, tensor and
//! pipeline parallelism, checked against single-process training.
//!
//! Pieces: character and GPT-2 BPE [`tokenizer`]s, deterministic [`data`] batches, the [`model`] (candle,
//! CPU, f32; whole or tensor-parallel shards), AdamW in [`optim`], data parallelism over oxccl
//! in [`dp`], tensor-parallel layers in [`tp`], pipeline stages and schedules in [`pipeline`],
//! the `pp × dp × tp` device [`mesh`], the loop in [`trainer`], and its CSV log, plot and
//! progress bar in [`report`]. Everything random comes from [`rng`] and is keyed by the seed,
//! so a run's numbers do not depend on the parallel layout.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod data;
pub mod dp;
pub mod mesh;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod report;
pub mod rng;
pub mod tokenizer;
pub mod tp;
pub mod trainer;
pub mod zero;

/// The training text shipped with the crate (Tiny Shakespeare, public domain).
pub const TINY_SHAKESPEARE: &str = include_str!("../data/tinyshakespeare.txt");
