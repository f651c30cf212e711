//! Chunk contents as multisets of contributions, and what a collective must produce.

use std::fmt;
use std::rc::Rc;

use crate::Collective;

/// One rank's input chunk, as a term of a result: `(rank, block, split)` of rank `rank`'s
/// input buffer (on the channel and round being simulated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Contribution {
    /// The rank whose input it is.
    pub rank: u32,
    /// The input block.
    pub block: u32,
    /// The split within the block.
    pub split: u32,
}

impl fmt::Display for Contribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}.b{}.s{}", self.rank, self.block, self.split)
    }
}

/// A chunk's contents: sorted contributions, each at most once (shared: chunks are copied
/// far more often than they are combined).
pub(crate) type Content = Rc<[Contribution]>;

/// The union of two contents, or the first contribution both hold (double counting).
pub(crate) fn union(a: &[Contribution], b: &[Contribution]) -> Result<Content, Contribution> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => return Err(a[i]),
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    Ok(out.into())
}

/// What output `(block, split)` of `rank` must hold after `collective` on `nranks` ranks
/// (the reference semantics of [`Collective`]).
pub(crate) fn expected(
    collective: Collective,
    nranks: u32,
    rank: u32,
    block: u32,
    split: u32,
) -> Vec<Contribution> {
    let from = |rank, block| Contribution { rank, block, split };
    let all = |block| (0..nranks).map(|j| from(j, block)).collect();
    match collective {
        Collective::AllReduce | Collective::Reduce { .. } => all(0),
        Collective::ReduceScatter => all(rank),
        // Only the root has gather output blocks, and only the root has scatter input.
        Collective::AllGather | Collective::Gather { .. } => vec![from(block, 0)],
        Collective::AllToAll => vec![from(block, rank)],
        Collective::Scatter { root } => vec![from(root, rank)],
        Collective::Broadcast { root } => vec![from(root, 0)],
        Collective::Recv { peer } => vec![from(peer, 0)],
        Collective::Send { .. } => Vec::new(),
    }
}

/// Formats a content as `{r0.b0.s1, r1.b0.s1}`.
pub(crate) struct Show<'a>(pub(crate) &'a [Contribution]);

impl fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(rank: u32) -> Contribution {
        Contribution {
            rank,
            block: 0,
            split: 0,
        }
    }

    #[test]
    fn union_merges_and_catches_duplicates() {
        assert_eq!(
            union(&[c(0), c(2)], &[c(1), c(3)]).as_deref(),
            Ok(&[c(0), c(1), c(2), c(3)][..])
        );
        assert_eq!(union(&[c(0), c(2)], &[c(2)]), Err(c(2)));
        assert_eq!(union(&[], &[c(5)]).as_deref(), Ok(&[c(5)][..]));
    }

    #[test]
    fn reference_semantics() {
        assert_eq!(
            expected(Collective::AllToAll, 4, 1, 3, 0),
            vec![Contribution {
                rank: 3,
                block: 1,
                split: 0
            }]
        );
        assert_eq!(expected(Collective::ReduceScatter, 2, 1, 0, 0).len(), 2);
        let gathered = expected(Collective::Gather { root: 1 }, 4, 1, 3, 2);
        let scattered = expected(Collective::Scatter { root: 1 }, 4, 3, 0, 2);
        let at = |rank, block| Contribution {
            rank,
            block,
            split: 2,
        };
        assert_eq!((gathered, scattered), (vec![at(3, 0)], vec![at(1, 3)]));
        assert_eq!(Show(&[c(0), c(1)]).to_string(), "{r0.b0.s0, r1.b0.s0}");
    }
}
