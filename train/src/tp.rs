//! Tensor parallelism in the style of Megatron-LM: one layer's weights split across the ranks
//! of a tensor-parallel (tp) group, with the collectives placed so that every rank computes
//! exactly what the unsharded layer computes.
//!
//! Nomenclature (the words the code uses):
//! - **tp group**: the [`TpGroup`], the ranks that share one layer; `tp` is its size.
//! - **shard**: this rank's part of a weight. Shards are cut from the *full* (unsharded) weight
//!   by the `from_full` constructors, so a test or a checkpoint can always start from the
//!   single-process model, and the `shard()`/`full_weight()` accessors go back.
//! - **f** ([`copy_to_tp`]): identity forward, all-reduce (sum) of the gradient backward.
//!   Placed where a replicated activation enters a sharded computation.
//! - **g** ([`reduce_from_tp`]): all-reduce (sum) forward, identity backward. Placed where
//!   partial sums leave a sharded computation and become replicated again.
//!
//! f and g are conjugate: a column-parallel layer followed by a row-parallel one (the MLP, or
//! attention's qkv and output projections) costs one all-reduce forward (g) and one backward
//! (f), and nothing else.
//!
//! Code map:
//! - [`ops`]: f, g and the all-gather/split along the last dimension, as candle custom ops
//!   with backward, plus plain (no-gradient) collectives on tensors.
//! - [`linear`]: [`ColumnParallelLinear`], [`RowParallelLinear`] and the [`ParallelMlp`] made
//!   of both.
//! - [`attention`]: head-sharded fused qkv weights and [`ParallelSelfAttention`].
//! - [`vocab`]: [`VocabParallelEmbedding`] and [`vocab_parallel_cross_entropy`].
//!
//! **Collective order:** every rank must issue the same collectives in the same order. The
//! forward pass does so when all ranks run the same model code; candle's backward visits the
//! graph in an order fixed by its structure, so identical graphs give identical orders.

pub mod attention;
pub mod linear;
pub mod ops;
pub mod vocab;

pub use attention::{shard_qkv, ParallelSelfAttention};
pub use linear::{ColumnParallelLinear, ParallelMlp, RowParallelLinear};
pub use ops::{copy_to_tp, gather_from_tp, reduce_from_tp, split_to_tp};
pub use vocab::{vocab_parallel_cross_entropy, VocabParallelEmbedding};

use candle_core::{Result, Tensor, Var};
use oxccl::Communicator;
use std::sync::{Arc, Mutex};

/// The ranks that share one tensor-parallel layer, with their communicator.
///
/// Cheap to clone: every layer and every custom op of a rank holds a clone, all sharing one
/// communicator behind `Arc<Mutex<_>>`. The mutex is there because candle's custom ops must be
/// `Send + Sync` and run collectives through `&self`, while oxccl's operations take
/// `&mut Communicator`; only one collective is in flight per rank at a time anyway.
#[derive(Clone)]
pub struct TpGroup {
    comm: Arc<Mutex<Communicator>>,
    /// Cached so that shape arithmetic never takes the lock.
    rank: usize,
    size: usize,
}

// The shared communicator crosses threads inside candle's ops (`Send + Sync` bounds); this
// fails to compile if oxccl ever made `Communicator` `!Send`.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Communicator>();
};

impl std::fmt::Debug for TpGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpGroup")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

impl TpGroup {
    /// A tp group over all ranks of `comm` (for a tp group that is part of a larger job,
    /// split the job's communicator first).
    pub fn new(comm: Communicator) -> Self {
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        Self {
            comm: Arc::new(Mutex::new(comm)),
            rank,
            size,
        }
    }

    /// A tp group over a communicator shared with other users (e.g. a trainer that also runs
    /// its own collectives on it). Do not hold its lock across a forward or backward pass:
    /// the tp ops take it for each collective.
    pub fn from_shared(comm: Arc<Mutex<Communicator>>) -> Result<Self> {
        let (rank, size) = {
            let c = lock(&comm)?;
            (c.rank() as usize, c.size() as usize)
        };
        Ok(Self { comm, rank, size })
    }

    /// This rank within the group, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the group (`tp`).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The shared communicator.
    pub fn communicator(&self) -> &Arc<Mutex<Communicator>> {
        &self.comm
    }

    /// Runs `f` on the communicator, turning an oxccl error into a candle error that keeps
    /// oxccl's message and says which collective of which rank failed.
    pub(crate) fn with_comm<R>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Communicator) -> oxccl::Result<R>,
    ) -> Result<R> {
        let mut c = lock(&self.comm)?;
        f(&mut c).map_err(|e| {
            candle_core::Error::msg(format!(
                "tensor-parallel {what} on rank {} of {}: {e}",
                self.rank, self.size
            ))
        })
    }

    /// Rows `[rank·n/tp, (rank+1)·n/tp)` of dimension `dim` of `full` (copied), where `n` is
    /// that dimension's size; an error names `what` if `n` is not a multiple of `tp`.
    pub(crate) fn shard_of(&self, full: &Tensor, dim: usize, what: &str) -> Result<Tensor> {
        let n = full.dim(dim)?;
        let per = self.per_rank(n, what)?;
        full.narrow(dim, self.rank * per, per)?.contiguous()
    }

    /// `n / tp`, or an error naming `what` if `n` does not split evenly.
    pub(crate) fn per_rank(&self, n: usize, what: &str) -> Result<usize> {
        if n % self.size != 0 {
            candle_core::bail!(
                "{what} has size {n}, which does not split over {} tensor-parallel ranks",
                self.size
            );
        }
        Ok(n / self.size)
    }
}

/// A new variable holding a copy of `t`: a layer's parameters never alias the full model's
/// (`Var::from_tensor` would share an existing variable, e.g. a whole-tensor "shard" at tp = 1).
pub(crate) fn fresh_var(t: &Tensor) -> Result<Var> {
    Var::from_tensor(&t.detach())
}

/// Locks the communicator; a poisoned lock (a panic during a collective on this rank) leaves
/// the communicator in an unknown state, so it becomes an error rather than being reused.
fn lock(comm: &Mutex<Communicator>) -> Result<std::sync::MutexGuard<'_, Communicator>> {
    comm.lock().map_err(|_| {
        candle_core::Error::msg(
            "tensor-parallel communicator unusable: a collective panicked while holding it",
        )
    })
}
