//! The peer-readable window: layout, posting, epochs, setup errors.

use super::layout::Layout;
use super::tests::{pid, shm_file, unique_tag, SMALL};
use super::*;
use crate::testutil::TEST_DEADLINE;
use crate::Error;
use std::path::Path;
use std::time::{Duration, Instant};

/// `n` ranks of one node in this process, each with a window of `window_len` bytes per half,
/// all mapped to each other.
fn ranks(what: &str, n: u32, window_len: usize) -> Vec<ShmContext> {
    let tag = unique_tag(what);
    let mut ctxs: Vec<ShmContext> = (0..n)
        .map(|r| ShmContext::create(&tag, r, n, 1, SMALL, window_len).unwrap())
        .collect();
    let names: Vec<String> = ctxs.iter().map(|c| c.name().to_owned()).collect();
    for ctx in &mut ctxs {
        for (peer, name) in names.iter().enumerate() {
            ctx.map_peer(peer as u32, name, pid()).unwrap();
        }
    }
    ctxs
}

#[test]
fn window_layout_follows_the_fifos_without_overlap() {
    for nlocal in [1u32, 2, 3, 8, 70] {
        for nchannels in [1u32, 3] {
            for window_len in [1usize, 100, 4096, 4097, 100_000] {
                let layout = Layout::new(nlocal, nchannels, SMALL, window_len).unwrap();
                let plain = Layout::new(nlocal, nchannels, SMALL, 0).unwrap();
                assert!(!plain.has_window() && layout.has_window());
                let nfifos = nlocal as usize * nchannels as usize;
                let fifos_end = layout.fifo_offset(nfifos - 1) + layout.slot_offset(SMALL.nslots);
                let ctx = format!("{nlocal} x {nchannels}, window {window_len}");
                // The control area: after the FIFOs, page-aligned, lines in order.
                let win = layout.window_offset();
                assert_eq!(win, plain.total_len, "{ctx}");
                assert!(fifos_end <= win, "{ctx}");
                assert_eq!(win % 4096, 0, "{ctx}");
                assert_eq!(layout.posted_offset(0), win, "{ctx}");
                assert_eq!(layout.posted_offset(1), win + 64, "{ctx}");
                for half in 0..2 {
                    assert_eq!(layout.inline_offset(half), layout.posted_offset(half) + 8);
                    assert_eq!(
                        layout.inline_offset(half) + INLINE_LEN,
                        layout.posted_offset(half) + 64
                    );
                    // Other values fold onto 0 and 1.
                    assert_eq!(layout.half_offset(half + 2), layout.half_offset(half));
                }
                assert_eq!(layout.done_offset(0), win + 128, "{ctx}");
                for r in 1..nlocal {
                    assert_eq!(layout.done_offset(r), layout.done_offset(r - 1) + 64);
                }
                // The halves: page-aligned, after the control area, up to the end.
                let half_len = window_len.div_ceil(4096) * 4096;
                assert_eq!(layout.half_len, half_len, "{ctx}");
                assert_eq!(layout.window_len, window_len, "{ctx}");
                assert!(layout.done_offset(nlocal - 1) + 64 <= layout.half_offset(0));
                assert_eq!(layout.half_offset(0) % 4096, 0, "{ctx}");
                assert_eq!(layout.half_offset(1), layout.half_offset(0) + half_len);
                assert_eq!(layout.half_offset(1) + half_len, layout.total_len, "{ctx}");
                // Everything past the header page and the peers' FIFOs is touched.
                let ctrl = (layout.half_offset(0) - win) as u64;
                assert_eq!(
                    layout.touched_len(),
                    plain.touched_len() + ctrl + 2 * half_len as u64,
                    "{ctx}"
                );
            }
        }
    }
    assert_eq!(
        Layout::new(2, 1, SMALL, MAX_WINDOW_LEN).unwrap().half_len,
        MAX_WINDOW_LEN
    );
    let err = Layout::new(2, 1, SMALL, MAX_WINDOW_LEN + 1).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(
        err.to_string().contains(&(MAX_WINDOW_LEN + 1).to_string()),
        "{err}"
    );
    assert!(matches!(
        Layout::new(2, 1, SMALL, usize::MAX),
        Err(Error::Config(_))
    ));
}

