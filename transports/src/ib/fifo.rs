//! The two ends of a verbs connection.
//!
//! The receiver's slot ring and a 16-byte header per slot live in memory registered for
//! remote writes; the sender knows both addresses and keys from the set-up. Message `seq`
//! goes on queue pair `seq % nqps` as two work requests: an RDMA write of the payload from
//! the sender's own registered slot into the receiver's slot, then an RDMA write with
//! immediate data (`seq`) of the header `len | seq | tag`, inline. Writes on one queue pair
//! land in order, so when the receiver sees the immediate's completion the payload is there.
//!
//! Flow control needs no per-message clear-to-send: the slots never move, so the receiver
//! only says how many it released, as the immediate of an empty RDMA write to the sender
//! (which wakes the sender through its completion channel, where a plain write would not).
//! Both ends sleep on their completion channel's descriptor.

use std::collections::VecDeque;
use std::net::TcpStream;

use super::resources::{Cq, Qp, Registered};
use super::verbs;
use crate::wait::WaitSource;
use crate::{Error, Message, RecvChannel, Result, SendChannel};

/// Bytes of the header in front of nothing: `len u32 | seq u32 | tag u32 | 0 u32`.
pub(crate) const HEADER_LEN: usize = 16;
/// Marks receive work requests in `wr_id` (the completion's opcode is undefined on errors).
const RECV: u64 = 1 << 63;
/// The `wr_id` of a receive on queue pair `q`.
pub(crate) fn recv_id(q: usize) -> u64 {
    RECV | q as u64
}

/// Completions taken per poll.
const POLL_BATCH: usize = 16;

/// Where the peer's receiver keeps its slots and headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteRing {
    pub ring_addr: u64,
    pub ring_rkey: u32,
    pub header_addr: u64,
    pub header_rkey: u32,
}

/// Where the peer's sender wants its credits written (an empty write: the address only has
/// to be valid).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteCredit {
    pub addr: u64,
    pub rkey: u32,
}

/// A sticky failure, repeated by every later call.
fn completion_error(peer: &str, what: &str, wc: &verbs::ibv_wc, settings: &str) -> Error {
    let verbs = verbs::Verbs::get().ok();
    let name = verbs.map_or_else(
        || format!("status {}", wc.status),
        |v| v.status_name(wc.status),
    );
    let detail = format!(
        "{what} failed: {name} (completion status {}, vendor error {:#x}){}",
        wc.status,
        wc.vendor_err,
        match wc.status {
            // IBV_WC_RETR_EXC_ERR, IBV_WC_RNR_RETRY_EXC_ERR: nobody answers any more.
            12 | 13 => format!(
                "; the peer's queue pair is gone or unreachable (its process died, or the \
                 fabric dropped it) after {settings}"
            ),
            // IBV_WC_WR_FLUSH_ERR: our queue pair was already in error.
            5 => "; the connection had already failed".to_owned(),
            _ => String::new(),
        }
    );
    if matches!(wc.status, 5 | 12 | 13) {
        Error::PeerClosed {
            peer: peer.to_owned(),
            detail,
        }
    } else {
        Error::Protocol {
            peer: peer.to_owned(),
            detail,
        }
    }
}

fn copy_error(e: &Error) -> Error {
    match e {
        Error::PeerClosed { peer, detail } => Error::PeerClosed {
            peer: peer.clone(),
            detail: detail.clone(),
        },
        Error::Protocol { peer, detail } => Error::Protocol {
            peer: peer.clone(),
            detail: detail.clone(),
        },
        other => Error::Protocol {
            peer: String::new(),
            detail: other.to_string(),
        },
    }
}

/// Takes every waiting completion of `cq` (after consuming its events): the first failed one
/// becomes a sticky error (`what(is_receive)` says what failed), the others go to `each`,
/// whose errors stick too. `Ok(true)` when any completion arrived.
fn take_completions(
    cq: &mut Cq,
    failed: &mut Option<Error>,
    peer: &str,
    retry_note: &str,
    what: impl Fn(bool) -> String,
    mut each: impl FnMut(bool, &verbs::ibv_wc) -> Result<()>,
) -> Result<bool> {
    if let Some(e) = failed {
        return Err(copy_error(e));
    }
    cq.drain_events();
    let mut any = false;
    let mut wc = [verbs::ibv_wc::default(); POLL_BATCH];
    loop {
        let n = cq.poll(&mut wc)?;
        for c in &wc[..n] {
            any = true;
            let recv = c.wr_id & RECV != 0;
            let outcome = if c.status != 0 {
                Err(completion_error(peer, &what(recv), c, retry_note))
            } else {
                each(recv, c)
            };
            if let Err(e) = outcome {
                *failed = Some(copy_error(&e));
                return Err(e);
            }
        }
        if n < POLL_BATCH {
            return Ok(any);
        }
    }
}

