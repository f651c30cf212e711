//! Binomial-tree broadcast and reduce, any root, in `⌈log2 p⌉` steps.
//!
//! # Nomenclature
//! - `p`: number of ranks; `r`: this rank; `v = (r − root) mod p`: the **virtual rank**, 0 at
//!   the root; `K = ⌈log2 p⌉`.
//! - `highbit(v)`, `lowbit(v)`: the highest and lowest set bit of `v > 0`.
//! - One split, one block: every channel moves its whole piece of the buffer per round.
//!
//! # Broadcast
//! In step `k = 0 .. K` every `v < 2^k` sends to `v + 2^k` (if `< p`): the tree in which the
//! **parent** of `v` is `v − highbit(v)` (received in step `log2 highbit(v)`) and the
//! **children** are `v + 2^k` for `2^k > v`, served in increasing `k` (the first child has
//! the largest subtree: it has the most steps left to forward in).
//! - root: `copy input[b0] into output[b0]`; `send input[b0] to` each child;
//! - others: `recv_copy_send from parent into output[b0] to` the first child and `send
//!   output[b0] to` the others; a leaf: `recv from parent into output[b0]`.
//!
//! # Reduce
//! The mirror, on the tree in which the **parent** of `v` is `v − lowbit(v)` and the
//! **children** are `v + 2^k` for `2^k < lowbit(v)` (every `2^k < p` at the root), if `< p`:
//! the subtree of child `v + 2^k` is the range `[v + 2^k, v + 2^(k+1))` (cut at `p`). In step
//! `k` every `v` whose lowest set bit is `2^k` sends its subtree's sum to `v − 2^k`, so a node
//! receives from its children in increasing `k`, each as soon as that child's subtree is done.
//! (For a power of two it is the broadcast's tree with the bits of `v` reversed; this
//! orientation gives contiguous subtrees, hence the fold order below.)
//! - a leaf (odd `v`, or `v = p − 1`): `send input[b0] to parent`;
//! - one child: `recv_reduce_send from child with input[b0] to parent`;
//! - several: `recv_reduce from c1 with input[b0] into scratch[b0]`, `recv_reduce from c with
//!   scratch[b0] into scratch[b0]` for the middle ones, `recv_reduce_send from c_last with
//!   scratch[b0] to parent` (one scratch block, only on these ranks);
//! - root: `recv_reduce from c1 with input[b0] into output[b0]`, then `recv_reduce from c
//!   with output[b0] into output[b0]`; with one rank `copy input[b0] into output[b0]`.
//!
//! Non-roots have no output (as in the ring's reduce, [`crate::Collective::output_blocks`]
//! is 0 there), hence the scratch accumulator. In place the root's output is its input: its
//! first receive reads the input and writes the output, element by element, which is fine.
//!
//! **Fold order.** The accumulator is always the left operand (`src ⊕ incoming`), so with
//! `x_v` the input of virtual rank `v` the root computes the operands in virtual-rank order
//! (`root, root+1, …, root−1`), grouped pairwise: for `p = 8`
//! `((x_0 ⊕ x_1) ⊕ (x_2 ⊕ x_3)) ⊕ ((x_4 ⊕ x_5) ⊕ (x_6 ⊕ x_7))`; in general the subtree sum
//! `S(v) = ((x_v ⊕ S(v+1)) ⊕ S(v+2)) ⊕ S(v+4) ⊕ …`, nesting depth `K`. The order depends on
//! the root (virtual ranks), so reduces with different roots can differ in the last bits.
//!
//! # Why no deadlock (with FIFOs of one chunk, so also of two)
//! Each tree edge carries one message per round. Run the ranks round by round, and within a
//! round in tree order: broadcast from the root down, level by level; reduce from the deepest
//! ranks up (a node after all of its children). Every receive then finds its message, and
//! every send finds an empty connection, because every message of the earlier rounds was
//! consumed and each connection carries one message per round. This schedule respects every
//! rank's own step order (receive before sends in a broadcast, children's receives before the
//! send in a reduce) and completes; by the verifier's confluence argument
//! ([`crate::verify`]) every schedule does.
//!
//! # Cost
//! `n` the size of the buffer. Broadcast: the root sends `K` messages of `n` back to back and
//! the last ranks are reached after `K` sends in sequence: `K·α + K·n·β` for an op of one
//! round (the root's link carries `K·n`). Over many rounds the engine pipelines (a rank
//! forwards round `k` while its parent sends round `k+1`), but every round still costs the
//! root `K` sends: the binomial tree is for small messages, large broadcasts belong to the
//! ring's chain. Reduce, mirrored: `K·α + K·n·β + K·n·γ` (the root folds in `K` chunks).
//! [`crate::cost::traffic`] sees one rank: the root's `K` messages (one α, being issued back
//! to back), or a non-root's single send to its parent; the `K` steps in sequence are the
//! tree's, as the ring's chain latency is the chain's.

