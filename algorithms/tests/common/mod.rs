//! Helpers shared by the integration tests: building every rank's plan and verifying it over
//! combinations of channels, in-place modes, FIFO depths and rounds.
//!
//! Each test file compiles this module on its own, so an item that some files do not use is
//! marked `#[allow(dead_code)]`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use oxccl_algorithms::verify::{verify_with, Report, VerifyOptions};
use oxccl_algorithms::{build, Algorithm, Buf, Collective, Plan, Region, Step};

/// Every rank's plan of `alg`'s `c` on `p` ranks, asking for `nchannels` channels.
pub fn plans(alg: Algorithm, c: Collective, p: u32, nchannels: u32) -> Vec<Plan> {
    (0..p)
        .map(|r| build(alg, c, p, r, nchannels).unwrap())
        .collect()
}

/// The default options but for these three.
pub fn options(in_place: bool, rounds: u32, fifo_chunks: u32) -> VerifyOptions {
    VerifyOptions {
        in_place,
        rounds,
        fifo_chunks,
        ..VerifyOptions::default()
    }
}

/// Verifies `plans` in each mode of `in_place` with each `(fifo_chunks, rounds)` of `fifos`,
/// in that nesting order; the first failure panics with `what`, the options and the error.
/// Returns the reports in that order.
pub fn verify_modes(
    plans: &[Plan],
    what: &str,
    in_place: &[bool],
    fifos: &[(u32, u32)],
) -> Vec<Report> {
    let mut reports = Vec::new();
    for &in_place in in_place {
        for &(fifo_chunks, rounds) in fifos {
            let options = options(in_place, rounds, fifo_chunks);
            let report =
                verify_with(plans, &options).unwrap_or_else(|e| panic!("{what} {options:?}: {e}"));
            reports.push(report);
        }
    }
    reports
}

/// Builds `alg`'s `c` plans on `p` ranks with each of `channels` and verifies them with
/// [`verify_modes`], asserting that every report counts those channels. Returns every
/// report, channels outermost.
// Not every test file sweeps channels this way (some assert per channel count themselves).
#[allow(dead_code)]
pub fn verify_all(
    alg: Algorithm,
    c: Collective,
    p: u32,
    channels: &[u32],
    in_place: &[bool],
    fifos: &[(u32, u32)],
) -> Vec<Report> {
    let mut reports = Vec::new();
    for &nchannels in channels {
        let plans = plans(alg, c, p, nchannels);
        let what = format!("{alg} {c:?} p={p} ch={nchannels}");
        for report in verify_modes(&plans, &what, in_place, fifos) {
            assert_eq!(report.nchannels, nchannels);
            reports.push(report);
        }
    }
    reports
}

/// Out of place and in place, except all-to-all: in place, the ring's and Bruck's
/// all-to-all would overwrite blocks they have yet to send, so the engine gives them a
/// private copy of the input instead (load/store plans need none).
// Only the files that verify all-to-all next to other collectives use it.
#[allow(dead_code)]
pub fn in_place_modes(c: Collective) -> &'static [bool] {
    if c == Collective::AllToAll {
        &[false]
    } else {
        &[false, true]
    }
}

/// Every root up to 16 ranks, then 0, 1, p/2, p−1 (keeps the tests quick).
// Only the files with rooted collectives use it.
#[allow(dead_code)]
pub fn roots(p: u32) -> Vec<u32> {
    if p <= 16 {
        (0..p).collect()
    } else {
        let mut roots = vec![0, 1, p / 2, p - 1];
        roots.dedup();
        roots
    }
}

/// `⌈log2 p⌉`.
// Only the tree-shaped algorithms' files use it.
#[allow(dead_code)]
pub fn ceil_log2(p: u32) -> u32 {
    p.next_power_of_two().trailing_zeros()
}

/// Channel 0's steps.
// Only the files that break plans through channel 0 this way use it.
#[allow(dead_code)]
pub fn steps(plan: &mut Plan) -> &mut Vec<Step> {
    &mut plan.channels[0]
}

/// A rank's output expressions by `(block, split)`, as [`run`] returns them.
pub type Outputs = BTreeMap<(u32, u32), String>;

