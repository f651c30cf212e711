//! NCCL's environment variables, mapped onto oxccl's `OXCCL_*` knobs.
//!
//! [`lookup`] answers oxccl's `Config::from_lookup` (and the logging setup): an `OXCCL_*`
//! variable that is set wins; otherwise the NCCL variable it corresponds to is translated:
//!
//! | NCCL | oxccl |
//! |---|---|
//! | `NCCL_DEBUG` (VERSION, WARN, INFO, TRACE) | `OXCCL_DEBUG` (VERSION also prints the version line once) |
//! | `NCCL_DEBUG_SUBSYS` | `OXCCL_DEBUG_SUBSYS` |
//! | `NCCL_DEBUG_FILE` (`%h` host, `%p` pid) | the log goes to that file |
//! | `NCCL_ALGO` (Ring → ring, Tree → tree; CollNet*, NVLS*, PAT dropped with a warning) | `OXCCL_ALGO` |
//! | `NCCL_SOCKET_IFNAME` (`eth`, `^docker`, `=eth0`) | `OXCCL_SOCKET_IFNAME` (the same syntax; no match is an error listing the interfaces) |
//! | `NCCL_TOPO_DUMP_FILE` | `OXCCL_TOPO_DUMP_FILE` (XML for `.xml`, else JSON) |
//! | `NCCL_BUFFSIZE` (bytes per connection) | `OXCCL_SLOT_SIZE` = BUFFSIZE / `OXCCL_NSLOTS`, a multiple of 64 |
//! | `NCCL_SHM_DISABLE=1` | `OXCCL_TRANSPORT=tcp` |
//! | `NCCL_COMM_ID` (`host:port`) | the root address of `ncclGetUniqueId` (see the `api_comm` module) |
//! | `NCCL_NET` (`IB`, `Socket`) | `OXCCL_TRANSPORT=ib` / `tcp` |
//! | `NCCL_IB_DISABLE`, `NCCL_IB_HCA`, `NCCL_IB_GID_INDEX`, `NCCL_IB_TIMEOUT`, `NCCL_IB_RETRY_CNT`, `NCCL_IB_QPS_PER_CONNECTION`, `NCCL_IB_SL`, `NCCL_IB_TC` | the `OXCCL_IB_*` of the same name (same syntax) |
//! | `NCCL_PROTO`, `NCCL_P2P_DISABLE` | accepted, logged as not applicable |

use std::io::{IsTerminal, Write};
use std::sync::{Once, OnceLock};

/// Translates `NCCL_ALGO`'s value into `OXCCL_ALGO`'s: algorithm names lowercased; those
/// oxccl lacks (CollNet, NVLS, PAT, ...) dropped and reported in the second value.
pub fn map_algo(nccl: &str) -> (Option<String>, Vec<String>) {
    let mut dropped = Vec::new();
    let mut rules = Vec::new();
    for rule in nccl.split(';').map(str::trim).filter(|r| !r.is_empty()) {
        let (coll, list) = match rule.split_once(':') {
            Some((c, l)) => (Some(c.trim().to_ascii_lowercase()), l.trim()),
            None => (None, rule),
        };
        let (neg, list) = match list.strip_prefix('^') {
            Some(l) => ("^", l),
            None => ("", list),
        };
        let mut kept = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "ring" | "tree" => kept.push(lower),
                // oxccl's own names are accepted too.
                n if n.parse::<oxccl::Algorithm>().is_ok() => kept.push(lower),
                _ => dropped.push(name.to_owned()),
            }
        }
        if kept.is_empty() {
            continue;
        }
        let list = format!("{neg}{}", kept.join(","));
        rules.push(match coll {
            Some(c) => format!("{c}:{list}"),
            None => list,
        });
    }
    ((!rules.is_empty()).then(|| rules.join(";")), dropped)
}

/// `NCCL_BUFFSIZE` bytes spread over `nslots` slots: the slot size, a multiple of 64
/// between 64 bytes and 64 MiB.
pub fn slot_size_for(buffsize: &str, nslots: usize) -> Option<usize> {
    let bytes = oxccl::config::parse_size(buffsize)?;
    let slot = (bytes / nslots.max(1)) / 64 * 64;
    Some(slot.clamp(64, 64 << 20))
}

/// Expands `NCCL_DEBUG_FILE`'s `%h` (host name) and `%p` (process id).
pub fn expand_debug_file(pattern: &str, host: &str, pid: u32) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('p') => out.push_str(&pid.to_string()),
            Some(o) => {
                out.push('%');
                out.push(o)
            }
            None => out.push('%'),
        }
    }
    out
}

