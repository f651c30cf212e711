//! One NCCL operation: its arguments as recorded, NCCL's in-place rules, the checks done
//! when it is issued, and how it becomes an op of an oxccl [`Group`].
//!
//! Buffers are host or GPU memory ([`OpArgs::check`] tells; GPU ops go through
//! [`crate::staged`]). NCCL's in-place rules decide between oxccl's `*_in_place` calls and
//! the two-buffer ones:
//! - all-reduce, broadcast, reduce, all-to-all: `sendbuff == recvbuff`;
//! - all-gather: `sendbuff == recvbuff + rank*count*size`;
//! - reduce-scatter: `recvbuff == sendbuff + rank*recvcount*size`;
//! - gather (root): `sendbuff == recvbuff + root*count*size`; scatter (root):
//!   `recvbuff == sendbuff + root*count*size`.
//!
//! Buffers that overlap any other way are an argument error (Rust may not alias them). A
//! PreMulSum op scales a private copy of its input by the scalar and sums from the copy.

use crate::error::{CResult, Failure};
use crate::types::RedOp;
use oxccl::{DataType, Element, Group};

/// Which NCCL call an op came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ncclAllReduce`.
    AllReduce,
    /// `ncclBroadcast`, `ncclBcast`.
    Broadcast,
    /// `ncclReduce`.
    Reduce,
    /// `ncclAllGather` (count: per rank).
    AllGather,
    /// `ncclReduceScatter` (count: per rank).
    ReduceScatter,
    /// `ncclAlltoAll` (count: per peer).
    AllToAll,
    /// `ncclGather` (count: per rank).
    Gather,
    /// `ncclScatter` (count: per rank).
    Scatter,
    /// `ncclSend` (root: the peer).
    Send,
    /// `ncclRecv` (root: the peer).
    Recv,
}

/// One op's arguments, pointers as addresses (so ops can be recorded and moved to the
/// thread that runs their communicator's group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpArgs {
    /// The call.
    pub kind: Kind,
    /// `sendbuff`.
    pub send: usize,
    /// `recvbuff`.
    pub recv: usize,
    /// `count` as NCCL defines it for the call.
    pub count: usize,
    /// Element type.
    pub dtype: DataType,
    /// Reduction (ignored by the non-reducing calls).
    pub op: RedOp,
    /// Root, or peer of send/receive.
    pub root: u32,
    /// The `cudaStream_t` the op is ordered on (0: the legacy default stream); used only
    /// when a buffer is GPU memory.
    pub stream: usize,
    /// Some buffer is GPU memory (set by [`OpArgs::check`]'s caller).
    pub on_device: bool,
}

/// Where an op's data is, in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bufs {
    /// One buffer holding input and output (oxccl's `*_in_place` layout).
    InPlace {
        /// Address.
        buf: usize,
        /// Elements.
        len: usize,
    },
    /// Separate input and output (a length of 0: not used on this rank).
    Split {
        /// Input address.
        send: usize,
        /// Input elements.
        send_len: usize,
        /// Output address.
        recv: usize,
        /// Output elements.
        recv_len: usize,
    },
}

impl OpArgs {
    fn total(&self, nranks: u32) -> CResult<usize> {
        let total = self
            .count
            .checked_mul(nranks as usize)
            .filter(|t| {
                t.checked_mul(self.dtype.size())
                    .is_some_and(|b| b <= isize::MAX as usize)
            })
            .ok_or_else(|| Failure::invalid(format!("count {} overflows", self.count)))?;
        Ok(total)
    }

    /// The op's buffers on `rank` of `nranks` by NCCL's in-place rules, with the input
    /// at `input` instead of `sendbuff` when given (PreMulSum's scaled copy).
    pub fn bufs(&self, rank: u32, nranks: u32, input: Option<usize>) -> CResult<Bufs> {
        let (c, total, size) = (self.count, self.total(nranks)?, self.dtype.size());
        let (s, r) = (self.send, self.recv);
        let at = |base: usize, block: u32| base.wrapping_add(block as usize * c * size);
        let is_root = rank == self.root;
        let split = |send, send_len, recv, recv_len| Bufs::Split {
            send,
            send_len,
            recv,
            recv_len,
        };
        let in_place = |buf, len| Bufs::InPlace { buf, len };
        if let Some(input) = input {
            // PreMulSum: the reducing calls, from the scaled copy.
            return Ok(match self.kind {
                Kind::AllReduce => split(input, c, r, c),
                Kind::Reduce if is_root => split(input, c, r, c),
                Kind::Reduce => split(input, c, 0, 0),
                Kind::ReduceScatter => split(input, total, r, c),
                _ => return Err(Failure::invalid("PreMulSum applies to reductions only")),
            });
        }
        Ok(match self.kind {
            Kind::AllReduce | Kind::Broadcast | Kind::Reduce if s == r => in_place(r, c),
            Kind::AllReduce => split(s, c, r, c),
            Kind::Broadcast if is_root => split(s, c, r, c),
            Kind::Broadcast => split(0, 0, r, c),
            Kind::Reduce if is_root => split(s, c, r, c),
            Kind::Reduce => split(s, c, 0, 0),
            Kind::AllGather if s == at(r, rank) => in_place(r, total),
            Kind::AllGather => split(s, c, r, total),
            Kind::ReduceScatter if r == at(s, rank) => in_place(s, total),
            Kind::ReduceScatter => split(s, total, r, c),
            Kind::AllToAll if s == r => in_place(r, total),
            Kind::AllToAll => split(s, total, r, total),
            Kind::Gather if is_root && s == at(r, rank) => in_place(r, total),
            Kind::Gather if is_root => split(s, c, r, total),
            Kind::Gather => split(s, c, 0, 0),
            Kind::Scatter if is_root && r == at(s, rank) => in_place(s, total),
            Kind::Scatter if is_root => split(s, total, r, c),
            Kind::Scatter => split(0, 0, r, c),
            Kind::Send => split(s, c, 0, 0),
            Kind::Recv => split(0, 0, r, c),
        })
    }

