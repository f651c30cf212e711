//! The job secret and the unique id.

use crate::error::{Error, Result};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 32-byte secret every connection of a job proves it knows (by a keyed hash of a
/// challenge; the secret itself never crosses the wire).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);

impl Secret {
    /// A fresh secret from the operating system's random source.
    pub fn random() -> Result<Self> {
        let mut s = [0u8; 32];
        getrandom::fill(&mut s)
            .map_err(|e| Error::Internal(format!("no random numbers from the OS: {e}")))?;
        Ok(Secret(s))
    }

    /// A secret derived from public job identifiers (weak: see `OXCCL_SECRET`).
    pub fn derived(material: &str) -> Self {
        Secret(blake3::derive_key(
            "oxccl 2026 derived job secret",
            material.as_bytes(),
        ))
    }

    /// Lower-case hex, 64 characters (the `OXCCL_SECRET` format).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || Error::Config {
            knob: "OXCCL_SECRET",
            detail: "expected 64 hex digits".into(),
        };
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Secret(out))
    }

    /// A key for one purpose, derived from the secret (so the secret is never used twice
    /// in different roles).
    pub fn subkey(&self, purpose: &str) -> [u8; 32] {
        blake3::keyed_hash(&self.0, purpose.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Identifies one communicator to create: where its root rendezvous listens and the
/// secret its ranks share. 128 bytes, like NCCL's `ncclUniqueId`; pass it to every rank
/// (file, pipe, MPI broadcast) and call `Communicator::init` with it.
///
/// Layout: `b"OXID"`, version `1`, address family (4 or 6), port (big-endian), 16 address
/// bytes, the 32-byte secret, zero padding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UniqueId {
    /// Where the root listens.
    pub root: SocketAddr,
    /// The job secret.
    pub secret: Secret,
}

const MAGIC: &[u8; 4] = b"OXID";

impl UniqueId {
    /// Size of the serialized id.
    pub const BYTES: usize = 128;

    /// Creates an id and starts its root rendezvous in this process (a background thread
    /// that serves one communicator creation and then exits, or gives up after `timeout`).
    /// The root binds `bind` (use port 0 for any free port).
    pub fn new(bind: SocketAddr, timeout: std::time::Duration) -> Result<Self> {
        let secret = Secret::random()?;
        let root = super::RootServer::start_any(bind, secret, timeout)?;
        let id = UniqueId {
            root: root.addr(),
            secret,
        };
        root.detach();
        Ok(id)
    }

    /// The 128-byte form.
    pub fn to_bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[..4].copy_from_slice(MAGIC);
        b[4] = 1;
        let (fam, ip): (u8, [u8; 16]) = match self.root.ip() {
            IpAddr::V4(v4) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&v4.octets());
                (4, ip)
            }
            IpAddr::V6(v6) => (6, v6.octets()),
        };
        b[5] = fam;
        b[6..8].copy_from_slice(&self.root.port().to_be_bytes());
        b[8..24].copy_from_slice(&ip);
        b[24..56].copy_from_slice(&self.secret.0);
        b
    }

    /// Parses the 128-byte form.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::invalid("UniqueId::from_bytes", why);
        if b.len() != Self::BYTES {
            return Err(bad(&format!("expected 128 bytes, got {}", b.len())));
        }
        if &b[..4] != MAGIC || b[4] != 1 {
            return Err(bad("not an oxccl unique id (bad magic or version)"));
        }
        let port = u16::from_be_bytes([b[6], b[7]]);
        let ip = match b[5] {
            4 => IpAddr::V4(Ipv4Addr::new(b[8], b[9], b[10], b[11])),
            6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&b[8..24]);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            f => return Err(bad(&format!("unknown address family {f}"))),
        };
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&b[24..56]);
        Ok(UniqueId {
            root: SocketAddr::new(ip, port),
            secret: Secret(secret),
        })
    }
}

impl fmt::Debug for UniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UniqueId(root={}, secret=..)", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_id_round_trips_and_rejects_garbage() {
        let id = UniqueId {
            root: "10.1.2.3:29500".parse().unwrap(),
            secret: Secret([7; 32]),
        };
        assert_eq!(UniqueId::from_bytes(&id.to_bytes()).unwrap(), id);
        let v6 = UniqueId {
            root: "[::1]:5".parse().unwrap(),
            secret: Secret([1; 32]),
        };
        assert_eq!(UniqueId::from_bytes(&v6.to_bytes()).unwrap(), v6);
        assert!(UniqueId::from_bytes(&[0u8; 128]).is_err());
        assert!(UniqueId::from_bytes(&[0u8; 12]).is_err());
    }

    #[test]
    fn secret_hex_round_trips() {
        let s = Secret::random().unwrap();
        assert_eq!(Secret::from_hex(&s.to_hex()).unwrap(), s);
        assert!(Secret::from_hex("xyz").is_err());
    }
}
