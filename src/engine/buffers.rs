//! The memory of one op: the user's buffers (borrowed for the op's lifetime) and scratch.

use crate::error::{Error, Result};
use oxccl_algorithms::Buf;
use std::ops::Range;

/// The user memory of one op.
pub(crate) enum UserBufs<'a> {
    /// Separate input and output (either may be empty when the op does not use it).
    Split {
        /// Read-only input.
        input: &'a [u8],
        /// Output.
        output: &'a mut [u8],
    },
    /// One buffer holding both; the input starts at byte `input_at`, the output at
    /// `output_at` (NCCL's in-place rules, e.g. all-gather input at `rank * count`).
    InPlace {
        /// The buffer.
        buf: &'a mut [u8],
        /// Byte offset of the input.
        input_at: usize,
        /// Byte offset of the output.
        output_at: usize,
    },
    /// One buffer for input and output at the same offset, for an algorithm that would
    /// overwrite input it still needs (in-place all-to-all): the engine reads the input from a
    /// private copy taken at launch.
    Staged(&'a mut [u8]),
}

/// Physical memory areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phys {
    Input,
    Main,
    Scratch,
}

/// Operands of a step with a local source and a local destination.
pub(crate) enum Pair<'b> {
    /// Source and destination are the same bytes.
    Same(&'b mut [u8]),
    /// Disjoint source and destination.
    Two(&'b [u8], &'b mut [u8]),
}

/// An op's memory: user buffers plus engine-owned scratch.
pub(crate) struct OpMemory<'a> {
    input: std::borrow::Cow<'a, [u8]>,
    main: &'a mut [u8],
    in_place: Option<(usize, usize)>,
    scratch: Vec<u8>,
}

impl<'a> OpMemory<'a> {
    /// Wraps the user's buffers and allocates `scratch_len` bytes of scratch.
    pub fn new(user: UserBufs<'a>, scratch_len: usize) -> Self {
        match user {
            UserBufs::Split { input, output } => OpMemory {
                input: std::borrow::Cow::Borrowed(input),
                main: output,
                in_place: None,
                scratch: vec![0; scratch_len],
            },
            UserBufs::InPlace {
                buf,
                input_at,
                output_at,
            } => OpMemory {
                input: std::borrow::Cow::Borrowed(&[]),
                main: buf,
                in_place: Some((input_at, output_at)),
                scratch: vec![0; scratch_len],
            },
            UserBufs::Staged(buf) => OpMemory {
                input: std::borrow::Cow::Owned(buf.to_vec()),
                main: buf,
                in_place: None,
                scratch: vec![0; scratch_len],
            },
        }
    }

    fn locate(&self, buf: Buf, r: Range<usize>) -> Result<(Phys, Range<usize>)> {
        Ok(match (buf, self.in_place) {
            // Window regions live in shared memory: `engine::window` handles them.
            (Buf::Window, _) => {
                return Err(Error::Internal(
                    "a window region reached the op's local memory".into(),
                ))
            }
            (Buf::Scratch, _) => (Phys::Scratch, r),
            (Buf::Input, None) => (Phys::Input, r),
            (Buf::Output, None) => (Phys::Main, r),
            (Buf::Input, Some((i, _))) => (Phys::Main, r.start + i..r.end + i),
            (Buf::Output, Some((_, o))) => (Phys::Main, r.start + o..r.end + o),
        })
    }

    fn oob(buf: Buf, r: &Range<usize>, len: usize) -> Error {
        Error::Internal(format!("{buf:?} range {r:?} outside a {len}-byte buffer"))
    }

    /// Bytes of `buf` in `r`, for reading.
    pub fn read(&self, buf: Buf, r: Range<usize>) -> Result<&[u8]> {
        let (p, pr) = self.locate(buf, r.clone())?;
        let mem: &[u8] = match p {
            Phys::Input => &self.input,
            Phys::Main => self.main,
            Phys::Scratch => &self.scratch,
        };
        mem.get(pr).ok_or_else(|| Self::oob(buf, &r, mem.len()))
    }

