//! Helpers shared by the transport tests: message sets and blocking send/receive loops
//! built on the non-blocking channel calls, the way the engine drives them.

use std::time::{Duration, Instant};

use crate::wait::{wait_any, Doorbell};
use crate::{RecvChannel, SendChannel};

/// How long a test loop may wait before it fails.
pub(crate) const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// `n` messages of varying lengths (0, `slot_size`, small, odd, large) with contents that
/// depend on the message index and a `salt`.
pub(crate) fn messages(n: usize, slot_size: usize, salt: u8) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(salt);
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = match i % 7 {
                0 => 0,
                1 => slot_size,
                2 => 1,
                3 => 7,
                4 => slot_size - 1,
                _ => (x >> 33) as usize % (slot_size + 1),
            };
            (0..len)
                .map(|j| (i as u8).wrapping_mul(31) ^ (j as u8) ^ salt)
                .collect()
        })
        .collect()
}

/// The tag the test helpers give message `i` of a stream.
pub(crate) fn tag_of(i: usize) -> u32 {
    (i as u32).wrapping_mul(7).wrapping_add(1)
}

/// Sends every message in order, message `i` tagged [`tag_of`]`(i)`, waiting the engine's
/// way, then flushes.
pub(crate) fn send_all<S: SendChannel>(tx: &mut S, msgs: &[Vec<u8>], bell: Option<&Doorbell>) {
    let deadline = Instant::now() + TEST_DEADLINE;
    for (i, m) in msgs.iter().enumerate() {
        loop {
            let seen = bell.map_or(0, Doorbell::seq);
            if let Some(slot) = tx.try_acquire().expect("try_acquire") {
                slot[..m.len()].copy_from_slice(m);
                tx.commit(m.len(), tag_of(i)).expect("commit");
                break;
            }
            if tx.progress().expect("progress") {
                continue;
            }
            assert!(Instant::now() < deadline, "send timed out");
            wait_any(bell, seen, &[tx.wait_source()], Duration::from_millis(20)).unwrap();
        }
    }
    while !tx.flushed() {
        let seen = bell.map_or(0, Doorbell::seq);
        if !tx.progress().expect("progress") {
            assert!(Instant::now() < deadline, "flush timed out");
            wait_any(bell, seen, &[tx.wait_source()], Duration::from_millis(20)).unwrap();
        }
    }
}

/// Receives `n` messages, waiting the engine's way; asserts that message `i` carries
/// [`tag_of`]`(i)`, as [`send_all`] tags them.
pub(crate) fn recv_all<R: RecvChannel>(
    rx: &mut R,
    n: usize,
    bell: Option<&Doorbell>,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + TEST_DEADLINE;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let seen = bell.map_or(0, Doorbell::seq);
        if let Some(msg) = rx.try_peek().expect("try_peek") {
            assert_eq!(
                msg.data.as_ptr() as usize % 8,
                0,
                "message not 8-byte aligned"
            );
            assert_eq!(msg.tag, tag_of(out.len()), "tag of message {}", out.len());
            out.push(msg.data.to_vec());
            rx.release().expect("release");
            continue;
        }
        if rx.progress().expect("progress") {
            continue;
        }
        assert!(Instant::now() < deadline, "receive timed out");
        wait_any(bell, seen, &[rx.wait_source()], Duration::from_millis(20)).unwrap();
    }
    out
}

/// Polls until the receiver reports an error (expected: the peer closed), and returns it.
pub(crate) fn recv_until_error<R: RecvChannel>(
    rx: &mut R,
    bell: Option<&Doorbell>,
) -> crate::Error {
    let deadline = Instant::now() + TEST_DEADLINE;
    loop {
        let seen = bell.map_or(0, Doorbell::seq);
        match rx.try_peek() {
            Err(e) => return e,
            Ok(Some(_)) => panic!("unexpected message"),
            Ok(None) => {}
        }
        if let Err(e) = rx.progress() {
            return e;
        }
        assert!(Instant::now() < deadline, "no error before the deadline");
        wait_any(bell, seen, &[rx.wait_source()], Duration::from_millis(20)).unwrap();
    }
}

/// Streams `total` bytes in full slots from `tx` to `rx` (copying in and out, as the engine
/// does) on two threads; returns the rate in GB/s. For the ignored throughput smoke tests.
pub(crate) fn throughput<S, R>(
    mut tx: S,
    mut rx: R,
    total: usize,
    tx_ctx: Option<std::sync::Arc<crate::shm::ShmContext>>,
    rx_ctx: Option<std::sync::Arc<crate::shm::ShmContext>>,
) -> f64
where
    S: SendChannel + 'static,
    R: RecvChannel + 'static,
{
    let slot = tx.slot_size();
    let n = total / slot;
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        let src = vec![1u8; slot];
        let bell = tx_ctx.as_deref().map(crate::shm::ShmContext::doorbell);
        let mut sent = 0;
        while sent < n {
            let seen = bell.map_or(0, Doorbell::seq);
            if let Some(buf) = tx.try_acquire().unwrap() {
                buf.copy_from_slice(&src);
                tx.commit(slot, tag_of(sent)).unwrap();
                sent += 1;
            } else if !tx.progress().unwrap() {
                wait_any(bell, seen, &[tx.wait_source()], Duration::from_millis(20)).unwrap();
            }
        }
        while !tx.flushed() {
            if !tx.progress().unwrap() {
                wait_any(None, 0, &[tx.wait_source()], Duration::from_millis(20)).unwrap();
            }
        }
        tx
    });
    let bell = rx_ctx.as_deref().map(crate::shm::ShmContext::doorbell);
    let mut dst = vec![0u8; slot];
    let mut got = 0;
    while got < n {
        let seen = bell.map_or(0, Doorbell::seq);
        if let Some(msg) = rx.try_peek().unwrap() {
            assert_eq!(msg.tag, tag_of(got));
            dst[..msg.data.len()].copy_from_slice(msg.data);
            rx.release().unwrap();
            got += 1;
        } else if !rx.progress().unwrap() {
            wait_any(bell, seen, &[rx.wait_source()], Duration::from_millis(20)).unwrap();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(sender.join().unwrap());
    (n * slot) as f64 / secs / 1e9
}
