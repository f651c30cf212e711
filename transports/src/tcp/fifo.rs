//! The two ends of a TCP connection, each with a local ring of slots.
//!
//! The sender's slots hold committed messages until `progress` has written them to the
//! socket (one `sendmsg` gathers several headers and payloads). The receiver's `progress`
//! reads headers and payloads straight into its free slots, as many as are available.

use std::io::{self, ErrorKind, IoSlice, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};

use super::layout::{decode_header, encode_header, Header, HEADER_LEN};
use crate::wait::WaitSource;
use crate::{Direct, Error, FifoConfig, Message, RecvChannel, Result, SendChannel};

mod direct;
use direct::DirectSend;

/// Most messages gathered into one `sendmsg`.
const MAX_GATHER: usize = 32;

/// `nslots` slots of `slot_size` bytes in one 8-byte aligned allocation.
#[derive(Debug)]
struct SlotRing {
    words: Vec<u64>,
    slot_size: usize,
    nslots: usize,
}

impl SlotRing {
    fn new(fifo: FifoConfig) -> Self {
        // `validate` bounds both factors, so the product fits; slot_size % 64 == 0.
        Self {
            words: vec![0u64; fifo.nslots * fifo.slot_size / 8],
            slot_size: fifo.slot_size,
            nslots: fifo.nslots,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the `u64` buffer is `8 * len` initialised bytes; `u8` has alignment 1
        // and no invalid values; the borrow of `self` keeps the buffer alive and unaliased
        // by mutable borrows.
        unsafe {
            std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.words.len() * 8)
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, with the exclusive borrow of `self`; every byte pattern
        // written through the `u8` view is a valid `u64`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.words.as_mut_ptr().cast::<u8>(),
                self.words.len() * 8,
            )
        }
    }

    /// Slot `index % nslots`, whole.
    fn slot(&self, index: u64) -> &[u8] {
        let start = (index % self.nslots as u64) as usize * self.slot_size;
        &self.bytes()[start..start + self.slot_size]
    }

    /// Slot `index % nslots`, whole, writable.
    fn slot_mut(&mut self, index: u64) -> &mut [u8] {
        let start = (index % self.nslots as u64) as usize * self.slot_size;
        let size = self.slot_size;
        &mut self.bytes_mut()[start..start + size]
    }
}

/// Maps a socket error to a transport error naming `peer`.
fn socket_error(peer: &str, what: &str, e: io::Error) -> Error {
    match e.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::NotConnected
        | ErrorKind::UnexpectedEof => Error::PeerClosed {
            peer: peer.to_owned(),
            detail: e.to_string(),
        },
        _ => Error::io(format!("{what} {peer}"), e),
    }
}

/// The sending end of a TCP connection. Committed slots go out in [`SendChannel::progress`]
/// (and right away in `commit`, as far as the socket takes them).
#[derive(Debug)]
pub struct TcpSender {
    stream: TcpStream,
    peer: String,
    ring: SlotRing,
    /// Wire header of the message in each slot.
    headers: Vec<[u8; HEADER_LEN]>,
    /// Messages committed so far.
    committed: u64,
    /// Messages completely written to the socket.
    sent: u64,
    /// Bytes (header included) of message `sent` already written.
    partial: usize,
    /// `try_acquire` handed out slot `committed % nslots` and no commit followed yet.
    acquired: bool,
    /// The message `send_direct` is writing from its caller's memory, if any.
    direct: Option<DirectSend>,
    /// Since when `send_direct` has been waiting on a socket that takes nothing.
    stalled_since: Option<std::time::Instant>,
    /// Direct messages whose rest went into a slot because the socket stalled.
    spills: u64,
}

impl TcpSender {
    pub(crate) fn new(stream: TcpStream, peer: String, fifo: FifoConfig) -> Self {
        Self {
            stream,
            peer,
            ring: SlotRing::new(fifo),
            headers: vec![[0u8; HEADER_LEN]; fifo.nslots],
            committed: 0,
            sent: 0,
            partial: 0,
            acquired: false,
            direct: None,
            stalled_since: None,
            spills: 0,
        }
    }

