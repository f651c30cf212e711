//! Verbs connections at creation, set up over the authenticated TCP streams.

use super::transport_error;
use crate::config::Config;
use crate::error::{Error, Result};
use oxccl_transports::ib::{Port, Setup};
use oxccl_transports::{FifoConfig, RecvChannel, SendChannel};
use std::net::TcpStream;
use std::time::Instant;

/// One connection's two ends: peer, channel, sender, receiver.
pub(super) type Ends = (u32, usize, Box<dyn SendChannel>, Box<dyn RecvChannel>);

/// Turns every `(peer, channel, stream)` into a verbs connection, channel `c` on port
/// `c mod ports.len()` (several ports are several rails). Each set-up step runs over all
/// streams before the next (see [`Setup`]), so the ranks' different stream orders cannot
/// deadlock.
pub(super) fn connect(
    streams: Vec<(u32, usize, TcpStream)>,
    ports: &[Port],
    labels: &[String],
    config: &Config,
    rank: u32,
    deadline: Instant,
) -> Result<Vec<Ends>> {
    if ports.is_empty() {
        return Err(Error::Internal(format!(
            "rank {rank} has verbs peers but no RDMA port"
        )));
    }
    let fifo = FifoConfig {
        slot_size: config.slot_size,
        nslots: config.nslots,
    };
    let mut setups = Vec::with_capacity(streams.len());
    for (p, ch, s) in streams {
        let port = &ports[ch % ports.len()];
        let label = labels[p as usize].clone();
        let setup = Setup::start(s, label, port, fifo, &config.ib, deadline).map_err(
            transport_error(rank, p, format!("set up verbs on {}", port.describe())),
        )?;
        setups.push((p, ch, setup));
    }
    for (p, _, setup) in &mut setups {
        setup
            .exchange()
            .map_err(transport_error(rank, *p, "connect verbs queue pairs"))?;
    }
    setups
        .into_iter()
        .map(|(p, ch, setup)| {
            let (tx, rx) =
                setup
                    .finish()
                    .map_err(transport_error(rank, p, "finish verbs set-up"))?;
            Ok((
                p,
                ch,
                Box::new(tx) as Box<dyn SendChannel>,
                Box::new(rx) as Box<dyn RecvChannel>,
            ))
        })
        .collect()
}
