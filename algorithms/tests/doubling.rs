//! Recursive doubling (all-reduce, all-gather) and recursive halving-doubling
//! (reduce-scatter, all-reduce) are verified for 1..=64 ranks, out of place and in place,
//! with 1 and 2 channels, FIFOs of two chunks and of one, two and three rounds; then for 128
//! and 256 ranks (in and out of place) and 1000 (out of place). Their α–β–γ costs match the
//! closed forms of the module doc, every rank's all-reduce result is the same expression (so
//! the same bits), and broken variants are caught.

use std::collections::{BTreeMap, HashMap, VecDeque};

mod common;

use common::{plans, steps, verify_all};
use oxccl_algorithms::cost::{estimate, traffic, LinkCost, Traffic};
use oxccl_algorithms::verify::{verify, verify_with, Report, VerifyError, VerifyOptions, Wait};
use oxccl_algorithms::{build, Algorithm, Buf, Collective, Plan, Region, Step};

const RD: Algorithm = Algorithm::RecursiveDoubling;
const HD: Algorithm = Algorithm::HalvingDoubling;
const AR: Collective = Collective::AllReduce;
const AG: Collective = Collective::AllGather;
const RS: Collective = Collective::ReduceScatter;

/// Every (algorithm, collective) pair of the module.
const CASES: [(Algorithm, Collective); 4] = [(RD, AR), (RD, AG), (HD, RS), (HD, AR)];

/// `⌊log2 p⌋`.
fn log2(p: u32) -> u32 {
    31 - p.leading_zeros()
}

/// Verifies in and out of place with every combination of `channels` and `(fifo_chunks,
/// rounds)` of `fifos`; returns the first report.
fn check_with(
    a: Algorithm,
    c: Collective,
    p: u32,
    channels: &[u32],
    fifos: &[(u32, u32)],
) -> Report {
    verify_all(a, c, p, channels, &[false, true], fifos).remove(0)
}

/// The full set, in and out of place: one channel with FIFOs of two chunks and two and three
/// rounds and with FIFOs of one chunk; two channels (simulated each on its own, with the same
/// steps) with the defaults.
fn check(a: Algorithm, c: Collective, p: u32) -> Report {
    let report = check_with(a, c, p, &[1], &[(2, 2), (2, 3), (1, 2)]);
    check_with(a, c, p, &[2], &[(2, 2)]);
    report
}

#[test]
fn doubling_all_reduce() {
    for p in 1..=64 {
        let report = check(RD, AR, p);
        let (q, levels) = (1 << log2(p), log2(p) as usize);
        let hosts = p - q;
        // Core ranks: one message per level, hosts one more to their guest; guests one.
        assert_eq!(report.max_sends, levels + usize::from(hosts > 0), "p={p}");
        let messages = q * levels as u32 + 2 * hosts;
        assert_eq!(report.messages_per_round, u64::from(messages), "p={p}");
        for r in 0..p {
            let plan = build(RD, AR, p, r, 1).unwrap();
            assert!(plan.scratch.blocks <= 1, "p={p} r={r}");
            assert_eq!(plan.splits, 1);
        }
    }
}

#[test]
fn doubling_all_gather() {
    for p in 1..=64 {
        let report = check(RD, AG, p);
        // Every rank receives every other rank's block exactly once.
        assert_eq!(report.messages_per_round, u64::from(p * (p - 1)), "p={p}");
        if p.is_power_of_two() {
            assert_eq!(report.max_sends, p as usize - 1, "p={p}");
        }
    }
}

#[test]
fn halving_doubling_reduce_scatter() {
    for p in 1..=64 {
        let report = check(HD, RS, p);
        if p.is_power_of_two() {
            assert_eq!(report.max_sends, p as usize - 1, "p={p}");
            assert_eq!(report.messages_per_round, u64::from(p * (p - 1)), "p={p}");
        }
        for r in 0..p {
            let plan = build(HD, RS, p, r, 1).unwrap();
            // The blocks kept at the first level, and one landing chunk.
            let (q, hosts) = (1 << log2(p), p - (1 << log2(p)));
            let kept = q / 2 + hosts.min(q / 2);
            assert!(plan.scratch.blocks <= kept + 1, "p={p} r={r}");
        }
    }
}

