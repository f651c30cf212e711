//! The window protocol: running load/store plans (`oxccl_algorithms::load_store`).
//!
//! Every round of a load/store op is one **epoch** of the communicator's window (epochs
//! count from 1 over all load/store rounds, in op order, identically on every rank). Epoch
//! `e` uses half `e % 2` of every rank's window:
//! - at the start of the round, a rank whose plan writes its window waits until every
//!   other rank acknowledged epoch `e-2` (finished reading the half it is about to reuse);
//! - `post phase k` publishes `e·16 + k`; a one-sided read of phase `k` waits until the
//!   owner's posted value for the half is at least that;
//! - after the round's last step, the rank acknowledges `e` to every other rank.
//!
//! So a rank can run one round ahead of the slowest reader without any barrier. Waiting
//! happens in the engine's usual way: a blocked step reports [`Dir::Posted`] or
//! [`Dir::Acked`], and the rank sleeps on its doorbell, which posts and acks ring.

use super::buffers::OpMemory;
use super::links::{Dir, Links};
use super::op::OpRun;
use super::step::{tr, Status};
use crate::error::{Error, Result};
use crate::reduce;
use crate::types::{DataType, ReduceOp};
use oxccl_algorithms::load_store::MAX_PHASES;
use oxccl_algorithms::{Buf, Region, Step};
use oxccl_transports::shm::ShmWindow;
use std::ops::Range;

/// Bits of a posted value that hold the phase.
const PHASE_BITS: u32 = 4;
const _: () = assert!(MAX_PHASES < 1 << PHASE_BITS);

/// Bytes at the start of a flag line's inline area that describe the round: where the staged
/// input is, and the op's signature (see [`publish_input`]).
const DESCRIPTOR_LEN: usize = 24;

/// Bytes of the flag line left for a round's whole window when it is that small: the data
/// then rides in the same cache line as the flag a reader polls (one line transfer).
pub(crate) const INLINE_DATA: usize = oxccl_transports::shm::INLINE_LEN - DESCRIPTOR_LEN;

/// Bytes folded at a time by `reduce_from_peers`: the partial result stays in the L1 cache
/// while every peer's term is added to it.
const FOLD_BLOCK: usize = 16 * 1024;

/// This rank's window and the communicator's epoch counter.
pub(crate) struct Window {
    /// The shared-memory window (local rank = rank: every rank is on this host).
    pub shm: ShmWindow,
    /// The epoch the next load/store round will use.
    pub next_epoch: u64,
    /// Every rank's process id (to map the peers' registered buffers).
    pub pids: Vec<u32>,
    /// `reduce_from_peers`' copy of the own term, allocated once.
    pub fold_scratch: Vec<u8>,
}

impl Window {
    /// Wraps a freshly created window; epochs start at 1 (all flags start at 0).
    pub fn new(shm: ShmWindow, pids: Vec<u32>) -> Self {
        Window {
            shm,
            next_epoch: 1,
            pids,
            fold_scratch: vec![0; FOLD_BLOCK],
        }
    }

    /// Bytes of one half.
    pub fn half_len(&self) -> usize {
        self.shm.half_len()
    }
}

fn posted_value(epoch: u64, phase: u32) -> u64 {
    (epoch << PHASE_BITS) | u64::from(phase)
}

fn no_window(rank: u32) -> Error {
    Error::Internal(format!(
        "rank {rank} runs a load/store plan but has no shared-memory window"
    ))
}

/// The epoch round `round` of `op` uses.
fn epoch(op: &OpRun<'_>, round: usize) -> u64 {
    op.epoch_base + round as u64
}

/// Before round `round`: may this rank write its window half? `Some(dir)` names the peer
/// still reading the half from two epochs ago.
pub(crate) fn begin_round(op: &OpRun<'_>, round: usize, links: &Links) -> Result<Option<Dir>> {
    if !op.plan.writes_window {
        return Ok(None);
    }
    let (rank, nranks) = (links.rank, links.nranks);
    let w = links.window.as_ref().ok_or_else(|| no_window(rank))?;
    let e = epoch(op, round);
    for peer in (0..nranks).filter(|&p| p != rank) {
        let acked = w.shm.acked(peer).map_err(|e| tr(rank, peer, op, e))?;
        if acked.saturating_add(2) < e {
            return Ok(Some(Dir::Acked(peer)));
        }
    }
    Ok(None)
}

