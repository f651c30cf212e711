//! Zero-copy step halves: data that leaves straight from the op's memory and data that
//! lands straight in it, on connections whose transport can do that (TCP).
//!
//! Through slots, a byte sent over TCP is copied into a send slot, then by the kernel; a
//! byte received is copied by the kernel into a receive slot, then out of it. Here the
//! kernel copies from and into the op's buffers themselves. A direct send is finished
//! before its slice counts as done, so no later slice or step can change bytes still
//! waiting to leave, and the transport holds no reference to the op's memory between calls.

use super::links::{Dir, Links};
use super::op::OpRun;
use super::step::{check_msg, peek, slice, tr, Status};
use crate::error::Result;
use crate::reduce;
use oxccl_algorithms::{Buf, Region};
use oxccl_transports::Direct;
use std::ops::Range;

/// Sends `sl` of `buf` to `to` as one message straight from the op's memory.
pub(super) fn send_from(
    op: &mut OpRun<'_>,
    ch: usize,
    links: &mut Links,
    to: u32,
    (buf, sl): (Buf, Range<usize>),
) -> Result<Direct> {
    let rank = links.rank;
    let Some(s) = links.direct_sender(to, ch)? else {
        return Ok(Direct::Slot);
    };
    let data = op.mem.read(buf, sl)?;
    s.send_direct(data, op.tag).map_err(|e| tr(rank, to, op, e))
}

/// Receives the next message from `from` straight into `sl` of `buf`; `Slot` when the
/// connection cannot, or the message is already in a slot (or is not the one expected).
pub(super) fn recv_into(
    op: &mut OpRun<'_>,
    ch: usize,
    links: &mut Links,
    from: u32,
    (buf, sl): (Buf, Range<usize>),
) -> Result<Direct> {
    if !links.direct_from(from, ch)? {
        return Ok(Direct::Slot);
    }
    let rank = links.rank;
    let tag = op.tag;
    let dst = op.mem.write(buf, sl)?;
    let landed = links.receiver(from, ch)?.recv_direct(dst, tag);
    landed.map_err(|e| tr(rank, from, op, e))
}

/// How a fused step fills its destination slice before forwarding it.
#[derive(Clone, Copy)]
pub(super) enum Fill {
    /// The received slice reduced with this local region (`RecvReduceCopySend`).
    Reduce(Region),
    /// The received slice as is (`RecvCopySend`).
    Copy,
}

/// A receive-then-forward step whose forwarded bytes are its destination's: each slice is
/// filled in `dst` (counter `b` says it is), then sent from there (counter `a`).
#[allow(clippy::too_many_arguments)]
pub(super) fn fused(
    op: &mut OpRun<'_>,
    ch: usize,
    round: usize,
    links: &mut Links,
    from: u32,
    to: u32,
    fill: Fill,
    dst: Region,
    moved: &mut bool,
) -> Result<Status> {
    let (slot, rank) = (links.slot_size, links.rank);
    let (dtype, redop) = (op.spec.dtype, op.spec.redop);
    let layout = op.layout;
    let base = layout.bytes(dst, ch, round);
    let src_at = |src: Region, sl: &Range<usize>| {
        let rr = layout.bytes(src, ch, round);
        let off = sl.start - base.start;
        rr.start + off..rr.start + off + sl.len()
    };
    while let Some(sl) = slice(&base, op.chans[ch].a, slot) {
        if op.chans[ch].b == op.chans[ch].a {
            let mut landed = Direct::Slot;
            if let Fill::Copy = fill {
                landed = recv_into(op, ch, links, from, (dst.buf, sl.clone()))?;
            }
            match landed {
                Direct::Done => {}
                Direct::Moved | Direct::Waiting => {
                    *moved |= landed == Direct::Moved;
                    return Ok(Status::Blocked(Dir::From(from)));
                }
                Direct::Slot => {
                    let ss = match fill {
                        Fill::Reduce(src) => Some((src.buf, src_at(src, &sl))),
                        Fill::Copy => None,
                    };
                    let r = links.receiver(from, ch)?;
                    let Some(msg) = peek(r).map_err(|e| tr(rank, from, op, e))? else {
                        return Ok(Status::Blocked(Dir::From(from)));
                    };
                    check_msg(rank, op, from, &msg, sl.len())?;
                    let d = (dst.buf, sl.clone());
                    match ss {
                        Some(s) => match op.mem.pair(s, d)? {
                            super::buffers::Pair::Same(d) => {
                                reduce::reduce_into(dtype, redop, d, msg.data)
                            }
                            super::buffers::Pair::Two(s, d) => {
                                reduce::reduce_to(dtype, redop, d, s, msg.data)
                            }
                        },
                        None => op.mem.write(d.0, d.1)?.copy_from_slice(msg.data),
                    }
                    links
                        .receiver(from, ch)?
                        .release()
                        .map_err(|e| tr(rank, from, op, e))?;
                }
            }
            op.chans[ch].b += 1;
            *moved = true;
        }
        match send_from(op, ch, links, to, (dst.buf, sl))? {
            Direct::Done => {
                op.chans[ch].a += 1;
                *moved = true;
            }
            sent => {
                *moved |= sent == Direct::Moved;
                return Ok(Status::Blocked(Dir::To(to)));
            }
        }
    }
    Ok(Status::Done)
}
