//! The health of a communicator's ranks: who is alive, where each rank is in its sequence of
//! operations, and the reports that turn a hang into a sentence naming the culprit.
//!
//! Every rank of a communicator with more than one rank runs a watchdog thread
//! ([`watchdog`]) holding one authenticated control connection to every other rank. Over
//! them it sends a heartbeat every [`watchdog::BEAT`] with this rank's op counters, answers
//! queries at once, and says goodbye when the communicator is dropped. A connection that
//! closes without a goodbye means the peer's process is gone (killed, crashed): the
//! watchdog records that rank as dead, tells the others, and every wait of this rank fails
//! with an error naming it. When a wait passes its deadline instead, the rank asks every
//! peer for its counters and the error says who has not reached the op ("rank 3 has not
//! entered all_reduce #57 (it finished #56)") or who does not answer at all.

pub(crate) mod watchdog;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `dead` when no rank is known dead.
const NONE: u32 = u32::MAX;

/// Names of the op kinds a heartbeat carries (its index on the wire; 0: none yet).
const KINDS: &[&str] = &[
    "no op",
    "all_reduce",
    "all_gather",
    "reduce_scatter",
    "all_to_all",
    "broadcast",
    "reduce",
    "gather",
    "scatter",
    "send/recv",
];

/// The wire index of an op kind's name.
pub(crate) fn kind_code(name: &str) -> u32 {
    match name {
        "send" | "recv" => 9,
        _ => KINDS.iter().position(|k| *k == name).unwrap_or(0) as u32,
    }
}

/// The name of an op kind's wire index.
pub(crate) fn kind_name(code: u32) -> &'static str {
    KINDS.get(code as usize).copied().unwrap_or("an op")
}

/// How a peer left, as far as this rank knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leave {
    /// Still connected.
    Here,
    /// Said goodbye (its communicator was dropped or aborted).
    Bye,
    /// Its control connection closed without a goodbye: the process is gone.
    Gone,
}

/// What this rank knows of one peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerView {
    /// Collectives it had entered and finished at its last report.
    pub entered: u64,
    pub finished: u64,
    /// Kind of the op it was last in.
    pub kind: u32,
    /// When its last report arrived (`None`: never).
    pub heard: Option<Instant>,
    pub leave: Leave,
}

/// Shared between a communicator, its engine and its watchdog thread.
#[derive(Debug)]
pub(crate) struct Health {
    rank: u32,
    /// Set by `abort()` from any thread.
    pub abort: AtomicBool,
    /// The first rank found dead, or [`NONE`].
    dead: AtomicU32,
    /// When `dead` was set.
    dead_at: Mutex<Option<Instant>>,
    /// Collectives this rank has entered and finished, and the kind of the last one.
    entered: AtomicU64,
    finished: AtomicU64,
    kind: AtomicU32,
    /// Every rank's last report (this rank's own entry unused).
    peers: Mutex<Vec<PeerView>>,
    /// Set to ask the watchdog for a round of queries; cleared when sent.
    query: AtomicBool,
    /// Set when the communicator goes: the watchdog says goodbye and ends.
    stop: AtomicBool,
    /// Whether a watchdog runs (not for a single rank).
    watched: AtomicBool,
    /// When this rank's counters last changed (entered or finished an op).
    changed: Mutex<Instant>,
    /// Frames for the watchdog to send: (peer, frame).
    outbox: Mutex<Vec<(u32, Vec<u8>)>>,
    /// Unique ids of shrunk communicators received: (from, generation, id bytes).
    shrink_ids: Mutex<Vec<(u32, u64, Vec<u8>)>>,
}

impl Health {
    /// The health of `rank` in a communicator of `nranks`, no watchdog yet.
    pub fn new(rank: u32, nranks: u32) -> Self {
        let view = PeerView {
            entered: 0,
            finished: 0,
            kind: 0,
            heard: None,
            leave: Leave::Here,
        };
        Health {
            rank,
            abort: AtomicBool::new(false),
            dead: AtomicU32::new(NONE),
            dead_at: Mutex::new(None),
            entered: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            kind: AtomicU32::new(0),
            peers: Mutex::new(vec![view; nranks as usize]),
            query: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            watched: AtomicBool::new(false),
            changed: Mutex::new(Instant::now()),
            outbox: Mutex::new(Vec::new()),
            shrink_ids: Mutex::new(Vec::new()),
        }
    }

