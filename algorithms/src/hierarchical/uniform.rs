//! The two-level plans of uniform layouts (`N` nodes of `L` ranks each): all-reduce,
//! all-gather, reduce-scatter and all-to-all. See the parent module's doc for the schemes.

use crate::built::Built;
use crate::{Buf, Nodes, Region, Step};

fn input(block: u32, split: u32) -> Region {
    Region::new(Buf::Input, block, split)
}

fn output(block: u32, split: u32) -> Region {
    Region::new(Buf::Output, block, split)
}

fn scratch(block: u32) -> Region {
    Region::new(Buf::Scratch, block, 0)
}

/// A rank's coordinates in a uniform layout: node `a` of `nn`, local rank `l` of `ll`.
#[derive(Clone, Copy)]
pub(super) struct Grid<'a> {
    nodes: &'a Nodes,
    nn: u32,
    ll: u32,
    a: u32,
    l: u32,
}

impl<'a> Grid<'a> {
    /// `rank`'s coordinates; `nodes` is uniform.
    pub(super) fn new(nodes: &'a Nodes, rank: u32) -> Self {
        Self {
            nodes,
            nn: nodes.nnodes(),
            ll: nodes.local_size(rank),
            a: nodes.node_of(rank),
            l: nodes.local_rank(rank),
        }
    }

    /// The rank of local rank `l mod L` on node `a mod N` (any offsets).
    fn at(&self, a: i64, l: i64) -> u32 {
        let a = a.rem_euclid(i64::from(self.nn)) as u32;
        let l = l.rem_euclid(i64::from(self.ll)) as usize;
        self.nodes.ranks_on(a)[l]
    }

    /// Node index `a + k mod N`.
    fn node(&self, k: i64) -> u32 {
        (i64::from(self.a) + k).rem_euclid(i64::from(self.nn)) as u32
    }

    /// Local index `l + k mod L`.
    fn local(&self, k: i64) -> u32 {
        (i64::from(self.l) + k).rem_euclid(i64::from(self.ll)) as u32
    }

    /// The same local rank on node `a + k`.
    fn across(&self, k: i64) -> u32 {
        self.at(i64::from(self.a) + k, i64::from(self.l))
    }

    /// Local rank `l + k` on this node.
    fn beside(&self, k: i64) -> u32 {
        self.at(i64::from(self.a), i64::from(self.l) + k)
    }
}

/// A ring reduce-scatter over `q` positions, this rank at `me`, of the blocks `block(c)`
/// (read from `src(c)`): block `c` ends reduced at position `c`, in `dst`.
fn ring_reduce_scatter(
    steps: &mut Vec<Step>,
    (q, me, prev, next): (u32, u32, u32, u32),
    src: impl Fn(u32) -> Region,
    dst: Region,
) {
    let pos = |k: u32| (me + q - k % q) % q; // me - k mod q
    steps.push(Step::Send {
        to: next,
        src: src(pos(1)),
    });
    for k in 1..q - 1 {
        steps.push(Step::RecvReduceSend {
            from: prev,
            to: next,
            src: src(pos(k + 1)),
        });
    }
    steps.push(Step::RecvReduce {
        from: prev,
        src: src(me),
        dst,
    });
}

/// A ring all-gather over `q` positions, this rank at `me` holding its block in `at(me)`
/// already: every position ends with every block `at(c)`.
fn ring_all_gather(
    steps: &mut Vec<Step>,
    (q, me, prev, next): (u32, u32, u32, u32),
    own: Region,
    at: impl Fn(u32) -> Region,
) {
    let pos = |k: u32| (me + q - k % q) % q;
    steps.push(Step::Send { to: next, src: own });
    for k in 1..q - 1 {
        steps.push(Step::RecvCopySend {
            from: prev,
            to: next,
            dst: at(pos(k)),
        });
    }
    steps.push(Step::Recv {
        from: prev,
        dst: at((me + 1) % q),
    });
}

/// All-reduce: `N·L` splits, split `s·N + j` being piece `j` of shard `s` (local rank `s`
/// owns shard `s`). Intra-node ring reduce-scatter of the shards, one pass per piece;
/// inter-node ring all-reduce of the own shard's `N` pieces among the ranks of local rank
/// `l`; intra-node ring all-gather of the shards, one pass per piece.
pub(super) fn all_reduce(g: Grid<'_>) -> Built {
    let (nn, ll, l) = (g.nn, g.ll, g.l);
    let split = |s: u32, j: u32| s * nn + j;
    let mut steps = Vec::new();
    let intra = (ll, l, g.beside(-1), g.beside(1));
    if ll > 1 {
        for j in 0..nn {
            ring_reduce_scatter(
                &mut steps,
                intra,
                |s| input(0, split(s, j)),
                output(0, split(l, j)),
            );
        }
    }
    // Where piece `j` of the own shard's partial sum is now.
    let partial = |j: u32| {
        if ll > 1 {
            output(0, split(l, j))
        } else {
            input(0, split(l, j))
        }
    };
    if nn > 1 {
        let (prev, next) = (g.across(-1), g.across(1));
        // Ring position `a`: piece `a + k` is the one the ring's step names.
        let piece = |k: i64| g.node(k);
        steps.push(Step::Send {
            to: next,
            src: partial(piece(0)),
        });
        for k in 1..nn - 1 {
            steps.push(Step::RecvReduceSend {
                from: prev,
                to: next,
                src: partial(piece(-i64::from(k))),
            });
        }
        let done = piece(1);
        steps.push(Step::RecvReduceCopySend {
            from: prev,
            to: next,
            src: partial(done),
            dst: output(0, split(l, done)),
        });
        for k in 1..nn - 1 {
            steps.push(Step::RecvCopySend {
                from: prev,
                to: next,
                dst: output(0, split(l, piece(1 - i64::from(k)))),
            });
        }
        steps.push(Step::Recv {
            from: prev,
            dst: output(0, split(l, piece(2))),
        });
    } else if ll == 1 {
        steps.push(Step::Copy {
            src: input(0, 0),
            dst: output(0, 0),
        });
    }
    if ll > 1 {
        for j in 0..nn {
            ring_all_gather(&mut steps, intra, output(0, split(l, j)), |s| {
                output(0, split(s, j))
            });
        }
    }
    Built {
        splits: nn * ll,
        scratch: 0,
        steps,
    }
}

