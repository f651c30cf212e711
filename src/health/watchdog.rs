//! The watchdog thread: one control connection to every other rank, heartbeats, queries,
//! goodbyes, and the death notices that end every survivor's wait.
//!
//! # Frames (little endian)
//! ```text
//! kind u32 | len u32 | payload (len bytes, at most MAX_PAYLOAD)
//! HEARTBEAT  entered u64 | finished u64 | kind u32   (collectives entered, finished; last op)
//! QUERY      -                                       (answer with a HEARTBEAT now)
//! BYE        -            (the sender's communicator is going; its closing is no failure)
//! DEAD       rank u32     (a rank the sender found dead)
//! SHRINK     generation u64 | unique id [128]  (the new communicator of a shrink)
//! ```
//! The connections are authenticated at creation like the data connections (the job's
//! secret), so a stranger cannot speak this protocol. A peer that sends a frame of an
//! unknown kind or length is logged and ignored from then on.

use super::{Health, Leave};
use crate::error::{Error, Result};
use oxccl_transports::wait::{wait_any, WaitSource};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Interval between heartbeats.
pub(crate) const BEAT: Duration = Duration::from_millis(500);
/// Longest sleep of the thread, so queries and a stop are handled promptly.
const TICK: Duration = Duration::from_millis(20);
/// Bytes of a frame header.
const HEADER: usize = 8;
/// Largest payload a peer may send.
const MAX_PAYLOAD: usize = 256;
/// Unsent bytes per connection beyond which heartbeats to it are dropped (a stopped peer
/// reads nothing; its backlog must not grow without bound).
const MAX_BACKLOG: usize = 4096;

const HEARTBEAT: u32 = 1;
const QUERY: u32 = 2;
const BYE: u32 = 3;
const DEAD: u32 = 4;
pub(crate) const SHRINK: u32 = 5;

