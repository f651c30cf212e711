//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and their replay test. Each
//! feeds arbitrary bytes, as a peer would send them, to one decoder of a wire message; the
//! decoder must answer with a value or an error: never a panic, a hang or an allocation
//! beyond its bounds. Not part of the API.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::tcp::channel_pair;
use crate::{Direct, FifoConfig, RecvChannel};

/// Inputs beyond this are cut (a loopback socket buffers them without a reader).
const MAX_INPUT: usize = 32 << 10;
const KEY: [u8; 32] = [0x5a; 32];

fn loopback_pair() -> Option<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").ok()?;
    let c = TcpStream::connect(l.local_addr().ok()?).ok()?;
    let (s, _) = l.accept().ok()?;
    Some((c, s))
}

/// The bytes of an established data connection: message headers and payloads, read through
/// the slots and (when the first byte is odd) straight into a caller's buffer.
pub fn tcp_stream(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    let Some((mut peer, mine)) = loopback_pair() else {
        return;
    };
    if peer.write_all(data).is_err() || peer.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let fifo = FifoConfig {
        slot_size: 256,
        nslots: 2,
    };
    let Ok((_tx, mut rx)) = channel_pair(mine, "fuzz peer".into(), fifo) else {
        return;
    };
    let direct = data.first().is_some_and(|b| b & 1 == 1);
    let want = data.get(1).map_or(0, |&b| usize::from(b));
    let mut buf = vec![0u8; want];
    // Every call either moves bytes or reports; the input is finite, so this ends.
    for _ in 0..(4 * MAX_INPUT) {
        if direct {
            match rx.recv_direct(&mut buf, 0) {
                Ok(Direct::Done) | Ok(Direct::Moved) => continue,
                Ok(Direct::Waiting) => std::thread::sleep(Duration::from_micros(50)),
                Ok(Direct::Slot) => {}
                Err(_) => return,
            }
        }
        match rx.try_peek() {
            Ok(Some(m)) => {
                assert!(
                    m.data.len() <= fifo.slot_size,
                    "a message longer than a slot"
                );
                let _ = rx.release();
            }
            Ok(None) => match rx.progress() {
                Ok(false) => std::thread::sleep(Duration::from_micros(50)),
                Ok(true) => {}
                Err(_) => return,
            },
            Err(_) => return,
        }
    }
    panic!("the receiver neither ended nor failed on a finite input");
}

/// What a stranger sends to an oxccl listener (data, root or control): the acceptor's side
/// of the handshake.
pub fn acceptor_handshake(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    let Some((mut peer, mine)) = loopback_pair() else {
        return;
    };
    if peer.write_all(data).is_err() || peer.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let from: SocketAddr = "127.0.0.1:9".parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(5);
    if crate::tcp::connect::accept_handshake(&mine, from, &KEY, deadline).is_ok() {
        panic!("a handshake without the key was accepted");
    }
}

/// What an impostor listener answers to an oxccl rank that connects: the connector's side.
pub fn connector_handshake(data: &[u8]) {
    let data = data[..data.len().min(MAX_INPUT)].to_vec();
    let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
        return;
    };
    let Ok(addr) = l.local_addr() else {
        return;
    };
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(&data);
            let _ = s.shutdown(Shutdown::Write);
            // Keep the socket open until the connector gave up reading.
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut sink);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = crate::tcp::connect::connect_once(addr, &KEY, b"fuzz", deadline);
    assert!(r.is_err(), "an impostor without the key was accepted");
    drop(r);
    let _ = server.join();
}
