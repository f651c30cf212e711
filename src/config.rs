//! Configuration: one [`Config`], filled from defaults, then `OXCCL_*` environment
//! variables ([`Config::from_env`]), then code (set the fields).
//!
//! Every variable oxccl reads is listed once in [`KNOBS`]; `docs/configuration.md` is
//! generated from that table (a test fails when they differ).

use crate::error::{Error, Result};
use oxccl_algorithms::Algorithm;
use std::net::IpAddr;
use std::time::Duration;

/// One environment variable oxccl reads.
#[derive(Debug, Clone, Copy)]
pub struct Knob {
    /// Variable name.
    pub name: &'static str,
    /// Default value, as text.
    pub default: &'static str,
    /// Unit or accepted values.
    pub unit: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// Every environment variable oxccl reads.
pub const KNOBS: &[Knob] = &[
    Knob { name: "OXCCL_TIMEOUT", default: "300", unit: "seconds", doc: "Deadline for any wait without progress (bootstrap, connect, every collective). An op that makes no progress this long fails with an error naming the peer and step." },
    Knob { name: "OXCCL_TRANSPORT", default: "auto", unit: "auto, shm, tcp, ib", doc: "auto: shared memory between ranks on one host; between hosts InfiniBand/RoCE verbs when every rank has an active RDMA port, else TCP. tcp: TCP everywhere. ib: verbs everywhere, even between ranks of one host (an error naming the reason when a rank has no usable port). shm: shared memory, and an error if ranks are on several hosts." },
    Knob { name: "OXCCL_IB_DISABLE", default: "0", unit: "0 or 1", doc: "1: never use InfiniBand/RoCE (auto picks TCP between hosts) and do not open libibverbs." },
    Knob { name: "OXCCL_IB_HCA", default: "(every active port)", unit: "NCCL_IB_HCA's syntax: `mlx5_0:1,mlx5_1`, `^mlx5_2`, `=mlx5_0`", doc: "RDMA devices and ports to use: a comma list of `name[:port]`, names matching as prefixes; `^` first excludes them instead, `=` (after any `^`) asks for exact names. Connection `c` of a pair uses the `c mod n`-th of the n selected ports (rails)." },
    Knob { name: "OXCCL_IB_GID_INDEX", default: "(auto)", unit: "0..=255", doc: "RoCE: the GID table entry to use. Auto: RoCE v2 with an IPv4-mapped address, else RoCE v2 with a global IPv6 address, else RoCE v1." },
    Knob { name: "OXCCL_IB_TIMEOUT", default: "20", unit: "1..=31", doc: "Verbs ACK timeout exponent: each try waits 4.096 µs × 2^value (20: about 4.3 s) before a retransmission." },
    Knob { name: "OXCCL_IB_RETRY_CNT", default: "7", unit: "0..=7", doc: "Verbs retransmissions before a write fails with `transport retry counter exceeded`, reported naming the peer." },
    Knob { name: "OXCCL_IB_QPS_PER_CONNECTION", default: "1", unit: "1..=16", doc: "Queue pairs per verbs connection; messages go round-robin over them (spreads traffic over a fabric's paths). The same on every rank." },
    Knob { name: "OXCCL_IB_SL", default: "0", unit: "0..=15", doc: "InfiniBand service level of the queue pairs." },
    Knob { name: "OXCCL_IB_TC", default: "0", unit: "0..=255", doc: "RoCE traffic class of the queue pairs." },
    Knob { name: "OXCCL_NCHANNELS", default: "2", unit: "count (1-64)", doc: "Channels per operation; each has its own connection (TCP: its own socket stream) to every peer and handles 1/n of the data." },
    Knob { name: "OXCCL_CHECK", default: "0", unit: "0 or 1", doc: "1: before each group of collectives the ranks compare what each is about to run (collective, datatype, count, root, reduction) with one small all-gather, and a mismatch fails on every rank with an error naming who called what, instead of corrupting data or hanging. Costs one extra small exchange per group (see README). Every rank must set the same value." },
    Knob { name: "OXCCL_ZERO_COPY", default: "1", unit: "0 or 1", doc: "TCP: send straight from the op's buffers and receive plain copies straight into them (1), or move every byte through the connection's FIFO slots (0, one more copy on each side). The bytes on the wire are the same." },
    Knob { name: "OXCCL_SLOT_SIZE", default: "128K", unit: "bytes (K/M suffix)", doc: "Bytes per FIFO slot: the unit in which data moves and pipelines between ranks." },
    Knob { name: "OXCCL_NSLOTS", default: "8", unit: "count (2-1024)", doc: "Slots per one-way connection. A plan chunk is half the FIFO, so consecutive steps overlap." },
    Knob { name: "OXCCL_ALGO", default: "(tuner)", unit: "an algorithm, or NCCL_ALGO's syntax", doc: "One name (ring, one_shot, ls_one_shot, ls_two_shot, tree, recursive_doubling, halving_doubling, bruck, binomial, linear) forces that algorithm for every collective it supports (the ls_ (load/store) algorithms only where every rank is on this host with shared memory); the others keep the tuner's choice. A list restricts the tuner: `ring,tree`, `^tree` (all but), `allreduce:tree,ring;allgather:^bruck` (per collective)." },
    Knob { name: "OXCCL_RD_MAX", default: "32K", unit: "bytes (K/M suffix)", doc: "Without a shared-memory window (ranks on several hosts, or TCP), the tuner runs an all-reduce of at most this many bytes with recursive doubling on fewer than 8 ranks." },
    Knob { name: "OXCCL_TREE_MAX", default: "256K", unit: "bytes (K/M suffix)", doc: "Without a shared-memory window, the tuner runs an all-reduce of at most this many bytes on 8 or more ranks with the double binary tree; larger ones run ring." },
    Knob { name: "OXCCL_TUNING_FILE", default: "(none)", unit: "path", doc: "Measured times of every algorithm (written by `oxccl-perf tune`). For a communicator whose rank count and link class (shm, tcp, mixed) the file measured, the tuner picks the algorithm and channel cap with the least predicted time (log-log interpolation of the measurements) instead of its built-in thresholds; OXCCL_ALGO still restricts the choice." },
    Knob { name: "OXCCL_SHM_WINDOW", default: "4M", unit: "bytes (K/M suffix), 0 or 64K-1G", doc: "Bytes of each of the two halves of a rank's peer-readable shared-memory window, used by the load/store algorithms when every rank is on one host. 0 disables them. Larger windows mean fewer synchronisations per large op; pages are only allocated when touched." },
    Knob { name: "OXCCL_LS_ONE_SHOT_MAX", default: "64K", unit: "bytes (K/M suffix)", doc: "On one host with a window, an all-reduce of at most this many bytes runs load/store one-shot, a larger one load/store two-shot." },
    Knob { name: "OXCCL_SOCKET_ADDR", default: "(route to root)", unit: "IP address", doc: "Address this rank's data listener binds and advertises. Default: the local address of the connection to the root." },
    Knob { name: "OXCCL_SOCKET_IFNAME", default: "(route to root)", unit: "NCCL_SOCKET_IFNAME's syntax: `eth,ib`, `^docker,lo`, `=eth0`", doc: "Interfaces whose IPv4 address the data listener binds and advertises (when OXCCL_SOCKET_ADDR is unset): a comma list of name prefixes, `^` first to exclude them instead, `=` (after any `^`) for exact names. The first selected interface that is up with an IPv4 address wins (loopback only when named); an error lists every interface when none is. Unset: the address of the route to the root, or the first physical interface when that route leaves through loopback or a bridge (docker0) to a root on another host." },
    Knob { name: "OXCCL_STATUS_DIR", default: "(none; oxccl-run sets one)", unit: "directory", doc: "Each rank's watchdog rewrites `rank<N>` there every 0.5 s with where the rank is (`in all_reduce #57 for 12.3 s`, `between ops`, a dead rank it found). `oxccl-status DIR` prints every rank's line and who is behind; oxccl-run prints them when interrupted. On several hosts, a directory they share." },
    Knob { name: "OXCCL_TOPO_DUMP_FILE", default: "(none)", unit: "path; `%h` host, `%r` rank", doc: "At communicator creation, write this host's detected topology (CPUs, NUMA, PCI tree, NICs, RDMA devices, GPUs): XML when the path ends in `.xml`, JSON otherwise. `%h` becomes the hostname, `%r` the rank; without `%r` only the lowest rank of each host writes. A failed write is a warning." },
    Knob { name: "OXCCL_HOSTNAME", default: "(hostname + boot id)", unit: "text", doc: "Host identity: ranks with the same identity use shared memory. Set per network namespace to emulate several hosts." },
    Knob { name: "OXCCL_SPIN", default: "(auto)", unit: "iterations", doc: "Polls before a waiting rank yields the CPU, then sleeps on a futex or poll. Auto: 2000 when this host's ranks fit its CPUs, 0 when they outnumber them (spinning would steal the CPU from the rank being waited for)." },
    Knob { name: "OXCCL_DEBUG", default: "WARN", unit: "NONE, WARN, INFO, TRACE", doc: "Log level of the stderr log oxccl installs when this is set (a program with its own tracing subscriber gets the events there instead)." },
    Knob { name: "OXCCL_DEBUG_SUBSYS", default: "ALL", unit: "comma list of INIT, BOOTSTRAP, COLL, P2P, NET, SHM, TUNING, ALL; ^X excludes", doc: "Subsystems to log. P2P includes GPU buffers and the CUDA IPC peer path." },
    Knob { name: "OXCCL_CUDA_IPC", default: "0", unit: "0 or 1", doc: "1, with every rank on one host: all-reduce, reduce, broadcast, all-gather and reduce-scatter on GPU buffers go through the peers' GPU memory (CUDA IPC; ranks of one process use the addresses), one kernel pass, no host copies. A job whose buffers some rank cannot share (pool memory between processes, say) goes through host memory on every rank alike, with a warning the first time. Opt-in until it has run on a GPU." },
    Knob { name: "OXCCL_CUDA_BLOCKING", default: "0", unit: "0 or 1", doc: "1: ops on GPU buffers run on the calling thread, which waits for the stream (also taken when the driver refuses stream waits on host memory)." },
    Knob { name: "OXCCL_CACHE_DIR", default: "$XDG_CACHE_HOME/oxccl, else ~/.cache/oxccl", unit: "a directory", doc: "Where the CUDA kernels' PTX, compiled at run time with NVRTC, is cached per GPU architecture." },
    Knob { name: "OXCCL_RANK", default: "-", unit: "integer", doc: "Launch: this process's rank (set by oxccl-run). Also read: RANK, OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_PROCID." },
    Knob { name: "OXCCL_WORLD_SIZE", default: "-", unit: "integer", doc: "Launch: number of ranks. Also read: WORLD_SIZE, OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_NTASKS." },
    Knob { name: "OXCCL_ROOT", default: "-", unit: "host:port", doc: "Launch: the rendezvous root. Default from MASTER_ADDR and MASTER_PORT+1 (MASTER_PORT itself belongs to torchrun's store)." },
    Knob { name: "OXCCL_ROOT_EXTERNAL", default: "0", unit: "0 or 1", doc: "Launch: 1 when a launcher hosts the root (oxccl-run); otherwise rank 0 hosts it." },
    Knob { name: "OXCCL_SECRET", default: "(derived)", unit: "64 hex digits", doc: "Launch: the job secret every connection proves it knows. Without it, one is derived from the job's identifiers (weaker: anyone who knows them can join)." },
];

/// How ranks are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// Shared memory within a host, TCP between hosts.
    #[default]
    Auto,
    /// Shared memory only (an error across hosts).
    Shm,
    /// TCP only.
    Tcp,
    /// InfiniBand/RoCE verbs between every pair of ranks.
    Ib,
}

