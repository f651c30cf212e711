//! Double binary tree all-reduce (NCCL's "tree"): two binary trees over the `p` ranks, each
//! reducing half of the data up to its root and broadcasting the result back down, with
//! every rank interior in at most one of them.
//!
//! # Nomenclature
//! - `p`: number of ranks; `r`: this rank; `D = ⌊log2 p⌋`: the depth of both trees
//!   ([`depth`]).
//! - **position**: a rank's 1-based place `i` in a tree's in-order layout. Tree 0 puts rank `r`
//!   at `i = r + 1`; tree 1 at `i = (r + 1 mod p) + 1`: tree 1 is tree 0 with every rank
//!   relabelled `r → r − 1 mod p` (rotated by one rank).
//! - `b = lowbit(i)`, the lowest set bit of `i`.
//! - **split `t`** of the block (two splits) goes through tree `t`.
//!
//! # The trees
//! Both trees are the balanced in-order binary tree over positions `1..=p`, the truncation of
//! the perfect tree over `1..2^(D+1)` in which node `i` has children `i ∓ b/2` ([`node`]):
//! - **leaves** are the odd positions (`b = 1`); every even position has its left child
//!   `i − b/2 ≥ 1`, so it is **interior**;
//! - **right child**: the first of `i + b/2, i + b/4, …, i + 1` that is `≤ p` (what is left of
//!   the perfect right subtree after truncation hangs under that node);
//! - **parent**: `i − b` if bit `2b` of `i` is set (a right child), else `i + b` if `≤ p`, else
//!   `i − b` (the nearest smaller ancestor: all larger ones are beyond `p`); none for the root
//!   `2^D` (the largest power of two `≤ p`);
//! - **depth**: position `i` with `b = 2^k` is at most `D − k` hops below the root (a level
//!   of the perfect tree per hop), and position 1 is exactly `D`: both trees have depth `D`.
//!
//! **Every rank is interior in at most one tree.** Interior means an even position. Rank
//! `r < p − 1` has positions `r + 1` and `r + 2`, of different parity, so it is a leaf in one
//! of the trees. Rank `p − 1` has position 1 in tree 1: a leaf there. ∎ (NCCL's
//! `ncclGetDtree` lays tree 0 out 0-based with rank 0 as a one-child root, and mirrors it for
//! even `p`, shifts it for odd `p`; with 1-based positions the shift alone works for every
//! `p`.) Hence the root of each tree (interior)
//! is a leaf of the other, and with `p ≥ 2` each tree has `⌊p/2⌋` interior ranks.
//!
//! # Steps of rank `r`
//! `x` is `input[s]`, `o` is `output[s]` of the split `s` of the tree at hand, `u` the parent,
//! `c0, c1` the children (left, then right if present). In this order:
//! 1. **leaf up**, for each tree `r` is a leaf of (one or two): `send x to u`;
//! 2. **interior up** (the tree `r` is interior in, if any): `recv_reduce from c0 with x into o`
//!    then `recv_reduce_send from c1 with o to u`; with one child `recv_reduce_send from c0
//!    with x to u`; at the root the last step is `recv_reduce … into o` instead (the root's
//!    `o` now holds the split's full reduction);
//! 3. **interior down**: `recv_copy_send from u into o to c0`, then `send o to c1`; the root
//!    `send o to c0`, `send o to c1`;
//! 4. **leaf down**, for each tree `r` is a leaf of: `recv from u into o`.
//!
//! With one rank the plan is `copy input[s] into output[s]` for both splits. No scratch: the
//! interior node accumulates in its output, which is safe in place (output `s` *is* input `s`
//! there, and no step reads `x` after a step wrote `o`); a leaf sends its input before it
//! receives the result on top of it.
//!
//! **Fold order.** Each split is reduced once, at fixed places, and then only copied, so the
//! result is bit-identical on every rank. At an interior node the fold is
//! `(x_self ⊕ S_left) ⊕ S_right` (the accumulator is the left operand of `⊕`, see
//! [`Step::Reduce`]), `S_c` the result of child `c`'s subtree: a pre-order of the tree,
//! operands grouped by subtree, depth `D + 1`.
//!
//! # Why no deadlock (with FIFOs of one chunk, so also of two)
//! Within a round order the events of all ranks in four strata: all leaf-ups; then the
//! interior-ups, children before parents; then the interior-downs, parents before children;
//! then the leaf-downs. Every event waits only on an event earlier in this order (a leaf-up
//! on nothing, an interior-up on its children's ups, an interior-down on its parent's down or,
//! at the root, on its own up, a leaf-down on its parent's down), every rank's own step order
//! agrees with it (a rank has at most one interior role, and its steps run leaf-up,
//! interior-up, interior-down, leaf-down), and running the events in this order consumes every
//! message in the stratum it was sent in, so no connection ever holds more than one chunk.
//! That schedule runs to completion, rounds back to back; by the verifier's confluence
//! argument ([`crate::verify`]) every schedule does. (A connection `a → b` can carry two
//! messages per round, when `a` is a child of `b` in one tree and its parent in the other;
//! never two of one tree.)
//!
//! # Cost
//! `n` the size of the buffer. Per rank and op, in one round: at most 4 messages (a leaf-up
//! of `n/2`; an interior rank's up of `n/2` and downs of `2·n/2`), so at most `2n` bytes sent
//! and `2n` received, like the ring's `2(p−1)/p·n`; at most `n` reduced (`γ`). The critical
//! path is `2D` messages: up from a deepest leaf to the root and down to a deepest leaf, so
//! the latency term is `2⌊log2 p⌋·α` against the ring's `2(p−1)α`. An op of one round
//! (chunks of `n/2`, forwarded whole at every hop) costs about
//! `2⌊log2 p⌋·(α + (n/2)·β) + n·γ` on the critical path.
//!
//! **Rounds do not overlap.** The engine runs the step list once per round, and a leaf
//! receives a round's result before it sends its contribution to the next round, so an op of
//! `R` rounds (chunks of `c` bytes) costs about `R·2D·(α + cβ)`: each round is one wave up and
//! down. That suits the tree's purpose (small and medium messages at large `p`); large
//! messages belong to the ring or halving-doubling. A pipelined tree needs the up and the
//! down streams to run concurrently (NCCL's split tree gives them separate threads of a
//! channel), which one step list per channel cannot express. Several chunks per tree and
//! round, interleaved, do not help either: a rank's interior step in one tree delays its
//! leaf step in the other, coupling the trees so that each chunk still pays about `2D`
//! latencies (checked with a latency simulation while designing this; not kept).
//! [`crate::cost::traffic`] sees one rank's messages, not the `2D` path (as for the ring's
//! chains); a tuner adds it.

