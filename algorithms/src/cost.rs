//! The α–β–γ cost of a plan, for the tuner and the simulator.
//!
//! # Model
//! - α: latency of one message, counted once per message on the channel's critical path
//!   ([`Traffic::latencies`]): a sending step that moves a non-empty chunk (the engine skips
//!   empty ones) adds an α when it is the channel's first, or when a non-empty chunk was
//!   received since the last one that added an α. A fused step's own receive counts (it
//!   sends what it received); a `SendRecv`'s does not (its halves are independent). So the
//!   ring's steps, each waiting on its predecessor's message, add up, while sends issued back
//!   to back to different peers (one-shot) overlap their latencies: one α.
//! - β: seconds per byte on the rank's link.
//! - γ: seconds per byte reduced (by a reducing receive or a local `Reduce`).
//!
//! [`estimate`] walks one rank's plan: the channels run concurrently, so their latencies
//! overlap (α counts the latencies of the busiest channel) while they share the link
//! and the reducer (β and γ count the bytes of all channels). Chunk sizes are those the
//! engine gives each region for a block of `bytes_per_rank` bytes (NCCL's `count` times the
//! element size: the whole buffer of all-reduce, broadcast and reduce, one rank's block of
//! all-gather, reduce-scatter and all-to-all), in one round.
//!
//! For the lock-step ring collectives this is the textbook cost, `n = bytes_per_rank`:
//! - all-reduce: `2(p-1)α + 2(p-1)/p·nβ + (p-1)/p·nγ`;
//! - all-gather: `(p-1)α + (p-1)nβ` (with `N = p·n` the output: `(p-1)/p·Nβ`);
//! - reduce-scatter: `(p-1)α + (p-1)nβ + (p-1)nγ`;
//! - all-to-all: `(p-1)α + (p-1)nβ`.
//!
//! For one-shot all-reduce ([`crate::one_shot`]): `α + (p-1)nβ + (p-1)nγ` (`0` for one rank).
//!
//! For the load/store algorithms ([`crate::load_store`]) bytes a rank reads from the others'
//! windows count as sent (β: they cross the interconnect), each new phase it waits for as
//! one α, and a `reduce_from_peers` reduces the `p-1` peers' chunks: one-shot all-reduce
//! costs `α + (p-1)n(β+γ)`, two-shot `2α + 2(p-1)/p·nβ + (p-1)/p·nγ`, the ring's bandwidth
//! with two latencies instead of `2(p-1)`.
//!
//! For the chains of broadcast and reduce, one rank's plan holds only its own hop
//! (`α + nβ`, plus `nγ` for reduce): the chain's latency `(p-1)α` and its pipelining over
//! rounds are not visible to one rank, and a tuner must add them itself.
//!
//! β charges a message's bytes to its sender. That is every rank's share for the symmetric
//! collectives, where each rank receives what it sends, but not for a gather, whose root only
//! receives: the linear gather ([`crate::linear`]) costs each other rank `α + nβ` here while
//! the root's link carries `(p-1)·n`. [`received`] counts what a plan receives, so that a
//! tuner can take `max(sent, received)·β` for full-duplex links; a scatter's root sends its
//! `(p-1)·n` and is costed as usual: `α + (p-1)nβ`.

mod nodes;

pub use nodes::{
    estimate_algorithm, estimate_op, estimate_with_nodes, traffic_by_link, LinkTraffic, NodeLinks,
};

use crate::plan::{channel_piece, split_range};
use crate::{Plan, Region, Step};

/// The cost parameters of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkCost {
    /// Latency of one message, seconds.
    pub alpha_s: f64,
    /// Transfer time, seconds per byte.
    pub beta_s_per_byte: f64,
    /// Reduction time, seconds per byte reduced.
    pub gamma_s_per_byte: f64,
}

/// What one plan moves and computes, in one round covering the whole op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Message latencies on the critical path of the busiest channel (the α count; see the
    /// module doc).
    pub latencies: u64,
    /// Sending steps with a non-empty chunk on the busiest channel.
    pub messages: u64,
    /// Bytes sent, all channels.
    pub bytes_sent: u64,
    /// Bytes reduced, all channels.
    pub bytes_reduced: u64,
}

impl Traffic {
    /// The time this traffic takes on `link`, seconds.
    pub fn seconds(&self, link: &LinkCost) -> f64 {
        self.latencies as f64 * link.alpha_s
            + self.bytes_sent as f64 * link.beta_s_per_byte
            + self.bytes_reduced as f64 * link.gamma_s_per_byte
    }
}

/// Counts the messages, bytes sent and bytes reduced of `plan` for blocks of
/// `bytes_per_rank` bytes of `elem_size`-byte elements (see the module doc).
pub fn traffic(plan: &Plan, bytes_per_rank: u64, elem_size: u32) -> Traffic {
    let [all, _] = walk(plan, bytes_per_rank, elem_size, |_| 0);
    all
}

