//! One op in flight: its plan, memory and per-channel progress.

use super::buffers::{OpMemory, UserBufs};
use super::layout::Layout;
use super::links::{Dir, Links};
use crate::error::{Error, Result};
use crate::types::{DataType, ReduceOp};
use oxccl_algorithms::{Buf, Collective, Plan, Step};
use std::sync::Arc;

/// What the user asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpSpec {
    /// The operation.
    pub collective: Collective,
    /// Element type.
    pub dtype: DataType,
    /// Reduction (ignored by non-reducing collectives).
    pub redop: ReduceOp,
    /// Elements per block.
    pub count: usize,
}

/// A plan with what the engine derives from it once: per channel, the connection directions
/// it uses (sorted). Communicators cache these, so a repeated op builds nothing.
#[derive(Debug)]
pub(crate) struct PreparedPlan {
    /// The plan.
    pub plan: Plan,
    /// Per channel, the directions used ([`Dir::Window`] for a load/store plan).
    pub dirs: Vec<Vec<Dir>>,
    /// Whether the plan uses the window protocol (epochs, acks).
    pub load_store: bool,
    /// Whether the plan writes this rank's window (so a round waits for the half to be free).
    pub writes_window: bool,
}

impl PreparedPlan {
    /// Derives the directions of `plan`.
    pub fn new(plan: Plan) -> Self {
        let steps = || plan.channels.iter().flatten();
        let load_store = plan.window.blocks > 0 || steps().any(|s| s.is_one_sided());
        let writes_window = steps().any(|s| match *s {
            Step::Copy { dst, .. } | Step::ReduceFromPeers { dst, .. } => dst.buf == Buf::Window,
            _ => false,
        });
        let dirs = plan
            .channels
            .iter()
            .map(|steps| {
                let mut d: Vec<Dir> = steps
                    .iter()
                    .flat_map(|s| [s.send_peer().map(Dir::To), s.recv_peer().map(Dir::From)])
                    .flatten()
                    .chain(load_store.then_some(Dir::Window))
                    .collect();
                d.sort();
                d.dedup();
                d
            })
            .collect();
        PreparedPlan {
            plan,
            dirs,
            load_store,
            writes_window,
        }
    }
}

impl std::ops::Deref for PreparedPlan {
    type Target = Plan;
    fn deref(&self) -> &Plan {
        &self.plan
    }
}

/// Progress of one channel of one op.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChanState {
    /// Index of the current step.
    pub step: usize,
    /// Current round.
    pub round: usize,
    /// Rounds to run.
    pub nrounds: usize,
    /// Slices done in the current step (the send half of `SendRecv`).
    pub a: usize,
    /// Slices done of the receive half of `SendRecv`.
    pub b: usize,
    /// What the channel last waited for.
    pub blocked: Option<Dir>,
    /// All steps of all rounds done.
    pub done: bool,
}

/// An op in flight.
pub(crate) struct OpRun<'a> {
    /// What was asked.
    pub spec: OpSpec,
    /// How it is done (shared with every op of the same shape).
    pub plan: Arc<PreparedPlan>,
    /// Its geometry.
    pub layout: Layout,
    /// Its memory.
    pub mem: OpMemory<'a>,
    /// Per-channel progress.
    pub chans: Vec<ChanState>,
    /// Bytes of final output (divided for `Avg`).
    pub output_len: usize,
    /// Finished (including the final pass).
    pub done: bool,
    /// The tag every message of this op carries (see `comm::tags`).
    pub tag: u32,
    /// The window epoch of round 0 (load/store plans; see `engine::window`).
    pub epoch_base: u64,
    /// The registered buffer (id, byte offset) the op's input lies in, when peers read it
    /// there instead of a staged copy (load/store plans, out of place only).
    pub registered: Option<(u64, usize)>,
    /// The op's window fits the flag line (load/store plans of a few bytes).
    pub inline: bool,
    /// What the ranks must agree on for this op (`engine::window::signature`), set with
    /// the tag.
    pub signature: u64,
}

