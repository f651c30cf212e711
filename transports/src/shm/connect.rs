//! Setting up shared-memory connections: a rank's inbox, its peers' inboxes, and the check
//! that a peer's process still lives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::io::Errno;
use rustix::process::Pid;

use super::fifo::{ShmReceiver, ShmSender};
use super::layout::{unlink_once, FifoOffsets, Layout, Mapping};
use super::window::ShmWindow;
use crate::wait::Doorbell;
use crate::{Error, FifoConfig, Result};

/// Longest accepted segment name (Linux allows 255; we keep a margin).
pub(crate) const MAX_NAME_LEN: usize = 200;
/// Every segment name starts with this.
pub(crate) const NAME_PREFIX: &str = "oxccl-";

/// One rank's shared-memory endpoint within one communicator.
///
/// # Call protocol
/// 1. [`ShmContext::create`] makes this rank's inbox, `/dev/shm/oxccl-<tag>-<local_rank>`.
/// 2. Publish [`ShmContext::name`] and this process's pid to the local peers (bootstrap).
/// 3. [`ShmContext::map_peer`] for every local peer, with the name and pid it published.
/// 4. Once every peer has mapped this inbox (a bootstrap barrier), [`ShmContext::unlink`]
///    removes the name, so nothing is left in `/dev/shm` if a process crashes later.
/// 5. [`ShmContext::sender`] / [`ShmContext::receiver`] once per (peer, channel), and
///    [`ShmContext::window`] once if the inbox has a window.
///
/// The senders, receivers and window keep the mappings alive; the context may be dropped before
/// them. Dropping the context unlinks the name if step 4 did not happen.
#[derive(Debug)]
pub struct ShmContext {
    own: Arc<Mapping>,
    layout: Layout,
    local_rank: u32,
    unlinked: bool,
    /// Indexed by local rank; this rank's own entry is its own inbox.
    peers: Vec<Option<Peer>>,
    /// Which (peer, channel) senders/receivers were handed out; each FIFO has one of each.
    senders_taken: Vec<AtomicBool>,
    receivers_taken: Vec<AtomicBool>,
    /// Whether the window was handed out (there is one per context).
    window_taken: AtomicBool,
}

#[derive(Debug)]
struct Peer {
    map: Arc<Mapping>,
    process: PeerProcess,
}

impl ShmContext {
    /// Creates this rank's inbox for a communicator with `nlocal` ranks on this node, each
    /// pair connected by `nchannels` FIFOs per direction of `fifo`'s sizes.
    ///
    /// `window_len` is the length in bytes of each of the two halves of this rank's window
    /// (see [`ShmContext::window`]), rounded up to a page; 0 for no window. At most
    /// [`MAX_WINDOW_LEN`](super::MAX_WINDOW_LEN). Every local rank must pass the same value
    /// ([`ShmContext::map_peer`] checks it).
    ///
    /// `tag` must be unique per communicator on this node (the caller mixes in randomness)
    /// and made of ASCII letters, digits, `-`, `_` and `.`. The file is created with
    /// `O_EXCL` and mode 0600, and sized sparsely: pages are allocated only when touched.
    pub fn create(
        tag: &str,
        local_rank: u32,
        nlocal: u32,
        nchannels: u32,
        fifo: FifoConfig,
        window_len: usize,
    ) -> Result<Self> {
        let layout = Layout::new(nlocal, nchannels, fifo, window_len)?;
        if local_rank >= nlocal {
            return Err(Error::Config(format!(
                "local rank {local_rank} out of range for {nlocal} local ranks"
            )));
        }
        if tag.is_empty() || !tag.bytes().all(name_byte_ok) {
            return Err(Error::Config(format!(
                "shm tag {tag:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
            )));
        }
        let name = format!("{NAME_PREFIX}{tag}-{local_rank}");
        if name.len() > MAX_NAME_LEN {
            return Err(Error::Config(format!(
                "shm segment name {name:?} is longer than {MAX_NAME_LEN} bytes"
            )));
        }
        let own = Arc::new(Mapping::create(&name, &layout)?);
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        own.header().init(&layout, local_rank, pid);
        let nfifos = nlocal as usize * nchannels as usize;
        let mut peers: Vec<Option<Peer>> = (0..nlocal).map(|_| None).collect();
        peers[local_rank as usize] = Some(Peer {
            map: own.clone(),
            process: PeerProcess::myself(local_rank),
        });
        tracing::debug!(segment = %name, bytes = layout.total_len, "created shm inbox");
        Ok(Self {
            own,
            layout,
            local_rank,
            unlinked: false,
            peers,
            senders_taken: (0..nfifos).map(|_| AtomicBool::new(false)).collect(),
            receivers_taken: (0..nfifos).map(|_| AtomicBool::new(false)).collect(),
            window_taken: AtomicBool::new(false),
        })
    }

