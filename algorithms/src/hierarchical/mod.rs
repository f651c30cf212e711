//! Hierarchical, node-aware plans ([`crate::Algorithm::Hierarchical`], name `hier`).
//!
//! # Nomenclature
//! - `N` nodes, `L` ranks per node when every node has as many (a **uniform** layout);
//!   `p = N·L`. Rank `(a, l)` is local rank `l` of node `a` ([`Nodes`]).
//! - **intra-node** ring: the `L` ranks of one node in local-rank order; **inter-node** ring:
//!   the `N` ranks of local rank `l`, one per node, in node order. Every rank is in one of
//!   each, so in a uniform layout the `L` inter-node rings run side by side and every node
//!   sends on `L` connections at once.
//! - `n`: the size of one block ([`crate::cost`]'s `bytes_per_rank`).
//!
//! # Plans
//! - **All-reduce** (uniform): `p` splits, split `s·N + j` being piece `j` of shard `s`.
//!   (1) intra-node ring reduce-scatter of the `L` shards (one ring pass per piece `j`, so
//!   every connection carries one chunk per ring step, as in the flat ring): local rank `l`
//!   holds its node's sum of shard `l`; (2) inter-node ring all-reduce of shard `l`'s `N`
//!   pieces among the ranks of local rank `l`; (3) intra-node ring all-gather of the shards.
//!   Per rank: `2(L−1)N + 2(N−1)` messages of `n/p`; `2(L−1)/L·n` bytes on intra-node links
//!   and `2(N−1)/p·n` on the network, so a node's network link carries `2(N−1)/N·n` against
//!   the flat (node-ordered) ring's `2(p−1)/p·n` on its one crossing edge: `1.5×` less on
//!   2 nodes × 2 ranks, `(p−1)/(N−1)·N/p`× in general.
//! - **All-gather** (uniform): inter-node ring all-gather among the ranks of local rank `l`
//!   (each gets the `N` blocks of its local index), then one intra-node ring all-gather per
//!   node's blocks. A node's network link carries `L(N−1)·n` against `(p−1)·n`.
//! - **Reduce-scatter** (uniform): the mirror. One intra-node ring reduce-scatter per
//!   destination node `b`, leaving local rank `s` its node's partial sum of the block of rank
//!   `(b, s)` in scratch block `b` (`N` scratch blocks), then an inter-node ring
//!   reduce-scatter of the partials among the ranks of local rank `l`.
//! - **All-to-all** (uniform), aggregated per node: an intra-node pairwise exchange hands
//!   local rank `s` every block of its node bound for local rank `s` of any node (`N`
//!   blocks per pair; blocks for the own node land in the output, the others in scratch,
//!   `L·N` blocks), then an inter-node pairwise exchange among the ranks of local rank `l`
//!   carries `L` blocks per pair of nodes. A rank talks to `L−1 + N−1` peers instead of
//!   `p−1`, every block crosses the network once; a message is still one block (a region
//!   names one block), so the α count is `(L−1)N + (N−1)L`, and the engine may coalesce a
//!   pair's back-to-back blocks.
//! - **Broadcast and reduce** (any layout, any root): through one representative per node,
//!   a binomial tree between the nodes' representatives (the root on its node, the leader
//!   elsewhere), a chain within each node (`rooted.rs`).
//!
//! **Layouts that are not uniform** (nodes with different numbers of ranks): all-reduce,
//! all-gather, reduce-scatter and all-to-all fall back to the ring over the node-contiguous
//! order ([`crate::build_with_nodes`]), which crosses the network once per node and is correct
//! for any layout; the local-index rings above need the same `L` on every node. One node
//! (`N = 1`, also [`crate::build`] without a layout) gives the flat rings; one rank per node
//! (`L = 1`) gives the flat rings over the nodes. Every phase of one rank is on one channel's
//! step list; every channel runs the same list.
//!
//! # Verification
//! `algorithms/tests/hierarchical.rs` verifies every collective with the symbolic verifier
//! for 1..=32 ranks over contiguous, round-robin, random, uneven, one-per-node and one-node
//! layouts, every root of the rooted ones, 1 and 2 channels, and 64 ranks as 8×8 and 128 as
//! 16×8.

mod rooted;
mod uniform;

use crate::built::Built;
use crate::{order, Algorithm, Collective, Nodes, Plan, Shape};

/// Rank `rank`'s hierarchical plan for `collective` over `nodes` (arguments checked by the
/// caller: `collective` is one [`Algorithm::Hierarchical`] supports, `rank` in range).
pub(crate) fn plan(collective: Collective, nodes: &Nodes, rank: u32, nchannels: u32) -> Plan {
    let nranks = nodes.nranks();
    let built = match collective {
        Collective::Broadcast { root } => one_split(rooted::broadcast(nodes, root, rank)),
        Collective::Reduce { root } => one_split(rooted::reduce(nodes, root, rank)),
        _ if !nodes.is_uniform() => {
            return order::ordered(Algorithm::Ring, collective, nodes, rank, nchannels);
        }
        Collective::AllReduce => uniform::all_reduce(uniform::Grid::new(nodes, rank)),
        Collective::AllGather => uniform::all_gather(uniform::Grid::new(nodes, rank)),
        Collective::ReduceScatter => uniform::reduce_scatter(uniform::Grid::new(nodes, rank)),
        Collective::AllToAll => uniform::all_to_all(uniform::Grid::new(nodes, rank)),
        other => unreachable!("hier does not implement {}", other.name()),
    };
    Plan {
        collective,
        nranks,
        rank,
        input: Shape {
            blocks: collective.input_blocks(nranks, rank),
        },
        output: Shape {
            blocks: collective.output_blocks(nranks, rank),
        },
        scratch: Shape {
            blocks: built.scratch,
        },
        window: Shape { blocks: 0 },
        splits: built.splits,
        channels: vec![built.steps; nchannels as usize],
    }
}

/// One split; one scratch block where a step names scratch (a reduce's accumulator).
fn one_split(steps: Vec<crate::Step>) -> Built {
    let scratch = u32::from(
        steps
            .iter()
            .any(|s| s.regions().any(|r| r.buf == crate::Buf::Scratch)),
    );
    Built {
        splits: 1,
        scratch,
        steps,
    }
}
