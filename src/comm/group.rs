//! Groups of ops that run together, and the handle of ops in flight.

use super::Communicator;
use crate::engine::{OpRun, OpSpec, PreparedPlan, UserBufs, Waiter};
use crate::error::{Error, Result};
use crate::types::{DataType, ReduceOp};
use oxccl_algorithms::Collective;
use std::sync::Arc;

/// Ops collected to run together (NCCL's `ncclGroupStart`/`ncclGroupEnd`).
///
/// Add ops with the same methods as on [`Communicator`] (they validate their arguments at
/// once and leave the group unchanged on error), then [`Group::launch`] for a [`Pending`]
/// handle or [`Group::run`] to wait. Sends and receives in one group progress together, so a
/// ring where every rank sends to the next and receives from the previous cannot deadlock.
/// A send to this rank itself must be matched by a receive from itself in the same group.
pub struct Group<'a> {
    pub(super) comm: &'a mut Communicator,
    pub(super) ops: Vec<(OpSpec, UserBufs<'a>)>,
    pub(super) self_sends: Vec<&'a [u8]>,
    pub(super) self_recvs: Vec<&'a mut [u8]>,
}

impl<'a> Group<'a> {
    pub(super) fn new(comm: &'a mut Communicator) -> Self {
        Group {
            comm,
            ops: Vec::new(),
            self_sends: Vec::new(),
            self_recvs: Vec::new(),
        }
    }

    /// Adds an op over raw bytes (the typed methods and the C ABI end here).
    pub(crate) fn push(
        &mut self,
        collective: Collective,
        dtype: DataType,
        redop: ReduceOp,
        count: usize,
        bufs: UserBufs<'a>,
    ) {
        let spec = OpSpec {
            collective,
            dtype,
            redop,
            count,
        };
        self.ops.push((spec, bufs));
    }

    /// Starts every op of the group; the returned handle finishes them.
    pub fn launch(self) -> Result<Pending<'a>> {
        let Group {
            comm,
            ops,
            self_sends,
            self_recvs,
        } = self;
        comm.check_usable().map_err(|e| match (e, ops.first()) {
            // A peer found dead before this group started: name the op it was to run.
            (Error::PeerDied { rank, dead, .. }, Some((spec, _))) => Error::PeerDied {
                rank,
                dead,
                op: format!("{} (not started)", spec.collective.name()),
            },
            (e, _) => e,
        })?;
        if self_sends.len() != self_recvs.len() {
            return Err(Error::invalid(
                "group",
                format!(
                    "{} sends to self but {} receives from self in this group; each send to \
                     self needs a matching receive from self",
                    self_sends.len(),
                    self_recvs.len()
                ),
            ));
        }
        for (i, (s, r)) in self_sends.iter().zip(&self_recvs).enumerate() {
            if s.len() != r.len() {
                return Err(Error::invalid(
                    "group",
                    format!(
                        "send to self #{i} has {} bytes but the matching receive has {}",
                        s.len(),
                        r.len()
                    ),
                ));
            }
        }
        // Every rank must see the group's ops in the same order on each connection: collectives
        // first (all ranks issue them in the same order), then sends and receives (matched per
        // peer in issue order), whatever order the caller interleaved them in.
        let (colls, p2p): (Vec<_>, Vec<_>) = ops.into_iter().partition(|(spec, _)| {
            !matches!(
                spec.collective,
                Collective::Send { .. } | Collective::Recv { .. }
            )
        });
        if comm.config.check && !comm.checking && !colls.is_empty() {
            let specs: Vec<&OpSpec> = colls.iter().map(|(s, _)| s).collect();
            let label = format!(
                "{} #{}",
                colls[0].0.collective.name(),
                (comm.tags.check() & super::SEQ_TAG) + 1
            );
            comm.check_consistent(&specs, &label)?;
        }
        let mut runs = Vec::with_capacity(colls.len() + p2p.len());
        for (spec, bufs) in colls.into_iter().chain(p2p) {
            let plan = comm.plan_for(&spec)?;
            // A load/store all-to-all stages every block in the window before it writes any
            // output (verified in place), so it needs no private copy of the input.
            let bufs = match bufs {
                UserBufs::Staged(buf) if plan.load_store => UserBufs::InPlace {
                    buf,
                    input_at: 0,
                    output_at: 0,
                },
                other => other,
            };
            runs.push(OpRun::new(spec, plan, bufs, &mut comm.engine.links)?);
        }
        for run in &mut runs {
            run.tag = if comm.checking {
                comm.tags.check()
            } else {
                comm.tags.next(run.spec.collective)
            };
            run.signature = crate::engine::signature(run);
            if run.tag & (super::P2P_TAG | super::CHECK_TAG) == 0 {
                comm.engine
                    .health
                    .enter(u64::from(run.tag) + 1, run.spec.collective.name());
            }
        }
        for (s, r) in self_sends.into_iter().zip(self_recvs) {
            r.copy_from_slice(s);
        }
        tracing::trace!(target: "oxccl::coll", "rank {}: launching {} ops", comm.rank, runs.len());
        let mut pending = Pending {
            comm,
            ops: runs,
            waiter: Waiter::new(),
            state: State::Running,
        };
        // Start moving data now, so work overlaps whatever the caller does before `test`.
        pending.test()?;
        Ok(pending)
    }

    /// Runs the group and waits for it.
    pub fn run(self) -> Result<()> {
        self.launch()?.wait()
    }
}