    /// This rank's segment name, to publish to the local peers.
    pub fn name(&self) -> &str {
        self.own.name()
    }

    /// This rank's doorbell: local peers ring it when they commit a slot to this rank or
    /// release a slot this rank sent.
    pub fn doorbell(&self) -> &Doorbell {
        &self.own.header().doorbell
    }

    /// This rank's index among the local ranks.
    pub fn local_rank(&self) -> u32 {
        self.local_rank
    }

    /// Maps local peer `peer_local`'s inbox, published as `name` by process `peer_pid`.
    ///
    /// Fails with [`Error::Config`] if the segment's header or size disagree with this
    /// context (another program's file, a different layout version, or ranks that disagree
    /// on the sizes), and with [`Error::PeerClosed`] if `peer_pid` is not a live process
    /// visible from here.
    pub fn map_peer(&mut self, peer_local: u32, name: &str, peer_pid: u32) -> Result<()> {
        self.check_peer_index(peer_local)?;
        if peer_local == self.local_rank {
            if name == self.name() {
                return Ok(());
            }
            return Err(Error::Config(format!(
                "local rank {peer_local} is this rank; its segment is {}, not {name:?}",
                self.name()
            )));
        }
        if self.peers[peer_local as usize].is_some() {
            return Err(Error::Config(format!(
                "local rank {peer_local}'s shm segment is already mapped"
            )));
        }
        if !valid_name(name) {
            return Err(Error::Config(format!(
                "local rank {peer_local} published an invalid shm segment name {name:?}"
            )));
        }
        let process = PeerProcess::new(peer_local, peer_pid)?;
        let map = Mapping::open(name, &self.layout)?;
        map.header()
            .validate(name, &self.layout, peer_local, peer_pid)?;
        self.peers[peer_local as usize] = Some(Peer {
            map: Arc::new(map),
            process,
        });
        Ok(())
    }

    /// Removes this rank's segment name from `/dev/shm`; mappings stay valid. Call it once
    /// every peer mapped the segment. Idempotent; also done on drop.
    pub fn unlink(&mut self) -> Result<()> {
        unlink_once(self.own.name(), &mut self.unlinked)
    }

    /// The sending side of channel `channel` to local peer `peer_local`: the FIFO at index
    /// `my_local * nchannels + channel` in the peer's inbox. One per (peer, channel).
    pub fn sender(&self, peer_local: u32, channel: u32) -> Result<ShmSender> {
        let (peer, _) = self.take(peer_local, channel, &self.senders_taken, "sender")?;
        let index = self.local_rank as usize * self.layout.nchannels as usize + channel as usize;
        Ok(ShmSender::new(
            peer.map.clone(),
            FifoOffsets::new(&self.layout, index),
            self.layout,
            peer.process.clone(),
        ))
    }

    /// The receiving side of channel `channel` from local peer `peer_local`: the FIFO at
    /// index `peer_local * nchannels + channel` in this rank's inbox. One per (peer, channel).
    pub fn receiver(&self, peer_local: u32, channel: u32) -> Result<ShmReceiver> {
        let (peer, index) = self.take(peer_local, channel, &self.receivers_taken, "receiver")?;
        Ok(ShmReceiver::new(
            self.own.clone(),
            FifoOffsets::new(&self.layout, index),
            self.layout,
            peer.map.clone(),
            peer.process.clone(),
        ))
    }

    /// This rank's view of the node's windows: its own (to write) and every local peer's (to
    /// read). Once per context; every local peer must be mapped first.
    ///
    /// Fails with [`Error::Config`] if the context was created with `window_len == 0`, if a
    /// peer is not mapped yet, or on a second call.
    pub fn window(&self) -> Result<ShmWindow> {
        if !self.layout.has_window() {
            return Err(Error::Config(
                "this shm context has no window (created with window_len 0)".into(),
            ));
        }
        let mut maps = Vec::with_capacity(self.peers.len());
        let mut processes = Vec::with_capacity(self.peers.len());
        for (rank, peer) in self.peers.iter().enumerate() {
            let peer = peer.as_ref().ok_or_else(|| {
                Error::Config(format!(
                    "local rank {rank}'s shm segment is not mapped yet (call map_peer for \
                     every local peer before window)"
                ))
            })?;
            maps.push(peer.map.clone());
            processes.push(peer.process.clone());
        }
        if self.window_taken.swap(true, Ordering::AcqRel) {
            return Err(Error::Config("shm window was already created".into()));
        }
        Ok(ShmWindow::new(
            self.layout,
            self.local_rank,
            maps,
            processes,
        ))
    }

