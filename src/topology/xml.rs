//! The XML dump: the machine nested as the hardware is (NUMA node → PCI tree → NIC, HCA,
//! GPU), in the spirit of NCCL's topology XML but with oxccl's own element names.

use super::dump::{hex, xml_escape, VERSION};
use super::sysfs::cpulist_text;
use super::{IbDevice, Nic, PciDevice, Topology};

/// An element being written: name and attributes (absent values are left out).
struct El {
    text: String,
}

impl El {
    fn new(name: &str) -> El {
        El {
            text: format!("<{name}"),
        }
    }
    fn attr(mut self, key: &str, value: Option<impl ToString>) -> El {
        if let Some(v) = value {
            self.text
                .push_str(&format!(" {key}=\"{}\"", xml_escape(&v.to_string())));
        }
        self
    }
}

/// Writes `el` at `depth` with `children` (lines already indented), or self-closed.
fn emit(out: &mut String, depth: usize, el: El, name: &str, children: &str) {
    let pad = "  ".repeat(depth);
    if children.is_empty() {
        out.push_str(&format!("{pad}{}/>\n", el.text));
    } else {
        out.push_str(&format!("{pad}{}>\n{children}{pad}</{name}>\n", el.text));
    }
}

fn nic_xml(out: &mut String, depth: usize, n: &Nic) {
    let el = El::new("nic")
        .attr("name", Some(&n.name))
        .attr("kind", Some(n.kind.as_str()))
        .attr("state", n.state.as_ref())
        .attr("speed-mbps", n.speed_mbps)
        .attr("mtu", n.mtu)
        .attr("mac", n.mac.as_ref())
        .attr("numa", n.numa);
    let mut kids = String::new();
    for a in &n.addrs {
        let addr = El::new("addr")
            .attr("ip", Some(a.ip))
            .attr("prefix", a.prefix);
        emit(&mut kids, depth + 1, addr, "addr", "");
    }
    emit(out, depth, el, "nic", &kids);
}

fn ib_xml(out: &mut String, depth: usize, d: &IbDevice) {
    let el = El::new("ib")
        .attr("name", Some(&d.name))
        .attr("node-guid", d.node_guid.as_ref())
        .attr("firmware", d.firmware.as_ref())
        .attr("numa", d.numa);
    let mut kids = String::new();
    for p in &d.ports {
        let port = El::new("port")
            .attr("num", Some(p.num))
            .attr("state", p.state.as_ref())
            .attr("rate", p.rate.as_ref())
            .attr("link-layer", p.link_layer.as_ref())
            .attr("netdev", p.netdev.as_ref());
        let mut gids = String::new();
        for g in &p.gids {
            emit(
                &mut gids,
                depth + 2,
                El::new("gid").attr("value", Some(g)),
                "gid",
                "",
            );
        }
        emit(&mut kids, depth + 1, port, "port", &gids);
    }
    emit(out, depth, el, "ib", &kids);
}

impl Topology {
    fn pci_xml(&self, out: &mut String, depth: usize, d: &PciDevice) {
        let el = El::new("pci")
            .attr("bdf", Some(&d.bdf))
            .attr("class", hex(d.class, 6))
            .attr("kind", Some(d.class_name()))
            .attr("vendor", hex(d.vendor.map(u32::from), 4))
            .attr("device", hex(d.device.map(u32::from), 4))
            .attr("link-speed", d.link.speed.as_ref())
            .attr("link-width", d.link.width)
            .attr("max-link-speed", d.link.max_speed.as_ref())
            .attr("max-link-width", d.link.max_width);
        let mut kids = String::new();
        for n in self
            .nics
            .iter()
            .filter(|n| n.pci.as_deref() == Some(&d.bdf))
        {
            nic_xml(&mut kids, depth + 1, n);
        }
        for i in self.ib.iter().filter(|i| i.pci.as_deref() == Some(&d.bdf)) {
            ib_xml(&mut kids, depth + 1, i);
        }
        for g in self.gpus.iter().filter(|g| g.pci == d.bdf) {
            let gpu = El::new("gpu")
                .attr("device", hex(g.device.map(u32::from), 4))
                .attr("model", g.model.as_ref());
            emit(&mut kids, depth + 1, gpu, "gpu", "");
        }
        for c in self.pci_children(&d.bdf) {
            self.pci_xml(&mut kids, depth + 1, c);
        }
        emit(out, depth, el, "pci", &kids);
    }

    /// The XML dump (see `docs/topology.md` for the elements).
    pub fn to_xml(&self) -> String {
        let mut body = String::new();
        let h = &self.host;
        let host = El::new("host")
            .attr("hostname", Some(&h.hostname))
            .attr("boot-id", h.boot_id.as_ref())
            .attr("identity", Some(&h.identity));
        emit(&mut body, 1, host, "host", "");
        let c = &self.cpu;
        let cpu = El::new("cpu")
            .attr("model", c.model.as_ref())
            .attr("vendor", c.vendor.as_ref())
            .attr("online", Some(c.online))
            .attr("sockets", Some(c.sockets))
            .attr("cores", Some(c.cores));
        emit(&mut body, 1, cpu, "cpu", "");
        for (node, roots) in self.pci_roots_by_numa() {
            let mut kids = String::new();
            for r in roots {
                self.pci_xml(&mut kids, 2, r);
            }
            let el = match node.and_then(|id| self.numa.iter().find(|n| n.id == id)) {
                Some(n) => El::new("numa")
                    .attr("id", Some(n.id))
                    .attr("cpus", Some(cpulist_text(&n.cpus)))
                    .attr("memory-kib", n.memory_kib),
                None => El::new("numa").attr("id", Some("unknown")),
            };
            emit(&mut body, 1, el, "numa", &kids);
        }
        for n in self.nics.iter().filter(|n| !self.on_pci(n.pci.as_deref())) {
            nic_xml(&mut body, 1, n);
        }
        for i in self.ib.iter().filter(|i| !self.on_pci(i.pci.as_deref())) {
            ib_xml(&mut body, 1, i);
        }
        let root = El::new("system")
            .attr("format", Some("oxccl-topology"))
            .attr("version", Some(VERSION));
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        emit(&mut out, 0, root, "system", &body);
        out
    }
}
