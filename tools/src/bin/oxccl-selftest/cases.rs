//! One check per collective: build inputs, run the op, compare with the reference.

use crate::elem::{reduced, value, TestElem};
use oxccl::{Communicator, ReduceOp, Result};

/// Sentinel written into outputs before an op, to catch untouched or overwritten memory.
const SENTINEL: i64 = 77;

/// Counts checks and mismatches on this rank.
#[derive(Default)]
pub struct Tally {
    /// Ops checked.
    pub checks: usize,
    /// Elements that differed.
    pub wrong: usize,
    /// First few mismatches, for the report.
    pub notes: Vec<String>,
}

impl Tally {
    /// Counts one check and every element of `got` that differs from `want`.
    pub fn compare<T: TestElem>(&mut self, what: &str, got: &[T], want: impl Fn(usize) -> T) {
        self.checks += 1;
        for (i, g) in got.iter().enumerate() {
            let w = want(i);
            if *g != w {
                self.wrong += 1;
                if self.notes.len() < 8 {
                    self.notes
                        .push(format!("{what}: element {i} is {g:?}, expected {w:?}"));
                }
            }
        }
    }
}

fn gen<T: TestElem>(op: ReduceOp, rank: usize, len: usize, offset: usize) -> Vec<T> {
    (0..len)
        .map(|i| T::from_i64(value(op, rank, offset + i)))
        .collect()
}

fn sentinel<T: TestElem>(len: usize) -> Vec<T> {
    vec![T::from_i64(SENTINEL); len]
}

/// All-reduce, out-of-place and in-place.
pub fn all_reduce<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    op: ReduceOp,
    count: usize,
    in_place: bool,
) -> Result<()> {
    let (r, n) = (c.rank() as usize, c.size() as usize);
    let what = format!(
        "all_reduce {} {op} count {count} in_place {in_place}",
        T::DATA_TYPE
    );
    let input = gen::<T>(op, r, count, 0);
    let out = if in_place {
        let mut b = input;
        c.all_reduce_in_place(&mut b, op)?;
        b
    } else {
        let mut o = sentinel::<T>(count);
        c.all_reduce(&input, &mut o, op)?;
        o
    };
    t.compare(&what, &out, |i| reduced::<T>(op, n, i));
    Ok(())
}

/// Reduce-scatter: input holds `n` blocks of `count`, element `b*count+i`.
pub fn reduce_scatter<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    op: ReduceOp,
    count: usize,
    in_place: bool,
) -> Result<()> {
    let (r, n) = (c.rank() as usize, c.size() as usize);
    let what = format!(
        "reduce_scatter {} {op} count {count} in_place {in_place}",
        T::DATA_TYPE
    );
    let input = gen::<T>(op, r, n * count, 0);
    let out = if in_place {
        let mut b = input;
        c.reduce_scatter_in_place(&mut b, op)?;
        b[r * count..(r + 1) * count].to_vec()
    } else {
        let mut o = sentinel::<T>(count);
        c.reduce_scatter(&input, &mut o, op)?;
        o
    };
    t.compare(&what, &out, |i| reduced::<T>(op, n, r * count + i));
    Ok(())
}

/// Reduce onto `root`; other ranks' buffers must stay untouched.
pub fn reduce<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    op: ReduceOp,
    count: usize,
    in_place: bool,
    root: u32,
) -> Result<()> {
    let (r, n) = (c.rank() as usize, c.size() as usize);
    let what = format!(
        "reduce {} {op} count {count} root {root} in_place {in_place}",
        T::DATA_TYPE
    );
    let input = gen::<T>(op, r, count, 0);
    if in_place {
        let mut b = input.clone();
        c.reduce_in_place(&mut b, op, root)?;
        if r == root as usize {
            t.compare(&what, &b, |i| reduced::<T>(op, n, i));
        } else {
            t.compare(&what, &b, |i| input[i]);
        }
    } else {
        let mut o = sentinel::<T>(count);
        c.reduce(&input, &mut o, op, root)?;
        if r == root as usize {
            t.compare(&what, &o, |i| reduced::<T>(op, n, i));
        } else {
            t.compare(&what, &o, |_| T::from_i64(SENTINEL));
        }
    }
    Ok(())
}

/// All-gather: block `j` of the output is rank `j`'s input.
pub fn all_gather<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    count: usize,
    in_place: bool,
) -> Result<()> {
    let (r, n) = (c.rank() as usize, c.size() as usize);
    let what = format!(
        "all_gather {} count {count} in_place {in_place}",
        T::DATA_TYPE
    );
    let mine = gen::<T>(ReduceOp::Sum, r, count, 0);
    let out = if in_place {
        let mut b = sentinel::<T>(n * count);
        b[r * count..(r + 1) * count].copy_from_slice(&mine);
        c.all_gather_in_place(&mut b)?;
        b
    } else {
        let mut o = sentinel::<T>(n * count);
        c.all_gather(&mine, &mut o)?;
        o
    };
    t.compare(&what, &out, |k| {
        T::from_i64(value(ReduceOp::Sum, k / count.max(1), k % count.max(1)))
    });
    Ok(())
}

