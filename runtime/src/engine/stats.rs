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

/// Statistics of every label from `logits`, (n_samples, num_labels) row-major.
pub fn label_stats(logits: &[f32], num_labels: usize, thresholds: &[Threshold]) -> Vec<LabelStats> {
    let n = logits.len() / num_labels;
    (0..num_labels)
        .map(|c| {
            let probs: Vec<f64> = (0..n)
                .map(|s| sigmoid(logits[s * num_labels + c]) as f64)
                .collect();
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
            let p: Vec<f64> = (0..n)
                .map(|s| sigmoid(logits[s * num_labels + c]) as f64)
                .collect();
            mean_std(&p).1 / (n as f64).sqrt()
        })
        .fold(0.0, f64::max)
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
}
