//! The engine: runs plans over connections.
//!
//! Call protocol: build [`OpRun`]s for a group of ops, then call [`Engine::poll`] until it
//! returns `true` (non-blocking, one pass over every op and channel), calling
//! [`Engine::idle`] after every pass that moved nothing; `idle` spins, yields, then sleeps on
//! the connections' wait sources, and fails when the deadline passes or the communicator is
//! aborted. [`Engine::run`] does both until completion.
//!
//! Ordering rule for a group: channel `c` of op `i` starts only when every earlier op of the
//! group that uses one of the same connection directions on channel `c` has finished that
//! channel. Ops on disjoint directions (a send to one peer and a receive from another)
//! progress together, so a ring of send/receive pairs never deadlocks; ops that share a
//! direction keep their issue order on the wire, which is what both sides expect.

mod buffers;
mod direct;
mod layout;
mod links;
mod op;
mod registry;
mod step;
mod window;

pub(crate) use buffers::UserBufs;
pub(crate) use links::{Dir, Links};
pub(crate) use op::{OpRun, OpSpec, PreparedPlan};
pub(crate) use registry::Registered;
pub(crate) use window::{signature, Window};

use crate::error::{Error, Result};
use crate::health::Health;
use oxccl_transports::wait::coarse_now;
use oxccl_transports::wait::{wait_any, WaitSource};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often a stalled rank asks its connections whether the peer is still alive.
const ALIVE_CHECK: Duration = Duration::from_millis(100);
/// Longest single sleep, so aborts and deadlines are noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// How long a wait goes on after a peer was found dead before it fails: data the dead rank
/// sent before it died may still be on its way on a data connection.
const DEAD_GRACE: Duration = Duration::from_millis(500);
/// How long a broken data connection waits for the watchdog to name a dead rank.
const ATTRIBUTE_WAIT: Duration = Duration::from_millis(300);
/// How long a rank whose wait passed its deadline waits for every peer's counters.
const STUCK_QUERY: Duration = Duration::from_secs(2);
/// A pause between two polls longer than this is the caller's time, not waiting.
const GAP: Duration = Duration::from_millis(50);
/// Yields after spinning, before sleeping.
const YIELDS: u32 = 64;

/// Connections plus the waiting policy of one communicator.
pub(crate) struct Engine {
    /// The connections.
    pub links: Links,
    /// Deadline for a wait without progress.
    pub timeout: Duration,
    /// Polls before yielding.
    pub spin: u32,
    /// Abort flag, dead peers and op counters, shared with the watchdog thread.
    pub health: Arc<Health>,
}

/// Waiting state of one group in flight. Times are [`coarse_now`] readings: a few
/// milliseconds of resolution is plenty for deadlines and liveness checks, and reading it
/// costs a fraction of a precise clock on the latency path (every pass of the spin loop).
pub(crate) struct Waiter {
    last_poll: Duration,
    idle_passes: u32,
    last_progress: Duration,
    last_alive_check: Duration,
    seq: Option<u32>,
}

impl Waiter {
    /// A fresh waiter: the deadline counts from now.
    pub fn new() -> Self {
        let now = coarse_now();
        Waiter {
            last_poll: now,
            idle_passes: 0,
            last_progress: now,
            last_alive_check: now,
            seq: None,
        }
    }
}