    /// The checks NCCL makes when an op is issued: root/peer in range, buffers non-null and
    /// aligned where used, no partial overlap, counts that fit. Returns whether a buffer
    /// the op uses is GPU memory.
    pub fn check(&self, rank: u32, nranks: u32) -> CResult<bool> {
        if self.root >= nranks {
            let what = if matches!(self.kind, Kind::Send | Kind::Recv) {
                "peer"
            } else {
                "root"
            };
            return Err(Failure::invalid(format!(
                "{what} {} is out of range for a communicator of {nranks} ranks",
                self.root
            )));
        }
        let size = self.dtype.size();
        let mut on_device = false;
        let mut region = |name: &str, ptr: usize, len: usize| -> CResult<(usize, usize)> {
            if len == 0 {
                return Ok((ptr, ptr));
            }
            if ptr == 0 {
                return Err(Failure::invalid(format!("{name} is NULL")));
            }
            if ptr % size != 0 {
                return Err(Failure::invalid(format!(
                    "{name} {ptr:#x} is not aligned to its {size}-byte {} elements",
                    self.dtype
                )));
            }
            on_device |= crate::device_ptr::is_device_memory(ptr);
            let end = ptr
                .checked_add(len * size)
                .ok_or_else(|| Failure::invalid(format!("{name} range wraps around")))?;
            Ok((ptr, end))
        };
        match self.bufs(rank, nranks, None)? {
            Bufs::InPlace { buf, len } => {
                region("recvbuff", buf, len)?;
            }
            Bufs::Split {
                send,
                send_len,
                recv,
                recv_len,
            } => {
                let a = region("sendbuff", send, send_len)?;
                let b = region("recvbuff", recv, recv_len)?;
                if a.0 < a.1 && b.0 < b.1 && a.0 < b.1 && b.0 < a.1 {
                    return Err(Failure::invalid(
                        "sendbuff and recvbuff overlap but are not in place as NCCL defines it",
                    ));
                }
            }
        }
        Ok(on_device)
    }

    /// The input region (address, bytes) that a PreMulSum copies.
    pub fn premul_input(&self, nranks: u32) -> CResult<(usize, usize)> {
        let elems = match self.kind {
            Kind::ReduceScatter => self.total(nranks)?,
            _ => self.count,
        };
        Ok((self.send, elems * self.dtype.size()))
    }
}

/// A slice over C memory; empty when `len` is 0 (whatever the pointer).
///
/// # Safety
/// Unless `len` is 0, `ptr` must point to `len` initialised, aligned `T`s that stay valid
/// and are not written through another reference for `'a`.
unsafe fn slice<'a, T>(ptr: usize, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(ptr as *const T, len) }
}

/// A mutable slice over C memory; empty when `len` is 0.
///
/// # Safety
/// As [`slice`], and no other reference to the memory may exist for `'a`.
unsafe fn slice_mut<'a, T>(ptr: usize, len: usize) -> &'a mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(ptr as *mut T, len) }
}

/// Adds the op to `g` with the buffers `bufs` (from [`OpArgs::bufs`]).
///
/// # Safety
/// The buffers must be valid host memory of the sizes `bufs` gives for as long as the
/// group runs, checked by [`OpArgs::check`] (non-null, aligned, not partially overlapping),
/// and not used by another op of the group in a conflicting way (NCCL's rule too).
pub unsafe fn add<'a>(g: &mut Group<'a>, op: &OpArgs, bufs: Bufs) -> CResult<()> {
    crate::with_element!(op.dtype, T => {
        // SAFETY: forwarded from this function's contract.
        unsafe { add_typed::<T>(g, op, bufs) }
    })
}