    /// Checks the indices, that the peer is mapped, and marks (peer, channel) taken in
    /// `taken`. Returns the peer and `peer_local * nchannels + channel`.
    fn take(
        &self,
        peer_local: u32,
        channel: u32,
        taken: &[AtomicBool],
        what: &str,
    ) -> Result<(&Peer, usize)> {
        self.check_peer_index(peer_local)?;
        if channel >= self.layout.nchannels {
            return Err(Error::Config(format!(
                "channel {channel} out of range for {} channels",
                self.layout.nchannels
            )));
        }
        let peer = self.peers[peer_local as usize].as_ref().ok_or_else(|| {
            Error::Config(format!(
                "local rank {peer_local}'s shm segment is not mapped yet (call map_peer first)"
            ))
        })?;
        let pair = peer_local as usize * self.layout.nchannels as usize + channel as usize;
        if taken[pair].swap(true, Ordering::AcqRel) {
            return Err(Error::Config(format!(
                "shm {what} for local rank {peer_local} channel {channel} was already created"
            )));
        }
        Ok((peer, pair))
    }

    fn check_peer_index(&self, peer_local: u32) -> Result<()> {
        if peer_local >= self.layout.nlocal {
            return Err(Error::Config(format!(
                "local rank {peer_local} out of range for {} local ranks",
                self.layout.nlocal
            )));
        }
        Ok(())
    }
}

impl Drop for ShmContext {
    fn drop(&mut self) {
        if let Err(e) = self.unlink() {
            tracing::warn!(error = %e, "could not remove shm segment");
        }
    }
}

fn name_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Whether `name` is acceptable as a shared-memory object name: it starts with
/// [`NAME_PREFIX`], is at most [`MAX_NAME_LEN`] bytes, and holds only ASCII letters, digits,
/// `-`, `_` and `.` (so no `/`, and never `.` or `..`).
pub(crate) fn valid_name(name: &str) -> bool {
    name.starts_with(NAME_PREFIX) && name.len() <= MAX_NAME_LEN && name.bytes().all(name_byte_ok)
}

/// A local peer's process, as seen from here.
#[derive(Debug, Clone)]
pub(crate) struct PeerProcess {
    pid: u32,
    /// `/proc/<pid>/stat` start time when first seen, to notice a reused pid.
    start_time: Option<u64>,
    /// "local rank 3 (pid 1234)", for error messages.
    pub(crate) desc: String,
}

impl PeerProcess {
    /// This process (a rank connected to itself).
    fn myself(local_rank: u32) -> Self {
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        Self {
            pid,
            start_time: proc_stat(pid).map(|s| s.1),
            desc: format!("local rank {local_rank} (pid {pid}, this process)"),
        }
    }

    /// A peer process, which must exist and be visible (same PID namespace).
    fn new(local_rank: u32, pid: u32) -> Result<Self> {
        Self::with_desc(format!("local rank {local_rank} (pid {pid})"), pid)
    }

    /// A peer process described as `desc` in errors ("local rank 3 (pid 1234)"), which must
    /// exist and be visible (same PID namespace).
    pub(crate) fn with_desc(desc: String, pid: u32) -> Result<Self> {
        let this = Self {
            pid,
            start_time: proc_stat(pid).map(|s| s.1),
            desc,
        };
        this.check().map_err(|e| match e {
            Error::PeerClosed { peer, detail } => Error::PeerClosed {
                peer,
                detail: format!("{detail} (or it runs in another PID namespace)"),
            },
            other => other,
        })?;
        Ok(this)
    }

    /// `Err(PeerClosed)` if the process is gone, a zombie, or its pid now belongs to a
    /// different process.
    pub(crate) fn check(&self) -> Result<()> {
        let dead = |detail: String| Error::PeerClosed {
            peer: self.desc.clone(),
            detail,
        };
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| dead(format!("pid {} is not a valid process id", self.pid)))?;
        match rustix::process::test_kill_process(pid) {
            Ok(()) | Err(Errno::PERM) => {}
            Err(Errno::SRCH) => return Err(dead("its process exited".into())),
            Err(e) => {
                return Err(Error::io(
                    format!("checking {} is alive", self.desc),
                    e.into(),
                ))
            }
        }
        if let Some((state, start_time)) = proc_stat(self.pid) {
            if state == b'Z' || state == b'X' {
                return Err(dead("its process exited (zombie)".into()));
            }
            if self.start_time.is_some_and(|t| t != start_time) {
                return Err(dead("its process exited (pid reused)".into()));
            }
        }
        Ok(())
    }
}

/// State letter and start time (field 22) from `/proc/<pid>/stat`, if readable.
fn proc_stat(pid: u32) -> Option<(u8, u64)> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; it ends at the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // After the state (field 3), field 22 is the 19th.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some((state, start_time))
}