/// `Err(PeerClosed)` once the side connection reads end-of-file (the peer's process is gone
/// or it dropped the connection).
fn side_connection_alive(stream: &TcpStream, peer: &str) -> Result<()> {
    let mut b = [0u8; 1];
    match rustix::net::recv(
        stream,
        &mut b,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    ) {
        Ok((0, _)) => Err(Error::PeerClosed {
            peer: peer.to_owned(),
            detail: "its side of the connection closed".into(),
        }),
        Ok(_) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(Error::PeerClosed {
            peer: peer.to_owned(),
            detail: format!("side connection: {e}"),
        }),
    }
}

/// The sending end: a local registered ring the caller fills, written to the peer's.
pub struct IbSender {
    // Field order is drop order: queue pairs before their queue and memory.
    pub(crate) qps: Vec<Qp>,
    pub(crate) cq: Cq,
    pub(crate) ring: Registered,
    /// Target of the peer's credit writes (empty writes, but the key must be valid).
    pub(crate) _credit_landing: Registered,
    pub(crate) remote: RemoteRing,
    pub(crate) stream: TcpStream,
    pub(crate) peer: String,
    pub(crate) slot_size: usize,
    pub(crate) nslots: usize,
    /// Send queue capacity per queue pair.
    pub(crate) max_send_wr: u32,
    /// Messages committed.
    pub(crate) committed: u64,
    /// Messages the receiver released.
    pub(crate) credited: u64,
    /// Per queue pair: work requests behind each signaled one not yet completed.
    pub(crate) outstanding: Vec<VecDeque<u32>>,
    /// Per queue pair: work requests posted and not completed.
    pub(crate) in_flight: Vec<u32>,
    pub(crate) failed: Option<Error>,
    /// `OXCCL_IB_TIMEOUT` and `OXCCL_IB_RETRY_CNT`, for error messages.
    pub(crate) retry_note: String,
}

impl std::fmt::Debug for IbSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbSender")
            .field("peer", &self.peer)
            .field("committed", &self.committed)
            .field("credited", &self.credited)
            .finish()
    }
}

impl IbSender {
    /// Takes completions: send completions free queue entries, credit immediates free
    /// slots. `Ok(true)` when anything arrived.
    fn poll(&mut self) -> Result<bool> {
        let Self {
            cq,
            failed,
            peer,
            retry_note,
            qps,
            committed,
            credited,
            outstanding,
            in_flight,
            ..
        } = self;
        let what = |recv: bool| {
            if recv {
                format!("receiving credits from {peer}")
            } else {
                format!("RDMA write to {peer}")
            }
        };
        take_completions(cq, failed, peer, retry_note, what, |recv, c| {
            if recv {
                let imm = u32::from_be(c.imm_data);
                let delta = imm.wrapping_sub(*credited as u32) as u64;
                if delta > *committed - *credited {
                    return Err(Error::Protocol {
                        peer: peer.clone(),
                        detail: format!(
                            "credit for {delta} slots, only {} in flight",
                            *committed - *credited
                        ),
                    });
                }
                *credited += delta;
                qps[0].post_empty_recv(recv_id(0))
            } else {
                let q = c.wr_id as usize;
                if let Some(wrs) = outstanding.get_mut(q).and_then(VecDeque::pop_front) {
                    in_flight[q] -= wrs;
                }
                Ok(())
            }
        })
    }

    fn room(&self) -> bool {
        let q = (self.committed % self.qps.len() as u64) as usize;
        self.committed - self.credited < self.nslots as u64
            && self.in_flight[q] + 2 <= self.max_send_wr
    }
}

impl SendChannel for IbSender {
    fn slot_size(&self) -> usize {
        self.slot_size
    }

    fn nslots(&self) -> usize {
        self.nslots
    }

