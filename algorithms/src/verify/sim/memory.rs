//! A rank's memory: chunks by round and canonical region, in-place aliasing.

use super::Sim;
use crate::verify::content::{union, Content, Contribution};
use crate::verify::error::{StepAt, VerifyError};
use crate::{Buf, Plan, Region};

/// Chunks of all buffers and rounds of `plan`.
pub(super) fn slots(plan: &Plan, rounds: u32) -> usize {
    let blocks = blocks(plan);
    rounds as usize * blocks as usize * plan.splits as usize
}

/// Blocks of all buffers of `plan`.
fn blocks(plan: &Plan) -> u32 {
    plan.input.blocks + plan.output.blocks + plan.scratch.blocks + plan.window.blocks
}

impl Sim<'_, '_> {
    /// Index into `rank`'s memory of a canonical, in-range `region` of round `round`.
    pub(super) fn slot(&self, rank: u32, round: u32, region: Region) -> usize {
        let plan = self.plan(rank);
        let blocks = blocks(plan);
        let offset = match region.buf {
            Buf::Input => 0,
            Buf::Output => plan.input.blocks,
            Buf::Scratch => plan.input.blocks + plan.output.blocks,
            Buf::Window => plan.input.blocks + plan.output.blocks + plan.scratch.blocks,
        };
        let block = round as usize * blocks as usize + (offset + region.block) as usize;
        block * plan.splits as usize + region.split as usize
    }

    /// What canonical `key` of round `round` of `rank` holds (`None`: uninitialised).
    pub(super) fn get(&self, rank: u32, round: u32, key: Region) -> Option<Content> {
        match &self.ranks[rank as usize].memory[self.slot(rank, round, key)] {
            Some(content) => Some(content.clone()),
            None if key.buf == Buf::Input => Some(
                [Contribution {
                    rank,
                    block: key.block,
                    split: key.split,
                }]
                .into(),
            ),
            None => None,
        }
    }

    pub(super) fn plan(&self, rank: u32) -> &Plan {
        // Only ranks with a plan have steps, and only steps reach memory.
        self.world.plans[rank as usize].expect("a rank with steps has a plan")
    }

    /// With registered input, whether `region` is a window block of `rank` that stands for
    /// its input block of the same index.
    pub(super) fn staged(&self, rank: u32, region: Region) -> bool {
        self.world.options.registered_input
            && region.buf == Buf::Window
            && region.block < self.plan(rank).input.blocks
    }

    /// The memory `region` names on `rank` (output chunks of an in-place op are input chunks).
    pub(super) fn canonical(&self, rank: u32, region: Region) -> Region {
        if self.staged(rank, region) {
            return Region::new(Buf::Input, region.block, region.split);
        }
        if !self.world.options.in_place || region.buf != Buf::Output {
            return region;
        }
        let collective = self.plan(rank).collective;
        if collective == crate::Collective::AllToAll {
            // In place, all-to-all's send and receive buffers are one: every block aliases.
            return Region::new(Buf::Input, region.block, region.split);
        }
        match collective.in_place_blocks(rank) {
            Some((input, output)) if output == region.block => {
                Region::new(Buf::Input, input, region.split)
            }
            _ => region,
        }
    }

    pub(super) fn read(&self, at: &StepAt, region: Region) -> Result<Content, VerifyError> {
        let key = self.canonical(at.rank, region);
        self.get(at.rank, at.round, key)
            .ok_or_else(|| VerifyError::ReadUninitialised {
                at: at.clone(),
                region,
            })
    }

    pub(super) fn write(
        &mut self,
        at: &StepAt,
        region: Region,
        content: Content,
    ) -> Result<(), VerifyError> {
        if region.buf == Buf::Input {
            return Err(VerifyError::WriteToInput {
                at: at.clone(),
                region,
            });
        }
        if self.staged(at.rank, region) {
            return Err(VerifyError::Malformed {
                rank: Some(at.rank),
                reason: format!(
                    "{at} writes {region}, which a registered input makes the input itself \
                     (a load/store plan may only stage input block b in window block b)"
                ),
            });
        }
        let key = self.canonical(at.rank, region);
        // Peers may read the window, and with registered input the input too.
        if key.buf == Buf::Window || key.buf == Buf::Input {
            // Visible from the next post of this round on.
            let state = &self.ranks[at.rank as usize];
            let posted = if state.post_round == Some(at.round) {
                state.posts
            } else {
                0
            };
            let phase = self
                .window_writes
                .entry((at.rank, at.round, key))
                .or_insert(0);
            *phase = (*phase).max(posted + 1);
        }
        let slot = self.slot(at.rank, at.round, key);
        self.ranks[at.rank as usize].memory[slot] = Some(content);
        Ok(())
    }

    pub(super) fn reduce(
        &self,
        at: &StepAt,
        src: Region,
        incoming: &[Contribution],
    ) -> Result<Content, VerifyError> {
        union(&self.read(at, src)?, incoming).map_err(|contribution| {
            VerifyError::DoubleContribution {
                at: at.clone(),
                contribution,
            }
        })
    }
}

impl Sim<'_, '_> {
    /// Region `region` of `owner`'s window in round `at.round`, as a one-sided read by `at`
    /// that waited for phase `phase` (recorded for the race check at the end).
    pub(super) fn read_window(
        &mut self,
        at: &StepAt,
        owner: u32,
        region: Region,
        phase: u32,
    ) -> Result<Content, VerifyError> {
        let blocks = self.plan(owner).window.blocks;
        if region.block >= blocks {
            return Err(VerifyError::Malformed {
                rank: Some(at.rank),
                reason: format!(
                    "{at} reads {region} of rank {owner}, whose window has {blocks} blocks"
                ),
            });
        }
        let key = self.canonical(owner, region);
        self.window_reads.push((at.clone(), owner, key, phase));
        self.get(owner, at.round, key)
            .ok_or_else(|| VerifyError::ReadUninitialised {
                at: at.clone(),
                region,
            })
    }
}
