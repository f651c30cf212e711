//! Load/store algorithms: every rank of a node reads the others' windows directly.
//!
//! Where ranks can read each other's memory (shared memory on one host, GPU peer access), a
//! chunk need not travel through a FIFO: its owner copies it into its **window**
//! ([`crate::Buf::Window`]) once and **posts** ([`Step::Post`]); any other rank then reads it
//! in place ([`Step::CopyFromPeer`]) or folds every rank's copy into its own result
//! ([`Step::ReduceFromPeers`]). There is no receiver-side copy out of a FIFO, no per-slot
//! handshake and no chain of forwarding ranks: a chunk is written once and read by whoever
//! needs it.
//!
//! # The window protocol (engine side)
//! A rank's window has two halves; round `k` of the op with global sequence number `e`
//! (the *epoch*, counted over all load/store rounds of the communicator) uses half `e % 2`.
//! - Before its first window write of epoch `e` the owner waits until every other rank has
//!   **acknowledged** epoch `e-2` (finished reading the half); a post publishes
//!   `e · 16 + phase`, so [`MAX_PHASES`] is 15.
//! - A reader waits until the owner's posted value for the half is at least
//!   `e · 16 + phase`, reads, and after its last step of the round acknowledges `e` to every
//!   other rank.
//!
//! So consecutive ops never wait for a barrier: a rank can be one round ahead of the slowest
//! reader, writing the other half. The verifier checks one round's plan: every read waits
//! for the phase that published the region, and no region is written after a post a reader
//! relies on ([`crate::verify::VerifyError::WindowRace`]).
//!
//! # Plans of rank `r` of `p` ([`Algorithm::LoadStoreOneShot`], `ls_one_shot`)
//! Splits 1, one channel. `W` is the window, `In`/`Out` the user buffers.
//! - **all-reduce**: `copy In[b0] into W[b0]`; `post 1`;
//!   `reduce_from_peers W[b0] with In[b0] into Out[b0]`. Each rank reads `p·n` bytes and
//!   writes `2n` (copy-in, result); no copy-out and no closing barrier.
//! - **all-gather**: `copy In[b0] into W[b0]`; `post 1`; `copy In[b0] into Out[br]`;
//!   `copy_from_peer j W[b0] into Out[bj]` for `j = r+1, r+2, …` (staggered so that ranks
//!   do not all read the same owner at once).
//! - **reduce-scatter**: `copy In[bj] into W[bj]` for `j ≠ r`; `post 1`;
//!   `reduce_from_peers W[br] with In[br] into Out[b0]`.
//! - **all-to-all**: `copy In[bj] into W[bj]` for `j ≠ r`; `post 1`; `copy In[br] into
//!   Out[br]`; `copy_from_peer j W[br] into Out[bj]` (staggered). In place this needs no
//!   private copy of the input: every block is in the window before any output is written.
//! - **broadcast**: the root copies `In[b0]` into `W[b0]`, posts, and copies `In` to `Out`;
//!   the others `copy_from_peer root W[b0] into Out[b0]`.
//! - **reduce**: the others copy `In[b0]` into `W[b0]` and post; the root
//!   `reduce_from_peers W[b0] with In[b0] into Out[b0]`.
//! - **gather**: the others copy `In[b0]` into `W[b0]` and post; the root `copy In[b0] into
//!   Out[b_root]` and `copy_from_peer j W[b0] into Out[bj]` for `j = root+1, root+2, …`. The
//!   root reads `(p−1)·n` bytes, each other rank writes `n`: the least traffic a gather
//!   allows, with one synchronisation.
//! - **scatter**: the root copies `In[bj]` into `W[bj]` for `j ≠ root`, posts, and copies
//!   `In[b_root]` into `Out[b0]`; the others `copy_from_peer root W[br] into Out[b0]`.
//!
//! # Two-shot all-reduce ([`Algorithm::LoadStoreTwoShot`], `ls_two_shot`)
//! Splits `p`, window of two blocks (`W[b0]` the staged input, `W[b1]` the reduced
//! slices). `copy In[b0.sj] into W[b0.sj]` for `j ≠ r`; `post 1`;
//! `reduce_from_peers W[b0.sr] with In[b0.sr] into W[b1.sr]`; `post 2`;
//! `copy W[b1.sr] into Out[b0.sr]`; `copy_from_peer j W[b1.sj] into Out[b0.sj]` for `j ≠ r`
//! (staggered). Each rank reduces only its `1/p` slice, so the reduction work is divided
//! instead of repeated: per rank about `(3 + 1/p)·n` bytes read and `(2 + 1/p)·n` written,
//! against one-shot's `p·n` read, which is why it wins for large messages and many ranks.
//!
//! # Registered inputs
//! Every plan here stages input block `b` in window block `b` (same split) and writes
//! nothing else into those window blocks. So when a rank's input lies in memory its peers
//! have mapped (`Communicator::alloc_shared`), the engine skips the staging copies,
//! publishes where the input is, and peers read the input itself: one pass over the data
//! less. The verifier checks this with [`crate::verify::VerifyOptions::registered_input`]:
//! every plan verifies out of place; in place the output overwrites an input that peers may
//! still be reading, so the engine reads registered inputs only out of place, and a rank
//! whose input peers read waits, before its op completes, until they acknowledged the last
//! round (the caller may reuse the input as soon as the op returns).
//!
//! # Window shape
//! Every rank's plan declares the same window shape (one block; `p` for reduce-scatter,
//! all-to-all and scatter; two for two-shot), also ranks that never write theirs
//! (broadcast's and scatter's receivers, reduce's and gather's root): the engine sizes a
//! round so that the window holds it, and all ranks must agree on the rounds. Pages never
//! written are never allocated.
//!
//! # Fold order
//! [`Step::ReduceFromPeers`] folds `x_0 ⊕ x_1 ⊕ … ⊕ x_{p-1}` in rank order on every rank,
//! so one-shot results are bit-identical across ranks; two-shot reduces each slice once.
//!
//! [`Algorithm::LoadStoreOneShot`]: crate::Algorithm::LoadStoreOneShot
//! [`Algorithm::LoadStoreTwoShot`]: crate::Algorithm::LoadStoreTwoShot

