//! The ring: every collective as a pipeline around `r -> r+1 mod p`.
//!
//! # Nomenclature
//! - `p`: number of ranks; `r`: this rank; `next = r+1 mod p`, `prev = r-1 mod p`.
//! - **chunk `c`** of a one-block buffer: split `c` (all-reduce cuts its block into `p` splits);
//!   of a `p`-block buffer: block `c` (split 0, all-gather, reduce-scatter, all-to-all).
//! - **chain**: the open ring used by broadcast and reduce, from `root+1` (reduce) or `root`
//!   (broadcast) around to the rank before the end.
//! - **step `k`**: the `k`-th communicating step; in every ring phase rank `r` handles at step
//!   `k` the chunk its `prev` handled at step `k-1`.
//!
//! # Plans and cost
//! `n` is the size of one block ([`crate::cost`]'s `bytes_per_rank`), α the latency of one
//! message, β the time per byte on a link, γ the time per byte reduced. Every channel runs
//! the same steps over its own piece of every block; the costs are per op with the link shared
//! by all channels.
//!
//! | collective | steps of rank `r` | messages sent | cost |
//! |---|---|---|---|
//! | all-reduce | send chunk `r`; `p-2`× recv-reduce-send chunk `r-k`; recv-reduce-copy-send chunk `r+1` (complete); `p-2`× recv-copy-send chunk `r+1-k`; recv chunk `r+2` | `2(p-1)` | `2(p-1)α + 2(p-1)/p·nβ + (p-1)/p·nγ` |
//! | all-gather | copy input to output block `r`; send it; `p-2`× recv-copy-send block `r-k`; recv block `r+1` | `p-1` | `(p-1)α + (p-1)nβ` |
//! | reduce-scatter | send input block `r-1`; `p-2`× recv-reduce-send block `r-1-k`; recv-reduce block `r` into the output | `p-1` | `(p-1)α + (p-1)nβ + (p-1)nγ` |
//! | broadcast | root: copy, send; chain middle: recv-copy-send; `root-1`: recv | 1 | `(p-1)(α + nβ)` unpipelined; the engine's rounds pipeline the chain |
//! | reduce | `root+1`: send; chain middle: recv-reduce-send; root: recv-reduce | 1 | `(p-1)(α + nβ + nγ)` unpipelined |
//! | all-to-all | copy block `r`; for `k` in `1..p`: send block `r+k` to `r+k` while receiving block `r-k` from `r-k` | `p-1` | `(p-1)α + (p-1)nβ` |
//! | send / recv | one send / one recv | 1 / 0 | `α + nβ` |
//!
//! With one rank every collective is a single local copy (and reduce/broadcast's root is that
//! rank). The columns "messages sent" are per rank and channel, per round.
//!
//! Gather and scatter have no ring plan: around a ring every block would cross up to `p−1`
//! links to reach (or leave) the root, for the same `(p−1)·n` bytes on the root's link that
//! the direct exchange of [`crate::linear`] costs in one latency. [`crate::Algorithm::Ring`]
//! does not support them; the tuner uses the linear plans instead.

use crate::{Buf, Collective, Region, Step};

/// A ring plan's channel steps and its split count.
pub(crate) struct RingSteps {
    /// Splits per block's channel piece.
    pub(crate) splits: u32,
    /// The steps every channel runs.
    pub(crate) steps: Vec<Step>,
}

/// Ring positions of one rank: `add(k)` is the rank `k` places downstream.
#[derive(Clone, Copy)]
struct Ring {
    p: u32,
    r: u32,
}

impl Ring {
    /// `r + k mod p`.
    fn add(self, k: u32) -> u32 {
        ((u64::from(self.r) + u64::from(k)) % u64::from(self.p)) as u32
    }

    /// `r - k mod p` (`k <= p`).
    fn sub(self, k: u32) -> u32 {
        self.add(self.p - k % self.p)
    }

    fn next(self) -> u32 {
        self.add(1)
    }

    fn prev(self) -> u32 {
        self.sub(1)
    }
}

fn input(block: u32, split: u32) -> Region {
    Region::new(Buf::Input, block, split)
}

fn output(block: u32, split: u32) -> Region {
    Region::new(Buf::Output, block, split)
}

/// The ring's steps for `collective`; the arguments have been checked by [`crate::build`].
pub(crate) fn steps(collective: Collective, nranks: u32, rank: u32) -> RingSteps {
    let ring = Ring { p: nranks, r: rank };
    let one = |steps| RingSteps { splits: 1, steps };
    match collective {
        Collective::AllReduce => RingSteps {
            splits: nranks,
            steps: all_reduce(ring),
        },
        Collective::AllGather => one(all_gather(ring)),
        Collective::ReduceScatter => one(reduce_scatter(ring)),
        Collective::Broadcast { root } => one(broadcast(ring, root)),
        Collective::Reduce { root } => one(reduce(ring, root)),
        Collective::AllToAll => one(all_to_all(ring)),
        Collective::Send { peer } => one(vec![Step::Send {
            to: peer,
            src: input(0, 0),
        }]),
        Collective::Recv { peer } => one(vec![Step::Recv {
            from: peer,
            dst: output(0, 0),
        }]),
        Collective::Gather { .. } | Collective::Scatter { .. } => {
            unreachable!("build() rejects gather and scatter for the ring")
        }
    }
}