    /// Length of the message in slot `index`, from its header.
    fn msg_len(&self, index: u64) -> usize {
        let slot = (index % self.ring.nslots as u64) as usize;
        decode_header(&self.headers[slot]).len as usize
    }

    /// One `sendmsg` of as many pending messages as fit; the number of bytes written, or
    /// `None` when the socket is full.
    fn send_some(&self) -> Result<Option<usize>> {
        let mut iov = [IoSlice::new(&[]); 2 * MAX_GATHER];
        let mut n = 0;
        let pending = (self.committed - self.sent).min(MAX_GATHER as u64);
        for k in 0..pending {
            let index = self.sent + k;
            let slot = (index % self.ring.nslots as u64) as usize;
            let len = self.msg_len(index);
            let mut header: &[u8] = &self.headers[slot];
            let mut payload = &self.ring.slot(index)[..len];
            if k == 0 {
                let skip_header = self.partial.min(HEADER_LEN);
                header = &header[skip_header..];
                payload = &payload[self.partial - skip_header..];
            }
            for part in [header, payload] {
                if !part.is_empty() {
                    iov[n] = IoSlice::new(part);
                    n += 1;
                }
            }
        }
        loop {
            return match rustix::net::sendmsg(
                &self.stream,
                &iov[..n],
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            ) {
                Ok(written) => Ok(Some(written)),
                Err(Errno::AGAIN) => Ok(None),
                Err(Errno::INTR) => continue,
                Err(e) => Err(socket_error(&self.peer, "sending to", e.into())),
            };
        }
    }

    /// Accounts for `written` bytes having left.
    fn advance(&mut self, mut written: usize) {
        while written > 0 && self.sent < self.committed {
            let left = HEADER_LEN + self.msg_len(self.sent) - self.partial;
            if written >= left {
                written -= left;
                self.sent += 1;
                self.partial = 0;
            } else {
                self.partial += written;
                written = 0;
            }
        }
    }
}

impl SendChannel for TcpSender {
    fn slot_size(&self) -> usize {
        self.ring.slot_size
    }

    fn nslots(&self) -> usize {
        self.ring.nslots
    }

    fn try_acquire(&mut self) -> Result<Option<&mut [u8]>> {
        if self.direct.is_some() {
            return Err(Error::Config(
                "try_acquire while a send_direct message is half written".into(),
            ));
        }
        if !self.acquired {
            if self.committed - self.sent >= self.ring.nslots as u64 {
                return Ok(None);
            }
            self.acquired = true;
        }
        let index = self.committed;
        Ok(Some(self.ring.slot_mut(index)))
    }

    fn commit(&mut self, len: usize, tag: u32) -> Result<()> {
        if !self.acquired {
            return Err(Error::Config(
                "commit without a slot from try_acquire".into(),
            ));
        }
        if len > self.ring.slot_size {
            return Err(Error::Config(format!(
                "commit of {len} bytes exceeds the slot size {}",
                self.ring.slot_size
            )));
        }
        let slot = (self.committed % self.ring.nslots as u64) as usize;
        // Sequence numbers wrap at 2^32 by design.
        self.headers[slot] = encode_header(len as u32, self.committed as u32, tag);
        self.committed += 1;
        self.acquired = false;
        // Push it out right away if the socket has room: latency matters more than one
        // system call per message.
        self.progress()?;
        Ok(())
    }

    fn progress(&mut self) -> Result<bool> {
        let mut moved = false;
        while self.sent < self.committed {
            match self.send_some()? {
                Some(written) => {
                    moved |= written > 0;
                    self.advance(written);
                }
                None => break,
            }
        }
        Ok(moved)
    }

    fn flushed(&self) -> bool {
        self.sent == self.committed && self.direct.is_none()
    }

