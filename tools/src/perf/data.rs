//! Inputs whose every result is exactly predictable, and the check of the outputs.
//!
//! Rank `r`'s input element `i` is a pseudo-random small integer that depends on `r`, the
//! check's seed and `i mod PERIOD` (a prime, so blocks at power-of-two offsets never look
//! alike). The values keep every partial result exact in every datatype, whatever order
//! the ranks combine in:
//! - sum and avg: each element has at most 8 non-zero contributions, each in -5..=5 (with
//!   more than 8 ranks, rank `r` contributes to element `i` only when `(r + i) mod g = 0`,
//!   `g = ceil(n / 8)`), so every partial sum is within ±40: exact in `int8`, `half` and
//!   `bfloat16`, and unsigned types wrap the same way in any order;
//! - prod: at most 8 factors other than 1, each 2 or -1 (products within ±256; integer
//!   products wrap, which is order-independent);
//! - max, min and the data of non-reducing collectives: values in -50..=50.
//!
//! Output buffers start filled with [`SENTINEL`], so a rank that must not write (a reduce
//! or gather on a non-root) is checked to have left them alone.

use crate::elem::TestElem;
use oxccl::ReduceOp;
use std::ops::Range;

/// Length of the repeating input pattern, in elements.
pub const PERIOD: usize = 1009;

/// The value output buffers hold before an operation (outside every input range).
pub const SENTINEL: i64 = 77;

/// The inputs of every rank for one check, and the reduced result.
pub struct Pattern<T> {
    /// `rows[r]` is rank `r`'s input pattern (`PERIOD` elements).
    rows: Vec<Vec<T>>,
    /// The reduction over ranks of each pattern element (empty for non-reducing collectives).
    reduced: Vec<T>,
}

