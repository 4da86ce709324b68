//! PNG plots of `emcoder eval --plot DIR`: the F1-rejection curve and the reliability diagram.

use super::metrics::{RejectionPoint, ReliabilityBin};
use plotters::prelude::*;
use std::path::Path;

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

fn register_font() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the built-in font could not be loaded".into())
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("plot: {e}")
}

/// Macro F1 against the fraction of most-uncertain decisions rejected.
pub fn rejection_png(path: &Path, curve: &[RejectionPoint], title: &str) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let ymax = curve
        .iter()
        .map(|p| p.macro_f1.max(p.micro_f1))
        .fold(0.0, f64::max)
        .max(0.1)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..0.9f64, 0.0..ymax.min(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("fraction of (text, label) decisions rejected (highest epistemic first)")
        .y_desc("F1 of the rest")
        .draw()
        .map_err(err)?;
    type Series = (&'static str, RGBColor, fn(&RejectionPoint) -> f64);
    let series: [Series; 2] = [
        ("macro F1", BLUE, |p| p.macro_f1),
        ("micro F1", RED, |p| p.micro_f1),
    ];
    for (name, color, f) in series {
        let pts: Vec<(f64, f64)> = curve.iter().map(|p| (p.reject_fraction, f(p))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Observed frequency of positives against mean predicted probability, per bin.
pub fn reliability_png(path: &Path, bins: &[ReliabilityBin], ece: f64) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (640, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Reliability (ECE {ece:.4})"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..1.0f64, 0.0..1.0f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("mean predicted probability")
        .y_desc("observed frequency")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.4),
        ))
        .map_err(err)?;
    let pts: Vec<(f64, f64)> = bins
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.mean_prob, b.frequency))
        .collect();
    chart
        .draw_series(LineSeries::new(pts.clone(), RED.stroke_width(2)))
        .map_err(err)?;
    chart
        .draw_series(pts.iter().map(|&p| Circle::new(p, 4, RED.filled())))
        .map_err(err)?;
    root.present().map_err(err)
}
