//! Executing one plan step, slice by slice, without blocking.
//!
//! A step moves its chunk through FIFO slots: slice `i` is bytes `[i*slot, (i+1)*slot)` of
//! the chunk. Each call does as many slices as the connections allow and reports either that
//! the step is done or which connection direction it waits on. Both sides compute the same
//! slice lengths, and every received message is checked against the expected length.

use super::buffers::{OpMemory, Pair};
use super::links::{Dir, Links};
use super::op::OpRun;
use crate::error::{Error, Result};
use crate::reduce;
use oxccl_algorithms::{Buf, Region, Step};
use oxccl_transports::{Direct, Message, RecvChannel, SendChannel};
use std::ops::Range;

/// Outcome of running a step as far as possible.
#[derive(Debug)]
pub(crate) enum Status {
    /// Every slice is done.
    Done,
    /// Waiting on this direction.
    Blocked(Dir),
}

/// Runs channel `ch` of `op` as far as it can; returns whether anything moved.
pub(crate) fn advance(op: &mut OpRun<'_>, ch: usize, links: &mut Links) -> Result<bool> {
    let mut moved = false;
    loop {
        let st = &op.chans[ch];
        if st.done {
            return Ok(moved);
        }
        if st.round >= st.nrounds {
            if let Some(d) = super::window::input_released(op, links)? {
                op.chans[ch].blocked = Some(d);
                return Ok(moved);
            }
            op.chans[ch].done = true;
            return Ok(true);
        }
        let (step, round, index) = (op.plan.channels[ch][st.step], st.round, st.step);
        if op.plan.load_store && index == 0 {
            if let Some(d) = super::window::begin_round(op, round, links)? {
                op.chans[ch].blocked = Some(d);
                return Ok(moved);
            }
            super::window::publish_input(op, round, links)?;
        }
        let status = run_step(op, ch, round, step, links, &mut moved).map_err(|e| match e {
            Error::Transport {
                rank, peer, source, ..
            } => Error::Transport {
                rank,
                peer,
                op: op.at(ch),
                source,
            },
            e => e,
        })?;
        match status {
            Status::Done => {
                moved = true;
                let st = &mut op.chans[ch];
                st.a = 0;
                st.b = 0;
                st.blocked = None;
                st.step += 1;
                if st.step == op.plan.channels[ch].len() {
                    st.step = 0;
                    st.round += 1;
                    if op.plan.load_store {
                        super::window::end_round(op, round, links)?;
                    }
                }
            }
            Status::Blocked(d) => {
                op.chans[ch].blocked = Some(d);
                return Ok(moved);
            }
        }
    }
}

/// A transport error of `op` with `peer`, as this rank reports it.
pub(super) fn tr(rank: u32, peer: u32, op: &OpRun<'_>, e: oxccl_transports::Error) -> Error {
    Error::Transport {
        rank,
        peer,
        op: op.label(),
        source: e,
    }
}

/// Slice `i` of byte range `r`, or `None` past the end.
pub(super) fn slice(r: &Range<usize>, i: usize, slot: usize) -> Option<Range<usize>> {
    let start = r.start + i * slot;
    (start < r.end).then(|| start..r.end.min(start + slot))
}

/// The oldest message from a receiver, asking the transport to move bytes if none is there.
pub(super) fn peek(r: &mut dyn RecvChannel) -> oxccl_transports::Result<Option<Message<'_>>> {
    if r.try_peek()?.is_none() {
        r.progress()?;
    }
    r.try_peek()
}

/// A free slot of a sender, asking the transport to move bytes if none is free.
fn acquire(s: &mut dyn SendChannel) -> oxccl_transports::Result<Option<&mut [u8]>> {
    if s.try_acquire()?.is_none() {
        s.progress()?;
    }
    s.try_acquire()
}