/// Broadcast from `root`.
pub fn broadcast<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    count: usize,
    in_place: bool,
    root: u32,
) -> Result<()> {
    let r = c.rank() as usize;
    let what = format!(
        "broadcast {} count {count} root {root} in_place {in_place}",
        T::DATA_TYPE
    );
    let mine = gen::<T>(ReduceOp::Sum, r, count, 0);
    let out = if in_place {
        let mut b = if r == root as usize {
            mine
        } else {
            sentinel::<T>(count)
        };
        c.broadcast_in_place(&mut b, root)?;
        b
    } else {
        let mut o = sentinel::<T>(count);
        let send: &[T] = if r == root as usize { &mine } else { &[] };
        c.broadcast(send, &mut o, root)?;
        o
    };
    t.compare(&what, &out, |i| {
        T::from_i64(value(ReduceOp::Sum, root as usize, i))
    });
    Ok(())
}

/// All-to-all: input element `b*count+i` of rank `j` lands in block `j` of rank `b`.
pub fn all_to_all<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    count: usize,
    in_place: bool,
) -> Result<()> {
    let (r, n) = (c.rank() as usize, c.size() as usize);
    let what = format!(
        "all_to_all {} count {count} in_place {in_place}",
        T::DATA_TYPE
    );
    let input = gen::<T>(ReduceOp::Sum, r, n * count, 0);
    let out = if in_place {
        let mut b = input;
        c.all_to_all_in_place(&mut b)?;
        b
    } else {
        let mut o = sentinel::<T>(n * count);
        c.all_to_all(&input, &mut o)?;
        o
    };
    let cnt = count.max(1);
    t.compare(&what, &out, |k| {
        T::from_i64(value(ReduceOp::Sum, k / cnt, r * count + k % cnt))
    });
    Ok(())
}

/// Gather onto `root`: block `j` of the root's output is rank `j`'s input. The other ranks'
/// buffers stay untouched (in place: holding their own block); out of place, odd ranks pass
/// an empty receive buffer and even ones a full-length one.
pub fn gather<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    count: usize,
    in_place: bool,
    root: u32,
) -> Result<()> {
    let (r, n) = (c.rank() as usize, c.size() as usize);
    let what = format!(
        "gather {} count {count} root {root} in_place {in_place}",
        T::DATA_TYPE
    );
    let is_root = r == root as usize;
    let mine = gen::<T>(ReduceOp::Sum, r, count, 0);
    let cnt = count.max(1);
    let gathered = |k: usize| T::from_i64(value(ReduceOp::Sum, k / cnt, k % cnt));
    let untouched = |_: usize| T::from_i64(SENTINEL);
    if in_place {
        let mut b = sentinel::<T>(n * count);
        b[r * count..(r + 1) * count].copy_from_slice(&mine);
        c.gather_in_place(&mut b, root)?;
        if is_root {
            t.compare(&what, &b, gathered);
        } else {
            t.compare(&what, &b, |k| {
                if k / cnt == r {
                    gathered(k)
                } else {
                    untouched(k)
                }
            });
        }
    } else {
        let len = if is_root || r % 2 == 0 { n * count } else { 0 };
        let mut o = sentinel::<T>(len);
        c.gather(&mine, &mut o, root)?;
        if is_root {
            t.compare(&what, &o, gathered);
        } else {
            t.compare(&what, &o, untouched);
        }
    }
    Ok(())
}

/// Scatter from `root`: rank `r` gets block `r` of the root's input (element `b*count+i` of
/// the root's row). In place every rank's other blocks stay as they were; out of place, odd
/// non-roots pass an empty send buffer and even ones a full-length one.
pub fn scatter<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    count: usize,
    in_place: bool,
    root: u32,
) -> Result<()> {
    let (r, n) = (c.rank() as usize, c.size() as usize);
    let what = format!(
        "scatter {} count {count} root {root} in_place {in_place}",
        T::DATA_TYPE
    );
    let is_root = r == root as usize;
    let from_root = |k: usize| T::from_i64(value(ReduceOp::Sum, root as usize, k));
    let input = if is_root {
        gen::<T>(ReduceOp::Sum, root as usize, n * count, 0)
    } else {
        sentinel::<T>(if r % 2 == 0 { n * count } else { 0 })
    };
    if in_place {
        let mut b = if is_root {
            input
        } else {
            sentinel::<T>(n * count)
        };
        c.scatter_in_place(&mut b, root)?;
        let cnt = count.max(1);
        t.compare(&what, &b, |k| {
            if is_root || k / cnt == r {
                from_root(k)
            } else {
                T::from_i64(SENTINEL)
            }
        });
    } else {
        let mut o = sentinel::<T>(count);
        c.scatter(&input, &mut o, root)?;
        t.compare(&what, &o, |i| from_root(r * count + i));
    }
    Ok(())
}

/// A ring of sends and receives in one group (every rank sends to the next, receives from
/// the previous) plus a send/receive to self.
pub fn send_recv_ring<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    count: usize,
) -> Result<()> {
    let (r, n) = (c.rank() as usize, c.size() as usize);
    let what = format!("send/recv ring {} count {count}", T::DATA_TYPE);
    let next = ((r + 1) % n) as u32;
    let prev = ((r + n - 1) % n) as u32;
    let mine = gen::<T>(ReduceOp::Sum, r, count, 0);
    let mut got = sentinel::<T>(count);
    let mut own = sentinel::<T>(count);
    {
        let mut g = c.group();
        g.send(&mine, next)?;
        g.recv(&mut got, prev)?;
        g.send(&mine, r as u32)?;
        g.recv(&mut own, r as u32)?;
        g.run()?;
    }
    t.compare(&what, &got, |i| {
        T::from_i64(value(ReduceOp::Sum, prev as usize, i))
    });
    t.compare(&format!("{what} (self)"), &own, |i| mine[i]);
    Ok(())
}