/// All-gather: inter-node ring all-gather among the ranks of local rank `l` (each rank ends
/// with the blocks of its local index on every node), then one intra-node ring all-gather
/// per node's blocks.
pub(super) fn all_gather(g: Grid<'_>) -> Built {
    let (nn, ll, l) = (g.nn, g.ll, g.l);
    let me = g.at(i64::from(g.a), i64::from(l));
    let mut steps = vec![Step::Copy {
        src: input(0, 0),
        dst: output(me, 0),
    }];
    if nn > 1 {
        let inter = (nn, g.a, g.across(-1), g.across(1));
        ring_all_gather(&mut steps, inter, input(0, 0), |b| {
            output(g.at(i64::from(b), i64::from(l)), 0)
        });
    }
    if ll > 1 {
        let intra = (ll, l, g.beside(-1), g.beside(1));
        for b in 0..nn {
            let block = |s: u32| output(g.at(i64::from(b), i64::from(s)), 0);
            ring_all_gather(&mut steps, intra, block(l), block);
        }
    }
    Built {
        splits: 1,
        scratch: 0,
        steps,
    }
}

/// Reduce-scatter: one intra-node ring reduce-scatter per destination node `b` (local rank
/// `s` ends with its node's partial sum of the block of rank `(b, s)`, in scratch block
/// `b`), then an inter-node ring reduce-scatter of those partials among the ranks of local
/// rank `l`.
pub(super) fn reduce_scatter(g: Grid<'_>) -> Built {
    let (nn, ll, l) = (g.nn, g.ll, g.l);
    let block_of = |b: u32, s: u32| g.at(i64::from(b), i64::from(s));
    let mut steps = Vec::new();
    if nn == 1 && ll == 1 {
        steps.push(Step::Copy {
            src: input(block_of(0, 0), 0),
            dst: output(0, 0),
        });
    }
    if ll > 1 {
        let intra = (ll, l, g.beside(-1), g.beside(1));
        for b in 0..nn {
            let dst = if nn == 1 { output(0, 0) } else { scratch(b) };
            ring_reduce_scatter(&mut steps, intra, |s| input(block_of(b, s), 0), dst);
        }
    }
    let partial = |b: u32| {
        if ll > 1 {
            scratch(b)
        } else {
            input(block_of(b, l), 0)
        }
    };
    if nn > 1 {
        let inter = (nn, g.a, g.across(-1), g.across(1));
        ring_reduce_scatter(&mut steps, inter, partial, output(0, 0));
    }
    Built {
        splits: 1,
        scratch: if ll > 1 && nn > 1 { nn } else { 0 },
        steps,
    }
}

/// All-to-all: intra-node pairwise exchange that hands local rank `s` every block of this
/// node bound for local rank `s` of any node (blocks for this node land in the output, the
/// others in scratch block `l'·N + b`: from local rank `l'`, for node `b`), then inter-node
/// pairwise exchange among the ranks of local rank `l`, `L` blocks per pair of nodes.
pub(super) fn all_to_all(g: Grid<'_>) -> Built {
    let (nn, ll, l, a) = (g.nn, g.ll, g.l, g.a);
    let rank_at = |b: u32, s: u32| g.at(i64::from(b), i64::from(s));
    let me = rank_at(a, l);
    let mut steps = vec![Step::Copy {
        src: input(me, 0),
        dst: output(me, 0),
    }];
    for k in 1..ll {
        let (to_l, from_l) = (g.local(i64::from(k)), g.local(-i64::from(k)));
        for b in 0..nn {
            steps.push(Step::SendRecv {
                to: rank_at(a, to_l),
                src: input(rank_at(b, to_l), 0),
                from: rank_at(a, from_l),
                dst: if b == a {
                    output(rank_at(a, from_l), 0)
                } else {
                    scratch(from_l * nn + b)
                },
            });
        }
    }
    for k in 1..nn {
        let (to_n, from_n) = (g.node(i64::from(k)), g.node(-i64::from(k)));
        for s in 0..ll {
            steps.push(Step::SendRecv {
                to: rank_at(to_n, l),
                src: if s == l {
                    input(rank_at(to_n, l), 0)
                } else {
                    scratch(s * nn + to_n)
                },
                from: rank_at(from_n, l),
                dst: output(rank_at(from_n, s), 0),
            });
        }
    }
    Built {
        splits: 1,
        scratch: if ll > 1 && nn > 1 { ll * nn } else { 0 },
        steps,
    }
}
