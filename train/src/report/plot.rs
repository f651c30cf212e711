//! The chart of a run: loss and validation loss against step on top, tokens/s (and the
//! communication share) below, as an SVG file. plotters' SVG backend leaves text to the
//! viewer's fonts, so nothing here needs a font or a system library.

use super::{ReportError, Row};
use plotters::prelude::*;
use std::fmt;
use std::path::Path;

/// Checks that `path` names a format [`plot`] draws; call it before training, so a bad flag
/// fails at once rather than after the run.
pub fn check_plot_path(path: &Path) -> Result<(), ReportError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => Ok(()),
        _ => Err(ReportError::PlotFormat(path.to_owned())),
    }
}

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(214, 39, 40);
const SPEED: RGBColor = RGBColor(44, 160, 44);
const COMM: RGBColor = RGBColor(255, 127, 14);

/// `lo..hi` of the finite values, widened by `pad` of the span on each side and never empty.
fn span(values: impl Iterator<Item = f64>, pad: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let d = if hi > lo {
        (hi - lo) * pad
    } else {
        lo.abs().max(1.0) * 0.05
    };
    lo - d..hi + d
}

/// Draws `rows` into the SVG file `path`: training and validation loss against step on top,
/// tokens/s (and the communication share, on a right-hand axis, when known) below.
pub fn plot(path: &Path, title: &str, rows: &[Row]) -> Result<(), ReportError> {
    check_plot_path(path)?;
    if rows.is_empty() {
        return Err(ReportError::Empty(path.to_owned()));
    }
    let fail = |e: &dyn fmt::Display| ReportError::Draw {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let finite = |v: &f64| v.is_finite();
    let train: Vec<(u64, f64)> = rows.iter().map(|r| (r.step, r.loss)).collect();
    let val: Vec<(u64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.step, r.val_loss.filter(finite)?)))
        .collect();
    let speed: Vec<(u64, f64)> = rows.iter().map(|r| (r.step, r.tokens_per_s)).collect();
    let comm: Vec<(u64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.step, 100.0 * r.comm_share.filter(finite)?)))
        .collect();
    let first = rows.iter().map(|r| r.step).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.step).max().unwrap_or(1);
    let steps = first.saturating_sub(1)..last.max(first + 1);
    let loss_range = span(train.iter().chain(&val).map(|p| p.1), 0.05);
    let speed_range = 0.0..span(speed.iter().map(|p| p.1), 0.05).end.max(1.0);

    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| fail(&e))?;
    let (top, bottom) = root.split_vertically(400);

    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(steps.clone(), loss_range.clone())
        .map_err(|e| fail(&e))?
        // Nothing on the right-hand axis: it is there to line the panels up.
        .set_secondary_coord(steps.clone(), loss_range);
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (nats/token)")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(train, TRAIN.stroke_width(1)))
        .map_err(|e| fail(&e))?
        .label("training loss")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TRAIN.stroke_width(2)));
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(val.iter().copied(), VAL.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label("validation loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], VAL.stroke_width(2)));
        chart
            .draw_series(val.iter().map(|&p| Circle::new(p, 3, VAL.filled())))
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;

    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(steps.clone(), speed_range)
        .map_err(|e| fail(&e))?
        .set_secondary_coord(
            steps,
            0.0..span(comm.iter().map(|p| p.1), 0.05).end.max(1.0),
        );
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("tokens/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(speed, SPEED.stroke_width(1)))
        .map_err(|e| fail(&e))?
        .label("tokens/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SPEED.stroke_width(2)));
    if !comm.is_empty() {
        chart
            .configure_secondary_axes()
            .y_desc("communication (% of step)")
            .draw()
            .map_err(|e| fail(&e))?;
        chart
            .draw_secondary_series(LineSeries::new(comm, COMM.stroke_width(1)))
            .map_err(|e| fail(&e))?
            .label("communication share (right axis)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], COMM.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
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
            hidden_share: None,
        }
    }

    #[test]
    fn only_svg_plots_are_accepted() {
        assert!(check_plot_path(Path::new("a/loss.svg")).is_ok());
        assert!(check_plot_path(Path::new("LOSS.SVG")).is_ok());
        for bad in ["loss.png", "loss", "loss.svg.txt"] {
            let err = check_plot_path(Path::new(bad)).unwrap_err();
            assert!(matches!(err, ReportError::PlotFormat(_)));
            assert!(err.to_string().contains(".svg file"), "{err}");
        }
        let err = plot(Path::new("x.png"), "t", &[row(1, None)]).unwrap_err();
        assert!(matches!(err, ReportError::PlotFormat(_)));
    }

    #[test]
    fn plot_draws_both_panels() {
        let path = std::env::temp_dir().join(format!("oxccl-report-{}.svg", std::process::id()));
        assert!(matches!(plot(&path, "t", &[]), Err(ReportError::Empty(_))));
        let rows: Vec<Row> = (1..=5)
            .map(|s| row(s, (s % 2 == 0).then_some(3.0)))
            .collect();
        plot(&path, "a test run", &rows).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.trim_start().starts_with("<svg"), "{svg}");
        for text in [
            "a test run",
            "step",
            "loss (nats/token)",
            "tokens/s",
            "validation loss",
            "communication (% of step)",
            "<polyline",
        ] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
        // One step only still gets non-empty axes.
        plot(&path, "one", &rows[..1]).unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn span_is_never_empty() {
        assert_eq!(span([].into_iter(), 0.1), 0.0..1.0);
        let r = span([2.0, 2.0, f64::NAN].into_iter(), 0.1);
        assert!(r.start < 2.0 && r.end > 2.0);
    }
}
