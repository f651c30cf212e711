//! The exec shim: how a rank is tied to the launcher's life without `unsafe`.
//!
//! Ranks must not outlive the launcher, even when the launcher is killed with SIGKILL and
//! cannot clean up. Linux's parent-death signal (`prctl(PR_SET_PDEATHSIG)`) does this, but
//! it must be set in the child before it runs the program, and std's `pre_exec` hook is
//! `unsafe`. So the launcher starts each rank as its own executable in shim mode,
//! `oxccl-run __oxccl-run-exec LAUNCHER_PID PROGRAM ARGV0 [ARGS...]`, which sets SIGKILL
//! as its parent-death signal, checks the launcher is still its parent (it may have died
//! before the `prctl`), and `exec`s the program in place: same pid, same process group,
//! same pipes. The parent-death signal survives `exec` (unless the program is set-user-ID).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{getppid, set_parent_process_death_signal, Signal};

/// The first argument that puts `oxccl-run` in shim mode. Not a documented option: only
/// the launcher itself passes it.
pub const SHIM_ARG: &str = "__oxccl-run-exec";

/// Exit status of the shim when the program cannot be executed (as a shell's 126).
const CANNOT_EXEC: i32 = 126;

/// The shim's command line after [`SHIM_ARG`], as the launcher builds it.
pub fn shim_args(launcher_pid: u32, program: &OsString, argv0: &OsString) -> Vec<OsString> {
    vec![
        SHIM_ARG.into(),
        launcher_pid.to_string().into(),
        program.clone(),
        argv0.clone(),
    ]
}

/// Runs the shim with the arguments after [`SHIM_ARG`]; returns only on failure, with the
/// exit status to use.
pub fn run(args: &[OsString]) -> i32 {
    let [launcher_pid, program, argv0, rest @ ..] = args else {
        eprintln!("oxccl-run: {SHIM_ARG} is internal to oxccl-run");
        return 2;
    };
    if let Err(e) = set_parent_process_death_signal(Some(Signal::KILL)) {
        eprintln!("oxccl-run: cannot set the parent-death signal: {e}");
        return CANNOT_EXEC;
    }
    let parent = getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if launcher_pid.to_str() != Some(parent.to_string().as_str()) {
        // The launcher died before the parent-death signal was armed: nothing to run for.
        return CANNOT_EXEC;
    }
    let err = Command::new(program).arg0(argv0).args(rest).exec();
    eprintln!(
        "oxccl-run: cannot execute {}: {err}",
        std::path::Path::new(program).display()
    );
    CANNOT_EXEC
}
