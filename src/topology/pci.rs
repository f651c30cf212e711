//! The PCI tree: every function under `/sys/bus/pci/devices`, its parent (the PCI function
//! above it in the resolved `/sys/devices/pci*` path), class, ids, NUMA node and link.

use super::sysfs::{entries, is_bdf, number, text, under};
use std::path::Path;

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// Its address, `0000:3b:00.0`.
    pub bdf: String,
    /// The bridge or port above it (`None` for functions on a root bus).
    pub parent: Option<String>,
    /// Class code, 24 bits (`0x020000`: Ethernet controller; `0x0604xx`: PCI bridge).
    pub class: Option<u32>,
    /// Vendor id (`0x10de`: NVIDIA, `0x15b3`: Mellanox).
    pub vendor: Option<u16>,
    /// Device id.
    pub device: Option<u16>,
    /// NUMA node (`None` where the firmware does not say, sysfs's -1).
    pub numa: Option<u32>,
    /// Current and maximum link speed and width.
    pub link: PciLink,
}

/// A PCI Express link as sysfs reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciLink {
    /// `current_link_speed`, as the kernel writes it (`16.0 GT/s PCIe`).
    pub speed: Option<String>,
    /// `current_link_width` (lanes).
    pub width: Option<u32>,
    /// `max_link_speed`.
    pub max_speed: Option<String>,
    /// `max_link_width`.
    pub max_width: Option<u32>,
}

impl PciDevice {
    /// Whether it is a PCI-to-PCI bridge or a PCIe port (class 0x0604).
    pub fn is_bridge(&self) -> bool {
        self.class.is_some_and(|c| c >> 8 == 0x0604)
    }

    /// A short name for its class.
    pub fn class_name(&self) -> &'static str {
        match self.class.map(|c| c >> 8) {
            Some(0x0604) => "bridge",
            Some(0x0600) => "host bridge",
            Some(0x0200) => "ethernet",
            Some(0x0207) => "infiniband",
            Some(0x0280) => "network",
            Some(0x0300) => "vga",
            Some(0x0302) => "3d controller",
            Some(0x0108) => "nvme",
            Some(0x0106) => "sata",
            Some(0x0100) => "scsi",
            Some(0x0c03) => "usb",
            Some(0x1200) => "accelerator",
            Some(c) if c >> 8 == 0x06 => "bridge (other)",
            Some(c) if c >> 8 == 0x02 => "network (other)",
            Some(c) if c >> 8 == 0x01 => "storage",
            _ => "other",
        }
    }
}

/// A speed/width file's value, with the kernel's placeholders dropped.
fn link_text(dir: &Path, file: &str) -> Option<String> {
    text(&dir.join(file)).filter(|s| !s.starts_with("Unknown") && s != "255")
}

/// Every PCI function under `root` (empty when `/sys/bus/pci` is absent, as in some
/// containers).
pub(super) fn detect(root: &Path) -> Vec<PciDevice> {
    let bus = under(root, "/sys/bus/pci/devices");
    entries(&bus)
        .into_iter()
        .filter(|n| is_bdf(n))
        .map(|bdf| {
            let dir = bus.join(&bdf);
            // The function above this one in the resolved path (…/0000:00:01.0/0000:01:00.0).
            let parent = std::fs::canonicalize(&dir).ok().and_then(|real| {
                let up = real.parent()?.file_name()?.to_str()?;
                is_bdf(up).then(|| up.to_owned())
            });
            let width = |f: &str| {
                link_text(&dir, f)
                    .and_then(|s| s.parse().ok())
                    .filter(|&w| w > 0)
            };
            PciDevice {
                parent,
                class: number(&dir.join("class")).map(|c| c as u32),
                vendor: number(&dir.join("vendor")).map(|v| v as u16),
                device: number(&dir.join("device")).map(|v| v as u16),
                numa: number(&dir.join("numa_node")).and_then(|n| u32::try_from(n).ok()),
                link: PciLink {
                    speed: link_text(&dir, "current_link_speed"),
                    width: width("current_link_width"),
                    max_speed: link_text(&dir, "max_link_speed"),
                    max_width: width("max_link_width"),
                },
                bdf,
            }
        })
        .collect()
}