/// The value of oxccl variable `key`, given the process environment `get`: the variable
/// itself if set, else its translation from the NCCL variables.
pub fn lookup(key: &str, get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let set = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    if let Some(v) = set(key) {
        return Some(v);
    }
    match key {
        "OXCCL_DEBUG" => set("NCCL_DEBUG"),
        "OXCCL_DEBUG_SUBSYS" => set("NCCL_DEBUG_SUBSYS"),
        "OXCCL_ALGO" => set("NCCL_ALGO").and_then(|v| map_algo(&v).0),
        "OXCCL_TRANSPORT" => set("NCCL_SHM_DISABLE")
            .filter(|v| v.trim() == "1")
            .map(|_| "tcp".into())
            .or_else(
                || match set("NCCL_NET")?.trim().to_ascii_lowercase().as_str() {
                    "ib" => Some("ib".into()),
                    "socket" => Some("tcp".into()),
                    _ => None,
                },
            ),
        "OXCCL_SLOT_SIZE" => {
            let nslots = set("OXCCL_NSLOTS")
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(oxccl::Config::default().nslots);
            set("NCCL_BUFFSIZE")
                .and_then(|b| slot_size_for(&b, nslots))
                .map(|s| s.to_string())
        }
        "OXCCL_SOCKET_IFNAME" => set("NCCL_SOCKET_IFNAME"),
        "OXCCL_TOPO_DUMP_FILE" => set("NCCL_TOPO_DUMP_FILE"),
        "OXCCL_IB_DISABLE" => set("NCCL_IB_DISABLE"),
        "OXCCL_IB_HCA" => set("NCCL_IB_HCA"),
        "OXCCL_IB_GID_INDEX" => set("NCCL_IB_GID_INDEX"),
        "OXCCL_IB_TIMEOUT" => set("NCCL_IB_TIMEOUT"),
        "OXCCL_IB_RETRY_CNT" => set("NCCL_IB_RETRY_CNT"),
        "OXCCL_IB_QPS_PER_CONNECTION" => set("NCCL_IB_QPS_PER_CONNECTION"),
        "OXCCL_IB_SL" => set("NCCL_IB_SL"),
        "OXCCL_IB_TC" => set("NCCL_IB_TC"),
        _ => None,
    }
}

/// [`lookup`] over the process environment.
pub fn env_lookup(key: &str) -> Option<String> {
    lookup(key, &|k| std::env::var(k).ok())
}

/// oxccl's configuration from the `OXCCL_*` and `NCCL_*` variables.
pub fn config() -> oxccl::Result<oxccl::Config> {
    oxccl::Config::from_lookup(env_lookup)
}

/// `NCCL_DEBUG_FILE`, opened once (the log and the version line go there).
fn debug_file() -> Option<&'static std::fs::File> {
    static FILE: OnceLock<Option<std::fs::File>> = OnceLock::new();
    FILE.get_or_init(|| {
        let p = std::env::var("NCCL_DEBUG_FILE").ok()?;
        let path = expand_debug_file(&p, &hostname(), std::process::id());
        std::fs::File::create(path).ok()
    })
    .as_ref()
}

/// The debug level asked for, uppercased.
fn level() -> String {
    env_lookup("OXCCL_DEBUG")
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase()
}

/// Installs logging (once per process): the `OXCCL_DEBUG`/`NCCL_DEBUG` level to stderr or
/// `NCCL_DEBUG_FILE` (`VERSION` logs nothing but the version line), and reports the NCCL
/// variables that have no effect.
pub fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subsys = env_lookup("OXCCL_DEBUG_SUBSYS");
        let level = Some(level()).filter(|l| l != "VERSION");
        if let Some(d) = oxccl::logging::directives(level.as_deref(), subsys.as_deref()) {
            // Our own events follow the same level.
            let lvl = d.split(',').nth(1).and_then(|t| t.split('=').nth(1));
            let d = format!("{d},oxccl::nccl={}", lvl.unwrap_or("warn"));
            let filter = tracing_subscriber::EnvFilter::new(d);
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_target(true);
            let _ = match debug_file() {
                Some(f) => builder.with_ansi(false).with_writer(move || f).try_init(),
                None => builder
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .try_init(),
            };
        }
        report_unused();
    });
}

/// Prints `NCCL version ...` once, if `NCCL_DEBUG`/`OXCCL_DEBUG` asks for logs.
pub fn print_version_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if matches!(
            level().as_str(),
            "VERSION" | "WARN" | "INFO" | "DEBUG" | "TRACE" | "ALL"
        ) {
            let (x, y, z) = crate::ffi::NCCL_VERSION;
            let line = format!(
                "NCCL version {x}.{y}.{z}+oxccl{} (oxccl's NCCL ABI, host memory)\n",
                env!("CARGO_PKG_VERSION")
            );
            let _ = match debug_file() {
                Some(mut f) => f.write_all(line.as_bytes()),
                None => std::io::stderr().write_all(line.as_bytes()),
            };
        }
    });
}

