//! `emcoder eval --precision int8|bf16`: the same split, seed and masks in f32 beside it, and
//! how far the lower precision's answers are from f32's.

use super::Evaluation;
use emcoder::Threshold;
use serde::Serialize;
use std::fmt::Write;

/// The lower precision against f32 on the same texts, samples and seed.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The lower precision's name.
    pub precision: String,
    /// (text, label) pairs compared.
    pub pairs: usize,
    /// Share of the pairs whose thresholded decision is the same.
    pub decision_agreement: f64,
    /// Pairs whose decision differs.
    pub differing: usize,
    /// Mean and largest |difference| of the mean probabilities.
    pub mean_abs_delta: f64,
    /// As above.
    pub max_abs_delta: f64,
    /// Macro F1 (thresholded) of each.
    pub macro_f1_f32: f64,
    /// As above.
    pub macro_f1: f64,
    /// For the pairs whose decision differs: how far f32's mean probability is from the
    /// label's threshold (the largest, and the median).
    pub differing_max_distance: f64,
    /// As above.
    pub differing_median_distance: f64,
    /// Seconds of each run.
    pub seconds_f32: f64,
    /// As above.
    pub seconds: f64,
}

/// Compares `low` (the lower precision) with `f32` (the same examples and options).
pub fn compare(
    precision: &str,
    f32: &Evaluation,
    low: &Evaluation,
    thresholds: &[Threshold],
) -> Comparison {
    let c = thresholds.len().max(1);
    let pairs = f32.decisions.len();
    let mut dist: Vec<f64> = Vec::new();
    let (mut sum, mut max) = (0.0f64, 0.0f64);
    for i in 0..pairs {
        let d = (f32.means[i] as f64 - low.means[i] as f64).abs();
        sum += d;
        max = max.max(d);
        if f32.decisions[i] != low.decisions[i] {
            dist.push((f32.means[i] as f64 - thresholds[i % c].p as f64).abs());
        }
    }
    dist.sort_by(|a, b| a.total_cmp(b));
    Comparison {
        precision: precision.to_string(),
        pairs,
        decision_agreement: 1.0 - dist.len() as f64 / pairs.max(1) as f64,
        differing: dist.len(),
        mean_abs_delta: sum / pairs.max(1) as f64,
        max_abs_delta: max,
        macro_f1_f32: f32.thresholded.macro_avg.f1,
        macro_f1: low.thresholded.macro_avg.f1,
        differing_max_distance: dist.last().copied().unwrap_or(0.0),
        differing_median_distance: dist.get(dist.len() / 2).copied().unwrap_or(0.0),
        seconds_f32: f32.seconds,
        seconds: low.seconds,
    }
}

/// The comparison as text.
pub fn to_text(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} vs f32 (same texts, samples and seed): {:.3}% of {} (text, label) decisions equal ({} differ); mean probabilities |delta| mean {:.5}, max {:.4}; macro F1 {:.4} vs f32 {:.4} (delta {:+.4}); {:.2}x the speed of f32 ({:.1} s, f32 {:.1} s)",
        c.precision,
        100.0 * c.decision_agreement,
        c.pairs,
        c.differing,
        c.mean_abs_delta,
        c.max_abs_delta,
        c.macro_f1,
        c.macro_f1_f32,
        c.macro_f1 - c.macro_f1_f32,
        c.seconds_f32 / c.seconds.max(1e-9),
        c.seconds,
        c.seconds_f32
    );
    if c.differing > 0 {
        let _ = writeln!(
            s,
            "the differing decisions are those whose f32 mean probability lies within {:.4} of the label's threshold (median {:.4})",
            c.differing_max_distance, c.differing_median_distance
        );
    }
    s
}
