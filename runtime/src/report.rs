//! The JSON of predictions, one format for every front end: `emcoder predict --json` and the
//! service's `POST /v1/predict` print exactly this, so the same request gives the same bytes.

use crate::options::TextPrediction;
use serde_json::{json, Value};

/// `{"results":[{"text", "n_tokens", "labels":[...one per label, in id order], "logits"?}]}`.
/// Each label: `label, mean, std, total_entropy, aleatoric, epistemic, predicted`; `logits`
/// only for a deterministic pass. With `adaptive`, each result also carries `"samples"`: the
/// samples it used.
pub fn predictions_json<S: AsRef<str>>(
    labels: &[String],
    texts: &[S],
    preds: &[TextPrediction],
    adaptive: bool,
) -> Value {
    let results: Vec<Value> = texts
        .iter()
        .zip(preds)
        .map(|(t, p)| {
            let labels: Vec<Value> = labels
                .iter()
                .zip(&p.labels)
                .map(|(l, s)| {
                    json!({"label": l, "mean": s.mean, "std": s.std, "total_entropy": s.total_entropy,
                           "aleatoric": s.aleatoric, "epistemic": s.epistemic, "predicted": s.predicted})
                })
                .collect();
            let mut o = json!({"text": t.as_ref(), "n_tokens": p.n_tokens, "labels": labels});
            if let Some(z) = &p.logits {
                o["logits"] = json!(z);
            }
            if adaptive {
                o["samples"] = json!(p.samples);
            }
            o
        })
        .collect();
    json!({ "results": results })
}