use crate::built::Built;
use crate::{Buf, Collective, Region, Step};

/// A rank's place in one of the two trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// The parent rank (`None`: the root, or the only rank).
    pub parent: Option<u32>,
    /// Left child, then right child. A right child without a left one never occurs.
    pub children: [Option<u32>; 2],
}

impl Node {
    /// Whether the rank has children in this tree.
    pub fn is_interior(&self) -> bool {
        self.children[0].is_some()
    }

    /// The children, left first.
    pub fn children(&self) -> impl Iterator<Item = u32> {
        self.children.into_iter().flatten()
    }
}

/// The depth of both trees on `nranks` ranks: `⌊log2 nranks⌋` (0 for one rank).
pub fn depth(nranks: u32) -> u32 {
    nranks.max(1).ilog2()
}

/// Position (1-based) of `rank` in tree `tree`.
fn position(p: u32, tree: u32, rank: u32) -> u64 {
    (u64::from(rank) + u64::from(tree)) % u64::from(p) + 1
}

/// The rank at position `i` of tree `tree`.
fn rank_at(p: u32, tree: u32, i: u64) -> u32 {
    let p = u64::from(p);
    // `i - 1 < p` and `tree <= 1 <= p`: no underflow; the result is below `p`.
    ((i - 1 + p - u64::from(tree)) % p) as u32
}

/// Rank `rank`'s parent and children in tree `tree` (0 or 1) of `nranks` ranks (see the
/// module doc).
///
/// # Panics
/// If `rank >= nranks` or `tree > 1`.
pub fn node(nranks: u32, tree: u32, rank: u32) -> Node {
    assert!(rank < nranks, "rank {rank} out of range for {nranks} ranks");
    assert!(tree < 2, "tree {tree}: there are two trees");
    let n = u64::from(nranks);
    let i = position(nranks, tree, rank);
    let b = i & i.wrapping_neg();
    let parent = if i & (b << 1) != 0 {
        Some(i - b)
    } else if i + b <= n {
        Some(i + b)
    } else if i != b {
        Some(i - b)
    } else {
        None
    };
    let (left, right) = if b == 1 {
        (None, None)
    } else {
        let mut h = b / 2;
        while h > 0 && i + h > n {
            h /= 2;
        }
        (Some(i - b / 2), (h > 0).then(|| i + h))
    };
    let rank_of = |i: Option<u64>| i.map(|i| rank_at(nranks, tree, i));
    Node {
        parent: rank_of(parent),
        children: [rank_of(left), rank_of(right)],
    }
}

fn input(split: u32) -> Region {
    Region::new(Buf::Input, 0, split)
}

fn output(split: u32) -> Region {
    Region::new(Buf::Output, 0, split)
}

