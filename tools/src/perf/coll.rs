//! The benchmarked collectives: names, buffer sizes per benchmark size, and bandwidths.
//!
//! Sizes follow nccl-tests: a benchmark size `S` bytes of a type of `e` bytes gives
//! `count = S / e` elements. Collectives whose buffers hold one block per rank (all-gather,
//! reduce-scatter, all-to-all, gather, scatter) use blocks of `count / nranks` elements,
//! rounded down to a multiple of 16 bytes, so `S` is the size of the larger buffer.

use std::fmt;

/// A collective `oxccl-perf` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coll {
    /// All-reduce.
    AllReduce,
    /// All-gather.
    AllGather,
    /// Reduce-scatter.
    ReduceScatter,
    /// Broadcast from a root.
    Broadcast,
    /// Reduce onto a root.
    Reduce,
    /// All-to-all.
    AllToAll,
    /// Every rank sends to the next and receives from the previous (one group of send/recv).
    SendRecv,
    /// Every rank's block lands in the root's buffer (`Group::gather`).
    Gather,
    /// The root's block `r` lands at rank `r` (`Group::scatter`).
    Scatter,
}

/// Element counts of one benchmark size (nccl-tests' `getCollByteCount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Elements in the send buffer.
    pub send: usize,
    /// Elements in the receive buffer.
    pub recv: usize,
    /// The count passed to the operation (per rank for block collectives); the `count`
    /// column.
    pub param: usize,
}

impl Counts {
    /// Elements of the larger buffer (the `size` column is this times the element size).
    pub fn total(&self) -> usize {
        self.send.max(self.recv)
    }
}

impl Coll {
    /// Every collective, in the order of `oxccl-perf --help`.
    pub const ALL: [Coll; 9] = [
        Coll::AllReduce,
        Coll::AllGather,
        Coll::ReduceScatter,
        Coll::Broadcast,
        Coll::Reduce,
        Coll::AllToAll,
        Coll::SendRecv,
        Coll::Gather,
        Coll::Scatter,
    ];

    /// The name on the command line and in results files (`all_reduce`, `alltoall`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Coll::AllReduce => "all_reduce",
            Coll::AllGather => "all_gather",
            Coll::ReduceScatter => "reduce_scatter",
            Coll::Broadcast => "broadcast",
            Coll::Reduce => "reduce",
            Coll::AllToAll => "alltoall",
            Coll::SendRecv => "sendrecv",
            Coll::Gather => "gather",
            Coll::Scatter => "scatter",
        }
    }

    /// The nccl-tests binary name (`all_reduce_perf`, ...), also installed as an alias.
    pub fn perf_name(self) -> String {
        format!("{}_perf", self.name())
    }

    /// The collective named `name` (a command-line name or a `<name>_perf` binary name).
    pub fn from_name(name: &str) -> Option<Coll> {
        let name = name.strip_suffix("_perf").unwrap_or(name);
        Coll::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether the operation reduces (the `redop` column names an operator, `-o` applies).
    ///
    /// `sendrecv` does not reduce, yet nccl-tests loops over `-o` for it and prints the
    /// operator; `oxccl-perf` does the same so rows line up with nccl-tests'.
    pub const fn reduces(self) -> bool {
        matches!(self, Coll::AllReduce | Coll::ReduceScatter | Coll::Reduce)
    }

    /// Whether the `redop` column shows the `-o` operators (else `none`).
    pub const fn shows_op(self) -> bool {
        self.reduces() || matches!(self, Coll::SendRecv)
    }

    /// Whether the operation has a root (`-r` applies; else the `root` column is -1).
    pub const fn has_root(self) -> bool {
        matches!(
            self,
            Coll::Broadcast | Coll::Reduce | Coll::Gather | Coll::Scatter
        )
    }

    /// The buffers for `count` elements of `elt` bytes on `nranks` ranks.
    pub fn counts(self, count: usize, elt: usize, nranks: usize) -> Counts {
        let block = (count / nranks) & !(16 / elt - 1);
        match self {
            Coll::AllReduce | Coll::Broadcast | Coll::Reduce | Coll::SendRecv => Counts {
                send: count,
                recv: count,
                param: count,
            },
            Coll::AllGather | Coll::Gather => Counts {
                send: block,
                recv: block * nranks,
                param: block,
            },
            Coll::ReduceScatter | Coll::Scatter => Counts {
                send: block * nranks,
                recv: block,
                param: block,
            },
            Coll::AllToAll => Counts {
                send: block * nranks,
                recv: block * nranks,
                param: block,
            },
        }
    }

    /// Algorithm and bus bandwidth in GB/s (1e9 bytes/s) for `param` elements of `elt`
    /// bytes moved in `secs` on `nranks` ranks.
    ///
    /// algbw is the data size over the time, where the data size is the full buffer of the
    /// block collectives (`param * nranks`). busbw scales algbw by the fraction of the data
    /// that must cross the busiest link (nccl-tests' `doc/PERFORMANCE.md`): `2(n-1)/n` for
    /// all-reduce, `(n-1)/n` for all-gather, reduce-scatter, all-to-all, gather and scatter,
    /// and 1 for broadcast, reduce and send/recv.
    pub fn bandwidths(self, param: usize, elt: usize, secs: f64, nranks: usize) -> (f64, f64) {
        let n = nranks as f64;
        let blocks = match self {
            Coll::AllGather
            | Coll::ReduceScatter
            | Coll::AllToAll
            | Coll::Gather
            | Coll::Scatter => n,
            _ => 1.0,
        };
        let algbw = (param * elt) as f64 * blocks / 1e9 / secs;
        let factor = match self {
            Coll::AllReduce => 2.0 * (n - 1.0) / n,
            Coll::Broadcast | Coll::Reduce | Coll::SendRecv => 1.0,
            _ => (n - 1.0) / n,
        };
        (algbw, algbw * factor)
    }
}

