//! Tuning files: measured times of every algorithm, written by `oxccl-perf tune` and read
//! through `OXCCL_TUNING_FILE`.
//!
//! # Format
//! Plain text, one record per line, fields separated by commas; `#` starts a comment line,
//! blank lines are skipped. Two kinds of record:
//!
//! ```text
//! # link,<class>,<alpha_us>,<beta_GB_per_s>,<gamma_GB_per_s>
//! link,shm,1.35,7.9,18.2
//! # time,<collective>,<class>,<nranks>,<block_bytes>,<algorithm>,<channels>,<time_us>
//! time,all_reduce,shm,4,4096,ls_one_shot,1,7.6
//! ```
//!
//! - `class` is how the communicator's ranks reach each other ([`LinkClass`]): `shm` (all
//!   on one host through shared memory), `tcp` (all through TCP), `mixed`.
//! - `block_bytes` is the per-rank block the tuner sees: the whole buffer of all-reduce,
//!   broadcast and reduce, one rank's block of the others (NCCL's `count` times the element
//!   size).
//! - `channels` is the channel cap the time was measured with (ops of small blocks use fewer,
//!   see [`super::MIN_BYTES_PER_CHANNEL`]).
//! - `link` records are the α–β–γ parameters fitted from the measurements (α per message,
//!   β as bandwidth, γ as reduction rate); the tuner's `TUNING` table uses them.
//!
//! Files of several runs (other rank counts, transports) may be concatenated; for a repeated
//! key the later line wins.

use crate::error::{Error, Result};
use oxccl_algorithms::cost::LinkCost;
use oxccl_algorithms::{Algorithm, Collective};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// How a communicator's ranks reach each other, as far as tuning is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkClass {
    /// Every peer through shared memory (one host).
    Shm,
    /// Every peer through TCP.
    Tcp,
    /// Some peers through shared memory, some through TCP (several hosts).
    Mixed,
    /// Every peer through InfiniBand/RoCE verbs.
    Ib,
    /// Shared memory within hosts, verbs between them.
    MixedIb,
}

impl LinkClass {
    /// The name used in tuning files.
    pub fn name(self) -> &'static str {
        match self {
            LinkClass::Shm => "shm",
            LinkClass::Tcp => "tcp",
            LinkClass::Mixed => "mixed",
            LinkClass::Ib => "ib",
            LinkClass::MixedIb => "mixed-ib",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            LinkClass::Shm,
            LinkClass::Tcp,
            LinkClass::Mixed,
            LinkClass::Ib,
            LinkClass::MixedIb,
        ]
        .into_iter()
        .find(|c| c.name() == text)
    }

    /// Whether hosts talk through verbs.
    pub fn verbs_between_hosts(self) -> bool {
        matches!(self, LinkClass::Ib | LinkClass::MixedIb)
    }
}

/// The collectives a tuning file distinguishes (roots and peers do not matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CollectiveKind {
    /// All-reduce.
    AllReduce,
    /// All-gather.
    AllGather,
    /// Reduce-scatter.
    ReduceScatter,
    /// Broadcast, any root.
    Broadcast,
    /// Reduce, any root.
    Reduce,
    /// All-to-all.
    AllToAll,
    /// Gather, any root.
    Gather,
    /// Scatter, any root.
    Scatter,
}

impl CollectiveKind {
    /// Every kind, in file order.
    pub const ALL: [CollectiveKind; 8] = [
        CollectiveKind::AllReduce,
        CollectiveKind::AllGather,
        CollectiveKind::ReduceScatter,
        CollectiveKind::Broadcast,
        CollectiveKind::Reduce,
        CollectiveKind::AllToAll,
        CollectiveKind::Gather,
        CollectiveKind::Scatter,
    ];

    /// The kind of `collective`; `None` for point-to-point.
    pub fn of(collective: Collective) -> Option<Self> {
        Some(match collective {
            Collective::AllReduce => CollectiveKind::AllReduce,
            Collective::AllGather => CollectiveKind::AllGather,
            Collective::ReduceScatter => CollectiveKind::ReduceScatter,
            Collective::Broadcast { .. } => CollectiveKind::Broadcast,
            Collective::Reduce { .. } => CollectiveKind::Reduce,
            Collective::AllToAll => CollectiveKind::AllToAll,
            Collective::Gather { .. } => CollectiveKind::Gather,
            Collective::Scatter { .. } => CollectiveKind::Scatter,
            Collective::Send { .. } | Collective::Recv { .. } => return None,
        })
    }

