//! Rank 0's output: nccl-tests' text layout on stdout, the rows for the results file, and
//! a progress line on stderr when it is a terminal.
//!
//! The layout is nccl-tests': `#` comment lines (parameters, one line per rank, column
//! headers), one row per size with fields separated by spaces (size, count, type, redop,
//! root, then time, algbw, busbw and #wrong out-of-place and in-place), then the footer
//! (`# Out of bounds values`, `# Avg bus bandwidth`). `--compare` appends one ratio column
//! per file at the end of each row.

use super::cli::Options;
use super::results::RefFile;
use super::run::{Placement, Row, Sink, Summary};
use serde_json::Value;
use std::io::{IsTerminal, Write};

/// What the header says about one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankInfo {
    /// The rank.
    pub rank: u32,
    /// Its process id.
    pub pid: u32,
    /// Its host name.
    pub hostname: String,
    /// Its index among the ranks on its host (nccl-tests' device number).
    pub device: u32,
}

/// `v` in at most `width` characters: 2 decimals if they fit, else 1, else none, else in
/// exponent form.
pub fn fit(v: f64, width: usize) -> String {
    for decimals in [2, 1, 0] {
        let s = format!("{v:>width$.decimals$}");
        if s.len() <= width {
            return s;
        }
    }
    let s = format!("{:>width$}", c_exp(v, 1));
    if s.len() <= width {
        s
    } else {
        format!("{:>width$}", c_exp(v, 0))
    }
}

/// `v` in C's `%.Ne` form: `1.2e+08`.
fn c_exp(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$e}");
    let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{mantissa}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// `v` like C's `%g`: 6 significant digits, no trailing zeros, exponent form outside
/// 1e-4..1e6.
pub fn fmt_g(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        let s = c_exp(v, 5);
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, ""));
        return format!("{}e{e}", trim_zeros(mantissa));
    }
    let decimals = (5 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_owned()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn center(label: &str, width: usize) -> String {
    format!("{label:^width$}")
}

/// Rank 0's report.
pub struct Report<'o> {
    opts: &'o Options,
    refs: &'o [RefFile],
    /// Rows in results-file form, in order.
    pub rows: Vec<Value>,
    progress: Option<Progress>,
    out: std::io::Stdout,
}

/// The progress line.
struct Progress {
    done: u64,
    total: Option<u64>,
    shown: bool,
}

impl<'o> Report<'o> {
    /// A report for `opts`, comparing with `refs`.
    pub fn new(opts: &'o Options, refs: &'o [RefFile], nroots: u32) -> Self {
        let per_sweep = opts.sizes().len() as u64
            * opts.dtypes.len() as u64
            * opts.ops.len() as u64
            * nroots as u64;
        let total = (opts.flags.run_cycles > 0).then(|| per_sweep * opts.flags.run_cycles as u64);
        Report {
            opts,
            refs,
            rows: Vec::new(),
            progress: std::io::stderr().is_terminal().then_some(Progress {
                done: 0,
                total,
                shown: false,
            }),
            out: std::io::stdout(),
        }
    }