use crate::{Buf, Collective, Region, Step};

/// Most posts one round of a plan may make (the engine packs the phase into 4 bits).
pub const MAX_PHASES: u32 = 15;

/// A load/store plan before [`crate::build`] wraps it: splits, window blocks, steps.
pub(crate) struct LoadStorePlan {
    pub(crate) splits: u32,
    pub(crate) window: u32,
    pub(crate) steps: Vec<Step>,
}

fn r(buf: Buf, block: u32, split: u32) -> Region {
    Region::new(buf, block, split)
}

/// The other ranks, starting after `rank`: `rank+1, rank+2, …, rank-1` (mod `nranks`).
fn others(nranks: u32, rank: u32) -> impl Iterator<Item = u32> {
    (1..nranks).map(move |k| ((u64::from(rank) + u64::from(k)) % u64::from(nranks)) as u32)
}

fn copy(src: Region, dst: Region) -> Step {
    Step::Copy { src, dst }
}

/// One-shot plan of `rank` of `nranks` for `collective` (any but send/recv; checked by
/// [`crate::build`]).
pub(crate) fn one_shot(collective: Collective, nranks: u32, rank: u32) -> LoadStorePlan {
    use Buf::{Input as In, Output as Out, Window as W};
    let (p, me) = (nranks, rank);
    let mut steps = Vec::new();
    let mut window = 1;
    let post = Step::Post { phase: 1 };
    match collective {
        _ if p == 1 => {
            window = 0;
            // Alone, every collective (but point-to-point) copies its one input block.
            steps.push(copy(r(In, 0, 0), r(Out, 0, 0)));
        }
        Collective::AllReduce => {
            steps.push(copy(r(In, 0, 0), r(W, 0, 0)));
            steps.push(post);
            steps.push(Step::ReduceFromPeers {
                peers: r(W, 0, 0),
                own: r(In, 0, 0),
                phase: 1,
                dst: r(Out, 0, 0),
            });
        }
        Collective::AllGather => {
            steps.push(copy(r(In, 0, 0), r(W, 0, 0)));
            steps.push(post);
            steps.push(copy(r(In, 0, 0), r(Out, me, 0)));
            steps.extend(others(p, me).map(|j| Step::CopyFromPeer {
                peer: j,
                src: r(W, 0, 0),
                phase: 1,
                dst: r(Out, j, 0),
            }));
        }
        Collective::ReduceScatter => {
            window = p;
            steps.extend(others(p, me).map(|j| copy(r(In, j, 0), r(W, j, 0))));
            steps.push(post);
            steps.push(Step::ReduceFromPeers {
                peers: r(W, me, 0),
                own: r(In, me, 0),
                phase: 1,
                dst: r(Out, 0, 0),
            });
        }
        Collective::AllToAll => {
            window = p;
            steps.extend(others(p, me).map(|j| copy(r(In, j, 0), r(W, j, 0))));
            steps.push(post);
            steps.push(copy(r(In, me, 0), r(Out, me, 0)));
            steps.extend(others(p, me).map(|j| Step::CopyFromPeer {
                peer: j,
                src: r(W, me, 0),
                phase: 1,
                dst: r(Out, j, 0),
            }));
        }
        Collective::Broadcast { root } if me == root => {
            steps.push(copy(r(In, 0, 0), r(W, 0, 0)));
            steps.push(post);
            steps.push(copy(r(In, 0, 0), r(Out, 0, 0)));
        }
        Collective::Broadcast { root } => {
            steps.push(Step::CopyFromPeer {
                peer: root,
                src: r(W, 0, 0),
                phase: 1,
                dst: r(Out, 0, 0),
            });
        }
        Collective::Reduce { root } if me == root => {
            steps.push(Step::ReduceFromPeers {
                peers: r(W, 0, 0),
                own: r(In, 0, 0),
                phase: 1,
                dst: r(Out, 0, 0),
            });
        }
        Collective::Reduce { .. } => {
            steps.push(copy(r(In, 0, 0), r(W, 0, 0)));
            steps.push(post);
        }
        Collective::Gather { root } if me == root => {
            steps.push(copy(r(In, 0, 0), r(Out, me, 0)));
            steps.extend(others(p, me).map(|j| Step::CopyFromPeer {
                peer: j,
                src: r(W, 0, 0),
                phase: 1,
                dst: r(Out, j, 0),
            }));
        }
        Collective::Gather { .. } => {
            steps.push(copy(r(In, 0, 0), r(W, 0, 0)));
            steps.push(post);
        }
        Collective::Scatter { root } if me == root => {
            window = p;
            steps.extend(others(p, me).map(|j| copy(r(In, j, 0), r(W, j, 0))));
            steps.push(post);
            steps.push(copy(r(In, me, 0), r(Out, 0, 0)));
        }
        Collective::Scatter { root } => {
            window = p;
            steps.push(Step::CopyFromPeer {
                peer: root,
                src: r(W, me, 0),
                phase: 1,
                dst: r(Out, 0, 0),
            });
        }
        Collective::Send { .. } | Collective::Recv { .. } => {
            unreachable!("build() rejects point-to-point for load/store algorithms")
        }
    }
    LoadStorePlan {
        splits: 1,
        window,
        steps,
    }
}

/// Two-shot all-reduce plan of `rank` of `nranks` (see the module doc).
pub(crate) fn two_shot_all_reduce(nranks: u32, rank: u32) -> LoadStorePlan {
    use Buf::{Input as In, Output as Out, Window as W};
    let (p, me) = (nranks, rank);
    if p == 1 {
        return LoadStorePlan {
            splits: 1,
            window: 0,
            steps: vec![copy(r(In, 0, 0), r(Out, 0, 0))],
        };
    }
    let mut steps: Vec<Step> = others(p, me)
        .map(|j| copy(r(In, 0, j), r(W, 0, j)))
        .collect();
    steps.push(Step::Post { phase: 1 });
    steps.push(Step::ReduceFromPeers {
        peers: r(W, 0, me),
        own: r(In, 0, me),
        phase: 1,
        dst: r(W, 1, me),
    });
    steps.push(Step::Post { phase: 2 });
    steps.push(copy(r(W, 1, me), r(Out, 0, me)));
    steps.extend(others(p, me).map(|j| Step::CopyFromPeer {
        peer: j,
        src: r(W, 1, j),
        phase: 2,
        dst: r(Out, 0, j),
    }));
    LoadStorePlan {
        splits: p,
        window: 2,
        steps,
    }
}
