//! Set-up shared by the training parity tests.
// Each test file uses only some of these helpers.
#![allow(dead_code)]

use oxccl_train::data::Dataset;
use oxccl_train::TINY_SHAKESPEARE;
use std::sync::{Arc, Once};

/// One matmul thread per rank: the ranks are the parallelism, and CI has two cores.
pub fn one_thread_per_rank() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var("RAYON_NUM_THREADS", "1"));
}

/// Tiny Shakespeare's vocabulary size and dataset.
pub fn dataset() -> (usize, Arc<Dataset>) {
    let (tok, data) = Dataset::from_text(TINY_SHAKESPEARE).expect("the text encodes");
    (tok.vocab_size(), Arc::new(data))
}
