//! Bruck all-gather and all-to-all: `⌈log2 p⌉` exchange steps, step `k` with the ranks
//! `2^k` away.
//!
//! # Nomenclature
//! - `p`: number of ranks; `r`: this rank; all rank and block arithmetic is mod `p`.
//! - **step `k`** (`k = 0..⌈log2 p⌉`), distance `d = 2^k`: a run of `SendRecv`s, one per block
//!   moved (a message is one chunk, and a chunk is one block: one split), all with the same
//!   pair of peers. The step ends when its last `SendRecv` has both sent and received.
//!
//! # All-gather (rank `r`, one split, no scratch)
//! 1. `copy input[b0] into output[b_r]` (the engine skips it in place, where it is the same
//!    memory).
//! 2. Step `k`, `d = 2^k`, `cnt = min(d, p - d)`: for `i = 0..cnt`, `send_recv` block
//!    `r + i` (from the input for `i = 0`, from `output[b_{r+i}]` otherwise) **to `r - d`**,
//!    receiving block `r + d + i` **from `r + d`** into `output[b_{r+d+i}]`.
//!
//! Before step `k` rank `r` holds blocks `r, r+1, …, r+d-1` (induction: rank `r + d` holds
//! `r+d, …, r+2d-1`, which it sends to `r` in the same order), so after the last step it holds
//! all `p`; the last step of a non-power of two moves only the `p - d` blocks still missing.
//!
//! **No final rotation.** The classic Bruck gathers into a contiguous buffer in the order
//! `r, r+1, …` (one message per step carrying `2^k` blocks) and rotates it down by `r` at the
//! end. Here a message is one block and a region names its block, so every received block is
//! placed straight at its final position (block index = source rank): no rotation, no scratch.
//! In place the own block is already at `output[b_r]`; nothing else is written over it.
//!
//! # All-to-all (rank `r`, one split, out of place)
//! Position `i` (`i = 0..p`) of rank `r` starts as input block `r + i` (the block destined to
//! `r + i`: the classic local rotation, here only a renaming). Step `k` sends every position
//! `i` with bit `k` set to `r + d` and receives the same positions from `r - d`, in increasing
//! `i` (so sender and receiver agree on the order). Afterwards position `i` of rank `r` holds
//! the block that started at rank `r - (i mod 2d)` and is destined to `r - (i mod 2d) + i`;
//! after the last step, the block of rank `r - i` destined to `r`: `output[b_{r-i}]` (the
//! inverse rotation, again only a renaming). Position `0` is `copy input[b_r] into
//! output[b_r]`.
//!
//! **Where a position lives.** Position `i` is received once per set bit of `i`; its last
//! reception (step `⌊log2 i⌋`) lands in its final home `output[b_{r-i}]`. Before that it
//! needs a temporary home from one reception to the next, different from the one it is sent
//! from (a `SendRecv` must read and write different memory). Out of place, an output block
//! is free until its own position arrives in it, so a temporary goes into the output block
//! of a position that arrives *after* the temporary has been sent on (a later step, or the
//! same step at a higher position: positions go in increasing order), choosing the one that
//! becomes final soonest; only when there is none, into a scratch block. Free blocks are
//! taken back when the temporary is sent on. The pattern depends on `p` only (every rank
//! runs the same one, renamed), so every rank declares the same scratch: at most `p/3`
//! blocks and about `p/5` for large `p` (14 for 64 ranks, 52 for 256, 194 for 1000;
//! [`all_to_all_scratch`]), against the classic Bruck's `p`-block rotation buffer.
//!
//! **In place** all-to-all reads input blocks after the matching output blocks were written,
//! so the engine gives it a private copy of the input (as for the ring's all-to-all); the
//! tests verify it out of place only.
//!
//! # Why it cannot deadlock
//! Every rank runs the same sequence of `SendRecv`s; the `j`-th of step `k` sends on
//! connection `r → r ∓ d` and receives the `j`-th message of connection `r ± d → r`, which the
//! peer sends in its own `j`-th `SendRecv` of step `k`. Order all `SendRecv`s of all rounds by
//! their index: a rank at the smallest index `j` can always finish it. Its receive half needs
//! message `j` from its source, which is at index `≥ j` and so has sent it or can (its target
//! has received everything before `j`); its send half needs room, and its target, at index
//! `≥ j`, has received every earlier message on that connection. So even FIFOs of **one**
//! chunk suffice; the tests verify with one and two. The halves of a `SendRecv` never wait
//! for each other, so no cycle of waits forms within a step either.
//!
//! # Cost
//! `n` the size of one block, per rank and op (see [`crate::cost`]):
//! - all-gather: `p - 1` messages in `⌈log2 p⌉` steps, `(p-1)·n` bytes:
//!   `⌈log2 p⌉·α + (p-1)·n·β` when a step's messages are issued together (the ring's
//!   bandwidth, `⌈log2 p⌉` instead of `p - 1` latencies);
//! - all-to-all: `Σ_{i<p} popcount(i)` messages (`(p/2)·log2 p` for a power of two) in
//!   `⌈log2 p⌉` steps: `⌈log2 p⌉·α + (p/2)·⌈log2 p⌉·n·β`, against the pairwise exchange's
//!   `(p-1)·α + (p-1)·n·β`: it wins for small blocks only.
//!
//! **But:** a message here is one block, and the engine runs the `SendRecv`s of a step one
//! after another (each waits for its incoming block), so [`crate::cost::traffic`] counts one
//! latency per `SendRecv`: all-gather `p - 1` (the ring's), all-to-all one per message.
//! The `⌈log2 p⌉` latencies above need one message per step carrying all of its blocks (a
//! region spanning several blocks), or connections deep enough to take a whole step's
//! messages back to back. With FIFOs of two chunks a step's messages can at best go two at a
//! time.

