//! Framing and encoding of bootstrap messages.
//!
//! A frame is a little-endian `u32` length and that many bytes. Inside, values are encoded
//! with [`Enc`] and read back with [`Dec`], which checks every bound: nothing a peer sends can
//! make us panic or allocate without limit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Largest frame accepted (the all-gathered rank table of a large job fits easily).
pub const MAX_FRAME: usize = 64 << 20;

/// Writes one frame; a peer that stops reading fails the write after `timeout`.
pub fn write_frame(
    s: &mut TcpStream,
    payload: &[u8],
    timeout: std::time::Duration,
) -> std::io::Result<()> {
    s.set_write_timeout(Some(timeout))?;
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::other("bootstrap frame too large"))?;
    s.write_all(&len.to_le_bytes())?;
    s.write_all(payload)?;
    s.flush()
}

/// Reads one frame, failing once `deadline` passes.
pub fn read_frame(s: &mut TcpStream, deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    read_exact_by(s, &mut len, deadline)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bootstrap frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; len];
    read_exact_by(s, &mut buf, deadline)?;
    Ok(buf)
}

fn read_exact_by(s: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "deadline passed",
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Builds a message.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends length-prefixed bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    /// Appends a length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
}

/// Reads a message; every method fails cleanly on truncated or malformed input.
pub struct Dec<'a>(pub &'a [u8]);

/// A malformed bootstrap message.
#[derive(Debug)]
pub struct Malformed(pub &'static str);

impl Dec<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1, "truncated u8")?[0])
    }
    /// Reads a `u32`.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4, "truncated u32")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Reads length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&[u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n, "truncated byte string")
    }
    /// Reads a length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<String, Malformed> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| Malformed("string is not UTF-8"))
    }
}
