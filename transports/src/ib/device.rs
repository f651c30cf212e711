//! Finding the RDMA ports to use: `OXCCL_IB_HCA` filtering, port state, link layer, GID
//! choice for RoCE, active MTU.

use std::path::Path;
use std::sync::Arc;

use super::resources::Device;
use super::verbs::{self, Verbs};
use super::IbSettings;
use crate::{Error, Result};

/// GID table entries examined per port (real ports have 128 or more, almost all unused).
const MAX_GID_SCAN: i32 = 64;

/// `OXCCL_IB_HCA` / `NCCL_IB_HCA`: which devices and ports to use.
///
/// A comma list of `name[:port]` entries. Names match as prefixes (`mlx5` selects `mlx5_0`
/// and `mlx5_1`), or exactly when the list starts with `=`. A leading `^` turns the list into
/// one of devices to avoid (`^mlx5_1`, `^=mlx5_1:2`). Without a port, every port matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HcaSpec {
    exclude: bool,
    exact: bool,
    entries: Vec<(String, Option<u8>)>,
}

impl HcaSpec {
    /// Parses the setting; the error says what is wrong with it.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut rest = text.trim();
        let exclude = rest.starts_with('^');
        if exclude {
            rest = &rest[1..];
        }
        let exact = rest.starts_with('=');
        if exact {
            rest = &rest[1..];
        }
        let mut entries = Vec::new();
        for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, port) = match item.split_once(':') {
                Some((n, p)) => {
                    let port: u8 =
                        p.trim().parse().ok().filter(|&p| p > 0).ok_or_else(|| {
                            format!("port {p:?} of {item:?} is not a number 1..=255")
                        })?;
                    (n.trim(), Some(port))
                }
                None => (item, None),
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(format!(
                    "{item:?} is not a device name like mlx5_0 or mlx5_0:1"
                ));
            }
            entries.push((name.to_owned(), port));
        }
        if entries.is_empty() {
            return Err("no device named (expected e.g. mlx5_0:1,mlx5_1 or ^mlx5_2)".into());
        }
        Ok(Self {
            exclude,
            exact,
            entries,
        })
    }

    /// Whether port `port` of device `name` may be used.
    pub fn allows(&self, name: &str, port: u8) -> bool {
        let hit = self.entries.iter().any(|(n, p)| {
            let name_ok = if self.exact {
                name == n
            } else {
                name.starts_with(n.as_str())
            };
            name_ok && p.is_none_or(|p| p == port)
        });
        hit != self.exclude
    }
}

/// `ibv_mtu` values (1 = 256 bytes … 5 = 4096 bytes) in bytes.
pub fn mtu_bytes(mtu: u32) -> u32 {
    match mtu {
        1..=5 => 128 << mtu,
        _ => 0,
    }
}

/// One usable port: active, with an address oxccl can route to.
#[derive(Debug, Clone)]
pub struct Port {
    pub(crate) dev: Arc<Device>,
    pub(crate) num: u8,
    /// InfiniBand (`false`) or RoCE (`true`).
    pub(crate) roce: bool,
    pub(crate) lid: u16,
    /// The GID index used (RoCE) and its GID.
    pub(crate) gid_index: Option<u8>,
    pub(crate) gid: verbs::ibv_gid,
    /// `ibv_mtu` value.
    pub(crate) active_mtu: u32,
}

impl Port {
    /// `rxe0:1 (RoCE v2, GID index 1 ::ffff:10.0.2.15, MTU 1024)`.
    pub fn describe(&self) -> String {
        let addr = match self.gid_index {
            Some(i) => format!("RoCE, GID index {i} {}", format_gid(&self.gid.raw)),
            None => format!("InfiniBand, LID {}", self.lid),
        };
        format!(
            "{}:{} ({addr}, MTU {})",
            self.dev.name,
            self.num,
            mtu_bytes(self.active_mtu)
        )
    }

    /// The device name.
    pub fn device_name(&self) -> &str {
        &self.dev.name
    }
}

/// A GID as text: `::ffff:10.0.2.15` for IPv4-mapped ones, else eight hex groups.
pub fn format_gid(gid: &[u8; 16]) -> String {
    let ip = std::net::Ipv6Addr::from(*gid);
    match ip.to_ipv4_mapped() {
        Some(v4) => format!("::ffff:{v4}"),
        None => ip.to_string(),
    }
}