    /// Bytes of `buf` in `r`, for writing. The input is never written.
    pub fn write(&mut self, buf: Buf, r: Range<usize>) -> Result<&mut [u8]> {
        let (p, pr) = self.locate(buf, r.clone())?;
        let mem: &mut [u8] = match p {
            Phys::Input => return Err(Error::Internal("a plan writes its input".into())),
            Phys::Main => self.main,
            Phys::Scratch => &mut self.scratch,
        };
        let len = mem.len();
        mem.get_mut(pr).ok_or_else(|| Self::oob(buf, &r, len))
    }

    /// A local source and destination of equal length, which may be the same memory.
    pub fn pair(&mut self, src: (Buf, Range<usize>), dst: (Buf, Range<usize>)) -> Result<Pair<'_>> {
        let (ps, rs) = self.locate(src.0, src.1.clone())?;
        let (pd, rd) = self.locate(dst.0, dst.1.clone())?;
        if rs.len() != rd.len() {
            return Err(Error::Internal(format!(
                "operand lengths differ: {src:?} {dst:?}"
            )));
        }
        let oob = || Error::Internal(format!("operands out of range: {src:?} {dst:?}"));
        match (ps, pd) {
            (_, Phys::Input) => Err(Error::Internal("a plan writes its input".into())),
            (Phys::Input, Phys::Main) => Ok(Pair::Two(
                self.input.get(rs).ok_or_else(oob)?,
                self.main.get_mut(rd).ok_or_else(oob)?,
            )),
            (Phys::Input, Phys::Scratch) => Ok(Pair::Two(
                self.input.get(rs).ok_or_else(oob)?,
                self.scratch.get_mut(rd).ok_or_else(oob)?,
            )),
            (Phys::Main, Phys::Scratch) => Ok(Pair::Two(
                self.main.get(rs).ok_or_else(oob)?,
                self.scratch.get_mut(rd).ok_or_else(oob)?,
            )),
            (Phys::Scratch, Phys::Main) => Ok(Pair::Two(
                self.scratch.get(rs).ok_or_else(oob)?,
                self.main.get_mut(rd).ok_or_else(oob)?,
            )),
            (Phys::Main, Phys::Main) => same_buffer(self.main, rs, rd).ok_or_else(oob),
            (Phys::Scratch, Phys::Scratch) => {
                same_buffer(&mut self.scratch, rs, rd).ok_or_else(oob)
            }
        }
    }

    /// Whether two regions share any byte (a window region shares none with local memory).
    pub fn overlaps(&self, a: (Buf, Range<usize>), b: (Buf, Range<usize>)) -> Result<bool> {
        if a.0 == Buf::Window || b.0 == Buf::Window {
            return Ok(false);
        }
        let (pa, ra) = self.locate(a.0, a.1)?;
        let (pb, rb) = self.locate(b.0, b.1)?;
        Ok(pa == pb && !ra.is_empty() && !rb.is_empty() && ra.start < rb.end && rb.start < ra.end)
    }

    /// The whole output, for final passes (average division).
    pub fn output(&mut self, len: usize) -> Result<&mut [u8]> {
        self.write(Buf::Output, 0..len)
    }
}

/// Source and destination within one buffer: identical ranges alias, disjoint ones split.
fn same_buffer(mem: &mut [u8], rs: Range<usize>, rd: Range<usize>) -> Option<Pair<'_>> {
    if rs.end > mem.len() || rd.end > mem.len() {
        return None;
    }
    if rs == rd {
        return Some(Pair::Same(&mut mem[rd]));
    }
    if rs.end <= rd.start {
        let (a, b) = mem.split_at_mut(rd.start);
        Some(Pair::Two(&a[rs], &mut b[..rd.len()]))
    } else if rd.end <= rs.start {
        let (a, b) = mem.split_at_mut(rs.start);
        Some(Pair::Two(&b[..rs.len()], &mut a[rd]))
    } else {
        None
    }
}
