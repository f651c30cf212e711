//! Shared-memory transport tests on real `/dev/shm` segments, with threads and one child
//! process.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::{FifoOffsets, Layout};
use super::*;
use crate::testutil::{messages, recv_all, recv_until_error, send_all, tag_of, TEST_DEADLINE};
use crate::{Error, FifoConfig, RecvChannel, SendChannel};

pub(super) const SMALL: FifoConfig = FifoConfig {
    slot_size: 256,
    nslots: 4,
};

pub(super) fn unique_tag(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "test-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub(super) fn pid() -> u32 {
    std::process::id()
}

/// Two ranks of one node in this process, mapped to each other.
fn pair(what: &str, nchannels: u32, fifo: FifoConfig) -> (ShmContext, ShmContext) {
    let tag = unique_tag(what);
    let mut a = ShmContext::create(&tag, 0, 2, nchannels, fifo, 0).unwrap();
    let mut b = ShmContext::create(&tag, 1, 2, nchannels, fifo, 0).unwrap();
    let (na, nb) = (a.name().to_owned(), b.name().to_owned());
    a.map_peer(1, &nb, pid()).unwrap();
    b.map_peer(0, &na, pid()).unwrap();
    (a, b)
}

pub(super) fn shm_file(name: &str) -> String {
    format!("/dev/shm/{name}")
}

