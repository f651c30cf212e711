//! The simulation of one channel: every rank's steps against every other's, over
//! bounded connections, with chunks as sets of contributions.

mod end;
mod memory;

use std::collections::{BTreeMap, VecDeque};

use super::content::{union, Content};
use super::error::{StepAt, VerifyError};
use super::World;
use crate::{Region, Step};
use memory::slots;

/// A chunk on a connection.
struct Message {
    round: u32,
    region: Region,
    content: Content,
}

/// One rank's progress and memory.
#[derive(Default)]
struct RankState {
    /// Index into the step list repeated `rounds` times.
    pc: usize,
    /// The send half of the current `SendRecv` is done.
    sent: bool,
    /// The receive half of the current `SendRecv` is done.
    received: bool,
    /// Chunks written so far, by [`Sim::slot`] of (round, canonical region).
    memory: Vec<Option<Content>>,
    /// The round of the last post (`None`: none yet).
    post_round: Option<u32>,
    /// The phase of the last post.
    posts: u32,
}

/// What one attempt at a step achieved.
enum Progress {
    Blocked,
    Partial,
    Done,
}

/// Counts gathered while simulating a channel.
#[derive(Default)]
pub(super) struct ChannelStats {
    pub(super) messages: u64,
}

struct Sim<'w, 'a> {
    world: &'w World<'a>,
    channel: u32,
    ranks: Vec<RankState>,
    /// Per (from, to): the messages on the connection, oldest first.
    fifos: BTreeMap<(u32, u32), VecDeque<Message>>,
    queue: VecDeque<u32>,
    queued: Vec<bool>,
    stats: ChannelStats,
    /// Per (owner, round, window region): the latest phase a write of it is published in.
    window_writes: BTreeMap<(u32, u32, Region), u32>,
    /// Every one-sided read: (step, owner, window region, phase waited for).
    window_reads: Vec<(StepAt, u32, Region, u32)>,
}

/// Runs channel `channel` of every rank to the end and checks the results.
pub(super) fn run_channel(world: &World<'_>, channel: u32) -> Result<ChannelStats, VerifyError> {
    let n = world.nranks as usize;
    let mut sim = Sim {
        world,
        channel,
        ranks: world
            .plans
            .iter()
            .map(|plan| RankState {
                memory: vec![None; plan.map_or(0, |p| slots(p, world.options.rounds))],
                ..RankState::default()
            })
            .collect(),
        fifos: BTreeMap::new(),
        queue: (0..world.nranks).collect(),
        queued: vec![true; n],
        stats: ChannelStats::default(),
        window_writes: BTreeMap::new(),
        window_reads: Vec::new(),
    };
    while let Some(rank) = sim.queue.pop_front() {
        sim.queued[rank as usize] = false;
        sim.advance(rank)?;
    }
    sim.check_finished()?;
    sim.check_window_races()?;
    sim.check_results()?;
    Ok(sim.stats)
}

impl Sim<'_, '_> {
    fn steps(&self, rank: u32) -> &[Step] {
        match self.world.plans[rank as usize] {
            Some(plan) => &plan.channels[self.channel as usize],
            None => &[],
        }
    }

    fn total(&self, rank: u32) -> usize {
        self.steps(rank).len() * self.world.options.rounds as usize
    }

    /// The current step of `rank`, if any is left.
    fn current(&self, rank: u32) -> Option<StepAt> {
        let steps = self.steps(rank);
        let pc = self.ranks[rank as usize].pc;
        (pc < self.total(rank)).then(|| StepAt {
            rank,
            channel: self.channel,
            round: (pc / steps.len()) as u32,
            step: pc % steps.len(),
            what: steps[pc % steps.len()],
        })
    }

    fn wake(&mut self, rank: u32) {
        if !std::mem::replace(&mut self.queued[rank as usize], true) {
            self.queue.push_back(rank);
        }
    }