fn report_unused() {
    if let Ok(v) = std::env::var("NCCL_ALGO") {
        let (_, dropped) = map_algo(&v);
        if !dropped.is_empty() && std::env::var_os("OXCCL_ALGO").is_none() {
            tracing::warn!(target: "oxccl::nccl", "NCCL_ALGO={v}: oxccl has no {}; ignored", dropped.join(", "));
        }
    }
    for k in ["NCCL_PROTO", "NCCL_P2P_DISABLE"] {
        if let Ok(v) = std::env::var(k) {
            tracing::info!(target: "oxccl::nccl", "{k}={v} accepted; not applicable to oxccl yet");
        }
    }
}

/// This host's name, for `%h`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn nccl_variables_translate_and_oxccl_wins() {
        let get = with(&[
            ("NCCL_DEBUG", "INFO"),
            ("NCCL_ALGO", "Ring,NVLS"),
            ("NCCL_SHM_DISABLE", "1"),
            ("NCCL_BUFFSIZE", "4194304"),
        ]);
        assert_eq!(lookup("OXCCL_DEBUG", &get).as_deref(), Some("INFO"));
        assert_eq!(lookup("OXCCL_ALGO", &get).as_deref(), Some("ring"));
        assert_eq!(lookup("OXCCL_TRANSPORT", &get).as_deref(), Some("tcp"));
        assert_eq!(lookup("OXCCL_SLOT_SIZE", &get).as_deref(), Some("524288"));
        let get = with(&[("NCCL_ALGO", "Tree"), ("OXCCL_ALGO", "bruck")]);
        assert_eq!(lookup("OXCCL_ALGO", &get).as_deref(), Some("bruck"));
        let get = with(&[("NCCL_BUFFSIZE", "1M"), ("OXCCL_NSLOTS", "4")]);
        assert_eq!(lookup("OXCCL_SLOT_SIZE", &get).as_deref(), Some("262144"));
        assert_eq!(lookup("OXCCL_TIMEOUT", &get), None);
        let c = oxccl::Config::from_lookup(|k| {
            lookup(
                k,
                &with(&[("NCCL_SHM_DISABLE", "1"), ("NCCL_BUFFSIZE", "2M")]),
            )
        })
        .unwrap();
        assert_eq!(c.transport, oxccl::TransportChoice::Tcp);
        assert_eq!(c.slot_size, 256 << 10);
    }

    #[test]
    fn nccl_ib_variables_reach_the_ib_settings() {
        let get = with(&[
            ("NCCL_NET", "IB"),
            ("NCCL_IB_HCA", "=mlx5_0:1,mlx5_1"),
            ("NCCL_IB_GID_INDEX", "3"),
            ("NCCL_IB_TIMEOUT", "18"),
            ("NCCL_IB_RETRY_CNT", "5"),
            ("NCCL_IB_QPS_PER_CONNECTION", "4"),
            ("NCCL_IB_TC", "106"),
        ]);
        let c = oxccl::Config::from_lookup(|k| lookup(k, &get)).unwrap();
        assert_eq!(c.transport, oxccl::TransportChoice::Ib);
        let hca = c.ib.hca.as_ref().unwrap();
        assert!(hca.allows("mlx5_0", 1) && !hca.allows("mlx5_0", 2) && !hca.allows("mlx5_10", 1));
        assert_eq!(
            (c.ib.gid_index, c.ib.timeout, c.ib.retry_cnt),
            (Some(3), 18, 5)
        );
        assert_eq!((c.ib.qps_per_connection, c.ib.traffic_class), (4, 106));
        let socket = with(&[("NCCL_NET", "Socket"), ("NCCL_IB_DISABLE", "1")]);
        let c = oxccl::Config::from_lookup(|k| lookup(k, &socket)).unwrap();
        assert_eq!(c.transport, oxccl::TransportChoice::Tcp);
        assert!(c.ib_disable);
    }

    #[test]
    fn nccl_algo_keeps_its_syntax() {
        assert_eq!(map_algo("^Tree").0.as_deref(), Some("^tree"));
        let (m, dropped) = map_algo("allreduce:Tree,CollNetDirect;AllGather:Ring");
        assert_eq!(m.as_deref(), Some("allreduce:tree;allgather:ring"));
        assert_eq!(dropped, ["CollNetDirect"]);
        assert_eq!(map_algo("PAT").0, None);
    }

    #[test]
    fn buffsize_and_debug_file() {
        assert_eq!(slot_size_for("100", 8), Some(64));
        assert_eq!(slot_size_for("4M", 8), Some(512 << 10));
        assert_eq!(slot_size_for("junk", 8), None);
        assert_eq!(
            expand_debug_file("/tmp/n.%h.%p.log%", "box", 42),
            "/tmp/n.box.42.log%"
        );
    }
}