impl<'a> OpRun<'a> {
    /// Prepares `plan` over `user` memory on `links`.
    pub fn new(
        spec: OpSpec,
        plan: Arc<PreparedPlan>,
        user: UserBufs<'a>,
        links: &mut Links,
    ) -> Result<Self> {
        let esize = spec.dtype.size();
        let mut inline = false;
        let chunk_elems = if plan.load_store {
            // A round's window blocks, each `splits` chunks, fill one window half, or, for a
            // tiny op, the flag line itself.
            let half = links.window.as_ref().map_or(0, |w| w.half_len());
            let per_round = plan.window.blocks.max(1) as usize * plan.splits.max(1) as usize;
            let tiny = spec.count.div_ceil(plan.splits.max(1) as usize).max(1);
            inline = per_round * tiny * esize <= super::window::INLINE_DATA;
            let elems = if inline {
                tiny
            } else {
                half / (per_round * esize)
            };
            if elems == 0 {
                return Err(Error::Internal(format!(
                    "a {half}-byte window cannot hold {per_round} chunks of {esize}-byte elements \
                     (OXCCL_SHM_WINDOW too small?)"
                )));
            }
            elems
        } else {
            (links.chunk_bytes / esize).max(1)
        };
        let nchannels = plan.channels.len();
        if nchannels == 0 || nchannels > links.nchannels().max(1) {
            return Err(Error::Internal(format!(
                "plan has {nchannels} channels, the communicator {}",
                links.nchannels()
            )));
        }
        let layout = Layout {
            count: spec.count,
            esize,
            nchannels,
            splits: plan.splits.max(1) as usize,
            chunk_elems,
        };
        let scratch_len = plan.scratch.blocks as usize * spec.count * esize;
        let output_len = plan.output.blocks as usize * spec.count * esize;
        let nrounds_ls = if plan.load_store {
            layout.rounds(0) as u64
        } else {
            0
        };
        let epoch_base = match links.window.as_mut() {
            Some(w) if plan.load_store => {
                let base = w.next_epoch;
                w.next_epoch += nrounds_ls;
                base
            }
            None if plan.load_store => {
                return Err(Error::Internal(format!(
                    "rank {} got a load/store plan without a shared-memory window",
                    links.rank
                )))
            }
            _ => 0,
        };
        // Out of place only: in place the output would overwrite input peers still read.
        let registered = match &user {
            UserBufs::Split { input, .. } if plan.load_store && plan.writes_window => {
                links.registry.find_own(input)
            }
            _ => None,
        };
        let chans = (0..nchannels)
            .map(|ch| ChanState {
                nrounds: if plan.channels[ch].is_empty() {
                    0
                } else {
                    layout.rounds(ch)
                },
                ..ChanState::default()
            })
            .collect();
        Ok(OpRun {
            spec,
            plan,
            layout,
            mem: OpMemory::new(user, scratch_len),
            chans,
            output_len,
            done: false,
            tag: 0,
            epoch_base,
            registered,
            inline,
            signature: 0,
        })
    }

    /// The op's name for logs and errors.
    pub fn name(&self) -> &'static str {
        self.spec.collective.name()
    }

    /// The op with its sequence number, for messages: `all_reduce #57` (the 57th
    /// collective of the communicator, the same on every rank), `send #3 to rank 2` (the
    /// third send to that peer).
    pub fn label(&self) -> String {
        let seq = u64::from(self.tag & crate::comm::SEQ_TAG) + 1;
        if self.tag & crate::comm::P2P_TAG == 0 && self.tag & crate::comm::CHECK_TAG != 0 {
            return format!("the OXCCL_CHECK exchange before collective #{seq}");
        }
        match self.spec.collective {
            oxccl_algorithms::Collective::Send { peer } => format!("send #{seq} to rank {peer}"),
            oxccl_algorithms::Collective::Recv { peer } => {
                format!("recv #{seq} from rank {peer}")
            }
            c => format!("{} #{seq}", c.name()),
        }
    }

    /// The op and where channel `ch` stands, for error messages.
    pub fn at(&self, ch: usize) -> String {
        let st = &self.chans[ch];
        match self.plan.channels[ch].get(st.step) {
            Some(step) => format!(
                "{} (channel {ch}, round {}, step {}: {step})",
                self.label(),
                st.round,
                st.step
            ),
            None => self.label(),
        }
    }

    /// Whether channel `ch` of this op shares a connection direction with `other`'s.
    pub fn conflicts(&self, other: &OpRun<'_>, ch: usize) -> bool {
        let (a, b) = (
            &self.plan.dirs[ch],
            other.plan.dirs.get(ch).map_or(&[][..], Vec::as_slice),
        );
        a.iter().any(|d| b.binary_search(d).is_ok())
    }

    /// Runs the op's last local pass (average division) once every channel is done.
    pub fn finish(&mut self, nranks: u32) -> Result<()> {
        if self.spec.redop == ReduceOp::Avg && self.spec.collective.reduces() && self.output_len > 0
        {
            let out = self.mem.output(self.output_len)?;
            crate::reduce::divide(self.spec.dtype, out, nranks);
        }
        self.done = true;
        Ok(())
    }
}
