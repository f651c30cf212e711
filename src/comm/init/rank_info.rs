//! What ranks tell each other at creation, and the checks on it.

use crate::bootstrap::wire::{Dec, Enc};
use crate::config::Config;
use crate::error::{Error, Result};
use std::net::SocketAddr;

/// What each rank tells the others during the rendezvous.
pub(super) struct RankInfo {
    pub host: String,
    pub pid: u32,
    pub data_addr: SocketAddr,
    /// The settings every rank must share, as `name=value` pairs.
    pub shared_config: String,
    /// Why this rank cannot use verbs (empty: it has a usable RDMA port).
    pub ib_unusable: String,
}

impl RankInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.str(&self.host)
            .u32(self.pid)
            .str(&self.data_addr.to_string())
            .str(&self.shared_config)
            .str(&self.ib_unusable);
        e.0
    }

    pub fn decode(b: &[u8], rank: usize) -> Result<Self> {
        let mut d = Dec(b);
        let bad = |why: &str| Error::Bootstrap {
            rank: rank as u32,
            detail: format!("malformed rank info from rank {rank}: {why}"),
        };
        let host = d.str().map_err(|m| bad(m.0))?;
        let pid = d.u32().map_err(|m| bad(m.0))?;
        let addr = d.str().map_err(|m| bad(m.0))?;
        let data_addr = addr.parse().map_err(|_| bad("bad address"))?;
        let shared_config = d.str().map_err(|m| bad(m.0))?;
        let ib_unusable = d.str().map_err(|m| bad(m.0))?;
        Ok(RankInfo {
            host,
            pid,
            data_addr,
            shared_config,
            ib_unusable,
        })
    }
}

/// This host's identity: `OXCCL_HOSTNAME`, else the kernel hostname plus the boot id (two
/// containers with the same hostname on different machines must not try shared memory).
pub(super) fn host_identity(config: &Config) -> String {
    crate::topology::host_identity(config.hostname.as_deref())
}

/// The settings that decide byte counts and connections; every rank must agree on them.
pub(super) fn shared_config(c: &Config) -> String {
    format!(
        "OXCCL_NCHANNELS={} OXCCL_SLOT_SIZE={} OXCCL_NSLOTS={} OXCCL_TRANSPORT={:?} OXCCL_ALGO={} \
         OXCCL_RD_MAX={} OXCCL_TREE_MAX={} OXCCL_SHM_WINDOW={} OXCCL_LS_ONE_SHOT_MAX={} OXCCL_TUNING_FILE={} \
         OXCCL_CHECK={} OXCCL_IB_QPS_PER_CONNECTION={}",
        c.nchannels,
        c.slot_size,
        c.nslots,
        c.transport,
        match (&c.algorithm, &c.algo_rules) {
            (Some(a), _) => a.to_string(),
            (None, Some(r)) => r.to_string(),
            (None, None) => "auto".into(),
        },
        c.rd_max,
        c.tree_max,
        c.shm_window,
        c.ls_one_shot_max,
        // The decisions must agree, so the measurements must: compare their contents
        // (paths may differ between hosts).
        c.tuning
            .as_ref()
            .map_or("none".to_owned(), |f| format!("{:016x}", f.fingerprint())),
        u8::from(c.check),
        c.ib.qps_per_connection
    )
}

/// Fails, naming the setting and both ranks, when some rank's shared settings differ from
/// rank 0's (they would otherwise surface later as hangs or protocol errors).
pub(super) fn check_same_config(rank: u32, infos: &[RankInfo]) -> Result<()> {
    let reference = &infos[0].shared_config;
    for (r, info) in infos.iter().enumerate().skip(1) {
        if &info.shared_config != reference {
            let diff: Vec<String> = reference
                .split(' ')
                .zip(info.shared_config.split(' '))
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("rank 0 has {a}, rank {r} has {b}"))
                .collect();
            return Err(Error::Config {
                knob: "OXCCL_*",
                detail: format!(
                    "rank {rank} found that the ranks' settings differ: {}; set the same values \
                     on every rank",
                    diff.join("; ")
                ),
            });
        }
    }
    Ok(())
}
