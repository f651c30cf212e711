//! Zero-copy halves of the TCP channels: a message written to the socket straight from the
//! caller's memory, and one read from the socket straight into it.
//!
//! The bytes on the wire are those of a slot message (header, then payload), so either end
//! may use its slots while the other does not. What is saved is one copy per byte on each
//! side: the sender's copy into a slot, and the receiver's copy out of one. A send that the
//! socket does not take at once is not queued anywhere: the caller keeps its memory as it is
//! and calls again when the socket is writable (the kernel's send buffer is the queue).
//!
//! A direct send must not wait on its peer for long, though: when every rank sends before
//! it receives (a ring's first step, the linear all-to-all) and the sockets hold less than
//! what each sends, all would wait forever for a peer that reads only later. Through slots
//! that cannot happen, since a step is done once its data is in a slot. So a direct send
//! whose socket has taken nothing for [`SPILL_AFTER`] copies the rest of its message into a
//! free slot and is done: zero copies while the peer drains the socket, a copy where it
//! cannot yet.

use std::io::{ErrorKind, IoSlice, Read};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};

use super::{encode_header, socket_error, ReadState, TcpReceiver, TcpSender, HEADER_LEN};
use crate::{Direct, Error, Result, SendChannel};

/// How long a direct send waits on a socket that takes nothing before it copies the rest of
/// its message into a slot. Short, because a peer that does not drain within it is likely
/// sending too; a spill costs only the copy the slot path always makes.
const SPILL_AFTER: Duration = Duration::from_millis(1);

/// A message being written by `send_direct`.
#[derive(Debug)]
pub(super) struct DirectSend {
    header: [u8; HEADER_LEN],
    len: usize,
    /// Address of the caller's memory, to catch a resumption with other memory.
    at: usize,
    /// Bytes (header included) already written.
    written: usize,
}

/// `Moved` when something moved before the transfer had to stop, else `Waiting`.
fn stopped(moved: bool) -> Direct {
    if moved {
        Direct::Moved
    } else {
        Direct::Waiting
    }
}

impl TcpSender {
    /// Direct messages so far whose rest went through a slot.
    #[cfg(test)]
    pub(crate) fn spills(&self) -> u64 {
        self.spills
    }

    /// [`crate::SendChannel::send_direct`] for TCP.
    pub(super) fn write_direct(&mut self, data: &[u8], tag: u32) -> Result<Direct> {
        if self.acquired {
            return Err(Error::Config(
                "send_direct while a slot from try_acquire is not committed".into(),
            ));
        }
        if data.len() > self.ring.slot_size {
            return Err(Error::Config(format!(
                "send_direct of {} bytes exceeds the slot size {}",
                data.len(),
                self.ring.slot_size
            )));
        }
        let mut moved = false;
        if self.direct.is_none() {
            // Messages already in slots go first: the stream keeps commit order.
            if self.sent < self.committed {
                moved = self.progress()?;
                if self.sent < self.committed {
                    return self.stalled(data, tag, moved);
                }
            }
            self.direct = Some(DirectSend {
                // Sequence numbers wrap at 2^32 by design.
                header: encode_header(data.len() as u32, self.committed as u32, tag),
                len: data.len(),
                at: data.as_ptr() as usize,
                written: 0,
            });
        }
        let Some(d) = self.direct.as_mut() else {
            return Err(Error::Config("send_direct lost its message".into()));
        };
        if d.len != data.len() || d.at != data.as_ptr() as usize {
            return Err(Error::Config(
                "send_direct resumed with other memory than it began with".into(),
            ));
        }
        while d.written < HEADER_LEN + d.len {
            let header = &d.header[d.written.min(HEADER_LEN)..];
            let payload = &data[d.written.saturating_sub(HEADER_LEN)..];
            let iov = [IoSlice::new(header), IoSlice::new(payload)];
            let parts = if header.is_empty() {
                &iov[1..]
            } else {
                &iov[..]
            };
            match rustix::net::sendmsg(
                &self.stream,
                parts,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => {
                    d.written += n;
                    moved |= n > 0;
                }
                Err(Errno::AGAIN) => return self.stalled(data, tag, moved),
                Err(Errno::INTR) => {}
                Err(e) => return Err(socket_error(&self.peer, "sending to", e.into())),
            }
        }
        // The message took sequence number `committed` and no slot: every slot stays free.
        self.direct = None;
        self.stalled_since = None;
        self.committed += 1;
        self.sent += 1;
        Ok(Direct::Done)
    }

