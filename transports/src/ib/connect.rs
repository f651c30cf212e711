//! Setting up a verbs connection over an authenticated TCP stream.
//!
//! Each side builds both halves (its sender's queue pairs and ring, its receiver's queue
//! pairs, ring and header array), sends their addresses in one message, reads the peer's,
//! connects every queue pair (INIT → RTR → RTS), posts its receives, and the two sides
//! exchange one byte so that neither writes before the other can take it. The stream then
//! stays open beside the queue pairs: its end-of-file tells a waiting side that the peer's
//! process is gone.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use super::device::Port;
use super::fifo::{IbReceiver, IbSender, RemoteCredit, RemoteRing, HEADER_LEN};
use super::resources::{Cq, PathSettings, Qp, QpRemote, Registered};
use super::{verbs, IbSettings};
use crate::{Error, FifoConfig, Result};

/// First bytes of the set-up message.
const MAGIC: [u8; 4] = *b"OXIB";
/// Bumped on any change of the set-up message or the data protocol.
const VERSION: u32 = 1;
/// Largest `qps_per_connection` accepted from a peer.
pub(crate) const MAX_QPS: u32 = 16;
/// Extra receives posted on the sender's first queue pair beyond one per slot.
const CREDIT_RECV_SLACK: u32 = 4;

/// What one side tells the other.
#[derive(Debug, Clone, PartialEq)]
struct Offer {
    nslots: u32,
    slot_size: u32,
    roce: bool,
    lid: u16,
    gid: [u8; 16],
    mtu: u32,
    /// (qpn, psn) of the sender's queue pairs.
    send_qps: Vec<(u32, u32)>,
    credit_addr: u64,
    credit_rkey: u32,
    /// (qpn, psn) of the receiver's queue pairs.
    recv_qps: Vec<(u32, u32)>,
    ring_addr: u64,
    ring_rkey: u32,
    header_addr: u64,
    header_rkey: u32,
}

impl Offer {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(96 + 16 * self.send_qps.len());
        b.extend_from_slice(&MAGIC);
        for v in [
            VERSION,
            self.nslots,
            self.slot_size,
            self.send_qps.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(u8::from(self.roce));
        b.extend_from_slice(&self.lid.to_le_bytes());
        b.extend_from_slice(&self.gid);
        b.extend_from_slice(&self.mtu.to_le_bytes());
        for &(qpn, psn) in self.send_qps.iter().chain(&self.recv_qps) {
            b.extend_from_slice(&qpn.to_le_bytes());
            b.extend_from_slice(&psn.to_le_bytes());
        }
        for (addr, key) in [
            (self.credit_addr, self.credit_rkey),
            (self.ring_addr, self.ring_rkey),
            (self.header_addr, self.header_rkey),
        ] {
            b.extend_from_slice(&addr.to_le_bytes());
            b.extend_from_slice(&key.to_le_bytes());
        }
        b
    }

    /// Bytes of an encoded offer with `nqps` queue pairs per direction.
    fn encoded_len(nqps: u32) -> usize {
        4 + 16 + 1 + 2 + 16 + 4 + 16 * nqps as usize + 3 * 12
    }

