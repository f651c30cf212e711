//! Turning a tuning file's measurements into one communicator's decisions.
//!
//! Built once at init from the measurements that match the communicator (same link class and
//! rank count): for every collective and every power-of-two block size up to 1 TiB, the
//! (algorithm, channel cap) with the least predicted time among those the configuration
//! allows. An op then looks its decision up by the power of two at or above its block size,
//! so measured tuning costs no more per op than the built-in thresholds.
//!
//! **Prediction** from a candidate's measured points `(x_i, t_i)`: between two points, the
//! straight line in log–log space (exact at the points, and right for both the
//! latency-bound flat part and the bandwidth-bound linear part); below the smallest point,
//! its time (latency does not shrink with the message); above the largest, its time scaled
//! by the size (bandwidth-bound).

use super::file::{CollectiveKind, LinkClass, TuningFile};
use oxccl_algorithms::Algorithm;
use std::collections::BTreeMap;

/// Decisions cover blocks up to `2^(BUCKETS-1)` bytes; larger ones use the last.
const BUCKETS: usize = 41;

/// One measured configuration, as the tuner applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The channel cap it was measured with.
    pub channels: u32,
}

/// The decisions of one communicator (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct Decisions {
    table: [[Option<Candidate>; BUCKETS]; CollectiveKind::ALL.len()],
}

impl Decisions {
    /// The decisions for a communicator of `nranks` ranks connected as `class`, among the
    /// candidates `allowed` accepts (algorithm, collective kind). `None` when the file has
    /// no measurement that applies.
    pub fn build(
        file: &TuningFile,
        class: LinkClass,
        nranks: u32,
        allowed: impl Fn(Algorithm, CollectiveKind) -> bool,
    ) -> Option<Self> {
        let mut table = [[None; BUCKETS]; CollectiveKind::ALL.len()];
        let mut any = false;
        for (i, &kind) in CollectiveKind::ALL.iter().enumerate() {
            // Each candidate's points, in increasing size.
            let mut points: BTreeMap<(usize, u32), Vec<(f64, f64)>> = BTreeMap::new();
            for (k, &t) in &file.times {
                if k.kind == kind
                    && k.class == class
                    && k.nranks == nranks
                    && allowed(k.algorithm(), kind)
                {
                    let slot = Algorithm::ALL.iter().position(|&a| a == k.algorithm());
                    points
                        .entry((slot.unwrap_or(0), k.channels))
                        .or_default()
                        .push((k.block_bytes.max(1) as f64, t));
                }
            }
            if points.is_empty() {
                continue;
            }
            any = true;
            for (b, decision) in table[i].iter_mut().enumerate() {
                let x = (1u64 << b) as f64;
                *decision = points
                    .iter()
                    .map(|(&(slot, channels), pts)| (predict(pts, x), slot, channels))
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, slot, channels)| Candidate {
                        algorithm: Algorithm::ALL[slot],
                        channels,
                    });
            }
        }
        any.then_some(Decisions { table })
    }

    /// The decision for a block of `block_bytes` bytes of `kind`, if measured.
    pub fn lookup(&self, kind: CollectiveKind, block_bytes: usize) -> Option<Candidate> {
        let bucket = if block_bytes <= 1 {
            0
        } else {
            (usize::BITS - (block_bytes - 1).leading_zeros()) as usize
        };
        let i = CollectiveKind::ALL.iter().position(|&k| k == kind)?;
        self.table[i][bucket.min(BUCKETS - 1)]
    }
}

/// The predicted time at size `x` from points sorted by size (see the module doc).
fn predict(points: &[(f64, f64)], x: f64) -> f64 {
    let (first, last) = (points[0], points[points.len() - 1]);
    if x <= first.0 {
        return first.1;
    }
    if x >= last.0 {
        return last.1 * x / last.0;
    }
    let upper = points.partition_point(|p| p.0 < x);
    let (a, b) = (points[upper - 1], points[upper]);
    if b.0 == x {
        return b.1;
    }
    let f = (x.ln() - a.0.ln()) / (b.0.ln() - a.0.ln());
    (a.1.ln() + f * (b.1.ln() - a.1.ln())).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> TuningFile {
        TuningFile::parse(
            "time,all_reduce,tcp,4,8,recursive_doubling,1,10
time,all_reduce,tcp,4,8,ring,2,30
time,all_reduce,tcp,4,65536,recursive_doubling,1,300
time,all_reduce,tcp,4,65536,ring,2,200
time,all_reduce,tcp,8,8,tree,1,5
time,broadcast,shm,4,8,binomial,1,1",
        )
        .unwrap()
    }

    #[test]
    fn interpolation_is_exact_at_points_and_scales_beyond() {
        let pts = [(8.0, 10.0), (1024.0, 40.0)];
        assert_eq!(predict(&pts, 8.0), 10.0);
        assert_eq!(predict(&pts, 1.0), 10.0);
        assert!((predict(&pts, 1024.0) - 40.0).abs() < 1e-9);
        assert!((predict(&pts, 2048.0) - 80.0).abs() < 1e-9);
        // Half-way in log size is the geometric mean of the times.
        assert!((predict(&pts, 90.509_667) - 20.0).abs() < 1e-3);
    }

    #[test]
    fn picks_the_least_predicted_time_among_the_allowed() {
        let f = file();
        let d = Decisions::build(&f, LinkClass::Tcp, 4, |_, _| true).unwrap();
        let ar = CollectiveKind::AllReduce;
        let pick = |d: &Decisions, bytes| d.lookup(ar, bytes).map(|c| c.algorithm);
        assert_eq!(pick(&d, 8), Some(Algorithm::RecursiveDoubling));
        assert_eq!(pick(&d, 65536), Some(Algorithm::Ring));
        assert_eq!(d.lookup(ar, 1 << 30).unwrap().channels, 2);
        // Where the log-log lines cross: rd 10→300 µs and ring 30→200 µs over the 13
        // octaves from 2^3 to 2^16 meet at ln 3 / ln(30·30/200) · 13 ≈ 9.5 octaves, 2^12.5.
        let crossing = (1..=16).find(|&b| pick(&d, 1 << b) == Some(Algorithm::Ring));
        assert_eq!(crossing, Some(13));
        // Nothing measured for this collective, class or rank count.
        assert_eq!(d.lookup(CollectiveKind::AllGather, 8), None);
        assert!(Decisions::build(&f, LinkClass::Tcp, 2, |_, _| true).is_none());
        // A restriction leaves the allowed candidate.
        let d = Decisions::build(&f, LinkClass::Tcp, 4, |a, _| a == Algorithm::Ring).unwrap();
        assert_eq!(pick(&d, 8), Some(Algorithm::Ring));
    }
}
