//! InfiniBand / RoCE transport over libibverbs (reliable connected queue pairs, RDMA writes).
//!
//! libibverbs is opened at run time (`verbs.rs`), so oxccl builds and runs where rdma-core
//! is absent; asking for verbs there gives "no IB device" and why.
//!
//! - `device.rs`: which ports to use ([`usable_ports`]): `OXCCL_IB_HCA` filter, active
//!   ports only, GID choice on RoCE (`OXCCL_IB_GID_INDEX` overrides), active MTU.
//! - `connect.rs`: [`channel_pair`] turns an authenticated TCP stream into a verbs
//!   connection (queue pair numbers, GIDs/LIDs, PSNs, ring addresses and keys exchanged
//!   over it), keeping the stream to notice a peer that is gone.
//! - `fifo.rs`: [`IbSender`] and [`IbReceiver`], the FIFO-of-slots ends: RDMA write into
//!   the peer's slot, then a write with immediate of the slot header; credits flow back as
//!   immediates, so both ends sleep on a completion channel.
//! - `resources.rs`: owned device, memory region, completion queue and queue pair.
//!
//! All memory the NIC touches is the transport's own, registered once per connection
//! (`nslots × slot_size` each way): the engine copies into and out of slots as it does for
//! shared memory. User buffers are not registered: a cache of their registrations would
//! silently send stale pages after the program frees and reallocates them.

mod connect;
mod device;
mod fifo;
mod resources;
pub(crate) mod verbs;

#[cfg(test)]
mod tests;

pub use connect::{channel_pair, Setup};
pub use device::{format_gid, mtu_bytes, usable_ports, HcaSpec, Port};
pub use fifo::{IbReceiver, IbSender};

/// How verbs connections are made (`OXCCL_IB_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IbSettings {
    /// `OXCCL_IB_HCA`: devices and ports to use (`None`: every active one).
    pub hca: Option<HcaSpec>,
    /// `OXCCL_IB_GID_INDEX`: the RoCE GID index (`None`: chosen per port, RoCE v2 with an
    /// IPv4-mapped address first).
    pub gid_index: Option<u8>,
    /// `OXCCL_IB_TIMEOUT`: ACK timeout exponent, 4.096 µs × 2^value per try (1..=31).
    pub timeout: u8,
    /// `OXCCL_IB_RETRY_CNT`: retransmissions before a write fails (0..=7).
    pub retry_cnt: u8,
    /// `OXCCL_IB_QPS_PER_CONNECTION`: queue pairs each connection spreads its messages over.
    pub qps_per_connection: u32,
    /// `OXCCL_IB_SL`: service level.
    pub service_level: u8,
    /// `OXCCL_IB_TC`: traffic class (RoCE).
    pub traffic_class: u8,
}

impl Default for IbSettings {
    fn default() -> Self {
        Self {
            hca: None,
            gid_index: None,
            // 4.096 µs × 2^20 ≈ 4.3 s per try, as NCCL: long enough for congested fabrics.
            timeout: 20,
            retry_cnt: 7,
            qps_per_connection: 1,
            service_level: 0,
            traffic_class: 0,
        }
    }
}

impl IbSettings {
    /// Checks the ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: String| Err(crate::Error::Config(what));
        if !(1..=31).contains(&self.timeout) {
            return bad(format!(
                "OXCCL_IB_TIMEOUT {} must be in 1..=31",
                self.timeout
            ));
        }
        if self.retry_cnt > 7 {
            return bad(format!(
                "OXCCL_IB_RETRY_CNT {} must be in 0..=7",
                self.retry_cnt
            ));
        }
        if !(1..=connect::MAX_QPS).contains(&self.qps_per_connection) {
            return bad(format!(
                "OXCCL_IB_QPS_PER_CONNECTION {} must be in 1..={}",
                self.qps_per_connection,
                connect::MAX_QPS
            ));
        }
        if self.service_level > 15 {
            return bad(format!(
                "OXCCL_IB_SL {} must be in 0..=15",
                self.service_level
            ));
        }
        Ok(())
    }
}