    /// Reads an offer from `stream`; `peer` names it in errors.
    fn read(stream: &mut TcpStream, peer: &str) -> Result<Self> {
        let io = |e| Error::io(format!("reading the verbs set-up from {peer}"), e);
        let protocol = |detail: String| Error::Protocol {
            peer: peer.to_owned(),
            detail,
        };
        let mut head = [0u8; 20];
        stream.read_exact(&mut head).map_err(io)?;
        if head[..4] != MAGIC {
            return Err(protocol("not an oxccl verbs set-up message".into()));
        }
        let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (version, nslots, slot_size, nqps) = (
            word(&head, 4),
            word(&head, 8),
            word(&head, 12),
            word(&head, 16),
        );
        if version != VERSION {
            return Err(protocol(format!(
                "verbs set-up version {version}, expected {VERSION}"
            )));
        }
        if nqps == 0 || nqps > MAX_QPS {
            return Err(protocol(format!(
                "{nqps} queue pairs per connection (1..={MAX_QPS})"
            )));
        }
        let mut rest = vec![0u8; Self::encoded_len(nqps) - head.len()];
        stream.read_exact(&mut rest).map_err(io)?;
        let mut at = 0;
        let mut take = |n: usize| {
            let s = &rest[at..at + n];
            at += n;
            s.to_vec()
        };
        let roce = take(1)[0] != 0;
        let lid = u16::from_le_bytes(take(2).try_into().expect("2 bytes"));
        let gid: [u8; 16] = take(16).try_into().expect("16 bytes");
        let mtu = word(&take(4), 0);
        let mut qps = Vec::with_capacity(2 * nqps as usize);
        for _ in 0..2 * nqps {
            let b = take(8);
            qps.push((word(&b, 0), word(&b, 4)));
        }
        let recv_qps = qps.split_off(nqps as usize);
        let mut key = || {
            let b = take(12);
            (
                u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
                word(&b, 8),
            )
        };
        let (credit_addr, credit_rkey) = key();
        let (ring_addr, ring_rkey) = key();
        let (header_addr, header_rkey) = key();
        Ok(Self {
            nslots,
            slot_size,
            roce,
            lid,
            gid,
            mtu,
            send_qps: qps,
            credit_addr,
            credit_rkey,
            recv_qps,
            ring_addr,
            ring_rkey,
            header_addr,
            header_rkey,
        })
    }
}

/// Turns an authenticated stream into the two ends of a verbs connection to `peer` on
/// `port`. Both sides must call it with the same `fifo` and `settings.qps_per_connection`;
/// the peer may use another port or device. Fails by `deadline`.
///
/// It blocks until the peer makes the same call; to set up many connections at once without
/// depending on the order each side takes them in, use [`Setup`]'s three steps instead.
pub fn channel_pair(
    stream: TcpStream,
    peer: String,
    port: &Port,
    fifo: FifoConfig,
    settings: &IbSettings,
    deadline: Instant,
) -> Result<(IbSender, IbReceiver)> {
    let mut setup = Setup::start(stream, peer, port, fifo, settings, deadline)?;
    setup.exchange()?;
    setup.finish()
}

/// A verbs connection being set up, in three steps that each rank runs over all its
/// connections before the next step: [`Setup::start`] (create, send our offer),
/// [`Setup::exchange`] (read the peer's, connect, send the ready mark),
/// [`Setup::finish`] (read the peer's ready mark). A step only waits for what every peer
/// sends in an earlier step, so no order of connections can deadlock.
pub struct Setup {
    send_qps: Vec<Qp>,
    send_cq: Cq,
    send_ring: Registered,
    credit_landing: Registered,
    recv_qps: Vec<Qp>,
    recv_cq: Cq,
    recv_ring: Registered,
    headers: Registered,
    stream: TcpStream,
    peer: String,
    fifo: FifoConfig,
    port: Port,
    settings: IbSettings,
    mine: Offer,
    theirs: Option<Offer>,
    max_send_wr: u32,
    credit_recvs: u32,
    credit_wr: u32,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup").field("peer", &self.peer).finish()
    }
}