impl Communicator {
    /// Starts collecting a group of ops.
    pub fn group(&mut self) -> Group<'_> {
        Group::new(self)
    }

    /// The plan for one op on this communicator, built once per shape and then cached.
    fn plan_for(&mut self, spec: &OpSpec) -> Result<Arc<PreparedPlan>> {
        let choice = self.choice(spec.collective, spec.dtype, spec.count);
        let key = (choice.algorithm, spec.collective, choice.nchannels);
        if let Some((_, p)) = self.plans.iter().find(|(k, _)| *k == key) {
            return Ok(p.clone());
        }
        // Over several nodes the plans follow the node-contiguous order (and the
        // hierarchical ones use the layout), whatever the rank placement.
        let plan = oxccl_algorithms::build_with_nodes(
            choice.algorithm,
            spec.collective,
            self.nranks,
            self.rank,
            choice.nchannels,
            self.layout.as_ref(),
        )
        .map_err(|e| Error::invalid(spec.collective.name(), e.to_string()))?;
        let prepared = Arc::new(PreparedPlan::new(plan));
        self.plans.push((key, prepared.clone()));
        Ok(prepared)
    }
}

/// Ops in flight. [`Pending::test`] advances them without blocking; [`Pending::wait`]
/// finishes them. Dropping an unfinished handle waits for it (the buffers are borrowed until
/// then); an error while dropping marks the communicator failed.
pub struct Pending<'a> {
    comm: &'a mut Communicator,
    ops: Vec<OpRun<'a>>,
    waiter: Waiter,
    state: State,
}

/// Where a [`Pending`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Done,
    Failed,
}

impl Pending<'_> {
    /// Advances the ops; `Ok(true)` once all are complete. Never blocks (beyond a short
    /// spin or yield when nothing moved).
    pub fn test(&mut self) -> Result<bool> {
        match self.state {
            State::Done => return Ok(true),
            State::Failed => return Err(self.failure()),
            State::Running => {}
        }
        let engine = &mut self.comm.engine;
        let r = engine
            .poll(&mut self.ops, &mut self.waiter)
            .and_then(|done| {
                if !done {
                    engine.idle_nonblocking(&self.ops, &mut self.waiter)?;
                }
                Ok(done)
            });
        self.settle(r)
    }

    /// Blocks until every op completed, or fails (deadline, peer failure, abort).
    pub fn wait(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        match self.state {
            State::Done => return Ok(()),
            State::Failed => return Err(self.failure()),
            State::Running => {}
        }
        let r = self
            .comm
            .engine
            .run_with(&mut self.ops, &mut self.waiter)
            .map(|()| true);
        self.settle(r).map(drop)
    }

    fn settle(&mut self, r: Result<bool>) -> Result<bool> {
        match r {
            Ok(done) => {
                if done {
                    self.state = State::Done;
                    self.comm.engine.health.finish();
                }
                Ok(done)
            }
            Err(e) => {
                let e = self.comm.engine.attribute(e);
                self.state = State::Failed;
                self.comm.fail(&e);
                Err(e)
            }
        }
    }
}

impl Pending<'_> {
    /// The error to report again after the ops failed.
    fn failure(&self) -> Error {
        self.comm
            .check_usable()
            .err()
            .unwrap_or_else(|| Error::Failed {
                rank: self.comm.rank,
                first: "this group failed earlier".into(),
            })
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
