//! Sleeping until a channel may make progress.
//!
//! Every rank owns one [`Doorbell`]. Local peers ring it after they commit a slot to this rank
//! or release a slot this rank sent, so one futex wait covers every shared-memory channel.
//! Socket channels are waited on with `poll`. [`wait_any`] combines the two.
//!
//! Waits never decide anything: they return on a ring, a ready fd, a timeout or a signal,
//! and the caller polls its channels again. A wait that returns early costs a loop turn;
//! a wait that never returns is impossible, because every wait has a timeout.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::thread::futex;

use crate::{Error, Result};

/// Longest single `poll` while a doorbell must be watched at the same time.
const MIXED_POLL_SLICE: Duration = Duration::from_micros(200);

/// A futex word pair, in shared memory, that local peers ring to wake this rank.
///
/// `seq` counts rings; `sleepers` counts threads inside [`Doorbell::wait`], so a ring costs a
/// system call only when somebody sleeps. Both sides use sequentially consistent operations:
/// either the ringer sees the sleeper's increment, or the sleeper sees the new `seq`
/// (Dekker's argument), and `FUTEX_WAIT` re-checks `seq` atomically in the kernel.
///
/// The futex is process-shared (no `FUTEX_PRIVATE_FLAG`), so it works between processes
/// that map the same file. A peer that scribbles on the words can cause spurious or missed
/// wake-ups, never more: every wait has a timeout.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct Doorbell {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl Doorbell {
    /// A doorbell not yet rung (for a rank without shared-memory peers, and for tests).
    pub const fn new() -> Self {
        Self {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Counts one ring and wakes every sleeper, if there is one.
    pub fn ring(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            // Errors are impossible for a valid address; a failed wake only delays the
            // sleeper until its timeout.
            let _ = futex::wake(&self.seq, futex::Flags::empty(), i32::MAX as u32);
        }
    }

    /// The number of rings so far (wrapping). Read it before checking the channels and
    /// pass it to [`Doorbell::wait`] or [`wait_any`].
    pub fn seq(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Sleeps while the sequence number still equals `seen`, at most `timeout`.
    ///
    /// Returns at once if the doorbell was rung since `seen` was read. May return early
    /// (signals, spurious wake-ups); the caller re-checks.
    pub fn wait(&self, seen: u32, timeout: Duration) {
        if timeout.is_zero() {
            return;
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        if self.seq.load(Ordering::SeqCst) == seen {
            let ts = timespec(timeout);
            // EAGAIN (seq changed), ETIMEDOUT and EINTR all mean "look again"; other errors
            // cannot happen for a valid, aligned address.
            let _ = futex::wait(&self.seq, futex::Flags::empty(), seen, Some(&ts));
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a channel's waiter can sleep on until the channel may make progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitSource {
    /// The peer rings this rank's own [`Doorbell`] (shared-memory channels).
    Doorbell,
    /// Wait until this socket is readable.
    Readable(RawFd),
    /// Wait until this socket is writable.
    Writable(RawFd),
    /// Nothing to sleep on: yield the CPU and poll again.
    Spin,
}

/// Sleeps until one of `sources` may be ready, or `timeout` passed.
///
/// `doorbell` is this rank's doorbell and `seen_seq` its sequence number read before the
/// channels were last polled. The strategy follows the sources:
/// - only [`WaitSource::Doorbell`]: a futex wait;
/// - only sockets: one `poll`;
/// - both: `poll` the sockets in slices of at most 200 µs, checking the doorbell in between;
/// - any [`WaitSource::Spin`], or a `Doorbell` source without a doorbell: yield once;
/// - no sources: wait on the doorbell if there is one, else sleep.
///
/// Returns `Ok` on timeout too; the caller re-checks its channels. Fails only if `poll`
/// fails for a reason other than a signal.
pub fn wait_any(
    doorbell: Option<&Doorbell>,
    seen_seq: u32,
    sources: &[WaitSource],
    timeout: Duration,
) -> Result<()> {
    if timeout.is_zero() {
        return Ok(());
    }
    let mut wants_doorbell = false;
    let mut fds: Vec<(RawFd, PollFlags)> = Vec::new();
    for source in sources {
        match *source {
            WaitSource::Spin => {
                std::thread::yield_now();
                return Ok(());
            }
            WaitSource::Doorbell => wants_doorbell = true,
            WaitSource::Readable(fd) => fds.push((fd, PollFlags::IN)),
            WaitSource::Writable(fd) => fds.push((fd, PollFlags::OUT)),
        }
    }
    if sources.is_empty() {
        match doorbell {
            Some(bell) => bell.wait(seen_seq, timeout),
            None => std::thread::sleep(timeout),
        }
        return Ok(());
    }
    let bell = match (wants_doorbell, doorbell) {
        (true, None) => {
            std::thread::yield_now();
            return Ok(());
        }
        (true, Some(bell)) => Some(bell),
        (false, _) => None,
    };
    match bell {
        Some(bell) if fds.is_empty() => {
            bell.wait(seen_seq, timeout);
            Ok(())
        }
        None => poll_fds(&fds, timeout).map(|_| ()),
        Some(bell) => {
            let deadline = Instant::now() + timeout;
            loop {
                if bell.seq() != seen_seq {
                    return Ok(());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || poll_fds(&fds, left.min(MIXED_POLL_SLICE))? {
                    return Ok(());
                }
            }
        }
    }
}

/// Polls `fds` once; `Ok(true)` when one is ready (or in error), `Ok(false)` on timeout or
/// signal.
fn poll_fds(fds: &[(RawFd, PollFlags)], timeout: Duration) -> Result<bool> {
    let mut pollfds: Vec<PollFd<'_>> = fds
        .iter()
        .filter(|(fd, _)| *fd >= 0)
        .map(|&(fd, flags)| {
            // SAFETY: the engine passes fds of channels it owns and keeps alive across this
            // call. The borrow lives only for this one `poll`; if an fd had been closed, the
            // kernel reports POLLNVAL (or polls a reused fd): a spurious wake-up, no memory
            // is touched through it.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            PollFd::from_borrowed_fd(borrowed, flags)
        })
        .collect();
    if pollfds.is_empty() {
        std::thread::sleep(timeout);
        return Ok(false);
    }
    let ts = timespec(timeout);
    match rustix::event::poll(&mut pollfds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::INTR) => Ok(false),
        Err(e) => Err(Error::io("poll on transport sockets", e.into())),
    }
}

/// A relative timeout as a `Timespec`, saturating at a day (longer waits are pointless and
/// callers re-check anyway).
pub(crate) fn timespec(timeout: Duration) -> futex::Timespec {
    let timeout = timeout.min(Duration::from_secs(86_400));
    futex::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    }
}

/// A monotonic clock reading with the resolution of the kernel's tick (a few milliseconds),
/// as a duration since an arbitrary start. Far cheaper to read than [`std::time::Instant`]
/// on some virtual machines, which matters in a spin loop; use it for deadlines and
/// liveness checks, not for timing operations.
pub fn coarse_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;

    #[test]
    fn doorbell_wait_times_out() {
        let bell = Doorbell::new();
        let start = Instant::now();
        bell.wait(bell.seq(), Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn doorbell_wait_returns_at_once_when_already_rung() {
        let bell = Doorbell::new();
        let seen = bell.seq();
        bell.ring();
        let start = Instant::now();
        bell.wait(seen, Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn doorbell_ring_wakes_a_sleeper() {
        let bell = Arc::new(Doorbell::new());
        let seen = bell.seq();
        let b2 = bell.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            b2.wait(seen, Duration::from_secs(20));
            start.elapsed()
        });
        // Keep ringing until the sleeper is gone (it may not have started sleeping yet).
        while !t.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
            bell.ring();
        }
        assert!(t.join().unwrap() < Duration::from_secs(10));
        assert_eq!(bell.sleepers.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn wait_any_polls_sockets_and_doorbell() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        use std::os::fd::AsRawFd;
        let fd = server.as_raw_fd();
        let bell = Doorbell::new();

        // Nothing readable: times out.
        let start = Instant::now();
        wait_any(
            Some(&bell),
            bell.seq(),
            &[WaitSource::Readable(fd)],
            Duration::from_millis(30),
        )
        .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(25));

        // Mixed, doorbell already rung: returns at once.
        let seen = bell.seq();
        bell.ring();
        let start = Instant::now();
        wait_any(
            Some(&bell),
            seen,
            &[WaitSource::Readable(fd), WaitSource::Doorbell],
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));

        // Readable: returns at once.
        client.write_all(b"x").unwrap();
        let start = Instant::now();
        wait_any(
            Some(&bell),
            bell.seq(),
            &[WaitSource::Doorbell, WaitSource::Readable(fd)],
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        wait_any(
            None,
            0,
            &[WaitSource::Readable(fd)],
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));

        // Spin and a doorbell source without a doorbell: yield only.
        wait_any(None, 0, &[WaitSource::Spin], Duration::from_secs(10)).unwrap();
        wait_any(None, 0, &[WaitSource::Doorbell], Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