use std::collections::BTreeSet;

use crate::built::Built;
use crate::{Buf, Collective, Region, Step};

/// `⌈log2 p⌉`, the number of exchange steps (`0` for one rank).
pub fn step_count(nranks: u32) -> u32 {
    match nranks {
        0 | 1 => 0,
        p => u32::BITS - (p - 1).leading_zeros(),
    }
}

/// `r + k mod p` without overflow.
fn add(p: u32, r: u32, k: u32) -> u32 {
    ((u64::from(r) + u64::from(k)) % u64::from(p)) as u32
}

/// `r - k mod p` (`k <= p`).
fn sub(p: u32, r: u32, k: u32) -> u32 {
    add(p, r, p - k % p)
}

fn input(block: u32) -> Region {
    Region::new(Buf::Input, block, 0)
}

fn output(block: u32) -> Region {
    Region::new(Buf::Output, block, 0)
}

fn scratch(block: u32) -> Region {
    Region::new(Buf::Scratch, block, 0)
}

/// The steps of rank `rank` of `nranks`; the arguments were checked by [`crate::build`]
/// (Bruck supports all-gather and all-to-all only).
pub(crate) fn steps(collective: Collective, nranks: u32, rank: u32) -> Built {
    match collective {
        Collective::AllToAll => all_to_all(nranks, rank),
        _ => Built {
            splits: 1,
            scratch: 0,
            steps: all_gather(nranks, rank),
        },
    }
}

fn all_gather(p: u32, r: u32) -> Vec<Step> {
    let mut steps = Vec::with_capacity(p as usize);
    steps.push(Step::Copy {
        src: input(0),
        dst: output(r),
    });
    for k in 0..step_count(p) {
        let d = 1u32 << k;
        let (to, from) = (sub(p, r, d), add(p, r, d));
        for i in 0..d.min(p - d) {
            steps.push(Step::SendRecv {
                to,
                src: if i == 0 {
                    input(0)
                } else {
                    output(add(p, r, i))
                },
                from,
                dst: output(add(p, from, i)),
            });
        }
    }
    steps
}

/// One exchange of the all-to-all's position pattern (the same on every rank): step `k`
/// sends position `position` from `src` and receives it into `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Move {
    k: u32,
    position: u32,
    src: Home,
    dst: Home,
}

/// Where a position of the all-to-all lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    /// Its initial input block `r + i`.
    Input,
    /// The final output block of position `j` (output block `r - j`), its own (`j = i`)
    /// or, before `j` arrives there, as a temporary.
    Output(u32),
    /// A scratch block.
    Scratch(u32),
}

/// `⌊log2 i⌋` (`i > 0`): the step in which position `i` reaches its final home.
fn top_bit(i: u32) -> u32 {
    u32::BITS - 1 - i.leading_zeros()
}