    /// `Writable(fd)`; with nothing unsent it is ready at once, which is right: a slot is
    /// free then.
    fn wait_source(&self) -> WaitSource {
        WaitSource::Writable(self.stream.as_raw_fd())
    }

    fn zero_copy(&self) -> bool {
        true
    }

    fn send_direct(&mut self, data: &[u8], tag: u32) -> Result<Direct> {
        self.write_direct(data, tag)
    }
}

impl Drop for TcpSender {
    fn drop(&mut self) {
        // Best effort, without blocking: what the socket takes now still arrives.
        let _ = self.progress();
        if !self.flushed() {
            tracing::debug!(peer = %self.peer, unsent = self.committed - self.sent,
                "TCP sender dropped with unsent messages");
        }
        if self.spills > 0 {
            tracing::debug!(peer = %self.peer, spills = self.spills,
                "direct sends that finished through a slot (the peer did not drain the socket)");
        }
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Where the receiver is within the incoming byte stream.
#[derive(Debug, Clone, Copy)]
enum ReadState {
    /// Reading a header; this many bytes of it are in `TcpReceiver::header`.
    Header(usize),
    /// Reading a payload of `len` bytes, tagged `tag`, into the slot of message `received`;
    /// `got` are in.
    Payload { len: usize, tag: u32, got: usize },
    /// Reading a payload of `len` bytes into the memory of `recv_direct`'s caller, which
    /// starts at address `at`; `got` are in. Only `recv_direct` reads on.
    Direct { len: usize, at: usize, got: usize },
}

/// The receiving end of a TCP connection. [`RecvChannel::progress`] reads messages into
/// free slots.
#[derive(Debug)]
pub struct TcpReceiver {
    stream: TcpStream,
    peer: String,
    ring: SlotRing,
    /// Length of the message in each slot.
    lens: Vec<usize>,
    /// Tag of the message in each slot.
    tags: Vec<u32>,
    /// Messages released so far.
    released: u64,
    /// Messages completely received.
    received: u64,
    state: ReadState,
    header: [u8; HEADER_LEN],
    /// `try_peek` returned message `released` and no release followed yet.
    peeked: bool,
    /// The peer shut its side down (end of stream).
    eof: bool,
}

impl TcpReceiver {
    pub(crate) fn new(stream: TcpStream, peer: String, fifo: FifoConfig) -> Self {
        Self {
            stream,
            peer,
            ring: SlotRing::new(fifo),
            lens: vec![0; fifo.nslots],
            tags: vec![0; fifo.nslots],
            released: 0,
            received: 0,
            state: ReadState::Header(0),
            header: [0u8; HEADER_LEN],
            peeked: false,
            eof: false,
        }
    }

    fn protocol(&self, detail: String) -> Error {
        Error::Protocol {
            peer: self.peer.clone(),
            detail,
        }
    }

    fn closed(&self) -> Error {
        Error::PeerClosed {
            peer: self.peer.clone(),
            detail: "end of stream".into(),
        }
    }

    /// One `read` into `buf`; `None` when nothing is available.
    fn read_some(
        &mut self,
        into_header: bool,
        range: std::ops::Range<usize>,
    ) -> Result<Option<usize>> {
        loop {
            let index = self.received;
            let buf: &mut [u8] = if into_header {
                &mut self.header[range.clone()]
            } else {
                &mut self.ring.slot_mut(index)[range.clone()]
            };
            return match (&self.stream).read(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(socket_error(&self.peer, "receiving from", e)),
            };
        }
    }

    /// Marks the end of stream; an error if it cuts a message short.
    fn on_eof(&mut self) -> Result<()> {
        self.eof = true;
        match self.state {
            ReadState::Header(0) => Ok(()),
            ReadState::Header(got) => Err(Error::PeerClosed {
                peer: self.peer.clone(),
                detail: format!("end of stream after {got} bytes of a message header"),
            }),
            ReadState::Payload { len, got, .. } | ReadState::Direct { len, got, .. } => {
                Err(Error::PeerClosed {
                    peer: self.peer.clone(),
                    detail: format!("end of stream after {got} of {len} payload bytes"),
                })
            }
        }
    }

    /// Checks the header just read (sequence number, length) and returns its length and tag.
    fn accept_header(&self) -> Result<(usize, u32)> {
        let Header { len, seq, tag } = decode_header(&self.header);
        let expected = self.received as u32;
        if seq != expected {
            return Err(self.protocol(format!(
                "message sequence number {seq}, expected {expected}"
            )));
        }
        let len = len as usize;
        if len > self.ring.slot_size {
            return Err(self.protocol(format!(
                "message of {len} bytes exceeds the slot size {}",
                self.ring.slot_size
            )));
        }
        Ok((len, tag))
    }

    /// Continues into the slot path after a header whose message goes to a slot.
    fn continue_in_slot(&mut self, len: usize, tag: u32) {
        if len == 0 {
            self.complete(0, tag);
        } else {
            self.state = ReadState::Payload { len, tag, got: 0 };
        }
    }

    /// A complete message landed in slot `received`.
    fn complete(&mut self, len: usize, tag: u32) {
        let slot = (self.received % self.ring.nslots as u64) as usize;
        self.lens[slot] = len;
        self.tags[slot] = tag;
        self.received += 1;
        self.state = ReadState::Header(0);
    }
}

impl RecvChannel for TcpReceiver {
    fn slot_size(&self) -> usize {
        self.ring.slot_size
    }

    fn nslots(&self) -> usize {
        self.ring.nslots
    }

    fn try_peek(&mut self) -> Result<Option<Message<'_>>> {
        if self.received == self.released {
            return if self.eof {
                Err(self.closed())
            } else {
                Ok(None)
            };
        }
        self.peeked = true;
        let slot = (self.released % self.ring.nslots as u64) as usize;
        let (len, tag) = (self.lens[slot], self.tags[slot]);
        Ok(Some(Message {
            data: &self.ring.slot(self.released)[..len],
            tag,
        }))
    }

    fn release(&mut self) -> Result<()> {
        if !self.peeked {
            return Err(Error::Config(
                "release without a message from try_peek".into(),
            ));
        }
        self.peeked = false;
        self.released += 1;
        Ok(())
    }

    fn progress(&mut self) -> Result<bool> {
        let mut moved = false;
        while !self.eof && self.received - self.released < self.ring.nslots as u64 {
            match self.state {
                ReadState::Header(got) => {
                    let Some(n) = self.read_some(true, got..HEADER_LEN)? else {
                        break;
                    };
                    if n == 0 {
                        self.on_eof()?;
                        break;
                    }
                    moved = true;
                    let got = got + n;
                    if got < HEADER_LEN {
                        self.state = ReadState::Header(got);
                        continue;
                    }
                    let (len, tag) = self.accept_header()?;
                    self.continue_in_slot(len, tag);
                }
                // The caller of `recv_direct` owns this message's destination.
                ReadState::Direct { .. } => break,
                ReadState::Payload { len, tag, got } => {
                    let Some(n) = self.read_some(false, got..len)? else {
                        break;
                    };
                    if n == 0 {
                        self.on_eof()?;
                        break;
                    }
                    moved = true;
                    let got = got + n;
                    if got == len {
                        self.complete(len, tag);
                    } else {
                        self.state = ReadState::Payload { len, tag, got };
                    }
                }
            }
        }
        if self.eof && self.received == self.released {
            return Err(self.closed());
        }
        Ok(moved)
    }

    fn wait_source(&self) -> WaitSource {
        WaitSource::Readable(self.stream.as_raw_fd())
    }

    fn zero_copy(&self) -> bool {
        true
    }

    fn recv_direct(&mut self, dst: &mut [u8], tag: u32) -> Result<Direct> {
        self.read_direct(dst, tag)
    }
}
