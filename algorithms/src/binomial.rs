//! Binomial-tree broadcast, reduce, gather and scatter, any root, in `⌈log2 p⌉` levels.
//!
//! # Nomenclature
//! - `p`: number of ranks; `r`: this rank; `v = (r − root) mod p`: the **virtual rank**, 0 at
//!   the root; `K = ⌈log2 p⌉`.
//! - `highbit(v)`, `lowbit(v)`: the highest and lowest set bit of `v > 0`.
//! - One split; broadcast and reduce move one block (every channel its whole piece of the
//!   buffer per round), gather and scatter one block per rank, one message per block.
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
//! # Gather
//! On the reduce tree, whose subtrees are contiguous ranges of virtual ranks: the subtree of
//! `v` is `[v, end(v))` with `end(v) = min(v + lowbit(v), p)` (`end(0) = p`), and virtual rank
//! `w` of it (`w > v`) lies in the subtree of the child `v + highbit(w − v)`. A message is one
//! chunk of one block (a [`crate::Region`] names one block), so a subtree's blocks travel as
//! one message each, in increasing virtual rank: contiguous in virtual ranks, but not in
//! absolute ones when the range wraps past rank `p − 1`, which one message per block makes
//! irrelevant (every block lands straight at its own index on the root: no subtree staged in
//! scratch, no rotation).
//! - a non-root: `send input[b0] to parent`, then for `w = v+1 .. end(v)`:
//!   `recv_copy_send from child(w) into scratch[b0] to parent` (each block is forwarded as it
//!   arrives; the one scratch block is the landing place that a fused receive needs, since a
//!   non-root has no output, and is reused for every block); a leaf sends its block alone;
//! - root: `copy input[b0] into output[b_root]`, then for `w = 1 .. p`: `recv from child(w)
//!   into output[b_(root+w)]`.
//!
//! A child sends its subtree in increasing `w`, which is the order in which its parent asks
//! for it (the parent walks its own range in increasing `w`, and the child's range is a
//! contiguous part of it): so every connection carries its blocks in the order they are
//! received, and the root takes its children in increasing `k`, smallest subtree first.
//!
//! # Scatter
//! The mirror on the same tree, in decreasing virtual rank, so that the blocks of the largest
//! subtree, which have the most levels ahead of them, leave first and every rank receives its
//! own block last:
//! - root: `copy input[b_root] into output[b0]`, then for `w = p−1 down to 1`: `send
//!   input[b_(root+w)] to child(w)`;
//! - a non-root: for `w = end(v)−1 down to v+1`: `recv_copy_send from parent into scratch[b0]
//!   to child(w)`; then `recv from parent into output[b0]`.
//!
//! In place only the root's buffers alias (gather: its input is output block `root`; scatter:
//! its output is input block `root`); the copy is onto itself and no other step touches that
//! block.
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
//! Gather and scatter carry several messages per edge and round, each end of an edge walking
//! its blocks in the same order. In a gather a rank waits either for its current child's
//! message or for room towards its parent, and two ranks never wait for each other: a parent
//! waiting for a child's message has an empty connection from it, so that child has room. A
//! chain of waits therefore climbs (ranks waiting for room; the root sends nothing), turns
//! at most once into an earlier sibling's subtree that the parent is draining, and then only
//! descends: chains are finite and end at a rank that can move (at the latest a leaf, whose
//! parent waits for its message, so it has room). Scatter is the mirror (a rank waits for its
//! parent's message or for room towards its current child). The tests verify both with
//! FIFOs of one chunk and of two.
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
//!
//! Gather and scatter, `n` the size of one block: the root's link carries `(p−1)·n` either
//! way, as in the linear plans ([`crate::linear`]), but over `K` connections instead of
//! `p − 1`, which is the point of the tree (less incast at a gather's root, fewer
//! connections and FIFOs in use). The price of one message per block: a non-root `v`
//! forwards its whole subtree, `size(v)` messages and `size(v)·n` bytes (`p/2` blocks for the
//! root's largest child), every block is copied into the forwarder's scratch on its way, and
//! the wire carries each block once per level it climbs, about `(p/2)·log2 p·n` in all
//! against the linear plans' `(p−1)·n`. Pipelined, the root's last block arrives after about
//! `K` hop latencies plus `(p−1)·n·β`; [`crate::cost::traffic`] charges an α to every
//! forwarded block (each waits for its incoming message), `size(v)` latencies at `v`, and
//! one α to the root's scatter sends (issued back to back). With messages of several blocks
//! (a region spanning a subtree's blocks, not in this plan vocabulary) a gather or scatter
//! would take `K` latencies and no forwarding copies.