impl fmt::Display for Coll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_resolve() {
        for c in Coll::ALL {
            assert_eq!(Coll::from_name(c.name()), Some(c));
            assert_eq!(Coll::from_name(&c.perf_name()), Some(c));
        }
        assert_eq!(Coll::from_name("allreduce"), None);
    }

    #[test]
    fn block_collectives_round_blocks_to_16_bytes() {
        // 1 KiB of floats on 3 ranks: 256 elements, blocks of 85 rounded down to 84.
        let c = Coll::AllGather.counts(256, 4, 3);
        assert_eq!((c.send, c.recv, c.param), (84, 252, 84));
        let c = Coll::ReduceScatter.counts(256, 4, 3);
        assert_eq!((c.send, c.recv, c.total()), (252, 84, 252));
        // int8: multiples of 16 elements; double: multiples of 2.
        assert_eq!(Coll::AllToAll.counts(100, 1, 3).param, 32);
        assert_eq!(Coll::Gather.counts(100, 8, 3).param, 32);
        assert_eq!(Coll::AllReduce.counts(2, 4, 3).param, 2);
        assert_eq!(Coll::Scatter.counts(2, 4, 3).total(), 0);
    }

    #[test]
    fn bus_bandwidth_factors_follow_nccl_tests() {
        let bw = |c: Coll| c.bandwidths(250_000_000, 4, 1.0, 4);
        assert_eq!(bw(Coll::AllReduce), (1.0, 1.5));
        assert_eq!(bw(Coll::AllGather), (4.0, 3.0));
        assert_eq!(bw(Coll::ReduceScatter), (4.0, 3.0));
        assert_eq!(bw(Coll::AllToAll), (4.0, 3.0));
        assert_eq!(bw(Coll::Broadcast), (1.0, 1.0));
        assert_eq!(bw(Coll::Reduce), (1.0, 1.0));
        assert_eq!(bw(Coll::SendRecv), (1.0, 1.0));
        assert_eq!(bw(Coll::Gather), (4.0, 3.0));
    }
}
