//! Node-contiguous ordering: plans built over `(node, rank)` order instead of rank order.
//!
//! A ring over rank order crosses between nodes at every edge whose two ranks sit on
//! different nodes: with ranks interleaved round-robin over nodes (`[0, 1, 0, 1]`) that is
//! every edge. Over the node-contiguous order ([`Nodes::order`]) it crosses exactly once per
//! node (`nnodes` times per round, none for one node), whatever the placement; trees over
//! that order keep their subtrees on as few nodes as the order allows.
//!
//! # Relabelling
//! [`build_with_nodes`] builds the flat plan of **virtual rank** `v = pos(rank)` (its position
//! in the order) for the collective with virtual roots (`root ↦ pos(root)`), then maps it back:
//! - every peer `v` becomes the real rank `order[v]`;
//! - every block index of a buffer whose blocks are per rank (all-gather's, all-to-all's and
//!   gather's output; reduce-scatter's, all-to-all's and scatter's input) becomes
//!   `order[block]`: the virtual plan computes "output block `w` of virtual rank `v` holds the
//!   input of virtual rank `w`", and virtual rank `w` *is* real rank `order[w]`, so real
//!   output block `order[w]` of real rank `order[v]` holds real rank `order[w]`'s input, which
//!   is the collective's reference semantics;
//! - scratch blocks, splits and step order stay: they are the virtual plan's own business.
//!
//! The verifier checks the relabelled plans against the ordinary reference semantics
//! (`algorithms/tests/ordering.rs`, every layout family and collective). A reduction's fold
//! order follows virtual ranks, so it differs from the flat plan's in the last bits.

use crate::algorithm::{check_args, flat};
use crate::{hierarchical, Algorithm, Buf, Collective, Nodes, Plan, PlanError, Region, Step};

/// Builds rank `rank`'s plan like [`crate::build`], aware of where the ranks sit.
///
/// With `nodes`, [`Algorithm::Hierarchical`] builds its node-aware plans and every other
/// algorithm but the load/store ones (one host by definition) and point-to-point is built
/// over the node-contiguous order (see the module doc); with `None`, or a layout that is
/// already node-contiguous, the plans are exactly [`crate::build`]'s. Every rank must pass
/// the same layout.
///
/// # Errors
/// [`crate::build`]'s, and [`PlanError::NodesMismatch`] when the layout has another number
/// of ranks.
pub fn build_with_nodes(
    algorithm: Algorithm,
    collective: Collective,
    nranks: u32,
    rank: u32,
    nchannels: u32,
    nodes: Option<&Nodes>,
) -> Result<Plan, PlanError> {
    check_args(algorithm, collective, nranks, rank, nchannels)?;
    if let Some(nodes) = nodes {
        if nodes.nranks() != nranks {
            return Err(PlanError::NodesMismatch {
                layout: nodes.nranks(),
                nranks,
            });
        }
    }
    if algorithm == Algorithm::Hierarchical {
        let single;
        let nodes = match nodes {
            Some(nodes) => nodes,
            None => {
                single = Nodes::single(nranks);
                &single
            }
        };
        return Ok(hierarchical::plan(collective, nodes, rank, nchannels));
    }
    match nodes {
        Some(nodes)
            if !nodes.is_contiguous()
                && !algorithm.is_load_store()
                && !matches!(
                    collective,
                    Collective::Send { .. } | Collective::Recv { .. }
                ) =>
        {
            Ok(ordered(algorithm, collective, nodes, rank, nchannels))
        }
        _ => Ok(flat(algorithm, collective, nranks, rank, nchannels)),
    }
}

/// The plan of `rank` built over the node-contiguous order (arguments checked, `algorithm`
/// supports `collective`).
pub(crate) fn ordered(
    algorithm: Algorithm,
    collective: Collective,
    nodes: &Nodes,
    rank: u32,
    nchannels: u32,
) -> Plan {
    let order = nodes.order();
    let mut pos = vec![0; order.len()];
    for (v, &r) in order.iter().enumerate() {
        pos[r as usize] = v as u32;
    }
    let virtual_collective = map_root(collective, |r| pos[r as usize]);
    let plan = flat(
        algorithm,
        virtual_collective,
        nodes.nranks(),
        pos[rank as usize],
        nchannels,
    );
    relabel(plan, collective, rank, &order)
}

