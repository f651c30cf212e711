//! The dump formats (XML in the spirit of NCCL's topology dump, with our own element names,
//! and JSON) and `OXCCL_TOPO_DUMP_FILE`'s writer.
//!
//! Both formats hold the same facts. JSON is flat (lists of PCI functions, NICs, …, each
//! naming its PCI parent) for programs; XML nests them as the hardware does (machine → NUMA
//! node → PCI tree → NIC/HCA/GPU) for people. Values are written by hand with escaping, so
//! the library needs no serialisation crate.

use super::sysfs::cpulist_text;
use super::{hostname_part, Topology};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The dump format version, bumped when a field changes meaning.
pub const VERSION: u32 = 1;

/// A JSON value.
pub(super) enum J {
    Null,
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

impl J {
    pub(super) fn s(v: impl AsRef<str>) -> J {
        J::Str(v.as_ref().to_owned())
    }
    pub(super) fn n(v: impl std::fmt::Display) -> J {
        J::Num(v.to_string())
    }
    pub(super) fn opt_s(v: Option<impl AsRef<str>>) -> J {
        v.map_or(J::Null, J::s)
    }
    pub(super) fn opt_n(v: Option<impl std::fmt::Display>) -> J {
        v.map_or(J::Null, J::n)
    }
    fn scalar(&self) -> bool {
        !matches!(self, J::Arr(_) | J::Obj(_))
    }

