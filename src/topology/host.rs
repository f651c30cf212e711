//! Host identity: the kernel hostname plus the boot id (two containers with the same
//! hostname on different machines must not try shared memory), or `OXCCL_HOSTNAME`.

use super::sysfs::{text, under};
use std::path::Path;

/// Who this host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The kernel hostname, or the part of `OXCCL_HOSTNAME` before any `/`.
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id` (`None` where hidden).
    pub boot_id: Option<String>,
    /// The identity ranks compare to find the ranks of their node.
    pub identity: String,
}

/// This host's identity under `root`, `OXCCL_HOSTNAME`'s value `over` replacing it.
pub(super) fn detect(root: &Path, over: Option<&str>) -> Host {
    let kernel = text(&under(root, "/proc/sys/kernel/hostname")).unwrap_or_default();
    let boot_id = text(&under(root, "/proc/sys/kernel/random/boot_id"));
    let identity = match over {
        Some(h) => h.to_owned(),
        None => format!("{kernel}/{}", boot_id.as_deref().unwrap_or("")),
    };
    Host {
        hostname: hostname_part(&identity).to_owned(),
        boot_id,
        identity,
    }
}

/// The hostname part of an identity (`node1/3f2a…` → `node1`).
pub fn hostname_part(identity: &str) -> &str {
    identity.split('/').next().unwrap_or(identity)
}
