//! The readable tree (`Display`): machine → NUMA nodes → the PCI branches that lead to a
//! NIC, HCA or GPU → those devices; PCI functions without one are only counted.

use super::sysfs::cpulist_text;
use super::{IbDevice, Nic, PciDevice, Topology};
use std::fmt::{self, Write};

/// PCI nesting deeper than this is treated as a loop (real trees are under 10 deep).
const MAX_DEPTH: usize = 32;

impl Topology {
    /// The PCI functions whose parent is `bdf`.
    pub(super) fn pci_children(&self, bdf: &str) -> Vec<&PciDevice> {
        self.pci
            .iter()
            .filter(|d| d.parent.as_deref() == Some(bdf))
            .collect()
    }

    /// Whether `pci` names a function of the PCI tree.
    pub(super) fn on_pci(&self, pci: Option<&str>) -> bool {
        pci.is_some_and(|b| self.pci_device(b).is_some())
    }

    /// Every NUMA node with the PCI roots (functions without a parent in the tree) that sit
    /// on it, then `None` with those whose node is unknown, if any.
    pub(super) fn pci_roots_by_numa(&self) -> Vec<(Option<u32>, Vec<&PciDevice>)> {
        let roots: Vec<&PciDevice> = self
            .pci
            .iter()
            .filter(|d| !self.on_pci(d.parent.as_deref()))
            .collect();
        let mut out: Vec<(Option<u32>, Vec<&PciDevice>)> = self
            .numa
            .iter()
            .map(|n| {
                let on: Vec<&PciDevice> = roots
                    .iter()
                    .copied()
                    .filter(|r| self.numa_of_pci(&r.bdf) == Some(n.id))
                    .collect();
                (Some(n.id), on)
            })
            .collect();
        let known: Vec<u32> = self.numa.iter().map(|n| n.id).collect();
        let lost: Vec<&PciDevice> = roots
            .into_iter()
            .filter(|r| !self.numa_of_pci(&r.bdf).is_some_and(|n| known.contains(&n)))
            .collect();
        if !lost.is_empty() {
            out.push((None, lost));
        }
        out
    }

    /// Whether a NIC, HCA or GPU sits on `bdf` or below it.
    fn holds_device(&self, bdf: &str, depth: usize) -> bool {
        depth < MAX_DEPTH
            && (self.nics.iter().any(|n| n.pci.as_deref() == Some(bdf))
                || self.ib.iter().any(|i| i.pci.as_deref() == Some(bdf))
                || self.gpus.iter().any(|g| g.pci == bdf)
                || self
                    .pci_children(bdf)
                    .iter()
                    .any(|c| self.holds_device(&c.bdf, depth + 1)))
    }

    fn fmt_pci(&self, f: &mut String, d: &PciDevice, depth: usize) -> fmt::Result {
        let pad = "  ".repeat(depth + 1);
        write!(f, "{pad}pci {} {}", d.bdf, d.class_name())?;
        if let (Some(v), Some(dev)) = (d.vendor, d.device) {
            write!(f, " {v:04x}:{dev:04x}")?;
        }
        match (&d.link.speed, d.link.width) {
            (Some(s), Some(w)) => write!(f, " link {s} x{w}")?,
            (Some(s), None) => write!(f, " link {s}")?,
            _ => {}
        }
        if let (Some(ms), Some(mw)) = (&d.link.max_speed, d.link.max_width) {
            write!(f, " (max {ms} x{mw})")?;
        }
        writeln!(f)?;
        for n in self
            .nics
            .iter()
            .filter(|n| n.pci.as_deref() == Some(&d.bdf))
        {
            fmt_nic(f, n, depth + 1)?;
        }
        for i in self.ib.iter().filter(|i| i.pci.as_deref() == Some(&d.bdf)) {
            fmt_ib(f, i, depth + 1)?;
        }
        for g in self.gpus.iter().filter(|g| g.pci == d.bdf) {
            let model = g.model.as_deref().unwrap_or("NVIDIA GPU");
            writeln!(f, "{pad}  gpu {model}")?;
        }
        if depth < MAX_DEPTH {
            for c in self.pci_children(&d.bdf) {
                if self.holds_device(&c.bdf, depth) {
                    self.fmt_pci(f, c, depth + 1)?;
                }
            }
        }
        Ok(())
    }
}

