//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and their replay test. Each
//! feeds arbitrary bytes, as a peer would send them, to one decoder of a wire message; the
//! decoder must answer with a value or an error: never a panic, a hang or an allocation
//! beyond its bounds. Not part of the API. The TCP handshake and message framing have
//! theirs in `oxccl_transports::fuzzing`.

/// The bootstrap messages a rank decodes: the root's all-gather reply (first byte: the
/// number of ranks it expects), and a rank's connection details as the root relays them.
pub fn bootstrap_messages(data: &[u8]) {
    let Some((&nranks, rest)) = data.split_first() else {
        return;
    };
    if let Ok(blobs) = crate::bootstrap::decode_reply(rest, u32::from(nranks)) {
        assert_eq!(blobs.len(), usize::from(nranks));
        for (r, b) in blobs.iter().enumerate() {
            let _ = crate::comm::decode_rank_info(b, r);
        }
    }
    let _ = crate::comm::decode_rank_info(rest, 0);
}

/// The watchdog's control stream, cut into frames as they arrive.
pub fn control_frames(data: &[u8]) {
    let mut buf = Vec::new();
    // Arrive in pieces of varying size, as a socket delivers them.
    for piece in data.chunks(data.first().map_or(1, |&b| usize::from(b % 32) + 1)) {
        buf.extend_from_slice(piece);
        loop {
            match crate::health::watchdog::next_frame(&mut buf) {
                Ok(Some((_, payload))) => assert!(payload.len() <= 256),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// A unique id's 128-byte form (it travels through MPI, files or the user's own channel).
pub fn unique_id(data: &[u8]) {
    if let Ok(id) = crate::bootstrap::UniqueId::from_bytes(data) {
        let again = crate::bootstrap::UniqueId::from_bytes(&id.to_bytes());
        assert!(again.is_ok_and(|a| a.to_bytes() == id.to_bytes()));
    }
}
