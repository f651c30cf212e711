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

/// One connection per (peer, channel) in `wanted`: the higher rank of a pair connects, the
/// lower accepts (in a thread, so the two proceed together). Every rank lists the same
/// pairs from its side (`(p, ch)` here, `(rank, ch)` on `p`).
pub(super) fn connect_all(
    listener: Listener,
    key: [u8; 32],
    wanted: &[(u32, usize)],
    infos: &[RankInfo],
    rank: u32,
    deadline: Instant,
) -> Result<Vec<(u32, usize, TcpStream)>> {
    let expected: std::collections::HashSet<(u32, usize)> =
        wanted.iter().copied().filter(|&(p, _)| p > rank).collect();
    let own_addr = listener.local_addr();
    let acceptor = std::thread::Builder::new()
        .name("oxccl-accept".into())
        .spawn(move || accept_all(&listener, &key, expected, rank, deadline))
        .map_err(|e| Error::Internal(format!("cannot start the accept thread: {e}")))?;
    let mut streams = Vec::new();
    let mut failure = None;
    for &(p, ch) in wanted.iter().filter(|&&(p, _)| p < rank) {
        let mut hello = Enc::default();
        hello.u32(rank).u32(ch as u32);
        let addr = infos[p as usize].data_addr;
        match tcp::connect(addr, &key, &hello.0, deadline) {
            Ok(s) => streams.push((p, ch, s)),
            Err(e) => {
                failure = Some(transport_error(rank, p, format!("connect to {addr}"))(e));
                break;
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
    mut expected: std::collections::HashSet<(u32, usize)>,
    rank: u32,
    deadline: Instant,
) -> Result<Vec<(u32, usize, TcpStream)>> {
    let mut got = Vec::with_capacity(expected.len());
    while !expected.is_empty() {
        let (s, payload, from) = listener
            .accept(key, deadline)
            .map_err(|e| Error::Bootstrap {
                rank,
                detail: format!(
                    "waiting for {} more peer connections on {}: {e}",
                    expected.len(),
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
        if !expected.remove(&(p, ch)) {
            tracing::warn!(target: "oxccl::init", "rank {rank}: unexpected connection claiming rank {p} channel {ch} from {from}, ignored");
            continue;
        }
        got.push((p, ch, s));
    }
    Ok(got)
}