/// Everything that can be tuned. Construct with [`Config::from_env`] or `Config::default()`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `OXCCL_TIMEOUT`.
    pub timeout: Duration,
    /// `OXCCL_TRANSPORT`.
    pub transport: TransportChoice,
    /// `OXCCL_NCHANNELS`.
    pub nchannels: u32,
    /// `OXCCL_SLOT_SIZE`.
    pub slot_size: usize,
    /// `OXCCL_ZERO_COPY`: TCP moves data straight from and to the op's buffers.
    pub zero_copy: bool,
    /// `OXCCL_CHECK`: ranks compare every group of collectives before running it.
    pub check: bool,
    /// `OXCCL_NSLOTS`.
    pub nslots: usize,
    /// `OXCCL_ALGO` when it names one algorithm (`None`: the tuner decides).
    pub algorithm: Option<Algorithm>,
    /// `OXCCL_ALGO` when it is a selection (`ring,tree`, `^tree`, per collective).
    pub algo_rules: Option<crate::tuner::AlgoRules>,
    /// `OXCCL_SOCKET_ADDR`.
    pub socket_addr: Option<IpAddr>,
    /// `OXCCL_HOSTNAME`.
    pub hostname: Option<String>,
    /// `OXCCL_SOCKET_IFNAME`, parsed.
    pub socket_ifname: Option<crate::topology::IfnameSpec>,
    /// `OXCCL_TOPO_DUMP_FILE`: where each host writes its topology at creation.
    pub topo_dump_file: Option<std::path::PathBuf>,
    /// `OXCCL_STATUS_DIR`: where each rank's watchdog writes its status line.
    pub status_dir: Option<std::path::PathBuf>,
    /// `OXCCL_RD_MAX`.
    pub rd_max: usize,
    /// `OXCCL_TREE_MAX`.
    pub tree_max: usize,
    /// `OXCCL_SPIN` (`None`: decided from ranks per host and CPUs).
    pub spin: Option<u32>,
    /// `OXCCL_SHM_WINDOW` (0: no window, no load/store algorithms).
    pub shm_window: usize,
    /// `OXCCL_LS_ONE_SHOT_MAX`.
    pub ls_one_shot_max: usize,
    /// `OXCCL_TUNING_FILE`, read and parsed (`None`: the built-in thresholds decide).
    pub tuning: Option<std::sync::Arc<crate::tuner::TuningFile>>,
    /// `OXCCL_IB_DISABLE`.
    pub ib_disable: bool,
    /// `OXCCL_IB_HCA`, `OXCCL_IB_GID_INDEX`, `OXCCL_IB_TIMEOUT`, `OXCCL_IB_RETRY_CNT`,
    /// `OXCCL_IB_QPS_PER_CONNECTION`, `OXCCL_IB_SL`, `OXCCL_IB_TC`.
    pub ib: oxccl_transports::ib::IbSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            transport: TransportChoice::Auto,
            nchannels: 2,
            slot_size: 128 * 1024,
            zero_copy: true,
            check: false,
            nslots: 8,
            algorithm: None,
            algo_rules: None,
            socket_addr: None,
            hostname: None,
            socket_ifname: None,
            topo_dump_file: None,
            status_dir: None,
            spin: None,
            rd_max: 32 * 1024,
            tree_max: 256 * 1024,
            shm_window: 4 << 20,
            ls_one_shot_max: 64 * 1024,
            tuning: None,
            ib_disable: false,
            ib: Default::default(),
        }
    }
}

