//! The two ends of a shared-memory FIFO.
//!
//! Ordering: the sender writes a slot, its length and its tag, then stores `tail` with
//! `Release`; the receiver loads `tail` with `Acquire` before it reads the length, the tag
//! and the slot. The receiver stores `head` with `Release` after it is done with a slot;
//! the sender loads `head` with `Acquire` before it reuses the slot. Each side keeps its
//! own counter locally and only reads the other's, so a corrupt counter is detected, never
//! trusted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::connect::PeerProcess;
use super::layout::{FifoOffsets, Layout, Mapping, RECEIVER_CLOSED, SENDER_CLOSED};
use crate::wait::{Doorbell, WaitSource};
use crate::{Error, Message, RecvChannel, Result, SendChannel};

/// The sending end of a FIFO that lives in a local peer's inbox.
///
/// Commits ring the peer's doorbell. Dropping it marks the FIFO closed for the receiver,
/// which still reads every message committed before.
#[derive(Debug)]
pub struct ShmSender {
    /// The receiver's inbox: holds the FIFO and the receiver's doorbell.
    map: Arc<Mapping>,
    off: FifoOffsets,
    layout: Layout,
    peer: PeerProcess,
    /// Messages committed so far (only this side writes the shared `tail`).
    tail: u64,
    /// `try_acquire` handed out slot `tail % nslots` and no commit followed yet.
    acquired: bool,
}

impl ShmSender {
    pub(crate) fn new(
        map: Arc<Mapping>,
        off: FifoOffsets,
        layout: Layout,
        peer: PeerProcess,
    ) -> Self {
        Self {
            map,
            off,
            layout,
            peer,
            tail: 0,
            acquired: false,
        }
    }

    fn peer_doorbell(&self) -> &Doorbell {
        &self.map.header().doorbell
    }

    fn closed(&self) -> &AtomicU32 {
        self.map.u32_at(self.off.closed)
    }

    /// The receiver's `head`, checked to lie in `[tail - nslots, tail]`.
    fn head(&self) -> Result<u64> {
        let head = self.map.u64_at(self.off.head).load(Ordering::Acquire);
        if head > self.tail || self.tail - head > self.layout.nslots as u64 {
            return Err(Error::Protocol {
                peer: self.peer.desc.clone(),
                detail: format!(
                    "shm FIFO head {head} outside [{}, {}]",
                    self.tail.saturating_sub(self.layout.nslots as u64),
                    self.tail
                ),
            });
        }
        Ok(head)
    }

    fn slot_index(&self) -> usize {
        (self.tail % self.layout.nslots as u64) as usize
    }
}

impl SendChannel for ShmSender {
    fn slot_size(&self) -> usize {
        self.layout.slot_size
    }

    fn nslots(&self) -> usize {
        self.layout.nslots
    }

    fn try_acquire(&mut self) -> Result<Option<&mut [u8]>> {
        if !self.acquired {
            if self.closed().load(Ordering::Acquire) & RECEIVER_CLOSED != 0 {
                return Err(Error::PeerClosed {
                    peer: self.peer.desc.clone(),
                    detail: "the receiver closed the shm FIFO".into(),
                });
            }
            let head = self.head()?;
            if self.tail - head >= self.layout.nslots as u64 {
                return Ok(None);
            }
            self.acquired = true;
        }
        let slot = self.slot_index();
        let ptr = self
            .map
            .bytes_at(self.off.slot(&self.layout, slot), self.layout.slot_size);
        // SAFETY: `ptr` covers `slot_size` bytes inside the mapping, which `self.map` keeps
        // alive for the borrow of `self`. The FIFO protocol gives this sender exclusive use
        // of slot `tail % nslots` while `tail - head < nslots` (checked above): the receiver
        // released it (`head` loaded with Acquire) and reads it only after `tail` moves on.
        // Only one `ShmSender` exists per FIFO (ShmContext enforces it). The slot is 64-byte
        // aligned; bytes have no invalid values.
        Ok(Some(unsafe {
            std::slice::from_raw_parts_mut(ptr, self.layout.slot_size)
        }))
    }

    fn commit(&mut self, len: usize, tag: u32) -> Result<()> {
        if !self.acquired {
            return Err(Error::Config(
                "commit without a slot from try_acquire".into(),
            ));
        }
        if len > self.layout.slot_size {
            return Err(Error::Config(format!(
                "commit of {len} bytes exceeds the slot size {}",
                self.layout.slot_size
            )));
        }
        let slot = self.slot_index();
        self.map
            .u32_at(self.off.len(slot))
            .store(len as u32, Ordering::Relaxed);
        // Published with the length by the Release store of `tail` below.
        self.map
            .u32_at(self.off.tag(slot))
            .store(tag, Ordering::Relaxed);
        self.tail += 1;
        self.map
            .u64_at(self.off.tail)
            .store(self.tail, Ordering::Release);
        self.acquired = false;
        self.peer_doorbell().ring();
        Ok(())
    }

    fn progress(&mut self) -> Result<bool> {
        Ok(false)
    }

    fn flushed(&self) -> bool {
        true
    }

    fn wait_source(&self) -> WaitSource {
        WaitSource::Doorbell
    }

    fn check_alive(&mut self) -> Result<()> {
        if self.closed().load(Ordering::Acquire) & RECEIVER_CLOSED != 0 {
            return Err(Error::PeerClosed {
                peer: self.peer.desc.clone(),
                detail: "the receiver closed the shm FIFO".into(),
            });
        }
        self.peer.check()
    }
}

