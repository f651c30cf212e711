//! Splitting a communicator into sub-communicators (NCCL's `ncclCommSplit`).

use super::Communicator;
use crate::bootstrap::UniqueId;
use crate::config::Config;
use crate::error::{Error, Result};
use std::net::SocketAddr;

impl Communicator {
    /// Splits into sub-communicators: ranks passing the same `color` form one, ordered by
    /// `key` (ties by rank in this communicator). `color = None` (NCCL's
    /// `NCCL_SPLIT_NOCOLOR`) takes part without joining any: the call returns `Ok(None)`.
    /// Collective: every rank must call it. The new communicator has this one's configuration.
    pub fn split(&mut self, color: Option<u32>, key: i32) -> Result<Option<Communicator>> {
        let config = self.config.clone();
        self.split_with_config(color, key, config)
    }

    /// Like [`Communicator::split`], with `config` for the new communicator (NCCL's
    /// `ncclCommSplit` with a config): e.g. another algorithm selection or channel count.
    /// The members of one color must pass the same shared settings (as for
    /// [`Communicator::init`]; a difference fails their init, naming it).
    pub fn split_with_config(
        &mut self,
        color: Option<u32>,
        key: i32,
        config: Config,
    ) -> Result<Option<Communicator>> {
        if color.is_some_and(|c| c > i32::MAX as u32) {
            return Err(Error::invalid("split", "color must be at most i32::MAX"));
        }
        let n = self.nranks as usize;
        let mine = [color.map_or(-1, i64::from), i64::from(key)];
        let mut table = vec![0i64; 2 * n];
        self.all_gather(&mine, &mut table)?;
        let Some(color) = color else {
            // Still take part in the id exchange below.
            let mut ids = vec![0u8; UniqueId::BYTES * n];
            self.all_gather(&[0u8; UniqueId::BYTES], &mut ids)?;
            return Ok(None);
        };
        let mut members: Vec<(i64, u32)> = (0..n)
            .filter(|&r| table[2 * r] == i64::from(color))
            .map(|r| (table[2 * r + 1], r as u32))
            .collect();
        members.sort();
        let leader = members[0].1;
        let new_rank = members
            .iter()
            .position(|&(_, r)| r == self.rank)
            .ok_or_else(|| Error::Internal("split: this rank is not among its color".into()))?;
        // The leader of each color starts its rendezvous; everyone learns the ids.
        // A leader that cannot start one still takes part, sending zeros, so that its color
        // fails together instead of waiting for it.
        let mut my_id = [0u8; UniqueId::BYTES];
        let mut leader_error = None;
        if leader == self.rank {
            let bind = SocketAddr::new(self.advertised_ip, 0);
            match UniqueId::new(bind, self.config.timeout) {
                Ok(id) => my_id = id.to_bytes(),
                Err(e) => leader_error = Some(e),
            }
        }
        let mut ids = vec![0u8; UniqueId::BYTES * n];
        self.all_gather(&my_id, &mut ids)?;
        if let Some(e) = leader_error {
            return Err(e);
        }
        let l = leader as usize * UniqueId::BYTES;
        let id = UniqueId::from_bytes(&ids[l..l + UniqueId::BYTES]).map_err(|_| Error::Bootstrap {
            rank: self.rank,
            detail: format!("split: rank {leader}, the leader of color {color}, could not start its rendezvous"),
        })?;
        tracing::info!(
            target: "oxccl::init",
            "rank {} joins split color {color} as rank {new_rank} of {}",
            self.rank,
            members.len()
        );
        Communicator::init(id, members.len() as u32, new_rank as u32, config).map(Some)
    }
}
