//! Static checks: do the plans form a set the simulation can run?

use super::error::{StepAt, VerifyError};
use super::{VerifyOptions, World};
use crate::load_store::MAX_PHASES;
use crate::{Buf, Collective, Plan, Step};

fn malformed(rank: Option<u32>, reason: String) -> VerifyError {
    VerifyError::Malformed { rank, reason }
}

/// The world of a collective: `plans[r]` is rank `r`'s plan.
pub(super) fn collective_world<'a>(
    plans: &'a [Plan],
    options: &VerifyOptions,
) -> Result<World<'a>, VerifyError> {
    let first = plans
        .first()
        .ok_or_else(|| malformed(None, "no plans".into()))?;
    let nranks = u32::try_from(plans.len())
        .map_err(|_| malformed(None, format!("{} plans is too many", plans.len())))?;
    if matches!(
        first.collective,
        Collective::Send { .. } | Collective::Recv { .. }
    ) {
        return Err(malformed(
            None,
            "send/recv plans are verified in pairs (verify_p2p)".into(),
        ));
    }
    for plan in plans {
        if plan.collective != first.collective {
            return Err(malformed(
                Some(plan.rank),
                format!(
                    "collective {:?} differs from rank 0's {:?}",
                    plan.collective, first.collective
                ),
            ));
        }
    }
    let world = World::new(nranks, plans.iter().map(Some).collect(), first, options)?;
    for (r, plan) in plans.iter().enumerate() {
        check_plan(&world, r as u32, plan)?;
    }
    Ok(world)
}

/// The world of one send/recv pair; the other ranks do nothing.
pub(super) fn p2p_world<'a>(
    sender: &'a Plan,
    receiver: &'a Plan,
    options: &VerifyOptions,
) -> Result<World<'a>, VerifyError> {
    let nranks = sender.nranks;
    if sender.collective
        != (Collective::Send {
            peer: receiver.rank,
        })
    {
        return Err(malformed(
            Some(sender.rank),
            format!(
                "expected a send to rank {}, got {:?}",
                receiver.rank, sender.collective
            ),
        ));
    }
    if receiver.collective != (Collective::Recv { peer: sender.rank }) {
        return Err(malformed(
            Some(receiver.rank),
            format!(
                "expected a receive from rank {}, got {:?}",
                sender.rank, receiver.collective
            ),
        ));
    }
    if receiver.nranks != nranks {
        return Err(malformed(
            Some(receiver.rank),
            format!(
                "nranks {} differs from the sender's {nranks}",
                receiver.nranks
            ),
        ));
    }
    for plan in [sender, receiver] {
        if plan.rank >= nranks {
            return Err(malformed(
                Some(plan.rank),
                format!("rank out of range for {nranks} ranks"),
            ));
        }
    }
    if sender.rank == receiver.rank {
        return Err(malformed(
            Some(sender.rank),
            "send and receive on the same rank".into(),
        ));
    }
    let mut plans = vec![None; nranks as usize];
    plans[sender.rank as usize] = Some(sender);
    plans[receiver.rank as usize] = Some(receiver);
    let world = World::new(nranks, plans, sender, options)?;
    for plan in [sender, receiver] {
        check_plan(&world, plan.rank, plan)?;
    }
    Ok(world)
}