/// [`add`] with the element type known.
///
/// # Safety
/// As [`add`]; `T` is the op's datatype.
unsafe fn add_typed<'a, T: Element>(g: &mut Group<'a>, op: &OpArgs, bufs: Bufs) -> CResult<()> {
    let red = op.op.reduce_op();
    let root = op.root;
    let r = match bufs {
        Bufs::InPlace { buf, len } => {
            // SAFETY: `buf` holds `len` elements (the caller's contract); the op owns them.
            let b = unsafe { slice_mut::<T>(buf, len) };
            match op.kind {
                Kind::AllReduce => g.all_reduce_in_place(b, red),
                Kind::Broadcast => g.broadcast_in_place(b, root),
                Kind::Reduce => g.reduce_in_place(b, red, root),
                Kind::AllGather => g.all_gather_in_place(b),
                Kind::ReduceScatter => g.reduce_scatter_in_place(b, red),
                Kind::AllToAll => g.all_to_all_in_place(b),
                Kind::Gather => g.gather_in_place(b, root),
                Kind::Scatter => g.scatter_in_place(b, root),
                Kind::Send | Kind::Recv => {
                    return Err(Failure::new(crate::ffi::INTERNAL_ERROR, "in-place send"))
                }
            }
        }
        Bufs::Split {
            send,
            send_len,
            recv,
            recv_len,
        } => {
            // SAFETY: the two regions are valid and do not overlap (the caller's contract).
            let (s, d) = unsafe { (slice::<T>(send, send_len), slice_mut::<T>(recv, recv_len)) };
            match op.kind {
                Kind::AllReduce => g.all_reduce(s, d, red),
                Kind::Broadcast => g.broadcast(s, d, root),
                Kind::Reduce => g.reduce(s, d, red, root),
                Kind::AllGather => g.all_gather(s, d),
                Kind::ReduceScatter => g.reduce_scatter(s, d, red),
                Kind::AllToAll => g.all_to_all(s, d),
                Kind::Gather => g.gather(s, d, root),
                Kind::Scatter => g.scatter(s, d, root),
                Kind::Send => g.send(s, root),
                Kind::Recv => g.recv(d, root),
            }
        }
    };
    r.map_err(Failure::from)
}

#[cfg(test)]
impl OpArgs {
    /// A float32 sum on host buffers (stream 0), for tests.
    pub(crate) fn example(kind: Kind, send: usize, recv: usize, count: usize, root: u32) -> Self {
        OpArgs {
            kind,
            send,
            recv,
            count,
            dtype: DataType::Float32,
            op: RedOp::Builtin(oxccl::ReduceOp::Sum),
            root,
            stream: 0,
            on_device: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, send: usize, recv: usize, count: usize, root: u32) -> OpArgs {
        OpArgs::example(kind, send, recv, count, root)
    }

    #[test]
    fn nccl_in_place_rules() {
        // all-gather on rank 2 of 4, 10 floats each: in place at recvbuff + 80 bytes.
        let b = op(Kind::AllGather, 0x1000 + 80, 0x1000, 10, 0)
            .bufs(2, 4, None)
            .unwrap();
        assert_eq!(
            b,
            Bufs::InPlace {
                buf: 0x1000,
                len: 40
            }
        );
        let b = op(Kind::ReduceScatter, 0x1000, 0x1000 + 40, 10, 0)
            .bufs(1, 4, None)
            .unwrap();
        assert_eq!(
            b,
            Bufs::InPlace {
                buf: 0x1000,
                len: 40
            }
        );
        let b = op(Kind::AllReduce, 0x1000, 0x1000, 10, 0)
            .bufs(0, 4, None)
            .unwrap();
        assert_eq!(
            b,
            Bufs::InPlace {
                buf: 0x1000,
                len: 10
            }
        );
        // Gather: in place on the root only; others send only.
        let g = op(Kind::Gather, 0x1000 + 40, 0x1000, 10, 1);
        assert_eq!(
            g.bufs(1, 4, None).unwrap(),
            Bufs::InPlace {
                buf: 0x1000,
                len: 40
            }
        );
        assert!(matches!(
            g.bufs(0, 4, None).unwrap(),
            Bufs::Split { recv_len: 0, .. }
        ));
        // Broadcast from another rank ignores sendbuff.
        let b = op(Kind::Broadcast, 0, 0x2000, 10, 1)
            .bufs(0, 2, None)
            .unwrap();
        assert!(matches!(
            b,
            Bufs::Split {
                send_len: 0,
                recv_len: 10,
                ..
            }
        ));
    }

    #[test]
    fn argument_checks() {
        assert!(op(Kind::AllReduce, 0, 0x1000, 10, 0).check(0, 2).is_err());
        assert!(op(Kind::AllReduce, 0x1001, 0x2000, 10, 0)
            .check(0, 2)
            .is_err());
        assert!(op(Kind::AllReduce, 0x1000, 0x1004, 10, 0)
            .check(0, 2)
            .is_err());
        assert!(op(Kind::AllReduce, 0, 0, 0, 0).check(0, 2).is_ok());
        assert!(op(Kind::Send, 0x1000, 0, 1, 2).check(0, 2).is_err());
        assert!(op(Kind::Reduce, 0x1000, 0, 4, 1).check(0, 2).is_ok());
        assert!(op(Kind::AllGather, 0x1000, 0x2000, usize::MAX / 2, 0)
            .check(0, 4)
            .is_err());
    }
}