/// The active ports `settings` allow, in device-name then port order. An error explains
/// why there is none (no library, no device, none allowed, none active).
pub fn usable_ports(settings: &IbSettings) -> Result<Vec<Port>> {
    let verbs = Verbs::get()?;
    let mut n = 0;
    // SAFETY: `n` receives the count; the list is freed below after copying what we use.
    let list = unsafe { (verbs.get_device_list)(&mut n) };
    if list.is_null() || n <= 0 {
        if !list.is_null() {
            // SAFETY: returned by get_device_list.
            unsafe { (verbs.free_device_list)(list) };
        }
        return Err(Error::Config(
            "no IB device: libibverbs lists no RDMA device (is the driver loaded? `rdma link` \
             shows soft-RoCE links)"
                .into(),
        ));
    }
    let mut seen = Vec::new();
    let mut ports = Vec::new();
    let mut devices: Vec<*mut verbs::ibv_device> = (0..n as usize)
        // SAFETY: `list` has `n` entries.
        .map(|i| unsafe { *list.add(i) })
        .collect();
    let name_of = |d: *mut verbs::ibv_device| {
        // SAFETY: `d` is a live list entry.
        unsafe { std::ffi::CStr::from_ptr((verbs.get_device_name)(d)) }
            .to_string_lossy()
            .into_owned()
    };
    devices.sort_by_key(|&d| name_of(d));
    for d in devices {
        let name = name_of(d);
        let candidates: Vec<u8> = port_numbers(&name)
            .into_iter()
            .filter(|&p| settings.hca.as_ref().is_none_or(|s| s.allows(&name, p)))
            .collect();
        if candidates.is_empty() {
            seen.push(format!("{name}: not selected by OXCCL_IB_HCA"));
            continue;
        }
        // SAFETY: `d` is a live list entry.
        let dev = match unsafe { Device::open(verbs, d) } {
            Ok(dev) => Arc::new(dev),
            Err(e) => {
                seen.push(format!("{name}: {e}"));
                continue;
            }
        };
        for num in candidates {
            match probe_port(&dev, num, settings) {
                Ok(p) => ports.push(p),
                Err(why) => seen.push(format!("{name}:{num}: {why}")),
            }
        }
    }
    // SAFETY: returned by get_device_list; opened devices stay valid after the list is freed.
    unsafe { (verbs.free_device_list)(list) };
    if ports.is_empty() {
        return Err(Error::Config(format!(
            "no IB device is usable: {}",
            seen.join("; ")
        )));
    }
    Ok(ports)
}

/// Port numbers of `name` from sysfs (`1` where sysfs says nothing).
fn port_numbers(name: &str) -> Vec<u8> {
    let dir = Path::new("/sys/class/infiniband").join(name).join("ports");
    let mut v: Vec<u8> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    if v.is_empty() {
        v.push(1);
    }
    v
}

