//! Node layouts for the node-aware tests (ordering and hierarchical plans), and a count of
//! the messages that cross between nodes.

use oxccl_algorithms::{Nodes, Plan};

/// A small deterministic PRNG (xorshift64*), so the random layouts are the same every run.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as u32 % bound.max(1)
    }

    /// `v` shuffled (Fisher–Yates).
    pub fn shuffle(&mut self, v: &mut [u32]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Named layouts of `p` ranks: one node; one rank per node; for up to two divisors `L` of
/// `p` (`1 < L < p`), `p/L` nodes of `L` ranks contiguous, round-robin and randomly
/// permuted; uneven ones (random labels, and a node of one rank beside nodes of two).
pub fn layouts(p: u32) -> Vec<(String, Nodes)> {
    let mut rng = Rng::new(u64::from(p));
    let mut out = vec![
        ("one node".to_owned(), Nodes::single(p)),
        (
            "one per node".to_owned(),
            Nodes::new((0..p).collect()).unwrap(),
        ),
    ];
    let divisors: Vec<u32> = (2..p).filter(|l| p % l == 0).collect();
    let picks: Vec<u32> = match divisors.len() {
        0 => vec![],
        1 => vec![divisors[0]],
        n => vec![divisors[0], divisors[n / 2]],
    };
    for l in picks {
        let n = p / l;
        out.push((format!("{n}x{l} contiguous"), Nodes::uniform(n, l, false)));
        out.push((format!("{n}x{l} round-robin"), Nodes::uniform(n, l, true)));
        let mut labels: Vec<u32> = (0..p).map(|r| r / l).collect();
        rng.shuffle(&mut labels);
        out.push((
            format!("{n}x{l} random {labels:?}"),
            Nodes::from_labels(&labels).unwrap(),
        ));
    }
    if p >= 3 {
        let k = 2 + rng.below(2);
        let labels: Vec<u32> = (0..p).map(|_| rng.below(k)).collect();
        out.push((
            format!("uneven {labels:?}"),
            Nodes::from_labels(&labels).unwrap(),
        ));
        // Node 0 holds rank 0 alone, then pairs, then whatever is left.
        let labels: Vec<u32> = (0..p).map(|r| r.div_ceil(2)).collect();
        out.push((
            format!("one then pairs {labels:?}"),
            Nodes::from_labels(&labels).unwrap(),
        ));
    }
    out
}

/// Messages of one round on channel 0, over all ranks, whose two ends are on different
/// nodes.
pub fn inter_node_sends(plans: &[Plan], nodes: &Nodes) -> usize {
    plans
        .iter()
        .map(|plan| {
            plan.channels[0]
                .iter()
                .filter_map(|s| s.send_peer())
                .filter(|&to| !nodes.same_node(plan.rank, to))
                .count()
        })
        .sum()
}
