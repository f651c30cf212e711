//! The measurements of a tuning run: the tuning file they make, the link parameters fitted
//! from them, and the Markdown report.

use super::measure::collective;
use crate::perf::coll::Coll;
use oxccl::tuner::{CollectiveKind, LinkClass, TimeKey, TuningFile};
use oxccl::Algorithm;
use oxccl_algorithms::cost::LinkCost;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One measured point: a collective at a size, by one runner.
pub struct Point<'a> {
    coll: Coll,
    bytes: u64,
    block: usize,
    label: &'a str,
}

impl<'a> Point<'a> {
    /// `coll` at `bytes` (per-rank block of `block` f32 elements), timed on runner `label`.
    pub fn new(coll: Coll, bytes: u64, block: usize, label: &'a str) -> Self {
        Point {
            coll,
            bytes,
            block,
            label,
        }
    }
}

/// A runner's fastest time at one point.
#[derive(Debug, Clone, Copy)]
struct Entry {
    algorithm: Option<Algorithm>,
    channels: u32,
    time_us: f64,
}

/// Every point of the run.
pub struct Table {
    class: LinkClass,
    nranks: u32,
    /// (collective index, bytes) → (block elements, runner label → entry).
    rows: BTreeMap<(usize, u64), (usize, BTreeMap<String, Entry>)>,
    /// (collective index, bytes, "default" or "tuned") → the tuner's pick.
    picks: BTreeMap<(usize, u64, &'static str), String>,
    colls: Vec<Coll>,
}

impl Table {
    /// An empty table for a communicator of `nranks` ranks connected as `class`.
    pub fn new(class: LinkClass, nranks: u32) -> Self {
        Table {
            class,
            nranks,
            rows: BTreeMap::new(),
            picks: BTreeMap::new(),
            colls: vec![],
        }
    }

    fn index(&mut self, coll: Coll) -> usize {
        match self.colls.iter().position(|&c| c == coll) {
            Some(i) => i,
            None => {
                self.colls.push(coll);
                self.colls.len() - 1
            }
        }
    }

    /// Records a time; a point measured again keeps its fastest time.
    pub fn record(&mut self, p: Point<'_>, algorithm: Option<Algorithm>, channels: u32, us: f64) {
        let i = self.index(p.coll);
        let row = self
            .rows
            .entry((i, p.bytes))
            .or_insert_with(|| (p.block, BTreeMap::new()));
        let e = row.1.entry(p.label.to_owned()).or_insert(Entry {
            algorithm,
            channels,
            time_us: f64::INFINITY,
        });
        e.time_us = e.time_us.min(us);
    }

    /// Records what the `default` or `tuned` runner's tuner picked.
    pub fn set_pick(&mut self, coll: Coll, bytes: u64, who: &'static str, pick: String) {
        let i = self.index(coll);
        self.picks.insert((i, bytes, who), pick);
    }

    /// The fastest forced candidate at a point (its label).
    pub fn best_label(&self, coll: Coll, bytes: u64) -> Option<String> {
        let i = self.colls.iter().position(|&c| c == coll)?;
        let (_, row) = self.rows.get(&(i, bytes))?;
        row.iter()
            .filter(|(_, e)| e.algorithm.is_some())
            .min_by(|a, b| a.1.time_us.total_cmp(&b.1.time_us))
            .map(|(l, _)| l.clone())
    }

    /// The tuning file: every forced candidate's time, and the link fitted from them with
    /// the measured reduction time `gamma_s_per_byte`.
    pub fn tuning_file(&self, gamma_s_per_byte: f64) -> TuningFile {
        let mut file = TuningFile::default();
        for (&(i, _), (block, row)) in &self.rows {
            let Some(kind) = collective(self.colls[i]).and_then(CollectiveKind::of) else {
                continue;
            };
            for e in row.values() {
                if let Some(a) = e.algorithm {
                    let key = TimeKey::new(
                        kind,
                        self.class,
                        self.nranks,
                        a,
                        e.channels,
                        *block as u64 * 4,
                    );
                    file.times.insert(key, e.time_us);
                }
            }
        }
        if let Some(link) = fit(&file, self.class, self.nranks, gamma_s_per_byte) {
            file.links.insert(self.class, link);
        }
        file
    }

