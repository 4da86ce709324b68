//! Multi-label metrics with the definitions of `reference/README.md` ("Evaluation metrics"),
//! which the PyTorch evaluator shares: per-label P/R/F1/support, macro, micro, weighted and
//! samples averages, the epistemic rejection curve and a reliability diagram.

use serde::Serialize;

/// Precision, recall, F1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Prf {
    /// TP / (TP + FP), 0 when undefined.
    pub precision: f64,
    /// TP / (TP + FN), 0 when undefined.
    pub recall: f64,
    /// 2TP / (2TP + FP + FN), 0 when undefined.
    pub f1: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl Prf {
    fn from_counts(tp: u64, fp: u64, fn_: u64) -> Prf {
        let (tp, fp, fn_) = (tp as f64, fp as f64, fn_ as f64);
        Prf {
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: ratio(2.0 * tp, 2.0 * tp + fp + fn_),
        }
    }
}

/// One label's scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LabelScore {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Gold positives.
    pub support: u64,
}

/// The model card's table for one decision rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Per label, in id order.
    pub per_label: Vec<LabelScore>,
    /// Unweighted mean over labels.
    pub macro_avg: Prf,
    /// From summed counts.
    pub micro: Prf,
    /// Support-weighted mean over labels.
    pub weighted: Prf,
    /// Mean over texts of per-text scores.
    pub samples: Prf,
}

/// Scores decisions `pred` (n x c, row-major) against gold `gold` (same layout).
pub fn report(gold: &[bool], pred: &[bool], c: usize) -> Report {
    let n = gold.len() / c;
    let mut counts = vec![(0u64, 0u64, 0u64); c];
    let mut samples = Prf::default();
    for i in 0..n {
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for j in 0..c {
            let (g, p) = (gold[i * c + j], pred[i * c + j]);
            let k = &mut counts[j];
            match (g, p) {
                (true, true) => {
                    k.0 += 1;
                    tp += 1
                }
                (false, true) => {
                    k.1 += 1;
                    fp += 1
                }
                (true, false) => {
                    k.2 += 1;
                    fn_ += 1
                }
                _ => {}
            }
        }
        let s = Prf::from_counts(tp, fp, fn_);
        samples.precision += s.precision / n as f64;
        samples.recall += s.recall / n as f64;
        samples.f1 += s.f1 / n as f64;
    }
    let per_label: Vec<LabelScore> = counts
        .iter()
        .map(|&(tp, fp, fn_)| {
            let s = Prf::from_counts(tp, fp, fn_);
            LabelScore {
                precision: s.precision,
                recall: s.recall,
                f1: s.f1,
                support: tp + fn_,
            }
        })
        .collect();
    let sum = |f: &dyn Fn(&LabelScore) -> f64| per_label.iter().map(f).sum::<f64>();
    let macro_avg = Prf {
        precision: sum(&|l| l.precision) / c as f64,
        recall: sum(&|l| l.recall) / c as f64,
        f1: sum(&|l| l.f1) / c as f64,
    };
    let total: u64 = per_label.iter().map(|l| l.support).sum();
    let w = |l: &LabelScore| ratio(l.support as f64, total as f64);
    let weighted = Prf {
        precision: sum(&|l| l.precision * w(l)),
        recall: sum(&|l| l.recall * w(l)),
        f1: sum(&|l| l.f1 * w(l)),
    };
    let (tp, fp, fn_) = counts
        .iter()
        .fold((0, 0, 0), |a, k| (a.0 + k.0, a.1 + k.1, a.2 + k.2));
    Report {
        per_label,
        macro_avg,
        micro: Prf::from_counts(tp, fp, fn_),
        weighted,
        samples,
    }
}

/// One point of the rejection curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RejectionPoint {
    /// Fraction of (text, label) decisions rejected, most uncertain first.
    pub reject_fraction: f64,
    /// Macro F1 over the decisions kept.
    pub macro_f1: f64,
    /// Micro F1 over the decisions kept (from the counts summed over labels).
    pub micro_f1: f64,
}

/// Macro F1 after rejecting the `k/10` most uncertain decisions, k = 0..9. Decisions are
/// ordered by `uncertainty` descending, ties by flat index ascending.
pub fn rejection_curve(
    gold: &[bool],
    pred: &[bool],
    uncertainty: &[f32],
    c: usize,
) -> Vec<RejectionPoint> {
    let total = gold.len();
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by(|&a, &b| uncertainty[b].total_cmp(&uncertainty[a]).then(a.cmp(&b)));
    (0..10)
        .map(|k| {
            let r = k * total / 10;
            let mut counts = vec![(0u64, 0u64, 0u64); c];
            for &idx in &order[r..] {
                let e = &mut counts[idx % c];
                match (gold[idx], pred[idx]) {
                    (true, true) => e.0 += 1,
                    (false, true) => e.1 += 1,
                    (true, false) => e.2 += 1,
                    _ => {}
                }
            }
            let f1 = counts
                .iter()
                .map(|&(tp, fp, fn_)| Prf::from_counts(tp, fp, fn_).f1)
                .sum::<f64>()
                / c as f64;
            let (tp, fp, fn_) = counts
                .iter()
                .fold((0, 0, 0), |a, k| (a.0 + k.0, a.1 + k.1, a.2 + k.2));
            RejectionPoint {
                reject_fraction: k as f64 / 10.0,
                macro_f1: f1,
                micro_f1: Prf::from_counts(tp, fp, fn_).f1,
            }
        })
        .collect()
}