/// One round of channel 0 of every plan, with unbounded connections, values as expressions
/// (`x3` the input of rank 3, `(a+b)` a reduction with `a` the left operand) and a clock per
/// rank: a message arrives one unit after it is sent; with `occupy`, a send also keeps its
/// rank busy for that unit (otherwise sends are free). Panics on a read of an unwritten
/// region, a message landing in another split than it left, a stuck rank or an unreceived
/// message. Returns every rank's output expressions by `(block, split)` written, and the time
/// the last step finished.
// Only the files that check the tree-shaped algorithms' expressions and clocks use it.
#[allow(dead_code)]
pub fn run(plans: &[Plan], occupy: bool) -> (Vec<Outputs>, u64) {
    type Fifo = VecDeque<(u32, String, u64)>;
    let p = plans.len();
    let mut memory: Vec<HashMap<Region, String>> = vec![HashMap::new(); p];
    let mut fifos: HashMap<(usize, u32), Fifo> = HashMap::new();
    let mut pc = vec![0; p];
    let mut clock = vec![0u64; p];
    loop {
        let mut progress = false;
        for r in 0..p {
            let steps = &plans[r].channels[0];
            while let Some(&step) = steps.get(pc[r]) {
                let incoming = match step.recv_peer() {
                    Some(from) => match fifos.get_mut(&(from as usize, r as u32)) {
                        Some(q) if !q.is_empty() => q.pop_front(),
                        _ => break,
                    },
                    None => None,
                };
                let mut t = clock[r];
                let mut inc = String::new();
                if let Some((split, value, at)) = incoming {
                    t = t.max(at);
                    let lands = step.regions().last().unwrap();
                    assert_eq!(split, lands.split, "rank {r}: {step}");
                    inc = value;
                }
                let mem = &mut memory[r];
                let read = |mem: &HashMap<Region, String>, region: Region| match region.buf {
                    Buf::Input => format!("x{r}"),
                    _ => mem
                        .get(&region)
                        .unwrap_or_else(|| panic!("rank {r} reads unwritten {region}"))
                        .clone(),
                };
                let sent = match step {
                    Step::Send { to, src } => Some((to, src.split, read(mem, src))),
                    Step::Recv { dst, .. } => {
                        mem.insert(dst, inc);
                        None
                    }
                    Step::RecvReduce { src, dst, .. } => {
                        let v = format!("({}+{inc})", read(mem, src));
                        mem.insert(dst, v);
                        None
                    }
                    Step::RecvReduceSend { to, src, .. } => {
                        Some((to, src.split, format!("({}+{inc})", read(mem, src))))
                    }
                    Step::RecvReduceCopySend { to, src, dst, .. } => {
                        let v = format!("({}+{inc})", read(mem, src));
                        mem.insert(dst, v.clone());
                        Some((to, dst.split, v))
                    }
                    Step::RecvCopySend { to, dst, .. } => {
                        mem.insert(dst, inc.clone());
                        Some((to, dst.split, inc))
                    }
                    Step::Copy { src, dst } => {
                        let v = read(mem, src);
                        mem.insert(dst, v);
                        None
                    }
                    Step::Reduce { src, dst } => {
                        let v = format!("({}+{})", read(mem, dst), read(mem, src));
                        mem.insert(dst, v);
                        None
                    }
                    other => panic!("unexpected {other}"),
                };
                if let Some((to, split, value)) = sent {
                    fifos
                        .entry((r, to))
                        .or_default()
                        .push_back((split, value, t + 1));
                    if occupy {
                        t += 1;
                    }
                }
                clock[r] = t;
                pc[r] += 1;
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    for r in 0..p {
        assert_eq!(pc[r], plans[r].channels[0].len(), "rank {r} is stuck");
    }
    assert!(
        fifos.values().all(VecDeque::is_empty),
        "unreceived messages"
    );
    let outputs = memory
        .into_iter()
        .map(|mem| {
            mem.into_iter()
                .filter(|(region, _)| region.buf == Buf::Output)
                .map(|(region, v)| ((region.block, region.split), v))
                .collect()
        })
        .collect();
    (outputs, clock.into_iter().max().unwrap_or(0))
}

/// The ranks named in an expression of [`run`], in order.
// Only the files that check [`run`]'s expressions use it.
#[allow(dead_code)]
pub fn operands(expression: &str) -> Vec<u32> {
    expression
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|t| t.strip_prefix('x'))
        .map(|n| n.parse().unwrap())
        .collect()
}
