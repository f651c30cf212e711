//! Setting up TCP connections: listen, connect with retries, authenticate both ends.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use socket2::{Domain, Protocol, Socket, Type};

use super::fifo::{TcpReceiver, TcpSender};
use super::layout::{
    acceptor_mac, connector_mac, nonce, ANSWER_LEN, HANDSHAKE_MAGIC, HANDSHAKE_VERSION, HELLO_LEN,
    MAC_LEN, MAX_PAYLOAD, NONCE_LEN, STATUS_OK, STATUS_REJECT, VERDICT_LEN,
};
use crate::{Error, FifoConfig, Result};

/// First pause between connection attempts; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest an acceptor spends on one connector's handshake, so a stalled connector cannot
/// hold up the others until the deadline.
const ACCEPT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Listen backlog: every rank of a large job may connect at once.
const BACKLOG: i32 = 1024;

/// Connects to `addr` and proves knowledge of `key`, sending `payload` (at most
/// [`MAX_PAYLOAD`](super::MAX_PAYLOAD) bytes, e.g. the caller's rank and channel).
///
/// Refused, reset or unreachable attempts are retried with exponential backoff (10 ms up to
/// 1 s) until `deadline`, then fail with [`Error::Timeout`] naming `addr` and the last error.
/// A rejected key gives [`Error::Auth`]; an acceptor that cannot prove it knows the key
/// gives [`Error::Auth`] too. The returned stream is blocking, with `TCP_NODELAY` set.
pub fn connect(
    addr: SocketAddr,
    key: &[u8; 32],
    payload: &[u8],
    deadline: Instant,
) -> Result<TcpStream> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::Config(format!(
            "handshake payload of {} bytes exceeds {MAX_PAYLOAD}",
            payload.len()
        )));
    }
    let start = Instant::now();
    let mut backoff = MIN_BACKOFF;
    loop {
        let why = match connect_once(addr, key, payload, deadline) {
            Ok(stream) => return Ok(stream),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(why)) => why,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: format!("connecting to {addr} (last error: {why})"),
                waited_ms: start.elapsed().as_millis(),
            });
        }
        tracing::trace!(%addr, error = %why, "connect attempt failed, retrying");
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Outcome of a failed connection attempt.
pub(crate) enum Attempt {
    /// Worth another try (refused, reset, unreachable, timed out).
    Retry(io::Error),
    /// Final.
    Fatal(Error),
}

pub(crate) fn connect_once(
    addr: SocketAddr,
    key: &[u8; 32],
    payload: &[u8],
    deadline: Instant,
) -> std::result::Result<TcpStream, Attempt> {
    let io_err = |e: io::Error| {
        if retryable(&e) {
            Attempt::Retry(e)
        } else {
            Attempt::Fatal(Error::io(format!("connecting to {addr}"), e))
        }
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(&addr, left).map_err(io_err)?;
    stream.set_nodelay(true).map_err(io_err)?;
    set_timeouts(&stream, deadline).map_err(io_err)?;

    let mut hello = [0u8; HELLO_LEN];
    read_full(&stream, &mut hello).map_err(io_err)?;
    let protocol = |detail: String| {
        Attempt::Fatal(Error::Protocol {
            peer: addr.to_string(),
            detail,
        })
    };
    if hello[..8] != HANDSHAKE_MAGIC {
        return Err(protocol(
            "not an oxccl listener (bad handshake magic)".into(),
        ));
    }
    let version = u32::from_le_bytes([hello[8], hello[9], hello[10], hello[11]]);
    if version != HANDSHAKE_VERSION {
        return Err(protocol(format!(
            "handshake version {version}, expected {HANDSHAKE_VERSION}"
        )));
    }
    let mut nonce_a = [0u8; NONCE_LEN];
    nonce_a.copy_from_slice(&hello[12..]);
    let nonce_c = nonce().map_err(|e| Attempt::Fatal(Error::io("generating a nonce", e)))?;
    let mac_c = connector_mac(key, &nonce_a, &nonce_c, payload);

    let mut answer = Vec::with_capacity(ANSWER_LEN + payload.len());
    answer.extend_from_slice(&nonce_c);
    answer.extend_from_slice(mac_c.as_bytes());
    answer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    answer.extend_from_slice(payload);
    write_full(&stream, &answer).map_err(io_err)?;

    let mut verdict = [0u8; VERDICT_LEN];
    read_full(&stream, &mut verdict).map_err(io_err)?;
    let auth = |detail: &str| {
        Attempt::Fatal(Error::Auth {
            peer: addr.to_string(),
            detail: detail.into(),
        })
    };
    if verdict[0] != STATUS_OK {
        return Err(auth("the acceptor rejected our proof of the job secret"));
    }
    let mut mac_a = [0u8; MAC_LEN];
    mac_a.copy_from_slice(&verdict[1..]);
    if acceptor_mac(key, &nonce_a, &nonce_c, mac_c.as_bytes()) != mac_a {
        return Err(auth("the acceptor could not prove it knows the job secret"));
    }
    clear_timeouts(&stream).map_err(io_err)?;
    Ok(stream)
}

/// Errors after which another connection attempt may succeed.
fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
            | ErrorKind::TimedOut
            | ErrorKind::WouldBlock
            | ErrorKind::Interrupted
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
            | ErrorKind::AddrInUse
            | ErrorKind::AddrNotAvailable
    )
}