/// Reduce-scatter phase then all-gather phase over the `p` splits of the block.
fn all_reduce(ring: Ring) -> Vec<Step> {
    let (p, next, prev) = (ring.p, ring.next(), ring.prev());
    if p == 1 {
        return vec![Step::Copy {
            src: input(0, 0),
            dst: output(0, 0),
        }];
    }
    let mut steps = Vec::with_capacity(2 * p as usize - 1);
    steps.push(Step::Send {
        to: next,
        src: input(0, ring.r),
    });
    for k in 1..p - 1 {
        steps.push(Step::RecvReduceSend {
            from: prev,
            to: next,
            src: input(0, ring.sub(k)),
        });
    }
    let done = ring.next(); // chunk r-(p-1) = r+1 is complete here
    steps.push(Step::RecvReduceCopySend {
        from: prev,
        to: next,
        src: input(0, done),
        dst: output(0, done),
    });
    for k in 1..p - 1 {
        steps.push(Step::RecvCopySend {
            from: prev,
            to: next,
            dst: output(0, ring.add(1 + p - k)),
        });
    }
    steps.push(Step::Recv {
        from: prev,
        dst: output(0, ring.add(2)),
    });
    steps
}

fn all_gather(ring: Ring) -> Vec<Step> {
    let (p, next, prev) = (ring.p, ring.next(), ring.prev());
    let mut steps = vec![Step::Copy {
        src: input(0, 0),
        dst: output(ring.r, 0),
    }];
    if p == 1 {
        return steps;
    }
    steps.push(Step::Send {
        to: next,
        src: input(0, 0),
    });
    for k in 1..p - 1 {
        steps.push(Step::RecvCopySend {
            from: prev,
            to: next,
            dst: output(ring.sub(k), 0),
        });
    }
    steps.push(Step::Recv {
        from: prev,
        dst: output(ring.next(), 0),
    });
    steps
}

/// Block `c` travels `c+1, c+2, ..., c` collecting contributions; rank `r` finishes block `r`.
fn reduce_scatter(ring: Ring) -> Vec<Step> {
    let (p, next, prev) = (ring.p, ring.next(), ring.prev());
    if p == 1 {
        return vec![Step::Copy {
            src: input(0, 0),
            dst: output(0, 0),
        }];
    }
    let mut steps = vec![Step::Send {
        to: next,
        src: input(ring.prev(), 0),
    }];
    for k in 1..p - 1 {
        steps.push(Step::RecvReduceSend {
            from: prev,
            to: next,
            src: input(ring.sub(k + 1), 0),
        });
    }
    steps.push(Step::RecvReduce {
        from: prev,
        src: input(ring.r, 0),
        dst: output(0, 0),
    });
    steps
}

/// Chain `root -> root+1 -> ... -> root-1`.
fn broadcast(ring: Ring, root: u32) -> Vec<Step> {
    let (p, r, next, prev) = (ring.p, ring.r, ring.next(), ring.prev());
    let whole = output(0, 0);
    if r == root {
        let mut steps = vec![Step::Copy {
            src: input(0, 0),
            dst: whole,
        }];
        if p > 1 {
            steps.push(Step::Send {
                to: next,
                src: input(0, 0),
            });
        }
        steps
    } else if next == root {
        vec![Step::Recv {
            from: prev,
            dst: whole,
        }]
    } else {
        vec![Step::RecvCopySend {
            from: prev,
            to: next,
            dst: whole,
        }]
    }
}

/// Chain `root+1 -> root+2 -> ... -> root`.
fn reduce(ring: Ring, root: u32) -> Vec<Step> {
    let (p, r, next, prev) = (ring.p, ring.r, ring.next(), ring.prev());
    let mine = input(0, 0);
    if p == 1 {
        vec![Step::Copy {
            src: mine,
            dst: output(0, 0),
        }]
    } else if r == root {
        vec![Step::RecvReduce {
            from: prev,
            src: mine,
            dst: output(0, 0),
        }]
    } else if prev == root {
        vec![Step::Send {
            to: next,
            src: mine,
        }]
    } else {
        vec![Step::RecvReduceSend {
            from: prev,
            to: next,
            src: mine,
        }]
    }
}

/// Pairwise exchange: at step `k` send to `r+k` and receive from `r-k`.
fn all_to_all(ring: Ring) -> Vec<Step> {
    let mut steps = vec![Step::Copy {
        src: input(ring.r, 0),
        dst: output(ring.r, 0),
    }];
    for k in 1..ring.p {
        let (to, from) = (ring.add(k), ring.sub(k));
        steps.push(Step::SendRecv {
            to,
            src: input(to, 0),
            from,
            dst: output(from, 0),
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_arithmetic() {
        let ring = Ring { p: 5, r: 1 };
        assert_eq!((ring.next(), ring.prev()), (2, 0));
        assert_eq!(ring.sub(5), 1);
        assert_eq!(ring.add(1 + 5 - 1), 1);
        let one = Ring { p: 1, r: 0 };
        assert_eq!((one.next(), one.prev()), (0, 0));
    }

    #[test]
    fn all_reduce_step_vocabulary() {
        let steps = all_reduce(Ring { p: 4, r: 0 });
        let kinds: Vec<&str> = steps
            .iter()
            .map(|s| match s {
                Step::Send { .. } => "send",
                Step::RecvReduceSend { .. } => "rrs",
                Step::RecvReduceCopySend { .. } => "rrcs",
                Step::RecvCopySend { .. } => "rcs",
                Step::Recv { .. } => "recv",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["send", "rrs", "rrs", "rrcs", "rcs", "rcs", "recv"]);
    }
}
