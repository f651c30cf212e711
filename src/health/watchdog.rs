//! The watchdog thread: one control connection to every other rank, heartbeats, queries,
//! goodbyes, and the death notices that end every survivor's wait.
//!
//! # Frames (24 bytes, little endian)
//! ```text
//! kind u32 | a u64 | b u64 | c u32
//! HEARTBEAT  a = collectives entered, b = collectives finished, c = kind of the last op
//! QUERY      (answer with a HEARTBEAT now)
//! BYE        (the sender's communicator is going; its connection closing is no failure)
//! DEAD       c = a rank the sender found dead
//! ```
//! The connections are authenticated at creation like the data connections (the job's
//! secret, a separate subkey), so a stranger cannot speak this protocol. A peer that sends a
//! frame of an unknown kind is logged and ignored from then on.

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
/// Bytes per frame.
const FRAME: usize = 24;
/// Unsent bytes per connection beyond which heartbeats to it are dropped (a stopped peer
/// reads nothing; its backlog must not grow without bound).
const MAX_BACKLOG: usize = 64 * FRAME;

const HEARTBEAT: u32 = 1;
const QUERY: u32 = 2;
const BYE: u32 = 3;
const DEAD: u32 = 4;

fn frame(kind: u32, a: u64, b: u64, c: u32) -> [u8; FRAME] {
    let mut f = [0u8; FRAME];
    f[0..4].copy_from_slice(&kind.to_le_bytes());
    f[4..12].copy_from_slice(&a.to_le_bytes());
    f[12..20].copy_from_slice(&b.to_le_bytes());
    f[20..24].copy_from_slice(&c.to_le_bytes());
    f
}

fn parse(f: &[u8]) -> (u32, u64, u64, u32) {
    let u32_at = |i: usize| u32::from_le_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&f[i..i + 8]);
        u64::from_le_bytes(b)
    };
    (u32_at(0), u64_at(4), u64_at(12), u32_at(20))
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

/// Runs the watchdog of one rank; stopping it (drop) says goodbye to every peer.
pub(crate) struct Watchdog {
    health: Arc<Health>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread over the control connections `conns` (one per other rank).
    pub fn start(health: Arc<Health>, conns: Vec<(u32, TcpStream)>) -> Result<Self> {
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
            .spawn(move || run(&h, list))
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

fn run(h: &Health, mut conns: Vec<Conn>) {
    let mut next_beat = Instant::now();
    loop {
        if h.stop.load(Ordering::Acquire) {
            goodbye(&mut conns);
            return;
        }
        let now = Instant::now();
        let query = h.query.swap(false, Ordering::AcqRel);
        if now >= next_beat || query {
            let (entered, finished, kind) = h.counters();
            let beat = frame(HEARTBEAT, entered, finished, kind);
            for c in conns
                .iter_mut()
                .filter(|c| c.open && c.out.len() < MAX_BACKLOG)
            {
                c.out.extend_from_slice(&beat);
                if query {
                    c.out.extend_from_slice(&frame(QUERY, 0, 0, 0));
                }
            }
            next_beat = now + BEAT;
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
    let mut buf = [0u8; 16 * FRAME];
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
    let frames: Vec<[u8; FRAME]> = {
        let c = &mut conns[i];
        let whole = c.inbuf.len() / FRAME * FRAME;
        let v = c.inbuf[..whole]
            .chunks_exact(FRAME)
            .map(|f| {
                let mut a = [0u8; FRAME];
                a.copy_from_slice(f);
                a
            })
            .collect();
        c.inbuf.drain(..whole);
        v
    };
    for f in frames {
        if conns[i].garbled {
            break;
        }
        let (kind, a, b, c) = parse(&f);
        match kind {
            HEARTBEAT => h.update(peer, |v| {
                v.entered = a;
                v.finished = b;
                v.kind = c;
                v.heard = Some(Instant::now());
            }),
            QUERY => {
                let (entered, finished, kind) = h.counters();
                conns[i]
                    .out
                    .extend_from_slice(&frame(HEARTBEAT, entered, finished, kind));
            }
            BYE => h.update(peer, |v| v.leave = Leave::Bye),
            DEAD => {
                if h.mark_dead(c) {
                    tracing::error!(target: "oxccl::init",
                        "rank {}: rank {peer} reports that rank {c} died", h.rank);
                }
            }
            _ => {
                tracing::warn!(target: "oxccl::init",
                    "rank {}: rank {peer} sent an unknown control frame (kind {kind}); ignoring it from now on",
                    h.rank);
                conns[i].garbled = true;
            }
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
            let notice = frame(DEAD, 0, 0, peer);
            for c in conns.iter_mut().filter(|c| c.open) {
                c.out.extend_from_slice(&notice);
            }
        }
    }
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
    let bye = frame(BYE, 0, 0, 0);
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