impl Config {
    /// Defaults overridden by the `OXCCL_*` environment variables in [`KNOBS`].
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Config::from_env`] with a custom variable lookup (for tests and the C ABI,
    /// which maps `NCCL_*` names first).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut c = Config::default();
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if let Some(v) = get("OXCCL_TIMEOUT") {
            let secs: f64 = parse(&v, "OXCCL_TIMEOUT")?;
            if !(secs > 0.0 && secs.is_finite()) {
                return Err(bad(
                    "OXCCL_TIMEOUT",
                    &v,
                    "must be a positive number of seconds",
                ));
            }
            c.timeout = Duration::from_secs_f64(secs);
        }
        if let Some(v) = get("OXCCL_TRANSPORT") {
            c.transport = match v.to_ascii_lowercase().as_str() {
                "auto" => TransportChoice::Auto,
                "shm" => TransportChoice::Shm,
                "tcp" | "socket" | "net" => TransportChoice::Tcp,
                "ib" | "verbs" | "rdma" => TransportChoice::Ib,
                _ => return Err(bad("OXCCL_TRANSPORT", &v, "expected auto, shm, tcp or ib")),
            };
        }
        if let Some(v) = get("OXCCL_NCHANNELS") {
            c.nchannels = parse(&v, "OXCCL_NCHANNELS")?;
        }
        if let Some(v) = get("OXCCL_SLOT_SIZE") {
            c.slot_size = parse_size(&v).ok_or_else(|| {
                bad(
                    "OXCCL_SLOT_SIZE",
                    &v,
                    "expected bytes with optional K/M suffix",
                )
            })?;
        }
        for (knob, field) in [
            ("OXCCL_ZERO_COPY", &mut c.zero_copy),
            ("OXCCL_CHECK", &mut c.check),
            ("OXCCL_IB_DISABLE", &mut c.ib_disable),
        ] {
            if let Some(v) = get(knob) {
                *field = match v.to_ascii_lowercase().as_str() {
                    "1" | "on" | "true" | "yes" => true,
                    "0" | "off" | "false" | "no" => false,
                    _ => return Err(bad(knob, &v, "expected 0 or 1")),
                };
            }
        }
        if let Some(v) = get("OXCCL_NSLOTS") {
            c.nslots = parse(&v, "OXCCL_NSLOTS")?;
        }
        if let Some(v) = get("OXCCL_ALGO") {
            // One name forces that algorithm wherever it applies; anything else is a
            // selection in NCCL_ALGO's syntax (see `tuner::rules`).
            match v.parse::<Algorithm>() {
                Ok(a) => c.algorithm = Some(a),
                Err(_) => {
                    c.algo_rules = Some(v.parse().map_err(|e: String| bad("OXCCL_ALGO", &v, &e))?)
                }
            }
        }
        if let Some(v) = get("OXCCL_SOCKET_ADDR") {
            c.socket_addr = Some(parse(&v, "OXCCL_SOCKET_ADDR")?);
        }
        for (knob, field) in [
            ("OXCCL_SHM_WINDOW", &mut c.shm_window),
            ("OXCCL_LS_ONE_SHOT_MAX", &mut c.ls_one_shot_max),
            ("OXCCL_RD_MAX", &mut c.rd_max),
            ("OXCCL_TREE_MAX", &mut c.tree_max),
        ] {
            if let Some(v) = get(knob) {
                *field = parse_size(&v)
                    .ok_or_else(|| bad(knob, &v, "expected bytes with optional K/M/G suffix"))?;
            }
        }
        if let Some(v) = get("OXCCL_TUNING_FILE") {
            let file = crate::tuner::TuningFile::read(std::path::Path::new(&v))?;
            c.tuning = Some(std::sync::Arc::new(file));
        }
        c.hostname = get("OXCCL_HOSTNAME");
        if let Some(v) = get("OXCCL_SOCKET_IFNAME") {
            c.socket_ifname = Some(
                v.parse()
                    .map_err(|e: String| bad("OXCCL_SOCKET_IFNAME", &v, &e))?,
            );
        }
        c.topo_dump_file = get("OXCCL_TOPO_DUMP_FILE").map(std::path::PathBuf::from);
        c.status_dir = get("OXCCL_STATUS_DIR").map(std::path::PathBuf::from);
        if let Some(v) = get("OXCCL_SPIN") {
            c.spin = Some(parse(&v, "OXCCL_SPIN")?);
        }
        if let Some(v) = get("OXCCL_IB_HCA") {
            c.ib.hca = Some(
                oxccl_transports::ib::HcaSpec::parse(&v)
                    .map_err(|e| bad("OXCCL_IB_HCA", &v, &e))?,
            );
        }
        if let Some(v) = get("OXCCL_IB_GID_INDEX") {
            c.ib.gid_index = Some(parse(&v, "OXCCL_IB_GID_INDEX")?);
        }
        if let Some(v) = get("OXCCL_IB_TIMEOUT") {
            c.ib.timeout = parse(&v, "OXCCL_IB_TIMEOUT")?;
        }
        if let Some(v) = get("OXCCL_IB_RETRY_CNT") {
            c.ib.retry_cnt = parse(&v, "OXCCL_IB_RETRY_CNT")?;
        }
        if let Some(v) = get("OXCCL_IB_QPS_PER_CONNECTION") {
            c.ib.qps_per_connection = parse(&v, "OXCCL_IB_QPS_PER_CONNECTION")?;
        }
        if let Some(v) = get("OXCCL_IB_SL") {
            c.ib.service_level = parse(&v, "OXCCL_IB_SL")?;
        }
        if let Some(v) = get("OXCCL_IB_TC") {
            c.ib.traffic_class = parse(&v, "OXCCL_IB_TC")?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks ranges; called by `from_env` and by `Communicator::init`.
    pub fn validate(&self) -> Result<()> {
        if self.timeout.is_zero() {
            return Err(bad("OXCCL_TIMEOUT", "0", "must be positive"));
        }
        if !(1..=64).contains(&self.nchannels) {
            return Err(bad(
                "OXCCL_NCHANNELS",
                &self.nchannels.to_string(),
                "must be 1..=64",
            ));
        }
        if self.slot_size < 64 || self.slot_size % 64 != 0 || self.slot_size > 64 << 20 {
            return Err(bad(
                "OXCCL_SLOT_SIZE",
                &self.slot_size.to_string(),
                "must be a multiple of 64 between 64 and 64M",
            ));
        }
        if self.shm_window != 0 && !(64 << 10..=1 << 30).contains(&self.shm_window) {
            return Err(bad(
                "OXCCL_SHM_WINDOW",
                &self.shm_window.to_string(),
                "must be 0 (off) or between 64K and 1G",
            ));
        }
        if !(2..=1024).contains(&self.nslots) {
            return Err(bad(
                "OXCCL_NSLOTS",
                &self.nslots.to_string(),
                "must be 2..=1024",
            ));
        }
        if let Err(e) = self.ib.validate() {
            return Err(Error::Config {
                knob: "OXCCL_IB_*",
                detail: e.to_string(),
            });
        }
        if self.transport == TransportChoice::Ib && self.ib_disable {
            return Err(bad(
                "OXCCL_TRANSPORT",
                "ib",
                "asks for verbs while OXCCL_IB_DISABLE=1 forbids them",
            ));
        }
        Ok(())
    }

    /// The knob table as Markdown (the body of `docs/configuration.md`).
    pub fn markdown_table() -> String {
        let mut s =
            String::from("| Variable | Default | Unit / values | Meaning |\n|---|---|---|---|\n");
        for k in KNOBS {
            s.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                k.name, k.default, k.unit, k.doc
            ));
        }
        s
    }
}

fn bad(knob: &'static str, value: &str, why: &str) -> Error {
    Error::Config {
        knob,
        detail: format!("{value:?}: {why}"),
    }
}

fn parse<T: std::str::FromStr>(v: &str, knob: &'static str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e: T::Err| bad(knob, v, &e.to_string()))
}

/// Parses `1234`, `64K`, `4M`, `1G` (binary multiples).
pub fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let (num, mul) = match v.char_indices().last()? {
        (i, 'k' | 'K') => (&v[..i], 1usize << 10),
        (i, 'm' | 'M') => (&v[..i], 1 << 20),
        (i, 'g' | 'G') => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_defaults_and_bad_values_name_the_knob() {
        let c = Config::from_lookup(|k| match k {
            "OXCCL_TIMEOUT" => Some("2.5".into()),
            "OXCCL_TRANSPORT" => Some("TCP".into()),
            "OXCCL_SLOT_SIZE" => Some("64K".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.transport, TransportChoice::Tcp);
        assert_eq!(c.slot_size, 65536);
        let e = Config::from_lookup(|k| (k == "OXCCL_NSLOTS").then(|| "1".into())).unwrap_err();
        assert!(e.to_string().contains("OXCCL_NSLOTS"), "{e}");
        let e =
            Config::from_lookup(|k| (k == "OXCCL_TRANSPORT").then(|| "ib9".into())).unwrap_err();
        assert!(e.to_string().contains("OXCCL_TRANSPORT"), "{e}");
    }

    #[test]
    fn every_knob_is_documented_in_the_generated_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let doc = std::fs::read_to_string(path).expect("docs/configuration.md exists");
        let table = Config::markdown_table();
        if std::env::var_os("OXCCL_BLESS").is_some() {
            let start = doc.find("| Variable |").expect("table header in the doc");
            let end = doc[start..]
                .find("\n\n")
                .map_or(doc.len(), |e| start + e + 1);
            let updated = format!("{}{}{}", &doc[..start], table, &doc[end..]);
            std::fs::write(path, updated).expect("write docs/configuration.md");
            return;
        }
        assert!(
            doc.contains(&table),
            "docs/configuration.md is out of date: regenerate its table with \
             `OXCCL_BLESS=1 cargo test -p oxccl --lib config`"
        );
    }
}
