//! Message tags: which operation a message on a connection belongs to.
//!
//! Bit layout of a tag (32 bits, carried with every message by the transports):
//!
//! ```text
//!  31   30 ........................ 0
//! [p2p][ sequence number, wrapping    ]
//! ```
//!
//! - Collectives (`p2p = 0`): the number of collectives this communicator launched before,
//!   the same on every rank because every rank issues collectives in the same order.
//! - Sends and receives (`p2p = 1`): the number of earlier sends to that peer (for a send) or
//!   receives from that peer (for a receive); a matched pair has the same number.
//!
//! A receiver that finds a tag other than the one its op expects reports which operation the
//! message belongs to instead of consuming it as data.

use oxccl_algorithms::Collective;

/// Bit set in the tags of point-to-point messages.
pub(crate) const P2P: u32 = 1 << 31;
/// Bit set (with the number of the collective it precedes) in the tag of an `OXCCL_CHECK`
/// exchange.
pub(crate) const CHECK: u32 = 1 << 30;
/// The sequence-number bits of a tag.
pub(crate) const SEQ: u32 = !(P2P | CHECK);

/// Per-communicator tag counters.
#[derive(Debug, Default)]
pub(crate) struct TagCounter {
    collectives: u32,
    sends: Vec<u32>,
    recvs: Vec<u32>,
}

impl TagCounter {
    /// Counters for a communicator of `nranks`.
    pub fn new(nranks: u32) -> Self {
        TagCounter {
            collectives: 0,
            sends: vec![0; nranks as usize],
            recvs: vec![0; nranks as usize],
        }
    }

    /// The tag of the next op of kind `c`, advancing the counter.
    pub fn next(&mut self, c: Collective) -> u32 {
        let counter = match c {
            Collective::Send { peer } => self.sends.get_mut(peer as usize),
            Collective::Recv { peer } => self.recvs.get_mut(peer as usize),
            _ => None,
        };
        match counter {
            Some(n) => {
                let tag = P2P | (*n & SEQ);
                *n = n.wrapping_add(1);
                tag
            }
            None => {
                let tag = self.collectives & SEQ;
                self.collectives = self.collectives.wrapping_add(1);
                tag
            }
        }
    }
}

impl TagCounter {
    /// The tag of the `OXCCL_CHECK` exchange before the next collective (the counter does
    /// not advance: the check is not one of the caller's collectives).
    pub fn check(&self) -> u32 {
        CHECK | (self.collectives & SEQ)
    }
}

/// Describes a tag for error messages.
pub(crate) fn describe(tag: u32) -> String {
    if tag & P2P != 0 {
        format!("point-to-point message #{}", tag & SEQ)
    } else if tag & CHECK != 0 {
        format!("the OXCCL_CHECK exchange before collective #{}", tag & SEQ)
    } else {
        format!("collective #{}", tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectives_and_p2p_count_separately() {
        let mut t = TagCounter::new(3);
        assert_eq!(t.next(Collective::AllReduce), 0);
        assert_eq!(t.next(Collective::Send { peer: 1 }), P2P);
        assert_eq!(t.next(Collective::Send { peer: 1 }), P2P | 1);
        assert_eq!(t.next(Collective::Recv { peer: 1 }), P2P);
        assert_eq!(t.next(Collective::Broadcast { root: 0 }), 1);
        assert_eq!(describe(P2P | 4), "point-to-point message #4");
    }
}