    /// Writes the value indented by `depth` levels; arrays of scalars stay on one line.
    pub(super) fn render(&self, out: &mut String, depth: usize) {
        let pad = |out: &mut String, d: usize| out.extend(std::iter::repeat_n("  ", d));
        match self {
            J::Null => out.push_str("null"),
            J::Num(n) => out.push_str(n),
            J::Str(s) => json_string(out, s),
            J::Arr(v) if v.is_empty() => out.push_str("[]"),
            J::Arr(v) if v.iter().all(J::scalar) => {
                out.push('[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    x.render(out, depth);
                }
                out.push(']');
            }
            J::Arr(v) => {
                out.push_str("[\n");
                for (i, x) in v.iter().enumerate() {
                    pad(out, depth + 1);
                    x.render(out, depth + 1);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                pad(out, depth);
                out.push(']');
            }
            J::Obj(v) => {
                out.push_str("{\n");
                for (i, (k, x)) in v.iter().enumerate() {
                    pad(out, depth + 1);
                    json_string(out, k);
                    out.push_str(": ");
                    x.render(out, depth + 1);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                pad(out, depth);
                out.push('}');
            }
        }
    }
}

/// `s` as a JSON string literal (RFC 8259 escapes).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `s` escaped for an XML attribute value.
pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0; sysfs text never needs them.
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `0x…` with `digits` hex digits.
pub(super) fn hex(v: Option<u32>, digits: usize) -> Option<String> {
    v.map(|v| format!("0x{v:0digits$x}"))
}

impl Topology {
    /// The JSON dump (see `docs/topology.md` for the fields).
    pub fn to_json(&self) -> String {
        let host = &self.host;
        let cpu = &self.cpu;
        let doc = J::Obj(vec![
            ("format", J::s("oxccl-topology")),
            ("version", J::n(VERSION)),
            (
                "host",
                J::Obj(vec![
                    ("hostname", J::s(&host.hostname)),
                    ("boot_id", J::opt_s(host.boot_id.as_ref())),
                    ("identity", J::s(&host.identity)),
                ]),
            ),
            (
                "cpu",
                J::Obj(vec![
                    ("model", J::opt_s(cpu.model.as_ref())),
                    ("vendor", J::opt_s(cpu.vendor.as_ref())),
                    ("online", J::n(cpu.online)),
                    ("sockets", J::n(cpu.sockets)),
                    ("cores", J::n(cpu.cores)),
                ]),
            ),
            (
                "numa",
                J::Arr(
                    self.numa
                        .iter()
                        .map(|n| {
                            J::Obj(vec![
                                ("id", J::n(n.id)),
                                ("cpus", J::s(cpulist_text(&n.cpus))),
                                ("memory_kib", J::opt_n(n.memory_kib)),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("pci", J::Arr(self.pci.iter().map(pci_json).collect())),
            ("nics", J::Arr(self.nics.iter().map(nic_json).collect())),
            ("ib", J::Arr(self.ib.iter().map(ib_json).collect())),
            (
                "gpus",
                J::Arr(
                    self.gpus
                        .iter()
                        .map(|g| {
                            J::Obj(vec![
                                ("pci", J::s(&g.pci)),
                                ("device", J::opt_s(hex(g.device.map(u32::from), 4))),
                                ("model", J::opt_s(g.model.as_ref())),
                                ("numa", J::opt_n(g.numa)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]);
        let mut out = String::new();
        doc.render(&mut out, 0);
        out.push('\n');
        out
    }
}

fn pci_json(d: &super::PciDevice) -> J {
    J::Obj(vec![
        ("bdf", J::s(&d.bdf)),
        ("parent", J::opt_s(d.parent.as_ref())),
        ("class", J::opt_s(hex(d.class, 6))),
        ("kind", J::s(d.class_name())),
        ("vendor", J::opt_s(hex(d.vendor.map(u32::from), 4))),
        ("device", J::opt_s(hex(d.device.map(u32::from), 4))),
        ("numa", J::opt_n(d.numa)),
        ("link_speed", J::opt_s(d.link.speed.as_ref())),
        ("link_width", J::opt_n(d.link.width)),
        ("max_link_speed", J::opt_s(d.link.max_speed.as_ref())),
        ("max_link_width", J::opt_n(d.link.max_width)),
    ])
}

fn nic_json(n: &super::Nic) -> J {
    J::Obj(vec![
        ("name", J::s(&n.name)),
        ("kind", J::s(n.kind.as_str())),
        ("state", J::opt_s(n.state.as_ref())),
        ("speed_mbps", J::opt_n(n.speed_mbps)),
        ("mtu", J::opt_n(n.mtu)),
        ("mac", J::opt_s(n.mac.as_ref())),
        ("pci", J::opt_s(n.pci.as_ref())),
        ("numa", J::opt_n(n.numa)),
        (
            "addrs",
            J::Arr(n.addrs.iter().map(|a| J::s(a.to_string())).collect()),
        ),
    ])
}

fn ib_json(d: &super::IbDevice) -> J {
    let ports = d.ports.iter().map(|p| {
        J::Obj(vec![
            ("port", J::n(p.num)),
            ("state", J::opt_s(p.state.as_ref())),
            ("rate", J::opt_s(p.rate.as_ref())),
            ("link_layer", J::opt_s(p.link_layer.as_ref())),
            ("gids", J::Arr(p.gids.iter().map(J::s).collect())),
            ("netdev", J::opt_s(p.netdev.as_ref())),
        ])
    });
    J::Obj(vec![
        ("name", J::s(&d.name)),
        ("node_guid", J::opt_s(d.node_guid.as_ref())),
        ("firmware", J::opt_s(d.firmware.as_ref())),
        ("pci", J::opt_s(d.pci.as_ref())),
        ("numa", J::opt_n(d.numa)),
        ("ports", J::Arr(ports.collect())),
    ])
}

/// Where rank `rank` writes its dump for `template` (`%h`: the hostname part of the host
/// identity `identity`, `%r`: the rank, `%%`: `%`); `None` when it does not write, because
/// the template has no `%r` and a lower rank of the same host writes instead.
pub fn dump_path(
    template: &Path,
    identity: &str,
    rank: u32,
    lowest_on_host: bool,
) -> Option<PathBuf> {
    let t = template.to_string_lossy();
    if !t.contains("%r") && !lowest_on_host {
        return None;
    }
    let mut out = String::with_capacity(t.len());
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('h')) => out.push_str(hostname_part(identity)),
            ('%', Some('r')) => out.push_str(&rank.to_string()),
            ('%', Some('%')) => out.push('%'),
            _ => {
                out.push(c);
                continue;
            }
        }
        chars.next();
    }
    Some(PathBuf::from(out))
}

/// Detects this host (with `hostname` as the `OXCCL_HOSTNAME` override) and writes its dump
/// where [`dump_path`] says: XML when the path ends in `.xml`, JSON otherwise. Returns the
/// path written, `None` when this rank leaves it to a lower rank of its host.
pub fn write_dump(
    template: &Path,
    hostname: Option<&str>,
    rank: u32,
    lowest_on_host: bool,
) -> Result<Option<PathBuf>> {
    let topo = super::detect_for(hostname)?;
    let Some(path) = dump_path(template, &topo.host.identity, rank, lowest_on_host) else {
        return Ok(None);
    };
    let xml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
    let text = if xml { topo.to_xml() } else { topo.to_json() };
    std::fs::write(&path, text).map_err(|e| Error::Config {
        knob: "OXCCL_TOPO_DUMP_FILE",
        detail: format!("cannot write the topology dump to {}: {e}", path.display()),
    })?;
    Ok(Some(path))
}

/// [`write_dump`] for communicator creation: failures are warnings naming the path, never
/// fatal (a dump is a diagnostic).
pub(crate) fn dump_at_init(
    template: &Path,
    hostname: Option<&str>,
    rank: u32,
    lowest_on_host: bool,
) {
    match write_dump(template, hostname, rank, lowest_on_host) {
        Ok(Some(p)) => {
            tracing::info!(target: "oxccl::init", "rank {rank} wrote its topology to {}", p.display())
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(target: "oxccl::init", "rank {rank}: OXCCL_TOPO_DUMP_FILE={}: {e}", template.display())
        }
    }
}
