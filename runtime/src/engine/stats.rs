//! Per-label statistics of N MC samples (spec §2): mean probability, std (N-1), entropy
//! decomposition (total, aleatoric, epistemic), and the thresholded decision.

use crate::model::Threshold;
use emcoder_kernels::activation::sigmoid;

/// Statistics of one label of one text.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct LabelStats {
    /// Mean of the sigmoid probabilities over samples.
    pub mean: f32,
    /// Their standard deviation, unbiased (N-1); 0 for a single pass.
    pub std: f32,
    /// Entropy of the mean probability, `H(mean)` (nats).
    pub total_entropy: f32,
    /// Expected entropy, `mean_s H(p_s)` (aleatoric).
    pub aleatoric: f32,
    /// Mutual information, `total - aleatoric` (epistemic), clamped at 0.
    pub epistemic: f32,
    /// Whether the label is predicted under the model's thresholds.
    pub predicted: bool,
}

/// Bernoulli entropy in nats, `0 ln 0 = 0`.
pub fn bernoulli_entropy(p: f64) -> f64 {
    let term = |x: f64| if x > 0.0 { -x * x.ln() } else { 0.0 };
    term(p) + term(1.0 - p)
}

/// Mean and unbiased (N-1) standard deviation of sample probabilities; std 0 for one sample.
fn mean_std(p: &[f64]) -> (f64, f64) {
    let n = p.len() as f64;
    let mean = p.iter().sum::<f64>() / n;
    if p.len() < 2 {
        return (mean, 0.0);
    }
    let var = p.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Label `c`'s sigmoid probability in each sample of `logits` (n_samples, num_labels).
fn label_probs(logits: &[f32], num_labels: usize, c: usize) -> Vec<f64> {
    (0..logits.len() / num_labels)
        .map(|s| sigmoid(logits[s * num_labels + c]) as f64)
        .collect()
}

/// Statistics of every label from `logits`, (n_samples, num_labels) row-major.
pub fn label_stats(logits: &[f32], num_labels: usize, thresholds: &[Threshold]) -> Vec<LabelStats> {
    let n = logits.len() / num_labels;
    (0..num_labels)
        .map(|c| {
            let probs = label_probs(logits, num_labels, c);
            let (mean, std) = mean_std(&probs);
            let total = bernoulli_entropy(mean);
            let aleatoric = probs.iter().map(|&p| bernoulli_entropy(p)).sum::<f64>() / n as f64;
            let epistemic = if n > 1 {
                (total - aleatoric).max(0.0)
            } else {
                0.0
            };
            let (mean, std) = (mean as f32, std as f32);
            LabelStats {
                mean,
                std,
                total_entropy: total as f32,
                aleatoric: aleatoric as f32,
                epistemic: epistemic as f32,
                predicted: thresholds[c].decide(mean, std),
            }
        })
        .collect()
}

/// The largest standard error of a label's mean probability, `std / sqrt(n)`, over the
/// samples in `logits` (n_samples, num_labels); infinite below two samples.
pub fn max_standard_error(logits: &[f32], num_labels: usize) -> f64 {
    let n = logits.len() / num_labels;
    if n < 2 {
        return f64::INFINITY;
    }
    (0..num_labels)
        .map(|c| {
            let p = label_probs(logits, num_labels, c);
            mean_std(&p).1 / (n as f64).sqrt()
        })
        .fold(0.0, f64::max)
}

/// Whether every label's thresholded decision is settled by the samples in `logits`
/// (n_samples, num_labels): the mean probability lies more than `z` standard errors from
/// the threshold `p`, and where the threshold has a `u` bound on the std and the mean is
/// above `p`, the std lies more than `z` of its own standard errors (normal approximation,
/// `std / sqrt(2 (n - 1))`) from `u`. Never settled below two samples.
pub fn decisions_settled(
    logits: &[f32],
    num_labels: usize,
    thresholds: &[Threshold],
    z: f64,
) -> bool {
    let n = logits.len() / num_labels;
    if n < 2 {
        return false;
    }
    (0..num_labels).all(|c| {
        let p = label_probs(logits, num_labels, c);
        let (mean, std) = mean_std(&p);
        let th = &thresholds[c];
        let se = std / (n as f64).sqrt();
        let gap = mean - th.p as f64;
        if gap.abs() <= z * se || gap == 0.0 {
            return false;
        }
        match th.u {
            // Below the threshold the decision is "no" whatever the std.
            Some(u) if gap > 0.0 => {
                let se_std = std / (2.0 * (n as f64 - 1.0)).sqrt();
                let d = std - u as f64;
                d != 0.0 && d.abs() > z * se_std
            }
            _ => true,
        }
    })
}

/// The standard normal quantile function, `Phi^-1(q)` for q in (0, 1) (Acklam's rational
/// approximation, relative error below 1.2e-9), e.g. 1.959964 at 0.975.
pub fn normal_quantile(q: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |r: f64| {
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    if q < 0.02425 {
        tail((-2.0 * q.ln()).sqrt())
    } else if q > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - q).ln()).sqrt())
    } else {
        let x = q - 0.5;
        let r = x * x;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * x
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_pass_and_two_samples() {
        let th = vec![Threshold::default(); 2];
        let s = label_stats(&[0.0, 2.0], 2, &th);
        assert_eq!(s[0].mean, 0.5);
        assert_eq!(s[0].std, 0.0);
        assert!((s[0].total_entropy as f64 - 2f64.ln()).abs() < 1e-6);
        assert_eq!(s[0].epistemic, 0.0);
        assert!(s[0].predicted && s[1].predicted);
        // two samples: p = 0.5 and sigmoid(2)
        let s = label_stats(&[0.0, 0.0, 2.0, 0.0], 2, &th);
        let p2 = 1.0 / (1.0 + (-2.0f64).exp());
        let mean = (0.5 + p2) / 2.0;
        assert!((s[0].mean as f64 - mean).abs() < 1e-7);
        assert!((s[0].std as f64 - (p2 - 0.5) / 2f64.sqrt()).abs() < 1e-7);
        let ale = (bernoulli_entropy(0.5) + bernoulli_entropy(p2)) / 2.0;
        assert!((s[0].epistemic as f64 - (bernoulli_entropy(mean) - ale)).abs() < 1e-7);
        assert_eq!(s[1].std, 0.0);
        assert_eq!(bernoulli_entropy(0.0), 0.0);
        assert_eq!(bernoulli_entropy(1.0), 0.0);
    }

    #[test]
    fn normal_quantiles() {
        for (q, want) in [
            (0.5, 0.0),
            (0.975, 1.959963984540054),
            (0.995, 2.5758293035489004),
            (0.9999, 3.719016485455709),
            (0.01, -2.3263478740408408),
        ] {
            let got = normal_quantile(q);
            assert!((got - want).abs() < 1e-8, "q {q}: {got} vs {want}");
        }
    }

    #[test]
    fn decisions_settle_by_distance_from_the_threshold() {
        let logit = |p: f64| (p / (1.0 - p)).ln() as f32;
        let th = |p: f32, u: Option<f32>| Threshold { p, u, f1: None };
        // One label, samples 0.8 and 0.9: mean 0.85, std 0.0707, se 0.05.
        let z = [logit(0.8), logit(0.9)];
        assert!(decisions_settled(&z, 1, &[th(0.5, None)], 1.96)); // 7 se above
        assert!(!decisions_settled(&z, 1, &[th(0.8, None)], 1.96)); // 1 se above
        assert!(decisions_settled(&z, 1, &[th(0.8, None)], 0.5));
        assert!(decisions_settled(&z, 1, &[th(0.99, None)], 1.96)); // far below: "no"
        assert!(!decisions_settled(&z[..1], 1, &[th(0.5, None)], 1.96)); // one sample
                                                                         // Every label must be settled.
        let two = [logit(0.8), logit(0.1), logit(0.9), logit(0.12)];
        assert!(decisions_settled(
            &two,
            2,
            &[th(0.5, None), th(0.3, None)],
            1.96
        ));
        assert!(!decisions_settled(
            &two,
            2,
            &[th(0.5, None), th(0.12, None)],
            1.96
        ));
        // The u bound: above the threshold the std must be clearly on one side of u.
        assert!(!decisions_settled(&z, 1, &[th(0.5, Some(0.07))], 1.96));
        assert!(decisions_settled(&z, 1, &[th(0.5, Some(0.5))], 1.96));
        assert!(decisions_settled(&z, 1, &[th(0.95, Some(0.07))], 1.96)); // below p: no
                                                                          // Identical samples exactly at the threshold never settle.
        assert!(!decisions_settled(&[0.0, 0.0], 1, &[th(0.5, None)], 1.96));
    }
}