use crate::built::Built;
use crate::{Buf, Collective, Region, Step};

fn input() -> Region {
    Region::new(Buf::Input, 0, 0)
}

fn output() -> Region {
    Region::new(Buf::Output, 0, 0)
}

fn scratch() -> Region {
    Region::new(Buf::Scratch, 0, 0)
}

/// Virtual ranks relative to a root.
#[derive(Clone, Copy)]
struct Virtual {
    p: u32,
    root: u32,
}

impl Virtual {
    /// `(rank - root) mod p`.
    fn of(self, rank: u32) -> u32 {
        ((u64::from(rank) + u64::from(self.p) - u64::from(self.root)) % u64::from(self.p)) as u32
    }

    /// The rank of virtual rank `v < p`.
    fn rank(self, v: u64) -> u32 {
        ((v + u64::from(self.root)) % u64::from(self.p)) as u32
    }
}

/// Rank `rank`'s parent in the broadcast tree of `nranks` ranks rooted at `root` (`None` at
/// the root): virtual rank `v` receives from `v − highbit(v)`.
///
/// # Panics
/// If `rank` or `root` is not below `nranks`.
pub fn broadcast_parent(nranks: u32, root: u32, rank: u32) -> Option<u32> {
    let virt = checked(nranks, root, rank);
    let v = u64::from(virt.of(rank));
    (v > 0).then(|| virt.rank(v - (1 << v.ilog2())))
}

/// Rank `rank`'s children in the broadcast tree, in the order it sends to them: virtual
/// rank `v` sends to `v + 2^k` for `2^k > v`, increasing `k`.
///
/// # Panics
/// If `rank` or `root` is not below `nranks`.
pub fn broadcast_children(nranks: u32, root: u32, rank: u32) -> Vec<u32> {
    let virt = checked(nranks, root, rank);
    let v = u64::from(virt.of(rank));
    powers()
        .filter(|&d| d > v)
        .map(|d| v + d)
        .take_while(|&c| c < u64::from(nranks))
        .map(|c| virt.rank(c))
        .collect()
}

/// Rank `rank`'s parent in the reduce tree of `nranks` ranks rooted at `root` (`None` at the
/// root): virtual rank `v` sends to `v − lowbit(v)`.
///
/// # Panics
/// If `rank` or `root` is not below `nranks`.
pub fn reduce_parent(nranks: u32, root: u32, rank: u32) -> Option<u32> {
    let virt = checked(nranks, root, rank);
    let v = u64::from(virt.of(rank));
    (v > 0).then(|| virt.rank(v & (v - 1)))
}

/// Rank `rank`'s children in the reduce tree, in the order it folds them in: virtual rank
/// `v` receives from `v + 2^k` for `2^k < lowbit(v)` (any `k` at the root), increasing `k`.
///
/// # Panics
/// If `rank` or `root` is not below `nranks`.
pub fn reduce_children(nranks: u32, root: u32, rank: u32) -> Vec<u32> {
    let virt = checked(nranks, root, rank);
    let v = u64::from(virt.of(rank));
    let limit = if v == 0 {
        u64::MAX
    } else {
        v & v.wrapping_neg()
    };
    powers()
        .take_while(|&d| d < limit)
        .map(|d| v + d)
        .take_while(|&c| c < u64::from(nranks))
        .map(|c| virt.rank(c))
        .collect()
}

