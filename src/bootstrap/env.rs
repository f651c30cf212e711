//! Reading the launch environment: which rank am I, how many are we, where is the root.

use super::{Secret, UniqueId};
use crate::error::{Error, Result};
use std::net::{SocketAddr, ToSocketAddrs};

/// Rank, size and root of this process, read from the launcher's environment.
///
/// Conventions, first match wins: `OXCCL_RANK`/`OXCCL_WORLD_SIZE` (oxccl-run), torchrun's
/// `RANK`/`WORLD_SIZE`, Open MPI's `OMPI_COMM_WORLD_RANK`/`_SIZE`, PMI's `PMI_RANK`/`PMI_SIZE`,
/// Slurm's `SLURM_PROCID`/`SLURM_NTASKS`. The root is `OXCCL_ROOT`, else `MASTER_ADDR` with
/// port `MASTER_PORT + 1` (torchrun's own store owns `MASTER_PORT`), else, under Slurm, the
/// first node of `SLURM_STEP_NODELIST`/`SLURM_JOB_NODELIST` at a port derived from the job
/// and step ids (`bootstrap/slurm.rs`).
#[derive(Debug, Clone)]
pub struct LaunchEnv {
    /// This process's rank.
    pub rank: u32,
    /// Number of ranks.
    pub nranks: u32,
    /// The rendezvous and secret.
    pub id: UniqueId,
    /// Whether this process must host the root (rank 0, unless a launcher hosts it).
    pub hosts_root: bool,
    /// Which convention supplied rank and size (e.g. `"torchrun"`).
    pub source: &'static str,
}

const CONVENTIONS: &[(&str, &str, &str)] = &[
    ("OXCCL_RANK", "OXCCL_WORLD_SIZE", "oxccl"),
    ("RANK", "WORLD_SIZE", "torchrun"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"),
    ("PMI_RANK", "PMI_SIZE", "PMI"),
    ("SLURM_PROCID", "SLURM_NTASKS", "Slurm"),
];

/// Identifiers that differ between jobs, used to derive a secret when none is given.
const JOB_IDS: &[&str] = &[
    "TORCHELASTIC_RUN_ID",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "OMPI_MCA_ess_base_jobid",
    "PMI_JOBID",
];

impl LaunchEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads through a custom lookup (tests, the C ABI).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let num = |k: &str, v: String| -> Result<u32> {
            v.parse()
                .map_err(|_| Error::Environment(format!("{k}={v:?} is not a non-negative integer")))
        };
        for &(r, n, src) in CONVENTIONS {
            if get(r).is_some() != get(n).is_some() {
                let (set, unset) = if get(r).is_some() { (r, n) } else { (n, r) };
                return Err(Error::Environment(format!(
                    "{set} is set but {unset} is not ({src} convention): set both or neither"
                )));
            }
        }
        let (rank, nranks, source) = CONVENTIONS
            .iter()
            .find_map(|&(r, n, src)| Some((r, get(r)?, n, get(n)?, src)))
            .map(|(rk, r, nk, n, src)| Ok::<_, Error>((num(rk, r)?, num(nk, n)?, src)))
            .transpose()?
            .ok_or_else(|| {
                Error::Environment(
                    "no rank and world size found: set OXCCL_RANK and OXCCL_WORLD_SIZE (oxccl-run \
                     does), or launch with torchrun, mpirun or srun"
                        .into(),
                )
            })?;
        if nranks == 0 || rank >= nranks {
            return Err(Error::Environment(format!(
                "rank {rank} is not within a world of {nranks} ranks ({source} variables)"
            )));
        }
        let root_text = match (get("OXCCL_ROOT"), get("MASTER_ADDR"), get("MASTER_PORT")) {
            (Some(r), _, _) => r,
            (None, Some(addr), Some(port)) => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|&p: &u16| p < u16::MAX)
                    .ok_or_else(|| {
                        Error::Environment(format!(
                            "MASTER_PORT={port:?} is not a port below 65535"
                        ))
                    })?;
                if addr.contains(':') && !addr.starts_with('[') {
                    format!("[{addr}]:{}", port + 1)
                } else {
                    format!("{addr}:{}", port + 1)
                }
            }
            // A Slurm step names no rendezvous: task 0's node, the list's first.
            (None, None, _) if source == "Slurm" => {
                match get("SLURM_STEP_NODELIST").or_else(|| get("SLURM_JOB_NODELIST")) {
                    Some(list) => {
                        let host = super::slurm::first_host(&list)?;
                        let job = get("SLURM_JOB_ID").unwrap_or_default();
                        let step = get("SLURM_STEP_ID").unwrap_or_default();
                        format!("{host}:{}", super::slurm::port(&job, &step))
                    }
                    None => {
                        return Err(Error::Environment(
                            "Slurm job without SLURM_JOB_NODELIST: set OXCCL_ROOT=host:port".into(),
                        ))
                    }
                }
            }
            _ => {
                return Err(Error::Environment(format!(
                    "no root address ({source} variables): set OXCCL_ROOT=host:port (or \
                     MASTER_ADDR and MASTER_PORT){}",
                    match source {
                        "Open MPI" | "PMI" =>
                            ", or build oxccl with feature `mpi` and create \
                                              the communicator with Communicator::from_mpi",
                        _ => "",
                    }
                )))
            }
        };
        let root = resolve(&root_text)?;
        let secret = match get("OXCCL_SECRET") {
            Some(hex) => Secret::from_hex(&hex)?,
            None => {
                let ids: Vec<String> = JOB_IDS
                    .iter()
                    .filter_map(|k| get(k).map(|v| format!("{k}={v}")))
                    .collect();
                tracing::info!(
                    target: "oxccl::bootstrap",
                    "OXCCL_SECRET not set: deriving the job secret from {root_text} and {ids:?}; \
                     anyone who knows these can join the job"
                );
                Secret::derived(&format!("{root_text};{}", ids.join(";")))
            }
        };
        let external = get("OXCCL_ROOT_EXTERNAL").is_some_and(|v| v == "1");
        Ok(LaunchEnv {
            rank,
            nranks,
            id: UniqueId { root, secret },
            hosts_root: rank == 0 && !external,
            source,
        })
    }
}

