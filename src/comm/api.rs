//! The typed operations, on [`Group`] (to combine) and on [`Communicator`] (one at a time).
//!
//! Argument rules follow NCCL. Lengths are in elements. In-place variants take one buffer:
//! - all-gather: `buf` holds `size()` blocks; this rank's input is already in block `rank`;
//! - reduce-scatter: `buf` holds `size()` blocks of input; the result lands in block `rank`;
//! - all-reduce, broadcast, reduce: the result replaces the input;
//! - gather: on every rank `buf` holds `size()` blocks and this rank's input is already in
//!   block `rank`; the root's buffer fills up, the others' stay unchanged;
//! - scatter: on every rank `buf` holds `size()` blocks; the root's are the input, and each
//!   rank's result lands in its block `rank` (nccl-tests' in-place layout for both).

use super::group::Group;
use super::Communicator;
use crate::engine::UserBufs;
use crate::error::{Error, Result};
use crate::types::{Element, ReduceOp};
use oxccl_algorithms::Collective;

fn bytes<T: Element>(s: &[T]) -> &[u8] {
    bytemuck::cast_slice(s)
}

fn bytes_mut<T: Element>(s: &mut [T]) -> &mut [u8] {
    bytemuck::cast_slice_mut(s)
}

/// Separate input and output buffers.
fn split<'a, T: Element>(input: &'a [T], output: &'a mut [T]) -> UserBufs<'a> {
    UserBufs::Split {
        input: bytes(input),
        output: bytes_mut(output),
    }
}

/// One buffer holding input and output, at the given byte offsets.
fn in_place<T: Element>(buf: &mut [T], input_at: usize, output_at: usize) -> UserBufs<'_> {
    UserBufs::InPlace {
        buf: bytes_mut(buf),
        input_at,
        output_at,
    }
}

/// Checks that the `which` buffer of `len` elements holds `n` blocks of `count`.
fn holds_all_blocks(op: &'static str, which: &str, len: usize, count: usize, n: u32) -> Result<()> {
    if count.checked_mul(n as usize) != Some(len) {
        return Err(Error::invalid(
            op,
            format!("{which} buffer has {len} elements; it must hold {n} ranks × {count}"),
        ));
    }
    Ok(())
}

fn blocks(op: &'static str, what: &str, len: usize, n: u32) -> Result<usize> {
    if len % n as usize != 0 {
        return Err(Error::invalid(
            op,
            format!("{what} has {len} elements, not a multiple of the {n} ranks"),
        ));
    }
    Ok(len / n as usize)
}

fn same_len(op: &'static str, send: usize, recv: usize) -> Result<()> {
    if send != recv {
        return Err(Error::invalid(
            op,
            format!("send buffer has {send} elements but receive buffer has {recv}"),
        ));
    }
    Ok(())
}

impl<'a> Group<'a> {
    fn n(&self) -> u32 {
        self.comm.nranks
    }

