//! Detection over fake sysfs/procfs trees built in a temporary directory, the dumps, and
//! the real detection of this machine.

use super::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A temporary directory removed when dropped.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new(name: &str) -> TempRoot {
        // Unique per test even when tests share a process (cargo test runs them as threads).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("oxccl-topo-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempRoot(p)
    }
    /// Writes `text` to `rel` (an absolute-looking path under the root), creating folders.
    fn file(&self, rel: &str, text: &str) {
        let p = self.0.join(rel.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    /// A symlink at `rel` pointing at `target` (relative to the link's folder, as sysfs does).
    fn link(&self, rel: &str, target: &str) {
        let p = self.0.join(rel.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const BRIDGE: &str = "/sys/devices/pci0000:00/0000:00:01.0";
const NIC: &str = "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0";
const GPU: &str = "/sys/devices/pci0000:00/0000:00:02.0/0000:02:00.0";

fn pci(t: &TempRoot, path: &str, class: &str, vendor: &str, numa: &str) {
    t.file(&format!("{path}/class"), class);
    t.file(&format!("{path}/vendor"), vendor);
    t.file(&format!("{path}/device"), "0x1017\n");
    t.file(&format!("{path}/numa_node"), numa);
    let bdf = path.rsplit('/').next().unwrap();
    t.link(
        &format!("/sys/bus/pci/devices/{bdf}"),
        &format!("../../../..{path}"),
    );
}

/// A two-socket host: a bridge on node 1 with a Mellanox NIC (ens1, RoCE mlx5_0) behind it,
/// a GPU on node 0, loopback, a docker bridge, a veth and a function with garbage files.
fn fake_host() -> TempRoot {
    let t = TempRoot::new("fixture");
    t.file("/proc/sys/kernel/hostname", "fakehost\n");
    t.file("/proc/sys/kernel/random/boot_id", "1234-abcd\n");
    let mut cpuinfo = String::new();
    for c in 0..4 {
        cpuinfo += &format!(
            "processor\t: {c}\nvendor_id\t: GenuineIntel\nmodel name\t: Fake Xeon \"Q\" <9>\n\n"
        );
        let topo = format!("/sys/devices/system/cpu/cpu{c}/topology");
        t.file(&format!("{topo}/physical_package_id"), &(c / 2).to_string());
        t.file(&format!("{topo}/core_id"), &(c % 2).to_string());
    }
    t.file("/proc/cpuinfo", &cpuinfo);
    t.file("/sys/devices/system/cpu/online", "0-3\n");
    t.file("/sys/devices/system/node/node0/cpulist", "0-1\n");
    t.file(
        "/sys/devices/system/node/node0/meminfo",
        "Node 0 MemTotal:  1048576 kB\n",
    );
    t.file("/sys/devices/system/node/node1/cpulist", "2-3\n");
    t.file("/sys/devices/system/node/possible", "0-1\n");

    pci(&t, BRIDGE, "0x060400\n", "0x8086\n", "1\n");
    pci(&t, NIC, "0x020000\n", "0x15b3\n", "-1\n");
    t.file(&format!("{NIC}/current_link_speed"), "16.0 GT/s PCIe\n");
    t.file(&format!("{NIC}/current_link_width"), "16\n");
    t.file(&format!("{NIC}/max_link_speed"), "16.0 GT/s PCIe\n");
    t.file(&format!("{NIC}/max_link_width"), "16\n");
    pci(
        &t,
        "/sys/devices/pci0000:00/0000:00:02.0",
        "0x060400\n",
        "0x8086\n",
        "0\n",
    );
    pci(&t, GPU, "0x030200\n", "0x10de\n", "0\n");
    pci(
        &t,
        "/sys/devices/pci0000:00/0000:00:1f.0",
        "garbage\n",
        "\n",
        "x\n",
    );
    t.file(&format!("{GPU}/current_link_speed"), "Unknown\n");
    t.file(
        "/proc/driver/nvidia/gpus/0000:02:00.0/information",
        "Model: \t\t NVIDIA H100\nIRQ: 5\n",
    );

    let ens1 = format!("{NIC}/net/ens1");
    for (f, v) in [
        ("operstate", "up"),
        ("speed", "100000"),
        ("mtu", "9000"),
        ("address", "b8:ce:f6:00:00:01"),
        ("type", "1"),
    ] {
        t.file(&format!("{ens1}/{f}"), v);
    }
    t.link(&format!("{ens1}/device"), "../../../0000:01:00.0");
    t.link("/sys/class/net/ens1", &format!("../../..{ens1}"));
    for (name, kind_file) in [
        ("lo", "type"),
        ("docker0", "bridge/bridge_id"),
        ("veth12", "type"),
    ] {
        let dir = format!("/sys/devices/virtual/net/{name}");
        t.file(
            &format!("{dir}/{kind_file}"),
            if name == "lo" { "772" } else { "1" },
        );
        t.file(
            &format!("{dir}/operstate"),
            if name == "lo" { "unknown" } else { "down" },
        );
        t.file(&format!("{dir}/speed"), "-1");
        t.file(&format!("{dir}/mtu"), "65536");
        t.link(&format!("/sys/class/net/{name}"), &format!("../../..{dir}"));
    }

    let hca = format!("{NIC}/infiniband/mlx5_0");
    t.file(&format!("{hca}/node_guid"), "b8ce:f603:0000:0001\n");
    t.file(&format!("{hca}/fw_ver"), "22.31.1014\n");
    t.file(&format!("{hca}/ports/1/state"), "4: ACTIVE\n");
    t.file(&format!("{hca}/ports/1/rate"), "100 Gb/sec (4X EDR)\n");
    t.file(&format!("{hca}/ports/1/link_layer"), "Ethernet\n");
    t.file(
        &format!("{hca}/ports/1/gids/0"),
        "fe80:0000:0000:0000:bace:f6ff:fe00:0001\n",
    );
    t.file(
        &format!("{hca}/ports/1/gids/1"),
        "0000:0000:0000:0000:0000:0000:0000:0000\n",
    );
    t.file(&format!("{hca}/ports/1/gid_attrs/ndevs/0"), "ens1\n");
    t.link(&format!("{hca}/device"), "../../../0000:01:00.0");
    t.link("/sys/class/infiniband/mlx5_0", &format!("../../..{hca}"));
    t
}

#[test]
fn fake_host_cpus_numa_and_host() {
    let t = fake_host();
    let topo = detect_at(&t.0).unwrap();
    assert_eq!(
        (topo.cpu.online, topo.cpu.sockets, topo.cpu.cores),
        (4, 2, 4)
    );
    assert_eq!(topo.cpu.model.as_deref(), Some("Fake Xeon \"Q\" <9>"));
    assert_eq!(topo.numa.len(), 2);
    assert_eq!(
        (topo.numa[0].cpus.as_slice(), topo.numa[0].memory_kib),
        (&[0, 1][..], Some(1048576))
    );
    assert_eq!(
        (topo.numa[1].cpus.as_slice(), topo.numa[1].memory_kib),
        (&[2, 3][..], None)
    );
    assert_eq!(topo.host.identity, "fakehost/1234-abcd");
    assert_eq!(topo.host.hostname, "fakehost");
}

#[test]
fn fake_host_pci_tree_nics_ib_and_gpu() {
    let t = fake_host();
    let topo = detect_at(&t.0).unwrap();
    assert_eq!(topo.pci.len(), 5);
    let nic = topo.pci_device("0000:01:00.0").unwrap();
    assert_eq!(nic.parent.as_deref(), Some("0000:00:01.0"));
    assert_eq!(
        (nic.class, nic.vendor, nic.device, nic.numa),
        (Some(0x020000), Some(0x15b3), Some(0x1017), None)
    );
    assert_eq!(
        (nic.link.speed.as_deref(), nic.link.width),
        (Some("16.0 GT/s PCIe"), Some(16))
    );
    // The NIC's own numa_node is -1: its bridge's node counts.
    assert_eq!(topo.numa_of_pci("0000:01:00.0"), Some(1));
    let odd = topo.pci_device("0000:00:1f.0").unwrap();
    assert_eq!(
        (odd.class, odd.vendor, odd.numa, odd.parent.as_deref()),
        (None, None, None, None)
    );
    assert_eq!(topo.pci_device("0000:02:00.0").unwrap().link.speed, None);

    let names: Vec<(&str, NicKind)> = topo
        .nics
        .iter()
        .map(|n| (n.name.as_str(), n.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("docker0", NicKind::Bridge),
            ("ens1", NicKind::Physical),
            ("lo", NicKind::Loopback),
            ("veth12", NicKind::Veth)
        ]
    );
    let ens1 = &topo.nics[1];
    assert_eq!(
        (ens1.speed_mbps, ens1.mtu, ens1.pci.as_deref(), ens1.numa),
        (Some(100000), Some(9000), Some("0000:01:00.0"), None)
    );
    assert!(ens1.is_up() && topo.nics[2].is_up() && !topo.nics[0].is_up());
    assert_eq!(topo.nics[0].speed_mbps, None);

    assert_eq!(topo.ib.len(), 1);
    let hca = &topo.ib[0];
    assert_eq!(
        (
            hca.name.as_str(),
            hca.pci.as_deref(),
            hca.firmware.as_deref()
        ),
        ("mlx5_0", Some("0000:01:00.0"), Some("22.31.1014"))
    );
    let p = &hca.ports[0];
    assert_eq!(
        (
            p.num,
            p.state.as_deref(),
            p.link_layer.as_deref(),
            p.netdev.as_deref()
        ),
        (1, Some("ACTIVE"), Some("Ethernet"), Some("ens1"))
    );
    assert_eq!(p.gids, ["fe80:0000:0000:0000:bace:f6ff:fe00:0001"]);

    assert_eq!(topo.gpus.len(), 1);
    assert_eq!(
        (
            topo.gpus[0].pci.as_str(),
            topo.gpus[0].model.as_deref(),
            topo.gpus[0].numa
        ),
        ("0000:02:00.0", Some("NVIDIA H100"), Some(0))
    );
}

#[test]
fn addresses_attach_to_their_interfaces() {
    let t = fake_host();
    let mut topo = detect_at(&t.0).unwrap();
    let a = |name: &str, ip: &str, prefix| oxccl_transports::ifaddrs::InterfaceAddr {
        name: name.into(),
        ip: ip.parse().unwrap(),
        prefix: Some(prefix),
        up: true,
    };
    topo.set_addresses(&[
        a("ens1", "10.1.0.7", 16),
        a("lo", "127.0.0.1", 8),
        a("ens1", "fd00::7", 64),
        a("tun9", "10.8.0.1", 24),
    ]);
    let ens1 = topo.nics.iter().find(|n| n.name == "ens1").unwrap();
    assert_eq!(
        ens1.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        ["10.1.0.7/16", "fd00::7/64"]
    );
    assert_eq!(ens1.ipv4(), Some("10.1.0.7".parse().unwrap()));
    // An interface sysfs did not show still appears, with its address.
    assert!(topo
        .nics
        .iter()
        .any(|n| n.name == "tun9" && n.kind == NicKind::Virtual));
}

#[test]
fn an_empty_or_missing_root() {
    let t = TempRoot::new("empty");
    let topo = detect_at(&t.0).unwrap();
    assert!(
        topo.pci.is_empty() && topo.nics.is_empty() && topo.ib.is_empty() && topo.gpus.is_empty()
    );
    assert_eq!(topo.numa.len(), 1, "one node when the kernel shows none");
    assert_eq!(topo.cpu.online, 0);
    let e = detect_at(&t.0.join("nope")).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    // A tree with just a PCI-less net class (a container).
    t.file("/sys/devices/virtual/net/lo/type", "772");
    t.link("/sys/class/net/lo", "../../devices/virtual/net/lo");
    let topo = detect_at(&t.0).unwrap();
    assert_eq!((topo.nics.len(), topo.nics[0].kind), (1, NicKind::Loopback));
    assert!(topo.to_string().contains("not on PCI:"));
}

/// Checks that every opened element of `xml` is closed in order (no XML crate here).
fn assert_balanced(xml: &str) {
    let mut stack: Vec<String> = Vec::new();
    for tag in xml.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap();
        if tag.starts_with('?') || tag.ends_with('/') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "in:\n{xml}");
        } else {
            stack.push(tag.split_whitespace().next().unwrap().to_owned());
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
}

#[test]
fn dumps_hold_the_tree_and_escape_text() {
    let t = fake_host();
    let topo = detect_at(&t.0).unwrap();
    let xml = topo.to_xml();
    assert_balanced(&xml);
    assert!(
        xml.contains("model=\"Fake Xeon &quot;Q&quot; &lt;9&gt;\""),
        "{xml}"
    );
    // The NIC and HCA sit inside their PCI function, inside the bridge, inside NUMA node 1.
    let pos = |s: &str| {
        xml.find(s)
            .unwrap_or_else(|| panic!("{s} missing from\n{xml}"))
    };
    assert!(pos("<numa id=\"1\"") < pos("bdf=\"0000:00:01.0\""));
    assert!(pos("bdf=\"0000:00:01.0\"") < pos("bdf=\"0000:01:00.0\""));
    assert!(pos("bdf=\"0000:01:00.0\"") < pos("<nic name=\"ens1\""));
    assert!(pos("<nic name=\"ens1\"") < pos("<ib name=\"mlx5_0\""));
    assert!(pos("<numa id=\"0\"") < pos("<gpu device=\"0x1017\" model=\"NVIDIA H100\"/>"));
    assert!(pos("<numa id=\"unknown\">") < pos("bdf=\"0000:00:1f.0\""));

    let json = topo.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["cpu"]["model"], "Fake Xeon \"Q\" <9>");
    assert_eq!(v["numa"][1]["cpus"], "2-3");
    assert_eq!(v["pci"].as_array().unwrap().len(), 5);
    assert_eq!(v["nics"][1]["speed_mbps"], 100000);
    assert_eq!(v["nics"][0]["speed_mbps"], serde_json::Value::Null);
    assert_eq!(v["ib"][0]["ports"][0]["netdev"], "ens1");
    assert_eq!(v["gpus"][0]["model"], "NVIDIA H100");
    assert_eq!(v["host"]["identity"], "fakehost/1234-abcd");

    let text = topo.to_string();
    for part in [
        "numa 1: cpus 2-3",
        "pci 0000:01:00.0 ethernet 15b3:1017 link 16.0 GT/s PCIe x16",
        "nic ens1 physical up 100000 Mb/s mtu 9000",
        "ib mlx5_0 fw 22.31.1014",
        "port 1 ACTIVE Ethernet 100 Gb/sec (4X EDR) netdev ens1",
        "gpu NVIDIA H100",
        "nic lo loopback unknown",
    ] {
        assert!(text.contains(part), "{part:?} missing from\n{text}");
    }
}

#[test]
fn dump_paths_expand_host_and_rank() {
    let p = |t: &str, rank, lowest| dump_path(Path::new(t), "node7/boot", rank, lowest);
    assert_eq!(
        p("/d/topo-%h-%r.xml", 3, false),
        Some(PathBuf::from("/d/topo-node7-3.xml"))
    );
    assert_eq!(
        p("/d/topo-%h.json", 0, true),
        Some(PathBuf::from("/d/topo-node7.json"))
    );
    assert_eq!(
        p("/d/topo-%h.json", 2, false),
        None,
        "without %r only the host's lowest rank writes"
    );
    assert_eq!(p("/d/100%%-%x", 0, true), Some(PathBuf::from("/d/100%-%x")));
}

#[test]
fn write_dump_picks_the_format_and_names_the_path_on_failure() {
    let t = TempRoot::new("dump");
    let xml = write_dump(&t.0.join("t-%h-%r.xml"), Some("fake/1"), 1, false)
        .unwrap()
        .unwrap();
    assert_eq!(xml.file_name().unwrap(), "t-fake-1.xml");
    assert!(fs::read_to_string(&xml).unwrap().starts_with("<?xml"));
    let json = write_dump(&t.0.join("t.json"), None, 0, true)
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(json).unwrap()).unwrap();
    assert!(v["cpu"]["online"].as_u64().unwrap() >= 1);
    let bad = t.0.join("missing-dir/t.json");
    let e = write_dump(&bad, None, 0, true).unwrap_err().to_string();
    assert!(
        e.contains("missing-dir/t.json") && e.contains("OXCCL_TOPO_DUMP_FILE"),
        "{e}"
    );
}

#[test]
fn this_machine() {
    let topo = detect().unwrap();
    assert!(topo.cpu.online >= 1, "{topo}");
    assert!(!topo.numa.is_empty());
    let lo = topo
        .nics
        .iter()
        .find(|n| n.kind == NicKind::Loopback)
        .expect("a loopback interface");
    assert!(lo.addrs.iter().any(|a| a.ip.is_loopback()), "{topo}");
    assert!(!topo.host.identity.is_empty());
    let v: serde_json::Value = serde_json::from_str(&topo.to_json()).unwrap();
    assert_eq!(v["nics"].as_array().unwrap().len(), topo.nics.len());
    assert_balanced(&topo.to_xml());
}