    fn try_acquire(&mut self) -> Result<Option<&mut [u8]>> {
        self.poll()?;
        if !self.room() {
            // Ask for an event, then look once more: a credit that came before the request
            // raises none.
            if self.cq.arm()? {
                self.poll()?;
            }
            if !self.room() {
                return Ok(None);
            }
        }
        let start = (self.committed % self.nslots as u64) as usize * self.slot_size;
        let size = self.slot_size;
        Ok(Some(self.ring.slice_mut(start, size)))
    }

    fn commit(&mut self, len: usize, tag: u32) -> Result<()> {
        if len > self.slot_size {
            return Err(Error::Config(format!(
                "commit of {len} bytes exceeds the slot size {}",
                self.slot_size
            )));
        }
        if !self.room() {
            return Err(Error::Config("commit without a free slot".into()));
        }
        let seq = self.committed;
        let slot = (seq % self.nslots as u64) as usize;
        let q = (seq % self.qps.len() as u64) as usize;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&(len as u32).to_le_bytes());
        header[4..8].copy_from_slice(&(seq as u32).to_le_bytes());
        header[8..12].copy_from_slice(&tag.to_le_bytes());
        let mut header_sge = verbs::ibv_sge {
            addr: header.as_ptr() as u64,
            length: HEADER_LEN as u32,
            lkey: 0,
        };
        let mut header_wr = verbs::ibv_send_wr {
            wr_id: q as u64,
            sg_list: &mut header_sge,
            num_sge: 1,
            opcode: verbs::WR_RDMA_WRITE_WITH_IMM,
            send_flags: verbs::SEND_SIGNALED | verbs::SEND_INLINE,
            imm_data: (seq as u32).to_be(),
            remote_addr: self.remote.header_addr + (slot * HEADER_LEN) as u64,
            rkey: self.remote.header_rkey,
            ..Default::default()
        };
        let mut data_sge = verbs::ibv_sge {
            addr: self.ring.addr() + (slot * self.slot_size) as u64,
            length: len as u32,
            lkey: self.ring.lkey(),
        };
        let mut data_wr = verbs::ibv_send_wr {
            wr_id: q as u64,
            next: &mut header_wr,
            sg_list: &mut data_sge,
            num_sge: 1,
            opcode: verbs::WR_RDMA_WRITE,
            send_flags: 0,
            remote_addr: self.remote.ring_addr + (slot * self.slot_size) as u64,
            rkey: self.remote.ring_rkey,
            ..Default::default()
        };
        let (first, wrs) = if len > 0 {
            (&mut data_wr, 2)
        } else {
            (&mut header_wr, 1)
        };
        // SAFETY: the payload stays in our registered slot until the receiver releases it
        // (after the write completed); the header is inline, copied at posting; the remote
        // ranges lie inside the peer's registered ring and header array (slot < nslots).
        unsafe { self.qps[q].post_send(first) }?;
        self.outstanding[q].push_back(wrs);
        self.in_flight[q] += wrs;
        self.committed += 1;
        Ok(())
    }

    fn progress(&mut self) -> Result<bool> {
        self.poll()
    }

    fn flushed(&self) -> bool {
        self.in_flight.iter().all(|&n| n == 0)
    }

    fn wait_source(&self) -> WaitSource {
        WaitSource::Readable(self.cq.fd())
    }

    fn check_alive(&mut self) -> Result<()> {
        self.poll()?;
        side_connection_alive(&self.stream, &self.peer)
    }
}

/// The receiving end: the peer writes into its registered ring.
pub struct IbReceiver {
    pub(crate) qps: Vec<Qp>,
    pub(crate) cq: Cq,
    pub(crate) ring: Registered,
    pub(crate) headers: Registered,
    pub(crate) credit: RemoteCredit,
    pub(crate) stream: TcpStream,
    pub(crate) peer: String,
    pub(crate) slot_size: usize,
    pub(crate) nslots: usize,
    /// Messages released.
    pub(crate) head: u64,
    /// Which slots hold a message whose completion arrived.
    pub(crate) arrived: Vec<bool>,
    /// Release count last sent to the peer.
    pub(crate) credit_sent: u64,
    /// Credit writes posted and not completed (at most `max_send_wr`).
    pub(crate) credit_in_flight: u32,
    pub(crate) max_send_wr: u32,
    pub(crate) failed: Option<Error>,
    pub(crate) retry_note: String,
}

