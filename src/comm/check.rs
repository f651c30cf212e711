//! `OXCCL_CHECK=1`: before a group's collectives run, the ranks compare what each is about
//! to do (collective, datatype, count, root, reduction), and a mismatch fails on every rank
//! with an error naming who called what, instead of corrupting data or hanging.
//!
//! The exchange is one small all-gather per group (its tag is set apart from the caller's
//! collectives, so their sequence numbers do not move). Point-to-point sends and receives are
//! not compared: their pairing is per peer, and a length mismatch there already fails with
//! a protocol error naming the peer.

use super::Communicator;
use crate::engine::OpSpec;
use crate::error::{Error, Result};
use oxccl_algorithms::Collective;

/// Words of one rank's description of a group.
const WORDS: usize = 7;
/// `root` of a collective that has none.
const NO_ROOT: u64 = u64::MAX;

/// The first collective's fields, the number of collectives and a hash of all of them.
fn describe(specs: &[&OpSpec]) -> [u64; WORDS] {
    let fields = |s: &OpSpec| {
        [
            crate::health::kind_code(s.collective.name()) as u64,
            crate::types::DataType::ALL
                .iter()
                .position(|d| *d == s.dtype)
                .unwrap_or(usize::MAX) as u64,
            s.count as u64,
            root(s.collective),
            crate::types::ReduceOp::ALL
                .iter()
                .position(|o| *o == s.redop)
                .unwrap_or(usize::MAX) as u64,
        ]
    };
    // FNV-1a over every field of every collective: a difference anywhere shows.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for s in specs {
        for w in fields(s) {
            for b in w.to_le_bytes() {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let first = specs.first().map_or([0, 0, 0, NO_ROOT, 0], |s| fields(s));
    [
        specs.len() as u64,
        first[0],
        first[1],
        first[2],
        first[3],
        first[4],
        hash,
    ]
}

fn root(c: Collective) -> u64 {
    match c {
        Collective::Broadcast { root }
        | Collective::Reduce { root }
        | Collective::Gather { root }
        | Collective::Scatter { root } => u64::from(root),
        _ => NO_ROOT,
    }
}

/// One rank's call, in words: `all_reduce of 1000 float32 (sum)`, `broadcast of 7 int8 from
/// root 3`, `a group of 3 collectives starting with ...`.
fn say(row: &[u64]) -> String {
    let kind = crate::health::kind_name(row[1] as u32);
    let dtype = crate::types::DataType::ALL
        .get(row[2] as usize)
        .map_or("?", |d| d.name());
    let mut s = format!("{kind} of {} {dtype}", row[3]);
    if row[4] != NO_ROOT {
        s += &format!(" from/to root {}", row[4]);
    }
    if matches!(kind, "all_reduce" | "reduce" | "reduce_scatter") {
        let op = crate::types::ReduceOp::ALL
            .get(row[5] as usize)
            .map_or("?".to_owned(), |o| o.to_string());
        s += &format!(" ({op})");
    }
    match row[0] {
        0 => "no collective".into(),
        1 => s,
        n => format!("a group of {n} collectives starting with {s}"),
    }
}

impl Communicator {
    /// Compares the group's collectives across the ranks (`OXCCL_CHECK=1`).
    pub(super) fn check_consistent(&mut self, specs: &[&OpSpec], label: &str) -> Result<()> {
        let mine = describe(specs);
        let n = self.nranks as usize;
        let mut all = vec![0u64; WORDS * n];
        self.checking = true;
        let exchanged = self.all_gather(&mine, &mut all);
        self.checking = false;
        exchanged?;
        let rows: Vec<&[u64]> = all.chunks_exact(WORDS).collect();
        if rows.iter().all(|r| *r == rows[0]) {
            return Ok(());
        }
        // Group the ranks by what they called.
        let mut variants: Vec<(&[u64], Vec<u32>)> = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            match variants.iter_mut().find(|(v, _)| v == row) {
                Some((_, ranks)) => ranks.push(r as u32),
                None => variants.push((row, vec![r as u32])),
            }
        }
        let calls: Vec<String> = variants
            .iter()
            .map(|(row, ranks)| format!("{} called {}", crate::health::rank_list(ranks), say(row)))
            .collect();
        Err(Error::InvalidArgument {
            op: "OXCCL_CHECK",
            detail: format!(
                "the ranks disagree on {label}: {} (nothing was sent; the communicator stays \
                 usable)",
                calls.join("; ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DataType, ReduceOp};

    fn spec(collective: Collective, count: usize) -> OpSpec {
        OpSpec {
            collective,
            dtype: DataType::Float32,
            redop: ReduceOp::Sum,
            count,
        }
    }

    #[test]
    fn descriptions_differ_exactly_when_the_calls_do() {
        let a = spec(Collective::AllReduce, 1000);
        let b = spec(Collective::AllReduce, 1200);
        let c = spec(Collective::Broadcast { root: 3 }, 1000);
        assert_eq!(describe(&[&a]), describe(&[&a]));
        assert_ne!(describe(&[&a]), describe(&[&b]));
        assert_ne!(describe(&[&a, &b]), describe(&[&a, &c]));
        assert_eq!(say(&describe(&[&a])), "all_reduce of 1000 float (sum)");
        assert_eq!(
            say(&describe(&[&c])),
            "broadcast of 1000 float from/to root 3"
        );
        assert!(say(&describe(&[&a, &c])).starts_with("a group of 2 collectives"));
    }
}
