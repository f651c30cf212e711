//! CPUs and NUMA nodes: `/sys/devices/system/cpu` (online list, package and core ids),
//! `/proc/cpuinfo` (model and vendor), `/sys/devices/system/node` (each node's CPUs and
//! memory), falling back to one node holding every CPU and `/proc/meminfo`'s total.

use super::sysfs::{cpulist, entries, number, text, under};
use std::path::Path;

/// The host's processors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Model name from `/proc/cpuinfo` (`None` where the kernel does not report one).
    pub model: Option<String>,
    /// Vendor id from `/proc/cpuinfo` (`GenuineIntel`, `AuthenticAMD`).
    pub vendor: Option<String>,
    /// Online logical CPUs.
    pub online: u32,
    /// Distinct physical packages among the online CPUs (0 when unknown).
    pub sockets: u32,
    /// Distinct (package, core) pairs among the online CPUs (0 when unknown).
    pub cores: u32,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// The kernel's node number.
    pub id: u32,
    /// Its CPUs.
    pub cpus: Vec<u32>,
    /// Its memory in KiB (`None` when unknown).
    pub memory_kib: Option<u64>,
}

/// The `value` of the first `key: value` line of `/proc/cpuinfo` whose key is `key`.
fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// The KiB figure of the `key` line of a meminfo file (`MemTotal:   8148128 kB`).
fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim_end().ends_with(key) {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// The CPUs and NUMA nodes seen under `root`.
pub(super) fn detect(root: &Path) -> (Cpu, Vec<NumaNode>) {
    let cpu_dir = under(root, "/sys/devices/system/cpu");
    let mut online = text(&cpu_dir.join("online"))
        .map(|s| cpulist(&s))
        .unwrap_or_default();
    if online.is_empty() {
        online = entries(&cpu_dir)
            .iter()
            .filter_map(|n| n.strip_prefix("cpu")?.parse().ok())
            .collect();
    }
    let cpuinfo = text(&under(root, "/proc/cpuinfo")).unwrap_or_default();
    if online.is_empty() {
        // Neither sysfs list is readable: count processors in /proc/cpuinfo.
        let n = cpuinfo
            .lines()
            .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
            .count();
        online = (0..n as u32).collect();
    }
    let mut packages = Vec::new();
    let mut cores = Vec::new();
    for c in &online {
        let topo = cpu_dir.join(format!("cpu{c}/topology"));
        if let Some(p) = number(&topo.join("physical_package_id")) {
            packages.push(p);
            if let Some(core) = number(&topo.join("core_id")) {
                cores.push((p, core));
            }
        }
    }
    packages.sort_unstable();
    packages.dedup();
    cores.sort_unstable();
    cores.dedup();
    let cpu = Cpu {
        model: cpuinfo_field(&cpuinfo, "model name")
            .or_else(|| cpuinfo_field(&cpuinfo, "Model"))
            .or_else(|| cpuinfo_field(&cpuinfo, "cpu model")),
        vendor: cpuinfo_field(&cpuinfo, "vendor_id")
            .or_else(|| cpuinfo_field(&cpuinfo, "CPU implementer")),
        online: online.len() as u32,
        sockets: packages.len() as u32,
        cores: cores.len() as u32,
    };

    let node_dir = under(root, "/sys/devices/system/node");
    let mut nodes: Vec<NumaNode> = entries(&node_dir)
        .iter()
        .filter_map(|n| n.strip_prefix("node")?.parse::<u32>().ok())
        .map(|id| {
            let dir = node_dir.join(format!("node{id}"));
            NumaNode {
                id,
                cpus: text(&dir.join("cpulist"))
                    .map(|s| cpulist(&s))
                    .unwrap_or_default(),
                memory_kib: text(&dir.join("meminfo")).and_then(|m| meminfo_kib(&m, "MemTotal")),
            }
        })
        .collect();
    if nodes.is_empty() {
        // Kernels without NUMA support have no node directory: the machine is one node.
        nodes.push(NumaNode {
            id: 0,
            cpus: online,
            memory_kib: text(&under(root, "/proc/meminfo"))
                .and_then(|m| meminfo_kib(&m, "MemTotal")),
        });
    }
    (cpu, nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_cpuinfo_fields() {
        let m = "Node 1 MemFree: 5 kB\nNode 1 MemTotal:       8148128 kB\n";
        assert_eq!(meminfo_kib(m, "MemTotal"), Some(8148128));
        assert_eq!(meminfo_kib("MemTotal: 42 kB", "MemTotal"), Some(42));
        assert_eq!(meminfo_kib("nothing", "MemTotal"), None);
        let c = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\n";
        assert_eq!(cpuinfo_field(c, "model name").as_deref(), Some("Xeon"));
        assert_eq!(cpuinfo_field(c, "model"), None);
    }
}
