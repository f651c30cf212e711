//! Command line of `oxccl-run`: the clap definition and its validation into [`Options`].
//!
//! Everything a user can get wrong is caught here, before a process is started, and reported
//! with exit status 2 (clap's usage errors use 2 as well).

use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// `oxccl-run`'s arguments as typed on the command line.
#[derive(Debug, Parser)]
#[command(
    name = "oxccl-run",
    version,
    about = "Start the N ranks of an oxccl job on this host",
    override_usage = "oxccl-run -n N [OPTIONS] [--] PROGRAM [ARGS]...",
    long_about = "Start the N ranks of an oxccl job on this host (like torchrun --standalone).\n\n\
        oxccl-run hosts the job's root rendezvous and starts N copies of PROGRAM with \
        OXCCL_RANK, OXCCL_WORLD_SIZE, OXCCL_LOCAL_RANK, OXCCL_LOCAL_WORLD_SIZE, OXCCL_ROOT, \
        OXCCL_SECRET and OXCCL_ROOT_EXTERNAL=1 set, so Communicator::from_env() joins the job. \
        Each line a rank prints is prefixed with \"[RANK] \".\n\n\
        When a rank fails, the others get --grace seconds to finish on their own, then SIGTERM, \
        then SIGKILL 3 s later. Ctrl-C or SIGTERM to oxccl-run sends SIGTERM to every rank at \
        once (SIGKILL 3 s later, or at a second Ctrl-C).",
    after_help = "Exit status: 0 if every rank exited 0; else the status of the first rank that \
        failed (128+N for signal N); 130 when interrupted; 2 for a usage or launch error.\n\n\
        Example: oxccl-run -n 4 -- ./my-allreduce --size 1M"
)]
pub struct Cli {
    /// Number of ranks to start
    #[arg(short = 'n', long = "nranks", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub nranks: u32,

    /// IP address the root rendezvous binds (an address of this host)
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Seconds the root rendezvous waits for all ranks to arrive
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_positive_secs)]
    pub timeout: Duration,

    /// Seconds the other ranks get to finish on their own after one fails
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub grace: Duration,

    /// Pass the ranks' output through unchanged, without the rank prefix on each line
    #[arg(long)]
    pub no_prefix: bool,

    /// Set KEY=VALUE in every rank's environment (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<EnvVar>,

    /// Set KEY=VALUE in one rank's environment only (repeatable; wins over --env)
    #[arg(long = "rank-env", value_name = "RANK:KEY=VALUE", value_parser = parse_rank_env)]
    pub rank_env: Vec<RankEnv>,

    /// The program each rank runs, and its arguments
    #[arg(value_name = "PROGRAM", required = true, num_args = 1.., trailing_var_arg = true,
          allow_hyphen_values = true, value_parser = clap::value_parser!(OsString))]
    pub command: Vec<OsString>,
}

/// One `KEY=VALUE` given with `--env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable's name: not empty, without `=` or NUL.
    pub key: String,
    /// Its value (may contain `=`).
    pub value: String,
}

/// One `RANK:KEY=VALUE` given with `--rank-env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    /// The rank whose environment gets the variable.
    pub rank: u32,
    /// The variable.
    pub var: EnvVar,
}

/// Parses `KEY=VALUE` (clap value parser for `--env`).
pub fn parse_env(s: &str) -> Result<EnvVar, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if key.is_empty() {
        return Err(format!("empty variable name in {s:?}"));
    }
    if key.contains('\0') || value.contains('\0') {
        return Err(format!("NUL byte in {s:?}"));
    }
    Ok(EnvVar {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// Parses `RANK:KEY=VALUE` (clap value parser for `--rank-env`).
pub fn parse_rank_env(s: &str) -> Result<RankEnv, String> {
    let (rank, var) = s
        .split_once(':')
        .ok_or_else(|| format!("expected RANK:KEY=VALUE, got {s:?}"))?;
    let rank = rank
        .parse::<u32>()
        .map_err(|_| format!("expected RANK:KEY=VALUE with a rank number, got {s:?}"))?;
    Ok(RankEnv {
        rank,
        var: parse_env(var)?,
    })
}

/// Parses a non-negative, finite number of seconds such as `10` or `0.5`.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {s:?}"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s:?} is not a usable number of seconds"))
}

/// Parses a positive number of seconds (see [`parse_secs`]).
pub fn parse_positive_secs(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d.is_zero() {
        return Err("must be more than 0 seconds".to_owned());
    }
    Ok(d)
}

/// A validated launch request: what [`super::job::run`] needs, nothing left to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of ranks (at least 1).
    pub nranks: u32,
    /// Address the root rendezvous binds.
    pub bind: IpAddr,
    /// How long the root rendezvous waits for all ranks.
    pub root_timeout: Duration,
    /// Time the other ranks get to finish after one fails.
    pub grace: Duration,
    /// Whether output lines get `[RANK] ` prefixes.
    pub prefix: bool,
    /// Variables for every rank, in command-line order (a later one wins).
    pub env: Vec<EnvVar>,
    /// Variables for single ranks, in command-line order; every rank is `< nranks`.
    pub rank_env: Vec<RankEnv>,
    /// The program, resolved to a path that exists and is executable.
    pub program: PathBuf,
    /// The program as the user typed it (the ranks' `argv[0]`).
    pub argv0: OsString,
    /// The program's arguments.
    pub args: Vec<OsString>,
}