/// [`traffic`] split by link class: `class(peer)` (0 or 1) is the class of the link to
/// `peer`; a send's bytes, message and α go to its class; reductions and one-sided loads
/// to class 0.
fn walk(
    plan: &Plan,
    bytes_per_rank: u64,
    elem_size: u32,
    class: impl Fn(u32) -> usize,
) -> [Traffic; 2] {
    let elem = u64::from(elem_size.max(1));
    let block_len = bytes_per_rank / elem;
    let nchannels = u32::try_from(plan.channels.len()).unwrap_or(u32::MAX);
    let mut total = [Traffic::default(); 2];
    for (c, steps) in plan.channels.iter().enumerate() {
        let piece = channel_piece(block_len, nchannels, c as u32);
        let window = piece.end - piece.start;
        let bytes = |region: Region| {
            let range = split_range(window, plan.splits, region.split);
            (range.end - range.start) * elem
        };
        let (mut messages, mut latencies) = ([0u64; 2], [0u64; 2]);
        // A non-empty chunk was received since the last send that added an α (the first
        // send always adds one).
        let mut waited = true;
        // The highest phase a one-sided read waited for so far: each new one is an α.
        let mut phase_waited = 0;
        let others = u64::from(plan.nranks.saturating_sub(1));
        for step in steps {
            // One-sided reads: the bytes cross the interconnect as loads (β), every new
            // phase waited for is one latency (α).
            let loaded = match *step {
                Step::ReduceFromPeers { peers, phase, .. } => {
                    Some((phase, others * bytes(peers), others * bytes(peers)))
                }
                Step::CopyFromPeer { src, phase, .. } => Some((phase, bytes(src), 0)),
                _ => None,
            };
            if let Some((phase, moved, reduced)) = loaded {
                if moved > 0 && phase > phase_waited {
                    phase_waited = phase;
                    latencies[0] += 1;
                }
                total[0].bytes_sent += moved;
                total[0].bytes_reduced += reduced;
                continue;
            }
            // (sent, received before sending, received independently, reduced)
            let (sent, fused, received, reduced) = match *step {
                Step::Send { src, .. } => (Some(src), None, None, None),
                Step::SendRecv { src, dst, .. } => (Some(src), None, Some(dst), None),
                Step::RecvReduceSend { src, .. } => (Some(src), Some(src), None, Some(src)),
                Step::RecvReduceCopySend { dst, .. } => (Some(dst), Some(dst), None, Some(dst)),
                Step::RecvCopySend { dst, .. } => (Some(dst), Some(dst), None, None),
                Step::RecvReduce { dst, .. } => (None, None, Some(dst), Some(dst)),
                Step::Recv { dst, .. } => (None, None, Some(dst), None),
                Step::Reduce { dst, .. } => (None, None, None, Some(dst)),
                Step::Copy { .. }
                | Step::Post { .. }
                | Step::ReduceFromPeers { .. }
                | Step::CopyFromPeer { .. } => (None, None, None, None),
            };
            let nonempty = |region: Option<Region>| region.map(bytes).filter(|&b| b > 0);
            waited |= nonempty(fused).is_some();
            if let Some(bytes) = nonempty(sent) {
                let k = step.send_peer().map_or(0, &class);
                messages[k] += 1;
                total[k].bytes_sent += bytes;
                if std::mem::take(&mut waited) {
                    latencies[k] += 1;
                }
            }
            waited |= nonempty(received).is_some();
            total[0].bytes_reduced += reduced.map_or(0, bytes);
        }
        for k in 0..2 {
            total[k].latencies = total[k].latencies.max(latencies[k]);
            total[k].messages = total[k].messages.max(messages[k]);
        }
    }
    total
}

/// Bytes `plan` receives through connections, all channels, for blocks of `bytes_per_rank`
/// bytes of `elem_size`-byte elements (one round covering the op, as in [`traffic`]): every
/// step that receives a non-empty chunk counts it. One-sided reads are not counted here:
/// [`Traffic::bytes_sent`] holds them already (see the module doc).
pub fn received(plan: &Plan, bytes_per_rank: u64, elem_size: u32) -> u64 {
    let elem = u64::from(elem_size.max(1));
    let block_len = bytes_per_rank / elem;
    let nchannels = u32::try_from(plan.channels.len()).unwrap_or(u32::MAX);
    let mut total = 0;
    for (c, steps) in plan.channels.iter().enumerate() {
        let piece = channel_piece(block_len, nchannels, c as u32);
        let window = piece.end - piece.start;
        for step in steps {
            // The region the incoming chunk lands in or is combined with (same split, so
            // the same size).
            let landing = match *step {
                Step::Recv { dst, .. }
                | Step::RecvReduce { dst, .. }
                | Step::RecvReduceCopySend { dst, .. }
                | Step::RecvCopySend { dst, .. }
                | Step::SendRecv { dst, .. } => Some(dst),
                Step::RecvReduceSend { src, .. } => Some(src),
                _ => None,
            };
            if let Some(region) = landing {
                let range = split_range(window, plan.splits, region.split);
                total += (range.end - range.start) * elem;
            }
        }
    }
    total
}

