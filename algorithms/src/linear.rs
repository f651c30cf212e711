//! Linear all-to-all, gather and scatter: every rank sends all of its blocks at once, then
//! receives all of its blocks. For small blocks, where the pairwise exchange's `p - 1`
//! latencies dominate; gather and scatter talk to the root directly.
//!
//! # All-to-all plan of rank `r` of `p`
//! One split, no scratch; every channel runs the same steps over its piece (arithmetic mod
//! `p`):
//!
//! 1. `copy input[b_r] into output[b_r]` (the own block);
//! 2. **sends, all first, staggered**: `send input[b_{r+k}] to r+k` for `k = 1..p`;
//! 3. **receives**: `recv from r-k into output[b_{r-k}]` for `k = 1..p`.
//!
//! The stagger spreads the load: at the `k`-th send every rank targets a different rank
//! (`r + k` is a permutation), instead of all ranks hitting rank 0 first. The receives follow
//! the same stagger: rank `r - k` sends to `r` as its `k`-th message, so the first receive
//! waits for the first messages sent.
//!
//! With one rank the plan is the copy alone. In place (the verifier's model: every output
//! block is the input block of the same index) the plan is still correct, because a rank
//! writes no output block before all of its sends have read their input blocks, and the own
//! block is copied onto itself; the tests verify both. (The engine gives non-load/store
//! all-to-all plans a private copy of the input in place anyway.)
//!
//! # Why it cannot deadlock
//! Each of a rank's `p - 1` sends goes to a different connection, so in one round every
//! connection `r → j` carries exactly **one** chunk. Within a round: if the FIFO has room, all
//! sends of every rank complete, and every receive then finds its message (the receive
//! order is free). Across rounds, when rank `r` sends its round-`t` chunk to `j`, it has
//! finished round `t-1`, so it has received `j`'s round-`t-1` chunk, which `j` sent only after
//! finishing round `t-2`, including receiving `r`'s round-`t-2` chunk: the connection holds at
//! most `r`'s chunks of rounds `t-1` and `t`, so with FIFOs of two chunks a send never waits.
//! With FIFOs of one chunk it still cannot deadlock (by induction on rounds: once every rank
//! has finished round `t-1`, every connection is empty, so every round-`t` send completes and
//! then every round-`t` receive), but a fast rank's next-round send may wait for a slow
//! receiver. The tests verify both.
//!
//! # Gather and scatter (root `R`)
//! One split, no scratch, every channel the same steps.
//! - **Gather**, root: `copy input[b0] into output[b_R]`, then `recv from R+k into
//!   output[b_{R+k}]` for `k = 1..p`; every other rank: `send input[b0] to R`.
//! - **Scatter**, root: `copy input[b_R] into output[b0]`, then `send input[b_{R+k}] to R+k`
//!   for `k = 1..p`; every other rank: `recv from R into output[b0]`.
//!
//! Every sender posts its message at once, so the root's receives (gather) and the ranks'
//! receives (scatter) all find their message as soon as it can arrive. In place (on the root:
//! gather's input is output block `R`, scatter's output is input block `R`) the copy is onto
//! itself and nothing else touches that block. Deadlock freedom is the all-to-all argument
//! with one connection per non-root: each carries one chunk per round, so even FIFOs of one
//! chunk suffice.
//!
//! # Cost
//! `n` the size of one block, per rank and op.
//! - All-to-all: `p - 1` messages, issued back to back so their latencies overlap (one α in
//!   [`crate::cost`]), `(p-1)·n` bytes: `α + (p-1)·n·β`, against the pairwise exchange's
//!   `(p-1)·α + (p-1)·n·β` ([`crate::ring`]). The model ignores what it hides: `p - 1`
//!   connections active at once per rank, incast at the receivers, and the FIFO memory of
//!   `p - 1` connections (NCCL's scaling problem for all-to-all at large `p`).
//! - Gather: every non-root sends one message, `α + n·β`; the root receives `p - 1` blocks,
//!   `(p-1)·n` bytes over its link, which bounds the op: `α + (p-1)·n·β`, the lower bound
//!   for any gather (every other rank's block must reach the root). [`crate::cost::traffic`]
//!   charges bytes to their sender, so it shows the root's share only in
//!   [`crate::cost::received`].
//! - Scatter: the mirror; the root sends `p - 1` messages back to back: `α + (p-1)·n·β`
//!   (one α, `(p-1)·n` bytes), every other rank receives one.