impl Options {
    /// Checks `cli` against what clap cannot check alone (ranks in range, program exists)
    /// and resolves the program in `PATH` (the `PATH` given with `--env` if any, else ours).
    pub fn from_cli(cli: Cli) -> Result<Self, String> {
        if let Some(bad) = cli.rank_env.iter().find(|r| r.rank >= cli.nranks) {
            return Err(format!(
                "--rank-env {}:{}=...: rank {} is out of range (the job has {} ranks, 0..{})",
                bad.rank, bad.var.key, bad.rank, cli.nranks, cli.nranks
            ));
        }
        let mut command = cli.command.into_iter();
        let argv0 = command.next().ok_or("no program given")?;
        let path_var = cli
            .env
            .iter()
            .rev()
            .find(|v| v.key == "PATH")
            .map(|v| OsString::from(&v.value))
            .or_else(|| std::env::var_os("PATH"));
        let program = resolve_program(&argv0, path_var.as_deref())?;
        Ok(Options {
            nranks: cli.nranks,
            bind: cli.bind,
            root_timeout: cli.timeout,
            grace: cli.grace,
            prefix: !cli.no_prefix,
            env: cli.env,
            rank_env: cli.rank_env,
            program,
            argv0,
            args: command.collect(),
        })
    }
}

/// `PATH` when the environment has none (as glibc's `execvp`).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Finds `program` the way `execvp` does: a name with a `/` is a path, otherwise each
/// directory of `path_var` is tried in order (an empty entry means the current directory).
pub fn resolve_program(program: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
    let shown = Path::new(program).display();
    if program.is_empty() {
        return Err("empty program name".to_owned());
    }
    if program.as_encoded_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return match executable(&path) {
            Ok(()) => Ok(path),
            Err(why) => Err(format!("cannot run {shown}: {why}")),
        };
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    for dir in std::env::split_paths(path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        if executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(format!("program not found: {shown} (not in PATH)"))
}

/// `Ok` when `path` is a file with an execute bit set, else why not.
fn executable(path: &Path) -> Result<(), &'static str> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such file"),
        Err(_) => Err("cannot read its metadata"),
        Ok(m) if !m.is_file() => Err("not a regular file"),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("not executable"),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("oxccl-run").chain(args.iter().copied()))
    }

    #[test]
    fn env_syntax() {
        assert_eq!(
            parse_env("A=b=c").unwrap(),
            EnvVar {
                key: "A".into(),
                value: "b=c".into()
            }
        );
        assert_eq!(parse_env("A=").unwrap().value, "");
        assert!(parse_env("A").is_err());
        assert!(parse_env("=x").is_err());
        let r = parse_rank_env("3:K=v").unwrap();
        assert_eq!(
            (r.rank, r.var.key.as_str(), r.var.value.as_str()),
            (3, "K", "v")
        );
        assert!(parse_rank_env("K=v").is_err());
        assert!(parse_rank_env("x:K=v").is_err());
        assert!(parse_rank_env("1:K").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_secs("0").unwrap(), Duration::ZERO);
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("inf").is_err());
        assert!(parse_positive_secs("0").is_err());
    }

    #[test]
    fn program_arguments_keep_their_dashes() {
        let c = cli(&["-n", "2", "sh", "-c", "echo -n hi", "--grace", "3"]).unwrap();
        assert_eq!(c.nranks, 2);
        assert_eq!(c.grace, Duration::from_secs(10));
        assert_eq!(c.command, ["sh", "-c", "echo -n hi", "--grace", "3"]);
        let c = cli(&["-n", "1", "--grace", "1", "--", "sh", "-c", "true"]).unwrap();
        assert_eq!(c.grace, Duration::from_secs(1));
        assert_eq!(c.command, ["sh", "-c", "true"]);
    }

    #[test]
    fn usage_errors() {
        assert!(cli(&["-n", "0", "true"]).is_err());
        assert!(cli(&["-n", "2"]).is_err());
        assert!(cli(&["true"]).is_err());
        assert!(cli(&["-n", "2", "--env", "NOEQUALS", "true"]).is_err());
    }

    #[test]
    fn validation() {
        let o = Options::from_cli(cli(&["-n", "2", "--rank-env", "1:K=v", "sh"]).unwrap()).unwrap();
        assert!(o.program.ends_with("sh"));
        assert_eq!(o.argv0, "sh");
        let e = Options::from_cli(cli(&["-n", "2", "--rank-env", "2:K=v", "sh"]).unwrap());
        assert!(e.unwrap_err().contains("out of range"));
        let e = Options::from_cli(cli(&["-n", "2", "no-such-program-oxccl"]).unwrap());
        assert!(e.unwrap_err().contains("program not found"));
        let e = Options::from_cli(cli(&["-n", "2", "./no/such/program"]).unwrap());
        assert!(e.unwrap_err().contains("no such file"));
    }

    #[test]
    fn path_search() {
        let p = resolve_program(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin:/usr/bin")),
        );
        assert!(p.unwrap().ends_with("sh"));
        assert!(resolve_program(OsStr::new("sh"), Some(OsStr::new("/nonexistent"))).is_err());
        assert!(resolve_program(OsStr::new(""), None).is_err());
    }
}
