//! Network interfaces: `/sys/class/net/<name>` (state, speed, MTU, MAC, type), whether the
//! device is virtual (it resolves under `/sys/devices/virtual/net`) and what kind, its PCI
//! function and NUMA node through the `device` link; addresses come from `getifaddrs`.

use super::sysfs::{entries, number, pci_of, text, under};
use std::net::IpAddr;
use std::path::Path;

/// What kind of interface it is; selection skips loopback and bridges by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicKind {
    /// A device with hardware behind it (PCI, virtio, USB).
    Physical,
    /// The loopback interface.
    Loopback,
    /// A software bridge (`docker0`, `br-…`, `virbr0`).
    Bridge,
    /// One end of a veth pair (containers, network namespaces).
    Veth,
    /// A TUN/TAP device.
    Tun,
    /// Another software device (bond, vlan, ifb, dummy, …).
    Virtual,
}

impl NicKind {
    /// Lower-case name used in dumps.
    pub fn as_str(self) -> &'static str {
        match self {
            NicKind::Physical => "physical",
            NicKind::Loopback => "loopback",
            NicKind::Bridge => "bridge",
            NicKind::Veth => "veth",
            NicKind::Tun => "tun",
            NicKind::Virtual => "virtual",
        }
    }
}

/// One address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The address.
    pub ip: IpAddr,
    /// Netmask prefix length.
    pub prefix: Option<u8>,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix {
            Some(p) => write!(f, "{}/{p}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// Its kind.
    pub kind: NicKind,
    /// `operstate` (`up`, `down`, `unknown`: loopback reports unknown while working).
    pub state: Option<String>,
    /// Link speed in Mb/s (`None` when down, virtual or unreported).
    pub speed_mbps: Option<u64>,
    /// MTU in bytes.
    pub mtu: Option<u32>,
    /// Hardware address.
    pub mac: Option<String>,
    /// The PCI function behind it.
    pub pci: Option<String>,
    /// Its NUMA node (from its PCI function, else its device).
    pub numa: Option<u32>,
    /// Its IPv4 and IPv6 addresses.
    pub addrs: Vec<Address>,
}

impl Nic {
    /// Whether it can carry traffic: `up`, or `unknown` (loopback and some virtual devices
    /// never report `up`).
    pub fn is_up(&self) -> bool {
        matches!(self.state.as_deref(), Some("up" | "unknown"))
    }

    /// Its first IPv4 address.
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.addrs.iter().map(|a| a.ip).find(IpAddr::is_ipv4)
    }
}

/// The kind of interface `name` whose sysfs directory is `dir`.
fn kind(name: &str, dir: &Path) -> NicKind {
    let virtual_dev = std::fs::canonicalize(dir)
        .map(|p| p.to_string_lossy().contains("/devices/virtual/"))
        .unwrap_or(true);
    // ARPHRD_LOOPBACK
    if number(&dir.join("type")) == Some(772) || name == "lo" {
        NicKind::Loopback
    } else if dir.join("bridge").is_dir()
        || ["docker", "br-", "virbr", "cni", "flannel"]
            .iter()
            .any(|p| name.starts_with(p))
    {
        NicKind::Bridge
    } else if !virtual_dev && dir.join("device").exists() {
        NicKind::Physical
    } else if name.starts_with("veth")
        || text(&dir.join("uevent")).is_some_and(|u| u.contains("DEVTYPE=veth"))
    {
        NicKind::Veth
    } else if dir.join("tun_flags").exists() {
        NicKind::Tun
    } else {
        NicKind::Virtual
    }
}

/// Every interface under `root`, without addresses (see [`attach_addresses`]).
pub(super) fn detect(root: &Path, pci: &[super::PciDevice]) -> Vec<Nic> {
    let class = under(root, "/sys/class/net");
    entries(&class)
        .into_iter()
        .filter(|n| class.join(n).is_dir())
        .map(|name| {
            let dir = class.join(&name);
            let device = dir.join("device");
            let pci_addr = pci_of(&device);
            let numa = pci_addr
                .as_ref()
                .and_then(|b| pci.iter().find(|d| &d.bdf == b))
                .and_then(|d| d.numa)
                .or_else(|| number(&device.join("numa_node")).and_then(|n| u32::try_from(n).ok()));
            Nic {
                kind: kind(&name, &dir),
                state: text(&dir.join("operstate")),
                speed_mbps: number(&dir.join("speed"))
                    .and_then(|s| u64::try_from(s).ok())
                    .filter(|&s| s > 0),
                mtu: number(&dir.join("mtu")).and_then(|m| u32::try_from(m).ok()),
                mac: text(&dir.join("address")).filter(|m| m != "00:00:00:00:00:00"),
                pci: pci_addr,
                numa,
                addrs: Vec::new(),
                name,
            }
        })
        .collect()
}

/// Gives each NIC its addresses from `addrs`; an address on an interface sysfs did not list
/// (a stricter container) adds a NIC of unknown kind rather than being lost.
pub(super) fn attach_addresses(
    nics: &mut Vec<Nic>,
    addrs: &[oxccl_transports::ifaddrs::InterfaceAddr],
) {
    for a in addrs {
        let i = match nics.iter().position(|n| n.name == a.name) {
            Some(i) => i,
            None => {
                nics.push(Nic {
                    name: a.name.clone(),
                    kind: if a.ip.is_loopback() {
                        NicKind::Loopback
                    } else {
                        NicKind::Virtual
                    },
                    state: Some(if a.up { "up" } else { "down" }.into()),
                    speed_mbps: None,
                    mtu: None,
                    mac: None,
                    pci: None,
                    numa: None,
                    addrs: Vec::new(),
                });
                nics.len() - 1
            }
        };
        let addr = Address {
            ip: a.ip,
            prefix: a.prefix,
        };
        if !nics[i].addrs.contains(&addr) {
            nics[i].addrs.push(addr);
        }
    }
}
