//! Bus bandwidth against size, log-log, as an SVG file (plotters' SVG backend: text is
//! left to the viewer's fonts, so nothing here needs a font or a system library).

use super::results::RefFile;
use plotters::prelude::*;
use std::path::Path;

/// One line of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (bytes, GB/s), sorted by size; sizes repeated by `-N` are averaged.
    pub points: Vec<(f64, f64)>,
}

/// One series per file, or per (type, operator, root) when a file holds several.
pub fn series(files: &[RefFile]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for f in files {
        let mut keys: Vec<(&str, &str, i64)> = Vec::new();
        for r in &f.rows {
            let k = (r.dtype.as_str(), r.redop.as_str(), r.root);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let roots = {
            let mut r: Vec<i64> = keys.iter().map(|k| k.2).collect();
            r.dedup();
            r.len()
        };
        for &(dtype, redop, root) in &keys {
            let mut label = format!("{} {}", f.library, f.collective).trim().to_owned();
            if keys.len() > 1 {
                label += &format!(" {dtype} {redop}");
                if roots > 1 {
                    label += &format!(" root {root}");
                }
            }
            let mut points: Vec<(f64, f64, u32)> = Vec::new();
            for r in &f.rows {
                if (r.dtype.as_str(), r.redop.as_str(), r.root) != (dtype, redop, root) {
                    continue;
                }
                let Some(bw) = r.busbw().filter(|&b| b > 0.0 && r.size > 0) else {
                    continue;
                };
                match points.iter_mut().find(|p| p.0 == r.size as f64) {
                    Some(p) => {
                        p.1 += bw;
                        p.2 += 1;
                    }
                    None => points.push((r.size as f64, bw, 1)),
                }
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if out.iter().any(|s| s.label == label) {
                let stem = f.path.file_stem().unwrap_or_default().to_string_lossy();
                label += &format!(" ({stem})");
            }
            out.push(Series {
                label,
                points: points
                    .into_iter()
                    .map(|(s, b, n)| (s, b / n as f64))
                    .collect(),
            });
        }
    }
    out.retain(|s| !s.points.is_empty());
    out
}

/// Line colors: distinct, and dark enough on white.
const COLORS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn size_label(bytes: f64) -> String {
    let b = bytes.round() as u64;
    for (unit, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        if b >= 1 << shift && b % (1 << shift) == 0 {
            return format!("{}{unit}", b >> shift);
        }
    }
    if b >= 1 << 10 {
        format!("{:.1}K", bytes / 1024.0)
    } else {
        b.to_string()
    }
}

/// Draws `series` into the SVG file `path`.
pub fn draw(path: &Path, title: &str, series: &[Series]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if series.is_empty() {
        return Err(format!(
            "nothing to plot into {}: no result with a size and a busbw above 0",
            path.display()
        ));
    }
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x0 / 1.5..x1 * 1.5).log_scale().base(2.0),
            (y0 / 1.5..y1 * 1.5).log_scale(),
        )
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("size (bytes)")
        .y_desc("bus bandwidth (GB/s)")
        .x_label_formatter(&|x| size_label(*x))
        .y_label_formatter(&|y| super::report::fmt_g(*y))
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, s) in series.iter().enumerate() {
        let (r, g, b) = COLORS[i % COLORS.len()];
        let color = RGBColor(r, g, b).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(s.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

/// `oxccl-perf plot FILES -o OUT`: reads the files and draws them; returns the exit status.
pub fn run_files(files: &[std::path::PathBuf], output: &Path) -> i32 {
    let mut read = Vec::new();
    for f in files {
        match RefFile::read(f) {
            Ok(r) => read.push(r),
            Err(e) => {
                eprintln!("oxccl-perf: {e}");
                return 2;
            }
        }
    }
    let collectives: Vec<&str> = {
        let mut c: Vec<&str> = read.iter().map(|r| r.collective.as_str()).collect();
        c.dedup();
        c
    };
    let title = format!("Bus bandwidth: {}", collectives.join(", "));
    match draw(output, &title, &series(&read)) {
        Ok(()) => {
            println!("wrote {}", output.display());
            0
        }
        Err(e) => {
            eprintln!("oxccl-perf: {e}");
            1
        }
    }
}