/// A listening socket that accepts only connectors proving knowledge of the job secret.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds and listens on `addr` (port 0 picks a free port; see [`Listener::local_addr`]).
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let what = || format!("listening on {addr}");
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| Error::io(what(), e))?;
        socket
            .set_reuse_address(true)
            .and_then(|()| socket.bind(&addr.into()))
            .and_then(|()| socket.listen(BACKLOG))
            .and_then(|()| socket.set_nonblocking(true))
            .map_err(|e| Error::io(what(), e))?;
        let inner: TcpListener = socket.into();
        let addr = inner.local_addr().map_err(|e| Error::io(what(), e))?;
        Ok(Self { inner, addr })
    }

    /// The bound address, with the port the OS picked.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until `deadline` for a connector that proves knowledge of `key`; returns its
    /// stream (blocking, `TCP_NODELAY`), its handshake payload and its address.
    ///
    /// Connectors that fail the handshake are logged at `warn` and dropped; waiting goes on.
    /// [`Error::Timeout`] when the deadline passes first.
    pub fn accept(
        &self,
        key: &[u8; 32],
        deadline: Instant,
    ) -> Result<(TcpStream, Vec<u8>, SocketAddr)> {
        let start = Instant::now();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.inner.accept() {
                Ok((stream, peer)) => {
                    let hs_deadline = deadline.min(Instant::now() + ACCEPT_HANDSHAKE_TIMEOUT);
                    match accept_handshake(&stream, peer, key, hs_deadline) {
                        Ok(payload) => return Ok((stream, payload, peer)),
                        Err(e) => {
                            tracing::warn!(listener = %self.addr, %peer, error = %e,
                                "dropped a connection that failed the handshake");
                            if Instant::now() >= deadline {
                                return Err(self.timeout(start));
                            }
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if left.is_zero() {
                        return Err(self.timeout(start));
                    }
                    let ts = crate::wait::timespec(left);
                    let mut fds = [PollFd::new(&self.inner, PollFlags::IN)];
                    match rustix::event::poll(&mut fds, Some(&ts)) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => {
                            return Err(Error::io(format!("polling {}", self.addr), e.into()))
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => return Err(Error::io(format!("accepting on {}", self.addr), e)),
            }
        }
    }

    fn timeout(&self, start: Instant) -> Error {
        Error::Timeout {
            what: format!("accepting an authenticated connection on {}", self.addr),
            waited_ms: start.elapsed().as_millis(),
        }
    }
}

/// The acceptor's side of the handshake; returns the connector's payload.
pub(crate) fn accept_handshake(
    stream: &TcpStream,
    peer: SocketAddr,
    key: &[u8; 32],
    deadline: Instant,
) -> Result<Vec<u8>> {
    let io_err = |e: io::Error| Error::io(format!("handshake with {peer}"), e);
    stream.set_nonblocking(false).map_err(io_err)?;
    stream.set_nodelay(true).map_err(io_err)?;
    set_timeouts(stream, deadline).map_err(io_err)?;

    let nonce_a = nonce().map_err(|e| Error::io("generating a nonce", e))?;
    let mut hello = [0u8; HELLO_LEN];
    hello[..8].copy_from_slice(&HANDSHAKE_MAGIC);
    hello[8..12].copy_from_slice(&HANDSHAKE_VERSION.to_le_bytes());
    hello[12..].copy_from_slice(&nonce_a);
    write_full(stream, &hello).map_err(io_err)?;

    let mut answer = [0u8; ANSWER_LEN];
    read_full(stream, &mut answer).map_err(io_err)?;
    let mut nonce_c = [0u8; NONCE_LEN];
    nonce_c.copy_from_slice(&answer[..NONCE_LEN]);
    let mut mac_c = [0u8; MAC_LEN];
    mac_c.copy_from_slice(&answer[NONCE_LEN..NONCE_LEN + MAC_LEN]);
    let len_bytes = &answer[NONCE_LEN + MAC_LEN..];
    let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(Error::Protocol {
            peer: peer.to_string(),
            detail: format!("handshake payload of {len} bytes exceeds {MAX_PAYLOAD}"),
        });
    }
    let mut payload = vec![0u8; len];
    read_full(stream, &mut payload).map_err(io_err)?;

    let mut verdict = [0u8; VERDICT_LEN];
    if connector_mac(key, &nonce_a, &nonce_c, &payload) != mac_c {
        verdict[0] = STATUS_REJECT;
        let _ = write_full(stream, &verdict);
        return Err(Error::Auth {
            peer: peer.to_string(),
            detail: "the connector could not prove it knows the job secret".into(),
        });
    }
    verdict[0] = STATUS_OK;
    verdict[1..].copy_from_slice(acceptor_mac(key, &nonce_a, &nonce_c, &mac_c).as_bytes());
    write_full(stream, &verdict).map_err(io_err)?;
    clear_timeouts(stream).map_err(io_err)?;
    Ok(payload)
}

/// Splits an authenticated stream into the two ends of a bidirectional connection to
/// `peer` (named in errors), both non-blocking, with FIFOs of `fifo`'s sizes.
///
/// Both sides of the connection must use the same `fifo`. Dropping the sender shuts the
/// write side down, so the peer's receiver sees [`Error::PeerClosed`] after the last
/// message.
pub fn channel_pair(
    stream: TcpStream,
    peer: String,
    fifo: FifoConfig,
) -> Result<(TcpSender, TcpReceiver)> {
    fifo.validate()?;
    let io_err = |e: io::Error| Error::io(format!("setting up the connection to {peer}"), e);
    stream.set_nonblocking(true).map_err(io_err)?;
    stream.set_nodelay(true).map_err(io_err)?;
    clear_timeouts(&stream).map_err(io_err)?;
    let rx_stream = stream.try_clone().map_err(io_err)?;
    Ok((
        TcpSender::new(stream, peer.clone(), fifo),
        TcpReceiver::new(rx_stream, peer, fifo),
    ))
}

/// Read and write timeouts that end at `deadline` (at least 1 ms).
fn set_timeouts(stream: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))
}

fn clear_timeouts(stream: &TcpStream) -> io::Result<()> {
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)
}

/// `write_all` on a shared reference.
fn write_full(mut stream: &TcpStream, buf: &[u8]) -> io::Result<()> {
    stream.write_all(buf)
}

/// `read_exact` on a shared reference.
fn read_full(mut stream: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
    stream.read_exact(buf)
}