/// One port's attributes, or why it cannot be used.
fn probe_port(
    dev: &Arc<Device>,
    num: u8,
    settings: &IbSettings,
) -> std::result::Result<Port, String> {
    let mut attr = verbs::ibv_port_attr::default();
    // SAFETY: the context is open; `attr` is large enough for the 1.1 layout.
    let rc = unsafe { (dev.verbs.query_port)(dev.ctx, num, &mut attr) };
    if rc != 0 {
        return Err(format!(
            "query failed ({})",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if attr.state != verbs::PORT_ACTIVE {
        return Err(format!("port state {} is not ACTIVE", attr.state));
    }
    let roce = match attr.link_layer {
        verbs::LINK_LAYER_ETHERNET => true,
        // 0 (unspecified) is what old providers report for InfiniBand.
        verbs::LINK_LAYER_INFINIBAND | 0 => false,
        other => {
            return Err(format!(
                "link layer {other} is neither InfiniBand nor Ethernet"
            ))
        }
    };
    let (gid_index, gid) = if roce {
        let index = match settings.gid_index {
            Some(i) => i,
            None => pick_gid(dev, num, attr.gid_tbl_len)?,
        };
        let gid = query_gid(dev, num, index)
            .filter(|g| g.raw != [0; 16])
            .ok_or_else(|| format!("GID index {index} is empty (OXCCL_IB_GID_INDEX?)"))?;
        (Some(index), gid)
    } else {
        if attr.lid == 0 {
            return Err("InfiniBand port without a LID (is a subnet manager running?)".into());
        }
        (None, query_gid(dev, num, 0).unwrap_or_default())
    };
    Ok(Port {
        dev: dev.clone(),
        num,
        roce,
        lid: attr.lid,
        gid_index,
        gid,
        active_mtu: attr.active_mtu,
    })
}

fn query_gid(dev: &Device, port: u8, index: u8) -> Option<verbs::ibv_gid> {
    let mut gid = verbs::ibv_gid::default();
    // SAFETY: the context is open; `gid` is 16 writable bytes.
    let rc = unsafe { (dev.verbs.query_gid)(dev.ctx, port, index as i32, &mut gid) };
    (rc == 0).then_some(gid)
}

/// RoCE GID choice, best first: RoCE v2 with an IPv4-mapped address (routable, what
/// RoCE v2 fabrics use), RoCE v2 with a global IPv6 address, then any RoCE v1 entry.
fn pick_gid(dev: &Device, port: u8, table_len: i32) -> std::result::Result<u8, String> {
    let types = Path::new("/sys/class/infiniband")
        .join(&dev.name)
        .join(format!("ports/{port}/gid_attrs/types"));
    let mut best: Option<(u8, u8)> = None; // (rank, index); lower rank wins
    for index in 0..table_len.clamp(0, MAX_GID_SCAN) {
        let Some(gid) = query_gid(dev, port, index as u8) else {
            continue;
        };
        if gid.raw == [0; 16] {
            continue;
        }
        let kind = std::fs::read_to_string(types.join(index.to_string())).unwrap_or_default();
        let v2 = kind.trim().eq_ignore_ascii_case("RoCE v2");
        let ip = std::net::Ipv6Addr::from(gid.raw);
        let rank = match (
            v2,
            ip.to_ipv4_mapped().is_some(),
            ip.is_unicast_link_local(),
        ) {
            (true, true, _) => 0,
            (true, false, false) => 1,
            (true, false, true) => 3,
            (false, ..) => 2,
        };
        if best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, index as u8));
        }
    }
    best.map(|(_, i)| i)
        .ok_or_else(|| "no usable GID (does the network interface have an IP address?)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hca_lists_select_by_prefix_exact_name_port_and_exclusion() {
        let s = HcaSpec::parse("mlx5_0:1,mlx5_1").unwrap();
        assert!(s.allows("mlx5_0", 1));
        assert!(!s.allows("mlx5_0", 2));
        assert!(s.allows("mlx5_1", 2));
        assert!(s.allows("mlx5_10", 1), "prefix match");
        assert!(!s.allows("rxe0", 1));

        let exact = HcaSpec::parse("=mlx5_1").unwrap();
        assert!(exact.allows("mlx5_1", 1));
        assert!(!exact.allows("mlx5_10", 1));

        let not = HcaSpec::parse("^mlx5_1").unwrap();
        assert!(!not.allows("mlx5_1", 1));
        assert!(not.allows("mlx5_0", 1));
        assert!(!not.allows("mlx5_12", 1), "prefix exclusion");
        let not_exact = HcaSpec::parse("^=mlx5_1:2").unwrap();
        assert!(not_exact.allows("mlx5_1", 1));
        assert!(!not_exact.allows("mlx5_1", 2));
        assert!(not_exact.allows("mlx5_12", 2));
    }

    #[test]
    fn bad_hca_lists_say_what_is_wrong() {
        for (text, says) in [
            ("", "no device named"),
            ("^", "no device named"),
            ("mlx5_0:x", "not a number"),
            ("mlx5_0:0", "not a number"),
            ("mlx 5", "not a device name"),
            (":1", "not a device name"),
        ] {
            let e = HcaSpec::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn mtus_and_gids_print_as_people_write_them() {
        assert_eq!(mtu_bytes(3), 1024);
        assert_eq!(mtu_bytes(5), 4096);
        assert_eq!(mtu_bytes(9), 0);
        let mut g = verbs::ibv_gid::default();
        g.raw[10] = 0xff;
        g.raw[11] = 0xff;
        g.raw[12..].copy_from_slice(&[10, 0, 2, 15]);
        assert_eq!(format_gid(&g.raw), "::ffff:10.0.2.15");
        g.raw = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(format_gid(&g.raw), "fe80::1");
    }
}
