//! SVG charts of results with plotters: throughput by object size (one line per operation
//! kind, a point per result) and latency CDFs (one line per result and operation kind).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::ResultsError;
use crate::report::RunResult;
use crate::units::format_size;

const SIZE: (u32, u32) = (960, 600);

/// Draws `throughput.svg` and `latency-cdf.svg` into `out_dir` (created if missing);
/// returns their paths.
///
/// # Errors
///
/// [`ResultsError::Empty`] without results, [`ResultsError::Io`] when the directory
/// cannot be created, [`ResultsError::Plot`] when drawing fails.
pub fn plot(results: &[RunResult], out_dir: &Path) -> Result<Vec<PathBuf>, ResultsError> {
    if results.is_empty() {
        return Err(ResultsError::Empty("nothing to plot"));
    }
    std::fs::create_dir_all(out_dir).map_err(|source| ResultsError::Io {
        path: out_dir.to_owned(),
        source,
    })?;
    let throughput = out_dir.join("throughput.svg");
    draw_throughput(results, &throughput).map_err(|reason| ResultsError::Plot {
        path: throughput.clone(),
        reason,
    })?;
    let cdf = out_dir.join("latency-cdf.svg");
    draw_cdf(results, &cdf).map_err(|reason| ResultsError::Plot {
        path: cdf.clone(),
        reason,
    })?;
    Ok(vec![throughput, cdf])
}

fn draw_throughput(results: &[RunResult], path: &Path) -> Result<(), String> {
    // op → [(mean object size, MiB/s)], sorted by size.
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in results {
        let size = r.config.size_mean_bytes.max(1.0);
        for s in &r.ops {
            if s.bytes > 0 {
                series
                    .entry(s.op.clone())
                    .or_default()
                    .push((size, s.mib_per_sec));
            }
        }
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let all = series.values().flatten();
    let x_min = all.clone().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max);
    let (x_min, x_max) = if x_min.is_finite() {
        (x_min / 2.0, x_max * 2.0)
    } else {
        (1.0, 2.0)
    };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput by object size", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..(y_max * 1.15).max(1.0))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("object size (mean)")
        .y_desc("MiB/s")
        .x_label_formatter(&|v| format_size(*v as u64))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (op, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(4))
            .map_err(|e| e.to_string())?
            .label(op)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn draw_cdf(results: &[RunResult], path: &Path) -> Result<(), String> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results {
        for s in &r.ops {
            if s.cdf.is_empty() {
                continue;
            }
            // Milliseconds on the x axis, floored at 1 µs for the log scale.
            let points = s
                .cdf
                .iter()
                .map(|[p, us]| (us.max(1.0) / 1000.0, *p))
                .collect();
            let name = if results.len() > 1 {
                format!("{} · {}", r.name(), s.op)
            } else {
                s.op.clone()
            };
            series.push((name, points));
        }
    }
    let all = series.iter().flat_map(|(_, p)| p);
    let x_min = all.clone().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = all.map(|p| p.0).fold(0.0, f64::max);
    let (x_min, x_max) = if x_min.is_finite() && x_max > 0.0 {
        (x_min / 1.5, x_max * 1.5)
    } else {
        (0.001, 1.0)
    };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency CDF", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..100.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("percentile")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
