//! InfiniBand and RoCE devices: `/sys/class/infiniband/<dev>` (GUID, firmware, PCI function
//! through `device`) and each port's state, rate, link layer, GIDs and network device.

use super::sysfs::{entries, number, pci_of, text, under};
use std::path::Path;

/// GID table entries read per port: real ports have 128 or more, almost all unused.
const MAX_GIDS: usize = 16;

/// One RDMA device (an HCA, or a soft-RoCE device over a NIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IbDevice {
    /// Device name (`mlx5_0`, `rxe0`).
    pub name: String,
    /// `node_guid`.
    pub node_guid: Option<String>,
    /// `fw_ver`.
    pub firmware: Option<String>,
    /// The PCI function behind it (`None` for software devices).
    pub pci: Option<String>,
    /// NUMA node of that function.
    pub numa: Option<u32>,
    /// Its ports.
    pub ports: Vec<IbPort>,
}

/// One port of an RDMA device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IbPort {
    /// Port number (from 1).
    pub num: u32,
    /// `state` without its number (`ACTIVE`, `DOWN`).
    pub state: Option<String>,
    /// `rate` as the kernel writes it (`200 Gb/sec (4X HDR)`).
    pub rate: Option<String>,
    /// `link_layer`: `InfiniBand` or `Ethernet` (RoCE).
    pub link_layer: Option<String>,
    /// The non-zero GIDs among the first entries of the table.
    pub gids: Vec<String>,
    /// The network interface of this port (RoCE, IPoIB).
    pub netdev: Option<String>,
}

/// `4: ACTIVE` → `ACTIVE`.
fn strip_number(s: String) -> String {
    match s.split_once(':') {
        Some((n, rest)) if n.trim().parse::<u32>().is_ok() => rest.trim().to_owned(),
        _ => s,
    }
}

/// Every RDMA device under `root` (empty without `/sys/class/infiniband`).
pub(super) fn detect(root: &Path, pci: &[super::PciDevice]) -> Vec<IbDevice> {
    let class = under(root, "/sys/class/infiniband");
    entries(&class)
        .into_iter()
        .map(|name| {
            let dir = class.join(&name);
            let device = dir.join("device");
            let pci_addr = pci_of(&device);
            let numa = pci_addr
                .as_ref()
                .and_then(|b| pci.iter().find(|d| &d.bdf == b))
                .and_then(|d| d.numa)
                .or_else(|| number(&device.join("numa_node")).and_then(|n| u32::try_from(n).ok()));
            // Netdevs of the PCI function, for ports that do not name their own.
            let device_nets = entries(&device.join("net"));
            let ports = entries(&dir.join("ports"))
                .into_iter()
                .filter_map(|p| Some((p.parse::<u32>().ok()?, dir.join("ports").join(p))))
                .map(|(num, pdir)| IbPort {
                    num,
                    state: text(&pdir.join("state")).map(strip_number),
                    rate: text(&pdir.join("rate")),
                    link_layer: text(&pdir.join("link_layer")),
                    gids: (0..MAX_GIDS)
                        .filter_map(|i| text(&pdir.join(format!("gids/{i}"))))
                        .filter(|g| g.chars().any(|c| c != '0' && c != ':'))
                        .collect(),
                    netdev: text(&pdir.join("gid_attrs/ndevs/0"))
                        .or_else(|| {
                            let i = (num as usize).checked_sub(1)?;
                            device_nets.get(i).cloned()
                        })
                        .or_else(|| device_nets.first().cloned()),
                })
                .collect();
            IbDevice {
                node_guid: text(&dir.join("node_guid")),
                firmware: text(&dir.join("fw_ver")),
                pci: pci_addr,
                numa,
                ports,
                name,
            }
        })
        .collect()
}
