//! Registered buffers: [`Communicator::alloc_shared`] (NCCL's `ncclMemAlloc` plus
//! registration) and [`SharedBuffer`].

use super::Communicator;
use crate::engine::Registered;
use crate::error::{Error, Result};
use crate::types::Element;
use oxccl_transports::shm::{PeerRegion, ShmRegion};
use std::marker::PhantomData;

/// Memory from [`Communicator::alloc_shared`]: `len` elements of `T`, zero-initialised,
/// used like a `Vec<T>` (it dereferences to `[T]`).
///
/// When every rank of the communicator is on one host with shared memory, the other ranks
/// have mapped this memory: a collective whose **send buffer** lies in it (out of place)
/// lets them read the data where it is, skipping the copy into the staging window. On other
/// communicators it is ordinary memory and collectives on it behave as on any slice.
///
/// Dropping it frees it for this process; the communicator keeps the mapping (and the
/// peers theirs) until it is dropped, so its addresses are never reused meanwhile.
pub struct SharedBuffer<T: Element> {
    memory: Memory<T>,
    len: usize,
    _t: PhantomData<T>,
}

enum Memory<T> {
    Shared(ShmRegion),
    Heap(Vec<T>),
}

impl<T: Element> SharedBuffer<T> {
    /// Whether the other ranks have mapped this memory (so collectives can read it in place).
    pub fn is_registered(&self) -> bool {
        matches!(self.memory, Memory::Shared(_))
    }
}

impl<T: Element> std::ops::Deref for SharedBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.memory {
            Memory::Shared(r) => {
                bytemuck::cast_slice(&r.data()[..self.len * std::mem::size_of::<T>()])
            }
            Memory::Heap(v) => v,
        }
    }
}

impl<T: Element> std::ops::DerefMut for SharedBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let bytes = self.len * std::mem::size_of::<T>();
        match &mut self.memory {
            Memory::Shared(r) => bytemuck::cast_slice_mut(&mut r.data_mut()[..bytes]),
            Memory::Heap(v) => v,
        }
    }
}

impl<T: Element> std::fmt::Debug for SharedBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("type", &T::DATA_TYPE)
            .field("len", &self.len)
            .field("registered", &self.is_registered())
            .finish()
    }
}

impl Communicator {
    /// Allocates `len` zeroed elements that the other ranks of this host map, so that
    /// collectives sending from it skip a copy (see [`SharedBuffer`]). **Collective**: every
    /// rank calls it, in the same order relative to its other collectives, with the same
    /// `len`; a rank asking for a different length gets [`Error::InvalidArgument`] naming
    /// it, on every rank.
    ///
    /// On a communicator whose ranks are not all on this host with shared memory (or with
    /// `OXCCL_SHM_WINDOW=0`), this returns ordinary memory and needs no other rank.
    pub fn alloc_shared<T: Element>(&mut self, len: usize) -> Result<SharedBuffer<T>> {
        self.check_usable()?;
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            Error::invalid(
                "alloc_shared",
                format!("{len} elements overflow usize bytes"),
            )
        })?;
        let links = &self.engine.links;
        let (Some(window), Some(shm)) = (links.window.as_ref(), links.shm.as_ref()) else {
            return Ok(SharedBuffer {
                memory: Memory::Heap(vec![T::zeroed(); len]),
                len,
                _t: PhantomData,
            });
        };
        let pids = window.pids.clone();
        let id = links.registry.next_id;
        // "oxccl-<tag>-<local>": every rank's inbox shares the prefix; local index = rank.
        let prefix = shm
            .name()
            .rsplit_once('-')
            .map_or(shm.name(), |(p, _)| p)
            .to_owned();
        let name = |r: u32| format!("{prefix}-{r}-m{id}");
        self.engine.links.registry.next_id += 1;

        let (rank, n) = (self.rank, self.nranks as usize);
        let created = ShmRegion::create(&name(rank), bytes);
        // Everyone reports its length and whether it could create its part before anyone
        // maps: a failure or a different length fails every rank, none waits forever.
        let report = [bytes as u64, u64::from(created.is_ok())];
        let mut all = vec![0u64; 2 * n];
        self.all_gather(&report, &mut all)?;
        let mut region = created.map_err(|e| transport(rank, "create a shared buffer", e))?;
        if let Some(r) = (0..n).find(|&r| all[2 * r + 1] == 0) {
            return Err(Error::invalid(
                "alloc_shared",
                format!("rank {r} could not create its part of the shared buffer"),
            ));
        }
        // Named the same way on every rank: the first rank that differs from rank 0.
        if let Some(r) = (0..n).find(|&r| all[2 * r] != all[0]) {
            return Err(Error::invalid(
                "alloc_shared",
                format!(
                    "rank {r} asked for {} bytes, rank 0 for {}: every rank must allocate \
                     the same length",
                    all[2 * r],
                    all[0]
                ),
            ));
        }
        let mut peers: Vec<Option<PeerRegion>> = Vec::with_capacity(n);
        let mut mapped = Ok(());
        for r in 0..self.nranks {
            if r == rank || mapped.is_err() {
                peers.push(None);
                continue;
            }
            match PeerRegion::open(&name(r), bytes, pids[r as usize]) {
                Ok(p) => peers.push(Some(p)),
                Err(e) => {
                    mapped = Err(transport(r, "map a peer's shared buffer", e));
                    peers.push(None);
                }
            }
        }
        // Everyone has mapped everyone (or failed): the names can go.
        let ok = [u8::from(mapped.is_ok())];
        let mut oks = vec![0u8; n];
        self.all_gather(&ok, &mut oks)?;
        region
            .unlink()
            .map_err(|e| transport(rank, "unlink a shared buffer", e))?;
        mapped?;
        if let Some(r) = oks.iter().position(|&o| o == 0) {
            return Err(Error::invalid(
                "alloc_shared",
                format!("rank {r} could not map the other ranks' shared buffers"),
            ));
        }
        self.engine.links.registry.regions.push(Registered {
            id,
            anchor: region.anchor(),
            peers,
        });
        tracing::debug!(target: "oxccl::shm", "rank {rank}: shared buffer {id} of {bytes} bytes");
        Ok(SharedBuffer {
            memory: Memory::Shared(region),
            len,
            _t: PhantomData,
        })
    }
}

fn transport(peer: u32, what: &str, e: oxccl_transports::Error) -> Error {
    Error::Transport {
        rank: peer,
        peer,
        op: what.into(),
        source: e,
    }
}