#[test]
fn fifo_order_and_contents_both_ways_with_wraparound() {
    let fifo = FifoConfig {
        slot_size: 4096,
        nslots: 3,
    };
    let (a, b) = pair("roundtrip", 2, fifo);
    let n = 1500;
    let mut threads = Vec::new();
    let a = Arc::new(a);
    let b = Arc::new(b);
    for ch in 0..2u32 {
        for (from, to, salt) in [(&a, &b, 1u8), (&b, &a, 2u8)] {
            let salt = salt + 10 * ch as u8;
            let msgs = messages(n, fifo.slot_size, salt);
            let mut tx = from.sender(to.local_rank(), ch).unwrap();
            let mut rx = to.receiver(from.local_rank(), ch).unwrap();
            let (from, to) = (from.clone(), to.clone());
            let sent = msgs.clone();
            threads.push(std::thread::spawn(move || {
                send_all(&mut tx, &sent, Some(from.doorbell()));
            }));
            threads.push(std::thread::spawn(move || {
                let got = recv_all(&mut rx, n, Some(to.doorbell()));
                assert_eq!(got, msgs);
                // The sender thread finishes and drops its end: the receiver sees it.
                let err = recv_until_error(&mut rx, Some(to.doorbell()));
                assert!(matches!(err, Error::PeerClosed { .. }), "{err}");
                assert!(matches!(rx.check_alive(), Err(Error::PeerClosed { .. })));
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn smallest_fifo_and_exact_slot_sizes() {
    let fifo = FifoConfig {
        slot_size: 64,
        nslots: 2,
    };
    let (a, b) = pair("small", 1, fifo);
    let mut tx = a.sender(1, 0).unwrap();
    let mut rx = b.receiver(0, 0).unwrap();
    // Tags cover the whole u32 range, extremes included; slots are reused (wrap around).
    let tag = |round: u8, k: usize| match (round, k) {
        (0, 0) => 0,
        (0, _) => u32::MAX,
        _ => tag_of(2 * round as usize + k) ^ (u32::from(round) << 24),
    };
    for round in 0..10u8 {
        for (k, len) in [0usize, 64].into_iter().enumerate() {
            let slot = tx.try_acquire().unwrap().unwrap();
            assert_eq!(slot.len(), 64);
            assert_eq!(slot.as_ptr() as usize % 64, 0);
            slot[..len].fill(round);
            tx.commit(len, tag(round, k)).unwrap();
        }
        // Both slots in flight: no third.
        assert!(tx.try_acquire().unwrap().is_none());
        for (k, len) in [0usize, 64].into_iter().enumerate() {
            let msg = rx.try_peek().unwrap().unwrap();
            assert_eq!(msg.data, vec![round; len].as_slice());
            assert_eq!(msg.tag, tag(round, k));
            // Peeking twice gives the same message.
            let again = rx.try_peek().unwrap().unwrap();
            assert_eq!((again.data.len(), again.tag), (len, tag(round, k)));
            rx.release().unwrap();
        }
        assert!(rx.try_peek().unwrap().is_none());
    }
    // Misuse is an error, not a panic.
    assert!(matches!(rx.release(), Err(Error::Config(_))));
    assert!(matches!(tx.commit(0, 1), Err(Error::Config(_))));
    tx.try_acquire().unwrap().unwrap();
    assert!(matches!(tx.commit(65, 1), Err(Error::Config(_))));
}

#[test]
fn unlink_removes_the_segment_and_mappings_survive() {
    let (mut a, b) = pair("unlink", 1, SMALL);
    let name_a = a.name().to_owned();
    let name_b = b.name().to_owned();
    assert!(Path::new(&shm_file(&name_a)).exists());
    let mut tx = b.sender(0, 0).unwrap();
    let mut rx = a.receiver(1, 0).unwrap();
    a.unlink().unwrap();
    assert!(!Path::new(&shm_file(&name_a)).exists());
    a.unlink().unwrap(); // idempotent
                         // Still works through the existing mappings.
    tx.try_acquire().unwrap().unwrap()[..3].copy_from_slice(b"abc");
    tx.commit(3, 42).unwrap();
    let msg = rx.try_peek().unwrap().unwrap();
    assert_eq!((msg.data, msg.tag), (&b"abc"[..], 42));
    rx.release().unwrap();
    // Drop unlinks too.
    assert!(Path::new(&shm_file(&name_b)).exists());
    drop(b);
    assert!(!Path::new(&shm_file(&name_b)).exists());
    // A mapping kept by a channel end outlives its context.
    drop(a);
    tx.try_acquire().unwrap().unwrap();
    tx.commit(0, 43).unwrap();
}

#[test]
fn receiver_drop_closes_for_the_sender() {
    let (a, b) = pair("rxdrop", 1, SMALL);
    let mut tx = a.sender(1, 0).unwrap();
    let rx = b.receiver(0, 0).unwrap();
    tx.check_alive().unwrap();
    let seen = a.doorbell().seq();
    drop(rx);
    assert_ne!(
        a.doorbell().seq(),
        seen,
        "dropping a receiver rings the sender"
    );
    assert!(matches!(tx.try_acquire(), Err(Error::PeerClosed { .. })));
    assert!(matches!(tx.check_alive(), Err(Error::PeerClosed { .. })));
}

#[test]
fn messages_committed_before_close_are_delivered() {
    let (a, b) = pair("drain", 1, SMALL);
    let mut tx = a.sender(1, 0).unwrap();
    let mut rx = b.receiver(0, 0).unwrap();
    for i in 0..3u8 {
        tx.try_acquire().unwrap().unwrap()[0] = i;
        tx.commit(1, tag_of(i.into())).unwrap();
    }
    drop(tx);
    rx.check_alive().unwrap(); // messages left: not closed yet
    for i in 0..3u8 {
        let msg = rx.try_peek().unwrap().unwrap();
        assert_eq!((msg.data, msg.tag), (&[i][..], tag_of(i.into())));
        rx.release().unwrap();
    }
    assert!(matches!(rx.try_peek(), Err(Error::PeerClosed { .. })));
}

#[test]
fn corrupt_shared_memory_gives_protocol_errors() {
    let (a, b) = pair("corrupt", 1, SMALL);
    let layout = Layout::new(2, 1, SMALL, 0).unwrap();
    // FIFO from rank 0 to rank 1 lives in rank 1's inbox at index 0 * 1 + 0.
    let off = FifoOffsets::new(&layout, 0);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_file(b.name()))
        .unwrap();
    let mut tx = a.sender(1, 0).unwrap();
    let mut rx = b.receiver(0, 0).unwrap();
    tx.try_acquire().unwrap().unwrap();
    tx.commit(10, 0xdead_beef).unwrap();

    // A length beyond the slot.
    file.write_at(&u32::MAX.to_le_bytes(), off.len(0) as u64)
        .unwrap();
    let err = rx.try_peek().unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("exceeds the slot size"), "{err}");
    file.write_at(&257u32.to_le_bytes(), off.len(0) as u64)
        .unwrap();
    assert!(matches!(rx.try_peek(), Err(Error::Protocol { .. })));
    file.write_at(&256u32.to_le_bytes(), off.len(0) as u64)
        .unwrap();
    let msg = rx.try_peek().unwrap().unwrap();
    assert_eq!((msg.data.len(), msg.tag), (256, 0xdead_beef));
    // The tag sits in shared memory right after the length; any value is passed on as is.
    file.write_at(&7u32.to_le_bytes(), off.tag(0) as u64)
        .unwrap();
    assert_eq!(rx.try_peek().unwrap().unwrap().tag, 7);

    // A tail far ahead of the head (more than nslots) or behind it.
    file.write_at(&1000u64.to_le_bytes(), off.tail as u64)
        .unwrap();
    assert!(matches!(rx.try_peek(), Err(Error::Protocol { .. })));
    file.write_at(&1u64.to_le_bytes(), off.tail as u64).unwrap();
    rx.release().unwrap();
    file.write_at(&0u64.to_le_bytes(), off.tail as u64).unwrap();
    assert!(matches!(rx.try_peek(), Err(Error::Protocol { .. })));

    // A head beyond the sender's tail.
    file.write_at(&u64::MAX.to_le_bytes(), off.head as u64)
        .unwrap();
    assert!(matches!(tx.try_acquire(), Err(Error::Protocol { .. })));
}

#[test]
fn slot_lengths_and_tags_fit_before_the_slots() {
    for nslots in [2, 3, 4, 511, 512, 513, FifoConfig::MAX_NSLOTS] {
        let fifo = FifoConfig {
            slot_size: 64,
            nslots,
        };
        let layout = Layout::new(2, 1, fifo, 0).unwrap();
        let last = nslots - 1;
        assert_eq!(Layout::tag_offset(last), Layout::len_offset(last) + 4);
        assert!(
            Layout::tag_offset(last) + 4 <= layout.slot_offset(0),
            "{nslots}"
        );
        assert!(
            Layout::len_offset(0) >= 3 * 64,
            "meta after tail, head, closed"
        );
    }
}

#[test]
fn setup_errors_are_clear() {
    let tag = unique_tag("setup");
    assert!(matches!(
        ShmContext::create("bad/tag", 0, 2, 1, SMALL, 0),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        ShmContext::create("", 0, 2, 1, SMALL, 0),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        ShmContext::create(&"x".repeat(250), 0, 2, 1, SMALL, 0),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        ShmContext::create(&tag, 2, 2, 1, SMALL, 0),
        Err(Error::Config(_))
    ));
    let bad_fifo = FifoConfig {
        slot_size: 100,
        nslots: 4,
    };
    assert!(matches!(
        ShmContext::create(&tag, 0, 2, 1, bad_fifo, 0),
        Err(Error::Config(_))
    ));

    let mut a = ShmContext::create(&tag, 0, 2, 1, SMALL, 0).unwrap();
    // Same name twice: O_EXCL.
    let err = ShmContext::create(&tag, 0, 2, 1, SMALL, 0).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // Peer with other sizes.
    let other = FifoConfig {
        slot_size: 512,
        nslots: 4,
    };
    let b = ShmContext::create(&tag, 1, 2, 1, other, 0).unwrap();
    let err = a.map_peer(1, b.name(), pid()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("expected"), "{err}");
    drop(b);
    // Other agreement on sizes but another owner pid.
    let b = ShmContext::create(&tag, 1, 2, 1, SMALL, 0).unwrap();
    let err = a.map_peer(1, b.name(), 1).unwrap_err();
    assert!(err.to_string().contains("owner pid"), "{err}");
    // Missing segment, invalid names, out-of-range ranks.
    assert!(matches!(
        a.map_peer(1, "oxccl-does-not-exist", pid()),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        a.map_peer(1, "../etc/passwd", pid()),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        a.map_peer(1, "not-oxccl", pid()),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        a.map_peer(5, b.name(), pid()),
        Err(Error::Config(_))
    ));
    // Channels before mapping, out of range, twice.
    assert!(matches!(a.sender(1, 0), Err(Error::Config(_))));
    a.map_peer(1, b.name(), pid()).unwrap();
    assert!(matches!(
        a.map_peer(1, b.name(), pid()),
        Err(Error::Config(_))
    ));
    assert!(matches!(a.sender(1, 1), Err(Error::Config(_))));
    let _tx = a.sender(1, 0).unwrap();
    assert!(matches!(a.sender(1, 0), Err(Error::Config(_))));
    let _rx = a.receiver(1, 0).unwrap();
    assert!(matches!(a.receiver(1, 0), Err(Error::Config(_))));
}

#[test]
fn sender_wait_is_woken_by_release() {
    let (a, b) = pair("wake", 1, SMALL);
    let a = Arc::new(a);
    let mut tx = a.sender(1, 0).unwrap();
    let mut rx = b.receiver(0, 0).unwrap();
    for i in 0..SMALL.nslots {
        tx.try_acquire().unwrap().unwrap();
        tx.commit(0, tag_of(i)).unwrap();
    }
    let seen = a.doorbell().seq();
    assert!(tx.try_acquire().unwrap().is_none());
    let a2 = a.clone();
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        crate::wait::wait_any(
            Some(a2.doorbell()),
            seen,
            &[tx.wait_source()],
            Duration::from_secs(30),
        )
        .unwrap();
        (start.elapsed(), tx.try_acquire().unwrap().is_some())
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rx.try_peek().unwrap().unwrap().tag, tag_of(0));
    rx.release().unwrap();
    let (waited, free) = waiter.join().unwrap();
    assert!(waited < Duration::from_secs(20));
    assert!(free);
}

const CHILD_ENV: &str = "OXCCL_SHM_TEST_CHILD";
const CHILD_MESSAGES: usize = 200;

/// The child's side of [`check_alive_detects_a_dead_child_process`]: rank 1 sends to the
/// parent, then exits without closing anything (like a crash).
fn child_main(spec: &str) {
    let (tag, parent) = spec.split_once(':').expect("spec");
    let parent: u32 = parent.parse().expect("parent pid");
    let mut ctx = ShmContext::create(tag, 1, 2, 1, SMALL, 0).unwrap();
    ctx.map_peer(0, &format!("oxccl-{tag}-0"), parent).unwrap();
    let mut tx = ctx.sender(0, 0).unwrap();
    send_all(
        &mut tx,
        &messages(CHILD_MESSAGES, SMALL.slot_size, 7),
        Some(ctx.doorbell()),
    );
    // No destructors: the FIFO is never marked closed, the segment never unlinked.
    std::process::exit(0);
}

#[test]
fn check_alive_detects_a_dead_child_process() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let tag = unique_tag("child");
    let mut ctx = ShmContext::create(&tag, 0, 2, 1, SMALL, 0).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shm::tests::check_alive_detects_a_dead_child_process",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, format!("{tag}:{}", pid()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child_name = format!("oxccl-{tag}-1");
    let deadline = Instant::now() + TEST_DEADLINE;
    // The child publishes its segment when it is ready; until then mapping fails.
    while let Err(e) = ctx.map_peer(1, &child_name, child.id()) {
        assert!(Instant::now() < deadline, "child never came up: {e}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut rx = ctx.receiver(1, 0).unwrap();
    let got = recv_all(&mut rx, CHILD_MESSAGES, Some(ctx.doorbell()));
    assert_eq!(got, messages(CHILD_MESSAGES, SMALL.slot_size, 7));

    // The child exits without closing the FIFO: only its process state tells.
    let err = loop {
        match rx.check_alive() {
            Err(e) => break e,
            Ok(()) => {
                assert!(Instant::now() < deadline, "dead child not detected");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    assert!(matches!(err, Error::PeerClosed { .. }), "{err}");
    assert!(err.to_string().contains(&child.id().to_string()), "{err}");
    assert!(child.wait().unwrap().success());
    // Reaped: gone entirely.
    assert!(matches!(rx.check_alive(), Err(Error::PeerClosed { .. })));
    assert!(rx.try_peek().unwrap().is_none());
    let _ = std::fs::remove_file(shm_file(&child_name));
}

#[test]
fn context_and_channel_ends_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<ShmContext>();
    send::<ShmSender>();
    send::<ShmReceiver>();
}

/// `cargo test -p oxccl-transports --release -- --ignored --nocapture throughput`
#[test]
#[ignore = "throughput smoke test; run in release"]
fn throughput_smoke() {
    let fifo = FifoConfig::default();
    let (a, b) = pair("bench", 1, fifo);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let tx = a.sender(1, 0).unwrap();
    let rx = b.receiver(0, 0).unwrap();
    let gbps = crate::testutil::throughput(tx, rx, 4 << 30, Some(a), Some(b));
    println!("shm: {gbps:.2} GB/s with {fifo:?}");
}

// ---- The window (window.rs) ----
