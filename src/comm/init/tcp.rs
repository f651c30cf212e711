//! TCP connections at creation: accept from higher ranks while connecting to lower ones.

use super::rank_info::RankInfo;
use super::transport_error;
use crate::bootstrap::wire::{Dec, Enc};
use crate::error::{Error, Result};
use oxccl_transports::tcp::{self, Listener};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Hello payload that tells our own accept thread to stop (no rank has this number).
const STOP: u32 = u32::MAX;

/// One connection per (peer, channel) with every peer in `peers`: the higher rank of a pair
/// connects, the lower accepts (in a thread, so the two proceed together).
#[allow(clippy::too_many_arguments)]
pub(super) fn connect_all(
    listener: Listener,
    key: [u8; 32],
    peers: &[u32],
    infos: &[RankInfo],
    rank: u32,
    nranks: u32,
    nch: usize,
    deadline: Instant,
) -> Result<Vec<(u32, usize, TcpStream)>> {
    let expected = peers.iter().filter(|&&p| p > rank).count() * nch;
    let own_addr = listener.local_addr();
    let acceptor = std::thread::Builder::new()
        .name("oxccl-accept".into())
        .spawn(move || accept_all(&listener, &key, expected, rank, nranks, nch, deadline))
        .map_err(|e| Error::Internal(format!("cannot start the accept thread: {e}")))?;
    let mut streams = Vec::new();
    let mut failure = None;
    'outer: for &p in peers.iter().filter(|&&p| p < rank) {
        for ch in 0..nch {
            let mut hello = Enc::default();
            hello.u32(rank).u32(ch as u32);
            let addr = infos[p as usize].data_addr;
            match tcp::connect(addr, &key, &hello.0, deadline) {
                Ok(s) => streams.push((p, ch, s)),
                Err(e) => {
                    failure = Some(transport_error(rank, p, format!("connect to {addr}"))(e));
                    break 'outer;
                }
            }
        }
    }
    if failure.is_some() {
        // Wake our accept thread so it releases the port now rather than at the deadline.
        let mut stop = Enc::default();
        stop.u32(STOP).u32(0);
        let _ = tcp::connect(
            own_addr,
            &key,
            &stop.0,
            Instant::now() + Duration::from_secs(1),
        );
    }
    let accepted = acceptor
        .join()
        .map_err(|_| Error::Internal("the accept thread panicked".into()))?;
    if let Some(e) = failure {
        return Err(e);
    }
    streams.extend(accepted?);
    Ok(streams)
}

fn accept_all(
    listener: &Listener,
    key: &[u8; 32],
    expected: usize,
    rank: u32,
    nranks: u32,
    nch: usize,
    deadline: Instant,
) -> Result<Vec<(u32, usize, TcpStream)>> {
    let mut got = Vec::with_capacity(expected);
    let mut seen = std::collections::HashSet::new();
    while got.len() < expected {
        let (s, payload, from) = listener
            .accept(key, deadline)
            .map_err(|e| Error::Bootstrap {
                rank,
                detail: format!(
                    "waiting for {} more peer connections on {}: {e}",
                    expected - got.len(),
                    listener.local_addr()
                ),
            })?;
        let mut d = Dec(&payload);
        let (p, ch) = match (d.u32(), d.u32()) {
            (Ok(p), Ok(ch)) => (p, ch as usize),
            _ => {
                tracing::warn!(target: "oxccl::init", "rank {rank}: malformed hello from {from}, ignored");
                continue;
            }
        };
        if p == STOP {
            return Err(Error::Internal("connection setup abandoned".into()));
        }
        if p <= rank || p >= nranks || ch >= nch || !seen.insert((p, ch)) {
            tracing::warn!(target: "oxccl::init", "rank {rank}: unexpected connection claiming rank {p} channel {ch} from {from}, ignored");
            continue;
        }
        got.push((p, ch, s));
    }
    Ok(got)
}
