//! When to stop a job, and how: the launcher's decisions, without processes or clocks.
//!
//! [`Supervisor`] is fed what happened — a rank exited ([`Supervisor::on_exit`]), the user
//! interrupted ([`Supervisor::on_interrupt`]), time passed ([`Supervisor::on_tick`]) — with
//! the current time passed in, and answers with [`Action`]s for the caller to carry out.
//! The caller ([`super::job`]) calls `on_tick` at least every few tens of milliseconds and
//! stops when [`Supervisor::finished`].
//!
//! The rules:
//! - The first rank to fail (exit status ≠ 0 or killed by a signal) decides the job's exit
//!   status; the others get the grace period to finish on their own (so they can report
//!   their own view of the failure), then SIGTERM, then SIGKILL [`KILL_AFTER`] later.
//! - An interrupt (Ctrl-C, SIGTERM or SIGHUP to the launcher) sends SIGTERM to every running
//!   rank at once, SIGKILL [`KILL_AFTER`] later or at a second interrupt; the job's exit
//!   status is then 130.

use std::fmt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Time between SIGTERM and SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(3);

/// Exit status of the launcher after an interrupt (as a shell reports Ctrl-C).
pub const INTERRUPTED_EXIT: i32 = 130;

/// How a rank ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankExit {
    /// It exited with this status.
    Code(i32),
    /// It was killed by a signal.
    Signal {
        /// The signal number.
        signal: i32,
        /// Whether it left a core dump.
        core_dumped: bool,
    },
}

impl RankExit {
    /// Reads a process's status as returned by `wait`.
    pub fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => RankExit::Code(code),
            (None, Some(signal)) => RankExit::Signal {
                signal,
                core_dumped: status.core_dumped(),
            },
            // Neither exited nor killed: not something `wait` reports for an ended child.
            (None, None) => RankExit::Code(1),
        }
    }

    /// Whether the rank succeeded (exit status 0).
    pub fn success(self) -> bool {
        self == RankExit::Code(0)
    }

    /// The status a shell would report: the exit status, or 128 + the signal number.
    pub fn exit_code(self) -> i32 {
        match self {
            RankExit::Code(code) => code,
            RankExit::Signal { signal, .. } => 128 + signal,
        }
    }
}

