//! Registered buffers: memory from `Communicator::alloc_shared` that every rank of the host
//! has mapped, so load/store plans read a peer's input where it lies instead of a staged
//! copy (see `oxccl_algorithms::load_store`, "Registered inputs").

use oxccl_transports::shm::{PeerRegion, RegionAnchor};

/// One allocation: this rank's part (kept mapped while the communicator lives, so its
/// addresses are never reused for other memory) and every peer's part.
pub(crate) struct Registered {
    /// Same on every rank: allocations are collective and numbered in order.
    pub id: u64,
    /// This rank's region.
    pub anchor: RegionAnchor,
    /// Per rank, its region (`None` for this rank).
    pub peers: Vec<Option<PeerRegion>>,
}

/// The communicator's registered buffers.
#[derive(Default)]
pub(crate) struct Registry {
    /// The id the next allocation gets.
    pub next_id: u64,
    /// Every allocation so far.
    pub regions: Vec<Registered>,
}

impl Registry {
    /// If `bytes` lies inside one of this rank's regions: the region's id and the offset.
    pub fn find_own(&self, bytes: &[u8]) -> Option<(u64, usize)> {
        if bytes.is_empty() {
            return None;
        }
        self.regions
            .iter()
            .find_map(|r| r.anchor.offset_of(bytes).map(|off| (r.id, off)))
    }

    /// Rank `peer`'s part of allocation `id`.
    pub fn peer(&self, peer: u32, id: u64) -> Option<&[u8]> {
        let region = self.regions.iter().find(|r| r.id == id)?;
        region.peers.get(peer as usize)?.as_ref().map(|p| p.data())
    }
}