/// The steps of rank `rank`; the arguments were checked by [`crate::build`], which only asks
/// for what [`crate::Algorithm::Tree`] supports (all-reduce).
pub(crate) fn steps(collective: Collective, nranks: u32, rank: u32) -> Built {
    debug_assert_eq!(collective, Collective::AllReduce);
    Built {
        splits: 2,
        scratch: 0,
        steps: all_reduce(nranks, rank),
    }
}

/// The all-reduce steps of every channel of rank `rank` of `nranks` (see the module doc):
/// split `t` goes through tree `t`.
fn all_reduce(p: u32, rank: u32) -> Vec<Step> {
    if p == 1 {
        return (0..2)
            .map(|split| Step::Copy {
                src: input(split),
                dst: output(split),
            })
            .collect();
    }
    let nodes = [node(p, 0, rank), node(p, 1, rank)];
    let interior = (0..2).find(|&t| nodes[t as usize].is_interior());
    // (tree, parent) of the trees this rank is a leaf of; with p >= 2 a leaf has a parent
    // (the root is interior).
    let leaves: Vec<(u32, u32)> = (0..2)
        .filter(|&t| Some(t) != interior)
        .filter_map(|t| Some((t, nodes[t as usize].parent?)))
        .collect();
    let mut steps = Vec::with_capacity(6);
    for &(t, to) in &leaves {
        steps.push(Step::Send { to, src: input(t) });
    }
    if let Some(t) = interior {
        up(&mut steps, nodes[t as usize], t);
        down(&mut steps, nodes[t as usize], t);
    }
    for &(t, from) in &leaves {
        steps.push(Step::Recv {
            from,
            dst: output(t),
        });
    }
    steps
}

/// An interior node's reduction of split `s`: fold the children into the own input, left
/// child first, and pass the result to the parent (fused into the last receive) or, at the
/// root, keep it in the output.
fn up(steps: &mut Vec<Step>, node: Node, s: u32) {
    let mut acc = input(s);
    let last = node.children().count() - 1;
    for (i, from) in node.children().enumerate() {
        match node.parent {
            Some(to) if i == last => steps.push(Step::RecvReduceSend { from, to, src: acc }),
            _ => steps.push(Step::RecvReduce {
                from,
                src: acc,
                dst: output(s),
            }),
        }
        acc = output(s);
    }
}

/// An interior node's broadcast of split `s`: receive it from the parent (fused with the
/// forward to the left child), then send it to the right child; the root sends its result.
fn down(steps: &mut Vec<Step>, node: Node, s: u32) {
    let o = output(s);
    let mut children = node.children();
    if let Some(from) = node.parent {
        if let Some(to) = children.next() {
            steps.push(Step::RecvCopySend { from, to, dst: o });
        }
    }
    for to in children {
        steps.push(Step::Send { to, src: o });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_trees() {
        // p = 6, tree 0: positions 1..=6 are ranks 0..=5; root 4 (rank 3), children 2 and 6;
        // 2 has 1 and 3; 6 has 5.
        let n = |r| node(6, 0, r);
        assert_eq!(n(3).parent, None);
        assert_eq!(n(3).children, [Some(1), Some(5)]);
        assert_eq!(n(1).children, [Some(0), Some(2)]);
        assert_eq!(n(5).children, [Some(4), None]);
        assert_eq!(n(5).parent, Some(3));
        assert_eq!(n(4).parent, Some(5));
        // Tree 1 is rotated: rank 2 sits at position 4.
        assert_eq!(node(6, 1, 2).parent, None);
        assert_eq!(node(6, 1, 5).children, [None, None]);
        assert_eq!(
            node(1, 0, 0),
            Node {
                parent: None,
                children: [None, None]
            }
        );
        assert_eq!(depth(1), 0);
        assert_eq!(depth(6), 2);
    }

    #[test]
    fn interior_two_child_rank_steps() {
        // p = 8, rank 1 (position 2 in tree 0: children ranks 0 and 2, parent rank 3; position
        // 3 in tree 1: a leaf under position 2 = rank 0).
        let steps = all_reduce(8, 1);
        assert_eq!(
            steps,
            [
                Step::Send {
                    to: 0,
                    src: input(1)
                },
                Step::RecvReduce {
                    from: 0,
                    src: input(0),
                    dst: output(0)
                },
                Step::RecvReduceSend {
                    from: 2,
                    to: 3,
                    src: output(0)
                },
                Step::RecvCopySend {
                    from: 3,
                    to: 0,
                    dst: output(0)
                },
                Step::Send {
                    to: 2,
                    src: output(0)
                },
                Step::Recv {
                    from: 0,
                    dst: output(1)
                },
            ]
        );
    }
}