impl std::fmt::Debug for IbReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IbReceiver")
            .field("peer", &self.peer)
            .field("head", &self.head)
            .finish()
    }
}

impl IbReceiver {
    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(copy_error(&e));
        e
    }

    fn poll(&mut self) -> Result<bool> {
        let Self {
            cq,
            failed,
            peer,
            retry_note,
            qps,
            head,
            nslots,
            arrived,
            credit_in_flight,
            ..
        } = self;
        let what = |recv: bool| {
            if recv {
                format!("receiving from {peer}")
            } else {
                format!("sending credits to {peer}")
            }
        };
        let any = take_completions(cq, failed, peer, retry_note, what, |recv, c| {
            if !recv {
                *credit_in_flight -= 1;
                return Ok(());
            }
            let seq32 = u32::from_be(c.imm_data);
            let ahead = seq32.wrapping_sub(*head as u32) as u64;
            if ahead >= *nslots as u64 {
                return Err(Error::Protocol {
                    peer: peer.clone(),
                    detail: format!(
                        "message {seq32} arrived while expecting {}..{}",
                        *head as u32,
                        (*head + *nslots as u64) as u32
                    ),
                });
            }
            arrived[((*head + ahead) % *nslots as u64) as usize] = true;
            qps[(c.wr_id & !RECV) as usize].post_empty_recv(c.wr_id)
        })?;
        self.send_credit()?;
        Ok(any)
    }

    /// Tells the peer how many slots were released, when that changed and the queue has
    /// room (otherwise the next poll does).
    fn send_credit(&mut self) -> Result<()> {
        if self.credit_sent == self.head || self.credit_in_flight >= self.max_send_wr {
            return Ok(());
        }
        let mut wr = verbs::ibv_send_wr {
            wr_id: 0,
            num_sge: 0,
            opcode: verbs::WR_RDMA_WRITE_WITH_IMM,
            send_flags: verbs::SEND_SIGNALED,
            imm_data: (self.head as u32).to_be(),
            remote_addr: self.credit.addr,
            rkey: self.credit.rkey,
            ..Default::default()
        };
        // SAFETY: an empty write: no local memory; the remote address is the peer's
        // registered landing word.
        unsafe { self.qps[0].post_send(&mut wr) }?;
        self.credit_in_flight += 1;
        self.credit_sent = self.head;
        Ok(())
    }

    fn ready(&self) -> bool {
        self.arrived[(self.head % self.nslots as u64) as usize]
    }
}

impl RecvChannel for IbReceiver {
    fn slot_size(&self) -> usize {
        self.slot_size
    }

    fn nslots(&self) -> usize {
        self.nslots
    }

    fn try_peek(&mut self) -> Result<Option<Message<'_>>> {
        if !self.ready() {
            self.poll()?;
            if !self.ready() && self.cq.arm()? {
                self.poll()?;
            }
            if !self.ready() {
                return Ok(None);
            }
        }
        let slot = (self.head % self.nslots as u64) as usize;
        let h = self.headers.slice(slot * HEADER_LEN, HEADER_LEN);
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (len, seq, tag) = (word(0) as usize, word(4), word(8));
        if seq != self.head as u32 || len > self.slot_size {
            let e = Error::Protocol {
                peer: self.peer.clone(),
                detail: format!(
                    "slot header says message {seq} of {len} bytes, expected message {} of at \
                     most {} bytes",
                    self.head as u32, self.slot_size
                ),
            };
            return Err(self.fail(e));
        }
        Ok(Some(Message {
            data: self.ring.slice(slot * self.slot_size, len),
            tag,
        }))
    }

    fn release(&mut self) -> Result<()> {
        if !self.ready() {
            return Err(Error::Config("release without a message".into()));
        }
        let slot = (self.head % self.nslots as u64) as usize;
        self.arrived[slot] = false;
        self.head += 1;
        self.send_credit()
    }

    fn progress(&mut self) -> Result<bool> {
        self.poll()
    }

    fn wait_source(&self) -> WaitSource {
        WaitSource::Readable(self.cq.fd())
    }

    fn check_alive(&mut self) -> Result<()> {
        self.poll()?;
        if self.ready() {
            return Ok(());
        }
        side_connection_alive(&self.stream, &self.peer)
    }
}
