//! Registered regions against real /dev/shm.
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::shm::ShmContext;
use crate::FifoConfig;

fn unique_name(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "oxccl-test-region-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn pid() -> u32 {
    std::process::id()
}

fn exists(name: &str) -> bool {
    Path::new(&shm_path(name)).exists()
}

/// A file this test wrote into `/dev/shm` itself; removed on drop, even on panic.
struct RawFile(String);

impl RawFile {
    fn write(what: &str, bytes: &[u8]) -> Self {
        let name = unique_name(what);
        std::fs::write(shm_path(&name), bytes).unwrap();
        Self(name)
    }
}

impl Drop for RawFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(shm_path(&self.0));
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8 ^ salt)
        .collect()
}

#[test]
fn handles_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ShmRegion>();
    check::<PeerRegion>();
    check::<RegionAnchor>();
}

#[test]
fn peer_reads_what_the_owner_wrote() {
    for len in [1, 100, 4096, 4097, 3 * 4096 + 17] {
        let name = unique_name("rw");
        let mut region = ShmRegion::create(&name, len).unwrap();
        assert_eq!(
            (region.name(), region.len(), region.is_empty()),
            (&*name, len, false)
        );
        let data = region.data_mut();
        assert_eq!(data.len(), len);
        assert_eq!(data.as_ptr() as usize % 4096, 0, "data not page-aligned");
        assert!(data.iter().all(|&b| b == 0), "fresh region not zeroed");
        let bytes = pattern(len, 7);
        data.copy_from_slice(&bytes);
        assert_eq!(region.data(), &bytes[..]);
        let file_len = std::fs::metadata(shm_path(&name)).unwrap().len();
        assert_eq!(file_len as usize, 4096 + len.div_ceil(4096) * 4096);

        let peer = PeerRegion::open(&name, len, pid()).unwrap();
        assert_eq!(
            (peer.len(), peer.is_empty(), peer.name()),
            (len, false, &*name)
        );
        assert_eq!(peer.data().as_ptr() as usize % 4096, 0);
        assert_eq!(peer.data(), &bytes[..]);
        // Later writes show through the peer's (separate) mapping.
        region.data_mut()[len - 1] ^= 0xff;
        assert_eq!(peer.data()[len - 1], bytes[len - 1] ^ 0xff);
        // Readers on other threads.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(peer.data()[..len - 1], bytes[..len - 1]));
        });
        drop(region);
        assert!(!exists(&name));
    }
}

#[test]
fn empty_region() {
    let name = unique_name("empty");
    let mut region = ShmRegion::create(&name, 0).unwrap();
    assert!(region.is_empty());
    assert!(region.data().is_empty() && region.data_mut().is_empty());
    assert_eq!(std::fs::metadata(shm_path(&name)).unwrap().len(), 4096);
    let peer = PeerRegion::open(&name, 0, pid()).unwrap();
    assert!(peer.is_empty() && peer.data().is_empty());
    let anchor = region.anchor();
    assert!(anchor.addr_range().is_empty());
    assert_eq!(anchor.offset_of(region.data()), Some(0));
    assert_eq!(anchor.offset_of(&[1u8][..]), None);
    drop(region);
    assert!(!exists(&name));
}

#[test]
fn anchor_locates_slices_and_outlives_the_region() {
    let name = unique_name("anchor");
    let len = 2 * 4096 + 5;
    let mut region = ShmRegion::create(&name, len).unwrap();
    let bytes = pattern(len, 3);
    region.data_mut().copy_from_slice(&bytes);
    let anchor = region.anchor();
    let range = anchor.addr_range();
    assert_eq!(range.start, region.data().as_ptr() as usize);
    assert_eq!(range.len(), len);

    let data = region.data();
    assert_eq!(anchor.offset_of(data), Some(0));
    assert_eq!(anchor.offset_of(&data[100..200]), Some(100));
    assert_eq!(anchor.offset_of(&data[len - 1..]), Some(len - 1));
    assert_eq!(
        anchor.offset_of(&data[len..]),
        Some(len),
        "empty slice at the end"
    );
    assert_eq!(anchor.offset_of(&data[7..7]), Some(7), "empty slice inside");
    let elsewhere = vec![0u8; 64];
    assert_eq!(anchor.offset_of(&elsewhere), None);
    assert_eq!(anchor.offset_of(&elsewhere[..0]), None);
    let peer = PeerRegion::open(&name, len, pid()).unwrap();
    assert_eq!(
        anchor.offset_of(peer.data()),
        None,
        "another mapping is not the region"
    );

    let clone = anchor.clone();
    drop(anchor);
    drop(region);
    assert!(!exists(&name), "drop unlinks");
    // The anchor keeps the owner's mapping, so its addresses are still ours.
    assert_eq!(clone.addr_range(), range);
    // SAFETY: the test reads back through the anchor's range, which the anchor keeps
    // mapped (that is what is tested); nothing writes the region any more.
    let kept = unsafe { std::slice::from_raw_parts(range.start as *const u8, len) };
    assert_eq!(kept, &bytes[..]);
    assert_eq!(peer.data(), &bytes[..]);
    drop(clone);
    assert_eq!(peer.data(), &bytes[..], "the peer's mapping is its own");
}

