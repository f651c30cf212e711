//! Running one job: the root rendezvous, the N rank processes, their output, and the loop
//! that reaps them and carries out the [`Supervisor`]'s decisions.
//!
//! Each rank runs in its own process group (so a signal reaches everything the rank
//! started, e.g. the children of a shell script) and through the [exec shim](super::shim)
//! (so it dies with the launcher). At the end of the job every rank's process group gets
//! SIGKILL, so nothing a rank left behind outlives the job.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use oxccl::bootstrap::{RootServer, Secret};
use rustix::process::{kill_process_group, Pid, Signal};

use super::cli::Options;
use super::policy::{Action, RankExit, StopSignal, Supervisor};
use super::prefix::{spawn_pump, Sink};
use super::shim::shim_args;

/// How often the ranks are polled for exit (and deadlines checked).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long, after the last rank ended, its output may take to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, on a failed job, to wait for the root rendezvous's result before leaving.
const ROOT_RESULT_WAIT: Duration = Duration::from_millis(100);

/// A started rank.
struct Rank {
    child: Child,
    /// Whether `wait` has collected its status (after which its pid may be reused).
    reaped: bool,
}

/// Runs the job `opts` describes to its end and returns the launcher's exit status; errors
/// before the ranks run are printed and give 2.
///
/// Must be called on the main thread: the ranks' parent-death signal fires when the thread
/// that started them ends.
pub fn run(opts: &Options) -> i32 {
    match start(opts) {
        Ok(job) => job.supervise(opts),
        Err(msg) => {
            eprintln!("oxccl-run: {msg}");
            2
        }
    }
}

/// A job whose ranks are running.
struct Job {
    ranks: Vec<Rank>,
    interrupts: Receiver<()>,
    /// Ends of the output pumps, one message per pump.
    pumps_done: Receiver<()>,
    npumps: usize,
    /// The root rendezvous's result, when it has one.
    root_result: Receiver<oxccl::Result<()>>,
    /// Where the ranks write their status lines, and whether it is ours to remove.
    status_dir: (std::path::PathBuf, bool),
}

/// Installs the interrupt handler, starts the root rendezvous and the ranks.
fn start(opts: &Options) -> Result<Job, String> {
    let (interrupt_tx, interrupts) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = interrupt_tx.send(());
    })
    .map_err(|e| format!("cannot install the Ctrl-C/SIGTERM handler: {e}"))?;

    let secret = Secret::random().map_err(|e| format!("cannot make the job's secret: {e}"))?;
    let root = RootServer::start(
        SocketAddr::new(opts.bind, 0),
        secret,
        opts.nranks,
        opts.root_timeout,
    )
    .map_err(|e| format!("cannot start the root rendezvous on {}: {e}", opts.bind))?;
    let root_addr = connectable(root.addr());
    let (root_tx, root_result) = mpsc::channel();
    std::thread::Builder::new()
        .name("oxccl-run-root".to_owned())
        .spawn(move || {
            let _ = root_tx.send(root.join());
        })
        .map_err(|e| format!("cannot start the root rendezvous thread: {e}"))?;

    // The ranks' status lines (oxccl-status DIR; printed here when interrupted): the
    // caller's OXCCL_STATUS_DIR, else one of ours for this job.
    let status_dir = match std::env::var_os("OXCCL_STATUS_DIR") {
        Some(d) => (std::path::PathBuf::from(d), false),
        None => (
            std::env::temp_dir().join(format!("oxccl-run-{}", std::process::id())),
            true,
        ),
    };
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find oxccl-run's own executable: {e}"))?;
    let job_env = [
        ("OXCCL_WORLD_SIZE", opts.nranks.to_string()),
        ("OXCCL_LOCAL_WORLD_SIZE", opts.nranks.to_string()),
        ("OXCCL_ROOT", root_addr.to_string()),
        ("OXCCL_SECRET", secret.to_hex()),
        ("OXCCL_ROOT_EXTERNAL", "1".to_owned()),
        ("OXCCL_STATUS_DIR", status_dir.0.display().to_string()),
    ];
    let program: OsString = opts.program.clone().into();
    let (pumps_tx, pumps_done) = mpsc::channel();
    let mut ranks = Vec::with_capacity(opts.nranks as usize);
    let mut npumps = 0;
    for rank in 0..opts.nranks {
        let mut cmd = Command::new(&exe);
        cmd.args(shim_args(std::process::id(), &program, &opts.argv0))
            .args(&opts.args)
            .envs(job_env.iter().map(|(k, v)| (k, v)))
            .env("OXCCL_RANK", rank.to_string())
            .env("OXCCL_LOCAL_RANK", rank.to_string())
            .envs(opts.env.iter().map(|v| (&v.key, &v.value)))
            .envs(
                opts.rank_env
                    .iter()
                    .filter(|r| r.rank == rank)
                    .map(|r| (&r.var.key, &r.var.value)),
            )
            .process_group(0)
            .stdin(rank_stdin(rank));
        if opts.prefix {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                kill_all(&mut ranks);
                return Err(format!("cannot start rank {rank}: {e}"));
            }
        };
        let pumps = [
            child
                .stdout
                .take()
                .map(|out| spawn_pump(rank, out, Sink::Stdout, pumps_tx.clone())),
            child
                .stderr
                .take()
                .map(|err| spawn_pump(rank, err, Sink::Stderr, pumps_tx.clone())),
        ];
        ranks.push(Rank {
            child,
            reaped: false,
        });
        for pump in pumps.into_iter().flatten() {
            match pump {
                Ok(_) => npumps += 1,
                Err(e) => {
                    kill_all(&mut ranks);
                    return Err(format!("cannot start rank {rank}'s output thread: {e}"));
                }
            }
        }
    }
    Ok(Job {
        ranks,
        interrupts,
        pumps_done,
        npumps,
        root_result,
        status_dir,
    })
}