/// Rank `rank`'s plan agrees with the world and every step is in range.
fn check_plan(world: &World<'_>, rank: u32, plan: &Plan) -> Result<(), VerifyError> {
    let bad = |reason: String| Err(malformed(Some(rank), reason));
    let (nranks, collective) = (world.nranks, plan.collective);
    if plan.rank != rank || plan.nranks != nranks {
        return bad(format!(
            "says rank {} of {}, expected rank {rank} of {nranks}",
            plan.rank, plan.nranks
        ));
    }
    if let Collective::Broadcast { root: peer }
    | Collective::Reduce { root: peer }
    | Collective::Gather { root: peer }
    | Collective::Scatter { root: peer }
    | Collective::Send { peer }
    | Collective::Recv { peer } = collective
    {
        if peer >= nranks {
            return bad(format!("{collective:?} is out of range"));
        }
    }
    if plan.splits != world.splits || plan.channels.len() != world.nchannels as usize {
        return bad(format!(
            "{} splits and {} channels, rank {} has {} and {}",
            plan.splits,
            plan.channels.len(),
            world.first_rank,
            world.splits,
            world.nchannels
        ));
    }
    let (input, output) = (
        collective.input_blocks(nranks, rank),
        collective.output_blocks(nranks, rank),
    );
    if plan.input.blocks != input || plan.output.blocks != output {
        return bad(format!(
            "shapes {}/{} (input/output blocks), {} defines {input}/{output}",
            plan.input.blocks,
            plan.output.blocks,
            collective.name()
        ));
    }
    for (channel, steps) in plan.channels.iter().enumerate() {
        // Posts so far on this channel (`None`: none yet).
        let mut posts: Option<u32> = None;
        for (index, step) in steps.iter().enumerate() {
            let at = StepAt {
                rank,
                channel: channel as u32,
                round: 0,
                step: index,
                what: *step,
            };
            let read_peer = match *step {
                Step::CopyFromPeer { peer, .. } => Some(peer),
                _ => None,
            };
            for peer in step
                .send_peer()
                .into_iter()
                .chain(step.recv_peer())
                .chain(read_peer)
            {
                if peer >= nranks {
                    return bad(format!("{at} names rank {peer}, out of range"));
                }
                if peer == rank {
                    return Err(VerifyError::SelfMessage { at });
                }
            }
            // A region read from another rank's window is checked against that rank's window
            // when the simulation reads it.
            let remote = match *step {
                Step::ReduceFromPeers { peers, .. } => Some(peers),
                Step::CopyFromPeer { src, .. } => Some(src),
                _ => None,
            };
            for region in step.regions() {
                let blocks = plan.shape(region.buf).blocks;
                let local_oob = Some(region) != remote && region.block >= blocks;
                if local_oob || region.split >= plan.splits {
                    return bad(format!(
                        "{at} names {region}, out of range ({blocks} blocks, {} splits)",
                        plan.splits
                    ));
                }
            }
            let mut regions = step.regions();
            if let Some(first) = regions.next() {
                if !matches!(step, Step::SendRecv { .. })
                    && regions.any(|other| other.split != first.split)
                {
                    return bad(format!("{at} combines chunks of different splits"));
                }
            }
            check_one_sided(&at, &mut posts).map_err(|reason| malformed(Some(rank), reason))?;
        }
        if posts.is_some_and(|n| n > MAX_PHASES) {
            return bad(format!(
                "channel {channel} posts {} phases, at most {MAX_PHASES} fit",
                posts.unwrap_or(0)
            ));
        }
    }
    Ok(())
}

/// Posts are numbered `1, 2, …` in order, one-sided reads read windows, name another rank
/// and a phase in `1..=MAX_PHASES`.
fn check_one_sided(at: &StepAt, posts: &mut Option<u32>) -> Result<(), String> {
    let window_read = |region: crate::Region, phase: u32| {
        if region.buf != Buf::Window {
            return Err(format!(
                "{at} reads {region} of another rank, not its window"
            ));
        }
        if !(1..=MAX_PHASES).contains(&phase) {
            return Err(format!(
                "{at} waits for phase {phase}, not in 1..={MAX_PHASES}"
            ));
        }
        Ok(())
    };
    match at.what {
        Step::Post { phase } => {
            let next = posts.unwrap_or(0) + 1;
            if phase != next {
                return Err(format!(
                    "{at} posts phase {phase}, the next phase is {next}"
                ));
            }
            *posts = Some(next);
            Ok(())
        }
        Step::ReduceFromPeers { peers, phase, .. } => window_read(peers, phase),
        Step::CopyFromPeer { src, phase, .. } => window_read(src, phase),
        _ => Ok(()),
    }
}