fn mix(seed: u64, rank: usize, j: usize) -> u64 {
    // splitmix64 of the three inputs.
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((rank as u64) << 32 | j as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rank `rank`'s pattern value `j` for `op` (`None`: a non-reducing collective).
fn value(op: Option<ReduceOp>, nranks: usize, seed: u64, rank: usize, j: usize) -> i64 {
    let h = mix(seed, rank, j);
    let gate = nranks.div_ceil(8);
    let on = (rank + j) % gate == 0;
    match op {
        Some(ReduceOp::Sum | ReduceOp::Avg) if on => (h % 11) as i64 - 5,
        Some(ReduceOp::Sum | ReduceOp::Avg) => 0,
        Some(ReduceOp::Prod) if on => [2, -1, 1][(h % 3) as usize],
        Some(ReduceOp::Prod) => 1,
        _ => (h % 101) as i64 - 50,
    }
}

impl<T: TestElem> Pattern<T> {
    /// The patterns of `nranks` ranks for `op` (`None`: plain data) and check `seed`.
    pub fn new(op: Option<ReduceOp>, nranks: usize, seed: u64) -> Self {
        let rows: Vec<Vec<T>> = (0..nranks)
            .map(|r| {
                (0..PERIOD)
                    .map(|j| T::from_i64(value(op, nranks, seed, r, j)))
                    .collect()
            })
            .collect();
        let reduced = match op {
            Some(op) => (0..PERIOD)
                .map(|j| {
                    let mut acc = rows[0][j];
                    for row in &rows[1..] {
                        acc = T::combine(op, acc, row[j]);
                    }
                    if op == ReduceOp::Avg {
                        acc = T::div(acc, nranks as u32);
                    }
                    acc
                })
                .collect(),
            None => Vec::new(),
        };
        Pattern { rows, reduced }
    }

    /// Rank `r`'s input pattern.
    pub fn row(&self, r: usize) -> &[T] {
        &self.rows[r]
    }

    /// The reduced pattern.
    pub fn reduced(&self) -> &[T] {
        &self.reduced
    }
}

/// What a range of a buffer holds (or must hold).
#[derive(Clone, Copy)]
pub enum Fill<'p, T> {
    /// A pattern, starting at this index of the global element numbering.
    Pat(&'p [T], usize),
    /// One value everywhere.
    Same(T),
}

/// Writes `fill` into `dst`.
pub fn write<T: Copy>(dst: &mut [T], fill: Fill<'_, T>) {
    match fill {
        Fill::Same(v) => dst.fill(v),
        Fill::Pat(pat, start) => {
            let mut k = start % pat.len();
            let mut rest = dst;
            while !rest.is_empty() {
                let n = (pat.len() - k).min(rest.len());
                let (head, tail) = rest.split_at_mut(n);
                head.copy_from_slice(&pat[k..k + n]);
                rest = tail;
                k = 0;
            }
        }
    }
}

/// How many elements of `got` differ from `fill`.
pub fn mismatches<T: Copy + PartialEq>(got: &[T], fill: Fill<'_, T>) -> u64 {
    match fill {
        Fill::Same(v) => got.iter().filter(|&&g| g != v).count() as u64,
        Fill::Pat(pat, start) => {
            let mut k = start % pat.len();
            let mut wrong = 0;
            let mut rest = got;
            while !rest.is_empty() {
                let n = (pat.len() - k).min(rest.len());
                let (head, tail) = rest.split_at(n);
                let want = &pat[k..k + n];
                if head != want {
                    wrong += head.iter().zip(want).filter(|(g, w)| g != w).count() as u64;
                }
                rest = tail;
                k = 0;
            }
            wrong
        }
    }
}

/// Changes `x` to a different value (the `OXCCL_PERF_CORRUPT` test aid).
pub fn flip<T: TestElem>(x: &mut T) {
    let a = T::from_i64(99);
    *x = if *x == a { T::from_i64(98) } else { a };
}

/// A range of a buffer and what it holds.
pub type Region<'p, T> = (Range<usize>, Fill<'p, T>);

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl::{bf16, f16};

    #[test]
    fn patterns_repeat_from_any_start() {
        let pat: Vec<i32> = (0..5).collect();
        let mut buf = vec![0; 12];
        write(&mut buf, Fill::Pat(&pat, 3));
        assert_eq!(buf, [3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
        assert_eq!(mismatches(&buf, Fill::Pat(&pat, 3)), 0);
        buf[7] = 9;
        buf[11] = 9;
        assert_eq!(mismatches(&buf, Fill::Pat(&pat, 3)), 2);
        assert_eq!(mismatches(&buf, Fill::Same(9)), 10);
    }

    fn exact_sums<T: TestElem>(n: usize) {
        // Reduce in reverse order, widening to f64 at every step: the same result as the
        // pattern's left fold means no intermediate was rounded.
        for op in ReduceOp::ALL {
            let p = Pattern::<T>::new(Some(op), n, 7);
            let q = Pattern::<f64>::new(Some(op), n, 7);
            for j in 0..PERIOD {
                let mut acc = p.row(n - 1)[j];
                for r in (0..n - 1).rev() {
                    acc = T::combine(op, acc, p.row(r)[j]);
                }
                if op == ReduceOp::Avg {
                    acc = T::div(acc, n as u32);
                }
                assert_eq!(acc, p.reduced()[j], "{op} n={n} j={j}");
                // (8-bit floats squeeze their inputs: the wide reference does not apply.)
                if op != ReduceOp::Avg && T::DATA_TYPE.is_float() && T::DATA_TYPE.size() > 1 {
                    assert_eq!(acc, T::from_i64(q.reduced()[j] as i64), "{op} n={n} j={j}");
                }
            }
        }
    }

    #[test]
    fn results_are_exact_in_narrow_types_for_many_ranks() {
        for n in [1, 2, 3, 8, 9, 64] {
            exact_sums::<i8>(n);
            exact_sums::<u8>(n);
            exact_sums::<f16>(n);
            exact_sums::<bf16>(n);
            exact_sums::<oxccl::F8E4M3>(n);
            exact_sums::<oxccl::F8E5M2>(n);
            exact_sums::<f32>(n);
        }
    }

    #[test]
    fn ranks_have_different_data() {
        let p = Pattern::<i32>::new(None, 16, 1);
        for a in 0..16 {
            for b in 0..a {
                assert_ne!(p.row(a), p.row(b));
            }
        }
        let q = Pattern::<i32>::new(None, 16, 2);
        assert_ne!(p.row(0), q.row(0), "the seed changes the data");
    }

    #[test]
    fn flip_always_changes_the_value() {
        for v in [0i64, 98, 99, -5] {
            let mut x = i8::from_i64(v);
            flip(&mut x);
            assert_ne!(x, i8::from_i64(v));
        }
    }
}