/// `1, 2, 4, …` up to `2^32` (beyond any rank distance).
fn powers() -> impl Iterator<Item = u64> {
    (0..=32).map(|k| 1u64 << k)
}

fn checked(nranks: u32, root: u32, rank: u32) -> Virtual {
    assert!(
        rank < nranks && root < nranks,
        "rank {rank} and root {root} must be below {nranks}"
    );
    Virtual { p: nranks, root }
}

/// The steps of rank `rank`; the arguments were checked by [`crate::build`], which only asks
/// for what [`crate::Algorithm::Binomial`] supports (broadcast and reduce).
pub(crate) fn steps(collective: Collective, nranks: u32, rank: u32) -> Built {
    let one = |scratch, steps| Built {
        splits: 1,
        scratch,
        steps,
    };
    match collective {
        Collective::Broadcast { root } => one(0, broadcast(nranks, root, rank)),
        Collective::Reduce { root } => {
            let steps = reduce(nranks, root, rank);
            let scratch = u32::from(steps.iter().any(|s| s.regions().any(|r| r == scratch())));
            one(scratch, steps)
        }
        other => unreachable!("binomial does not implement {}", other.name()),
    }
}

fn broadcast(p: u32, root: u32, rank: u32) -> Vec<Step> {
    let children = broadcast_children(p, root, rank);
    let mut steps = Vec::with_capacity(children.len() + 1);
    let mut children = children.into_iter();
    let src = match broadcast_parent(p, root, rank) {
        None => {
            steps.push(Step::Copy {
                src: input(),
                dst: output(),
            });
            input()
        }
        Some(from) => {
            steps.push(match children.next() {
                Some(to) => Step::RecvCopySend {
                    from,
                    to,
                    dst: output(),
                },
                None => Step::Recv {
                    from,
                    dst: output(),
                },
            });
            output()
        }
    };
    steps.extend(children.map(|to| Step::Send { to, src }));
    steps
}

fn reduce(p: u32, root: u32, rank: u32) -> Vec<Step> {
    let children = reduce_children(p, root, rank);
    let parent = reduce_parent(p, root, rank);
    let Some(last) = children.len().checked_sub(1) else {
        return vec![match parent {
            Some(to) => Step::Send { to, src: input() },
            // One rank: the root is everyone.
            None => Step::Copy {
                src: input(),
                dst: output(),
            },
        }];
    };
    let dst = if parent.is_some() {
        scratch()
    } else {
        output()
    };
    let mut acc = input();
    let mut steps = Vec::with_capacity(children.len());
    for (i, from) in children.into_iter().enumerate() {
        steps.push(match parent {
            Some(to) if i == last => Step::RecvReduceSend { from, to, src: acc },
            _ => Step::RecvReduce {
                from,
                src: acc,
                dst,
            },
        });
        acc = dst;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_of_eight() {
        assert_eq!(broadcast_children(8, 0, 0), [1, 2, 4]);
        assert_eq!(broadcast_children(8, 0, 1), [3, 5]);
        assert_eq!(broadcast_parent(8, 0, 6), Some(2));
        assert_eq!(reduce_children(8, 0, 0), [1, 2, 4]);
        assert_eq!(reduce_children(8, 0, 4), [5, 6]);
        assert_eq!(reduce_parent(8, 0, 6), Some(4));
        // Root 5: virtual rank 3 is rank 0.
        assert_eq!(broadcast_parent(8, 5, 0), Some(6));
        assert_eq!(reduce_parent(8, 5, 0), Some(7));
        assert_eq!(broadcast_children(1, 0, 0), Vec::<u32>::new());
    }

    #[test]
    fn reduce_accumulates_in_scratch_off_the_root() {
        assert_eq!(
            reduce(8, 0, 4),
            [
                Step::RecvReduce {
                    from: 5,
                    src: input(),
                    dst: scratch()
                },
                Step::RecvReduceSend {
                    from: 6,
                    to: 0,
                    src: scratch()
                },
            ]
        );
        assert_eq!(
            reduce(8, 0, 2),
            [Step::RecvReduceSend {
                from: 3,
                to: 0,
                src: input()
            }]
        );
    }
}
