//! `oxccl-run`: starts the N ranks of an oxccl job on this host.
//!
//! ```text
//! oxccl-run -n N [--bind IP] [--timeout SECS] [--grace SECS] [--no-prefix]
//!           [--env KEY=VALUE]... [--rank-env RANK:KEY=VALUE]... [--] PROGRAM [ARGS...]
//! ```
//!
//! What it does, in order:
//! 1. Validates the command line ([`cli`]); usage errors, `-n 0`, a bad `--env` or a
//!    program that is not found exit with status 2 before anything starts.
//! 2. Hosts the job's root rendezvous ([`oxccl::bootstrap::RootServer`]) on `--bind`
//!    (port chosen by the OS) with a fresh random secret; it serves in the background and
//!    never delays the launcher's exit.
//! 3. Starts N copies of PROGRAM ([`job`]), each in its own process group, with
//!    `OXCCL_RANK`, `OXCCL_WORLD_SIZE`, `OXCCL_LOCAL_RANK`, `OXCCL_LOCAL_WORLD_SIZE`,
//!    `OXCCL_ROOT` (ip:port), `OXCCL_SECRET` (hex) and `OXCCL_ROOT_EXTERNAL=1` set, then
//!    `--env` and then `--rank-env` variables (later ones win, so a test can give one rank
//!    a wrong secret). Every line of a rank's stdout and stderr is prefixed with
//!    `[RANK] ` ([`prefix`]) unless `--no-prefix`.
//! 4. Supervises them ([`policy`]): the first rank to fail decides the exit status and
//!    the others get `--grace` seconds, then SIGTERM, then SIGKILL; Ctrl-C/SIGTERM/SIGHUP
//!    to the launcher sends SIGTERM to all ranks at once and the launcher exits 130.
//!
//! Ranks never outlive the launcher: they get SIGKILL as their parent-death signal
//! ([`shim`]), and at the end of the job whatever is left in their process groups is
//! killed.

pub mod cli;
pub mod job;
pub mod policy;
pub mod prefix;
pub mod shim;

use clap::Parser;

/// `oxccl-run`'s entry point: returns the process's exit status.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == shim::SHIM_ARG) {
        return shim::run(&args[2..]);
    }
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // Prints usage errors (status 2) or --help/--version (status 0).
        Err(e) => e.exit(),
    };
    let opts = match cli::Options::from_cli(cli) {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("oxccl-run: {msg}");
            return 2;
        }
    };
    let code = job::run(&opts);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    code
}
