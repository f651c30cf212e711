//! Reading sysfs and procfs files under a root directory: a missing or unreadable file is an
//! absent value, never an error (containers and odd kernels hide many of them).

use std::path::{Path, PathBuf};

/// `root` joined with an absolute-looking path such as `/sys/class/net`.
pub(super) fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// The trimmed contents of `path`, `None` when it is missing, unreadable or empty.
pub(super) fn text(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A decimal or `0x` hexadecimal number in `path`.
pub(super) fn number(path: &Path) -> Option<i64> {
    let s = text(path)?;
    match s.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The entries of directory `dir`, sorted by name (empty when it is missing).
pub(super) fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort_by(|a, b| natural_cmp(a, b));
    names
}

/// Orders `eth2` before `eth10` and `node2` before `node10`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (head, tail) = s.split_at(s.len() - digits);
        (head.to_owned(), tail.parse::<u64>().ok(), s.to_owned())
    };
    split(a).cmp(&split(b))
}

/// Whether `s` is a PCI address such as `0000:3b:00.0`.
pub(super) fn is_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// The PCI address nearest to `path` among its resolved path's components (a NIC's
/// `device` link may point below the PCI function, e.g. at a virtio device).
pub(super) fn pci_of(path: &Path) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    real.components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|c| is_bdf(c))
        .map(str::to_owned)
}

/// The CPUs of a list such as `0-3,8,10-11` (malformed parts are skipped).
pub(super) fn cpulist(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    // A cap keeps a corrupt range from allocating without bound.
                    out.extend((a..=b).take(1 << 16));
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out
}

/// `cpus` as a list such as `0-3,8` (the inverse of [`cpulist`]).
pub(super) fn cpulist_text(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_bdfs_and_natural_order() {
        assert_eq!(cpulist("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(cpulist(""), Vec::<u32>::new());
        assert_eq!(cpulist_text(&[11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
        assert_eq!(cpulist_text(&[]), "");
        assert_eq!(cpulist("x,2,3-y"), vec![2]);
        assert!(is_bdf("0000:3b:00.0") && !is_bdf("pci0000:00") && !is_bdf("virtio2"));
        let mut v = vec!["eth10", "eth2", "lo", "eth1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["eth1", "eth2", "eth10", "lo"]);
    }
}