    /// The socket stopped taking bytes of the direct message `data`: `Moved`/`Waiting`, or,
    /// once it has taken nothing for [`SPILL_AFTER`], the rest of the message goes into a
    /// free slot and the send is `Done`.
    fn stalled(&mut self, data: &[u8], tag: u32, moved: bool) -> Result<Direct> {
        let now = Instant::now();
        let since = match self.stalled_since {
            Some(t) if !moved => t,
            _ => {
                self.stalled_since = Some(now);
                return Ok(stopped(moved));
            }
        };
        if now.duration_since(since) < SPILL_AFTER
            || self.committed - self.sent >= self.ring.nslots as u64
        {
            return Ok(stopped(moved));
        }
        let (header, written) = match self.direct.take() {
            Some(d) => (d.header, d.written),
            // Not begun (earlier slot messages still queued): the whole message spills.
            // Sequence numbers wrap at 2^32 by design.
            None => (
                encode_header(data.len() as u32, self.committed as u32, tag),
                0,
            ),
        };
        let from = written.saturating_sub(HEADER_LEN);
        let slot = (self.committed % self.ring.nslots as u64) as usize;
        self.ring.slot_mut(self.committed)[from..data.len()].copy_from_slice(&data[from..]);
        self.headers[slot] = header;
        if self.sent == self.committed {
            // It is the oldest unsent message: `partial` says how much of it already left.
            self.partial = written;
        }
        self.committed += 1;
        self.stalled_since = None;
        self.spills += 1;
        Ok(Direct::Done)
    }
}

impl TcpReceiver {
    /// One `read` into `buf`; `None` when nothing is available, `Some(0)` at end of stream.
    fn read_into(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        loop {
            return match (&self.stream).read(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(socket_error(&self.peer, "receiving from", e)),
            };
        }
    }

    /// End of stream during a direct receive: the error `on_eof` gives, or "closed".
    fn eof_error(&mut self) -> Error {
        match self.on_eof() {
            Err(e) => e,
            Ok(()) => self.closed(),
        }
    }

    /// [`crate::RecvChannel::recv_direct`] for TCP.
    pub(super) fn read_direct(&mut self, dst: &mut [u8], tag: u32) -> Result<Direct> {
        if self.received > self.released || self.peeked {
            return Ok(Direct::Slot);
        }
        if self.eof {
            return Err(self.closed());
        }
        let mut moved = false;
        loop {
            match self.state {
                ReadState::Payload { .. } => return Ok(Direct::Slot),
                ReadState::Header(got) => {
                    let mut header = self.header;
                    let Some(n) = self.read_into(&mut header[got..])? else {
                        return Ok(stopped(moved));
                    };
                    self.header = header;
                    if n == 0 {
                        return Err(self.eof_error());
                    }
                    moved = true;
                    let got = got + n;
                    if got < HEADER_LEN {
                        self.state = ReadState::Header(got);
                        continue;
                    }
                    let (len, msg_tag) = self.accept_header()?;
                    if len == 0 || len != dst.len() || msg_tag != tag {
                        self.continue_in_slot(len, msg_tag);
                        return Ok(Direct::Slot);
                    }
                    self.state = ReadState::Direct {
                        len,
                        at: dst.as_ptr() as usize,
                        got: 0,
                    };
                }
                ReadState::Direct { len, at, got } => {
                    if len != dst.len() || at != dst.as_ptr() as usize {
                        return Err(Error::Config(
                            "recv_direct resumed with other memory than it began with".into(),
                        ));
                    }
                    let Some(n) = self.read_into(&mut dst[got..])? else {
                        return Ok(stopped(moved));
                    };
                    if n == 0 {
                        return Err(self.eof_error());
                    }
                    moved = true;
                    let got = got + n;
                    if got < len {
                        self.state = ReadState::Direct { len, at, got };
                        continue;
                    }
                    // Delivered without a slot: received and released at once.
                    self.received += 1;
                    self.released += 1;
                    self.state = ReadState::Header(0);
                    return Ok(Direct::Done);
                }
            }
        }
    }
}
