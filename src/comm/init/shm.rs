//! Shared memory at creation: each rank creates its inbox, maps its local peers' inboxes,
//! and unlinks its own name once every peer has mapped it, so nothing is left in /dev/shm
//! even if a process crashes later.

use super::transport_error;
use crate::bootstrap::{BootstrapClient, Secret};
use crate::error::Result;
use oxccl_transports::shm::ShmContext;
use oxccl_transports::FifoConfig;

const SHM_TAG: &str = "oxccl shm segment tag";

/// Who this rank shares memory with.
pub(super) struct ShmPlan<'a> {
    /// This rank.
    pub rank: u32,
    /// Ranks on this host, in rank order (this rank included).
    pub local: &'a [u32],
    /// Peers reached through shared memory.
    pub peers: &'a [u32],
    /// Process ids of every rank.
    pub pids: &'a [u32],
    /// This host's identity.
    pub host: &'a str,
}

impl ShmPlan<'_> {
    /// Index of `r` among this host's ranks.
    pub fn local_index(&self, r: u32) -> u32 {
        self.local.iter().position(|&l| l == r).unwrap_or(0) as u32
    }
}

/// Runs the two bootstrap rounds of the shared-memory setup (every rank takes part, with or
/// without local peers) and returns this rank's context if it has shm peers.
pub(super) fn setup(
    plan: &ShmPlan<'_>,
    secret: &Secret,
    boot: &mut BootstrapClient,
    nchannels: u32,
    fifo: FifoConfig,
    window_len: usize,
) -> Result<Option<ShmContext>> {
    let rank = plan.rank;
    let mut ctx = None;
    if !plan.peers.is_empty() {
        // The host identity is part of the tag: emulated hosts (network namespaces) share
        // one /dev/shm, and each has its own local rank 0.
        let tag: String = secret.subkey(&format!("{SHM_TAG} {}", plan.host))[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let c = ShmContext::create(
            &tag,
            plan.local_index(rank),
            plan.local.len() as u32,
            nchannels,
            fifo,
            window_len,
        )
        .map_err(transport_error(rank, rank, "create shared memory"))?;
        ctx = Some(c);
    }
    let name = ctx.as_ref().map_or(String::new(), |c| c.name().to_owned());
    let names = boot.allgather(name.as_bytes())?;
    if let Some(c) = ctx.as_mut() {
        for &p in plan.peers {
            let peer_name = String::from_utf8_lossy(&names[p as usize]).into_owned();
            c.map_peer(plan.local_index(p), &peer_name, plan.pids[p as usize])
                .map_err(transport_error(rank, p, "map shared memory"))?;
        }
    }
    // Everyone has mapped everyone: the names can go.
    boot.allgather(&[])?;
    if let Some(c) = ctx.as_mut() {
        c.unlink()
            .map_err(transport_error(rank, rank, "unlink shared memory"))?;
    }
    Ok(ctx)
}
