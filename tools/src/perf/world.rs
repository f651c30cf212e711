//! Where the ranks come from: a launcher's environment (one rank per process) or `-t N`
//! (N ranks as threads of this process), and what each rank tells the others for the
//! header.

use super::report::RankInfo;

use oxccl::{Communicator, Config, Result, UniqueId};
use std::net::{Ipv4Addr, SocketAddr};

/// The rank variables of the launch conventions [`oxccl::LaunchEnv`] reads.
const RANK_VARS: [&str; 5] = [
    "OXCCL_RANK",
    "RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
    "SLURM_PROCID",
];

/// Whether a launcher started this process as one rank of a job.
pub fn launched() -> bool {
    RANK_VARS
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// A communicator id for `-t` threads, its root on loopback.
pub fn thread_id(config: &Config) -> Result<UniqueId> {
    oxccl::logging::init();
    UniqueId::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config.timeout)
}

/// This host's name (the kernel's, else `$HOSTNAME`, else `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Bytes per rank record: pid, host name length, host name.
const RECORD: usize = 256;

/// Every rank's pid and host, gathered on every rank; a rank's device number is its index
/// among the ranks of its host.
pub fn gather_infos(comm: &mut Communicator) -> Result<Vec<RankInfo>> {
    let n = comm.size() as usize;
    let host = hostname();
    let host = &host.as_bytes()[..host.len().min(RECORD - 5)];
    let mut mine = [0u8; RECORD];
    mine[..4].copy_from_slice(&std::process::id().to_le_bytes());
    mine[4] = host.len() as u8;
    mine[5..5 + host.len()].copy_from_slice(host);
    let mut all = vec![0u8; RECORD * n];
    comm.all_gather(&mine, &mut all)?;
    let mut infos: Vec<RankInfo> = all
        .chunks(RECORD)
        .enumerate()
        .map(|(rank, rec)| {
            let len = (rec[4] as usize).min(RECORD - 5);
            RankInfo {
                rank: rank as u32,
                pid: u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]),
                hostname: String::from_utf8_lossy(&rec[5..5 + len]).into_owned(),
                device: 0,
            }
        })
        .collect();
    for i in 0..n {
        let same_host = infos[..i]
            .iter()
            .filter(|o| o.hostname == infos[i].hostname)
            .count();
        infos[i].device = same_host as u32;
    }
    Ok(infos)
}