fn fmt_nic(f: &mut String, n: &Nic, depth: usize) -> fmt::Result {
    let pad = "  ".repeat(depth + 1);
    write!(
        f,
        "{pad}nic {} {} {}",
        n.name,
        n.kind.as_str(),
        n.state.as_deref().unwrap_or("?")
    )?;
    if let Some(s) = n.speed_mbps {
        write!(f, " {s} Mb/s")?;
    }
    if let Some(m) = n.mtu {
        write!(f, " mtu {m}")?;
    }
    for a in &n.addrs {
        write!(f, " {a}")?;
    }
    writeln!(f)
}

fn fmt_ib(f: &mut String, d: &IbDevice, depth: usize) -> fmt::Result {
    let pad = "  ".repeat(depth + 1);
    writeln!(
        f,
        "{pad}ib {}{}",
        d.name,
        d.firmware
            .as_ref()
            .map(|v| format!(" fw {v}"))
            .unwrap_or_default()
    )?;
    for p in &d.ports {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
        write!(
            f,
            "{pad}  port {} {} {} {}",
            p.num,
            opt(&p.state),
            opt(&p.link_layer),
            opt(&p.rate)
        )?;
        if let Some(n) = &p.netdev {
            write!(f, " netdev {n}")?;
        }
        writeln!(f, " ({} gids)", p.gids.len())?;
    }
    Ok(())
}

impl fmt::Display for Topology {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = String::new();
        let h = &self.host;
        writeln!(f, "host {} (identity {})", h.hostname, h.identity)?;
        let c = &self.cpu;
        write!(
            f,
            "cpus: {} online, {} sockets, {} cores",
            c.online, c.sockets, c.cores
        )?;
        if let Some(m) = &c.model {
            write!(f, ", {m}")?;
        }
        writeln!(f)?;
        for (node, roots) in self.pci_roots_by_numa() {
            match node.and_then(|id| self.numa.iter().find(|n| n.id == id)) {
                Some(n) => {
                    write!(f, "numa {}: cpus {}", n.id, cpulist_text(&n.cpus))?;
                    if let Some(kib) = n.memory_kib {
                        write!(f, ", {:.1} GiB", kib as f64 / (1u64 << 20) as f64)?;
                    }
                    writeln!(f)?;
                }
                None => writeln!(f, "numa unknown:")?,
            }
            let (shown, hidden): (Vec<_>, Vec<_>) = roots
                .into_iter()
                .partition(|r| self.holds_device(&r.bdf, 0));
            for r in shown {
                self.fmt_pci(&mut f, r, 0)?;
            }
            if !hidden.is_empty() {
                writeln!(
                    f,
                    "  ({} more PCI root functions without a NIC, HCA or GPU)",
                    hidden.len()
                )?;
            }
        }
        let loose: Vec<&Nic> = self
            .nics
            .iter()
            .filter(|n| !self.on_pci(n.pci.as_deref()))
            .collect();
        let loose_ib: Vec<&IbDevice> = self
            .ib
            .iter()
            .filter(|i| !self.on_pci(i.pci.as_deref()))
            .collect();
        if !loose.is_empty() || !loose_ib.is_empty() {
            writeln!(f, "not on PCI:")?;
            for n in loose {
                fmt_nic(&mut f, n, 0)?;
            }
            for i in loose_ib {
                fmt_ib(&mut f, i, 0)?;
            }
        }
        writeln!(
            f,
            "{} PCI functions, {} NICs, {} RDMA devices, {} GPUs",
            self.pci.len(),
            self.nics.len(),
            self.ib.len(),
            self.gpus.len()
        )?;
        out.write_str(&f)
    }
}