    /// One Markdown table per collective (see the module doc of `tune`).
    pub fn report(&self, heading: &str) -> String {
        let mut out = format!("# {heading}\n");
        let mut ratios = vec![];
        for (ci, coll) in self.colls.iter().enumerate() {
            let _ = write!(
                out,
                "\n## {}\n\n| bytes | best forced | µs | default tuner | µs | ×best | tuned | µs | best again µs | ×best |\n|---:|---|---:|---|---:|---:|---|---:|---:|---:|\n",
                coll.name()
            );
            for (&(i, bytes), (_, row)) in &self.rows {
                if i != ci {
                    continue;
                }
                let Some(best) = self.best_label(*coll, bytes) else {
                    continue;
                };
                let time = |l: &str| row.get(l).map_or(f64::NAN, |e| e.time_us);
                let pick = |who| {
                    self.picks
                        .get(&(i, bytes, who))
                        .cloned()
                        .unwrap_or_default()
                };
                let (b, d, t, again) = (
                    time(&best),
                    time("default"),
                    time("tuned"),
                    time("best (again)"),
                );
                let tuned_ratio = t / again;
                ratios.push(tuned_ratio);
                let _ = writeln!(
                    out,
                    "| {bytes} | {best} | {b:.1} | {} | {d:.1} | {:.2} | {} | {t:.1} | {again:.1} | {tuned_ratio:.2} |",
                    pick("default"),
                    d / b,
                    pick("tuned"),
                );
            }
        }
        let within = ratios.iter().filter(|&&r| r <= 1.10).count();
        let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len().max(1) as f64).exp();
        let _ = write!(
            out,
            "\nTuned within 10% of the best forced candidate (timed side by side in pass 2) at \
             {within} of {} points; geometric mean ratio {geo:.3}.\n",
            ratios.len()
        );
        out
    }
}

/// α and β of the links fitted from the ring's all-gather, or `None` without it: it costs
/// `(p−1)(α + nβ)` for blocks of `n` bytes (`oxccl_algorithms::cost`), so α is the smallest
/// size's time over `p−1` and β the slope between the smallest and largest over `p−1`. γ is
/// measured directly (the reduction kernel on this rank), since fitting it from the
/// difference of two noisy slopes is not reliable.
pub fn fit(
    file: &TuningFile,
    class: LinkClass,
    nranks: u32,
    gamma_s_per_byte: f64,
) -> Option<LinkCost> {
    if nranks < 2 {
        return None;
    }
    let steps = f64::from(nranks - 1);
    let line = |kind| -> Option<((f64, f64), (f64, f64))> {
        let pts: Vec<(f64, f64)> = file
            .times
            .iter()
            .filter(|(k, _)| {
                k.kind == kind
                    && k.class == class
                    && k.nranks == nranks
                    && k.algorithm() == Algorithm::Ring
                    && k.channels == 1
            })
            .map(|(k, &t)| (k.block_bytes as f64, t * 1e-6))
            .collect();
        let (first, last) = (*pts.first()?, *pts.last()?);
        (last.0 > first.0).then_some((first, last))
    };
    let slope = |(a, b): ((f64, f64), (f64, f64))| ((b.1 - a.1) / (b.0 - a.0)).max(0.0);
    let ag = line(CollectiveKind::AllGather)?;
    Some(LinkCost {
        alpha_s: ag.0 .1 / steps,
        beta_s_per_byte: (slope(ag) / steps).max(1e-15),
        gamma_s_per_byte,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_the_model_it_came_from() {
        let (alpha, beta) = (5e-6, 1e-9);
        let mut file = TuningFile::default();
        for n in [64u64, 1 << 20] {
            let kind = CollectiveKind::AllGather;
            let key = TimeKey::new(kind, LinkClass::Tcp, 4, Algorithm::Ring, 1, n);
            file.times
                .insert(key, 3.0 * (alpha + n as f64 * beta) * 1e6);
            // Other algorithms and channel caps do not enter the fit.
            let key = TimeKey::new(kind, LinkClass::Tcp, 4, Algorithm::Ring, 2, n);
            file.times.insert(key, 1.0);
        }
        let l = fit(&file, LinkClass::Tcp, 4, 3e-11).unwrap();
        assert!((l.alpha_s - (alpha + 64.0 * beta)).abs() < 1e-12);
        assert!((l.beta_s_per_byte - beta).abs() / beta < 1e-9);
        assert_eq!(l.gamma_s_per_byte, 3e-11);
        assert!(fit(&file, LinkClass::Shm, 4, 3e-11).is_none());
    }
}