#[test]
fn halving_doubling_all_reduce() {
    for p in 1..=64 {
        let report = check(HD, AR, p);
        let q = 1 << log2(p);
        let hosts = p - q;
        // Per core rank 2(q-1) exchanges, hosts q more sends; guests q sends each.
        let messages = 2 * q * (q - 1) + 2 * hosts * q;
        assert_eq!(report.messages_per_round, u64::from(messages), "p={p}");
        for r in 0..p {
            let plan = build(HD, AR, p, r, 1).unwrap();
            assert!(plan.scratch.blocks <= 1, "p={p} r={r}");
            assert_eq!(plan.splits, q);
        }
    }
}

/// 128 and 256 ranks in and out of place, 1000 out of place (a 1000-rank halving-doubling
/// world takes seconds to verify); one channel (the verifier simulates every channel on its
/// own, with the same steps), FIFOs of two chunks, two rounds.
fn larger_worlds(a: Algorithm, c: Collective) {
    for p in [128, 256] {
        check_with(a, c, p, &[1], &[(2, 2)]);
    }
    verify(&plans(a, c, 1000, 1)).unwrap_or_else(|e| panic!("{a} {c:?} p=1000: {e}"));
}

#[test]
fn larger_worlds_doubling_all_reduce() {
    larger_worlds(RD, AR);
}

#[test]
fn larger_worlds_doubling_all_gather() {
    larger_worlds(RD, AG);
}

#[test]
fn larger_worlds_halving_doubling_reduce_scatter() {
    larger_worlds(HD, RS);
}

#[test]
fn larger_worlds_halving_doubling_all_reduce() {
    larger_worlds(HD, AR);
}

type Fifos = HashMap<(u32, u32), VecDeque<String>>;

fn pop(fifos: &mut Fifos, from: u32, to: u32) -> Option<String> {
    fifos.get_mut(&(from, to)).and_then(VecDeque::pop_front)
}