use crate::built::Built;
use crate::{Buf, Collective, Region, Step};

/// The whole block of this buffer (shared with the hierarchical rooted plans).
pub(crate) fn input() -> Region {
    Region::new(Buf::Input, 0, 0)
}

/// The whole block of this buffer (shared with the hierarchical rooted plans).
pub(crate) fn output() -> Region {
    Region::new(Buf::Output, 0, 0)
}

/// The whole block of this buffer (shared with the hierarchical rooted plans).
pub(crate) fn scratch() -> Region {
    Region::new(Buf::Scratch, 0, 0)
}

fn input_block(block: u32) -> Region {
    Region::new(Buf::Input, block, 0)
}

fn output_block(block: u32) -> Region {
    Region::new(Buf::Output, block, 0)
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

/// The ranks of `rank`'s subtree in the reduce tree (which gather and scatter use too), in
/// increasing virtual rank from `rank` itself: virtual ranks `[v, min(v + lowbit(v), p))`,
/// every rank at the root. Gather sends them to the parent in this order, scatter in the
/// reverse order.
///
/// # Panics
/// If `rank` or `root` is not below `nranks`.
pub fn subtree(nranks: u32, root: u32, rank: u32) -> Vec<u32> {
    let virt = checked(nranks, root, rank);
    let v = u64::from(virt.of(rank));
    (v..subtree_end(u64::from(nranks), v))
        .map(|w| virt.rank(w))
        .collect()
}

/// The end of virtual rank `v`'s subtree in the reduce tree: it is `[v, end)`.
fn subtree_end(p: u64, v: u64) -> u64 {
    if v == 0 {
        p
    } else {
        (v + (v & v.wrapping_neg())).min(p)
    }
}

/// The child of virtual rank `v` whose subtree holds virtual rank `w` (`v < w < end(v)`):
/// `v + highbit(w − v)`.
fn child_holding(v: u64, w: u64) -> u64 {
    v + (1 << (w - v).ilog2())
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
/// for what [`crate::Algorithm::Binomial`] supports (broadcast, reduce, gather, scatter).
pub(crate) fn steps(collective: Collective, nranks: u32, rank: u32) -> Built {
    let steps = match collective {
        Collective::Broadcast { root } => broadcast(nranks, root, rank),
        Collective::Reduce { root } => reduce(nranks, root, rank),
        Collective::Gather { root } => gather(nranks, root, rank),
        Collective::Scatter { root } => scatter(nranks, root, rank),
        other => unreachable!("binomial does not implement {}", other.name()),
    };
    // One scratch block where a step names it (reduce's accumulator, the landing place of a
    // gather's or scatter's forwarded blocks), none elsewhere.
    let scratch = u32::from(steps.iter().any(|s| s.regions().any(|r| r == scratch())));
    Built {
        splits: 1,
        scratch,
        steps,
    }
}

fn broadcast(p: u32, root: u32, rank: u32) -> Vec<Step> {
    tree_broadcast(
        broadcast_parent(p, root, rank),
        broadcast_children(p, root, rank),
    )
}

/// One rank's broadcast down a tree of whole blocks: the root copies its input to its
/// output, every other rank receives from `parent`, forwarding to the first child in the
/// same step, then sends to the other children. Shared with the hierarchical broadcast.
pub(crate) fn tree_broadcast(parent: Option<u32>, children: Vec<u32>) -> Vec<Step> {
    let mut steps = Vec::with_capacity(children.len() + 1);
    let mut children = children.into_iter();
    let src = match parent {
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

/// See the module doc: own block, then the subtree's blocks forwarded up in increasing
/// virtual rank; the root receives them into their output blocks.
fn gather(p: u32, root: u32, rank: u32) -> Vec<Step> {
    let virt = checked(p, root, rank);
    let v = u64::from(virt.of(rank));
    let rest = v + 1..subtree_end(u64::from(p), v);
    let child = |w| virt.rank(child_holding(v, w));
    match reduce_parent(p, root, rank) {
        None => std::iter::once(Step::Copy {
            src: input(),
            dst: output_block(root),
        })
        .chain(rest.map(|w| Step::Recv {
            from: child(w),
            dst: output_block(virt.rank(w)),
        }))
        .collect(),
        Some(to) => std::iter::once(Step::Send { to, src: input() })
            .chain(rest.map(|w| Step::RecvCopySend {
                from: child(w),
                to,
                dst: scratch(),
            }))
            .collect(),
    }
}

/// See the module doc: the subtree's blocks forwarded down in decreasing virtual rank, the own
/// block last; the root sends them from its input blocks.
fn scatter(p: u32, root: u32, rank: u32) -> Vec<Step> {
    let virt = checked(p, root, rank);
    let v = u64::from(virt.of(rank));
    let rest = (v + 1..subtree_end(u64::from(p), v)).rev();
    let child = |w| virt.rank(child_holding(v, w));
    match reduce_parent(p, root, rank) {
        None => std::iter::once(Step::Copy {
            src: input_block(root),
            dst: output(),
        })
        .chain(rest.map(|w| Step::Send {
            to: child(w),
            src: input_block(virt.rank(w)),
        }))
        .collect(),
        Some(from) => rest
            .map(|w| Step::RecvCopySend {
                from,
                to: child(w),
                dst: scratch(),
            })
            .chain(std::iter::once(Step::Recv {
                from,
                dst: output(),
            }))
            .collect(),
    }
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
        // Subtrees are contiguous in virtual ranks; with root 5 of 8 they wrap past rank 7.
        assert_eq!(subtree(8, 0, 4), [4, 5, 6, 7]);
        assert_eq!(subtree(8, 5, 7), [7, 0]);
        assert_eq!(subtree(6, 0, 4), [4, 5]);
        assert_eq!(subtree(6, 3, 3), [3, 4, 5, 0, 1, 2]);
        assert_eq!((child_holding(0, 5), child_holding(4, 7)), (4, 6));
    }

    #[test]
    fn gather_forwards_and_scatter_keeps_its_own_block_last() {
        let fwd = |from, to| Step::RecvCopySend {
            from,
            to,
            dst: scratch(),
        };
        // Root 0 of 8: rank 4's subtree is 4..8, its children 5 and 6 (holding 6 and 7).
        assert_eq!(
            gather(8, 0, 4),
            [
                Step::Send {
                    to: 0,
                    src: input()
                },
                fwd(5, 0),
                fwd(6, 0),
                fwd(6, 0),
            ]
        );
        assert_eq!(
            scatter(8, 0, 4),
            [
                fwd(0, 6),
                fwd(0, 6),
                fwd(0, 5),
                Step::Recv {
                    from: 0,
                    dst: output()
                },
            ]
        );
        assert_eq!(
            scatter(3, 1, 1),
            [
                Step::Copy {
                    src: input_block(1),
                    dst: output()
                },
                Step::Send {
                    to: 0,
                    src: input_block(0)
                },
                Step::Send {
                    to: 2,
                    src: input_block(2)
                },
            ]
        );
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