    /// A collective of this kind (root 0).
    pub fn collective(self) -> Collective {
        match self {
            CollectiveKind::AllReduce => Collective::AllReduce,
            CollectiveKind::AllGather => Collective::AllGather,
            CollectiveKind::ReduceScatter => Collective::ReduceScatter,
            CollectiveKind::Broadcast => Collective::Broadcast { root: 0 },
            CollectiveKind::Reduce => Collective::Reduce { root: 0 },
            CollectiveKind::AllToAll => Collective::AllToAll,
            CollectiveKind::Gather => Collective::Gather { root: 0 },
            CollectiveKind::Scatter => Collective::Scatter { root: 0 },
        }
    }

    /// The name used in tuning files (the collective's name).
    pub fn name(self) -> &'static str {
        self.collective().name()
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == text)
    }
}

/// What one measured time belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeKey {
    /// The collective.
    pub kind: CollectiveKind,
    /// How the ranks were connected.
    pub class: LinkClass,
    /// Number of ranks.
    pub nranks: u32,
    /// The algorithm, by its position in [`Algorithm::ALL`] (so keys sort).
    algorithm_index: usize,
    /// The channel cap.
    pub channels: u32,
    /// The per-rank block, bytes.
    pub block_bytes: u64,
}

impl TimeKey {
    /// A key; `algorithm` must be one of [`Algorithm::ALL`] (every algorithm is).
    pub fn new(
        kind: CollectiveKind,
        class: LinkClass,
        nranks: u32,
        algorithm: Algorithm,
        channels: u32,
        block_bytes: u64,
    ) -> Self {
        let algorithm_index = Algorithm::ALL
            .iter()
            .position(|&a| a == algorithm)
            .unwrap_or(0);
        TimeKey {
            kind,
            class,
            nranks,
            algorithm_index,
            channels,
            block_bytes,
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        Algorithm::ALL[self.algorithm_index]
    }
}

/// The contents of a tuning file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TuningFile {
    /// Fitted link parameters per class.
    pub links: BTreeMap<LinkClass, LinkCost>,
    /// Measured times, microseconds.
    pub times: BTreeMap<TimeKey, f64>,
}

impl TuningFile {
    /// Reads and parses the file at `path`; errors name the file and line.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            knob: "OXCCL_TUNING_FILE",
            detail: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text).map_err(|reason| Error::Config {
            knob: "OXCCL_TUNING_FILE",
            detail: format!("{}: {reason}", path.display()),
        })
    }

    /// Parses a tuning file's text; the error names the line and what is wrong with it.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut file = TuningFile::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            file.parse_line(line)
                .map_err(|e| format!("line {}: {e} in {line:?}", i + 1))?;
        }
        Ok(file)
    }

    fn parse_line(&mut self, line: &str) -> std::result::Result<(), String> {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        match fields[0] {
            "link" => {
                let [_, class, alpha, beta, gamma] = fields[..] else {
                    return Err(format!(
                        "a link record has 5 fields (link,class,alpha_us,beta_GB_per_s,gamma_GB_per_s), not {}",
                        fields.len()
                    ));
                };
                let class = parse_class(class)?;
                let alpha_us = number(alpha, "alpha_us")?;
                let beta = positive(beta, "beta_GB_per_s")?;
                let gamma = positive(gamma, "gamma_GB_per_s")?;
                self.links.insert(
                    class,
                    LinkCost {
                        alpha_s: alpha_us * 1e-6,
                        beta_s_per_byte: 1e-9 / beta,
                        gamma_s_per_byte: 1e-9 / gamma,
                    },
                );
            }
            "time" => {
                let [_, kind, class, nranks, bytes, algorithm, channels, time] = fields[..] else {
                    return Err(format!(
                        "a time record has 8 fields (time,collective,class,nranks,block_bytes,algorithm,channels,time_us), not {}",
                        fields.len()
                    ));
                };
                let kind = CollectiveKind::parse(kind).ok_or_else(|| {
                    format!(
                        "unknown collective {kind:?} (expected one of {})",
                        CollectiveKind::ALL.map(|k| k.name()).join(", ")
                    )
                })?;
                let class = parse_class(class)?;
                let nranks: u32 = integer(nranks, "nranks")?;
                let block_bytes: u64 = integer(bytes, "block_bytes")?;
                let algorithm: Algorithm = algorithm.parse().map_err(|e| format!("{e}"))?;
                let channels: u32 = integer(channels, "channels")?;
                if nranks == 0 || channels == 0 {
                    return Err("nranks and channels must be at least 1".into());
                }
                let time_us = positive(time, "time_us")?;
                let key = TimeKey::new(kind, class, nranks, algorithm, channels, block_bytes);
                self.times.insert(key, time_us);
            }
            other => return Err(format!("unknown record {other:?} (expected link or time)")),
        }
        Ok(())
    }

    /// A 64-bit FNV-1a hash of the measurements (not of comments or line order), for ranks
    /// to check that they read the same file.
    pub fn fingerprint(&self) -> u64 {
        self.to_text("")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    /// The file's text, in the format [`TuningFile::parse`] reads; `comment` lines (each
    /// prefixed with `# `) go first.
    pub fn to_text(&self, comment: &str) -> String {
        let mut out = String::from("# oxccl tuning file (OXCCL_TUNING_FILE), format 1\n");
        for line in comment.lines() {
            let _ = writeln!(out, "# {line}");
        }
        if !self.links.is_empty() {
            out.push_str("# link,class,alpha_us,beta_GB_per_s,gamma_GB_per_s\n");
        }
        for (class, l) in &self.links {
            let _ = writeln!(
                out,
                "link,{},{:.3},{:.4},{:.4}",
                class.name(),
                l.alpha_s * 1e6,
                1e-9 / l.beta_s_per_byte,
                1e-9 / l.gamma_s_per_byte
            );
        }
        if !self.times.is_empty() {
            out.push_str("# time,collective,class,nranks,block_bytes,algorithm,channels,time_us\n");
        }
        for (k, t) in &self.times {
            let _ = writeln!(
                out,
                "time,{},{},{},{},{},{},{t:.3}",
                k.kind.name(),
                k.class.name(),
                k.nranks,
                k.block_bytes,
                k.algorithm().name(),
                k.channels
            );
        }
        out
    }
}

