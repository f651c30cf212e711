//! The bytes on the wire: the authentication handshake and the message framing.
//!
//! # Handshake (mutual, the key never crosses the wire)
//! ```text
//! acceptor  -> connector   "OXCCLTCP" | version u32 LE | nonce_a [32]
//! connector -> acceptor    nonce_c [32] | mac_c [32] | payload_len u32 LE | payload
//! acceptor  -> connector   status u8 (1 = OK, 0 = REJECT) | mac_a [32] (zero on REJECT)
//!
//! mac_c = blake3::keyed_hash(key, "oxccl-tcp-connect-v1" | nonce_a | nonce_c | payload_len | payload)
//! mac_a = blake3::keyed_hash(key, "oxccl-tcp-accept-v1"  | nonce_a | nonce_c | mac_c)
//! ```
//! The acceptor's fresh nonce makes `mac_c` useless for replay; `mac_a` proves to the
//! connector that it reached a party holding the key, not an impostor on the port. MACs are
//! compared in constant time (`blake3::Hash`'s `PartialEq`).
//!
//! # Messages
//! Each committed slot travels as a 12-byte header, `len u32 LE | seq u32 LE | tag u32 LE`,
//! then `len` payload bytes. `seq` counts messages from 0, wrapping; the receiver checks it
//! and that `len <= slot_size`. `tag` is the sender's tag from `commit`, delivered as is
//! (opaque to the transport, never checked here).

/// First bytes the acceptor sends.
pub(crate) const HANDSHAKE_MAGIC: [u8; 8] = *b"OXCCLTCP";
/// Bumped on any change of this format, handshake or message framing (2: tag in the
/// message header), so peers that frame messages differently fail at the handshake.
pub(crate) const HANDSHAKE_VERSION: u32 = 2;
/// Bytes in a nonce.
pub(crate) const NONCE_LEN: usize = 32;
/// Bytes in a MAC.
pub(crate) const MAC_LEN: usize = 32;
/// Acceptor's hello: magic, version, nonce.
pub(crate) const HELLO_LEN: usize = 8 + 4 + NONCE_LEN;
/// Connector's answer before the payload: nonce, MAC, payload length.
pub(crate) const ANSWER_LEN: usize = NONCE_LEN + MAC_LEN + 4;
/// Acceptor's verdict: status and MAC.
pub(crate) const VERDICT_LEN: usize = 1 + MAC_LEN;
/// Verdict status: accepted.
pub(crate) const STATUS_OK: u8 = 1;
/// Verdict status: rejected.
pub(crate) const STATUS_REJECT: u8 = 0;
/// Largest payload a connector may attach to its handshake.
pub const MAX_PAYLOAD: usize = 4096;

/// Bytes in a message header: `len`, `seq`, `tag`.
pub(crate) const HEADER_LEN: usize = 12;

/// The connector's proof: it knows `key` and binds its payload to this handshake.
pub(crate) fn connector_mac(
    key: &[u8; 32],
    nonce_a: &[u8; NONCE_LEN],
    nonce_c: &[u8; NONCE_LEN],
    payload: &[u8],
) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"oxccl-tcp-connect-v1");
    h.update(nonce_a);
    h.update(nonce_c);
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The acceptor's proof that it knows `key` too.
pub(crate) fn acceptor_mac(
    key: &[u8; 32],
    nonce_a: &[u8; NONCE_LEN],
    nonce_c: &[u8; NONCE_LEN],
    mac_c: &[u8; MAC_LEN],
) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"oxccl-tcp-accept-v1");
    h.update(nonce_a);
    h.update(nonce_c);
    h.update(mac_c);
    h.finalize()
}

/// The fields of a message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Payload bytes that follow.
    pub(crate) len: u32,
    /// Message number, from 0, wrapping.
    pub(crate) seq: u32,
    /// The sender's tag.
    pub(crate) tag: u32,
}

/// A message header.
pub(crate) fn encode_header(len: u32, seq: u32, tag: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&seq.to_le_bytes());
    h[8..].copy_from_slice(&tag.to_le_bytes());
    h
}

/// The fields of a message header.
pub(crate) fn decode_header(h: &[u8; HEADER_LEN]) -> Header {
    let [a, b, c, d, e, f, g, i, j, k, l, m] = *h;
    Header {
        len: u32::from_le_bytes([a, b, c, d]),
        seq: u32::from_le_bytes([e, f, g, i]),
        tag: u32::from_le_bytes([j, k, l, m]),
    }
}

/// 32 random bytes from the OS.
pub(crate) fn nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(n)
}
