//! The end of a channel's simulation: everyone finished, nothing left on a connection, and
//! every output chunk right.

use super::Sim;
use crate::verify::content::expected;
use crate::verify::error::{Blocked, VerifyError, Wait};
use crate::{Buf, Region};

impl Sim<'_, '_> {
    /// Every rank finished and every message was received.
    pub(super) fn check_finished(&self) -> Result<(), VerifyError> {
        let mut blocked = Vec::new();
        for rank in 0..self.world.nranks {
            if let Some(at) = self.current(rank) {
                let state = &self.ranks[rank as usize];
                if let Some((owner, phase)) = self.posted_wait(&at) {
                    blocked.push(Blocked {
                        at,
                        waiting: Wait::Posted { owner, phase },
                    });
                    continue;
                }
                let waiting = match at.what.recv_peer() {
                    Some(from) if !state.received && !self.has_message(from, rank) => {
                        Wait::Message { from }
                    }
                    _ => Wait::Room {
                        to: at.what.send_peer().unwrap_or(rank),
                    },
                };
                blocked.push(Blocked { at, waiting });
            }
        }
        if !blocked.is_empty() {
            return Err(VerifyError::Deadlock {
                channel: self.channel,
                blocked,
            });
        }
        let mut left = self.fifos.iter().filter_map(|(k, q)| Some((k, q.front()?)));
        if let Some((&(from, to), message)) = left.next() {
            return Err(VerifyError::UnmatchedSend {
                channel: self.channel,
                from,
                to,
                round: message.round,
                region: message.region,
            });
        }
        Ok(())
    }

    /// No one-sided read relies on a window region its owner writes again after the phase
    /// the read waited for.
    pub(super) fn check_window_races(&self) -> Result<(), VerifyError> {
        for (at, owner, region, phase) in &self.window_reads {
            let written = self
                .window_writes
                .get(&(*owner, at.round, *region))
                .copied()
                .unwrap_or(0);
            if written > *phase {
                return Err(VerifyError::WindowRace {
                    at: at.clone(),
                    owner: *owner,
                    region: *region,
                    phase: *phase,
                    written,
                });
            }
        }
        Ok(())
    }

    /// Every output chunk of every round holds what the collective defines.
    pub(super) fn check_results(&self) -> Result<(), VerifyError> {
        let world = self.world;
        for (rank, plan) in world.plans.iter().enumerate() {
            let Some(plan) = plan else { continue };
            let rank = rank as u32;
            for round in 0..world.options.rounds {
                for block in 0..plan.output.blocks {
                    for split in 0..plan.splits {
                        let region = Region::new(Buf::Output, block, split);
                        let key = self.canonical(rank, region);
                        let want = expected(plan.collective, world.nranks, rank, block, split);
                        let got = self.get(rank, round, key);
                        if got.as_deref() != Some(&want[..]) {
                            return Err(VerifyError::WrongResult {
                                rank,
                                channel: self.channel,
                                round,
                                region,
                                expected: want,
                                got: got.map(|c| c.to_vec()),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