#[test]
fn window_post_is_seen_by_peers_with_bytes_and_inline() {
    let ctxs = ranks("winpost", 3, 5000);
    let mut wins: Vec<ShmWindow> = ctxs.iter().map(|c| c.window().unwrap()).collect();
    for (r, w) in wins.iter().enumerate() {
        assert_eq!(
            (w.local_rank(), w.nlocal(), w.half_len()),
            (r as u32, 3, 8192)
        );
        assert!(format!("{w:?}").contains("ShmWindow"));
        for peer in 0..3 {
            for half in 0..2 {
                assert_eq!(w.posted(peer, half).unwrap(), 0);
            }
            assert_eq!(w.acked(peer).unwrap(), 0);
            w.check_alive(peer).unwrap();
        }
    }

    // Rank 0 fills half 1 and its inline bytes, then posts.
    let own = wins[0].own_mut(1);
    assert_eq!(own.len(), 8192);
    assert_eq!(own.as_ptr() as usize % 4096, 0);
    for (i, b) in own.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let inline = wins[0].own_inline_mut(1);
    assert_eq!(inline.len(), INLINE_LEN);
    assert_eq!(inline.as_ptr() as usize % 8, 0);
    inline.copy_from_slice(&[0xab; INLINE_LEN]);
    let seen: Vec<u32> = ctxs.iter().map(|c| c.doorbell().seq()).collect();
    wins[0].post(1, 7);
    assert_eq!(ctxs[0].doorbell().seq(), seen[0], "post rings peers only");
    for r in 1..3 {
        assert_ne!(ctxs[r].doorbell().seq(), seen[r], "post rings rank {r}");
        let w = &wins[r];
        assert_eq!(w.posted(0, 1).unwrap(), 7);
        assert_eq!(w.posted(0, 3).unwrap(), 7, "half & 1");
        assert_eq!(w.posted(0, 0).unwrap(), 0);
        let data = w.peer(0, 1).unwrap();
        assert_eq!(data.len(), 8192);
        assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        assert_eq!(w.peer_inline(0, 1).unwrap(), &[0xab; INLINE_LEN][..]);
        assert!(w.peer(0, 0).unwrap().iter().all(|&b| b == 0));
    }
    // The owner sees its own half through `peer` too.
    assert_eq!(wins[0].peer(0, 1).unwrap()[250], 250);
    assert_eq!(wins[0].peer_inline(0, 1).unwrap()[0], 0xab);
    assert_eq!(wins[0].posted(0, 1).unwrap(), 7);

    // Readers ack; the owner sees each ack in its own segment, and is rung.
    let seen0 = ctxs[0].doorbell().seq();
    wins[1].ack(0, 7).unwrap();
    assert_ne!(ctxs[0].doorbell().seq(), seen0, "ack rings the owner");
    assert_eq!(wins[0].acked(1).unwrap(), 7);
    assert_eq!(wins[0].acked(2).unwrap(), 0);
    wins[2].ack(0, 5).unwrap();
    assert_eq!(wins[0].acked(2).unwrap(), 5);
    // Acks land in the owner's done line for the acking rank only.
    assert_eq!(wins[1].acked(2).unwrap(), 0);
    assert_eq!(wins[2].acked(1).unwrap(), 0);

    // Rank 1 reduces the peers' halves 1 straight into its own.
    wins[2].own_mut(1).fill(1);
    wins[2].own_inline_mut(1).fill(2);
    wins[2].post(1, 1);
    let (own, peers) = wins[1].split_mut(1);
    assert_eq!(peers.half(), 1);
    assert!(matches!(peers.get(1), Err(Error::Config(_))));
    assert!(matches!(peers.get(3), Err(Error::Config(_))));
    let (p0, p2) = (peers.get(0).unwrap(), peers.get(2).unwrap());
    for (i, b) in own.iter_mut().enumerate() {
        *b = p0[i].wrapping_add(p2[i]);
    }
    let (own_inline, peers) = wins[1].split_inline_mut(1);
    assert!(matches!(peers.get(1), Err(Error::Config(_))));
    own_inline.copy_from_slice(peers.get(0).unwrap());
    assert_eq!(peers.get(2).unwrap(), &[2; INLINE_LEN][..]);
    wins[1].post(1, 1);
    assert_eq!(wins[0].posted(1, 1).unwrap(), 1);
    assert_eq!(wins[0].peer(1, 1).unwrap()[100], 101);
    assert_eq!(wins[2].peer_inline(1, 1).unwrap(), &[0xab; INLINE_LEN][..]);

    // Out-of-range ranks are errors, not panics.
    let w = &wins[0];
    assert!(matches!(w.peer(3, 0), Err(Error::Config(_))));
    assert!(matches!(w.peer_inline(3, 0), Err(Error::Config(_))));
    assert!(matches!(w.posted(3, 0), Err(Error::Config(_))));
    assert!(matches!(w.ack(3, 1), Err(Error::Config(_))));
    assert!(matches!(w.acked(3), Err(Error::Config(_))));
    assert!(matches!(w.check_alive(3), Err(Error::Config(_))));

    // The windows keep the segments mapped after the contexts (which unlink them) are gone.
    let names: Vec<String> = ctxs.iter().map(|c| shm_file(c.name())).collect();
    drop(ctxs);
    assert!(names.iter().all(|n| !Path::new(n).exists()));
    assert_eq!(wins[2].peer(1, 1).unwrap()[100], 101);
}