/// Runs channel 0 of every plan (out of place, one round, unbounded FIFOs) with chunk values
/// as expressions over the inputs in which `⊕` is commutative but not associative (operands
/// sorted, parenthesised): two ranks with the same expression get the same floating-point
/// bits. Returns every rank's output chunks.
fn evaluate(plans: &[Plan]) -> Vec<BTreeMap<(u32, u32), String>> {
    let p = plans.len();
    let mut memory: Vec<HashMap<Region, String>> = vec![HashMap::new(); p];
    let mut fifos = Fifos::new();
    let (mut pc, mut sent) = (vec![0; p], vec![false; p]);
    let read = |memory: &HashMap<Region, String>, rank: usize, region: Region| match region.buf {
        Buf::Input => format!("r{rank}.{}.{}", region.block, region.split),
        _ => memory
            .get(&region)
            .unwrap_or_else(|| panic!("rank {rank} reads unwritten {region}"))
            .clone(),
    };
    let op = |a: String, b: String| {
        if a <= b {
            format!("({a} {b})")
        } else {
            format!("({b} {a})")
        }
    };
    loop {
        let mut progress = false;
        for r in 0..p {
            let me = r as u32;
            let steps = &plans[r].channels[0];
            while let Some(&step) = steps.get(pc[r]) {
                match step {
                    Step::Send { to, src } => {
                        let v = read(&memory[r], r, src);
                        fifos.entry((me, to)).or_default().push_back(v);
                    }
                    Step::Recv { from, dst } => {
                        let Some(v) = pop(&mut fifos, from, me) else {
                            break;
                        };
                        memory[r].insert(dst, v);
                    }
                    Step::RecvReduce { from, src, dst } => {
                        let Some(v) = pop(&mut fifos, from, me) else {
                            break;
                        };
                        let acc = read(&memory[r], r, src);
                        memory[r].insert(dst, op(acc, v));
                    }
                    Step::SendRecv { to, src, from, dst } => {
                        if !sent[r] {
                            let v = read(&memory[r], r, src);
                            fifos.entry((me, to)).or_default().push_back(v);
                            sent[r] = true;
                            progress = true;
                        }
                        let Some(v) = pop(&mut fifos, from, me) else {
                            break;
                        };
                        memory[r].insert(dst, v);
                        sent[r] = false;
                    }
                    Step::Copy { src, dst } => {
                        let v = read(&memory[r], r, src);
                        memory[r].insert(dst, v);
                    }
                    Step::Reduce { src, dst } => {
                        let (acc, v) = (read(&memory[r], r, dst), read(&memory[r], r, src));
                        memory[r].insert(dst, op(acc, v));
                    }
                    other => panic!("unexpected {other}"),
                }
                pc[r] += 1;
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    for (r, plan) in plans.iter().enumerate() {
        assert_eq!(pc[r], plan.channels[0].len(), "rank {r} is stuck");
    }
    memory
        .into_iter()
        .map(|m| {
            m.into_iter()
                .filter(|(region, _)| region.buf == Buf::Output)
                .map(|(region, v)| ((region.block, region.split), v))
                .collect()
        })
        .collect()
}

#[test]
fn all_reduce_results_are_bit_identical_on_every_rank() {
    for a in [RD, HD] {
        for p in (1..=33).chain([64]) {
            let outputs = evaluate(&plans(a, AR, p, 1));
            let splits = if a == HD { 1 << log2(p) } else { 1 };
            assert_eq!(outputs[0].len(), splits as usize, "{a} p={p}");
            for (s, value) in &outputs[0] {
                // Every rank's input, each once.
                assert_eq!(value.matches('r').count(), p as usize, "{a} p={p} {s:?}");
            }
            for (r, out) in outputs.iter().enumerate() {
                assert_eq!(out, &outputs[0], "{a} p={p}: rank {r} differs from rank 0");
            }
        }
    }
}

#[test]
fn the_bit_identity_check_sees_the_association() {
    // Ranks 0 and 1 of 2 both reduce `mine ⊕ theirs`: the same operands, commuted.
    let outputs = evaluate(&plans(RD, AR, 2, 1));
    assert_eq!(outputs[0][&(0, 0)], "(r0.0.0 r1.0.0)");
    assert_eq!(outputs[1], outputs[0]);
    // A host folds its guest in before the exchanges; the guest gets the host's result.
    let outputs = evaluate(&plans(RD, AR, 3, 1));
    assert_eq!(outputs[2][&(0, 0)], "((r0.0.0 r2.0.0) r1.0.0)");
    // The same inputs in another association (one-shot folds in rank order) differ.
    let doubling = evaluate(&plans(RD, AR, 4, 1));
    assert_eq!(doubling[0][&(0, 0)], "((r0.0.0 r1.0.0) (r2.0.0 r3.0.0))");
    let one_shot = evaluate(&plans(Algorithm::OneShot, AR, 4, 1));
    assert_eq!(one_shot[3][&(0, 0)], "(((r0.0.0 r1.0.0) r2.0.0) r3.0.0)");
}

const LINK: LinkCost = LinkCost {
    alpha_s: 1e-6,
    beta_s_per_byte: 1e-10,
    gamma_s_per_byte: 1e-11,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn costs_match_the_closed_forms_for_powers_of_two() {
    let (a, b, g) = (LINK.alpha_s, LINK.beta_s_per_byte, LINK.gamma_s_per_byte);
    for levels in 0..=6u64 {
        let p = 1u32 << levels;
        let pu = u64::from(p);
        for channels in [1, 2, 3] {
            // Divisible by p * channels * elem, so every chunk has the same size.
            let n = pu * u64::from(channels) * 4 * 1000;
            let traffic_of = |lat: u64, msgs: u64, sent: u64, reduced: u64| Traffic {
                latencies: lat,
                messages: msgs,
                bytes_sent: sent,
                bytes_reduced: reduced,
            };
            let cases = [
                (RD, AR, traffic_of(levels, levels, levels * n, levels * n)),
                (RD, AG, traffic_of(pu - 1, pu - 1, (pu - 1) * n, 0)),
                (
                    HD,
                    RS,
                    traffic_of(pu - 1, pu - 1, (pu - 1) * n, (pu - 1) * n),
                ),
                (
                    HD,
                    AR,
                    traffic_of(
                        2 * (pu - 1),
                        2 * (pu - 1),
                        2 * (pu - 1) * n / pu,
                        (pu - 1) * n / pu,
                    ),
                ),
            ];
            for (alg, c, want) in cases {
                for r in [0, p / 2, p - 1] {
                    let plan = build(alg, c, p, r, channels).unwrap();
                    let got = traffic(&plan, n, 4);
                    assert_eq!(got, want, "{alg} {c:?} p={p} r={r} ch={channels}");
                    let seconds = want.latencies as f64 * a
                        + want.bytes_sent as f64 * b
                        + want.bytes_reduced as f64 * g;
                    assert!(close(estimate(&plan, n, 4, &LINK), seconds));
                }
            }
        }
    }
}

#[test]
fn halving_doubling_costs_what_the_ring_costs() {
    // In the α–β–γ model (one α per chunk exchanged) Rabenseifner's plans equal the ring's.
    for p in [2, 4, 8, 16, 32] {
        let n = u64::from(p) * 4 * 1000;
        for (alg, c) in [(HD, AR), (HD, RS), (RD, AG)] {
            let ours = estimate(&build(alg, c, p, 1, 1).unwrap(), n, 4, &LINK);
            let ring = estimate(&build(Algorithm::Ring, c, p, 1, 1).unwrap(), n, 4, &LINK);
            assert!(close(ours, ring), "{alg} {c:?} p={p}: {ours} vs {ring}");
        }
    }
}

#[test]
fn doubling_all_reduce_beats_the_ring_only_for_small_messages() {
    let all_reduce = |alg, p, n| estimate(&build(alg, AR, p, 1, 1).unwrap(), n, 4, &LINK);
    let (a, b, g) = (LINK.alpha_s, LINK.beta_s_per_byte, LINK.gamma_s_per_byte);
    for p in [2u32, 4, 8, 64, 256] {
        // L(α + nβ + nγ) = 2(p-1)α + 2(p-1)/p·nβ + (p-1)/p·nγ.
        let (pf, l) = (f64::from(p), f64::from(log2(p)));
        let cross = (2.0 * (pf - 1.0) - l) * a
            / (l * (b + g) - 2.0 * (pf - 1.0) / pf * b - (pf - 1.0) / pf * g);
        let round = |x: f64| (x as u64) / (4 * u64::from(p)) * (4 * u64::from(p));
        let (below, above) = (round(cross * 0.9), round(cross * 1.1));
        assert!(all_reduce(RD, p, below) < all_reduce(Algorithm::Ring, p, below));
        assert!(all_reduce(RD, p, above) > all_reduce(Algorithm::Ring, p, above));
    }
}

#[test]
fn non_powers_of_two_costs() {
    // Recursive doubling all-reduce on 6 ranks: q = 4, ranks 4 and 5 are the guests of 0, 1.
    let n = 4000;
    let of = |r| traffic(&build(RD, AR, 6, r, 1).unwrap(), n, 4);
    let t = |lat: u64, sent: u64, reduced: u64| Traffic {
        latencies: lat,
        messages: lat,
        bytes_sent: sent * n,
        bytes_reduced: reduced * n,
    };
    assert_eq!(
        of(0),
        t(3, 3, 3),
        "a host folds, exchanges twice, sends back"
    );
    assert_eq!(of(2), t(2, 2, 2));
    assert_eq!(of(5), t(1, 1, 0), "a guest sends once");
    // Halving-doubling all-reduce on 6 ranks: 4 splits; a guest sends all 4.
    let guest = traffic(&build(HD, AR, 6, 4, 1).unwrap(), n, 4);
    assert_eq!((guest.messages, guest.bytes_sent), (4, n));
    let host = traffic(&build(HD, AR, 6, 0, 1).unwrap(), n, 4);
    assert_eq!(host.bytes_sent, 2 * 3 * n / 4 + n);
    assert_eq!(host.bytes_reduced, 3 * n / 4 + n);
}

#[test]
fn missing_reduce_loses_a_contribution() {
    let mut plans = plans(RD, AR, 8, 1);
    let first = steps(&mut plans[3])
        .iter()
        .position(|s| matches!(s, Step::Reduce { .. }))
        .unwrap();
    steps(&mut plans[3]).remove(first);
    let err = verify(&plans).unwrap_err();
    assert!(matches!(err, VerifyError::WrongResult { .. }), "{err}");
    assert!(err.to_string().contains("missing {r3.b0.s0}"), "{err}");
}

#[test]
fn missing_reduce_in_halving_is_caught() {
    for (c, p) in [(RS, 8), (RS, 7), (AR, 8), (AR, 6)] {
        let mut plans = plans(HD, c, p, 1);
        let last = steps(&mut plans[1])
            .iter()
            .rposition(|s| matches!(s, Step::Reduce { .. }))
            .unwrap();
        steps(&mut plans[1]).remove(last);
        let err = verify(&plans).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::WrongResult { .. } | VerifyError::ReadUninitialised { .. }
            ),
            "{c:?} p={p}: {err}"
        );
    }
}

#[test]
fn a_guest_must_send_in_its_hosts_fold_order() {
    // On 6 ranks rank 4 is rank 0's guest; its 4 splits in another order land in the wrong
    // splits.
    let mut plans = plans(HD, AR, 6, 1);
    let sends = steps(&mut plans[4]);
    sends[..4].reverse();
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(&err, VerifyError::SplitMismatch { at, from: 4, .. } if at.rank == 0),
        "{err}"
    );
}

#[test]
fn a_guest_that_never_receives_blocks_its_host() {
    // All-gather on 5 ranks: rank 4, rank 0's guest, only sends its block; rank 0's four sends
    // back fill the connection and wait for room.
    let mut plans = plans(RD, AG, 5, 1);
    steps(&mut plans[4]).truncate(2); // send and copy only
    let err = verify(&plans).unwrap_err();
    let VerifyError::Deadlock { blocked, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(blocked[0].at.rank, 0, "{err}");
    assert_eq!(blocked[0].waiting, Wait::Room { to: 4 }, "{err}");
}

/// Each run of `send_recv`s to one partner becomes all its sends, then all its receives.
fn sends_first(steps: &[Step]) -> Vec<Step> {
    let mut out = Vec::new();
    let mut run: Vec<Step> = Vec::new();
    let flush = |out: &mut Vec<Step>, run: &mut Vec<Step>| {
        for step in run.iter() {
            if let Step::SendRecv { to, src, .. } = *step {
                out.push(Step::Send { to, src });
            }
        }
        for step in run.drain(..) {
            if let Step::SendRecv { from, dst, .. } = step {
                out.push(Step::Recv { from, dst });
            }
        }
    };
    for &step in steps {
        match step {
            Step::SendRecv { to, .. } if run.first().and_then(Step::send_peer) == Some(to) => {
                run.push(step)
            }
            Step::SendRecv { .. } => {
                flush(&mut out, &mut run);
                run.push(step);
            }
            _ => {
                flush(&mut out, &mut run);
                out.push(step);
            }
        }
    }
    flush(&mut out, &mut run);
    out
}

#[test]
fn sending_a_whole_level_first_overflows_the_fifo() {
    // All-gather on 8 ranks: level 2 exchanges 4 blocks. Sent all before receiving, both
    // partners fill their FIFOs of two chunks and wait for each other.
    let mut plans = plans(RD, AG, 8, 1);
    for plan in &mut plans {
        plan.channels[0] = sends_first(&plan.channels[0]);
    }
    let err = verify(&plans).unwrap_err();
    let VerifyError::Deadlock { blocked, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(blocked.len(), 8, "{err}");
    // With room for a whole level it runs.
    let roomy = VerifyOptions {
        fifo_chunks: 4,
        rounds: 1,
        ..VerifyOptions::default()
    };
    verify_with(&plans, &roomy).unwrap();
}

#[test]
fn landing_in_the_output_first_breaks_in_place() {
    // Rank 2 of 4 receives its first partial into the output instead of scratch: right out
    // of place; in place, the output is the input it is still sending.
    let mut plans = plans(RD, AR, 4, 1);
    let (input, output) = (
        Region::new(Buf::Input, 0, 0),
        Region::new(Buf::Output, 0, 0),
    );
    let scratch = Region::new(Buf::Scratch, 0, 0);
    plans[2].channels[0] = vec![
        Step::SendRecv {
            to: 3,
            src: input,
            from: 3,
            dst: output,
        },
        Step::Reduce {
            src: input,
            dst: output,
        },
        Step::SendRecv {
            to: 0,
            src: output,
            from: 0,
            dst: scratch,
        },
        Step::Reduce {
            src: scratch,
            dst: output,
        },
    ];
    verify(&plans).unwrap();
    let in_place = VerifyOptions {
        in_place: true,
        ..VerifyOptions::default()
    };
    let err = verify_with(&plans, &in_place).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Race { at, .. } if at.rank == 2),
        "{err}"
    );
}

#[test]
fn one_rank_copies() {
    for (a, c) in CASES {
        let plan = build(a, c, 1, 0, 1).unwrap();
        assert_eq!(
            plan.channels[0],
            [Step::Copy {
                src: Region::new(Buf::Input, 0, 0),
                dst: Region::new(Buf::Output, 0, 0),
            }],
            "{a} {c:?}"
        );
        assert_eq!(plan.scratch.blocks, 0);
    }
}
