//! The per-step CSV log. The first four columns are `step,loss,val_loss,tokens_per_s`
//! (readers of older files keep working); `lr`, `comm_share` and `hidden_share` follow. An empty field is a
//! missing value.

use super::ReportError;
use crate::trainer::StepLog;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// The CSV header; the first four columns come first so older readers keep working.
pub const CSV_HEADER: &str = "step,loss,val_loss,tokens_per_s,lr,comm_share,hidden_share";

/// Columns every oxccl-train CSV file starts with (older files have only these).
const CSV_REQUIRED: [&str; 4] = ["step", "loss", "val_loss", "tokens_per_s"];

/// One step's numbers, as a CSV row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Step number, from 1.
    pub step: u64,
    /// Training loss.
    pub loss: f64,
    /// Validation loss, on validation steps.
    pub val_loss: Option<f64>,
    /// Global-batch tokens per second.
    pub tokens_per_s: f64,
    /// Learning rate (absent in files older than this column).
    pub lr: Option<f64>,
    /// Share of the step spent communicating, 0..=1 (absent in older files).
    pub comm_share: Option<f64>,
    /// Share of the gradient all-reduce hidden behind the backward pass, 0..=1 (absent
    /// when the step did not overlap them, and in older files).
    pub hidden_share: Option<f64>,
}

impl From<&StepLog> for Row {
    fn from(log: &StepLog) -> Self {
        Self {
            step: log.step,
            loss: f64::from(log.loss),
            val_loss: log.val_loss.map(f64::from),
            tokens_per_s: log.tokens_per_s,
            lr: Some(log.lr),
            comm_share: Some(log.comm_share),
            hidden_share: log.overlap.map(|o| o.hidden_share()),
        }
    }
}

impl Row {
    /// The row as a CSV line (no newline), in [`CSV_HEADER`]'s column order.
    pub fn csv_line(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_default();
        format!(
            "{},{:.6},{},{:.1},{},{},{}",
            self.step,
            self.loss,
            opt(self.val_loss.map(|v| format!("{v:.6}"))),
            self.tokens_per_s,
            opt(self.lr.map(|v| format!("{v:.4e}"))),
            opt(self.comm_share.map(|v| format!("{v:.4}"))),
            opt(self.hidden_share.map(|v| format!("{v:.4}"))),
        )
    }
}

/// Writes the header, then one line per step, flushed at once (a run cut short leaves a
/// readable file).
#[derive(Debug)]
pub struct CsvLog<W: Write> {
    out: W,
}

impl CsvLog<BufWriter<File>> {
    /// Creates (truncates) `path` and writes the header.
    pub fn create(path: &Path) -> Result<Self, ReportError> {
        let io = |source| ReportError::Io {
            path: path.to_owned(),
            source,
        };
        Self::new(BufWriter::new(File::create(path).map_err(io)?)).map_err(io)
    }
}

impl<W: Write> CsvLog<W> {
    /// Writes the header to `out`.
    pub fn new(mut out: W) -> io::Result<Self> {
        writeln!(out, "{CSV_HEADER}")?;
        out.flush()?;
        Ok(Self { out })
    }

    /// Appends one row.
    pub fn write(&mut self, row: &Row) -> io::Result<()> {
        writeln!(self.out, "{}", row.csv_line())?;
        self.out.flush()
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads a CSV file written by [`CsvLog`] (or an older one with only the first four columns).
pub fn read_csv(path: &Path) -> Result<Vec<Row>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_csv(&text).map_err(|(line, message)| ReportError::Csv {
        path: path.to_owned(),
        line,
        message,
    })
}

/// [`read_csv`]'s parser: rows, or (1-based line, what is wrong).
fn parse_csv(text: &str) -> Result<Vec<Row>, (usize, String)> {
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.trim().split(',').collect(),
        None => return Err((1, "empty file, expected a header".into())),
    };
    if header.get(..4) != Some(&CSV_REQUIRED[..]) {
        return Err((
            1,
            format!("the header must start with {}", CSV_REQUIRED.join(",")),
        ));
    }
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (lr_col, comm_col) = (column("lr"), column("comm_share"));
    let hidden_col = column("hidden_share");
    let mut rows = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let bad = |what: &str, v: &str| (i + 1, format!("{what} {v:?} is not a number"));
        let num = |col: usize, what: &str| -> Result<Option<f64>, (usize, String)> {
            match fields.get(col).copied().unwrap_or("") {
                "" => Ok(None),
                v => v.parse().map(Some).map_err(|_| bad(what, v)),
            }
        };
        let need = |col: usize, what: &str| {
            num(col, what)?.ok_or_else(|| (i + 1, format!("no {what} in {line:?}")))
        };
        let step = fields[0].parse().map_err(|_| bad("step", fields[0]))?;
        rows.push(Row {
            step,
            loss: need(1, "loss")?,
            val_loss: num(2, "val_loss")?,
            tokens_per_s: need(3, "tokens_per_s")?,
            lr: lr_col.map_or(Ok(None), |c| num(c, "lr"))?,
            comm_share: comm_col.map_or(Ok(None), |c| num(c, "comm_share"))?,
            hidden_share: hidden_col.map_or(Ok(None), |c| num(c, "hidden_share"))?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64, val: Option<f64>) -> Row {
        Row {
            step,
            loss: 4.0 - 0.5 * step as f64,
            val_loss: val,
            tokens_per_s: 1000.0 + step as f64,
            lr: Some(1e-3),
            comm_share: Some(0.125),
            hidden_share: (step == 2).then_some(0.75),
        }
    }

    #[test]
    fn csv_starts_with_the_old_columns_and_round_trips() {
        let mut log = CsvLog::new(Vec::new()).unwrap();
        log.write(&row(1, None)).unwrap();
        log.write(&row(2, Some(3.25))).unwrap();
        let text = String::from_utf8(log.into_inner()).unwrap();
        assert_eq!(
            text,
            "step,loss,val_loss,tokens_per_s,lr,comm_share,hidden_share\n\
             1,3.500000,,1001.0,1.0000e-3,0.1250,\n\
             2,3.000000,3.250000,1002.0,1.0000e-3,0.1250,0.7500\n"
        );
        assert_eq!(
            parse_csv(&text).unwrap(),
            vec![row(1, None), row(2, Some(3.25))]
        );
    }

    #[test]
    fn old_four_column_files_read_without_lr_and_comm_share() {
        let rows =
            parse_csv("step,loss,val_loss,tokens_per_s\n1,4.18,,3170.6\n2,4.1,4.2,42\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[1].val_loss, rows[1].lr, rows[1].comm_share),
            (Some(4.2), None, None)
        );
    }

    #[test]
    fn bad_csv_names_the_line() {
        assert_eq!(parse_csv("a,b\n").unwrap_err().0, 1);
        let err = parse_csv(&format!("{CSV_HEADER}\n1,2,,3,,\n2,x,,3,,\n")).unwrap_err();
        assert_eq!(err.0, 3);
        assert!(err.1.contains("loss \"x\""), "{}", err.1);
    }
}
