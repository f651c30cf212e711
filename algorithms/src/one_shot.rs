//! One-shot all-reduce: every rank sends its whole input to every other rank at once and
//! reduces what it receives, in one message latency. For small messages.
//!
//! # Plan of rank `r` of `p`
//! One split; input and output of one block; scratch of one block on ranks `r > 0` (none on
//! rank 0 or with one rank). Every channel runs the same steps over its piece:
//!
//! 1. **Sends, all first**: `send input[b0] to r+k mod p` for `k = 1..p`.
//! 2. **The fold, in rank order** `x_0 ⊕ x_1 ⊕ … ⊕ x_{p-1}` (left to right, `x_j` rank `j`'s
//!    input), receiving `x_j` from rank `j` as the fold reaches it:
//!    - rank 0: `recv_reduce from 1 with input[b0] into output[b0]`, then
//!      `recv_reduce from j with output[b0] into output[b0]` for `j = 2..p`;
//!    - rank `r > 0`: the accumulator is `scratch[b0]` until the own input is folded in:
//!      `recv from 0 into scratch[b0]`; `recv_reduce from j with scratch[b0] into
//!      scratch[b0]` for `j = 1..r`; `reduce input[b0] into scratch[b0]`; then the fold moves
//!      to the output: `recv_reduce from r+1 with scratch[b0] into output[b0]` and
//!      `recv_reduce from j with output[b0] into output[b0]` for `j = r+2..p`, or, on rank
//!      `p-1`, `copy scratch[b0] into output[b0]`.
//!
//! With one rank the plan is `copy input[b0] into output[b0]`.
//!
//! **Why rank order.** For floating point `⊕` is commutative but not associative: the fold
//! order decides the bits of the result. Every rank folds in the same order, so every rank
//! gets a bit-identical result (as the ring does, where each chunk is reduced once and then
//! copied). The verifier's contribution sets cannot see the order; the unit tests check it.
//!
//! **Why the accumulator starts in scratch.** In place, the output *is* the input: writing
//! `output[b0]` before the own input was folded in would destroy it. Rank 0 folds its input
//! first (the first `recv_reduce` reads it and writes the output in one step, which is
//! allowed: it reads each element before writing it); the other ranks keep the partial result
//! in scratch until they have read their input. This costs no extra pass over the data: the
//! own input is reduced straight from the input buffer, never copied into scratch, and the
//! one copy (on rank `p-1` only) replaces a reduction. Received chunks are reduced straight
//! out of the connection (no staging in scratch), so the scratch is one block, not `p`.
//!
//! # Why the sends never wait (FIFOs of two chunks), and why it cannot deadlock
//! Each of a rank's `p-1` sends goes to a different connection, so in one round a connection
//! carries exactly one chunk. Across rounds, when rank `r` sends its round-`k` chunk to `j`,
//! it has finished round `k-1`, so it has received `j`'s round-`k-1` chunk, which `j` sent
//! only after finishing round `k-2`, including receiving `r`'s round-`k-2` chunk. So the
//! connection `r → j` holds at most `r`'s chunks of rounds `k-1` and `k`: with the engine's
//! FIFOs of two chunks ([`crate::verify`]) a send never waits for room, every rank completes
//! its sends, and every receive then finds its message. The receive order (rank order) is
//! therefore free too: a receive waits only for its sender's first steps.
//! With FIFOs of one chunk the plan is still deadlock-free (by induction on rounds: every
//! rank's round-`k` sends complete once every rank has finished round `k-1`), but a fast
//! rank's next-round send may wait for a slow receiver; the tests verify both.
//!
//! # Cost
//! `n` the size of the block, per rank and op: `p-1` messages sent and `p-1` received,
//! concurrently (the sends are issued back to back, so their latencies overlap);
//! `α + (p-1)·n·β + (p-1)·n·γ`. The ring all-reduce costs
//! `2(p-1)α + 2(p-1)/p·n·β + (p-1)/p·n·γ`, so one-shot wins while
//! `(p-1)·n·((β+γ) - (2β+γ)/p) < (2p-3)·α`, roughly `n < 2α/(β+γ)` for large `p`: with
//! α = 1 µs, 10 GB/s links and a reducer at 100 GB/s, up to about 18 KB. Beyond that it
//! loses more the larger `p` is: `p(p-1)·n` bytes cross the fabric per op instead of the
//! ring's `2(p-1)·n`, and every rank reduces the whole block `p-1` times.

