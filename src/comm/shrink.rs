//! Going on without some ranks (NCCL's `ncclCommShrink`), asking whether a communicator is
//! still usable without blocking (`ncclCommGetAsyncError`), and creating one without
//! blocking (NCCL's non-blocking init).

use super::Communicator;
use crate::bootstrap::UniqueId;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::health::watchdog::{frame, SHRINK};
use crate::health::Leave;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

impl Communicator {
    /// Builds a communicator of every rank but `exclude`, renumbered in rank order, with this
    /// one's configuration: how a job goes on after a rank died (`exclude` = the rank the
    /// error named). Every surviving rank calls it with the same list; the excluded ranks do
    /// not (they may be gone). It works on a communicator that failed (that is what it is
    /// for): the survivors agree on a new rendezvous over their watchdog connections, which
    /// outlive a broken data path. This communicator stays as it was; drop it.
    pub fn shrink(&mut self, exclude: &[u32]) -> Result<Communicator> {
        let n = self.nranks;
        if let Some(&bad) = exclude.iter().find(|&&r| r >= n) {
            return Err(Error::invalid(
                "shrink",
                format!("rank {bad} in the exclude list is out of range for {n} ranks"),
            ));
        }
        if exclude.contains(&self.rank) {
            return Err(Error::invalid(
                "shrink",
                format!(
                    "rank {} is in its own exclude list: excluded ranks do not call shrink",
                    self.rank
                ),
            ));
        }
        let survivors: Vec<u32> = (0..n).filter(|r| !exclude.contains(r)).collect();
        let new_rank = survivors
            .iter()
            .position(|&r| r == self.rank)
            .ok_or_else(|| Error::Internal("shrink: this rank is not a survivor".into()))?
            as u32;
        let new_n = survivors.len() as u32;
        self.shrinks += 1;
        let generation = self.shrinks;
        let leader = survivors[0];
        let timeout = self.config.timeout;
        let health = self.engine.health.clone();
        let id = if leader == self.rank {
            let id = UniqueId::new(SocketAddr::new(self.advertised_ip, 0), timeout)?;
            let mut payload = generation.to_le_bytes().to_vec();
            payload.extend_from_slice(&id.to_bytes());
            for &p in survivors.iter().filter(|&&p| p != self.rank) {
                health.send(p, frame(SHRINK, &payload));
            }
            id
        } else {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(bytes) = health.shrink_id(leader, generation) {
                    break UniqueId::from_bytes(&bytes)?;
                }
                let gone = health
                    .peers()
                    .get(leader as usize)
                    .is_some_and(|v| v.leave != Leave::Here);
                if gone {
                    return Err(Error::invalid(
                        "shrink",
                        format!(
                            "rank {leader}, the lowest surviving rank, which starts the new \
                             communicator, is gone too: exclude it as well"
                        ),
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(Error::Bootstrap {
                        rank: self.rank,
                        detail: format!(
                            "shrink: rank {leader} did not send the new communicator's id \
                             within {timeout:?} (did every survivor call shrink with the same \
                             exclude list?)"
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        tracing::info!(target: "oxccl::init",
            "rank {}: shrinking to {new_n} ranks (without {exclude:?}), as rank {new_rank}", self.rank);
        Communicator::init(id, new_n, new_rank, self.config.clone())
    }

    /// The error that makes this communicator unusable, if any, without blocking (NCCL's
    /// `ncclCommGetAsyncError`): a rank found dead (even while this rank computes between
    /// operations), an abort, or an earlier failure. `None` while it is usable.
    pub fn async_error(&self) -> Option<Error> {
        self.check_usable().err()
    }

    /// Starts creating a communicator in the background (NCCL's non-blocking init) and
    /// returns at once; [`PendingInit::test`] and [`PendingInit::wait`] finish it.
    pub fn init_nonblocking(
        id: UniqueId,
        nranks: u32,
        rank: u32,
        config: Config,
    ) -> Result<PendingInit> {
        let thread = std::thread::Builder::new()
            .name(format!("oxccl-init-{rank}"))
            .spawn(move || Communicator::init(id, nranks, rank, config))
            .map_err(|e| Error::Internal(format!("cannot start the init thread: {e}")))?;
        Ok(PendingInit {
            thread: Some(thread),
        })
    }
}

/// A communicator being created in the background ([`Communicator::init_nonblocking`]).
/// It fails within the configuration's deadline if the other ranks do not come.
#[derive(Debug)]
pub struct PendingInit {
    thread: Option<JoinHandle<Result<Communicator>>>,
}

impl PendingInit {
    /// The communicator once it is ready (`Ok(Some)`), `Ok(None)` while creation goes on, or
    /// the error that ended it. After `Ok(Some)` or an error, further calls fail.
    pub fn test(&mut self) -> Result<Option<Communicator>> {
        match &self.thread {
            Some(t) if !t.is_finished() => Ok(None),
            Some(_) => self.take().map(Some),
            None => Err(Error::invalid(
                "PendingInit::test",
                "the communicator was already handed out (or its creation failed)",
            )),
        }
    }

    /// Blocks until the communicator is ready or its creation failed.
    pub fn wait(mut self) -> Result<Communicator> {
        self.take()
    }

    fn take(&mut self) -> Result<Communicator> {
        let t = self.thread.take().ok_or_else(|| {
            Error::invalid(
                "PendingInit::wait",
                "the communicator was already handed out",
            )
        })?;
        t.join()
            .map_err(|_| Error::Internal("the init thread panicked".into()))?
    }
}
