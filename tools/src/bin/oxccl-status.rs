//! `oxccl-status DIR`: where every rank of a running job is, from the status lines their
//! watchdogs write to `OXCCL_STATUS_DIR` (oxccl-run sets one and prints it at the start).

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Print where every rank of a running oxccl job is (its OXCCL_STATUS_DIR)")]
struct Args {
    /// The job's status directory.
    dir: PathBuf,
    /// Print again every this many seconds until interrupted.
    #[arg(long)]
    watch: Option<f64>,
}

fn main() {
    let args = Args::parse();
    loop {
        print!("{}", oxccl_tools::status::report(&args.dir));
        match args.watch {
            Some(s) if s > 0.0 => {
                println!();
                std::thread::sleep(Duration::from_secs_f64(s));
            }
            _ => break,
        }
    }
}