impl fmt::Display for RankExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RankExit::Code(code) => write!(f, "status {code}"),
            RankExit::Signal {
                signal,
                core_dumped,
            } => {
                write!(f, "signal {signal}")?;
                let core = if core_dumped { ", core dumped" } else { "" };
                match signal_name(signal) {
                    Some(name) => write!(f, " ({name}{core})"),
                    None if core_dumped => write!(f, " (core dumped)"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The name of a Linux signal number (x86, Arm and the other architectures with the
/// generic numbering), e.g. `SIGKILL` for 9.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    let index = usize::try_from(signal).ok()?.checked_sub(1)?;
    NAMES.get(index).copied()
}

/// A signal the launcher sends to ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: please stop.
    Term,
    /// SIGKILL: stop now.
    Kill,
}

impl StopSignal {
    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Kill => "SIGKILL",
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Print this line (without the `oxccl-run: ` prefix) on stderr.
    Log(String),
    /// Send `signal` to these ranks (each rank's whole process group).
    Signal {
        /// The signal.
        signal: StopSignal,
        /// The ranks, all still running, in increasing order.
        ranks: Vec<u32>,
    },
}

/// Where the job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No rank has failed, no interrupt.
    Running,
    /// A rank failed; the others may finish until the deadline.
    Grace { until: Instant },
    /// SIGTERM sent; SIGKILL follows at the deadline.
    Terminating { until: Instant },
    /// SIGKILL sent; only waiting for the ranks to be reaped.
    Killed,
}

/// The launcher's decisions for one job (see the module documentation).
#[derive(Debug)]
pub struct Supervisor {
    grace: Duration,
    running: Vec<bool>,
    first_failure: Option<(u32, RankExit)>,
    interrupted: bool,
    phase: Phase,
}

impl Supervisor {
    /// A job of `nranks` running ranks; `grace` is what the others get after a failure.
    pub fn new(nranks: u32, grace: Duration) -> Self {
        Supervisor {
            grace,
            running: vec![true; nranks as usize],
            first_failure: None,
            interrupted: false,
            phase: Phase::Running,
        }
    }

    /// Rank `rank` ended with `exit` at `now`.
    pub fn on_exit(&mut self, rank: u32, exit: RankExit, now: Instant) -> Vec<Action> {
        if let Some(running) = self.running.get_mut(rank as usize) {
            *running = false;
        }
        if exit.success() {
            return Vec::new();
        }
        match self.phase {
            // Ranks stopped by our own signals are expected to fail: no news.
            Phase::Terminating { .. } | Phase::Killed => Vec::new(),
            Phase::Grace { .. } => vec![Action::Log(format!("rank {rank} exited with {exit}"))],
            Phase::Running => {
                self.first_failure = Some((rank, exit));
                self.phase = Phase::Grace {
                    until: now + self.grace,
                };
                let mut line = format!("rank {rank} exited with {exit}; stopping the job");
                if !self.finished() && !self.grace.is_zero() {
                    line += &format!(
                        " (the other ranks have {} s to finish)",
                        self.grace.as_secs_f64()
                    );
                }
                let mut actions = vec![Action::Log(line)];
                actions.extend(self.on_tick(now));
                actions
            }
        }
    }

    /// The user interrupted the launcher at `now`.
    pub fn on_interrupt(&mut self, now: Instant) -> Vec<Action> {
        let first = !self.interrupted;
        self.interrupted = true;
        let ranks = self.running_ranks();
        if ranks.is_empty() {
            return Vec::new();
        }
        if first && self.phase != Phase::Killed {
            self.phase = Phase::Terminating {
                until: now + KILL_AFTER,
            };
            vec![
                Action::Log("interrupted; sending SIGTERM to all ranks".to_owned()),
                Action::Signal {
                    signal: StopSignal::Term,
                    ranks,
                },
            ]
        } else {
            self.phase = Phase::Killed;
            vec![
                Action::Log("interrupted again; sending SIGKILL to all ranks".to_owned()),
                Action::Signal {
                    signal: StopSignal::Kill,
                    ranks,
                },
            ]
        }
    }

    /// Time is `now`: escalates when a deadline has passed.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let ranks = self.running_ranks();
        if ranks.is_empty() {
            return Vec::new();
        }
        let (signal, why) = match self.phase {
            Phase::Grace { until } if now >= until => {
                self.phase = Phase::Terminating {
                    until: now + KILL_AFTER,
                };
                (StopSignal::Term, "grace period over")
            }
            Phase::Terminating { until } if now >= until => {
                self.phase = Phase::Killed;
                (StopSignal::Kill, "ranks still running")
            }
            _ => return Vec::new(),
        };
        let list = ranks
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            Action::Log(format!(
                "{why}; sending {} to rank(s) {list}",
                signal.name()
            )),
            Action::Signal { signal, ranks },
        ]
    }

    /// Whether every rank has ended.
    pub fn finished(&self) -> bool {
        !self.running.contains(&true)
    }

    /// The ranks still running, in increasing order.
    pub fn running_ranks(&self) -> Vec<u32> {
        (0u32..)
            .zip(&self.running)
            .filter(|(_, &running)| running)
            .map(|(rank, _)| rank)
            .collect()
    }

    /// The first rank that failed and how, if any.
    pub fn first_failure(&self) -> Option<(u32, RankExit)> {
        self.first_failure
    }

    /// The launcher's exit status: 130 after an interrupt, else the first failed rank's
    /// status, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            INTERRUPTED_EXIT
        } else {
            self.first_failure.map_or(0, |(_, exit)| exit.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL9: RankExit = RankExit::Signal {
        signal: 9,
        core_dumped: false,
    };

    fn signals(actions: &[Action]) -> Vec<(StopSignal, Vec<u32>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Signal { signal, ranks } => Some((*signal, ranks.clone())),
                Action::Log(_) => None,
            })
            .collect()
    }

    #[test]
    fn exit_descriptions() {
        assert_eq!(RankExit::Code(3).to_string(), "status 3");
        assert_eq!(KILL9.to_string(), "signal 9 (SIGKILL)");
        assert_eq!(KILL9.exit_code(), 137);
        let segv = RankExit::Signal {
            signal: 11,
            core_dumped: true,
        };
        assert_eq!(segv.to_string(), "signal 11 (SIGSEGV, core dumped)");
        let rt = RankExit::Signal {
            signal: 40,
            core_dumped: false,
        };
        assert_eq!(rt.to_string(), "signal 40");
        assert_eq!(signal_name(15), Some("SIGTERM"));
        assert_eq!(signal_name(0), None);
        assert_eq!(signal_name(-1), None);
    }

    #[test]
    fn all_succeed() {
        let t = Instant::now();
        let mut s = Supervisor::new(2, Duration::from_secs(10));
        assert!(s.on_exit(1, RankExit::Code(0), t).is_empty());
        assert!(!s.finished());
        assert!(s.on_exit(0, RankExit::Code(0), t).is_empty());
        assert!(s.finished());
        assert_eq!(s.exit_code(), 0);
    }

    #[test]
    fn failure_then_grace_then_term_then_kill() {
        let t = Instant::now();
        let grace = Duration::from_secs(10);
        let mut s = Supervisor::new(4, grace);
        let a = s.on_exit(3, KILL9, t);
        assert_eq!(
            a,
            [Action::Log(
                "rank 3 exited with signal 9 (SIGKILL); stopping the job \
                 (the other ranks have 10 s to finish)"
                    .into()
            )]
        );
        // Later failures are reported but do not change the job's status.
        let a = s.on_exit(1, RankExit::Code(1), t + Duration::from_secs(1));
        assert_eq!(a, [Action::Log("rank 1 exited with status 1".into())]);
        assert!(s.on_tick(t + grace - Duration::from_millis(1)).is_empty());
        let a = s.on_tick(t + grace);
        assert_eq!(signals(&a), [(StopSignal::Term, vec![0, 2])]);
        assert!(s.on_tick(t + grace + Duration::from_secs(1)).is_empty());
        // A rank that dies of our SIGTERM is not news.
        assert!(s.on_exit(0, RankExit::Code(143), t + grace).is_empty());
        let a = s.on_tick(t + grace + KILL_AFTER);
        assert_eq!(signals(&a), [(StopSignal::Kill, vec![2])]);
        assert!(s.on_tick(t + grace + KILL_AFTER * 10).is_empty());
        s.on_exit(2, KILL9, t + grace + KILL_AFTER);
        assert!(s.finished());
        assert_eq!(s.exit_code(), 137);
        assert_eq!(s.first_failure(), Some((3, KILL9)));
    }

    #[test]
    fn zero_grace_terminates_at_once() {
        let t = Instant::now();
        let mut s = Supervisor::new(3, Duration::ZERO);
        let a = s.on_exit(0, RankExit::Code(3), t);
        assert_eq!(signals(&a), [(StopSignal::Term, vec![1, 2])]);
        assert_eq!(s.exit_code(), 3);
    }

    #[test]
    fn others_finishing_within_grace_need_no_signal() {
        let t = Instant::now();
        let mut s = Supervisor::new(2, Duration::from_secs(10));
        s.on_exit(0, RankExit::Code(5), t);
        s.on_exit(1, RankExit::Code(0), t + Duration::from_secs(1));
        assert!(s.finished());
        assert!(s.on_tick(t + Duration::from_secs(100)).is_empty());
        assert_eq!(s.exit_code(), 5);
    }

    #[test]
    fn interrupt_terms_all_then_kills() {
        let t = Instant::now();
        let mut s = Supervisor::new(3, Duration::from_secs(10));
        s.on_exit(1, RankExit::Code(0), t);
        let a = s.on_interrupt(t);
        assert_eq!(signals(&a), [(StopSignal::Term, vec![0, 2])]);
        let a = s.on_tick(t + KILL_AFTER);
        assert_eq!(signals(&a), [(StopSignal::Kill, vec![0, 2])]);
        assert_eq!(s.exit_code(), INTERRUPTED_EXIT);
    }

    #[test]
    fn second_interrupt_kills_at_once() {
        let t = Instant::now();
        let mut s = Supervisor::new(2, Duration::from_secs(10));
        s.on_interrupt(t);
        let a = s.on_interrupt(t + Duration::from_millis(100));
        assert_eq!(signals(&a), [(StopSignal::Kill, vec![0, 1])]);
    }

    #[test]
    fn interrupt_after_failure_still_exits_130() {
        let t = Instant::now();
        let mut s = Supervisor::new(2, Duration::from_secs(10));
        s.on_exit(0, RankExit::Code(4), t);
        let a = s.on_interrupt(t);
        assert_eq!(signals(&a), [(StopSignal::Term, vec![1])]);
        assert_eq!(s.exit_code(), INTERRUPTED_EXIT);
    }
}
