//! `emcoder eval`: the model card's evaluation on a labelled TSV split.

pub mod compare;
pub mod data;
pub mod metrics;
pub mod plot;

use emcoder::{Model, PredictOptions};
use indicatif::{ProgressBar, ProgressStyle};
use metrics::{RejectionPoint, ReliabilityBin, Report};
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

/// Everything `eval` measured.
pub struct Evaluation {
    /// Texts evaluated.
    pub n_texts: usize,
    /// With the model's thresholds.
    pub thresholded: Report,
    /// With 0.5 for every label.
    pub at_half: Report,
    /// Macro F1 after rejecting the most uncertain decisions.
    pub rejection: Vec<RejectionPoint>,
    /// Calibration bins of the mean probabilities.
    pub reliability: Vec<ReliabilityBin>,
    /// Expected calibration error.
    pub ece: f64,
    /// Wall time of the predictions.
    pub seconds: f64,
    /// Mean MC samples drawn per text.
    pub mean_samples: f64,
    /// The decisions, (texts x labels) row-major (to compare runs).
    pub decisions: Vec<bool>,
    /// The mean probabilities, (texts x labels) row-major.
    pub means: Vec<f32>,
}

/// Predicts `examples` in batches of `batch` texts (progress on stderr) and scores them.
pub fn evaluate(
    model: &Model,
    examples: &[data::Example],
    opts: &PredictOptions,
    batch: usize,
) -> emcoder::Result<Evaluation> {
    let c = model.config().num_labels;
    let bar = ProgressBar::new(examples.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} texts  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut mean, mut unc, mut pred) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    let mut samples = 0u64;
    for chunk in examples.chunks(batch.max(1)) {
        let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
        for p in model.predict(&texts, opts)? {
            samples += p.samples as u64;
            for s in &p.labels {
                mean.push(s.mean);
                unc.push(s.epistemic);
                pred.push(s.predicted);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let mut gold = vec![false; examples.len() * c];
    for (i, e) in examples.iter().enumerate() {
        for &l in &e.labels {
            gold[i * c + l] = true;
        }
    }
    let half: Vec<bool> = mean.iter().map(|&m| m >= 0.5).collect();
    let (reliability, ece) = metrics::reliability(&gold, &mean, 10);
    Ok(Evaluation {
        n_texts: examples.len(),
        thresholded: metrics::report(&gold, &pred, c),
        at_half: metrics::report(&gold, &half, c),
        rejection: metrics::rejection_curve(&gold, &pred, &unc, c),
        reliability,
        ece,
        seconds,
        mean_samples: samples as f64 / examples.len() as f64,
        decisions: pred,
        means: mean,
    })
}

fn prf_json(p: &metrics::Prf) -> Value {
    json!({"precision": p.precision, "recall": p.recall, "f1": p.f1})
}

fn report_json(r: &Report, labels: &[String]) -> Value {
    let per: serde_json::Map<String, Value> = labels
        .iter()
        .zip(&r.per_label)
        .map(|(l, s)| (l.clone(), serde_json::to_value(s).unwrap_or(Value::Null)))
        .collect();
    json!({"macro": prf_json(&r.macro_avg), "micro": prf_json(&r.micro), "weighted": prf_json(&r.weighted),
           "samples": prf_json(&r.samples), "per_label": per})
}

/// The JSON report: the thresholded averages at the top level, `at_0_5`, the curve.
pub fn to_json(e: &Evaluation, labels: &[String], setup: Value) -> Value {
    let mut v = report_json(&e.thresholded, labels);
    v["n_texts"] = json!(e.n_texts);
    v["setup"] = setup;
    v["at_0_5"] = report_json(&e.at_half, labels);
    v["rejection_curve"] = json!(e.rejection);
    v["reliability"] = json!(e.reliability);
    v["ece"] = json!(e.ece);
    v["texts_per_s"] = json!(e.n_texts as f64 / e.seconds.max(1e-9));
    v["mean_samples"] = json!(e.mean_samples);
    v
}

/// The model card's tables as text.
pub fn to_text(e: &Evaluation, labels: &[String], setup: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{setup}\n{} texts, {:.1} texts/s, {:.1} samples per text on average\n",
        e.n_texts,
        e.n_texts as f64 / e.seconds.max(1e-9),
        e.mean_samples
    );
    let _ = writeln!(
        s,
        "{:<16} {:>9} {:>9} {:>9} {:>8} | {:>9} {:>9} {:>9}",
        "label", "precision", "recall", "f1", "support", "P@0.5", "R@0.5", "F1@0.5"
    );
    for (i, l) in labels.iter().enumerate() {
        let (a, b) = (&e.thresholded.per_label[i], &e.at_half.per_label[i]);
        let _ = writeln!(
            s,
            "{l:<16} {:>9.3} {:>9.3} {:>9.3} {:>8} | {:>9.3} {:>9.3} {:>9.3}",
            a.precision, a.recall, a.f1, a.support, b.precision, b.recall, b.f1
        );
    }
    let total: u64 = e.thresholded.per_label.iter().map(|l| l.support).sum();
    for (name, a, b) in [
        ("micro avg", &e.thresholded.micro, &e.at_half.micro),
        ("macro avg", &e.thresholded.macro_avg, &e.at_half.macro_avg),
        ("weighted avg", &e.thresholded.weighted, &e.at_half.weighted),
        ("samples avg", &e.thresholded.samples, &e.at_half.samples),
    ] {
        let _ = writeln!(
            s,
            "{name:<16} {:>9.3} {:>9.3} {:>9.3} {total:>8} | {:>9.3} {:>9.3} {:>9.3}",
            a.precision, a.recall, a.f1, b.precision, b.recall, b.f1
        );
    }
    let _ = writeln!(
        s,
        "\nF1-rejection curve (reject the most uncertain decisions by epistemic uncertainty):"
    );
    let _ = writeln!(s, "{:>8} {:>9} {:>9}", "rejected", "macro F1", "micro F1");
    for p in &e.rejection {
        let _ = writeln!(
            s,
            "{:>7.0}% {:>9.4} {:>9.4}",
            p.reject_fraction * 100.0,
            p.macro_f1,
            p.micro_f1
        );
    }
    let _ = writeln!(
        s,
        "\nReliability (mean probability vs observed frequency), ECE {:.4}:",
        e.ece
    );
    for b in e.reliability.iter().filter(|b| b.count > 0) {
        let _ = writeln!(
            s,
            "  [{:.1}, {:.1})  n={:<7} mean {:.3}  freq {:.3}",
            b.lo, b.hi, b.count, b.mean_prob, b.frequency
        );
    }
    s
}

/// Writes `rejection_curve.png` and `reliability.png` into `dir`.
pub fn plots(e: &Evaluation, dir: &Path, title: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|x| format!("cannot create {}: {x}", dir.display()))?;
    plot::rejection_png(&dir.join("rejection_curve.png"), &e.rejection, title)?;
    plot::reliability_png(&dir.join("reliability.png"), &e.reliability, e.ece)
}
