//! Collectives whose send buffer is a registered buffer (`Communicator::alloc_shared`):
//! over shared memory the other ranks read it in place instead of a staged copy (gather: every
//! rank's block; scatter: the root's blocks).

use crate::cases::Tally;
use crate::elem::{reduced, value, TestElem};
use oxccl::{Communicator, ReduceOp, Result};

const SENTINEL: i64 = 77;

fn fill<T: TestElem>(buf: &mut [T], f: impl Fn(usize) -> i64) {
    for (i, x) in buf.iter_mut().enumerate() {
        *x = T::from_i64(f(i));
    }
}

/// Every out-of-place collective with its input in one registered buffer, at `counts`.
/// All-reduce runs twice in a row with the input rewritten in between: a rank whose op
/// returned before the others finished reading its input would corrupt their result.
pub fn shared_inputs<T: TestElem>(
    c: &mut Communicator,
    t: &mut Tally,
    counts: &[usize],
) -> Result<()> {
    let (r, n) = (c.rank() as usize, c.size() as usize);
    let max = counts.iter().copied().max().unwrap_or(0) * n;
    let mut buf = c.alloc_shared::<T>(max)?;
    let reg = if buf.is_registered() {
        "registered"
    } else {
        "heap"
    };
    let dt = T::DATA_TYPE;
    for &count in counts {
        let sentinel = || vec![T::from_i64(SENTINEL); count];
        for op in ReduceOp::ALL {
            for pass in 0..2 {
                fill(&mut buf[..count], |i| value(op, r, i + pass));
                let mut out = sentinel();
                c.all_reduce(&buf[..count], &mut out, op)?;
                let what = format!("{reg} all_reduce {dt} {op} count {count} pass {pass}");
                t.compare(&what, &out, |i| reduced::<T>(op, n, i + pass));
            }
            fill(&mut buf[..n * count], |i| value(op, r, i));
            let mut out = sentinel();
            c.reduce_scatter(&buf[..n * count], &mut out, op)?;
            let what = format!("{reg} reduce_scatter {dt} {op} count {count}");
            t.compare(&what, &out, |i| reduced::<T>(op, n, r * count + i));
            for root in [0, n - 1] {
                fill(&mut buf[..count], |i| value(op, r, i));
                let mut out = sentinel();
                c.reduce(&buf[..count], &mut out, op, root as u32)?;
                let what = format!("{reg} reduce {dt} {op} count {count} root {root}");
                if r == root {
                    t.compare(&what, &out, |i| reduced::<T>(op, n, i));
                } else {
                    t.compare(&what, &out, |_| T::from_i64(SENTINEL));
                }
            }
        }
        let sum = ReduceOp::Sum;
        let cnt = count.max(1);
        fill(&mut buf[..count], |i| value(sum, r, i));
        let mut out = vec![T::from_i64(SENTINEL); n * count];
        c.all_gather(&buf[..count], &mut out)?;
        t.compare(&format!("{reg} all_gather {dt} count {count}"), &out, |k| {
            T::from_i64(value(sum, k / cnt, k % cnt))
        });
        fill(&mut buf[..n * count], |i| value(sum, r, i));
        c.all_to_all(&buf[..n * count], &mut out)?;
        t.compare(&format!("{reg} all_to_all {dt} count {count}"), &out, |k| {
            T::from_i64(value(sum, k / cnt, r * count + k % cnt))
        });
        for root in [0, n - 1] {
            fill(&mut buf[..count], |i| value(sum, r, i));
            let mut out = sentinel();
            let send: &[T] = if r == root { &buf[..count] } else { &[] };
            c.broadcast(send, &mut out, root as u32)?;
            t.compare(
                &format!("{reg} broadcast {dt} count {count} root {root}"),
                &out,
                |i| T::from_i64(value(sum, root, i)),
            );
            let mut all = vec![T::from_i64(SENTINEL); n * count];
            c.gather(&buf[..count], &mut all, root as u32)?;
            t.compare(
                &format!("{reg} gather {dt} count {count} root {root}"),
                &all,
                |k| {
                    let v = value(sum, k / cnt, k % cnt);
                    T::from_i64(if r == root { v } else { SENTINEL })
                },
            );
            fill(&mut buf[..n * count], |i| value(sum, r, i));
            let mut out = sentinel();
            let send: &[T] = if r == root { &buf[..n * count] } else { &[] };
            c.scatter(send, &mut out, root as u32)?;
            t.compare(
                &format!("{reg} scatter {dt} count {count} root {root}"),
                &out,
                |i| T::from_i64(value(sum, root, r * count + i)),
            );
        }
    }
    Ok(())
}

/// Ranks asking for different lengths all get an error naming the odd rank (registered
/// buffers only: ordinary memory needs no agreement), and the communicator stays usable.
pub fn mismatched_lengths(c: &mut Communicator, t: &mut Tally) -> Result<()> {
    let r = c.rank();
    let registered = c.alloc_shared::<u8>(1)?.is_registered();
    let odd = c.size() - 1;
    let got = c.alloc_shared::<u8>(if r == odd { 9 } else { 8 });
    t.checks += 1;
    match (registered && c.size() > 1, got) {
        (true, Err(e))
            if e.to_string()
                .contains(&format!("rank {odd} asked for 9 bytes")) => {}
        (false, Ok(_)) => {}
        (_, other) => {
            t.wrong += 1;
            t.notes.push(format!(
                "alloc_shared with rank {odd} asking for more: {other:?}"
            ));
        }
    }
    c.barrier()
}