    fn print(&mut self, text: &str) {
        self.clear_progress();
        let mut out = self.out.lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    fn clear_progress(&mut self) {
        if let Some(p) = &mut self.progress {
            if p.shown {
                eprint!("\r\x1b[K");
                p.shown = false;
            }
        }
    }

    /// The parameter lines, one line per rank and the column headers.
    pub fn header(&mut self, ranks: &[RankInfo], threads: u32, setup: &str) {
        let f = &self.opts.flags;
        let v = env!("CARGO_PKG_VERSION");
        let mut s = format!("# oxccl-perf version {v} (nccl-tests output format) oxccl={v}\n");
        s += &format!("# Collective test starting: {}\n", self.opts.program);
        let (step, kind) = if f.stepfactor > 1 {
            (f.stepfactor, "factor")
        } else {
            (f.stepbytes, "bytes")
        };
        s += &format!(
            "# nThread {threads} nGpus 1 minBytes {} maxBytes {} step: {step}({kind}) warmup iters: {} \
             iters: {} agg iters: {} validation: {} graph: 0 unalign: 0\n",
            f.minbytes, f.maxbytes, f.warmup_iters, f.iters, f.agg_iters, f.check
        );
        s += match f.blocking {
            1 => "# Blocking Enabled: each operation waited for, then a barrier (-z 1)\n",
            2 => "# Blocking Enabled: each operation waited for, no barrier (-z 2)\n",
            3 => "# Blocking Enabled: a barrier after each iteration, not timed (-z 3)\n",
            _ => "",
        };
        s += &format!("# {setup}\n#\n# Using devices\n");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arch = std::env::consts::ARCH;
        for r in ranks {
            s += &format!(
                "#  Rank {:>2} Group {:>2} Pid {:>6} on {:>10} device {:>2} [cpu] {arch} CPU rank, {cpus} cores on host\n",
                r.rank, 0, r.pid, r.hostname, r.device
            );
        }
        s += "#\n";
        for (i, r) in self.refs.iter().enumerate() {
            s += &format!(
                "# ratio{}: busbw of this run / busbw of {} in {} (out-of-place, matched by size, type, redop)\n",
                i + 1,
                r.library,
                r.path.display()
            );
        }
        let lead = format!("# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}", "", "", "", "", "");
        let section = 2 + 7 + 2 + 6 + 2 + 6 + 2 + 6;
        s += &format!(
            "{lead}{}{}",
            center("out-of-place", section),
            center("in-place", section)
        );
        s += &(0..self.refs.len()).map(|_| "        ").collect::<String>();
        s += "\n";
        let columns = |cols: [&str; 9], extra: &str| {
            let mut line = format!(
                "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}",
                cols[0], cols[1], cols[2], cols[3], cols[4]
            );
            for _ in 0..2 {
                line += &format!(
                    "  {:>7}  {:>6}  {:>6}  {:>6}",
                    cols[5], cols[6], cols[7], cols[8]
                );
            }
            for i in 0..self.refs.len() {
                let label = if extra.is_empty() {
                    String::new()
                } else if extra == "ratio" {
                    format!("ratio{}", i + 1)
                } else {
                    extra.to_owned()
                };
                line += &format!("  {label:>6}");
            }
            line + "\n"
        };
        s += &columns(
            [
                "size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong",
            ],
            "ratio",
        );
        s += &columns(
            [
                "(B)",
                "(elements)",
                "",
                "",
                "",
                "(us)",
                "(GB/s)",
                "(GB/s)",
                "",
            ],
            "(x)",
        );
        self.print(&s);
    }

    fn placement(p: &Placement) -> String {
        let wrong = match p.wrong {
            Some(w) => format!("{w:>6}"),
            None => "   N/A".to_owned(),
        };
        format!(
            "  {}  {}  {}  {wrong}",
            fit(p.time_us, 7),
            fit(p.algbw, 6),
            fit(p.busbw, 6)
        )
    }

    /// The footer. `min_bw` is `NCCL_TESTS_MIN_BW`: the average busbw must reach 90 % of it.
    pub fn footer(&mut self, summary: &Summary, min_bw: Option<f64>) {
        let avg = summary.avg_busbw();
        let bw_check = match min_bw {
            None => "",
            Some(m) if avg < m * 0.9 => "FAILED",
            Some(_) => "OK",
        };
        let mut s = format!(
            "# {:<20} : {} {}\n",
            "Out of bounds values",
            summary.failed,
            if summary.failed > 0 { "FAILED" } else { "OK" }
        );
        s += &format!(
            "# {:<20} : {} {bw_check}\n",
            "Avg bus bandwidth",
            fmt_g(avg)
        );
        for (i, r) in self.refs.iter().enumerate() {
            s += &format!("# ratio{}: {}\n", i + 1, self.ratio_summary(r));
        }
        s += &format!(
            "#\n# Collective test concluded: {}\n#\n\n",
            self.opts.program
        );
        self.print(&s);
    }

    fn ratio_summary(&self, r: &RefFile) -> String {
        let ratios: Vec<f64> = self
            .rows
            .iter()
            .filter_map(|row| {
                let ours = row["out_of_place"]["bus_bw"].as_f64()?;
                let theirs = r.busbw_for(
                    row["size"].as_u64()?,
                    row["type"].as_str()?,
                    row["redop"].as_str()?,
                    row["root"].as_i64()?,
                )?;
                (ours > 0.0 && theirs > 0.0).then(|| ours / theirs)
            })
            .collect();
        if ratios.is_empty() {
            return format!("no size in common with {}", r.library);
        }
        let geo = (ratios.iter().map(|x| x.ln()).sum::<f64>() / ratios.len() as f64).exp();
        format!(
            "geometric mean busbw ratio vs {} {} over {} sizes",
            r.library,
            fmt_g((geo * 1000.0).round() / 1000.0),
            ratios.len()
        )
    }
}

impl Sink for Report<'_> {
    fn starting(&mut self, label: &str, size: u64) {
        if let Some(p) = &mut self.progress {
            let bar = match p.total {
                Some(t) if t > 0 => {
                    let filled = (p.done * 20 / t) as usize;
                    format!(
                        "[{}{}] {}/{t}",
                        "#".repeat(filled),
                        ".".repeat(20 - filled),
                        p.done + 1
                    )
                }
                _ => format!("[{}]", p.done + 1),
            };
            eprint!("\r\x1b[K{bar} {label}: {size} bytes");
            p.shown = true;
        }
    }

    fn row(&mut self, row: &Row) {
        let redop = row.redop.map_or("none", |o| o.name());
        let mut line = format!(
            "{:>12}  {:>12}  {:>8}  {:>6}  {:>6}",
            row.size,
            row.count,
            row.dtype.name(),
            redop,
            row.root
        );
        line += &Self::placement(&row.out_of_place);
        line += &Self::placement(&row.in_place);
        for r in self.refs {
            let theirs = r.busbw_for(row.size, row.dtype.name(), redop, row.root);
            line += &match theirs {
                Some(t) if t > 0.0 => format!("  {}", fit(row.out_of_place.busbw / t, 6)),
                _ => "     N/A".to_owned(),
            };
        }
        line.push('\n');
        self.print(&line);
        self.rows
            .push(super::results::row_value(row, self.opts.flags.iters));
        if let Some(p) = &mut self.progress {
            p.done += 1;
        }
    }
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        self.clear_progress();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fit_their_columns() {
        assert_eq!(fit(12.345, 7), "  12.35");
        assert_eq!(fit(12345.67, 7), "12345.7");
        assert_eq!(fit(123456.7, 7), " 123457");
        assert_eq!(fit(1234567.0, 7), "1234567");
        assert_eq!(fit(123456789.0, 7), "1.2e+08");
        assert_eq!(fit(123456789.0, 6), " 1e+08");
        assert_eq!(fit(0.0, 6), "  0.00");
        assert_eq!(fmt_g(0.0), "0");
        assert_eq!(fmt_g(1.5), "1.5");
        assert_eq!(fmt_g(2.0 / 3.0), "0.666667");
        assert_eq!(fmt_g(1234567.0), "1.23457e+06");
        assert_eq!(fmt_g(0.00001234), "1.234e-05");
        assert_eq!(fmt_g(123.0), "123");
    }
}