use crate::{Buf, Region, Step};

fn input() -> Region {
    Region::new(Buf::Input, 0, 0)
}

fn output() -> Region {
    Region::new(Buf::Output, 0, 0)
}

fn scratch() -> Region {
    Region::new(Buf::Scratch, 0, 0)
}

/// Scratch blocks rank `rank` of `nranks` needs (see the module doc).
pub(crate) fn scratch_blocks(nranks: u32, rank: u32) -> u32 {
    u32::from(nranks > 1 && rank > 0)
}

/// The steps of every channel of rank `rank` of `nranks`; the arguments have been checked by
/// [`crate::build`].
pub(crate) fn all_reduce(nranks: u32, rank: u32) -> Vec<Step> {
    let (p, r) = (nranks, rank);
    if p == 1 {
        return vec![Step::Copy {
            src: input(),
            dst: output(),
        }];
    }
    let mut steps = Vec::with_capacity(2 * p as usize + 1);
    for k in 1..p {
        steps.push(Step::Send {
            to: ((u64::from(r) + u64::from(k)) % u64::from(p)) as u32,
            src: input(),
        });
    }
    // The accumulator so far (`None`: nothing folded yet), and whether the own input is in.
    let mut acc: Option<Region> = None;
    let mut own_done = false;
    for j in 0..p {
        if j == r {
            match acc {
                // Rank 0: its input starts the fold and is read by the next step.
                None => acc = Some(input()),
                Some(acc_region) => {
                    steps.push(Step::Reduce {
                        src: input(),
                        dst: acc_region,
                    });
                }
            }
            own_done = true;
            continue;
        }
        // Where the fold lands: scratch until the own input was read, the output after.
        let dst = if own_done { output() } else { scratch() };
        steps.push(match acc {
            None => Step::Recv { from: j, dst },
            Some(src) => Step::RecvReduce { from: j, src, dst },
        });
        acc = Some(dst);
    }
    if acc == Some(scratch()) {
        // Rank p-1: its input was the last operand.
        steps.push(Step::Copy {
            src: scratch(),
            dst: output(),
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranks whose inputs the fold of `steps` combines, in order, checking that the
    /// operations chain (each reads the previous one's result).
    fn fold_order(steps: &[Step], rank: u32) -> Vec<u32> {
        let mut order = Vec::new();
        let mut acc: Option<Region> = None;
        for step in steps {
            let (operand, src, dst) = match *step {
                Step::Send { .. } => continue,
                Step::Recv { from, dst } => (from, None, dst),
                Step::RecvReduce { from, src, dst } => (from, Some(src), dst),
                Step::Reduce { src, dst } => {
                    assert_eq!(src, input(), "{step}");
                    (rank, Some(dst), dst)
                }
                Step::Copy { src, dst } => {
                    assert_eq!(Some(src), acc, "{step}");
                    acc = Some(dst);
                    continue;
                }
                _ => panic!("unexpected {step}"),
            };
            match (src, acc) {
                (Some(src), Some(prev)) => assert_eq!(src, prev, "{step} breaks the chain"),
                // Rank 0's first step reads its input.
                (Some(src), None) => {
                    assert_eq!((src, rank), (input(), 0), "{step}");
                    order.push(0);
                }
                (None, prev) => assert_eq!(prev, None, "{step} drops the accumulator"),
            }
            order.push(operand);
            acc = Some(dst);
        }
        assert_eq!(acc, Some(output()), "the fold ends in the output");
        order
    }

    #[test]
    fn every_rank_folds_in_rank_order() {
        for p in 2..=9 {
            for r in 0..p {
                let steps = all_reduce(p, r);
                let sends = steps.iter().take_while(|s| s.send_peer().is_some()).count();
                assert_eq!(sends, p as usize - 1, "all sends first");
                assert_eq!(
                    fold_order(&steps, r),
                    (0..p).collect::<Vec<_>>(),
                    "p={p} r={r}"
                );
                let reduces = steps
                    .iter()
                    .filter(|s| matches!(s, Step::Reduce { .. }))
                    .count();
                assert_eq!(reduces, usize::from(r > 0));
                assert_eq!(scratch_blocks(p, r), u32::from(r > 0));
            }
        }
    }

    #[test]
    fn one_rank_copies() {
        assert_eq!(
            all_reduce(1, 0),
            [Step::Copy {
                src: input(),
                dst: output()
            }]
        );
        assert_eq!(scratch_blocks(1, 0), 0);
    }
}
