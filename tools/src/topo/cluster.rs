//! The fused cluster view rank 0 prints: every node with its host, ranks and local ranks,
//! its hardware summary (from the dump of its lowest rank), and each rank's address.

use oxccl::NodeMap;
use serde_json::{json, Value};
use std::fmt;

/// The job's ranks and nodes with their topology dumps, parsed.
pub struct View {
    /// Which convention started the ranks (`oxccl-run`, `torchrun`, …).
    launch: String,
    nodes: NodeMap,
    /// Every rank's parsed JSON dump.
    dumps: Vec<Value>,
    /// Every rank's advertised address.
    ips: Vec<String>,
}

impl View {
    /// Parses every rank's JSON dump (index = rank); an error names the rank whose dump is
    /// not valid JSON.
    pub fn parse(
        nodes: &NodeMap,
        dumps: &[String],
        ips: &[String],
        launch: &str,
    ) -> Result<View, String> {
        let dumps = dumps
            .iter()
            .enumerate()
            .map(|(r, d)| {
                serde_json::from_str(d)
                    .map_err(|e| format!("rank {r}'s topology dump is not valid JSON: {e}"))
            })
            .collect::<Result<Vec<Value>, String>>()?;
        Ok(View {
            launch: launch.to_owned(),
            nodes: nodes.clone(),
            dumps,
            ips: ips.to_vec(),
        })
    }

    /// The dump of `node`'s lowest rank.
    fn node_dump(&self, node: u32) -> &Value {
        let first = self.nodes.ranks_on(node).first().copied().unwrap_or(0);
        &self.dumps[first as usize]
    }

    /// The cluster as JSON: nodes (host, ranks, the lowest rank's topology) and ranks (node,
    /// local rank, advertised address).
    pub fn to_json(&self) -> String {
        let nodes: Vec<Value> = (0..self.nodes.nnodes())
            .map(|n| {
                json!({
                    "node": n,
                    "host": self.nodes.host(n),
                    "ranks": self.nodes.ranks_on(n),
                    "topology": self.node_dump(n),
                })
            })
            .collect();
        let ranks: Vec<Value> = (0..self.nodes.nranks())
            .map(|r| {
                json!({
                    "rank": r,
                    "node": self.nodes.node_of(r),
                    "local_rank": self.nodes.local_rank(r),
                    "advertised_ip": self.ips.get(r as usize),
                })
            })
            .collect();
        let doc = json!({
            "launch": self.launch,
            "nranks": self.nodes.nranks(),
            "nnodes": self.nodes.nnodes(),
            "nodes": nodes,
            "ranks": ranks,
        });
        let mut s = serde_json::to_string_pretty(&doc)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        s.push('\n');
        s
    }
}

/// `v` as text, `?` when absent.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        other => other.to_string(),
    }
}

/// The names in a dump's list `items` (`name` field, with `what(item)` after it).
fn list(items: &Value, what: impl Fn(&Value) -> String) -> String {
    let v: Vec<String> = items
        .as_array()
        .map(|a| a.iter().map(what).collect())
        .unwrap_or_default();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (nr, nn) = (self.nodes.nranks(), self.nodes.nnodes());
        writeln!(
            f,
            "cluster: {nr} rank{} on {nn} node{} (launch convention: {}){}",
            if nr == 1 { "" } else { "s" },
            if nn == 1 { "" } else { "s" },
            self.launch,
            if nn > 1 && !self.nodes.is_contiguous() {
                ", ranks interleaved across nodes"
            } else {
                ""
            }
        )?;
        for n in 0..nn {
            let d = self.node_dump(n);
            let ranks = self.nodes.ranks_on(n);
            writeln!(
                f,
                "node {n}: host {} ({} ranks)",
                show(&d["host"]["hostname"]),
                ranks.len()
            )?;
            writeln!(f, "  identity: {}", self.nodes.host(n).unwrap_or("?"))?;
            for r in ranks {
                writeln!(
                    f,
                    "  rank {r}: local rank {}, advertises {}",
                    self.nodes.local_rank(r).unwrap_or(0),
                    self.ips.get(r as usize).map_or("?", String::as_str)
                )?;
            }
            let cpu = &d["cpu"];
            writeln!(
                f,
                "  cpus: {} online, {} sockets, {} cores, {}",
                show(&cpu["online"]),
                show(&cpu["sockets"]),
                show(&cpu["cores"]),
                show(&cpu["model"])
            )?;
            writeln!(
                f,
                "  numa: {}",
                list(&d["numa"], |m| format!(
                    "{} (cpus {})",
                    show(&m["id"]),
                    show(&m["cpus"])
                ))
            )?;
            writeln!(
                f,
                "  nics: {}",
                list(&d["nics"], |m| {
                    let addrs = list(&m["addrs"], show);
                    let speed = m["speed_mbps"]
                        .as_u64()
                        .map(|s| format!(" {s} Mb/s"))
                        .unwrap_or_default();
                    format!(
                        "{} ({} {}{speed}: {addrs})",
                        show(&m["name"]),
                        show(&m["kind"]),
                        show(&m["state"])
                    )
                })
            )?;
            writeln!(
                f,
                "  rdma: {}",
                list(&d["ib"], |m| {
                    let ports = list(&m["ports"], |p| {
                        format!(
                            "port {} {} {}",
                            show(&p["port"]),
                            show(&p["state"]),
                            show(&p["rate"])
                        )
                    });
                    format!("{} ({ports})", show(&m["name"]))
                })
            )?;
            writeln!(
                f,
                "  gpus: {}",
                list(&d["gpus"], |g| format!(
                    "{} {}",
                    show(&g["pci"]),
                    show(&g["model"])
                ))
            )?;
        }
        Ok(())
    }
}

/// Every node's XML dump (from its lowest rank) inside one `<cluster>` element, with its
/// ranks and their advertised addresses.
pub fn xml(nodes: &NodeMap, dumps: &[String], ips: &[String]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<cluster nranks=\"{}\" nnodes=\"{}\">\n",
        nodes.nranks(),
        nodes.nnodes()
    );
    for n in 0..nodes.nnodes() {
        let ranks = nodes.ranks_on(n);
        out += &format!(
            "  <node id=\"{n}\" host=\"{}\">\n",
            esc(nodes.host(n).unwrap_or(""))
        );
        for &r in &ranks {
            let ip = ips.get(r as usize).map_or("", String::as_str);
            out += &format!(
                "    <rank id=\"{r}\" local-rank=\"{}\" advertised-ip=\"{}\"/>\n",
                nodes.local_rank(r).unwrap_or(0),
                esc(ip)
            );
        }
        let first = ranks.first().copied().unwrap_or(0) as usize;
        let body = dumps.get(first).map_or("", String::as_str);
        for line in body.lines().filter(|l| !l.starts_with("<?xml")) {
            out += &format!("    {line}\n");
        }
        out += "  </node>\n";
    }
    out += "</cluster>\n";
    out
}