impl Job {
    /// Reaps the ranks and carries out the supervisor's actions until all have ended; then
    /// cleans up and returns the launcher's exit status.
    fn supervise(mut self, opts: &Options) -> i32 {
        let mut sup = Supervisor::new(opts.nranks, opts.grace);
        loop {
            let now = Instant::now();
            for rank in 0..self.ranks.len() {
                if let Some(exit) = self.try_reap(rank) {
                    let actions = sup.on_exit(rank as u32, exit, now);
                    self.apply(actions);
                }
            }
            let actions = sup.on_tick(now);
            self.apply(actions);
            if sup.finished() {
                break;
            }
            match self.interrupts.recv_timeout(POLL_INTERVAL) {
                Ok(()) => {
                    // A user stopping a job that seems stuck wants to know where it was.
                    let report = crate::status::report(&self.status_dir.0);
                    eprint!("oxccl-run: interrupted; where the ranks were:\n{report}");
                    let actions = sup.on_interrupt(Instant::now());
                    self.apply(actions);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        }
        // Whatever the ranks left in their process groups is an orphan of the job.
        for rank in &self.ranks {
            signal_group(&rank.child, StopSignal::Kill);
        }
        self.drain_output();
        if self.status_dir.1 {
            let _ = std::fs::remove_dir_all(&self.status_dir.0);
        }
        let code = sup.exit_code();
        if code != 0 {
            if let Ok(Err(e)) = self.root_result.recv_timeout(ROOT_RESULT_WAIT) {
                eprintln!("oxccl-run: the root rendezvous failed: {e}");
            }
        }
        code
    }

    /// Collects rank `rank`'s status if it has ended and was not reaped yet.
    fn try_reap(&mut self, rank: usize) -> Option<RankExit> {
        let r = &mut self.ranks[rank];
        if r.reaped {
            return None;
        }
        match r.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => {
                r.reaped = true;
                Some(RankExit::from_status(status))
            }
            Err(e) => {
                // Cannot happen for our own child; count it as failed rather than spin.
                eprintln!("oxccl-run: cannot wait for rank {rank}: {e}");
                r.reaped = true;
                Some(RankExit::Code(1))
            }
        }
    }

    fn apply(&self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Log(line) => eprintln!("oxccl-run: {line}"),
                Action::Signal { signal, ranks } => {
                    for rank in ranks {
                        // Only unreaped ranks: a reaped rank's pid may belong to another
                        // process by now.
                        if let Some(r) = self.ranks.get(rank as usize).filter(|r| !r.reaped) {
                            signal_group(&r.child, signal);
                        }
                    }
                }
            }
        }
    }

    /// Waits (bounded) until the pumps have copied the ranks' last output.
    fn drain_output(&self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        for _ in 0..self.npumps {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.pumps_done.recv_timeout(left).is_err() {
                eprintln!("oxccl-run: some rank output is still open (a process outside the ranks' process groups holds it); not waiting for it");
                break;
            }
        }
    }
}

/// Rank 0 reads our standard input when it is a pipe or file (as `mpirun` forwards it);
/// the others, and rank 0 when it is a terminal (the ranks are not in the terminal's
/// foreground process group), get `/dev/null`.
fn rank_stdin(rank: u32) -> Stdio {
    use std::io::IsTerminal;
    if rank == 0 && !std::io::stdin().is_terminal() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// The address the ranks should connect to: a wildcard bind address becomes loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Sends `signal` to the process group `child` leads. A group that is gone is not an error.
fn signal_group(child: &Child, signal: StopSignal) {
    let sig = match signal {
        StopSignal::Term => Signal::TERM,
        StopSignal::Kill => Signal::KILL,
    };
    let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        return;
    };
    match kill_process_group(pid, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => eprintln!(
            "oxccl-run: cannot send {} to process group {pid:?}: {e}",
            signal.name()
        ),
    }
}

/// SIGKILLs and reaps every started rank (when the job cannot start whole).
fn kill_all(ranks: &mut [Rank]) {
    for rank in ranks.iter_mut().filter(|r| !r.reaped) {
        signal_group(&rank.child, StopSignal::Kill);
        let _ = rank.child.wait();
        rank.reaped = true;
    }
}
