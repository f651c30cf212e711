//! Where a plan region lives in memory: channels, rounds and splits to byte ranges.
//!
//! See `oxccl_algorithms::plan` for the scheme. All of it depends only on the block length,
//! element size and FIFO sizes, so every rank computes the same sizes for matched chunks.

use oxccl_algorithms::{Buf, Region};
use std::ops::Range;

/// The geometry of one op on this communicator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// Elements per block.
    pub count: usize,
    /// Bytes per element.
    pub esize: usize,
    /// Channels the op runs on.
    pub nchannels: usize,
    /// Chunks per block piece per round.
    pub splits: usize,
    /// Largest chunk, in elements (fits half a FIFO).
    pub chunk_elems: usize,
}

impl Layout {
    /// Elements `[start, start+len)` of every block that channel `ch` handles.
    pub fn piece(&self, ch: usize) -> (usize, usize) {
        let start = self.count * ch / self.nchannels;
        let end = self.count * (ch + 1) / self.nchannels;
        (start, end - start)
    }

    /// Number of rounds channel `ch` runs (0 when its piece is empty).
    pub fn rounds(&self, ch: usize) -> usize {
        let (_, len) = self.piece(ch);
        len.div_ceil(self.splits * self.chunk_elems)
    }

    /// Byte range of `region` within its buffer, for channel `ch` in round `round`. A
    /// window holds one round (of a one-channel plan): block `b` starts at `b` rounds' worth
    /// of elements.
    pub fn bytes(&self, region: Region, ch: usize, round: usize) -> Range<usize> {
        let (pstart, plen) = self.piece(ch);
        let round_len = self.splits * self.chunk_elems;
        let wstart = round * round_len;
        let wlen = round_len.min(plen.saturating_sub(wstart));
        let s = region.split as usize;
        let sub_start = wlen * s / self.splits;
        let sub_end = wlen * (s + 1) / self.splits;
        let elem = if region.buf == Buf::Window {
            region.block as usize * round_len + sub_start
        } else {
            region.block as usize * self.count + pstart + wstart + sub_start
        };
        elem * self.esize..(elem + sub_end - sub_start) * self.esize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_tile_every_block_exactly_once() {
        for &(count, nch, splits, chunk) in
            &[(0, 2, 3, 4), (1, 2, 3, 4), (97, 3, 5, 4), (1000, 2, 8, 16)]
        {
            let l = Layout {
                count,
                esize: 4,
                nchannels: nch,
                splits,
                chunk_elems: chunk,
            };
            for block in 0..3u32 {
                let mut seen = vec![0u8; count];
                for ch in 0..nch {
                    for round in 0..l.rounds(ch) {
                        for s in 0..splits as u32 {
                            let r = l.bytes(Region::new(Buf::Input, block, s), ch, round);
                            assert!(r.len() / 4 <= chunk);
                            for e in r.start / 4..r.end / 4 {
                                seen[e - block as usize * count] += 1;
                            }
                        }
                    }
                }
                assert!(
                    seen.iter().all(|&c| c == 1),
                    "{count} {nch} {splits} {chunk}"
                );
            }
        }
    }
}
