//! `OXCCL_ALGO`'s selection syntax, NCCL_ALGO's:
//!
//! - `ring` or `ring,tree`: the tuner chooses among these only;
//! - `^tree` or `^tree,bruck`: among all but these;
//! - `allreduce:tree,ring;allgather:^bruck`: per collective, `;`-separated; a collective
//!   without its own rule follows the rule without a collective name, if any, else is free.
//!
//! Collective names: `allreduce`, `allgather`, `reducescatter`, `broadcast`, `reduce`,
//! `alltoall`, `gather`, `scatter` (case-insensitive, `_` and `-` ignored). Algorithm names are
//! [`Algorithm`]'s, with their aliases.

use super::file::CollectiveKind as Kind;
use oxccl_algorithms::{Algorithm, Collective};
use std::fmt;
use std::str::FromStr;

/// Which algorithms the tuner may choose, per collective.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlgoRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `None`: every collective without a rule of its own.
    collective: Option<Kind>,
    /// `^`: the list names the algorithms *not* to use.
    exclude: bool,
    algorithms: Vec<Algorithm>,
}

/// NCCL_ALGO's collective names.
const KINDS: &[(&str, Kind)] = &[
    ("allreduce", Kind::AllReduce),
    ("allgather", Kind::AllGather),
    ("reducescatter", Kind::ReduceScatter),
    ("broadcast", Kind::Broadcast),
    ("reduce", Kind::Reduce),
    ("alltoall", Kind::AllToAll),
    ("gather", Kind::Gather),
    ("scatter", Kind::Scatter),
];

/// The NCCL_ALGO name of `kind`.
fn nccl_name(kind: Kind) -> &'static str {
    KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .map_or("?", |(n, _)| n)
}

impl AlgoRules {
    /// Whether the tuner may use `algorithm` for `collective` (point-to-point is never
    /// restricted: it has one plan).
    pub fn allows(&self, collective: Collective, algorithm: Algorithm) -> bool {
        let Some(kind) = Kind::of(collective) else {
            return true;
        };
        let rule = self
            .rules
            .iter()
            .find(|r| r.collective == Some(kind))
            .or_else(|| self.rules.iter().find(|r| r.collective.is_none()));
        match rule {
            None => true,
            Some(r) => r.algorithms.contains(&algorithm) != r.exclude,
        }
    }
}

impl FromStr for AlgoRules {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut rules: Vec<Rule> = Vec::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (collective, list) = match part.split_once(':') {
                Some((c, list)) => {
                    let key: String = c
                        .chars()
                        .filter(|ch| !matches!(ch, '_' | '-' | ' '))
                        .collect::<String>()
                        .to_ascii_lowercase();
                    let kind = KINDS
                        .iter()
                        .find(|(n, _)| *n == key)
                        .map(|(_, k)| *k)
                        .ok_or_else(|| {
                            let known: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
                            format!("unknown collective {c:?} (known: {})", known.join(", "))
                        })?;
                    (Some(kind), list.trim())
                }
                None => (None, part),
            };
            let (exclude, list) = match list.strip_prefix('^') {
                Some(rest) => (true, rest),
                None => (false, list),
            };
            let algorithms = list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| a.parse::<Algorithm>().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            if algorithms.is_empty() {
                return Err(format!("{part:?} names no algorithm"));
            }
            if rules.iter().any(|r| r.collective == collective) {
                return Err(format!(
                    "{} has two rules",
                    collective.map_or("the default", nccl_name)
                ));
            }
            rules.push(Rule {
                collective,
                exclude,
                algorithms,
            });
        }
        if rules.is_empty() {
            return Err("no rule".into());
        }
        Ok(AlgoRules { rules })
    }
}

impl fmt::Display for AlgoRules {
    /// The canonical form (what ranks compare at creation).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            if let Some(k) = r.collective {
                write!(f, "{}:", nccl_name(k))?;
            }
            if r.exclude {
                f.write_str("^")?;
            }
            let names: Vec<&str> = r.algorithms.iter().map(Algorithm::name).collect();
            f.write_str(&names.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nccl_algo_syntax() {
        let ar = Collective::AllReduce;
        let ag = Collective::AllGather;
        let r: AlgoRules = "ring,tree".parse().unwrap();
        assert!(r.allows(ar, Algorithm::Tree) && r.allows(ar, Algorithm::Ring));
        assert!(!r.allows(ar, Algorithm::OneShot));
        let r: AlgoRules = "^tree".parse().unwrap();
        assert!(!r.allows(ar, Algorithm::Tree) && r.allows(ar, Algorithm::Ring));
        let r: AlgoRules = "allreduce:tree;AllGather:^bruck;ring".parse().unwrap();
        assert!(r.allows(ar, Algorithm::Tree) && !r.allows(ar, Algorithm::Ring));
        assert!(!r.allows(ag, Algorithm::Bruck) && r.allows(ag, Algorithm::Ring));
        assert!(r.allows(Collective::Broadcast { root: 1 }, Algorithm::Ring));
        assert!(!r.allows(Collective::Broadcast { root: 1 }, Algorithm::Binomial));
        assert!(r.allows(Collective::Send { peer: 1 }, Algorithm::Tree));
        assert_eq!(r.to_string(), "allreduce:tree;allgather:^bruck;ring");
        let free: AlgoRules = "reduce_scatter:halving_doubling".parse().unwrap();
        assert!(free.allows(ar, Algorithm::OneShot));
        let r: AlgoRules = "Gather:binomial;scatter:^linear".parse().unwrap();
        let (g, s) = (
            Collective::Gather { root: 1 },
            Collective::Scatter { root: 0 },
        );
        assert!(r.allows(g, Algorithm::Binomial) && !r.allows(g, Algorithm::Linear));
        assert!(r.allows(s, Algorithm::Binomial) && !r.allows(s, Algorithm::Linear));
        assert!(r.allows(Collective::AllGather, Algorithm::Linear));
        assert_eq!(r.to_string(), "gather:binomial;scatter:^linear");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (bad, says) in [
            ("allreduse:ring", "unknown collective"),
            ("ring,trea", "unknown algorithm \"trea\""),
            ("allreduce:", "names no algorithm"),
            ("ring;tree", "the default has two rules"),
            (" ; ", "no rule"),
        ] {
            let e = bad.parse::<AlgoRules>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