/// `collective` with its root (or peer) mapped by `f`.
fn map_root(collective: Collective, f: impl Fn(u32) -> u32) -> Collective {
    match collective {
        Collective::Broadcast { root } => Collective::Broadcast { root: f(root) },
        Collective::Reduce { root } => Collective::Reduce { root: f(root) },
        Collective::Gather { root } => Collective::Gather { root: f(root) },
        Collective::Scatter { root } => Collective::Scatter { root: f(root) },
        Collective::Send { peer } => Collective::Send { peer: f(peer) },
        Collective::Recv { peer } => Collective::Recv { peer: f(peer) },
        other => other,
    }
}

/// Maps a virtual plan back to real ranks (see the module doc): `order[v]` is the real rank
/// of virtual rank `v`; the result is real rank `rank`'s plan for `collective`.
pub(crate) fn relabel(mut plan: Plan, collective: Collective, rank: u32, order: &[u32]) -> Plan {
    let real = |v: u32| order[v as usize];
    let (input_per_rank, output_per_rank) = match collective {
        Collective::ReduceScatter | Collective::Scatter { .. } => (true, false),
        Collective::AllGather | Collective::Gather { .. } => (false, true),
        Collective::AllToAll => (true, true),
        _ => (false, false),
    };
    let region = |r: Region| match r.buf {
        Buf::Input if input_per_rank => Region::new(r.buf, real(r.block), r.split),
        Buf::Output if output_per_rank => Region::new(r.buf, real(r.block), r.split),
        _ => r,
    };
    for steps in &mut plan.channels {
        for step in steps.iter_mut() {
            *step = relabel_step(*step, &real, &region);
        }
    }
    plan.collective = collective;
    plan.rank = rank;
    plan
}

fn relabel_step(
    step: Step,
    real: &impl Fn(u32) -> u32,
    region: &impl Fn(Region) -> Region,
) -> Step {
    match step {
        Step::Send { to, src } => Step::Send {
            to: real(to),
            src: region(src),
        },
        Step::Recv { from, dst } => Step::Recv {
            from: real(from),
            dst: region(dst),
        },
        Step::RecvReduce { from, src, dst } => Step::RecvReduce {
            from: real(from),
            src: region(src),
            dst: region(dst),
        },
        Step::RecvReduceSend { from, to, src } => Step::RecvReduceSend {
            from: real(from),
            to: real(to),
            src: region(src),
        },
        Step::RecvReduceCopySend { from, to, src, dst } => Step::RecvReduceCopySend {
            from: real(from),
            to: real(to),
            src: region(src),
            dst: region(dst),
        },
        Step::RecvCopySend { from, to, dst } => Step::RecvCopySend {
            from: real(from),
            to: real(to),
            dst: region(dst),
        },
        Step::Copy { src, dst } => Step::Copy {
            src: region(src),
            dst: region(dst),
        },
        Step::Reduce { src, dst } => Step::Reduce {
            src: region(src),
            dst: region(dst),
        },
        Step::SendRecv { to, src, from, dst } => Step::SendRecv {
            to: real(to),
            src: region(src),
            from: real(from),
            dst: region(dst),
        },
        Step::Post { phase } => Step::Post { phase },
        Step::ReduceFromPeers {
            peers,
            own,
            phase,
            dst,
        } => Step::ReduceFromPeers {
            peers: region(peers),
            own: region(own),
            phase,
            dst: region(dst),
        },
        Step::CopyFromPeer {
            peer,
            src,
            phase,
            dst,
        } => Step::CopyFromPeer {
            peer: real(peer),
            src: region(src),
            phase,
            dst: region(dst),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_ring_follows_the_nodes() {
        let nodes = Nodes::uniform(2, 2, true); // [0, 1, 0, 1]
        let plan = build_with_nodes(
            Algorithm::Ring,
            Collective::AllGather,
            4,
            0,
            1,
            Some(&nodes),
        );
        let plan = plan.unwrap();
        // Order [0, 2, 1, 3]: rank 0 sends to 2 (same node) and receives from 3.
        assert_eq!(plan.channels[0][1].send_peer(), Some(2));
        assert_eq!(plan.channels[0].last().unwrap().recv_peer(), Some(3));
        let err = build_with_nodes(
            Algorithm::Ring,
            Collective::AllReduce,
            3,
            0,
            1,
            Some(&nodes),
        );
        assert_eq!(
            err,
            Err(PlanError::NodesMismatch {
                layout: 4,
                nranks: 3
            })
        );
    }
}