    fn advance(&mut self, rank: u32) -> Result<(), VerifyError> {
        while let Some(at) = self.current(rank) {
            match self.exec(&at)? {
                Progress::Blocked => break,
                Progress::Partial => {}
                Progress::Done => {
                    let state = &mut self.ranks[rank as usize];
                    state.pc += 1;
                    state.sent = false;
                    state.received = false;
                }
            }
        }
        Ok(())
    }

    fn has_room(&self, from: u32, to: u32) -> bool {
        let capacity = self.world.options.fifo_chunks as usize;
        self.fifos.get(&(from, to)).map_or(0, VecDeque::len) < capacity
    }

    fn has_message(&self, from: u32, to: u32) -> bool {
        self.fifos.get(&(from, to)).is_some_and(|q| !q.is_empty())
    }

    fn push(&mut self, at: &StepAt, to: u32, region: Region, content: Content) {
        let message = Message {
            round: at.round,
            region,
            content,
        };
        self.fifos
            .entry((at.rank, to))
            .or_default()
            .push_back(message);
        self.stats.messages += 1;
        self.wake(to);
    }

    /// Takes the message from `from`, which must be there, checking it fits `region`.
    fn take(&mut self, at: &StepAt, from: u32, region: Region) -> Result<Content, VerifyError> {
        let message = self
            .fifos
            .get_mut(&(from, at.rank))
            .and_then(VecDeque::pop_front)
            .expect("callers check has_message first");
        self.wake(from);
        if message.round != at.round || message.region.split != region.split {
            return Err(VerifyError::SplitMismatch {
                at: at.clone(),
                from,
                sent_round: message.round,
                sent: message.region,
                received: region,
            });
        }
        Ok(message.content)
    }

    fn exec(&mut self, at: &StepAt) -> Result<Progress, VerifyError> {
        let me = at.rank;
        let ready = |sim: &Self, from: Option<u32>, to: Option<u32>| {
            from.is_none_or(|f| sim.has_message(f, me)) && to.is_none_or(|t| sim.has_room(me, t))
        };
        let step = at.what;
        if step.is_one_sided() {
            return self.exec_one_sided(at);
        }
        if !matches!(step, Step::SendRecv { .. })
            && !ready(self, step.recv_peer(), step.send_peer())
        {
            return Ok(Progress::Blocked);
        }
        match step {
            Step::Send { to, src } => {
                let content = self.read(at, src)?;
                self.push(at, to, src, content);
            }
            Step::Recv { from, dst } => {
                let content = self.take(at, from, dst)?;
                self.write(at, dst, content)?;
            }
            Step::RecvReduce { from, src, dst } => {
                let incoming = self.take(at, from, dst)?;
                let content = self.reduce(at, src, &incoming)?;
                self.write(at, dst, content)?;
            }
            Step::RecvReduceSend { from, to, src } => {
                let incoming = self.take(at, from, src)?;
                let content = self.reduce(at, src, &incoming)?;
                self.push(at, to, src, content);
            }
            Step::RecvReduceCopySend { from, to, src, dst } => {
                let incoming = self.take(at, from, dst)?;
                let content = self.reduce(at, src, &incoming)?;
                self.write(at, dst, content.clone())?;
                self.push(at, to, dst, content);
            }
            Step::RecvCopySend { from, to, dst } => {
                let content = self.take(at, from, dst)?;
                self.write(at, dst, content.clone())?;
                self.push(at, to, dst, content);
            }
            Step::Copy { src, dst }
                if self.staged(at.rank, dst)
                    && src == Region::new(crate::Buf::Input, dst.block, dst.split) =>
            {
                // Staging a registered input: the engine skips it, the memory is the same.
            }
            Step::Copy { src, dst } => {
                let content = self.read(at, src)?;
                self.write(at, dst, content)?;
            }
            Step::Reduce { src, dst } => {
                self.distinct(at, src, dst)?;
                let acc = self.read(at, dst)?;
                let content = self.reduce(at, src, &acc)?;
                self.write(at, dst, content)?;
            }
            Step::SendRecv { to, src, from, dst } => return self.send_recv(at, to, src, from, dst),
            Step::Post { .. } | Step::ReduceFromPeers { .. } | Step::CopyFromPeer { .. } => {
                unreachable!("one-sided steps are run by exec_one_sided")
            }
        }
        Ok(Progress::Done)
    }

