//! The data-parallel communicator's own thread: gradient buckets are handed to it and
//! all-reduced there while the training thread goes on with the backward pass, as NCCL's
//! communication stream does for PyTorch DDP.
//!
//! Jobs run in the order they are submitted, one at a time, so every rank issues its
//! collectives in the same order (the order the training threads submit them, which is
//! deterministic). Each result comes back with the time the all-reduce took on this
//! thread, which is what the trainer compares with the time it waited.

use candle_core::{Error, Result};
use oxccl::{Communicator, ReduceOp};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A buffer to sum over the ranks, tagged by the caller.
struct Job {
    tag: usize,
    data: Vec<f32>,
}

/// A summed buffer, or the error that stopped it, and the time the all-reduce took.
pub(crate) struct Done {
    pub(crate) tag: usize,
    pub(crate) data: Vec<f32>,
    pub(crate) busy: Duration,
    result: std::result::Result<(), oxccl::Error>,
}

impl Done {
    /// The summed buffer, or the all-reduce's error naming the bucket.
    pub(crate) fn into_result(self) -> Result<(usize, Vec<f32>)> {
        match self.result {
            Ok(()) => Ok((self.tag, self.data)),
            Err(e) => Err(Error::wrap(e).context(format!(
                "data-parallel all-reduce of buffer {} ({} floats)",
                self.tag,
                self.data.len()
            ))),
        }
    }
}

/// The thread that owns the data-parallel communicator.
pub(crate) struct Worker {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    /// Jobs submitted and not yet received back.
    in_flight: usize,
}

impl Worker {
    /// Starts the thread; it owns `comm` until the worker is dropped.
    pub(crate) fn start(mut comm: Communicator) -> Result<Self> {
        let (jobs, job_rx) = channel::<Job>();
        let (done_tx, done) = channel::<Done>();
        let thread = std::thread::Builder::new()
            .name(format!("oxccl-dp-{}", comm.rank()))
            .spawn(move || {
                for mut job in job_rx {
                    let start = Instant::now();
                    let result = comm.all_reduce_in_place(&mut job.data, ReduceOp::Sum);
                    let failed = result.is_err();
                    let reply = Done {
                        tag: job.tag,
                        data: job.data,
                        busy: start.elapsed(),
                        result,
                    };
                    // A failed collective leaves the communicator unusable: stop after
                    // reporting it (the trainer drops its sender and sees the channel close).
                    if done_tx.send(reply).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(Error::wrap)?;
        Ok(Worker {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: 0,
        })
    }

    /// Queues `data` for summing; `tag` comes back with it.
    pub(crate) fn submit(&mut self, tag: usize, data: Vec<f32>) -> Result<()> {
        let sent = self.jobs.as_ref().map(|j| j.send(Job { tag, data }));
        match sent {
            Some(Ok(())) => {
                self.in_flight += 1;
                Ok(())
            }
            _ => candle_core::bail!(
                "the data-parallel communication thread has stopped after an earlier error"
            ),
        }
    }

    /// Number of submitted buffers not yet received.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The next finished buffer, in submission order. Blocks until it is done; the
    /// communicator's own deadline bounds the wait (a collective that times out comes back
    /// as an error, and a thread that died closes the channel).
    pub(crate) fn receive(&mut self) -> Result<Done> {
        if self.in_flight == 0 {
            candle_core::bail!("no data-parallel all-reduce is in flight");
        }
        let done = self.done.recv().map_err(|_| {
            Error::msg("the data-parallel communication thread stopped without replying")
        })?;
        self.in_flight -= 1;
        Ok(done)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop; join so the communicator is
        // destroyed before the trainer returns.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