/// The all-to-all's moves in order, and the scratch blocks they use (see the module doc).
fn all_to_all_moves(p: u32) -> (Vec<Move>, u32) {
    let nsteps = step_count(p);
    let mut home = vec![Home::Input; p as usize];
    // Output blocks free to hold a temporary, by the step that makes them final: position
    // `j`'s block is free until step `top_bit(j)` unless a temporary is in it.
    let mut free_output: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); nsteps as usize];
    for j in 1..p {
        free_output[top_bit(j) as usize].insert(j);
    }
    let mut free_scratch: Vec<u32> = Vec::new();
    let mut scratch_blocks = 0;
    let mut moves = Vec::new();
    for k in 0..nsteps {
        let d = 1u32 << k;
        for i in (1..p).filter(|i| i & d != 0) {
            let src = home[i as usize];
            let dst = if top_bit(i) == k {
                let taken = free_output[k as usize].remove(&i);
                debug_assert!(taken, "position {i}'s output block is free when it arrives");
                Home::Output(i)
            } else {
                // A temporary until step `next`, when `i` is sent on: an output block that
                // becomes final later (or in step `next` but after `i` was sent: positions go
                // in increasing order), the one that becomes final soonest; else scratch.
                let next = (k + 1..nsteps).find(|b| i >> b & 1 == 1).unwrap_or(nsteps);
                let same_step = free_output
                    .get(next as usize)
                    .and_then(|set| set.range(i + 1..).next().copied());
                let later = || {
                    free_output
                        .iter()
                        .skip(next as usize + 1)
                        .find_map(|set| set.first().copied())
                };
                match same_step.or_else(later) {
                    Some(j) => {
                        free_output[top_bit(j) as usize].remove(&j);
                        Home::Output(j)
                    }
                    None => Home::Scratch(free_scratch.pop().unwrap_or_else(|| {
                        scratch_blocks += 1;
                        scratch_blocks - 1
                    })),
                }
            };
            match src {
                Home::Input => {}
                Home::Output(j) => {
                    free_output[top_bit(j) as usize].insert(j);
                }
                Home::Scratch(slot) => free_scratch.push(slot),
            }
            home[i as usize] = dst;
            moves.push(Move {
                k,
                position: i,
                src,
                dst,
            });
        }
    }
    (moves, scratch_blocks)
}

/// Scratch blocks Bruck all-to-all needs on `nranks` ranks (the same on every rank).
pub fn all_to_all_scratch(nranks: u32) -> u32 {
    all_to_all_moves(nranks).1
}

fn all_to_all(p: u32, r: u32) -> Built {
    let (moves, scratch_blocks) = all_to_all_moves(p);
    let mut steps = Vec::with_capacity(moves.len() + 1);
    steps.push(Step::Copy {
        src: input(r),
        dst: output(r),
    });
    let region = |home: Home, i: u32| match home {
        Home::Input => input(add(p, r, i)),
        Home::Output(j) => output(sub(p, r, j)),
        Home::Scratch(slot) => scratch(slot),
    };
    for m in moves {
        let d = 1u32 << m.k;
        steps.push(Step::SendRecv {
            to: add(p, r, d),
            src: region(m.src, m.position),
            from: sub(p, r, d),
            dst: region(m.dst, m.position),
        });
    }
    Built {
        splits: 1,
        scratch: scratch_blocks,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_counts() {
        let want = [
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (1000, 10),
        ];
        for (p, k) in want {
            assert_eq!(step_count(p), k, "p={p}");
        }
        assert_eq!(step_count(u32::MAX), 32);
    }

    #[test]
    fn all_to_all_homes() {
        for p in (1..=300).chain([1000, 1024]) {
            let (moves, blocks) = all_to_all_moves(p);
            let total: u32 = (0..p).map(u32::count_ones).sum();
            assert_eq!(moves.len() as u32, total, "p={p}");
            assert!(3 * blocks <= p, "p={p}: {blocks} scratch blocks");
            for m in &moves {
                assert_ne!(m.src, m.dst, "p={p} {m:?}");
            }
            // Every position ends in the output.
            for i in 1..p {
                let last = moves.iter().rev().find(|m| m.position == i).unwrap();
                assert_eq!(last.dst, Home::Output(i), "p={p} i={i}");
            }
        }
    }
}
