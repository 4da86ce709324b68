//! What the CLI prints: prediction tables, the inspect report, the CPU report (the JSON of
//! predictions is `emcoder::report`, shared with the service).

use emcoder::{Model, ModelFiles, TextPrediction};
use serde_json::{json, Value};
use std::fmt::Write;

/// One table per text, labels sorted by mean probability, predicted ones marked `*`.
pub fn predictions_table(
    model: &Model,
    texts: &[String],
    preds: &[TextPrediction],
    top: usize,
) -> String {
    let mut s = String::new();
    for (t, p) in texts.iter().zip(preds) {
        let mode = if p.logits.is_some() {
            "deterministic".to_string()
        } else {
            format!("{} MC samples", p.samples)
        };
        let _ = writeln!(s, "Text: {t}\n({} tokens, {mode})", p.n_tokens);
        let _ = writeln!(
            s,
            "  {:<16} {:>6}  {:>14}",
            "Emotion", "Prob", "± Uncertainty"
        );
        let mut order: Vec<usize> = (0..p.labels.len()).collect();
        order.sort_by(|&a, &b| p.labels[b].mean.total_cmp(&p.labels[a].mean));
        let k = if top == 0 {
            order.len()
        } else {
            top.min(order.len())
        };
        for &i in &order[..k] {
            let l = &p.labels[i];
            let mark = if l.predicted { '*' } else { ' ' };
            let _ = writeln!(
                s,
                "{mark} {:<16} {:>6.3}  ± {:<12.3}",
                model.labels()[i],
                l.mean,
                l.std
            );
        }
        let predicted: Vec<&str> = order
            .iter()
            .filter(|&&i| p.labels[i].predicted)
            .map(|&i| model.labels()[i].as_str())
            .collect();
        let _ = writeln!(
            s,
            "Predicted: {}\n",
            if predicted.is_empty() {
                "(none)".into()
            } else {
                predicted.join(", ")
            }
        );
    }
    s
}

/// The report of `emcoder inspect`.
pub fn inspect_report(f: &ModelFiles, tokenizer: &str) -> String {
    let c = &f.config;
    let mut s = String::new();
    let _ = writeln!(s, "model directory: {}", f.dir.display());
    let _ = writeln!(s, "config ({} keys):", c.key_family);
    let _ = writeln!(
        s,
        "  d_model {}  n_head {} (head_dim {})  n_layers {}  d_ffn {}  vocab_size {}",
        c.d_model,
        c.n_head,
        c.head_dim(),
        c.n_layers,
        c.d_ffn,
        c.vocab_size
    );
    let _ = writeln!(
        s,
        "  dropout {}  num_labels {}  rope_theta {}  norm_eps {:e}  rot_dim {} (from {})",
        c.dropout,
        c.num_labels,
        c.rope_theta,
        c.norm_eps,
        f.weights.rot_dim,
        if f.placements.iter().any(|p| p.role.contains("rotary")) {
            "stored freqs"
        } else {
            "config / rope_theta"
        }
    );
    let _ = writeln!(
        s,
        "  layout: {}{}",
        c.layout.describe(),
        if c.layout.is_default() {
            " (defaults)"
        } else {
            " (set in config.json)"
        }
    );
    let _ = writeln!(s, "  labels: {}", c.labels.join(", "));
    let _ = writeln!(
        s,
        "thresholds: {}",
        f.thresholds_file
            .as_ref()
            .map_or("none (0.5 for every label)".into(), |p| p
                .display()
                .to_string())
    );
    let _ = writeln!(s, "tokenizer: {tokenizer}");
    let params: usize = f
        .placements
        .iter()
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    let _ = writeln!(s, "tensors: {} ({params} parameters)", f.placements.len());
    let w = f.placements.iter().map(|p| p.name.len()).max().unwrap_or(4);
    for p in &f.placements {
        let _ = writeln!(
            s,
            "  {:<w$}  {:<5} {:<14} -> {}{}",
            p.name,
            p.dtype,
            format!("{:?}", p.shape),
            p.role,
            if p.dtype == "I8" {
                " [int8, a scale per row in `<name>_scale`]"
            } else if p.in_place {
                ""
            } else {
                " [converted to f32]"
            }
        );
    }
    let int8 = f.placements.iter().filter(|p| p.dtype == "I8").count();
    let quantizable = f.placements.iter().filter(|p| p.quantizable).count();
    let _ = writeln!(
        s,
        "int8: {int8} of the {quantizable} tensors int8 precision quantizes are stored as I8{}",
        if int8 == 0 {
            " (`emcoder quantize` writes an int8 copy; --precision int8 quantizes at load)"
        } else {
            ""
        }
    );
    if f.non_finite.is_empty() {
        let _ = writeln!(
            s,
            "non-finite values: none (every weight is a finite number)"
        );
    } else {
        let _ = writeln!(
            s,
            "NON-FINITE VALUES in {} tensor(s): the model will predict NaN",
            f.non_finite.len()
        );
        for (name, n) in &f.non_finite {
            let _ = writeln!(s, "  {name}: {n} NaN or infinite value(s)");
        }
    }
    s.push_str(&cpu_report());
    s
}

/// This CPU, the levels it runs, the one selected (or why `EMCODER_ISA` is refused) and the
/// variant each kernel family runs there.
pub fn cpu_report() -> String {
    let c = emcoder::caps();
    let mut s = String::new();
    let _ = writeln!(s, "cpu: {} ({})", c.model, c.arch);
    let _ = writeln!(s, "  instruction-set levels: {}", c.available_names());
    match &c.selected {
        Ok(isa) => {
            let why = match &c.requested {
                Some(r) => format!("EMCODER_ISA={r}"),
                None => "the best here; EMCODER_ISA=<level> lowers it".into(),
            };
            let _ = writeln!(s, "  kernels at level {isa} ({why}):");
            let kernels = emcoder_kernels::variants(*isa);
            let w = kernels.iter().map(|k| k.0.len()).max().unwrap_or(0);
            for (family, variant) in kernels {
                let _ = writeln!(s, "    {family:<w$}  {variant}");
            }
        }
        Err(e) => {
            let _ = writeln!(s, "  ERROR: {e}");
        }
    }
    s
}

/// The kernels a model runs, as JSON: `{"cpu", "isa", "kernels": {family: variant}}`.
pub fn kernels_json(model: &Model) -> Value {
    let kernels: serde_json::Map<String, Value> = emcoder_kernels::variants(model.isa())
        .into_iter()
        .map(|(f, v)| (f.to_string(), json!(v)))
        .collect();
    json!({"cpu": emcoder::caps().model, "isa": model.isa().name(), "kernels": kernels})
}
