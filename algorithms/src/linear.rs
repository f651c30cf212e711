//! Linear all-to-all: every rank sends all of its blocks at once, then receives all of its
//! blocks. For small blocks, where the pairwise exchange's `p - 1` latencies dominate.
//!
//! # Plan of rank `r` of `p`
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
//! # Cost
//! `n` the size of one block, per rank and op: `p - 1` messages, issued back to back so their
//! latencies overlap (one α in [`crate::cost`]), `(p-1)·n` bytes: `α + (p-1)·n·β`, against the
//! pairwise exchange's `(p-1)·α + (p-1)·n·β` ([`crate::ring`]). The model ignores what it
//! hides: `p - 1` connections active at once per rank, incast at the receivers, and the FIFO
//! memory of `p - 1` connections (NCCL's scaling problem for all-to-all at large `p`).

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
/// (linear supports all-to-all only).
pub(crate) fn steps(collective: Collective, nranks: u32, rank: u32) -> Built {
    debug_assert_eq!(collective, Collective::AllToAll);
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
    Built {
        splits: 1,
        scratch: 0,
        steps,
    }
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
}
