//! TCP transport tests over real loopback sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::layout::{encode_header, HANDSHAKE_VERSION, HELLO_LEN};
use super::*;
use crate::testutil::{messages, recv_all, recv_until_error, send_all, tag_of, TEST_DEADLINE};
use crate::{Error, FifoConfig, RecvChannel, SendChannel};

const KEY: [u8; 32] = [7; 32];
const FIFO: FifoConfig = FifoConfig {
    slot_size: 4096,
    nslots: 4,
};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn soon(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// An authenticated connection over loopback: (connector's stream, acceptor's stream).
pub(super) fn connected() -> (TcpStream, TcpStream) {
    let listener = Listener::bind(loopback()).unwrap();
    let addr = listener.local_addr();
    let client = std::thread::spawn(move || connect(addr, &KEY, b"rank 3", soon(30)).unwrap());
    let (server, payload, _) = listener.accept(&KEY, soon(30)).unwrap();
    assert_eq!(payload, b"rank 3");
    (client.join().unwrap(), server)
}

/// A plain (unauthenticated) loopback pair, to play a misbehaving peer.
fn raw_pair() -> (TcpStream, TcpStream) {
    let l = std::net::TcpListener::bind(loopback()).unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

#[test]
fn fifo_order_and_contents_both_ways_with_wraparound() {
    let (a, b) = connected();
    let (mut tx_a, mut rx_a) = channel_pair(a, "rank b".into(), FIFO).unwrap();
    let (mut tx_b, mut rx_b) = channel_pair(b, "rank a".into(), FIFO).unwrap();
    let n = 3000;
    let to_b = messages(n, FIFO.slot_size, 1);
    let to_a = messages(n, FIFO.slot_size, 2);
    let (sa, sb) = (to_b.clone(), to_a.clone());
    let threads = vec![
        std::thread::spawn(move || send_all(&mut tx_a, &sa, None)),
        std::thread::spawn(move || send_all(&mut tx_b, &sb, None)),
        std::thread::spawn(move || {
            assert_eq!(recv_all(&mut rx_b, n, None), to_b);
            // tx_a was dropped at the end of its thread: end of stream.
            let err = recv_until_error(&mut rx_b, None);
            assert!(matches!(err, Error::PeerClosed { .. }), "{err}");
            assert!(err.to_string().contains("rank a"), "{err}");
        }),
        std::thread::spawn(move || {
            assert_eq!(recv_all(&mut rx_a, n, None), to_a);
            let err = recv_until_error(&mut rx_a, None);
            assert!(matches!(err, Error::PeerClosed { .. }), "{err}");
        }),
    ];
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn large_slots_stream_through_a_full_socket() {
    let fifo = FifoConfig {
        slot_size: 1 << 20,
        nslots: 2,
    };
    let (a, b) = connected();
    let (mut tx, _rx_a) = channel_pair(a, "b".into(), fifo).unwrap();
    let (_tx_b, mut rx) = channel_pair(b, "a".into(), fifo).unwrap();
    let msgs = messages(40, fifo.slot_size, 3);
    let sent = msgs.clone();
    let t = std::thread::spawn(move || send_all(&mut tx, &sent, None));
    assert_eq!(recv_all(&mut rx, msgs.len(), None), msgs);
    t.join().unwrap();
}

#[test]
fn slot_reuse_and_misuse() {
    let (a, b) = connected();
    let (mut tx, _) = channel_pair(a, "b".into(), FIFO).unwrap();
    let (_, mut rx) = channel_pair(b, "a".into(), FIFO).unwrap();
    assert!(matches!(tx.commit(0, 1), Err(Error::Config(_))));
    assert!(matches!(rx.release(), Err(Error::Config(_))));
    let p1 = tx.try_acquire().unwrap().unwrap().as_ptr();
    let p2 = tx.try_acquire().unwrap().unwrap().as_ptr();
    assert_eq!(p1, p2, "acquire without commit returns the same slot");
    assert_eq!(p1 as usize % 8, 0);
    assert!(matches!(
        tx.commit(FIFO.slot_size + 1, 1),
        Err(Error::Config(_))
    ));
    tx.commit(FIFO.slot_size, tag_of(0)).unwrap();
    let got = recv_all(&mut rx, 1, None);
    assert_eq!(got[0].len(), FIFO.slot_size);
    assert!(tx.flushed());
    // Tags at the extremes of the u32 range, on empty and full messages, pass unchanged.
    for (len, tag) in [(0, 0), (FIFO.slot_size, u32::MAX), (5, 0x8000_0001)] {
        tx.try_acquire().unwrap().unwrap();
        tx.commit(len, tag).unwrap();
        let deadline = Instant::now() + TEST_DEADLINE;
        let msg = loop {
            if rx.try_peek().unwrap().is_some() {
                break rx.try_peek().unwrap().unwrap();
            }
            rx.progress().unwrap();
            tx.progress().unwrap();
            assert!(Instant::now() < deadline, "no message");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!((msg.data.len(), msg.tag), (len, tag));
        rx.release().unwrap();
    }
}

#[test]
fn wrong_key_is_rejected_and_accept_keeps_waiting() {
    let listener = Listener::bind(loopback()).unwrap();
    let addr = listener.local_addr();
    let acceptor = std::thread::spawn(move || listener.accept(&KEY, soon(30)));
    let err = connect(addr, &[8; 32], b"intruder", soon(30)).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let good = connect(addr, &KEY, b"friend", soon(30)).unwrap();
    let (_, payload, peer) = acceptor.join().unwrap().unwrap();
    assert_eq!(payload, b"friend");
    assert_eq!(peer, good.local_addr().unwrap());
}

#[test]
fn impostor_acceptor_is_detected() {
    let l = std::net::TcpListener::bind(loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    let impostor = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut hello = [0u8; HELLO_LEN];
        hello[..8].copy_from_slice(b"OXCCLTCP");
        hello[8..12].copy_from_slice(&HANDSHAKE_VERSION.to_le_bytes());
        s.write_all(&hello).unwrap();
        let mut answer = [0u8; 68];
        s.read_exact(&mut answer).unwrap();
        // Claims OK but cannot compute the MAC.
        let mut verdict = [0u8; 33];
        verdict[0] = 1;
        s.write_all(&verdict).unwrap();
    });
    let err = connect(addr, &KEY, b"", soon(30)).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    impostor.join().unwrap();
}

#[test]
fn oversized_or_garbage_handshakes_are_dropped() {
    assert!(matches!(
        connect(loopback(), &KEY, &[0; MAX_PAYLOAD + 1], soon(1)),
        Err(Error::Config(_))
    ));
    let listener = Listener::bind(loopback()).unwrap();
    let addr = listener.local_addr();
    let acceptor = std::thread::spawn(move || listener.accept(&KEY, soon(30)));
    // Claims a 1 GB payload.
    let mut s = TcpStream::connect(addr).unwrap();
    let mut hello = [0u8; HELLO_LEN];
    s.read_exact(&mut hello).unwrap();
    let mut answer = [0u8; 68];
    answer[64..].copy_from_slice(&(1u32 << 30).to_le_bytes());
    s.write_all(&answer).unwrap();
    // Hangs up mid-handshake.
    let mut s2 = TcpStream::connect(addr).unwrap();
    s2.read_exact(&mut hello).unwrap();
    drop(s2);
    let _good = connect(addr, &KEY, b"ok", soon(30)).unwrap();
    let (_, payload, _) = acceptor.join().unwrap().unwrap();
    assert_eq!(payload, b"ok");
}

#[test]
fn connect_times_out_naming_the_address() {
    let addr = Listener::bind(loopback()).unwrap().local_addr(); // closed again
    let start = Instant::now();
    let err = connect(addr, &KEY, b"", Instant::now() + Duration::from_millis(300)).unwrap_err();
    let waited = start.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[test]
fn accept_times_out() {
    let listener = Listener::bind(loopback()).unwrap();
    let err = listener
        .accept(&KEY, Instant::now() + Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains(&listener.local_addr().to_string()),
        "{err}"
    );
}

#[test]
fn bad_sequence_number_is_a_protocol_error() {
    let (mut c, s) = raw_pair();
    let (_tx, mut rx) = channel_pair(s, "liar".into(), FIFO).unwrap();
    c.write_all(&encode_header(1, 0, tag_of(0))).unwrap();
    c.write_all(b"x").unwrap();
    assert_eq!(recv_all(&mut rx, 1, None), vec![b"x".to_vec()]);
    c.write_all(&encode_header(0, 5, tag_of(1))).unwrap();
    let err = recv_until_error(&mut rx, None);
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("liar"), "{err}");
}

#[test]
fn header_is_len_seq_tag_little_endian() {
    let h = encode_header(0x0403_0201, 0x0807_0605, 0x0c0b_0a09);
    assert_eq!(h, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let d = super::layout::decode_header(&h);
    assert_eq!(
        (d.len, d.seq, d.tag),
        (0x0403_0201, 0x0807_0605, 0x0c0b_0a09)
    );
}

#[test]
fn oversized_length_is_a_protocol_error() {
    let (mut c, s) = raw_pair();
    let (_tx, mut rx) = channel_pair(s, "liar".into(), FIFO).unwrap();
    c.write_all(&encode_header(FIFO.slot_size as u32 + 1, 0, tag_of(0)))
        .unwrap();
    let err = recv_until_error(&mut rx, None);
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
}

#[test]
fn truncated_message_is_peer_closed() {
    let (mut c, s) = raw_pair();
    let (_tx, mut rx) = channel_pair(s, "quitter".into(), FIFO).unwrap();
    c.write_all(&encode_header(100, 0, tag_of(0))).unwrap();
    c.write_all(&[1; 10]).unwrap();
    drop(c);
    let err = recv_until_error(&mut rx, None);
    assert!(matches!(err, Error::PeerClosed { .. }), "{err}");
    assert!(err.to_string().contains("10 of 100"), "{err}");
}

#[test]
fn sender_sees_peer_closed_after_the_peer_goes() {
    let (a, b) = connected();
    let (mut tx, _rx) = channel_pair(a, "gone".into(), FIFO).unwrap();
    drop(b); // the peer closes both directions
    let deadline = Instant::now() + TEST_DEADLINE;
    let err = loop {
        let step = match tx.try_acquire() {
            Ok(Some(_)) => tx.commit(FIFO.slot_size, 1),
            Ok(None) => tx.progress().map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = step {
            break e;
        }
        assert!(Instant::now() < deadline, "no error");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(matches!(err, Error::PeerClosed { .. }), "{err}");
    assert!(err.to_string().contains("gone"), "{err}");
}

/// `cargo test -p oxccl-transports --release -- --ignored --nocapture throughput`
#[test]
#[ignore = "throughput smoke test; run in release"]
fn throughput_smoke() {
    let fifo = FifoConfig::default();
    let (a, b) = connected();
    let (tx, _rx_a) = channel_pair(a, "b".into(), fifo).unwrap();
    let (_tx_b, rx) = channel_pair(b, "a".into(), fifo).unwrap();
    let gbps = crate::testutil::throughput(tx, rx, 2 << 30, None, None);
    println!("tcp loopback: {gbps:.2} GB/s with {fifo:?}");
}
