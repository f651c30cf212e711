//! The console view of a run: a progress bar on a terminal, plain per-step lines otherwise.

use crate::trainer::StepLog;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, IsTerminal};

/// How [`Progress`] shows the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stdout is a terminal, [`ProgressMode::Lines`] otherwise.
    Auto,
    /// One plain line per logged step (what tests and logs parse).
    Lines,
    /// Nothing per step.
    Off,
}

/// The console view of a run on the rank that reports: a progress bar (steps done of all,
/// ETA, and the latest loss, validation loss, tokens/s and communication share) or plain
/// lines. Call [`Progress::step`] once per step, print other text through
/// [`Progress::println`] while it runs, then [`Progress::finish`].
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    log_every: u64,
    last_step: u64,
    last_val: Option<f32>,
}

impl Progress {
    /// A view of steps `done + 1 ..= total`; in lines mode, every `log_every`-th step (at
    /// least 1), validation steps and the last step are printed.
    pub fn new(mode: ProgressMode, done: u64, total: u64, log_every: u64) -> Self {
        let bar = (mode == ProgressMode::Auto && io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} steps, ETA {eta}  {msg}",
            )
            // The template is a constant that parses; the default style is a fine fallback.
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_position(done);
            bar.reset_eta();
            bar
        });
        Self {
            lines: bar.is_none() && mode != ProgressMode::Off,
            bar,
            log_every: log_every.max(1),
            last_step: total,
            last_val: None,
        }
    }

    /// Shows one step's log.
    pub fn step(&mut self, log: &StepLog) {
        if log.val_loss.is_some() {
            self.last_val = log.val_loss;
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(log.step);
                bar.set_message(bar_message(log, self.last_val));
                if log.val_loss.is_some() {
                    // Validation steps stay on screen above the bar.
                    bar.println(step_line(log));
                }
            }
            None if self.lines => {
                let due = log.step % self.log_every == 0 || log.step == self.last_step;
                if due || log.val_loss.is_some() {
                    println!("{}", step_line(log));
                }
            }
            None => {}
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// Leaves the bar, complete, on screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// A step as one plain line (what `--progress lines` prints and the CLI tests parse).
pub fn step_line(log: &StepLog) -> String {
    let val = log
        .val_loss
        .map_or(String::new(), |v| format!("  val {v:.4}"));
    format!(
        "step {:>5}  loss {:.4}{val}  lr {:.2e}  {:>8.0} tok/s  comm {:>4.1}%{}",
        log.step,
        log.loss,
        log.lr,
        log.tokens_per_s,
        100.0 * log.comm_share,
        hidden(log).map_or(String::new(), |h| format!("  {h}"))
    )
}

/// The bar's message: one field per item, so a new figure is one more line.
fn bar_message(log: &StepLog, last_val: Option<f32>) -> String {
    let mut fields = vec![format!("loss {:.4}", log.loss)];
    if let Some(v) = last_val {
        fields.push(format!("val {v:.4}"));
    }
    fields.push(format!("{:.0} tok/s", log.tokens_per_s));
    fields.push(format!("comm {:.1}%", 100.0 * log.comm_share));
    fields.extend(hidden(log));
    fields.join("  ")
}

/// How much of the gradient all-reduce the backward pass hid, when it overlapped them.
fn hidden(log: &StepLog) -> Option<String> {
    log.overlap
        .map(|o| format!("hidden {:.0}%", 100.0 * o.hidden_share()))
}