    /// This rank entered collective number `seq` (1-based) of kind `name`.
    pub fn enter(&self, seq: u64, name: &str) {
        self.kind.store(kind_code(name), Ordering::Relaxed);
        self.entered.fetch_max(seq, Ordering::Relaxed);
        *self.changed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Every op this rank entered has finished.
    pub fn finish(&self) {
        let e = self.entered.load(Ordering::Relaxed);
        if self.finished.fetch_max(e, Ordering::Relaxed) < e {
            *self.changed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }

    /// This rank's status line (what `OXCCL_STATUS_DIR` holds): where it is and since when.
    pub fn status_line(&self, nranks: u32, host: &str) -> String {
        let (entered, finished, kind) = self.counters();
        let since = self
            .changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            .as_secs_f64();
        let op = kind_name(kind);
        let mut line = format!(
            "rank {}/{nranks} pid {} host {host}: ",
            self.rank,
            std::process::id()
        );
        line += &if entered > finished {
            format!("in {op} #{entered} for {since:.1} s (finished #{finished})")
        } else if entered == 0 {
            format!("no collective yet, for {since:.1} s")
        } else {
            format!("between ops for {since:.1} s (finished {op} #{finished})")
        };
        if let Some((dead, _)) = self.dead() {
            line += &format!("; found rank {dead} dead");
        }
        if self.abort.load(Ordering::Relaxed) {
            line += "; aborted";
        }
        line
    }

    /// (entered, finished, kind) of this rank.
    pub fn counters(&self) -> (u64, u64, u32) {
        (
            self.entered.load(Ordering::Relaxed),
            self.finished.load(Ordering::Relaxed),
            self.kind.load(Ordering::Relaxed),
        )
    }

    /// The rank found dead and how long ago, if any.
    pub fn dead(&self) -> Option<(u32, Duration)> {
        let d = self.dead.load(Ordering::Acquire);
        if d == NONE {
            return None;
        }
        let at = *self.dead_at.lock().unwrap_or_else(|e| e.into_inner());
        Some((d, at.map_or(Duration::ZERO, |t| t.elapsed())))
    }

    /// Records `rank` as dead unless another was first; `true` when this call recorded it.
    pub fn mark_dead(&self, rank: u32) -> bool {
        if rank == self.rank || rank == NONE {
            return false;
        }
        let mut at = self.dead_at.lock().unwrap_or_else(|e| e.into_inner());
        let first = self
            .dead
            .compare_exchange(NONE, rank, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            *at = Some(Instant::now());
        }
        first
    }

    /// Updates what is known of `peer`.
    fn update(&self, peer: u32, f: impl FnOnce(&mut PeerView)) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = peers.get_mut(peer as usize) {
            f(v);
        }
    }

    /// Queues `frame` for the watchdog to send to `peer`.
    pub fn send(&self, peer: u32, frame: Vec<u8>) {
        self.outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((peer, frame));
    }

    fn take_outbox(&self) -> Vec<(u32, Vec<u8>)> {
        std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn deliver_shrink(&self, from: u32, generation: u64, id: &[u8]) {
        self.shrink_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((from, generation, id.to_vec()));
    }

    /// The unique id `from` sent for shrink number `generation`, if it arrived.
    pub fn shrink_id(&self, from: u32, generation: u64) -> Option<Vec<u8>> {
        self.shrink_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(f, g, _)| *f == from && *g == generation)
            .map(|(_, _, id)| id.clone())
    }

    /// A copy of every peer's view.
    pub fn peers(&self) -> Vec<PeerView> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks every peer for its counters now and waits (at most `wait`) until all answered
    /// or left; then describes where every rank stands relative to this rank's op. `None`
    /// without a watchdog (a single rank).
    pub fn stuck_report(&self, wait: Duration) -> Option<String> {
        if !self.watched.load(Ordering::Acquire) {
            return None;
        }
        let asked = Instant::now();
        self.query.store(true, Ordering::Release);
        let fresh = |v: &PeerView| v.leave != Leave::Here || v.heard.is_some_and(|h| h >= asked);
        while asked.elapsed() < wait {
            let peers = self.peers();
            let all = peers
                .iter()
                .enumerate()
                .all(|(r, v)| r as u32 == self.rank || fresh(v));
            if all {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (entered, _, kind) = self.counters();
        Some(describe(self.rank, entered, kind, &self.peers(), asked))
    }
}

/// Groups ranks by where they stand relative to this rank's collective `entered` (kind
/// `kind`): e.g. "rank 3 has not entered all_reduce #57 (it finished #56); rank 5 does not
/// answer (last heard 12.0 s ago: stopped or hung?); ranks 0-2, 4, 6-7 are in it".
fn describe(me: u32, entered: u64, kind: u32, peers: &[PeerView], asked: Instant) -> String {
    let op = format!("{} #{entered}", kind_name(kind));
    let mut parts = Vec::new();
    let mut same = vec![me];
    for (r, v) in peers.iter().enumerate() {
        let r = r as u32;
        if r == me {
            continue;
        }
        let answered = v.heard.is_some_and(|h| h >= asked);
        let part = match v.leave {
            Leave::Gone => Some(format!(
                "rank {r} is gone (its process ended without a goodbye)"
            )),
            Leave::Bye => Some(format!("rank {r} has left (its communicator was dropped)")),
            Leave::Here if !answered => Some(match v.heard {
                Some(h) => format!(
                    "rank {r} does not answer (silent for {:.1} s, stopped or hung? its last \
                     report: {} #{} entered, #{} finished)",
                    h.elapsed().as_secs_f64(),
                    kind_name(v.kind),
                    v.entered,
                    v.finished
                ),
                None => format!("rank {r} has never answered"),
            }),
            Leave::Here if v.entered < entered => Some(format!(
                "rank {r} has not entered {op} (it finished {} #{}{})",
                kind_name(v.kind),
                v.finished,
                if v.entered > v.finished {
                    format!(", and is in #{}", v.entered)
                } else {
                    String::new()
                }
            )),
            Leave::Here if v.entered > entered => Some(format!(
                "rank {r} is already at {} #{}",
                kind_name(v.kind),
                v.entered
            )),
            Leave::Here if v.finished >= entered => Some(format!("rank {r} has finished {op}")),
            Leave::Here => None,
        };
        match part {
            Some(p) => parts.push(p),
            None => same.push(r),
        }
    }
    let verb = if same.len() == 1 { "is" } else { "are" };
    parts.push(format!("{} {verb} in {op}", rank_list(&same)));
    parts.join("; ")
}

/// "rank 3", "ranks 0-2, 5".
pub(crate) fn rank_list(ranks: &[u32]) -> String {
    let mut sorted = ranks.to_vec();
    sorted.sort_unstable();
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        runs.push(if j == i {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    let word = if sorted.len() == 1 { "rank" } else { "ranks" };
    format!("{word} {}", runs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(entered: u64, finished: u64, heard: Option<Instant>, leave: Leave) -> PeerView {
        PeerView {
            entered,
            finished,
            kind: 1,
            heard,
            leave,
        }
    }

    #[test]
    fn the_report_names_who_is_behind_silent_or_gone() {
        let asked = Instant::now();
        let now = Some(asked + Duration::from_millis(1));
        let old = Some(asked - Duration::from_secs(12));
        let peers = vec![
            view(57, 56, now, Leave::Here),
            view(57, 56, now, Leave::Here),
            view(57, 56, now, Leave::Here),
            view(56, 56, now, Leave::Here),
            view(57, 56, now, Leave::Here),
            view(57, 56, old, Leave::Here),
            view(0, 0, None, Leave::Gone),
            view(57, 56, now, Leave::Here),
        ];
        let text = describe(0, 57, 1, &peers, asked);
        assert!(
            text.contains("rank 3 has not entered all_reduce #57 (it finished all_reduce #56)"),
            "{text}"
        );
        assert!(
            text.contains("rank 5 does not answer (silent for 12."),
            "{text}"
        );
        assert!(text.contains("rank 6 is gone"), "{text}");
        assert!(
            text.ends_with("ranks 0-2, 4, 7 are in all_reduce #57"),
            "{text}"
        );
    }

    #[test]
    fn rank_lists_collapse_runs() {
        assert_eq!(rank_list(&[3]), "rank 3");
        assert_eq!(rank_list(&[5, 0, 1, 2, 7, 8]), "ranks 0-2, 5, 7-8");
    }

    #[test]
    fn the_first_dead_rank_wins() {
        let h = Health::new(0, 4);
        assert!(h.dead().is_none());
        assert!(!h.mark_dead(0), "a rank is never dead to itself");
        assert!(h.mark_dead(3));
        assert!(!h.mark_dead(2));
        assert_eq!(h.dead().map(|d| d.0), Some(3));
    }
}
