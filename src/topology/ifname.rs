//! `OXCCL_SOCKET_IFNAME`: which interfaces ranks may listen on, in NCCL_SOCKET_IFNAME's
//! syntax: a comma list of name prefixes (`eth,ib`); a leading `^` turns the list into
//! exclusions (`^docker,lo`); `=` after it (or alone, first) makes the names exact (`=eth0`,
//! `^=eth1`).

use std::fmt;

/// A parsed `OXCCL_SOCKET_IFNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfnameSpec {
    /// The text it was parsed from, for messages.
    pub text: String,
    /// `^`: the names exclude interfaces instead of selecting them.
    pub exclude: bool,
    /// `=`: names match whole interface names, not prefixes.
    pub exact: bool,
    /// The names or prefixes, non-empty.
    pub names: Vec<String>,
}

impl std::str::FromStr for IfnameSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let (exclude, rest) = match text.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (exact, rest) = match rest.strip_prefix('=') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let names: Vec<String> = rest
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if names.is_empty() {
            return Err(format!(
                "{text:?} names no interface (expected e.g. `eth,ib`, `^docker,lo` or `=eth0`)"
            ));
        }
        if let Some(bad) = names.iter().find(|n| n.contains(['^', '=', ' ', '/'])) {
            return Err(format!(
                "{bad:?} is not an interface name or prefix (`^` and `=` go once, at the start)"
            ));
        }
        Ok(IfnameSpec {
            text: text.to_owned(),
            exclude,
            exact,
            names,
        })
    }
}

impl IfnameSpec {
    /// Whether interface `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        let hit = self.names.iter().any(|p| {
            if self.exact {
                name == p
            } else {
                name.starts_with(p.as_str())
            }
        });
        hit != self.exclude
    }

    /// Whether the spec names loopback explicitly (a selection, not an exclusion, whose
    /// names cover `lo`): only then may a loopback address be chosen.
    pub fn selects_loopback(&self) -> bool {
        !self.exclude && self.matches("lo")
    }
}

impl fmt::Display for IfnameSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::IfnameSpec;

    fn spec(s: &str) -> IfnameSpec {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_lists_select_by_prefix() {
        let s = spec("eth,ib");
        assert!(s.matches("eth0") && s.matches("eth") && s.matches("ib0"));
        assert!(!s.matches("docker0") && !s.matches("lo") && !s.matches("et"));
        assert!(!s.exclude && !s.exact);
        assert_eq!(spec(" eth , ib ,").names, ["eth", "ib"]);
    }

    #[test]
    fn caret_excludes() {
        let s = spec("^docker,lo");
        assert!(s.matches("eth0") && s.matches("ib0") && s.matches("veth1"));
        assert!(!s.matches("docker0") && !s.matches("lo") && !s.matches("loop"));
        assert!(!s.selects_loopback());
    }

    #[test]
    fn equals_matches_whole_names() {
        let s = spec("=eth0,ib1");
        assert!(s.matches("eth0") && s.matches("ib1"));
        assert!(!s.matches("eth01") && !s.matches("eth") && !s.matches("ib10"));
    }

    #[test]
    fn caret_and_equals_combine() {
        let s = spec("^=eth0");
        assert!(s.exclude && s.exact);
        assert!(!s.matches("eth0") && s.matches("eth01") && s.matches("eth1"));
        assert_eq!(s.to_string(), "^=eth0");
    }

    #[test]
    fn loopback_only_when_named() {
        assert!(spec("lo").selects_loopback() && spec("=lo").selects_loopback());
        assert!(!spec("eth").selects_loopback() && !spec("^eth").selects_loopback());
    }

    #[test]
    fn empty_and_malformed_specs_are_errors() {
        for bad in [
            "",
            " ",
            "^",
            "=",
            "^=",
            ",",
            "^,",
            "eth,^ib",
            "=eth0,=eth1",
            "a b",
        ] {
            let e = bad.parse::<IfnameSpec>().unwrap_err();
            assert!(e.contains("interface"), "{bad:?}: {e}");
        }
    }
}
