//! What a training run shows and leaves behind: the per-step CSV log ([`csv`]), the SVG chart
//! of loss and throughput ([`mod@plot`]), and the console progress ([`progress`]: a bar on a
//! terminal, plain lines elsewhere).
//!
//! Words used here: a [`Row`] is one step's numbers as the CSV holds them (read back from an
//! older file, `lr` and `comm_share` may be missing); [`CsvLog`] writes rows, [`read_csv`]
//! reads them back, [`plot()`] draws them, and [`Progress`] shows
//! [`StepLog`](crate::trainer::StepLog)s as they come.

use std::fmt;
use std::io;
use std::path::PathBuf;

pub mod csv;
pub mod plot;
pub mod progress;

pub use csv::{read_csv, CsvLog, Row, CSV_HEADER};
pub use plot::{check_plot_path, plot};
pub use progress::{step_line, Progress, ProgressMode};

/// Why a report could not be written or read.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReportError {
    /// The plot file's extension names a format this module does not write (only `.svg`).
    PlotFormat(PathBuf),
    /// Creating, writing or reading a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// plotters could not draw the chart.
    Draw {
        /// The plot file.
        path: PathBuf,
        /// plotters' error, as text.
        message: String,
    },
    /// There are no rows to plot.
    Empty(PathBuf),
    /// A CSV file is not an oxccl-train log.
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlotFormat(p) => write!(
                f,
                "{}: the plot must be an .svg file (the only format drawn)",
                p.display()
            ),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Draw { path, message } => {
                write!(f, "cannot draw {}: {message}", path.display())
            }
            Self::Empty(p) => write!(f, "nothing to plot into {}: no steps", p.display()),
            Self::Csv {
                path,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