fn resolve(text: &str) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| Error::Environment(format!("root address {text:?} does not resolve: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| Error::Environment(format!("root address {text:?} resolves to nothing")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<LaunchEnv> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        LaunchEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn conventions_in_order() {
        let e = env(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "4"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.nranks, e.source), (2, 4, "torchrun"));
        assert_eq!(e.id.root, "127.0.0.1:29501".parse().unwrap());
        assert!(!e.hosts_root);
        let e = env(&[
            ("OXCCL_RANK", "0"),
            ("OXCCL_WORLD_SIZE", "3"),
            ("RANK", "5"),
            ("WORLD_SIZE", "9"),
            ("OXCCL_ROOT", "127.0.0.1:1234"),
            ("OXCCL_ROOT_EXTERNAL", "1"),
            ("OXCCL_SECRET", &"ab".repeat(32)),
        ])
        .unwrap();
        assert_eq!(
            (e.rank, e.nranks, e.source, e.hosts_root),
            (0, 3, "oxccl", false)
        );
        assert_eq!(e.id.secret.0, [0xab; 32]);
        let e = env(&[
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OXCCL_ROOT", "127.0.0.1:9"),
        ])
        .unwrap();
        assert_eq!((e.source, e.hosts_root), ("Open MPI", true));
        let e = env(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("OXCCL_ROOT", "127.0.0.1:9"),
        ])
        .unwrap();
        assert_eq!(e.source, "Slurm");
        let e = env(&[
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "2"),
            ("OXCCL_ROOT", "127.0.0.1:9"),
        ])
        .unwrap();
        assert_eq!(e.source, "PMI");
    }

    #[test]
    fn clear_errors() {
        let e = env(&[]).unwrap_err().to_string();
        assert!(e.contains("OXCCL_RANK"), "{e}");
        let e = env(&[("RANK", "4"), ("WORLD_SIZE", "4")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 4"), "{e}");
        let e = env(&[("RANK", "x"), ("WORLD_SIZE", "4")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RANK=\"x\""), "{e}");
        let e = env(&[("RANK", "0"), ("WORLD_SIZE", "4")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("OXCCL_ROOT"), "{e}");
        let e = env(&[("PMI_RANK", "0"), ("PMI_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("from_mpi") && e.contains("PMI"), "{e}");
        let e = env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SLURM_JOB_NODELIST"), "{e}");
    }

    #[test]
    fn slurm_root_is_the_first_node_of_the_step() {
        let e = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_ID", "4242"),
            ("SLURM_STEP_ID", "3"),
            ("SLURM_JOB_NODELIST", "localhost,node[2-3]"),
        ])
        .unwrap();
        let port = crate::bootstrap::slurm::port("4242", "3");
        assert_eq!(e.id.root, format!("127.0.0.1:{port}").parse().unwrap());
        assert!(e.hosts_root);
        let e = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_NODELIST", "node[01-04]"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("node01"), "the unresolvable host is named: {e}");
    }
}
