//! Issuing one collective into a [`Group`], and where its inputs and results lie.
//!
//! Buffer layouts follow nccl-tests. Out-of-place operations read `send` and write `recv`;
//! in-place ones use `recv` alone, where the input of block collectives sits at block
//! `rank` (all-gather, gather) or fills the buffer (reduce-scatter, all-to-all, scatter's
//! root); in-place scatter's result lands at block `rank`. Gather and scatter are oxccl's
//! collectives (`Group::gather`, `Group::scatter`); sendrecv is a group of a send and a
//! receive, as in nccl-tests.
//!
//! In-place sendrecv cannot lend one buffer to a send and a receive at once in safe Rust:
//! it first copies the buffer into the send buffer ([`Op::stage`]), and its time includes that
//! copy.

use super::coll::{Coll, Counts};
use super::data::{Fill, Pattern, Region, SENTINEL};
use crate::elem::TestElem;
use oxccl::{Group, ReduceOp, Result};

/// One operation's parameters, shared by every rank.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// The collective.
    pub coll: Coll,
    /// In-place (one buffer) or out-of-place.
    pub in_place: bool,
    /// The element counts.
    pub counts: Counts,
    /// The reduction operator (ignored by non-reducing collectives).
    pub redop: ReduceOp,
    /// The root (ignored by rootless collectives).
    pub root: u32,
    /// This rank.
    pub rank: u32,
    /// Number of ranks.
    pub nranks: u32,
}

impl Op {
    fn peers(&self) -> (u32, u32) {
        let n = self.nranks;
        ((self.rank + 1) % n, (self.rank + n - 1) % n)
    }

    /// Copies what in-place sendrecv sends into the send buffer (see the module doc).
    pub fn stage<T: Copy>(&self, send: &mut [T], recv: &[T]) {
        if self.coll == Coll::SendRecv && self.in_place {
            let c = self.counts.param;
            send[..c].copy_from_slice(&recv[..c]);
        }
    }