/// A frame of `kind` carrying `payload`.
pub(crate) fn frame(kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER + payload.len());
    f.extend_from_slice(&kind.to_le_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

fn heartbeat((entered, finished, kind): (u64, u64, u32)) -> Vec<u8> {
    let mut p = [0u8; 20];
    p[0..8].copy_from_slice(&entered.to_le_bytes());
    p[8..16].copy_from_slice(&finished.to_le_bytes());
    p[16..20].copy_from_slice(&kind.to_le_bytes());
    frame(HEARTBEAT, &p)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// One control connection.
struct Conn {
    peer: u32,
    stream: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Still readable (no end of stream or error yet).
    open: bool,
    /// It sent a frame we do not understand: ignored from then on.
    garbled: bool,
}

/// Where the watchdog writes this rank's status line, if anywhere.
#[derive(Debug, Clone)]
pub(crate) struct StatusFile {
    /// `OXCCL_STATUS_DIR/rank<N>`.
    pub path: std::path::PathBuf,
    pub nranks: u32,
    pub host: String,
}

impl StatusFile {
    /// Rewrites the file (through a temporary name, so a reader never sees half a line).
    fn write(&self, h: &Health) {
        let tmp = self.path.with_extension("tmp");
        let line = h.status_line(self.nranks, &self.host) + "\n";
        if std::fs::write(&tmp, line)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .is_err()
        {
            // Status is a convenience: a full or missing directory must not disturb the job.
            tracing::debug!(target: "oxccl::init", "cannot write {}", self.path.display());
        }
    }
}

/// Runs the watchdog of one rank; stopping it (drop) says goodbye to every peer.
pub(crate) struct Watchdog {
    health: Arc<Health>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread over the control connections `conns` (one per other rank).
    pub fn start(
        health: Arc<Health>,
        conns: Vec<(u32, TcpStream)>,
        status: Option<StatusFile>,
    ) -> Result<Self> {
        let mut list = Vec::with_capacity(conns.len());
        for (peer, stream) in conns {
            stream
                .set_nonblocking(true)
                .map_err(|e| Error::Internal(format!("control connection to rank {peer}: {e}")))?;
            list.push(Conn {
                peer,
                stream,
                inbuf: Vec::new(),
                out: Vec::new(),
                open: true,
                garbled: false,
            });
        }
        health.watched.store(true, Ordering::Release);
        let h = health.clone();
        let thread = std::thread::Builder::new()
            .name(format!("oxccl-watch-{}", health.rank))
            .spawn(move || run(&h, list, status))
            .map_err(|e| Error::Internal(format!("cannot start the watchdog thread: {e}")))?;
        Ok(Watchdog {
            health,
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.health.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(h: &Health, mut conns: Vec<Conn>, status: Option<StatusFile>) {
    let mut next_beat = Instant::now();
    loop {
        if h.stop.load(Ordering::Acquire) {
            goodbye(&mut conns);
            if let Some(f) = &status {
                let _ = std::fs::remove_file(&f.path);
            }
            return;
        }
        let now = Instant::now();
        let query = h.query.swap(false, Ordering::AcqRel);
        if now >= next_beat || query {
            let beat = heartbeat(h.counters());
            for c in conns
                .iter_mut()
                .filter(|c| c.open && c.out.len() < MAX_BACKLOG)
            {
                c.out.extend_from_slice(&beat);
                if query {
                    c.out.extend_from_slice(&frame(QUERY, &[]));
                }
            }
            next_beat = now + BEAT;
            if let Some(f) = &status {
                f.write(h);
            }
        }
        for (peer, f) in h.take_outbox() {
            if let Some(c) = conns.iter_mut().find(|c| c.peer == peer && c.open) {
                c.out.extend_from_slice(&f);
            }
        }
        flush(&mut conns);
        let sources: Vec<WaitSource> = conns
            .iter()
            .filter(|c| c.open)
            .map(|c| WaitSource::Readable(c.stream.as_raw_fd()))
            .collect();
        if sources.is_empty() {
            std::thread::sleep(TICK);
        } else if let Err(e) = wait_any(None, 0, &sources, TICK) {
            tracing::warn!(target: "oxccl::init", "rank {}: watchdog wait failed: {e}", h.rank);
            std::thread::sleep(TICK);
        }
        for i in 0..conns.len() {
            if conns[i].open {
                read(h, &mut conns, i);
            }
        }
    }
}

/// Reads what `conns[i]` has and acts on each complete frame.
fn read(h: &Health, conns: &mut [Conn], i: usize) {
    let mut buf = [0u8; 4096];
    let closed = loop {
        match (&conns[i].stream).read(&mut buf) {
            Ok(0) => break Some("its connection closed".to_owned()),
            Ok(n) => conns[i].inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    let peer = conns[i].peer;
    loop {
        let c = &mut conns[i];
        if c.garbled {
            break;
        }
        let (kind, p) = match next_frame(&mut c.inbuf) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(why) => {
                tracing::warn!(target: "oxccl::init",
                    "rank {}: rank {peer} sent {why}; ignoring it from now on", h.rank);
                c.garbled = true;
                c.inbuf.clear();
                break;
            }
        };
        match kind {
            HEARTBEAT => h.update(peer, |v| {
                v.entered = u64_at(&p, 0);
                v.finished = u64_at(&p, 8);
                v.kind = u32_at(&p, 16);
                v.heard = Some(Instant::now());
            }),
            QUERY => c.out.extend_from_slice(&heartbeat(h.counters())),
            BYE => h.update(peer, |v| v.leave = Leave::Bye),
            DEAD => {
                let dead = u32_at(&p, 0);
                if h.mark_dead(dead) {
                    tracing::error!(target: "oxccl::init",
                        "rank {}: rank {peer} reports that rank {dead} died", h.rank);
                }
            }
            _ => h.deliver_shrink(peer, u64_at(&p, 0), &p[8..]),
        }
    }
    if let Some(why) = closed {
        conns[i].open = false;
        let said_bye = h.peers().get(peer as usize).map(|v| v.leave) == Some(Leave::Bye);
        if said_bye {
            return;
        }
        h.update(peer, |v| v.leave = Leave::Gone);
        if h.mark_dead(peer) {
            tracing::error!(target: "oxccl::init",
                "rank {}: rank {peer} died ({why}, without a goodbye)", h.rank);
            // Peers whose own connection to it is slower to notice learn it from us.
            let notice = frame(DEAD, &peer.to_le_bytes());
            for c in conns.iter_mut().filter(|c| c.open) {
                c.out.extend_from_slice(&notice);
            }
        }
    }
}

/// Takes the next complete frame off `inbuf`: `Ok(None)` until one is whole, an error for a
/// frame of an unknown kind or of the wrong length for its kind (the payload length of each
/// kind is fixed, so a garbled stream is caught at its first header).
pub(crate) fn next_frame(
    inbuf: &mut Vec<u8>,
) -> std::result::Result<Option<(u32, Vec<u8>)>, String> {
    if inbuf.len() < HEADER {
        return Ok(None);
    }
    let (kind, len) = (u32_at(inbuf, 0), u32_at(inbuf, 4) as usize);
    let expected = match kind {
        HEARTBEAT => Some(20),
        QUERY | BYE => Some(0),
        DEAD => Some(4),
        SHRINK => Some(8 + crate::bootstrap::UniqueId::BYTES),
        _ => None,
    };
    if expected != Some(len) || len > MAX_PAYLOAD {
        return Err(format!(
            "a malformed control frame (kind {kind}, {len} bytes)"
        ));
    }
    if inbuf.len() < HEADER + len {
        return Ok(None);
    }
    let payload = inbuf.drain(..HEADER + len).skip(HEADER).collect();
    Ok(Some((kind, payload)))
}

/// Writes what each connection has queued, as far as its socket takes it.
fn flush(conns: &mut [Conn]) {
    for c in conns.iter_mut().filter(|c| !c.out.is_empty()) {
        match (&c.stream).write(&c.out) {
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            // The read side reports the peer's end.
            Err(_) => c.out.clear(),
        }
    }
}

/// Queues a goodbye on every connection, pushes it out (briefly) and closes.
fn goodbye(conns: &mut [Conn]) {
    let bye = frame(BYE, &[]);
    for c in conns.iter_mut() {
        c.out.extend_from_slice(&bye);
    }
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until && conns.iter().any(|c| !c.out.is_empty()) {
        flush(conns);
        if conns.iter().any(|c| !c.out.is_empty()) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for c in conns.iter() {
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
    }
}
