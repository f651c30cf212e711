//! `[RANK] ` prefixes on the ranks' output.
//!
//! [`LinePrefixer`] is the pure part (bytes in, prefixed bytes out); [`spawn_pump`] runs it
//! on a thread between a rank's pipe and our stdout or stderr.
//!
//! Rules: every line gets the prefix; a line is written whole, in one `write` under the
//! output's lock, so lines of different ranks never interleave; bytes pass through as they
//! are (no UTF-8 requirement); a partial last line is written at end of file with a `\n`
//! added so the next rank's prefix starts a line. A line longer than [`MAX_PENDING`] is
//! written in pieces (only the first piece carries the prefix) instead of being held in
//! memory whole.

use std::io::{Read, Write};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

/// Longest partial line held back waiting for its `\n`.
pub const MAX_PENDING: usize = 64 * 1024;

/// Splits a byte stream into lines and puts a prefix in front of each.
#[derive(Debug)]
pub struct LinePrefixer {
    prefix: Vec<u8>,
    /// Bytes of the current line not yet written.
    pending: Vec<u8>,
    /// Whether the next byte written starts a line (and so needs the prefix).
    at_line_start: bool,
}

impl LinePrefixer {
    /// A prefixer that puts `prefix` before every line.
    pub fn new(prefix: impl Into<Vec<u8>>) -> Self {
        LinePrefixer {
            prefix: prefix.into(),
            pending: Vec::new(),
            at_line_start: true,
        }
    }

    /// Takes `data` from the stream and appends to `out` what can be written now: every
    /// completed line, and the held part of an overlong line.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        if let Some(last_nl) = self.pending.iter().rposition(|&b| b == b'\n') {
            for line in self.pending[..=last_nl].split_inclusive(|&b| b == b'\n') {
                if self.at_line_start {
                    out.extend_from_slice(&self.prefix);
                }
                out.extend_from_slice(line);
                self.at_line_start = true;
            }
            self.pending.drain(..=last_nl);
        }
        if self.pending.len() >= MAX_PENDING {
            self.emit_partial(out);
        }
    }

    /// Ends the stream: appends the partial last line, if any, with a `\n`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            self.emit_partial(out);
        }
        if !self.at_line_start {
            out.push(b'\n');
            self.at_line_start = true;
        }
    }

    fn emit_partial(&mut self, out: &mut Vec<u8>) {
        if self.at_line_start {
            out.extend_from_slice(&self.prefix);
        }
        out.append(&mut self.pending);
        self.at_line_start = false;
    }
}

/// Which of our outputs a pump writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Our standard output.
    Stdout,
    /// Our standard error.
    Stderr,
}

impl Sink {
    fn write(self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::Stderr => std::io::stderr().lock().write_all(bytes),
        }
    }
}

/// Starts a thread that copies `source` to `sink` with `[rank] ` prefixes until end of
/// file, then sends `()` on `done`. Read errors end the copy like end of file; write
/// errors (our output closed) are ignored and the source is still drained, so the rank
/// never blocks on a full pipe.
pub fn spawn_pump(
    rank: u32,
    mut source: impl Read + Send + 'static,
    sink: Sink,
    done: Sender<()>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("oxccl-run-pump-{rank}"))
        .spawn(move || {
            let mut prefixer = LinePrefixer::new(format!("[{rank}] "));
            let mut buf = vec![0u8; 16 * 1024];
            let mut out = Vec::new();
            let mut sink_ok = true;
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                prefixer.push(&buf[..n], &mut out);
                if sink_ok && !out.is_empty() {
                    sink_ok = sink.write(&out).is_ok();
                }
                out.clear();
            }
            prefixer.finish(&mut out);
            if sink_ok && !out.is_empty() {
                let _ = sink.write(&out);
            }
            let _ = done.send(());
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut p = LinePrefixer::new("[7] ");
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out);
        }
        p.finish(&mut out);
        out
    }

    #[test]
    fn whole_lines() {
        assert_eq!(run(&[b"a\nbc\n"]), b"[7] a\n[7] bc\n");
        assert_eq!(run(&[b"\n\n"]), b"[7] \n[7] \n");
        assert_eq!(run(&[]), b"");
    }

    #[test]
    fn lines_split_across_reads_are_held_whole() {
        let mut p = LinePrefixer::new("[7] ");
        let mut out = Vec::new();
        p.push(b"he", &mut out);
        assert!(out.is_empty());
        p.push(b"llo\nwo", &mut out);
        assert_eq!(out, b"[7] hello\n");
        out.clear();
        p.push(b"rld\n", &mut out);
        assert_eq!(out, b"[7] world\n");
    }

    #[test]
    fn partial_last_line_gets_a_newline() {
        assert_eq!(run(&[b"a\nbc"]), b"[7] a\n[7] bc\n");
    }

    #[test]
    fn non_utf8_passes_through() {
        assert_eq!(run(&[b"\xff\xfe\n"]), b"[7] \xff\xfe\n");
    }

    #[test]
    fn overlong_line_is_written_in_pieces_with_one_prefix() {
        let long = vec![b'x'; MAX_PENDING + 10];
        let out = run(&[&long, b"yz\nq"]);
        let mut want = b"[7] ".to_vec();
        want.extend_from_slice(&long);
        want.extend_from_slice(b"yz\n[7] q\n");
        assert_eq!(out, want);
    }
}