/// What the ranks must agree on for an op: its tag (position in the op sequence), the
/// collective with its root, type, reduction and count. Readers compare it with the owner's,
/// so ranks that issued different ops fail with an error instead of reading each other's
/// windows wrongly (message transports check tags and lengths instead).
pub(crate) fn signature(op: &OpRun<'_>) -> u64 {
    use oxccl_algorithms::Collective as C;
    let (kind, arg) = match op.spec.collective {
        C::AllReduce => (1, 0),
        C::AllGather => (2, 0),
        C::ReduceScatter => (3, 0),
        C::Broadcast { root } => (4, root),
        C::Reduce { root } => (5, root),
        C::AllToAll => (6, 0),
        C::Send { peer } => (7, peer),
        C::Recv { peer } => (8, peer),
        C::Gather { root } => (9, root),
        C::Scatter { root } => (10, root),
    };
    let redop = if op.spec.collective.reduces() {
        op.spec.redop as u64
    } else {
        0
    };
    // A few rounds of a 64-bit mixer (splitmix64's finaliser) over the fields: the same
    // value in every process, and cheap enough for every op.
    let mix = |h: u64, v: u64| {
        let mut z = (h ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let fields = [
        u64::from(op.tag),
        (kind << 32) | u64::from(arg),
        ((op.spec.dtype as u64) << 8) | redop,
        op.spec.count as u64,
    ];
    fields.into_iter().fold(0, mix)
}

/// Publishes, in the flag line of this round's half: where this rank's staged input is,
/// `(registered buffer id + 1, byte offset of the op's input in it)` or zeros for "in the
/// window", then the op's [`signature`]. Written after `begin_round` (no reader of the half
/// is left) and before the round's first post, whose `Release` store makes it visible with
/// the data.
pub(crate) fn publish_input(op: &OpRun<'_>, round: usize, links: &mut Links) -> Result<()> {
    if !op.plan.writes_window {
        return Ok(());
    }
    let rank = links.rank;
    let w = links.window.as_mut().ok_or_else(|| no_window(rank))?;
    let half = (epoch(op, round) & 1) as usize;
    let (id, offset) = op
        .registered
        .map_or((0, 0), |(id, off)| (id + 1, off as u64));
    let line = w.shm.own_inline_mut(half);
    line[..8].copy_from_slice(&id.to_le_bytes());
    line[8..16].copy_from_slice(&offset.to_le_bytes());
    line[16..24].copy_from_slice(&op.signature.to_le_bytes());
    Ok(())
}

/// After the last round of an op whose registered input peers read: has every peer
/// acknowledged it (so the caller may overwrite the input)? `Some(dir)`: not yet.
pub(crate) fn input_released(op: &OpRun<'_>, links: &Links) -> Result<Option<Dir>> {
    let nrounds = op.chans.first().map_or(0, |c| c.nrounds);
    if op.registered.is_none() || nrounds == 0 {
        return Ok(None);
    }
    let (rank, nranks) = (links.rank, links.nranks);
    let w = links.window.as_ref().ok_or_else(|| no_window(rank))?;
    let last = epoch(op, nrounds - 1);
    for peer in (0..nranks).filter(|&p| p != rank) {
        if w.shm.acked(peer).map_err(|e| tr(rank, peer, op, e))? < last {
            return Ok(Some(Dir::Acked(peer)));
        }
    }
    Ok(None)
}

/// Where `owner` keeps window region `region` this round: a range of its window half, or of
/// its registered buffer `id` when it published one (input blocks only).
enum Source {
    Window(Range<usize>),
    Registered(u64, Range<usize>),
}

fn source(
    op: &OpRun<'_>,
    ch: usize,
    round: usize,
    links: &Links,
    owner: u32,
    region: Region,
) -> Result<Source> {
    let rank = links.rank;
    let layout = op.layout;
    let w = links.window.as_ref().ok_or_else(|| no_window(rank))?;
    let half = (epoch(op, round) & 1) as usize;
    let line = w
        .shm
        .peer_inline(owner, half)
        .map_err(|e| tr(rank, owner, op, e))?;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&line[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    if word(2) != op.signature {
        return Err(tr(
            rank,
            owner,
            op,
            oxccl_transports::Error::Protocol {
                peer: format!("rank {owner}"),
                detail: format!(
                    "rank {owner} posted its window for another operation than this rank's \
                     {} of {} elements ({}): the ranks disagree on the operation \
                     (different order, count, datatype, reduction or root?)",
                    op.name(),
                    op.spec.count,
                    crate::comm::describe_tag(op.tag)
                ),
            },
        ));
    }
    let owner_inputs = op.spec.collective.input_blocks(links.nranks, owner);
    if region.block < owner_inputs {
        let (id, offset) = (word(0), word(1));
        if id != 0 {
            let input = Region::new(Buf::Input, region.block, region.split);
            let r = layout.bytes(input, ch, round);
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            let start = offset.saturating_add(r.start);
            return Ok(Source::Registered(
                id - 1,
                start..start.saturating_add(r.len()),
            ));
        }
    }
    Ok(Source::Window(layout.bytes(region, ch, round)))
}

/// The bytes of `src`, given `owner`'s window half and the registry.
fn resolve<'m>(
    src: &Source,
    owner: u32,
    half_bytes: &'m [u8],
    registry: &'m super::registry::Registry,
) -> Result<&'m [u8]> {
    let bad = |what: &str| {
        Error::Internal(format!(
            "rank {owner} published {what} outside what this rank mapped (the ranks \
             disagree on the operation or its buffers)"
        ))
    };
    match src {
        Source::Window(r) => half_bytes
            .get(r.clone())
            .ok_or_else(|| bad("a window range")),
        Source::Registered(id, r) => registry
            .peer(owner, *id)
            .and_then(|m| m.get(r.clone()))
            .ok_or_else(|| bad(&format!("registered buffer {id} range {r:?}"))),
    }
}

/// After round `round`: tell every other rank this one is done reading its window.
pub(crate) fn end_round(op: &OpRun<'_>, round: usize, links: &Links) -> Result<()> {
    let (rank, nranks) = (links.rank, links.nranks);
    let w = links.window.as_ref().ok_or_else(|| no_window(rank))?;
    let e = epoch(op, round);
    for peer in (0..nranks).filter(|&p| p != rank) {
        w.shm.ack(peer, e).map_err(|e| tr(rank, peer, op, e))?;
    }
    Ok(())
}

/// The first rank among `peers` that has not posted `phase` of round `round`.
fn unposted(
    op: &OpRun<'_>,
    round: usize,
    links: &Links,
    phase: u32,
    peers: impl Iterator<Item = u32>,
) -> Result<Option<u32>> {
    let rank = links.rank;
    let w = links.window.as_ref().ok_or_else(|| no_window(rank))?;
    let e = epoch(op, round);
    let need = posted_value(e, phase);
    let half = (e & 1) as usize;
    for p in peers {
        let posted = w.shm.posted(p, half).map_err(|e| tr(rank, p, op, e))?;
        if posted < need {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Runs a one-sided step, or a copy into or out of the own window.
pub(crate) fn run_step(
    op: &mut OpRun<'_>,
    ch: usize,
    round: usize,
    step: Step,
    links: &mut Links,
) -> Result<Status> {
    let layout = op.layout;
    let range = |r: Region| layout.bytes(r, ch, round);
    let (rank, nranks) = (links.rank, links.nranks);
    let e = epoch(op, round);
    let half = (e & 1) as usize;
    match step {
        Step::Post { phase } => {
            let w = links.window.as_ref().ok_or_else(|| no_window(rank))?;
            w.shm.post(half, posted_value(e, phase));
        }
        Step::Copy { src, dst }
            if op.registered.is_some() && src.buf == Buf::Input && dst.buf == Buf::Window =>
        {
            // The input is registered: peers read it where it is (see `publish_input`).
        }
        Step::Copy { src, dst } => {
            let w = links.window.as_mut().ok_or_else(|| no_window(rank))?;
            let own = if op.inline {
                &mut w.shm.own_inline_mut(half)[DESCRIPTOR_LEN..]
            } else {
                w.shm.own_mut(half)
            };
            let (rs, rd) = (range(src), range(dst));
            match (src.buf, dst.buf) {
                (Buf::Window, Buf::Window) => own.copy_within(rs, rd.start),
                (Buf::Window, _) => op.mem.write(dst.buf, rd)?.copy_from_slice(&own[rs]),
                (_, _) => own[rd].copy_from_slice(op.mem.read(src.buf, rs)?),
            }
        }
        Step::CopyFromPeer {
            peer,
            src,
            phase,
            dst,
        } => {
            if unposted(op, round, links, phase, std::iter::once(peer))?.is_some() {
                return Ok(Status::Blocked(Dir::Posted(peer)));
            }
            let from = source(op, ch, round, links, peer, src)?;
            let w = links.window.as_ref().ok_or_else(|| no_window(rank))?;
            let theirs = if op.inline {
                w.shm.peer_inline(peer, half).map(|l| &l[DESCRIPTOR_LEN..])
            } else {
                w.shm.peer(peer, half)
            }
            .map_err(|e| tr(rank, peer, op, e))?;
            let bytes = resolve(&from, peer, theirs, &links.registry)?;
            let out = op.mem.write(dst.buf, range(dst))?;
            if out.len() != bytes.len() {
                return Err(Error::Internal(format!("{step}: operand lengths differ")));
            }
            out.copy_from_slice(bytes);
        }
        Step::ReduceFromPeers {
            peers,
            own,
            phase,
            dst,
        } => {
            let others = (0..nranks).filter(|&p| p != rank);
            if let Some(p) = unposted(op, round, links, phase, others)? {
                return Ok(Status::Blocked(Dir::Posted(p)));
            }
            let (dtype, redop) = (op.spec.dtype, op.spec.redop);
            let sources = (0..nranks)
                .map(|p| {
                    (p != rank)
                        .then(|| source(op, ch, round, links, p, peers))
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            let Links {
                window, registry, ..
            } = links;
            let w = window.as_mut().ok_or_else(|| no_window(rank))?;
            let Window {
                shm, fold_scratch, ..
            } = w;
            let (own_half, halves) = if op.inline {
                let (own, halves) = shm.split_inline_mut(half);
                (&mut own[DESCRIPTOR_LEN..], halves)
            } else {
                shm.split_mut(half)
            };
            let skip = if op.inline { DESCRIPTOR_LEN } else { 0 };
            let mut terms = Vec::with_capacity(nranks as usize);
            for (p, src) in (0..nranks).zip(&sources) {
                terms.push(match src {
                    None => None,
                    Some(src) => {
                        let h = halves
                            .get(p)
                            .map(|h| &h[skip..])
                            .map_err(|e| tr(rank, p, op, e))?;
                        Some(resolve(src, p, h, registry)?)
                    }
                });
            }
            let fold = Fold {
                dtype,
                redop,
                terms: &terms,
                own: (own, range(own)),
                dst: (dst, range(dst)),
            };
            fold.run(&mut op.mem, own_half, fold_scratch)?;
        }
        other => return Err(Error::Internal(format!("{other} is not a window step"))),
    }
    Ok(Status::Done)
}

/// `dst = x_0 ⊕ … ⊕ x_{p-1}` in rank order, `FOLD_BLOCK` bytes at a time.
struct Fold<'t> {
    dtype: DataType,
    redop: ReduceOp,
    /// Per rank its term, `None` for this rank (its term is `own`).
    terms: &'t [Option<&'t [u8]>],
    own: (Region, Range<usize>),
    dst: (Region, Range<usize>),
}

impl Fold<'_> {
    /// `mine`: scratch of at least `FOLD_BLOCK` bytes for the own term.
    fn run(&self, mem: &mut OpMemory<'_>, own_half: &mut [u8], mine: &mut [u8]) -> Result<()> {
        let (own, rown) = (self.own.0, self.own.1.clone());
        let (dst, rdst) = (self.dst.0, self.dst.1.clone());
        let len = rdst.len();
        if rown.len() != len || self.terms.iter().flatten().any(|t| t.len() != len) {
            return Err(Error::Internal(
                "reduce_from_peers operands differ in length".into(),
            ));
        }
        // The own term is copied aside first: it may be the very memory the result goes to
        // (in place), and the fold writes the result before it reaches the own term.
        let mut off = 0;
        while off < len {
            let n = FOLD_BLOCK.min(len - off);
            let own_bytes = match own.buf {
                Buf::Window => own_half.get(rown.start + off..rown.start + off + n),
                b => mem.read(b, rown.start + off..rown.start + off + n).ok(),
            }
            .ok_or_else(|| Error::Internal("reduce_from_peers own term out of range".into()))?;
            mine[..n].copy_from_slice(own_bytes);
            let out: &mut [u8] = match dst.buf {
                Buf::Window => own_half
                    .get_mut(rdst.start + off..rdst.start + off + n)
                    .ok_or_else(|| Error::Internal("reduce_from_peers out of range".into()))?,
                b => mem.write(b, rdst.start + off..rdst.start + off + n)?,
            };
            let mine = &mine[..n];
            let mut terms = self.terms.iter().map(|t| match *t {
                Some(bytes) => &bytes[off..off + n],
                None => mine,
            });
            if let (Some(a), Some(b)) = (terms.next(), terms.next()) {
                reduce::reduce_to(self.dtype, self.redop, out, a, b);
                for t in terms {
                    reduce::reduce_into(self.dtype, self.redop, out, t);
                }
            }
            off += n;
        }
        Ok(())
    }
}
