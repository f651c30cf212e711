//! The symbolic verifier: runs every rank's plan against the others and proves that they
//! meet without deadlock and compute the collective.
//!
//! # Model
//! - **Contents.** A chunk holds a multiset of [`Contribution`]s. At the start of every round,
//!   rank `r`'s input chunk `(b, s)` holds `{r.b.s}`; output and scratch chunks are
//!   uninitialised and reading one is an error. `Copy` and receives overwrite; reducing steps
//!   (the local `Reduce` too: `dst = dst ⊕ src`, both read) take the union, and a
//!   contribution on both sides is an error (it would be counted twice). Writing the input
//!   buffer is an error: it is the user's read-only send buffer. The two halves of a
//!   `SendRecv`, and the operands of a `Reduce`, must be different memory.
//! - **Connections.** Per channel and ordered pair `(from, to)`, a FIFO that holds
//!   [`VerifyOptions::fifo_chunks`] messages (chunks; two by default, see below). A step that
//!   sends needs room in the FIFO, a step that receives needs a message in it. A received message must name the same split (and round) as the region
//!   it lands in, so both sides agree on its byte count; a step naming its own rank as a peer
//!   is an error.
//! - **Fused steps** (`RecvReduceSend`, `RecvReduceCopySend`, `RecvCopySend`) are atomic: they
//!   fire when their incoming message is present *and* their outgoing FIFO has room, then
//!   receive, compute and send in one move. The halves of `SendRecv` fire independently;
//!   the step ends when both have.
//! - **Channels** are independent (separate connections, and the engine never makes one
//!   channel wait for another), so each is simulated on its own.
//! - **Rounds.** The engine runs a channel's step list once per round over fresh data; the
//!   verifier runs [`VerifyOptions::rounds`] rounds back to back (two by default), so a
//!   plan whose round `k+1` can collide with the tail of round `k` is caught.
//! - **In-place** ([`VerifyOptions::in_place`]): output chunks that NCCL's in-place
//!   convention puts on top of input chunks ([`crate::Collective::in_place_blocks`]; for
//!   all-to-all every output block is the input block of the same index) are the
//!   same memory, so a plan that overwrites input it still needs gets a wrong result.
//!
//! The simulation is a work list: a rank runs until it blocks and is woken when a
//! connection it waits on changes. When the list is empty, any rank with steps left is
//! reported in a [`VerifyError::Deadlock`] with the step it waits in; any message still on
//! a connection is an [`VerifyError::UnmatchedSend`]; then every output chunk of every
//! round is compared with the collective's reference semantics.
//!
//! # Why atomic fused steps, and why two chunks per connection
//! The engine streams a chunk through a connection's FIFO in slot-sized slices. A fused
//! step consumes an incoming slice only as it writes the matching outgoing slice: it cannot
//! free the slot it reads from before it has a slot to write to (a recv-reduce-send has no
//! local destination to park the data in). So "receive the whole chunk, then wait for room
//! to send it" would be optimistic; "wait for the message *and* the room, then do both" is
//! what a streaming engine can always do once both are there.
//!
//! *Passing here implies no deadlock in an engine whose FIFOs hold `fifo_chunks` chunks.*
//! Every action of this system is *persistent*: a connection has exactly one writer and one
//! reader, so once a rank's next action is enabled no other rank's action can disable it.
//! Such a system is confluent: if one schedule runs to completion, every schedule does, with
//! the same messages on every connection (so the results checked are schedule-independent
//! too). The engine can follow the verifier's schedule (run each step's slices back to back:
//! the room for a whole chunk is there), so some engine schedule completes, hence all do.
//! More FIFO room or finer slices only enable more actions, never fewer.
//!
//! *The converse does not hold, on purpose*: the verifier is conservative, never optimistic.
//!
//! *One chunk per connection is not enough for a ring.* After the first step of a ring
//! all-reduce, all-gather or reduce-scatter every connection holds a chunk, and every rank's
//! next step is a fused recv-…-send that needs room on a connection its successor can only
//! drain by doing the same: a cycle of waits, in this model and in a streaming engine alike.
//! NCCL avoids it the same way: a ring chunk is half of its FIFO (`NCCL_STEPS/2` slots).
//! Hence the default `fifo_chunks = 2`, which the engine must honour by keeping a round's
//! chunk at most half a connection's FIFO; `fifo_chunks = 1` checks a plan against the
//! stricter budget.

mod check;
mod content;
mod error;
mod sim;

pub use content::Contribution;
pub use error::{Blocked, StepAt, VerifyError, Wait};