fn parse_class(text: &str) -> std::result::Result<LinkClass, String> {
    LinkClass::parse(text)
        .ok_or_else(|| format!("unknown link class {text:?} (expected shm, tcp or mixed)"))
}

fn number(text: &str, what: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{what} {text:?} is not a non-negative number")),
    }
}

fn positive(text: &str, what: &str) -> std::result::Result<f64, String> {
    match number(text, what)? {
        v if v > 0.0 => Ok(v),
        _ => Err(format!("{what} {text:?} must be positive")),
    }
}

fn integer<T: std::str::FromStr>(text: &str, what: &str) -> std::result::Result<T, String> {
    text.parse()
        .map_err(|_| format!("{what} {text:?} is not a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
link,shm,1.5,8,20

time,all_reduce,shm,4,4096,ls_one_shot,1,7.5
time,all_reduce,shm,4,4096,ring,2,21.25
time,broadcast,tcp,8,64,binomial,1,40
time,all_reduce,shm,4,4096,ring,2,20
";

    #[test]
    fn parses_writes_and_reparses_the_same() {
        let f = TuningFile::parse(SAMPLE).unwrap();
        assert_eq!(f.times.len(), 3, "the repeated key is replaced");
        let ring = TimeKey::new(
            CollectiveKind::AllReduce,
            LinkClass::Shm,
            4,
            Algorithm::Ring,
            2,
            4096,
        );
        assert_eq!(f.times[&ring], 20.0, "the later line wins");
        let l = f.links[&LinkClass::Shm];
        assert!((l.alpha_s - 1.5e-6).abs() < 1e-12);
        assert!((l.beta_s_per_byte - 1.25e-10).abs() < 1e-15);
        let again = TuningFile::parse(&f.to_text("written\nby a test")).unwrap();
        assert_eq!(again, f);
    }

    #[test]
    fn bad_lines_are_named() {
        let cases = [
            ("time,all_reduce,shm,4,4096,ring,1", "8 fields"),
            ("time,allreduce,shm,4,4096,ring,1,3", "unknown collective"),
            (
                "time,all_reduce,nvlink,4,4096,ring,1,3",
                "unknown link class",
            ),
            ("time,all_reduce,shm,4,4096,treee,1,3", "treee"),
            ("time,all_reduce,shm,four,4096,ring,1,3", "nranks"),
            ("time,all_reduce,shm,4,4096,ring,0,3", "at least 1"),
            ("time,all_reduce,shm,4,4096,ring,1,-3", "time_us"),
            ("link,shm,1,0,20", "beta_GB_per_s"),
            ("speed,shm", "unknown record"),
        ];
        for (line, want) in cases {
            let err = TuningFile::parse(&format!("# ok\n{line}\n")).unwrap_err();
            assert!(err.starts_with("line 2: "), "{err}");
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
