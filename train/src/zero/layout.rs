//! The flat layout of the parameters and its shards: which elements of which parameter
//! each rank owns.

use std::ops::Range;

/// Elements of consecutive indices of one parameter inside the flat vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The parameter's index.
    pub param: usize,
    /// Where the run starts within the (flattened) parameter.
    pub offset: usize,
    /// Where the run lies in the flat vector.
    pub flat: Range<usize>,
}

/// Where each parameter lies in the flat vector, and which shard each rank owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    /// Flat start of each parameter, then the total `P`.
    offsets: Vec<usize>,
    ranks: usize,
    shard: usize,
}

impl ShardLayout {
    /// The layout of parameters of `sizes` elements (in order) over `ranks` ranks (≥ 1).
    pub fn new(sizes: &[usize], ranks: usize) -> Self {
        let ranks = ranks.max(1);
        let mut offsets = Vec::with_capacity(sizes.len() + 1);
        let mut at = 0;
        for s in sizes {
            offsets.push(at);
            at += s;
        }
        offsets.push(at);
        ShardLayout {
            offsets,
            ranks,
            shard: at.div_ceil(ranks),
        }
    }

    /// Number of real elements `P`.
    pub fn total(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }

    /// Length of the padded flat vector, `ranks · shard_len`.
    pub fn padded(&self) -> usize {
        self.ranks * self.shard
    }

    /// Elements per shard, `⌈P / ranks⌉`.
    pub fn shard_len(&self) -> usize {
        self.shard
    }

    /// Number of ranks.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// Where parameter `i` lies in the flat vector.
    pub fn param(&self, i: usize) -> Range<usize> {
        self.offsets[i]..self.offsets[i + 1]
    }

    /// The flat range rank `rank` owns (its tail may be padding).
    pub fn shard(&self, rank: usize) -> Range<usize> {
        rank * self.shard..(rank + 1) * self.shard
    }

    /// The runs of parameters inside the flat range `range`, in order; padding and empty
    /// parameters give none.
    pub fn pieces(&self, range: Range<usize>) -> Vec<Piece> {
        let n = self.offsets.len() - 1;
        // The last parameter starting at or before `range.start`.
        let mut i = self
            .offsets
            .partition_point(|&o| o <= range.start)
            .saturating_sub(1);
        let mut out = Vec::new();
        while i < n && self.offsets[i] < range.end {
            let (lo, hi) = (
                self.offsets[i].max(range.start),
                self.offsets[i + 1].min(range.end),
            );
            if lo < hi {
                out.push(Piece {
                    param: i,
                    offset: lo - self.offsets[i],
                    flat: lo..hi,
                });
            }
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_pads_to_whole_shards_and_cuts_parameters_at_shard_edges() {
        let l = ShardLayout::new(&[4, 0, 3], 3);
        assert_eq!((l.total(), l.shard_len(), l.padded()), (7, 3, 9));
        let piece = |param, offset, flat| Piece {
            param,
            offset,
            flat,
        };
        assert_eq!(l.pieces(l.shard(0)), vec![piece(0, 0, 0..3)]);
        assert_eq!(
            l.pieces(l.shard(1)),
            vec![piece(0, 3, 3..4), piece(2, 0, 4..6)]
        );
        // The last shard ends in two padding elements.
        assert_eq!(l.pieces(l.shard(2)), vec![piece(2, 2, 6..7)]);
    }
}