impl Engine {
    /// One non-blocking pass over all ops; `Ok(true)` once all are done.
    pub fn poll(&mut self, ops: &mut [OpRun<'_>], w: &mut Waiter) -> Result<bool> {
        // Time between the caller's polls (computing between `test` calls) is not waiting:
        // the deadline only counts time spent here without progress.
        let now = coarse_now();
        let gap = now.saturating_sub(w.last_poll);
        if gap > GAP {
            w.last_progress += gap;
            w.last_alive_check += gap;
        }
        w.last_poll = now;
        // Once the rank may sleep (spinning is over), read the doorbell before looking, so a
        // ring during the pass is not lost: `idle` sleeps only after a whole pass that began
        // after this read. While spinning it is not read at all: every read pulls the line
        // that peers write on each post and release, which would cost a cache-line transfer
        // per ring on the latency path.
        if w.idle_passes >= self.spin {
            w.seq = self.links.shm.as_ref().map(|s| s.doorbell().seq());
        }
        let mut moved = false;
        let mut all_done = true;
        for i in 0..ops.len() {
            if ops[i].done {
                continue;
            }
            let (earlier, rest) = ops.split_at_mut(i);
            let op = &mut rest[0];
            for ch in 0..op.chans.len() {
                if op.chans[ch].done {
                    continue;
                }
                let waits = earlier.iter().any(|e| {
                    !e.done && e.chans.get(ch).is_some_and(|c| !c.done) && op.conflicts(e, ch)
                });
                if !waits {
                    moved |= step::advance(op, ch, &mut self.links)?;
                }
            }
            // Push what earlier steps left in send slots even while a later step waits:
            // a step is done once its data is in the slots, and nothing else writes them
            // to the socket. Without this, ranks that all send before they receive (the
            // linear all-to-all) wait forever on data still in their peers' slots once
            // the sockets' buffers are smaller than a block (e.g. 1500-byte-MTU links).
            let flushed = self.flushed(op)?;
            if op.chans.iter().all(|c| c.done) {
                if flushed {
                    op.finish(self.links.nranks)?;
                    moved = true;
                } else {
                    all_done = false;
                }
            } else {
                all_done = false;
            }
        }
        if moved {
            w.idle_passes = 0;
            w.last_progress = coarse_now();
        }
        Ok(all_done)
    }

    /// Whether every sender `op` used has handed its data to the peer side; pushes bytes.
    fn flushed(&mut self, op: &OpRun<'_>) -> Result<bool> {
        let rank = self.links.rank;
        let mut all = true;
        for (ch, dirs) in op.plan.dirs.iter().enumerate() {
            for d in dirs {
                if let Dir::To(p) = *d {
                    let s = self.links.sender(p, ch)?;
                    if !s.flushed() {
                        s.progress().map_err(|e| Error::Transport {
                            rank,
                            peer: p,
                            op: op.label(),
                            source: e,
                        })?;
                        all &= s.flushed();
                    }
                }
            }
        }
        Ok(all)
    }

    /// Called after a pass that moved nothing: spin, yield or sleep; fail on deadline/abort.
    pub fn idle(&mut self, ops: &[OpRun<'_>], w: &mut Waiter) -> Result<()> {
        let rank = self.links.rank;
        if self.health.abort.load(Ordering::Relaxed) {
            return Err(Error::Aborted { rank });
        }
        if let Some((dead, ago)) = self.health.dead() {
            if ago >= DEAD_GRACE {
                return Err(Error::PeerDied {
                    rank,
                    dead,
                    op: Self::current(ops),
                });
            }
        }
        w.idle_passes = w.idle_passes.saturating_add(1);
        let spinning = w.idle_passes <= self.spin;
        // While spinning, the clock is read every 32nd pass only: deadlines are seconds.
        if spinning && w.idle_passes % 32 != 0 {
            std::hint::spin_loop();
            return Ok(());
        }
        let now = coarse_now();
        let stalled = now.saturating_sub(w.last_progress);
        if stalled >= self.timeout {
            return Err(self.timeout_error(ops, stalled));
        }
        if now.saturating_sub(w.last_alive_check) >= ALIVE_CHECK {
            w.last_alive_check = now;
            self.check_alive(ops)?;
        }
        if spinning {
            std::hint::spin_loop();
            return Ok(());
        }
        if w.idle_passes <= self.spin.saturating_add(YIELDS) {
            std::thread::yield_now();
            return Ok(());
        }
        let sources = self.wait_sources(ops);
        let sleep = MAX_SLEEP.min(self.timeout.saturating_sub(stalled));
        let doorbell = self.links.shm.as_ref().map(|s| s.doorbell());
        wait_any(doorbell, w.seq.unwrap_or(0), &sources, sleep).map_err(|e| Error::Transport {
            rank,
            peer: rank,
            op: "wait".into(),
            source: e,
        })
    }

    /// Runs `ops` to completion, continuing the waiting state `w`.
    pub fn run_with(&mut self, ops: &mut [OpRun<'_>], w: &mut Waiter) -> Result<()> {
        while !self.poll(ops, w)? {
            self.idle(ops, w)?;
        }
        Ok(())
    }

    /// Like [`Engine::idle`] for `test()`: checks deadline, abort and peers, never sleeps.
    pub fn idle_nonblocking(&mut self, ops: &[OpRun<'_>], w: &mut Waiter) -> Result<()> {
        let spin = std::mem::replace(&mut self.spin, u32::MAX);
        let r = self.idle(ops, w);
        self.spin = spin;
        r
    }

    fn blocked<'o, 'a>(ops: &'o [OpRun<'a>]) -> impl Iterator<Item = (&'o OpRun<'a>, usize, Dir)> {
        ops.iter().filter(|o| !o.done).flat_map(|o| {
            o.chans
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.done)
                .filter_map(move |(ch, c)| c.blocked.map(|d| (o, ch, d)))
        })
    }

    fn wait_sources(&mut self, ops: &[OpRun<'_>]) -> Vec<WaitSource> {
        let mut v = Vec::new();
        for (_, ch, d) in Self::blocked(ops) {
            let src = match d {
                Dir::To(p) => self.links.sender(p, ch).map(|s| s.wait_source()),
                Dir::From(p) => self.links.receiver(p, ch).map(|r| r.wait_source()),
                // Window waits are woken by the doorbell, which every wait includes.
                Dir::Window | Dir::Posted(_) | Dir::Acked(_) => continue,
            };
            v.extend(src.ok());
        }
        // Unflushed senders of finished channels still need the socket to drain.
        for o in ops.iter().filter(|o| !o.done) {
            for (ch, dirs) in o.plan.dirs.iter().enumerate() {
                for d in dirs {
                    if let Dir::To(p) = *d {
                        if let Ok(s) = self.links.sender(p, ch) {
                            if !s.flushed() {
                                v.push(s.wait_source());
                            }
                        }
                    }
                }
            }
        }
        v
    }

    fn check_alive(&mut self, ops: &[OpRun<'_>]) -> Result<()> {
        let rank = self.links.rank;
        for (o, ch, d) in Self::blocked(ops) {
            let (peer, r) = match d {
                Dir::To(p) => (p, self.links.sender(p, ch)?.check_alive()),
                Dir::From(p) => (p, self.links.receiver(p, ch)?.check_alive()),
                Dir::Posted(p) | Dir::Acked(p) => match self.links.window.as_ref() {
                    Some(w) => (p, w.shm.check_alive(p)),
                    None => continue,
                },
                Dir::Window => continue,
            };
            r.map_err(|e| Error::Transport {
                rank,
                peer,
                op: o.at(ch),
                source: e,
            })?;
        }
        Ok(())
    }

    /// Reports a data connection that closed because its rank stopped after another rank
    /// died as that death: the rank that died is the one to name. The watchdog may learn
    /// of the death a moment after the data path broke, so this waits briefly for it.
    pub fn attribute(&self, e: Error) -> Error {
        let Error::Transport {
            rank,
            peer,
            op,
            source: oxccl_transports::Error::PeerClosed { .. },
        } = &e
        else {
            return e;
        };
        let until = std::time::Instant::now() + ATTRIBUTE_WAIT;
        let dead = loop {
            if let Some((dead, _)) = self.health.dead() {
                break dead;
            }
            if std::time::Instant::now() >= until {
                return e;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let op = if dead == *peer {
            op.clone()
        } else {
            format!("{op} (rank {peer} stopped after it)")
        };
        Error::PeerDied {
            rank: *rank,
            dead,
            op,
        }
    }

    /// The first unfinished op, for messages.
    fn current(ops: &[OpRun<'_>]) -> String {
        ops.iter()
            .find(|o| !o.done)
            .map_or_else(|| "a group".to_owned(), |o| o.label())
    }

    fn timeout_error(&self, ops: &[OpRun<'_>], waited: Duration) -> Error {
        let rank = self.links.rank;
        // Where every rank stands: the sentence that names the rank holding the job up.
        let ranks = self
            .health
            .stuck_report(STUCK_QUERY)
            .map_or_else(Box::default, |r| format!("; {r}").into_boxed_str());
        match Self::blocked(ops).next() {
            Some((o, ch, d)) => {
                let st = &o.chans[ch];
                Error::Timeout {
                    rank,
                    op: o.label(),
                    waiting_for: d.to_string(),
                    at: format!(
                        "channel {ch} step {} ({}, round {})",
                        st.step, o.plan.channels[ch][st.step], st.round
                    ),
                    waited,
                    ranks: ranks.clone(),
                }
            }
            None => Error::Timeout {
                rank,
                op: Self::current(ops),
                waiting_for: "queued data to leave this rank".into(),
                at: "the final flush".into(),
                waited,
                ranks,
            },
        }
    }
}
