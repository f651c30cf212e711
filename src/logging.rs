//! Logging through `tracing`, switched on by `OXCCL_DEBUG` and `OXCCL_DEBUG_SUBSYS`.
//!
//! oxccl only emits events; it installs a subscriber (to stderr) only when `OXCCL_DEBUG` is
//! set, and only if the program has not installed one itself. Subsystems map to targets:
//! `INIT` → `oxccl::init`, `BOOTSTRAP` → `oxccl::bootstrap`, `COLL` → `oxccl::coll`,
//! `P2P` → `oxccl::p2p` and `oxccl_transports::cuda` (GPU buffers, the CUDA IPC peer
//! path), `NET` → `oxccl_transports::tcp`, `SHM` → `oxccl_transports::shm`,
//! `TUNING` → `oxccl::tuning` (the tuner's table of predicted times, once per communicator).

use std::sync::Once;

const SUBSYSTEMS: &[(&str, &[&str])] = &[
    ("INIT", &["oxccl::init"]),
    ("BOOTSTRAP", &["oxccl::bootstrap"]),
    ("COLL", &["oxccl::coll"]),
    ("P2P", &["oxccl::p2p", "oxccl_transports::cuda"]),
    ("NET", &["oxccl_transports::tcp"]),
    ("SHM", &["oxccl_transports::shm"]),
    ("TUNING", &["oxccl::tuning"]),
];

/// The `tracing` filter directives for the given `OXCCL_DEBUG` and `OXCCL_DEBUG_SUBSYS`
/// values, or `None` when logging stays off.
pub fn directives(level: Option<&str>, subsys: Option<&str>) -> Option<String> {
    let level = match level?.trim().to_ascii_uppercase().as_str() {
        "" | "NONE" | "OFF" => return None,
        "VERSION" | "WARN" => "warn",
        "INFO" => "info",
        "DEBUG" => "debug",
        "TRACE" | "ALL" => "trace",
        _ => "warn",
    };
    let mut selected: Vec<&str> = Vec::new();
    let mut excluded: Vec<&str> = Vec::new();
    for item in subsys
        .unwrap_or("ALL")
        .split(',')
        .map(|s| s.trim().to_ascii_uppercase())
    {
        let (neg, name) = match item.strip_prefix('^') {
            Some(n) => (true, n.to_owned()),
            None => (false, item),
        };
        let targets: Vec<&str> = if name == "ALL" {
            SUBSYSTEMS
                .iter()
                .flat_map(|(_, t)| t.iter().copied())
                .collect()
        } else {
            SUBSYSTEMS
                .iter()
                .filter(|(n, _)| *n == name)
                .flat_map(|(_, t)| t.iter().copied())
                .collect()
        };
        if neg {
            excluded.extend(targets)
        } else {
            selected.extend(targets)
        }
    }
    if subsys.is_none_or(|s| s.trim_start().starts_with('^')) {
        selected = SUBSYSTEMS
            .iter()
            .flat_map(|(_, t)| t.iter().copied())
            .collect();
    }
    let mut d = vec!["warn".to_owned()];
    d.extend(
        selected
            .iter()
            .filter(|t| !excluded.contains(t))
            .map(|t| format!("{t}={level}")),
    );
    d.extend(excluded.iter().map(|t| format!("{t}=warn")));
    Some(d.join(","))
}

/// Installs the stderr subscriber once, if `OXCCL_DEBUG` asks for it.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let level = std::env::var("OXCCL_DEBUG").ok();
        let subsys = std::env::var("OXCCL_DEBUG_SUBSYS").ok();
        if let Some(d) = directives(level.as_deref(), subsys.as_deref()) {
            let filter = tracing_subscriber::EnvFilter::new(d);
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(filter)
                .with_target(true)
                .try_init();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn levels_and_subsystems() {
        assert_eq!(directives(None, None), None);
        assert_eq!(directives(Some("none"), None), None);
        let d = directives(Some("INFO"), Some("INIT,NET")).unwrap();
        assert!(
            d.contains("oxccl::init=info") && d.contains("oxccl_transports::tcp=info"),
            "{d}"
        );
        assert!(!d.contains("oxccl::coll=info"), "{d}");
        let d = directives(Some("TRACE"), Some("^SHM")).unwrap();
        assert!(
            d.contains("oxccl::coll=trace") && d.contains("oxccl_transports::shm=warn"),
            "{d}"
        );
        assert!(!d.contains("oxccl_transports::shm=trace"), "{d}");
    }
}
