//! NVIDIA GPUs, from sysfs and procfs only: PCI functions of vendor 0x10de with a display
//! class (0x0300 VGA, 0x0302 3D controller), named from the driver's
//! `/proc/driver/nvidia/gpus/<bdf>/information` when it is loaded.
//!
//! NVML is not loaded: that needs `unsafe` (dynamic loading), which this crate forbids, and
//! sysfs already gives what the topology needs (PCI position, link, NUMA node).

use super::pci::PciDevice;
use super::sysfs::{text, under};
use std::path::Path;

/// NVIDIA's PCI vendor id.
const NVIDIA: u16 = 0x10de;

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// Its PCI address.
    pub pci: String,
    /// PCI device id.
    pub device: Option<u16>,
    /// Model from the NVIDIA driver's procfs (`None` without the driver).
    pub model: Option<String>,
    /// NUMA node of its PCI function.
    pub numa: Option<u32>,
}

/// The NVIDIA GPUs among `pci`, named from the driver's procfs under `root` where present.
pub(super) fn detect(root: &Path, pci: &[PciDevice]) -> Vec<Gpu> {
    pci.iter()
        .filter(|d| {
            d.vendor == Some(NVIDIA) && matches!(d.class.map(|c| c >> 8), Some(0x0300 | 0x0302))
        })
        .map(|d| {
            let info = under(root, "/proc/driver/nvidia/gpus")
                .join(&d.bdf)
                .join("information");
            let model = text(&info).and_then(|s| {
                s.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == "Model").then(|| v.trim().to_owned())
                })
            });
            Gpu {
                pci: d.bdf.clone(),
                device: d.device,
                model,
                numa: d.numa,
            }
        })
        .collect()
}