use crate::Plan;

/// How [`verify_with`] runs the plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Rounds run back to back (at least 1).
    pub rounds: u32,
    /// Treat the op as in-place ([`crate::Collective::in_place_blocks`]).
    pub in_place: bool,
    /// Chunks a connection holds before a send must wait (at least 1; see the module doc).
    pub fifo_chunks: u32,
    /// Model registered (peer-readable) input buffers for load/store plans: window block `b`
    /// of a rank with `b` below its input block count *is* its input block `b` (the engine
    /// skips the copy into the window and peers read the input directly), so a plan that
    /// overwrites such input (in place) after posting it is a [`VerifyError::WindowRace`].
    pub registered_input: bool,
}

impl Default for VerifyOptions {
    /// Two rounds, out of place, two chunks per connection.
    fn default() -> Self {
        Self {
            rounds: 2,
            in_place: false,
            fifo_chunks: 2,
            registered_input: false,
        }
    }
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Number of ranks.
    pub nranks: u32,
    /// Channels per plan.
    pub nchannels: u32,
    /// Rounds simulated.
    pub rounds: u32,
    /// Messages of one round, over all ranks and channels.
    pub messages_per_round: u64,
    /// The longest step list of any rank on any channel.
    pub max_steps: usize,
    /// The most sending steps of any rank on any channel (the α count of a round).
    pub max_sends: usize,
}

/// The ranks and plans being verified, checked for consistency.
pub(crate) struct World<'a> {
    nranks: u32,
    /// `plans[r]` is rank `r`'s plan; `None`: the rank takes no part.
    plans: Vec<Option<&'a Plan>>,
    splits: u32,
    nchannels: u32,
    /// The rank whose plan fixed `splits` and `nchannels`.
    first_rank: u32,
    options: VerifyOptions,
}

impl<'a> World<'a> {
    fn new(
        nranks: u32,
        plans: Vec<Option<&'a Plan>>,
        reference: &Plan,
        options: &VerifyOptions,
    ) -> Result<Self, VerifyError> {
        let malformed = |reason: &str| VerifyError::Malformed {
            rank: Some(reference.rank),
            reason: reason.into(),
        };
        if reference.splits == 0 {
            return Err(malformed("zero splits"));
        }
        let nchannels =
            u32::try_from(reference.channels.len()).map_err(|_| malformed("too many channels"))?;
        if nchannels == 0 {
            return Err(malformed("no channels"));
        }
        if options.rounds == 0 || options.fifo_chunks == 0 {
            return Err(VerifyError::Malformed {
                rank: None,
                reason: "verification needs at least one round and one chunk of FIFO".into(),
            });
        }
        Ok(Self {
            nranks,
            plans,
            splits: reference.splits,
            nchannels,
            first_rank: reference.rank,
            options: *options,
        })
    }

    fn run(&self) -> Result<Report, VerifyError> {
        let mut messages = 0;
        for channel in 0..self.nchannels {
            messages += sim::run_channel(self, channel)?.messages;
        }
        let lists = || self.plans.iter().flatten().flat_map(|p| p.channels.iter());
        Ok(Report {
            nranks: self.nranks,
            nchannels: self.nchannels,
            rounds: self.options.rounds,
            messages_per_round: messages / u64::from(self.options.rounds),
            max_steps: lists().map(Vec::len).max().unwrap_or(0),
            max_sends: lists()
                .map(|steps| steps.iter().filter(|s| s.send_peer().is_some()).count())
                .max()
                .unwrap_or(0),
        })
    }
}

/// Verifies a collective: `plans[r]` is rank `r`'s plan, all for the same collective on
/// `plans.len()` ranks, with the same splits and channel count. Two rounds, out of place,
/// two chunks per connection ([`VerifyOptions::default`]); see [`verify_with`].
pub fn verify(plans: &[Plan]) -> Result<Report, VerifyError> {
    verify_with(plans, &VerifyOptions::default())
}

/// [`verify`] with explicit options.
pub fn verify_with(plans: &[Plan], options: &VerifyOptions) -> Result<Report, VerifyError> {
    check::collective_world(plans, options)?.run()
}

/// Verifies one point-to-point transfer: `sender`'s plan is for `Send { peer: receiver }`,
/// `receiver`'s for `Recv { peer: sender }`, on the same communicator; every other rank
/// takes no part. Two rounds.
pub fn verify_p2p(sender: &Plan, receiver: &Plan) -> Result<Report, VerifyError> {
    check::p2p_world(sender, receiver, &VerifyOptions::default())?.run()
}