impl Setup {
    /// Creates both halves' queue pairs and memory on `port` and sends their addresses.
    pub fn start(
        stream: TcpStream,
        peer: String,
        port: &Port,
        fifo: FifoConfig,
        settings: &IbSettings,
        deadline: Instant,
    ) -> Result<Self> {
        fifo.validate()?;
        settings.validate()?;
        let nqps = settings.qps_per_connection;
        let nslots = fifo.nslots as u32;
        let dev = &port.dev;
        // Sender: two work requests per message, and room for the messages the receiver
        // released before we saw their completions.
        let max_send_wr = 4 * nslots + 4;
        let credit_recvs = nslots + CREDIT_RECV_SLACK;
        let send_cq = Cq::new(dev, (nqps * max_send_wr + credit_recvs) as usize)?;
        let send_qps = (0..nqps)
            .map(|q| {
                let recvs = if q == 0 { credit_recvs } else { 1 };
                Qp::new(&send_cq, port.num, max_send_wr, recvs)
            })
            .collect::<Result<Vec<_>>>()?;
        let send_ring = Registered::new(dev, fifo.nslots * fifo.slot_size, false)?;
        let credit_landing = Registered::new(dev, 8, true)?;
        // Receiver: one immediate per slot on each queue pair at most, credits on the first.
        let credit_wr = nslots + 2;
        let recv_cq = Cq::new(dev, (nqps * nslots + credit_wr) as usize)?;
        let recv_qps = (0..nqps)
            .map(|_| Qp::new(&recv_cq, port.num, credit_wr, nslots))
            .collect::<Result<Vec<_>>>()?;
        let recv_ring = Registered::new(dev, fifo.nslots * fifo.slot_size, true)?;
        let headers = Registered::new(dev, fifo.nslots * HEADER_LEN, true)?;
        let mine = Offer {
            nslots,
            slot_size: fifo.slot_size as u32,
            roce: port.roce,
            lid: port.lid,
            gid: port.gid.raw,
            mtu: port.active_mtu,
            send_qps: send_qps.iter().map(|q| (q.qpn(), q.psn)).collect(),
            credit_addr: credit_landing.addr(),
            credit_rkey: credit_landing.rkey(),
            recv_qps: recv_qps.iter().map(|q| (q.qpn(), q.psn)).collect(),
            ring_addr: recv_ring.addr(),
            ring_rkey: recv_ring.rkey(),
            header_addr: headers.addr(),
            header_rkey: headers.rkey(),
        };
        set_deadline(&stream, deadline, &peer)?;
        (&stream)
            .write_all(&mine.encode())
            .map_err(|e| Error::io(format!("sending the verbs set-up to {peer}"), e))?;
        Ok(Self {
            send_qps,
            send_cq,
            send_ring,
            credit_landing,
            recv_qps,
            recv_cq,
            recv_ring,
            headers,
            stream,
            peer,
            fifo,
            port: port.clone(),
            settings: settings.clone(),
            mine,
            theirs: None,
            max_send_wr,
            credit_recvs,
            credit_wr,
        })
    }

    /// Reads the peer's offer, checks it matches, posts the receives, connects every queue
    /// pair and sends the ready mark.
    pub fn exchange(&mut self) -> Result<()> {
        let peer = &self.peer;
        let theirs = Offer::read(&mut self.stream, peer)?;
        let mine = &self.mine;
        let mismatch = |detail: String| Error::Protocol {
            peer: peer.clone(),
            detail,
        };
        if (theirs.nslots, theirs.slot_size) != (mine.nslots, mine.slot_size)
            || theirs.send_qps.len() != mine.send_qps.len()
        {
            return Err(mismatch(format!(
                "FIFO of {} slots of {} bytes over {} queue pairs there, {} of {} over {} \
                 here (OXCCL_NSLOTS, OXCCL_SLOT_SIZE, OXCCL_IB_QPS_PER_CONNECTION must match)",
                theirs.nslots,
                theirs.slot_size,
                theirs.send_qps.len(),
                mine.nslots,
                mine.slot_size,
                mine.send_qps.len()
            )));
        }
        if theirs.roce != mine.roce {
            return Err(mismatch(
                "one side is on RoCE, the other on InfiniBand: they cannot reach each other".into(),
            ));
        }
        let path = PathSettings {
            port: self.port.num,
            gid_index: self.port.gid_index,
            mtu: mine.mtu.min(theirs.mtu),
            timeout: self.settings.timeout,
            retry_cnt: self.settings.retry_cnt,
            service_level: self.settings.service_level,
            traffic_class: self.settings.traffic_class,
        };
        let remote = |(qpn, psn): (u32, u32)| QpRemote {
            qpn,
            psn,
            lid: theirs.lid,
            gid: verbs::ibv_gid { raw: theirs.gid },
        };
        // Receives first, so nothing the peer writes after the ready mark finds none.
        for _ in 0..self.credit_recvs {
            self.send_qps[0].post_empty_recv(super::fifo::recv_id(0))?;
        }
        for (q, qp) in self.recv_qps.iter().enumerate() {
            for _ in 0..self.fifo.nslots {
                qp.post_empty_recv(super::fifo::recv_id(q))?;
            }
        }
        for (qp, &r) in self.send_qps.iter().zip(&theirs.recv_qps) {
            qp.connect(&remote(r), &path)?;
        }
        for (qp, &r) in self.recv_qps.iter().zip(&theirs.send_qps) {
            qp.connect(&remote(r), &path)?;
        }
        (&self.stream)
            .write_all(&[1])
            .map_err(|e| Error::io(format!("sending the verbs ready mark to {peer}"), e))?;
        self.theirs = Some(theirs);
        Ok(())
    }