use crate::built::Built;
use crate::{Buf, Collective, Region, Step};

fn input(block: u32) -> Region {
    Region::new(Buf::Input, block, 0)
}

fn output(block: u32) -> Region {
    Region::new(Buf::Output, block, 0)
}

/// `r + k mod p` without overflow.
fn add(p: u32, r: u32, k: u32) -> u32 {
    ((u64::from(r) + u64::from(k)) % u64::from(p)) as u32
}

/// The steps of rank `rank` of `nranks`; the arguments were checked by [`crate::build`]
/// (linear supports all-to-all, gather and scatter).
pub(crate) fn steps(collective: Collective, nranks: u32, rank: u32) -> Built {
    let steps = match collective {
        Collective::AllToAll => all_to_all(nranks, rank),
        Collective::Gather { root } => gather(nranks, root, rank),
        Collective::Scatter { root } => scatter(nranks, root, rank),
        other => unreachable!("linear does not implement {}", other.name()),
    };
    Built {
        splits: 1,
        scratch: 0,
        steps,
    }
}

fn all_to_all(nranks: u32, rank: u32) -> Vec<Step> {
    let (p, r) = (nranks, rank);
    let mut steps = Vec::with_capacity(2 * p as usize - 1);
    steps.push(Step::Copy {
        src: input(r),
        dst: output(r),
    });
    for k in 1..p {
        let to = add(p, r, k);
        steps.push(Step::Send { to, src: input(to) });
    }
    for k in 1..p {
        let from = add(p, r, p - k);
        steps.push(Step::Recv {
            from,
            dst: output(from),
        });
    }
    steps
}

/// The root copies its own block and receives every other one; the others send theirs.
fn gather(p: u32, root: u32, rank: u32) -> Vec<Step> {
    if rank != root {
        return vec![Step::Send {
            to: root,
            src: input(0),
        }];
    }
    let mut steps = vec![Step::Copy {
        src: input(0),
        dst: output(root),
    }];
    steps.extend((1..p).map(|k| add(p, root, k)).map(|from| Step::Recv {
        from,
        dst: output(from),
    }));
    steps
}

/// The root copies its own block and sends every other one; the others receive theirs.
fn scatter(p: u32, root: u32, rank: u32) -> Vec<Step> {
    if rank != root {
        return vec![Step::Recv {
            from: root,
            dst: output(0),
        }];
    }
    let mut steps = vec![Step::Copy {
        src: input(root),
        dst: output(0),
    }];
    steps.extend(
        (1..p)
            .map(|k| add(p, root, k))
            .map(|to| Step::Send { to, src: input(to) }),
    );
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_of_the_steps() {
        let built = steps(Collective::AllToAll, 4, 1);
        assert_eq!((built.splits, built.scratch), (1, 0));
        let peers: Vec<(Option<u32>, Option<u32>)> = built
            .steps
            .iter()
            .map(|s| (s.send_peer(), s.recv_peer()))
            .collect();
        assert_eq!(
            peers,
            [
                (None, None),
                (Some(2), None),
                (Some(3), None),
                (Some(0), None),
                (None, Some(0)),
                (None, Some(3)),
                (None, Some(2)),
            ]
        );
        assert_eq!(steps(Collective::AllToAll, 1, 0).steps.len(), 1);
    }

    #[test]
    fn gather_and_scatter_talk_to_the_root() {
        let peers = |c, r| -> Vec<(Option<u32>, Option<u32>)> {
            steps(c, 4, r)
                .steps
                .iter()
                .map(|s| (s.send_peer(), s.recv_peer()))
                .collect()
        };
        let (g, s) = (
            Collective::Gather { root: 2 },
            Collective::Scatter { root: 2 },
        );
        assert_eq!(
            peers(g, 2),
            [
                (None, None),
                (None, Some(3)),
                (None, Some(0)),
                (None, Some(1))
            ]
        );
        assert_eq!(peers(g, 0), [(Some(2), None)]);
        assert_eq!(
            peers(s, 2),
            [
                (None, None),
                (Some(3), None),
                (Some(0), None),
                (Some(1), None)
            ]
        );
        assert_eq!(peers(s, 1), [(None, Some(2))]);
        let alone = Collective::Gather { root: 0 };
        assert_eq!(
            steps(alone, 1, 0).steps,
            [Step::Copy {
                src: input(0),
                dst: output(0)
            }]
        );
    }
}