/// One bin of the reliability diagram.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Bin range [lo, hi).
    pub lo: f64,
    /// Upper edge (the last bin includes 1.0).
    pub hi: f64,
    /// Decisions in the bin.
    pub count: u64,
    /// Mean predicted probability of the bin.
    pub mean_prob: f64,
    /// Fraction of gold positives.
    pub frequency: f64,
}

/// Calibration of mean probabilities over every (text, label) pair in `bins` equal bins,
/// and the expected calibration error (count-weighted |frequency - mean_prob|).
pub fn reliability(gold: &[bool], prob: &[f32], bins: usize) -> (Vec<ReliabilityBin>, f64) {
    let mut acc = vec![(0u64, 0.0f64, 0u64); bins];
    for (g, p) in gold.iter().zip(prob) {
        let b = ((*p as f64 * bins as f64) as usize).min(bins - 1);
        acc[b].0 += 1;
        acc[b].1 += *p as f64;
        acc[b].2 += *g as u64;
    }
    let n = gold.len() as f64;
    let mut ece = 0.0;
    let out = acc
        .iter()
        .enumerate()
        .map(|(i, &(count, sum, pos))| {
            let (mean_prob, frequency) =
                (ratio(sum, count as f64), ratio(pos as f64, count as f64));
            ece += ratio(count as f64, n) * (frequency - mean_prob).abs();
            ReliabilityBin {
                lo: i as f64 / bins as f64,
                hi: (i + 1) as f64 / bins as f64,
                count,
                mean_prob,
                frequency,
            }
        })
        .collect();
    (out, ece)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_report() {
        // 3 texts x 2 labels. gold: [1,0],[1,1],[0,0]; pred: [1,1],[0,1],[0,0]
        let gold = [true, false, true, true, false, false];
        let pred = [true, true, false, true, false, false];
        let r = report(&gold, &pred, 2);
        // label 0: TP1 FP0 FN1 -> P1 R.5 F1 2/3; label 1: TP1 FP1 FN0 -> P.5 R1 F1 2/3
        assert_eq!(r.per_label[0].support, 2);
        assert!((r.per_label[0].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.macro_avg.precision - 0.75).abs() < 1e-12);
        // micro: TP2 FP1 FN1 -> P 2/3 R 2/3
        assert!((r.micro.f1 - 2.0 / 3.0).abs() < 1e-12);
        // weighted: supports 2 and 1 -> P = (2*1 + 1*.5)/3
        assert!((r.weighted.precision - 2.5 / 3.0).abs() < 1e-12);
        // samples: text0 P.5 R1; text1 P1 R.5; text2 all 0
        assert!((r.samples.precision - 0.5).abs() < 1e-12);
        assert!((r.samples.f1 - (2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn rejection_removes_most_uncertain_first() {
        // 10 decisions of one label; the only wrong one is the most uncertain.
        let gold = [true; 10];
        let mut pred = [true; 10];
        pred[3] = false;
        let mut unc = [0.0f32; 10];
        unc[3] = 1.0;
        let c = rejection_curve(&gold, &pred, &unc, 1);
        assert!((c[0].macro_f1 - 18.0 / 19.0).abs() < 1e-12);
        assert_eq!(c[1].macro_f1, 1.0);
        assert_eq!(c[0].micro_f1, c[0].macro_f1); // one label: micro = macro
        assert_eq!(c[1].micro_f1, 1.0);
        assert_eq!(c.len(), 10);
        assert_eq!(c[9].reject_fraction, 0.9);
    }

    #[test]
    fn micro_and_macro_differ_when_a_label_loses_its_decisions() {
        // Two labels, 4 texts. Label 0: all correct positives, certain. Label 1: one
        // correct positive that is the most uncertain decision, the rest true negatives.
        let gold = [true, true, true, false, true, false, true, false];
        let pred = gold;
        let mut unc = [0.0f32; 8];
        unc[1] = 1.0;
        let c = rejection_curve(&gold, &pred, &unc, 2);
        assert_eq!((c[0].macro_f1, c[0].micro_f1), (1.0, 1.0));
        // Rejecting 1 of 8 decisions (k=1 -> floor(8/10) = 0: none); k=2 rejects 1.
        assert_eq!(c[1].macro_f1, 1.0);
        assert_eq!(c[2].macro_f1, 0.5); // label 1 has nothing left: F1 0
        assert_eq!(c[2].micro_f1, 1.0);
    }

    #[test]
    fn reliability_bins() {
        let (b, ece) = reliability(&[true, false, true, false], &[0.05, 0.05, 0.95, 1.0], 10);
        assert_eq!(b[0].count, 2);
        assert_eq!(b[0].frequency, 0.5);
        assert_eq!(b[9].count, 2);
        assert!((ece - (0.5 * 0.45 + 0.5 * (0.975 - 0.5))).abs() < 1e-6);
    }
}