    /// Waits for the peer's ready mark; the connection's two ends.
    pub fn finish(self) -> Result<(IbSender, IbReceiver)> {
        let peer = self.peer;
        let io = |what: &str| {
            let what = format!("{what} {peer}");
            move |e| Error::io(what, e)
        };
        let theirs = self
            .theirs
            .ok_or_else(|| Error::Config("Setup::finish before Setup::exchange".into()))?;
        let mut ready = [0u8; 1];
        (&self.stream)
            .read_exact(&mut ready)
            .map_err(io("waiting for the verbs ready mark from"))?;
        let stream = self.stream;
        stream
            .set_nonblocking(true)
            .map_err(io("setting up the side connection to"))?;
        let rx_stream = stream
            .try_clone()
            .map_err(io("setting up the side connection to"))?;
        let s = &self.settings;
        let retry_note = format!(
            "OXCCL_IB_RETRY_CNT={} retries of OXCCL_IB_TIMEOUT={} (4.096 µs × 2^{} each)",
            s.retry_cnt, s.timeout, s.timeout
        );
        let nqps = s.qps_per_connection as usize;
        tracing::debug!(%peer, port = %self.port.describe(), nqps, "verbs connection ready");
        let sender = IbSender {
            qps: self.send_qps,
            cq: self.send_cq,
            ring: self.send_ring,
            _credit_landing: self.credit_landing,
            remote: RemoteRing {
                ring_addr: theirs.ring_addr,
                ring_rkey: theirs.ring_rkey,
                header_addr: theirs.header_addr,
                header_rkey: theirs.header_rkey,
            },
            stream,
            peer: peer.clone(),
            slot_size: self.fifo.slot_size,
            nslots: self.fifo.nslots,
            max_send_wr: self.max_send_wr,
            committed: 0,
            credited: 0,
            outstanding: vec![VecDeque::new(); nqps],
            in_flight: vec![0; nqps],
            failed: None,
            retry_note: retry_note.clone(),
        };
        let receiver = IbReceiver {
            qps: self.recv_qps,
            cq: self.recv_cq,
            ring: self.recv_ring,
            headers: self.headers,
            credit: RemoteCredit {
                addr: theirs.credit_addr,
                rkey: theirs.credit_rkey,
            },
            stream: rx_stream,
            peer,
            slot_size: self.fifo.slot_size,
            nslots: self.fifo.nslots,
            head: 0,
            arrived: vec![false; self.fifo.nslots],
            credit_sent: 0,
            credit_in_flight: 0,
            max_send_wr: self.credit_wr,
            failed: None,
            retry_note,
        };
        Ok((sender, receiver))
    }
}

fn set_deadline(stream: &TcpStream, deadline: Instant, peer: &str) -> Result<()> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(std::time::Duration::from_millis(1));
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(left)))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| Error::io(format!("setting up the verbs connection to {peer}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_survive_the_wire_and_bad_ones_are_named() {
        let offer = Offer {
            nslots: 8,
            slot_size: 131072,
            roce: true,
            lid: 0,
            gid: [7; 16],
            mtu: 3,
            send_qps: vec![(17, 5), (18, 6)],
            credit_addr: 0x1000,
            credit_rkey: 9,
            recv_qps: vec![(19, 7), (20, 8)],
            ring_addr: 0x2000,
            ring_rkey: 10,
            header_addr: 0x3000,
            header_rkey: 11,
        };
        let bytes = offer.encode();
        assert_eq!(bytes.len(), Offer::encoded_len(2));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut b, _) = listener.accept().unwrap();
        a.write_all(&bytes).unwrap();
        assert_eq!(Offer::read(&mut b, "rank 1").unwrap(), offer);

        let mut bad = bytes.clone();
        bad[16..20].copy_from_slice(&99u32.to_le_bytes());
        a.write_all(&bad).unwrap();
        let e = Offer::read(&mut b, "rank 1").unwrap_err().to_string();
        assert!(e.contains("99 queue pairs") && e.contains("rank 1"), "{e}");
    }
}