/// Checks that a message belongs to `op` (its tag) and has the expected length.
pub(super) fn check_msg(
    rank: u32,
    op: &OpRun<'_>,
    from: u32,
    msg: &Message<'_>,
    want: usize,
) -> Result<()> {
    if msg.tag != op.tag {
        return Err(tr(
            rank,
            from,
            op,
            oxccl_transports::Error::Protocol {
                peer: format!("rank {from}"),
                detail: format!(
                    "received a message of {} while running {}: the ranks issued different \
                     operations (order, count or peer)",
                    crate::comm::describe_tag(msg.tag),
                    crate::comm::describe_tag(op.tag)
                ),
            },
        ));
    }
    if msg.data.len() != want {
        return Err(protocol(rank, from, op, msg.data.len(), want));
    }
    Ok(())
}

fn run_step(
    op: &mut OpRun<'_>,
    ch: usize,
    round: usize,
    step: Step,
    links: &mut Links,
    moved: &mut bool,
) -> Result<Status> {
    let layout = op.layout;
    let range = |r: Region| layout.bytes(r, ch, round);
    let window_copy =
        matches!(step, Step::Copy { src, dst } if src.buf == Buf::Window || dst.buf == Buf::Window);
    if step.is_one_sided() || window_copy {
        let status = super::window::run_step(op, ch, round, step, links)?;
        *moved |= matches!(status, Status::Done);
        return Ok(status);
    }
    match step {
        Step::Copy { src, dst } => {
            let (rs, rd) = (range(src), range(dst));
            if let Pair::Two(s, d) = op.mem.pair((src.buf, rs), (dst.buf, rd))? {
                d.copy_from_slice(s);
            }
            Ok(Status::Done)
        }
        Step::Reduce { src, dst } => {
            let (rs, rd) = (range(src), range(dst));
            let (dtype, redop) = (op.spec.dtype, op.spec.redop);
            match op.mem.pair((src.buf, rs), (dst.buf, rd))? {
                Pair::Two(s, d) => reduce::reduce_into(dtype, redop, d, s),
                Pair::Same(_) => {
                    return Err(Error::Internal(format!(
                        "reduce step {step} names the same memory twice"
                    )))
                }
            }
            Ok(Status::Done)
        }
        Step::Send { to, src } => send_half(op, ch, links, to, (src.buf, range(src)), true, moved),
        Step::Recv { from, dst } => recv_half(
            op,
            ch,
            links,
            from,
            range(dst),
            Counter::A,
            moved,
            Some(dst.buf),
            store(dst.buf),
        ),
        Step::RecvReduce { from, src, dst } => {
            let (rs, rd) = (range(src), range(dst));
            let (dtype, redop) = (op.spec.dtype, op.spec.redop);
            recv_half(
                op,
                ch,
                links,
                from,
                rd.clone(),
                Counter::A,
                moved,
                None,
                |mem, sl, msg| {
                    let off = sl.start - rd.start;
                    let ss = rs.start + off..rs.start + off + sl.len();
                    match mem.pair((src.buf, ss), (dst.buf, sl))? {
                        Pair::Same(d) => reduce::reduce_into(dtype, redop, d, msg),
                        Pair::Two(s, d) => reduce::reduce_to(dtype, redop, d, s, msg),
                    }
                    Ok(())
                },
            )
        }
        Step::RecvReduceSend { from, to, src } => {
            fused(op, ch, round, links, from, to, Fused::Reduce(src), moved)
        }
        Step::RecvReduceCopySend { from, to, src, dst } => {
            if links.direct_sender(to, ch)?.is_some() {
                let kind = super::direct::Fill::Reduce(src);
                return super::direct::fused(op, ch, round, links, from, to, kind, dst, moved);
            }
            let kind = Fused::ReduceCopy(src, dst);
            fused(op, ch, round, links, from, to, kind, moved)
        }
        Step::RecvCopySend { from, to, dst } => {
            if links.direct_sender(to, ch)?.is_some() {
                let kind = super::direct::Fill::Copy;
                return super::direct::fused(op, ch, round, links, from, to, kind, dst, moved);
            }
            fused(op, ch, round, links, from, to, Fused::Copy(dst), moved)
        }
        Step::SendRecv { to, src, from, dst } => {
            // The halves progress independently; the receive half counts slices in `b`.
            // The send half leaves straight from `src` only when the receive half cannot
            // overwrite bytes it has not sent yet.
            let (rs, rd) = (range(src), range(dst));
            let direct = !op
                .mem
                .overlaps((src.buf, rs.clone()), (dst.buf, rd.clone()))?;
            let sent = send_half(op, ch, links, to, (src.buf, rs), direct, moved)?;
            let received = recv_half(
                op,
                ch,
                links,
                from,
                rd,
                Counter::B,
                moved,
                Some(dst.buf),
                store(dst.buf),
            )?;
            Ok(match (sent, received) {
                (Status::Done, r) => r,
                (s, _) => s,
            })
        }
        Step::Post { .. } | Step::ReduceFromPeers { .. } | Step::CopyFromPeer { .. } => Err(
            Error::Internal(format!("{step} reached the connection engine")),
        ),
    }
}