    /// Whether `owner` has posted phase `phase` of round `round` (or anything later).
    fn has_posted(&self, owner: u32, round: u32, phase: u32) -> bool {
        let state = &self.ranks[owner as usize];
        state
            .post_round
            .is_some_and(|r| (r, state.posts) >= (round, phase))
    }

    /// The first rank a one-sided step waits for, with the phase, if it must wait.
    pub(super) fn posted_wait(&self, at: &StepAt) -> Option<(u32, u32)> {
        let me = at.rank;
        match at.what {
            Step::ReduceFromPeers { phase, .. } => (0..self.world.nranks)
                .filter(|&j| j != me)
                .find(|&j| !self.has_posted(j, at.round, phase))
                .map(|j| (j, phase)),
            Step::CopyFromPeer { peer, phase, .. } => {
                (!self.has_posted(peer, at.round, phase)).then_some((peer, phase))
            }
            _ => None,
        }
    }

    /// `Post`, `ReduceFromPeers` and `CopyFromPeer`: atomic, once every owner posted.
    fn exec_one_sided(&mut self, at: &StepAt) -> Result<Progress, VerifyError> {
        if self.posted_wait(at).is_some() {
            return Ok(Progress::Blocked);
        }
        let me = at.rank;
        match at.what {
            Step::Post { phase } => {
                let state = &mut self.ranks[me as usize];
                state.post_round = Some(at.round);
                state.posts = phase;
                for rank in 0..self.world.nranks {
                    if rank != me {
                        self.wake(rank);
                    }
                }
            }
            Step::ReduceFromPeers {
                peers,
                own,
                phase,
                dst,
            } => {
                let mut acc = self.read(at, own)?;
                for j in (0..self.world.nranks).filter(|&j| j != me) {
                    let theirs = self.read_window(at, j, peers, phase)?;
                    acc = union(&acc, &theirs).map_err(|contribution| {
                        VerifyError::DoubleContribution {
                            at: at.clone(),
                            contribution,
                        }
                    })?;
                }
                self.write(at, dst, acc)?;
            }
            Step::CopyFromPeer {
                peer,
                src,
                phase,
                dst,
            } => {
                let content = self.read_window(at, peer, src, phase)?;
                self.write(at, dst, content)?;
            }
            _ => unreachable!("only one-sided steps come here"),
        }
        Ok(Progress::Done)
    }

    /// `src` and `dst` are different memory (else [`VerifyError::Race`]).
    fn distinct(&self, at: &StepAt, src: Region, dst: Region) -> Result<(), VerifyError> {
        if self.canonical(at.rank, src) == self.canonical(at.rank, dst) {
            return Err(VerifyError::Race {
                at: at.clone(),
                region: dst,
            });
        }
        Ok(())
    }

    /// The two halves of a `SendRecv`, each when it can.
    fn send_recv(
        &mut self,
        at: &StepAt,
        to: u32,
        src: Region,
        from: u32,
        dst: Region,
    ) -> Result<Progress, VerifyError> {
        let me = at.rank as usize;
        self.distinct(at, src, dst)?;
        let mut moved = false;
        if !self.ranks[me].sent && self.has_room(at.rank, to) {
            let content = self.read(at, src)?;
            self.push(at, to, src, content);
            self.ranks[me].sent = true;
            moved = true;
        }
        if !self.ranks[me].received && self.has_message(from, at.rank) {
            let content = self.take(at, from, dst)?;
            self.write(at, dst, content)?;
            self.ranks[me].received = true;
            moved = true;
        }
        Ok(if self.ranks[me].sent && self.ranks[me].received {
            Progress::Done
        } else if moved {
            Progress::Partial
        } else {
            Progress::Blocked
        })
    }
}