    /// Adds the operation to `g`. `send` and `recv` hold at least `counts.total()` elements.
    pub fn issue<'a, T: TestElem>(
        &self,
        g: &mut Group<'a>,
        send: &'a [T],
        recv: &'a mut [T],
    ) -> Result<()> {
        let c = self.counts.param;
        let (n, root, op) = (self.nranks as usize, self.root, self.redop);
        let all = n * c;
        match (self.coll, self.in_place) {
            (Coll::AllReduce, false) => g.all_reduce(&send[..c], &mut recv[..c], op),
            (Coll::AllReduce, true) => g.all_reduce_in_place(&mut recv[..c], op),
            (Coll::AllGather, false) => g.all_gather(&send[..c], &mut recv[..all]),
            (Coll::AllGather, true) => g.all_gather_in_place(&mut recv[..all]),
            (Coll::ReduceScatter, false) => g.reduce_scatter(&send[..all], &mut recv[..c], op),
            (Coll::ReduceScatter, true) => g.reduce_scatter_in_place(&mut recv[..all], op),
            (Coll::Broadcast, false) => g.broadcast(&send[..c], &mut recv[..c], root),
            (Coll::Broadcast, true) => g.broadcast_in_place(&mut recv[..c], root),
            (Coll::Reduce, false) => g.reduce(&send[..c], &mut recv[..c], op, root),
            (Coll::Reduce, true) => g.reduce_in_place(&mut recv[..c], op, root),
            (Coll::AllToAll, false) => g.all_to_all(&send[..all], &mut recv[..all]),
            (Coll::AllToAll, true) => g.all_to_all_in_place(&mut recv[..all]),
            (Coll::SendRecv, _) => {
                let (next, prev) = self.peers();
                g.send(&send[..c], next)?;
                g.recv(&mut recv[..c], prev)
            }
            // nccl-tests issues nothing for empty gathers and scatters.
            (Coll::Gather | Coll::Scatter, _) if c == 0 => Ok(()),
            (Coll::Gather, false) => g.gather(&send[..c], &mut recv[..all], root),
            (Coll::Gather, true) => g.gather_in_place(&mut recv[..all], root),
            (Coll::Scatter, false) => g.scatter(&send[..all], &mut recv[..c], root),
            (Coll::Scatter, true) => g.scatter_in_place(&mut recv[..all], root),
        }
    }

    /// What the send and receive buffers hold before a checked run.
    pub fn inputs<'p, T: TestElem>(
        &self,
        p: &'p Pattern<T>,
    ) -> (Vec<Region<'p, T>>, Vec<Region<'p, T>>) {
        let c = self.counts.param;
        let (n, rank, root) = (self.nranks as usize, self.rank as usize, self.root as usize);
        let sentinel = Fill::Same(T::from_i64(SENTINEL));
        let mine = Fill::Pat(p.row(rank), 0);
        let total = self.counts.total();
        let mut send = vec![(0..self.counts.send, mine)];
        let mut recv = vec![(0..total, sentinel)];
        if !self.in_place {
            return (send, recv);
        }
        send.clear();
        let own_block = rank * c..(rank + 1) * c;
        match self.coll {
            Coll::AllReduce | Coll::Reduce | Coll::SendRecv => recv.push((0..c, mine)),
            Coll::Broadcast if rank == root => recv.push((0..c, mine)),
            Coll::Scatter if rank == root => recv.push((0..n * c, mine)),
            Coll::Broadcast | Coll::Scatter => {}
            Coll::AllGather | Coll::Gather => recv.push((own_block, mine)),
            Coll::ReduceScatter | Coll::AllToAll => recv.push((0..n * c, mine)),
        }
        (send, recv)
    }

    /// What the receive buffer must hold after the operation: every region is checked.
    pub fn results<'p, T: TestElem>(&self, p: &'p Pattern<T>) -> Vec<Region<'p, T>> {
        let c = self.counts.param;
        let (n, rank, root) = (self.nranks as usize, self.rank as usize, self.root as usize);
        let sentinel = Fill::Same(T::from_i64(SENTINEL));
        let own = if self.in_place { rank * c } else { 0 };
        let blocks = |start_of: &dyn Fn(usize) -> usize| -> Vec<Region<'p, T>> {
            (0..n)
                .map(|j| (j * c..(j + 1) * c, Fill::Pat(p.row(j), start_of(j))))
                .collect()
        };
        match self.coll {
            Coll::AllReduce => vec![(0..c, Fill::Pat(p.reduced(), 0))],
            Coll::ReduceScatter => vec![(own..own + c, Fill::Pat(p.reduced(), rank * c))],
            Coll::Broadcast => vec![(0..c, Fill::Pat(p.row(root), 0))],
            Coll::Reduce if rank == root => vec![(0..c, Fill::Pat(p.reduced(), 0))],
            Coll::Reduce if self.in_place => vec![(0..c, Fill::Pat(p.row(rank), 0))],
            Coll::Reduce => vec![(0..c, sentinel)],
            Coll::AllGather => blocks(&|_| 0),
            Coll::AllToAll => blocks(&|_| rank * c),
            Coll::SendRecv => vec![(0..c, Fill::Pat(p.row(self.peers().1 as usize), 0))],
            Coll::Gather if rank == root => blocks(&|_| 0),
            Coll::Gather if self.in_place => vec![
                (0..rank * c, sentinel),
                (rank * c..(rank + 1) * c, Fill::Pat(p.row(rank), 0)),
                ((rank + 1) * c..n * c, sentinel),
            ],
            Coll::Gather => vec![(0..n * c, sentinel)],
            Coll::Scatter => vec![(own..own + c, Fill::Pat(p.row(root), rank * c))],
        }
    }

    /// The pattern kind of this operation's inputs (`None`: non-reducing data).
    pub fn pattern_op(&self) -> Option<ReduceOp> {
        self.coll.reduces().then_some(self.redop)
    }
}