/// A receive sink that stores each message into `buf` at its byte range.
fn store(buf: Buf) -> impl FnMut(&mut OpMemory<'_>, Range<usize>, &[u8]) -> Result<()> {
    move |mem, sl, msg| {
        mem.write(buf, sl)?.copy_from_slice(msg);
        Ok(())
    }
}

/// Which slice counter of the channel a half uses.
#[derive(Clone, Copy)]
enum Counter {
    A,
    B,
}

/// Receives byte range `rd` from `from` slice by slice, continuing at the slice counter
/// `ctr`; `apply` consumes each message with the byte range it covers. With `direct`, a
/// message the transport can deliver straight into that range of `direct` lands there
/// instead (`apply` must then be a plain store into it).
#[allow(clippy::too_many_arguments)]
fn recv_half(
    op: &mut OpRun<'_>,
    ch: usize,
    links: &mut Links,
    from: u32,
    rd: Range<usize>,
    ctr: Counter,
    moved: &mut bool,
    direct: Option<Buf>,
    mut apply: impl FnMut(&mut OpMemory<'_>, Range<usize>, &[u8]) -> Result<()>,
) -> Result<Status> {
    let (slot, rank) = (links.slot_size, links.rank);
    loop {
        let done = match ctr {
            Counter::A => op.chans[ch].a,
            Counter::B => op.chans[ch].b,
        };
        let Some(sl) = slice(&rd, done, slot) else {
            return Ok(Status::Done);
        };
        let landed = match direct {
            Some(buf) => super::direct::recv_into(op, ch, links, from, (buf, sl.clone()))?,
            None => Direct::Slot,
        };
        match landed {
            Direct::Done => {
                match ctr {
                    Counter::A => op.chans[ch].a += 1,
                    Counter::B => op.chans[ch].b += 1,
                }
                *moved = true;
                continue;
            }
            Direct::Moved | Direct::Waiting => {
                *moved |= landed == Direct::Moved;
                return Ok(Status::Blocked(Dir::From(from)));
            }
            Direct::Slot => {}
        }
        let r = links.receiver(from, ch)?;
        let Some(msg) = peek(r).map_err(|e| tr(rank, from, op, e))? else {
            return Ok(Status::Blocked(Dir::From(from)));
        };
        check_msg(rank, op, from, &msg, sl.len())?;
        apply(&mut op.mem, sl, msg.data)?;
        links
            .receiver(from, ch)?
            .release()
            .map_err(|e| tr(rank, from, op, e))?;
        match ctr {
            Counter::A => op.chans[ch].a += 1,
            Counter::B => op.chans[ch].b += 1,
        }
        *moved = true;
    }
}

/// Sends byte range `rs` of `buf` to `to`, continuing at slice `chans[ch].a`; with
/// `direct`, straight from `buf` where the connection allows it.
#[allow(clippy::too_many_arguments)]
fn send_half(
    op: &mut OpRun<'_>,
    ch: usize,
    links: &mut Links,
    to: u32,
    (buf, rs): (Buf, Range<usize>),
    direct: bool,
    moved: &mut bool,
) -> Result<Status> {
    let slot = links.slot_size;
    let rank = links.rank;
    while let Some(sl) = slice(&rs, op.chans[ch].a, slot) {
        // `send_from` answers `Slot` where the connection has no direct path.
        if direct {
            match super::direct::send_from(op, ch, links, to, (buf, sl.clone()))? {
                Direct::Done => {
                    op.chans[ch].a += 1;
                    *moved = true;
                    continue;
                }
                Direct::Slot => {}
                d => {
                    *moved |= d == Direct::Moved;
                    return Ok(Status::Blocked(Dir::To(to)));
                }
            }
        }
        let s = links.sender(to, ch)?;
        let data = op.mem.read(buf, sl.clone())?;
        let Some(dst) = acquire(s).map_err(|e| tr(rank, to, op, e))? else {
            return Ok(Status::Blocked(Dir::To(to)));
        };
        dst[..data.len()].copy_from_slice(data);
        let s = links.sender(to, ch)?;
        s.commit(sl.len(), op.tag)
            .map_err(|e| tr(rank, to, op, e))?;
        s.progress().map_err(|e| tr(rank, to, op, e))?;
        op.chans[ch].a += 1;
        *moved = true;
    }
    Ok(Status::Done)
}

/// What the three receive-then-send steps do with the incoming slice before sending it.
enum Fused {
    Reduce(Region),
    ReduceCopy(Region, Region),
    Copy(Region),
}

#[allow(clippy::too_many_arguments)]
fn fused(
    op: &mut OpRun<'_>,
    ch: usize,
    round: usize,
    links: &mut Links,
    from: u32,
    to: u32,
    kind: Fused,
    moved: &mut bool,
) -> Result<Status> {
    let slot = links.slot_size;
    let rank = links.rank;
    let (dtype, redop) = (op.spec.dtype, op.spec.redop);
    let anchor = match kind {
        Fused::Reduce(r) | Fused::ReduceCopy(r, _) | Fused::Copy(r) => r,
    };
    let base = op.layout.bytes(anchor, ch, round);
    let at = |r: Region, sl: &Range<usize>| {
        let rr = op.layout.bytes(r, ch, round);
        let off = sl.start - base.start;
        rr.start + off..rr.start + off + sl.len()
    };
    while let Some(sl) = slice(&base, op.chans[ch].a, slot) {
        let (r, s) = links.pair(from, to, ch)?;
        let Some(msg) = peek(r).map_err(|e| tr(rank, from, op, e))? else {
            return Ok(Status::Blocked(Dir::From(from)));
        };
        let Some(out) = acquire(s).map_err(|e| tr(rank, to, op, e))? else {
            return Ok(Status::Blocked(Dir::To(to)));
        };
        let n = sl.len();
        check_msg(rank, op, from, &msg, n)?;
        let msg = msg.data;
        let out = &mut out[..n];
        match kind {
            Fused::Reduce(src) => {
                let s = op.mem.read(src.buf, at(src, &sl))?;
                reduce::reduce_to(dtype, redop, out, s, msg);
            }
            Fused::ReduceCopy(src, dst) => {
                match op
                    .mem
                    .pair((src.buf, at(src, &sl)), (dst.buf, at(dst, &sl)))?
                {
                    Pair::Same(d) => {
                        reduce::reduce_into(dtype, redop, d, msg);
                        out.copy_from_slice(d);
                    }
                    Pair::Two(s, d) => reduce::reduce_to_both(dtype, redop, d, out, s, msg),
                }
            }
            Fused::Copy(dst) => {
                op.mem.write(dst.buf, at(dst, &sl))?.copy_from_slice(msg);
                out.copy_from_slice(msg);
            }
        }
        let (r, s) = links.pair(from, to, ch)?;
        s.commit(n, op.tag).map_err(|e| tr(rank, to, op, e))?;
        r.release().map_err(|e| tr(rank, from, op, e))?;
        s.progress().map_err(|e| tr(rank, to, op, e))?;
        op.chans[ch].a += 1;
        *moved = true;
    }
    Ok(Status::Done)
}

fn protocol(rank: u32, from: u32, op: &OpRun<'_>, got: usize, want: usize) -> Error {
    tr(
        rank,
        from,
        op,
        oxccl_transports::Error::Protocol {
            peer: format!("rank {from}"),
            detail: format!(
                "expected a {want}-byte message, got {got} bytes: the ranks disagree on the \
                 operation (different collective order, count, datatype, root or peer?)"
            ),
        },
    )
}