#[test]
fn unlink_removes_the_name_and_later_opens_fail() {
    let name = unique_name("unlink");
    let mut region = ShmRegion::create(&name, 10).unwrap();
    region.data_mut().copy_from_slice(b"0123456789");
    let peer = PeerRegion::open(&name, 10, pid()).unwrap();
    assert!(exists(&name));
    region.unlink().unwrap();
    assert!(!exists(&name));
    region.unlink().unwrap(); // idempotent
    assert_eq!(peer.data(), b"0123456789", "mappings survive the unlink");
    region.data_mut()[0] = b'x';
    assert_eq!(peer.data()[0], b'x');
    let err = PeerRegion::open(&name, 10, pid()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&name) && msg.contains("unlinked"), "{msg}");
    drop(region);
    assert!(!exists(&name));
    // The same name can be created again once unlinked.
    let again = ShmRegion::create(&name, 1).unwrap();
    assert!(exists(&name));
    drop(again);
    assert!(!exists(&name));
}

#[test]
fn create_refuses_an_existing_name() {
    let name = unique_name("dup");
    let region = ShmRegion::create(&name, 8).unwrap();
    let err = ShmRegion::create(&name, 8).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(
        exists(&name),
        "the failed create must not remove the first's file"
    );
    drop(region);
    assert!(!exists(&name));
}

#[test]
fn wrong_length_is_rejected_naming_both() {
    let name = unique_name("len");
    let region = ShmRegion::create(&name, 5000).unwrap();
    // Same file size (both round to 2 pages) and a different one.
    for wrong in [5001, 100, 0, 4096 * 4] {
        let err = PeerRegion::open(&name, wrong, pid()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{msg}");
        assert!(
            msg.contains("5000") && msg.contains(&wrong.to_string()),
            "{msg}"
        );
    }
    drop(region);
    assert!(!exists(&name));
}

#[test]
fn wrong_owner_pid_is_rejected() {
    let name = unique_name("pid");
    let region = ShmRegion::create(&name, 16).unwrap();
    // Another live process: pid 1 (init) always exists in our PID namespace.
    let err = PeerRegion::open(&name, 16, 1).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{msg}");
    assert!(
        msg.contains("owner pid") && msg.contains(&pid().to_string()),
        "{msg}"
    );
    drop(region);
}

#[test]
fn files_that_are_not_regions_are_rejected() {
    // An inbox segment: right size class, wrong magic.
    let fifo = FifoConfig {
        slot_size: 256,
        nslots: 4,
    };
    let tag = format!("test-region-inbox-{}", pid());
    let ctx = ShmContext::create(&tag, 0, 1, 1, fifo, 0).unwrap();
    let err = PeerRegion::open(ctx.name(), 0, pid()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("not an oxccl region"), "{err}");
    drop(ctx);

    // Garbage of a region's size, garbage shorter than the header page, an empty file.
    for (what, bytes) in [
        ("garbage", vec![0xa5u8; 2 * 4096]),
        ("short", b"OXCCLREG".to_vec()),
        ("zero", Vec::new()),
    ] {
        let file = RawFile::write(what, &bytes);
        let err = PeerRegion::open(&file.0, 4096, pid()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{what}: {err}");
        assert!(
            err.to_string().contains("not an oxccl region"),
            "{what}: {err}"
        );
    }

    // A real header in a file cut short (as if truncated): the size check catches it.
    let name = unique_name("cut");
    let region = ShmRegion::create(&name, 3 * 4096).unwrap();
    let mut header = vec![0u8; 4096];
    File::open(shm_path(&name))
        .unwrap()
        .read_exact_at(&mut header, 0)
        .unwrap();
    drop(region);
    let file = RawFile::write("cut", &header);
    // The header names our pid and 3 pages.
    let err = PeerRegion::open(&file.0, 3 * 4096, pid()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn bad_names_and_lengths_are_rejected() {
    let long = format!("oxccl-{}", "a".repeat(200));
    for name in [
        "",
        "not-oxccl-x",
        "oxccl-a/b",
        "oxccl-../x",
        "oxccl-a b",
        "oxccl-é",
        long.as_str(),
    ] {
        let err = ShmRegion::create(name, 1).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{name:?}: {err}");
        let err = PeerRegion::open(name, 1, pid()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{name:?}: {err}");
    }
    let too_long = (MAX_REGION_LEN + 1) as usize;
    let err = ShmRegion::create(&unique_name("huge"), too_long).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = PeerRegion::open(&unique_name("huge"), too_long, pid()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    // The largest length passes the length check, but /dev/shm is rarely that large.
    if shm_free_bytes().is_some_and(|free| free < MAX_REGION_LEN + 4096) {
        let name = unique_name("nospace");
        let err = ShmRegion::create(&name, MAX_REGION_LEN as usize).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains("bytes free"), "{err}");
        assert!(!exists(&name));
    }
}

#[test]
fn dead_owner_is_peer_closed() {
    let name = unique_name("dead");
    let region = ShmRegion::create(&name, 64).unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap(); // reaped: the pid no longer names a process
    let err = PeerRegion::open(&name, 64, dead).unwrap_err();
    assert!(matches!(err, Error::PeerClosed { .. }), "{err}");
    assert!(err.to_string().contains(&dead.to_string()), "{err}");
    drop(region);
    assert!(!exists(&name));
}