impl Drop for ShmSender {
    fn drop(&mut self) {
        self.closed().fetch_or(SENDER_CLOSED, Ordering::Release);
        self.peer_doorbell().ring();
    }
}

/// The receiving end of a FIFO that lives in this rank's inbox.
///
/// Releases ring the sender's doorbell. Dropping it marks the FIFO closed for the sender.
#[derive(Debug)]
pub struct ShmReceiver {
    /// This rank's inbox: holds the FIFO.
    map: Arc<Mapping>,
    off: FifoOffsets,
    layout: Layout,
    /// The sender's inbox, for its doorbell.
    sender_map: Arc<Mapping>,
    peer: PeerProcess,
    /// Messages released so far (only this side writes the shared `head`).
    head: u64,
    /// `try_peek` returned the message at `head` and no release followed yet.
    peeked: bool,
}

impl ShmReceiver {
    pub(crate) fn new(
        map: Arc<Mapping>,
        off: FifoOffsets,
        layout: Layout,
        sender_map: Arc<Mapping>,
        peer: PeerProcess,
    ) -> Self {
        Self {
            map,
            off,
            layout,
            sender_map,
            peer,
            head: 0,
            peeked: false,
        }
    }

    fn sender_doorbell(&self) -> &Doorbell {
        &self.sender_map.header().doorbell
    }

    fn closed(&self) -> &AtomicU32 {
        self.map.u32_at(self.off.closed)
    }

    /// The sender's `tail`, checked to lie in `[head, head + nslots]`.
    fn tail(&self) -> Result<u64> {
        let tail = self.map.u64_at(self.off.tail).load(Ordering::Acquire);
        if tail < self.head || tail - self.head > self.layout.nslots as u64 {
            return Err(self.protocol(format!(
                "shm FIFO tail {tail} outside [{}, {}]",
                self.head,
                self.head + self.layout.nslots as u64
            )));
        }
        Ok(tail)
    }

    /// `true` when the sender closed the FIFO and nothing is left to read.
    fn closed_and_drained(&self) -> Result<bool> {
        if self.closed().load(Ordering::Acquire) & SENDER_CLOSED == 0 {
            return Ok(false);
        }
        // The sender stored its last tail before setting the bit; reload it after the
        // Acquire above so a final commit is not missed.
        Ok(self.tail()? == self.head)
    }

    fn protocol(&self, detail: String) -> Error {
        Error::Protocol {
            peer: self.peer.desc.clone(),
            detail,
        }
    }
}

impl RecvChannel for ShmReceiver {
    fn slot_size(&self) -> usize {
        self.layout.slot_size
    }

    fn nslots(&self) -> usize {
        self.layout.nslots
    }

    fn try_peek(&mut self) -> Result<Option<Message<'_>>> {
        if self.tail()? == self.head {
            if self.closed_and_drained()? {
                return Err(Error::PeerClosed {
                    peer: self.peer.desc.clone(),
                    detail: "the sender closed the shm FIFO".into(),
                });
            }
            if self.tail()? == self.head {
                return Ok(None);
            }
        }
        let slot = (self.head % self.layout.nslots as u64) as usize;
        let len = self.map.u32_at(self.off.len(slot)).load(Ordering::Relaxed) as usize;
        if len > self.layout.slot_size {
            return Err(self.protocol(format!(
                "shm message length {len} exceeds the slot size {}",
                self.layout.slot_size
            )));
        }
        // Any value is a valid tag: it is the engine's to check, not ours.
        let tag = self.map.u32_at(self.off.tag(slot)).load(Ordering::Relaxed);
        let ptr = self.map.bytes_at(self.off.slot(&self.layout, slot), len);
        self.peeked = true;
        // SAFETY: `ptr..ptr+len` lies inside the mapping (`len <= slot_size`, checked above;
        // `bytes_at` checks the range), which `self.map` keeps alive for the borrow of
        // `self`. The sender committed this slot (`tail` loaded with Acquire after its
        // Release store) and will not touch it until `head` moves past it, which only this
        // receiver does, in `release` (needs `&mut self`, so this borrow has ended). The
        // slot is 64-byte aligned; bytes have no invalid values.
        let data = unsafe { std::slice::from_raw_parts(ptr, len) };
        Ok(Some(Message { data, tag }))
    }

    fn release(&mut self) -> Result<()> {
        if !self.peeked {
            return Err(Error::Config(
                "release without a message from try_peek".into(),
            ));
        }
        self.peeked = false;
        self.head += 1;
        self.map
            .u64_at(self.off.head)
            .store(self.head, Ordering::Release);
        self.sender_doorbell().ring();
        Ok(())
    }

    fn progress(&mut self) -> Result<bool> {
        Ok(false)
    }

    fn wait_source(&self) -> WaitSource {
        WaitSource::Doorbell
    }

    fn check_alive(&mut self) -> Result<()> {
        if self.closed_and_drained()? {
            return Err(Error::PeerClosed {
                peer: self.peer.desc.clone(),
                detail: "the sender closed the shm FIFO".into(),
            });
        }
        self.peer.check()
    }
}

impl Drop for ShmReceiver {
    fn drop(&mut self) {
        self.closed().fetch_or(RECEIVER_CLOSED, Ordering::Release);
        self.sender_doorbell().ring();
    }
}