/// The α–β–γ time of `plan`, seconds, for blocks of `bytes_per_rank` bytes of
/// `elem_size`-byte elements (see the module doc for what it includes).
pub fn estimate(plan: &Plan, bytes_per_rank: u64, elem_size: u32, link: &LinkCost) -> f64 {
    traffic(plan, bytes_per_rank, elem_size).seconds(link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, Algorithm, Collective};

    const LINK: LinkCost = LinkCost {
        alpha_s: 1e-6,
        beta_s_per_byte: 1e-10,
        gamma_s_per_byte: 1e-11,
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
    }

    fn ring(c: Collective, p: u32, r: u32, channels: u32) -> Plan {
        build(Algorithm::Ring, c, p, r, channels).unwrap()
    }

    #[test]
    fn ring_matches_the_textbook_formulas() {
        let (a, b, g) = (LINK.alpha_s, LINK.beta_s_per_byte, LINK.gamma_s_per_byte);
        for p in 1..=16u32 {
            for channels in [1, 2, 3] {
                // Divisible by p * channels * elem, so every chunk has the same size.
                let n = u64::from(p * channels * 4) * 1000;
                let (pf, nf) = (f64::from(p), n as f64);
                let cases = [
                    (
                        Collective::AllReduce,
                        2.0 * (pf - 1.0) * a
                            + 2.0 * (pf - 1.0) / pf * nf * b
                            + (pf - 1.0) / pf * nf * g,
                    ),
                    (Collective::AllGather, (pf - 1.0) * (a + nf * b)),
                    (
                        Collective::ReduceScatter,
                        (pf - 1.0) * (a + nf * b + nf * g),
                    ),
                    (Collective::AllToAll, (pf - 1.0) * (a + nf * b)),
                ];
                for (c, want) in cases {
                    for r in [0, p / 2, p - 1] {
                        let got = estimate(&ring(c, p, r, channels), n, 4, &LINK);
                        assert!(
                            close(got, want),
                            "{c:?} p={p} ch={channels}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn one_shot_matches_its_formula() {
        let (a, b, g) = (LINK.alpha_s, LINK.beta_s_per_byte, LINK.gamma_s_per_byte);
        for p in 1..=16u32 {
            for channels in [1, 2, 3] {
                let n = u64::from(channels * 4) * 1000;
                let (q, nf) = (f64::from(p - 1), n as f64);
                let want = if p == 1 { 0.0 } else { a + q * nf * (b + g) };
                for r in [0, p / 2, p - 1] {
                    let plan = build(Algorithm::OneShot, Collective::AllReduce, p, r, channels);
                    let plan = plan.unwrap();
                    let t = traffic(&plan, n, 4);
                    assert_eq!(t.latencies, u64::from(p > 1), "p={p} r={r}");
                    assert_eq!(t.messages, u64::from(p - 1));
                    assert_eq!(
                        (t.bytes_sent, t.bytes_reduced),
                        (q as u64 * n, q as u64 * n)
                    );
                    let got = estimate(&plan, n, 4, &LINK);
                    assert!(
                        close(got, want),
                        "p={p} r={r} ch={channels}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_shot_beats_the_ring_only_for_small_messages() {
        let all_reduce = |alg, p, n| {
            estimate(
                &build(alg, Collective::AllReduce, p, 1, 1).unwrap(),
                n,
                4,
                &LINK,
            )
        };
        for p in [2, 4, 8, 64] {
            // The crossover from the module doc of `one_shot`.
            let (pf, b, g) = (f64::from(p), LINK.beta_s_per_byte, LINK.gamma_s_per_byte);
            let cross =
                (2.0 * pf - 3.0) * LINK.alpha_s / ((pf - 1.0) * (b + g - (2.0 * b + g) / pf));
            let (below, above) = ((cross * 0.9) as u64 / 4 * 4, (cross * 1.1) as u64 / 4 * 4);
            assert!(
                all_reduce(Algorithm::OneShot, p, below) < all_reduce(Algorithm::Ring, p, below)
            );
            assert!(
                all_reduce(Algorithm::OneShot, p, above) > all_reduce(Algorithm::Ring, p, above)
            );
        }
    }

    #[test]
    fn load_store_costs() {
        for p in 2..=16u32 {
            let n = u64::from(p * 4) * 1000;
            let q = u64::from(p - 1);
            let two = build(Algorithm::LoadStoreTwoShot, Collective::AllReduce, p, 1, 1);
            let t = traffic(&two.unwrap(), n, 4);
            assert_eq!(t.latencies, 2, "p={p}");
            assert_eq!(t.bytes_sent, 2 * q * n / u64::from(p));
            assert_eq!(t.bytes_reduced, q * n / u64::from(p));
            let one = build(Algorithm::LoadStoreOneShot, Collective::AllReduce, p, 1, 1);
            let t = traffic(&one.unwrap(), n, 4);
            assert_eq!(
                (t.latencies, t.bytes_sent, t.bytes_reduced),
                (1, q * n, q * n)
            );
        }
    }

    #[test]
    fn chain_hops_and_p2p() {
        let n = 4096;
        let hop = LINK.alpha_s + n as f64 * LINK.beta_s_per_byte;
        let bcast = Collective::Broadcast { root: 2 };
        assert!(close(estimate(&ring(bcast, 4, 2, 1), n, 4, &LINK), hop));
        assert!(close(estimate(&ring(bcast, 4, 1, 2), n, 4, &LINK), 0.0));
        let reduce = Collective::Reduce { root: 0 };
        let reduced = n as f64 * LINK.gamma_s_per_byte;
        assert!(close(
            estimate(&ring(reduce, 4, 0, 1), n, 4, &LINK),
            reduced
        ));
        assert!(close(
            estimate(&ring(reduce, 4, 3, 1), n, 4, &LINK),
            hop + reduced
        ));
        let send = ring(Collective::Send { peer: 1 }, 2, 0, 1);
        assert!(close(estimate(&send, n, 4, &LINK), hop));
    }

    #[test]
    fn linear_gather_and_scatter_match_their_closed_forms() {
        let (a, b) = (LINK.alpha_s, LINK.beta_s_per_byte);
        for p in 1..=16u32 {
            for channels in [1, 2, 3] {
                let n = u64::from(channels * 4) * 1000;
                let (q, nf) = (u64::from(p - 1), n as f64);
                for root in [0, p / 2, p - 1] {
                    let plan = |c, r| build(Algorithm::Linear, c, p, r, channels).unwrap();
                    let (gather, scatter) =
                        (Collective::Gather { root }, Collective::Scatter { root });
                    // The root receives p-1 blocks and sends nothing; its scatter sends them
                    // back to back.
                    let g = plan(gather, root);
                    assert_eq!(traffic(&g, n, 4), Traffic::default(), "p={p}");
                    assert_eq!(received(&g, n, 4), q * n, "p={p} root={root}");
                    let s = plan(scatter, root);
                    let t = traffic(&s, n, 4);
                    assert_eq!((t.latencies, t.messages), (u64::from(p > 1), q));
                    assert_eq!((t.bytes_sent, received(&s, n, 4)), (q * n, 0));
                    let want = if p == 1 { 0.0 } else { a + q as f64 * nf * b };
                    assert!(close(estimate(&s, n, 4, &LINK), want), "p={p}");
                    for r in (0..p).filter(|&r| r != root) {
                        // Every other rank: one message each way, α + nβ.
                        let g = plan(gather, r);
                        let t = traffic(&g, n, 4);
                        assert_eq!((t.latencies, t.messages, t.bytes_sent), (1, 1, n));
                        assert!(close(estimate(&g, n, 4, &LINK), a + nf * b));
                        assert_eq!(received(&g, n, 4), 0);
                        let s = plan(scatter, r);
                        assert_eq!(traffic(&s, n, 4), Traffic::default());
                        assert_eq!(received(&s, n, 4), n);
                    }
                }
            }
        }
    }

    #[test]
    fn received_matches_sent_for_the_ring() {
        for p in 1..=8u32 {
            let n = u64::from(p * 4) * 1000;
            for c in [
                Collective::AllReduce,
                Collective::AllGather,
                Collective::AllToAll,
            ] {
                let plan = ring(c, p, p / 2, 2);
                assert_eq!(received(&plan, n, 4), traffic(&plan, n, 4).bytes_sent);
            }
        }
    }

    #[test]
    fn empty_chunks_cost_nothing() {
        // 3 elements over 8 ranks: 5 of every rank's 8 all-reduce chunks are empty.
        let plan = ring(Collective::AllReduce, 8, 0, 1);
        let t = traffic(&plan, 12, 4);
        assert_eq!(t.bytes_sent % 4, 0);
        assert!(t.messages < 14, "{t:?}");
        assert_eq!(traffic(&plan, 0, 4), Traffic::default());
    }
}