    fn check_rank(&self, op: &'static str, what: &str, r: u32) -> Result<()> {
        if r >= self.n() {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} {r} is out of range for a communicator of {} ranks",
                    self.n()
                ),
            ));
        }
        Ok(())
    }

    /// Adds an all-reduce: `recv = ⊕ over ranks of send`.
    pub fn all_reduce<T: Element>(
        &mut self,
        send: &'a [T],
        recv: &'a mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        same_len("all_reduce", send.len(), recv.len())?;
        let count = send.len();
        let bufs = split(send, recv);
        self.push(Collective::AllReduce, T::DATA_TYPE, op, count, bufs);
        Ok(())
    }

    /// Adds an in-place all-reduce.
    pub fn all_reduce_in_place<T: Element>(
        &mut self,
        buf: &'a mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        let count = buf.len();
        let bufs = in_place(buf, 0, 0);
        self.push(Collective::AllReduce, T::DATA_TYPE, op, count, bufs);
        Ok(())
    }

    /// Adds an all-gather: `recv` (`size() * send.len()`) gets every rank's `send` in rank order.
    pub fn all_gather<T: Element>(&mut self, send: &'a [T], recv: &'a mut [T]) -> Result<()> {
        let count = send.len();
        holds_all_blocks("all_gather", "receive", recv.len(), count, self.n())?;
        let bufs = split(send, recv);
        self.push(
            Collective::AllGather,
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }

    /// Adds an in-place all-gather; this rank's data is already in block `rank` of `buf`.
    pub fn all_gather_in_place<T: Element>(&mut self, buf: &'a mut [T]) -> Result<()> {
        let count = blocks("all_gather", "the buffer", buf.len(), self.n())?;
        let at = self.comm.rank as usize * count * T::DATA_TYPE.size();
        let bufs = in_place(buf, at, 0);
        self.push(
            Collective::AllGather,
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }

    /// Adds a reduce-scatter: `recv` gets block `rank` of the reduction of every `send`
    /// (`send` holds `size()` blocks of `recv.len()`).
    pub fn reduce_scatter<T: Element>(
        &mut self,
        send: &'a [T],
        recv: &'a mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        let count = recv.len();
        holds_all_blocks("reduce_scatter", "send", send.len(), count, self.n())?;
        let bufs = split(send, recv);
        self.push(Collective::ReduceScatter, T::DATA_TYPE, op, count, bufs);
        Ok(())
    }

    /// Adds an in-place reduce-scatter; the result lands in block `rank` of `buf`.
    pub fn reduce_scatter_in_place<T: Element>(
        &mut self,
        buf: &'a mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        let count = blocks("reduce_scatter", "the buffer", buf.len(), self.n())?;
        let at = self.comm.rank as usize * count * T::DATA_TYPE.size();
        let bufs = in_place(buf, 0, at);
        self.push(Collective::ReduceScatter, T::DATA_TYPE, op, count, bufs);
        Ok(())
    }

    /// Adds a broadcast of `root`'s `send` into every rank's `recv` (`send` is read on the
    /// root only; other ranks may pass an empty slice).
    pub fn broadcast<T: Element>(
        &mut self,
        send: &'a [T],
        recv: &'a mut [T],
        root: u32,
    ) -> Result<()> {
        self.check_rank("broadcast", "root", root)?;
        if self.comm.rank == root {
            same_len("broadcast", send.len(), recv.len())?;
        }
        let count = recv.len();
        let bufs = split(send, recv);
        self.push(
            Collective::Broadcast { root },
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }

    /// Adds an in-place broadcast (NCCL's `ncclBcast`).
    pub fn broadcast_in_place<T: Element>(&mut self, buf: &'a mut [T], root: u32) -> Result<()> {
        self.check_rank("broadcast", "root", root)?;
        let count = buf.len();
        let bufs = in_place(buf, 0, 0);
        self.push(
            Collective::Broadcast { root },
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }

    /// Adds a reduce onto `root`'s `recv` (written on the root only; other ranks may pass an
    /// empty slice).
    pub fn reduce<T: Element>(
        &mut self,
        send: &'a [T],
        recv: &'a mut [T],
        op: ReduceOp,
        root: u32,
    ) -> Result<()> {
        self.check_rank("reduce", "root", root)?;
        if self.comm.rank == root || !recv.is_empty() {
            same_len("reduce", send.len(), recv.len())?;
        }
        let count = send.len();
        let bufs = split(send, recv);
        self.push(Collective::Reduce { root }, T::DATA_TYPE, op, count, bufs);
        Ok(())
    }

    /// Adds an in-place reduce: the root's `buf` gets the result; others' stay unchanged.
    pub fn reduce_in_place<T: Element>(
        &mut self,
        buf: &'a mut [T],
        op: ReduceOp,
        root: u32,
    ) -> Result<()> {
        self.check_rank("reduce", "root", root)?;
        let count = buf.len();
        let bufs = in_place(buf, 0, 0);
        self.push(Collective::Reduce { root }, T::DATA_TYPE, op, count, bufs);
        Ok(())
    }

    /// Adds a gather onto `root`: block `j` of the root's `recv` (`size() * send.len()`
    /// elements) gets rank `j`'s `send`. `recv` is written on the root only; other ranks may
    /// pass an empty slice (or one of the root's length, left unchanged).
    pub fn gather<T: Element>(
        &mut self,
        send: &'a [T],
        recv: &'a mut [T],
        root: u32,
    ) -> Result<()> {
        self.check_rank("gather", "root", root)?;
        let count = send.len();
        if self.comm.rank == root || !recv.is_empty() {
            holds_all_blocks("gather", "receive", recv.len(), count, self.n())?;
        }
        let bufs = split(send, recv);
        self.push(
            Collective::Gather { root },
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }

    /// Adds an in-place gather onto `root`: on every rank `buf` holds `size()` blocks, with
    /// this rank's data already in block `rank`; the root's other blocks get the other ranks'
    /// data, and the other ranks' buffers stay unchanged.
    pub fn gather_in_place<T: Element>(&mut self, buf: &'a mut [T], root: u32) -> Result<()> {
        self.check_rank("gather", "root", root)?;
        let count = blocks("gather", "the buffer", buf.len(), self.n())?;
        let at = self.comm.rank as usize * count * T::DATA_TYPE.size();
        let bufs = in_place(buf, at, 0);
        self.push(
            Collective::Gather { root },
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }

    /// Adds a scatter from `root`: every rank's `recv` gets block `rank` of the root's `send`
    /// (`size() * recv.len()` elements). `send` is read on the root only; other ranks may
    /// pass an empty slice (or one of the root's length, not read).
    pub fn scatter<T: Element>(
        &mut self,
        send: &'a [T],
        recv: &'a mut [T],
        root: u32,
    ) -> Result<()> {
        self.check_rank("scatter", "root", root)?;
        let count = recv.len();
        if self.comm.rank == root || !send.is_empty() {
            holds_all_blocks("scatter", "send", send.len(), count, self.n())?;
        }
        let bufs = split(send, recv);
        self.push(
            Collective::Scatter { root },
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }

    /// Adds an in-place scatter from `root`: on every rank `buf` holds `size()` blocks; the
    /// root's are the input, and each rank gets its block `rank` of the root's data in its
    /// own block `rank` (already in place on the root); other blocks stay unchanged.
    pub fn scatter_in_place<T: Element>(&mut self, buf: &'a mut [T], root: u32) -> Result<()> {
        self.check_rank("scatter", "root", root)?;
        let count = blocks("scatter", "the buffer", buf.len(), self.n())?;
        let at = self.comm.rank as usize * count * T::DATA_TYPE.size();
        let bufs = in_place(buf, 0, at);
        self.push(
            Collective::Scatter { root },
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }

    /// Adds an all-to-all: block `j` of `send` goes to rank `j`, landing in its block `rank`.
    pub fn all_to_all<T: Element>(&mut self, send: &'a [T], recv: &'a mut [T]) -> Result<()> {
        same_len("all_to_all", send.len(), recv.len())?;
        let count = blocks("all_to_all", "the send buffer", send.len(), self.n())?;
        let bufs = split(send, recv);
        self.push(
            Collective::AllToAll,
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }

    /// Adds an in-place all-to-all (the input is staged in a private copy).
    pub fn all_to_all_in_place<T: Element>(&mut self, buf: &'a mut [T]) -> Result<()> {
        let count = blocks("all_to_all", "the buffer", buf.len(), self.n())?;
        self.push(
            Collective::AllToAll,
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            UserBufs::Staged(bytes_mut(buf)),
        );
        Ok(())
    }

    /// Adds a send of `buf` to `peer` (matched with the peer's receives from this rank in
    /// issue order; a receive must have the same length).
    pub fn send<T: Element>(&mut self, buf: &'a [T], peer: u32) -> Result<()> {
        self.check_rank("send", "peer", peer)?;
        if peer == self.comm.rank {
            self.self_sends.push(bytes(buf));
            return Ok(());
        }
        let bufs = split(buf, &mut []);
        self.push(
            Collective::Send { peer },
            T::DATA_TYPE,
            ReduceOp::Sum,
            buf.len(),
            bufs,
        );
        Ok(())
    }

    /// Adds a receive from `peer` into `buf`.
    pub fn recv<T: Element>(&mut self, buf: &'a mut [T], peer: u32) -> Result<()> {
        self.check_rank("recv", "peer", peer)?;
        if peer == self.comm.rank {
            self.self_recvs.push(bytes_mut(buf));
            return Ok(());
        }
        let count = buf.len();
        let bufs = split(&[], buf);
        self.push(
            Collective::Recv { peer },
            T::DATA_TYPE,
            ReduceOp::Sum,
            count,
            bufs,
        );
        Ok(())
    }
}

macro_rules! blocking {
    ($($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*);)*) => {
        impl Communicator {
            $(
                $(#[$meta])*
                pub fn $name<T: Element>(&mut self, $($arg: $ty),*) -> Result<()> {
                    let mut g = self.group();
                    g.$name($($arg),*)?;
                    g.run()
                }
            )*
        }
    };
}

blocking! {
    /// All-reduce: `recv = ⊕ over ranks of send` (see [`Group::all_reduce`]).
    fn all_reduce(send: &[T], recv: &mut [T], op: ReduceOp);
    /// In-place all-reduce.
    fn all_reduce_in_place(buf: &mut [T], op: ReduceOp);
    /// All-gather (see [`Group::all_gather`]).
    fn all_gather(send: &[T], recv: &mut [T]);
    /// In-place all-gather (see [`Group::all_gather_in_place`]).
    fn all_gather_in_place(buf: &mut [T]);
    /// Reduce-scatter (see [`Group::reduce_scatter`]).
    fn reduce_scatter(send: &[T], recv: &mut [T], op: ReduceOp);
    /// In-place reduce-scatter (see [`Group::reduce_scatter_in_place`]).
    fn reduce_scatter_in_place(buf: &mut [T], op: ReduceOp);
    /// Broadcast from `root` (see [`Group::broadcast`]).
    fn broadcast(send: &[T], recv: &mut [T], root: u32);
    /// In-place broadcast from `root`.
    fn broadcast_in_place(buf: &mut [T], root: u32);
    /// Reduce onto `root` (see [`Group::reduce`]).
    fn reduce(send: &[T], recv: &mut [T], op: ReduceOp, root: u32);
    /// In-place reduce onto `root`.
    fn reduce_in_place(buf: &mut [T], op: ReduceOp, root: u32);
    /// Gather onto `root` (see [`Group::gather`]).
    fn gather(send: &[T], recv: &mut [T], root: u32);
    /// In-place gather onto `root` (see [`Group::gather_in_place`]).
    fn gather_in_place(buf: &mut [T], root: u32);
    /// Scatter from `root` (see [`Group::scatter`]).
    fn scatter(send: &[T], recv: &mut [T], root: u32);
    /// In-place scatter from `root` (see [`Group::scatter_in_place`]).
    fn scatter_in_place(buf: &mut [T], root: u32);
    /// All-to-all (see [`Group::all_to_all`]).
    fn all_to_all(send: &[T], recv: &mut [T]);
    /// In-place all-to-all.
    fn all_to_all_in_place(buf: &mut [T]);
    /// Sends `buf` to `peer`; blocks until the data left this rank (a send to self must be
    /// in a [`Group`] with its receive).
    fn send(buf: &[T], peer: u32);
    /// Receives from `peer` into `buf`.
    fn recv(buf: &mut [T], peer: u32);
}

impl Communicator {
    /// Waits until every rank has called `barrier`.
    pub fn barrier(&mut self) -> Result<()> {
        let mut token = [0u8; 1];
        self.all_reduce_in_place(&mut token, ReduceOp::Sum)
    }
}
