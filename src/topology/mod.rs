//! Topology detection: what this host has (CPUs and NUMA nodes, the PCI tree, NICs,
//! InfiniBand/RoCE devices, GPUs) and who it is, read from sysfs and procfs as NCCL does
//! (no hwloc), plus the choice of the interface ranks listen on.
//!
//! - [`detect`] reads this host; [`detect_at`] reads a tree laid out like `/` under another
//!   root (tests build fake sysfs trees). Nothing here fails on odd or missing files: an
//!   absent file is an absent field, a container without `/sys/bus/pci` has no PCI tree.
//! - A [`Topology`] prints as a readable tree (`Display`) and dumps as XML
//!   ([`Topology::to_xml`]) or JSON ([`Topology::to_json`]); `OXCCL_TOPO_DUMP_FILE` makes
//!   every host write its dump at communicator creation ([`write_dump`]).
//! - [`IfnameSpec`] parses `OXCCL_SOCKET_IFNAME`; [`listen_ip`] picks the address a rank
//!   listens on and advertises.
//!
//! The communicator fuses the hosts' identities into a [`crate::NodeMap`]; `oxccl-topo`
//! gathers every rank's dump to print the cluster.

mod cpu;
mod display;
mod dump;
mod gpu;
mod host;
mod ib;
mod ifname;
mod net;
mod pci;
mod select;
mod sysfs;
#[cfg(test)]
mod tests;
mod xml;

pub use cpu::{Cpu, NumaNode};
pub(crate) use dump::dump_at_init;
pub use dump::{dump_path, write_dump};
pub use gpu::Gpu;
pub use host::{hostname_part, Host};
pub use ib::{IbDevice, IbPort};
pub use ifname::IfnameSpec;
pub use net::{Address, Nic, NicKind};
pub use pci::{PciDevice, PciLink};
pub use select::{listen_ip, rendezvous_ip, select_interface};

use crate::error::{Error, Result};
use std::path::Path;

/// What one host has, as one rank sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Topology {
    /// Who the host is.
    pub host: Host,
    /// Its processors.
    pub cpu: Cpu,
    /// Its NUMA nodes (one when the kernel has no NUMA support).
    pub numa: Vec<NumaNode>,
    /// Every PCI function, in address order.
    pub pci: Vec<PciDevice>,
    /// Every network interface.
    pub nics: Vec<Nic>,
    /// RDMA devices.
    pub ib: Vec<IbDevice>,
    /// NVIDIA GPUs.
    pub gpus: Vec<Gpu>,
}

/// This host's topology: sysfs and procfs under `/`, the interfaces' addresses, and the
/// host identity (`OXCCL_HOSTNAME` overrides the kernel's hostname and boot id).
pub fn detect() -> Result<Topology> {
    let over = std::env::var("OXCCL_HOSTNAME").ok();
    let over = over.as_deref().map(str::trim).filter(|h| !h.is_empty());
    detect_for(over)
}

/// Like [`detect`], with the host identity override given (the communicator passes its
/// configuration's `OXCCL_HOSTNAME`).
pub fn detect_for(hostname: Option<&str>) -> Result<Topology> {
    let mut t = read(Path::new("/"), hostname)?;
    t.set_addresses(&oxccl_transports::ifaddrs::interface_addrs());
    Ok(t)
}

/// The topology of a tree laid out like `/` under `root` (its `sys/` and `proc/`), without
/// interface addresses (those come from the kernel, not from files). Fails only when
/// `root` is not a directory.
pub fn detect_at(root: &Path) -> Result<Topology> {
    read(root, None)
}

fn read(root: &Path, hostname: Option<&str>) -> Result<Topology> {
    if !root.is_dir() {
        return Err(Error::invalid(
            "topology::detect_at",
            format!("{} is not a directory", root.display()),
        ));
    }
    let (cpu, numa) = cpu::detect(root);
    let pci = pci::detect(root);
    let nics = net::detect(root, &pci);
    let ib = ib::detect(root, &pci);
    let gpus = gpu::detect(root, &pci);
    Ok(Topology {
        host: host::detect(root, hostname),
        cpu,
        numa,
        pci,
        nics,
        ib,
        gpus,
    })
}

/// This host's identity as ranks compare it: `over` (`OXCCL_HOSTNAME`) when set, else the
/// kernel hostname and boot id joined by `/`.
pub fn host_identity(over: Option<&str>) -> String {
    host::detect(Path::new("/"), over).identity
}

impl Topology {
    /// Replaces the NICs' addresses with `addrs` (an interface sysfs does not list is added).
    pub fn set_addresses(&mut self, addrs: &[oxccl_transports::ifaddrs::InterfaceAddr]) {
        for n in &mut self.nics {
            n.addrs.clear();
        }
        net::attach_addresses(&mut self.nics, addrs);
    }

    /// The PCI function `bdf`.
    pub fn pci_device(&self, bdf: &str) -> Option<&PciDevice> {
        self.pci.iter().find(|d| d.bdf == bdf)
    }

    /// The NUMA node of PCI function `bdf`: its own, else its nearest ancestor's, else the
    /// only node when there is one.
    pub fn numa_of_pci(&self, bdf: &str) -> Option<u32> {
        let mut cur = self.pci_device(bdf);
        // Parents form a tree from resolved paths; the bound guards against a corrupt one.
        for _ in 0..64 {
            let Some(d) = cur else { break };
            if d.numa.is_some() {
                return d.numa;
            }
            cur = d.parent.as_deref().and_then(|p| self.pci_device(p));
        }
        (self.numa.len() == 1).then(|| self.numa[0].id)
    }
}
