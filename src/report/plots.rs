//! PNG plots of a run (plotters, bitmap backend, the embedded DejaVu Sans
//! font so no system font is needed). Each file is drawn under a temporary
//! name and renamed, so a failed draw leaves no half-written PNG.

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const SIZE: (u32, u32) = (720, 480);

/// A named curve: its label and its (x, y) points.
pub type Curve = (String, Vec<(f64, f64)>);
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the dejavu crate.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// Draws into a temporary PNG next to `path`, then renames it.
fn draw_png(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("plot.png");
    let tmp = path.with_file_name(format!(".{name}.tmp.png"));
    let result = (|| {
        let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| anyhow!("cannot write {}: {e}", path.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("drawing {}", path.display())))
        }
    }
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 { (lo - 0.5, hi + 0.5) } else { (lo, hi) }
}

/// One line chart: axes, named curves, a legend.
struct Chart<'a> {
    title: &'a str,
    x: (f64, f64),
    y: (f64, f64),
    x_desc: &'a str,
    y_desc: &'a str,
    legend: SeriesLabelPosition,
    curves: &'a [Curve],
    /// Draw the last curve thicker (the fused system).
    thick_last: bool,
    /// Draw the chance diagonal (ROC).
    diagonal: bool,
}

fn line_chart(path: &Path, c: &Chart) -> Result<()> {
    draw_png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(c.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(c.x.0..c.x.1, c.y.0..c.y.1)
            .map_err(err)?;
        chart.configure_mesh().x_desc(c.x_desc).y_desc(c.y_desc).label_style((FONT, 13)).draw().map_err(err)?;
        if c.diagonal {
            chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3))).map_err(err)?;
        }
        for (i, (name, pts)) in c.curves.iter().enumerate() {
            let col = color(i);
            let w = if c.thick_last && i + 1 == c.curves.len() { 3 } else { 2 };
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(w)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], col.stroke_width(3)));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .position(c.legend.clone())
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)
    })
}

/// ROC curves with the chance diagonal; the last curve (the fused system) drawn thickest.
pub fn roc(path: &Path, title: &str, curves: &[Curve]) -> Result<()> {
    let c = Chart {
        title,
        x: (0.0, 1.0),
        y: (0.0, 1.0),
        x_desc: "false positive rate",
        y_desc: "true positive rate",
        legend: SeriesLabelPosition::LowerRight,
        curves,
        thick_last: true,
        diagonal: true,
    };
    line_chart(path, &c)
}

/// Whether a sample spans so many orders of magnitude (likelihood scores
/// of anomalies can be 1e9 while normals sit near 0) that linear bins would
/// put nearly everything in one bin.
fn needs_log_scale(samples: &[(String, Vec<f64>)]) -> bool {
    let mut all: Vec<f64> = samples.iter().flat_map(|s| s.1.iter().copied()).filter(|v| v.is_finite()).collect();
    if all.len() < 4 {
        return false;
    }
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[(q * (all.len() - 1) as f64).round() as usize];
    let spread = at(0.75) - at(0.25);
    all[all.len() - 1] - all[0] > 50.0 * spread.max(1e-12)
}

fn symlog(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p() / std::f64::consts::LN_10
}

/// Step histograms of several samples on shared bins (a signed log scale
/// when the scores span many orders of magnitude).
pub fn histograms(path: &Path, title: &str, samples: &[(String, Vec<f64>)]) -> Result<()> {
    const BINS: usize = 30;
    let log = needs_log_scale(samples);
    let t = |x: f64| if log { symlog(x) } else { x };
    let (lo, hi) = range(samples.iter().flat_map(|s| s.1.iter().map(|x| t(*x))));
    let width = (hi - lo) / BINS as f64;
    let curves: Vec<Curve> = samples
        .iter()
        .map(|(name, v)| {
            let mut c = vec![0usize; BINS];
            for x in v {
                c[(((t(*x) - lo) / width).max(0.0) as usize).min(BINS - 1)] += 1;
            }
            let mut pts = vec![(lo, 0.0)];
            for (b, &n) in c.iter().enumerate() {
                let x0 = lo + b as f64 * width;
                pts.extend([(x0, n as f64), (x0 + width, n as f64)]);
            }
            pts.push((hi, 0.0));
            (name.clone(), pts)
        })
        .collect();
    let top = curves.iter().flat_map(|c| c.1.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.1;
    let c = Chart {
        title,
        x: (lo, hi),
        y: (0.0, top),
        x_desc: if log { "sign(score) log10(1 + |score|)" } else { "anomaly score" },
        y_desc: "clips",
        legend: SeriesLabelPosition::UpperRight,
        curves: &curves,
        thick_last: false,
        diagonal: false,
    };
    line_chart(path, &c)
}

/// Line plot of several named curves.
pub fn lines(path: &Path, title: &str, x_desc: &str, y_desc: &str, curves: &[Curve]) -> Result<()> {
    let x = range(curves.iter().flat_map(|c| c.1.iter().map(|p| p.0)));
    let (y0, y1) = range(curves.iter().flat_map(|c| c.1.iter().map(|p| p.1)));
    let pad = 0.05 * (y1 - y0);
    let c = Chart {
        title,
        x,
        y: (y0 - pad, y1 + pad),
        x_desc,
        y_desc,
        legend: SeriesLabelPosition::UpperRight,
        curves,
        thick_last: false,
        diagonal: false,
    };
    line_chart(path, &c)
}