#[test]
fn window_epochs_alternate_halves_across_threads() {
    const EPOCHS: u64 = 200;
    let ctxs = ranks("winepochs", 2, 4096);
    let mut owner = ctxs[0].window().unwrap();
    let reader = ctxs[1].window().unwrap();
    let fill = |e: u64| (e as u8).wrapping_mul(37);
    let reader = std::thread::spawn(move || {
        let deadline = Instant::now() + TEST_DEADLINE;
        let mut sum = 0u64;
        for e in 1..=EPOCHS {
            let half = (e % 2) as usize;
            loop {
                let seen = reader.doorbell().seq();
                if reader.posted(0, half).unwrap() >= e {
                    break;
                }
                assert!(Instant::now() < deadline, "epoch {e} never posted");
                reader.check_alive(0).unwrap();
                crate::wait::wait_any(
                    Some(reader.doorbell()),
                    seen,
                    &[crate::WaitSource::Doorbell],
                    Duration::from_millis(20),
                )
                .unwrap();
            }
            let data = reader.peer(0, half).unwrap();
            assert!(data.iter().all(|&b| b == fill(e)), "epoch {e}");
            let inline = reader.peer_inline(0, half).unwrap();
            assert_eq!(inline[..8], e.to_le_bytes(), "epoch {e}");
            sum += u64::from(data[e as usize % 4096]);
            reader.ack(0, e).unwrap();
        }
        sum
    });
    let deadline = Instant::now() + TEST_DEADLINE;
    let mut expected = 0u64;
    for e in 1..=EPOCHS {
        let half = (e % 2) as usize;
        // The half is free once the reader finished epoch e - 2.
        loop {
            let seen = owner.doorbell().seq();
            if owner.acked(1).unwrap() + 2 >= e {
                break;
            }
            assert!(Instant::now() < deadline, "epoch {e} never acked");
            crate::wait::wait_any(
                Some(owner.doorbell()),
                seen,
                &[crate::WaitSource::Doorbell],
                Duration::from_millis(20),
            )
            .unwrap();
        }
        owner.own_mut(half).fill(fill(e));
        owner.own_inline_mut(half)[..8].copy_from_slice(&e.to_le_bytes());
        owner.post(half, e);
        expected += u64::from(fill(e));
    }
    assert_eq!(reader.join().unwrap(), expected);
    assert_eq!(owner.acked(1).unwrap(), EPOCHS);
}

#[test]
fn window_setup_errors_are_clear() {
    // No window.
    let ctxs = ranks("winnone", 2, 0);
    let err = ctxs[0].window().unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("window"), "{err}");

    // Once per context, and only after every peer is mapped.
    let tag = unique_tag("winonce");
    let mut a = ShmContext::create(&tag, 0, 2, 1, SMALL, 4096).unwrap();
    let b = ShmContext::create(&tag, 1, 2, 1, SMALL, 4096).unwrap();
    let err = a.window().unwrap_err();
    assert!(err.to_string().contains("not mapped"), "{err}");
    a.map_peer(1, b.name(), pid()).unwrap();
    let _w = a.window().unwrap();
    let err = a.window().unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("already"), "{err}");
    drop(b);

    // Too large.
    let err =
        ShmContext::create(&unique_tag("winbig"), 0, 2, 1, SMALL, MAX_WINDOW_LEN + 1).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");

    // Peers that disagree on the window: another size of segment...
    let tag = unique_tag("winsize");
    let mut a = ShmContext::create(&tag, 0, 2, 1, SMALL, 4096).unwrap();
    let b = ShmContext::create(&tag, 1, 2, 1, SMALL, 8192).unwrap();
    let err = a.map_peer(1, b.name(), pid()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("window_len=4096"), "{err}");
    let c = ShmContext::create(&tag, 1, 2, 1, SMALL, 0);
    assert!(c.is_err(), "same name as b");
    drop(b);
    // ... no window at all ...
    let b = ShmContext::create(&tag, 1, 2, 1, SMALL, 0).unwrap();
    let err = a.map_peer(1, b.name(), pid()).unwrap_err();
    assert!(err.to_string().contains("window_len"), "{err}");
    drop(b);
    // ... or the same rounded size but another requested length: the header tells.
    let tag = unique_tag("winhdr");
    let mut a = ShmContext::create(&tag, 0, 2, 1, SMALL, 100).unwrap();
    let b = ShmContext::create(&tag, 1, 2, 1, SMALL, 200).unwrap();
    let err = a.map_peer(1, b.name(), pid()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(
        err.to_string().contains("window_len is 200, expected 100"),
        "{err}"
    );
    let names = [shm_file(a.name()), shm_file(b.name())];
    drop((a, b));
    assert!(names.iter().all(|n| !Path::new(n).exists()));
}

#[test]
fn window_is_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ShmWindow>();
    send_sync::<PeerHalves<'static>>();
}
