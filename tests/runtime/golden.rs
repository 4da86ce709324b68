//! Golden tests: the engine against the PyTorch reference (`reference/make_fixtures.py`),
//! layer by layer, deterministic logits, seeded MC runs (same Philox masks), and a
//! statistical comparison with torch's own dropout RNG.
//!
//! Tolerances held (f32 engine vs f32 torch): hidden states |diff| <= 2e-5 + 1e-4*|want|;
//! logits |diff| <= 1e-4 (absolute); MC logits the same; MC statistics (mean, std,
//! entropies) |diff| <= 5e-5; decisions equal except within 1e-4 of a threshold.

mod common;
use common::*;
use emcoder::PredictOptions;

fn check_deterministic(name: &str) {
    let model = load(name, 2);
    let g = Golden::load(name);
    let texts = g.texts();
    let (trace, logits) = model.trace(&texts).unwrap();
    let hs = (2e-5, 1e-4);
    assert_close(
        &format!("{name} hidden.embed"),
        &trace.embed,
        g.f("hidden.embed"),
        hs.0,
        hs.1,
    );
    for (l, h) in trace.layers.iter().enumerate() {
        assert_close(
            &format!("{name} hidden.{l}"),
            h,
            g.f(&format!("hidden.{l}")),
            hs.0,
            hs.1,
        );
    }
    assert_eq!(trace.layers.len(), model.config().n_layers);
    assert_close(
        &format!("{name} hidden.final"),
        &trace.final_norm,
        g.f("hidden.final"),
        hs.0,
        hs.1,
    );
    assert_close(
        &format!("{name} pooled"),
        &trace.pooled,
        g.f("pooled"),
        hs.0,
        hs.1,
    );
    assert_close(&format!("{name} logits"), &logits, g.f("logits"), 1e-4, 0.0);
    // The public deterministic path returns the same logits as the traced one.
    let det = model
        .predict_ids(
            &texts,
            &PredictOptions {
                deterministic: true,
                ..Default::default()
            },
        )
        .unwrap();
    let flat: Vec<f32> = det.iter().flat_map(|p| p.logits.clone().unwrap()).collect();
    assert_eq!(flat, logits);
    eprintln!(
        "{name}: deterministic logits max |diff| {:e}",
        max_diff(&logits, g.f("logits"))
    );
}

fn check_mc(name: &str) {
    let model = load(name, 2);
    let g = Golden::load(name);
    let texts = g.texts();
    let (n, seed) = (
        g.meta_num("mc.n_samples") as u32,
        g.meta_num("mc.seed") as u64,
    );
    let (b, l) = (texts.len(), model.config().num_labels);
    let z = model.sample_logits(&texts, n, seed).unwrap();
    let want = to_text_major(g.f("mc.logits"), n as usize, b, l);
    assert_close(&format!("{name} mc.logits"), &z, &want, 1e-4, 0.0);
    let preds = model
        .predict_ids(
            &texts,
            &PredictOptions {
                samples: n,
                seed,
                ..Default::default()
            },
        )
        .unwrap();
    type Field = fn(&emcoder::LabelStats) -> f32;
    let fields: [(&str, Field); 5] = [
        ("mc.mean", |s| s.mean),
        ("mc.std", |s| s.std),
        ("mc.total_entropy", |s| s.total_entropy),
        ("mc.aleatoric", |s| s.aleatoric),
        ("mc.epistemic", |s| s.epistemic),
    ];
    for (key, get) in fields {
        let got: Vec<f32> = preds
            .iter()
            .flat_map(|p| p.labels.iter().map(get))
            .collect();
        assert_close(&format!("{name} {key}"), &got, g.f(key), 5e-5, 0.0);
    }
    let th = &model.files().thresholds;
    let want_pred = g.i("mc.predicted");
    for (t, p) in preds.iter().enumerate() {
        for (c, s) in p.labels.iter().enumerate() {
            if (s.mean - th[c].p).abs() > 1e-4 {
                assert_eq!(
                    s.predicted as i64,
                    want_pred[t * l + c],
                    "{name}: text {t} label {c} decision"
                );
            }
        }
    }
    eprintln!("{name}: MC logits max |diff| {:e}", max_diff(&z, &want));
}

/// The engine's Philox masks vs torch's Bernoulli masks: same distribution, so the mean
/// probabilities over many samples agree within 4 combined standard errors.
fn check_against_torch_rng(name: &str) {
    let model = load(name, 2);
    let g = Golden::load(name);
    let texts = g.texts();
    let n = g.meta_num("torch_mc.n") as u32;
    let l = model.config().num_labels;
    let preds = model
        .predict_ids(
            &texts,
            &PredictOptions {
                samples: n,
                seed: 777,
                ..Default::default()
            },
        )
        .unwrap();
    let (tm, tse) = (g.f("torch_mc.mean"), g.f("torch_mc.sem"));
    let mut worst = 0.0f64;
    for (t, p) in preds.iter().enumerate() {
        for (c, s) in p.labels.iter().enumerate() {
            let i = t * l + c;
            let se_r = s.std as f64 / (n as f64).sqrt();
            let se = (se_r * se_r + (tse[i] as f64).powi(2)).sqrt();
            let z = (s.mean as f64 - tm[i] as f64).abs() / se.max(1e-12);
            worst = worst.max(z);
            assert!(
                z <= 4.0,
                "{name}: text {t} label {c}: engine mean {} vs torch {} (z = {z:.2}, se {se:e})",
                s.mean,
                tm[i]
            );
        }
    }
    eprintln!(
        "{name}: engine vs torch RNG, worst z = {worst:.2} over {} means",
        preds.len() * l
    );
}

#[test]
fn deterministic_matches_reference_layer_by_layer() {
    for name in ID_FIXTURES.iter().chain(["tiny-vocab-bf16"].iter()) {
        check_deterministic(name);
    }
}

#[test]
fn seeded_mc_matches_reference_number_for_number() {
    for name in ID_FIXTURES.iter().chain(["tiny-vocab-bf16"].iter()) {
        check_mc(name);
    }
}

#[test]
fn mc_means_agree_with_torch_bernoulli_masks() {
    for name in ["tiny-f32", "tiny-fused-bias"] {
        check_against_torch_rng(name);
    }
}

#[test]
fn tokenizer_matches_reference_encodings() {
    let model = load("tiny-vocab-bf16", 1);
    let g = Golden::load("tiny-vocab-bf16");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-vocab-bf16").join("golden.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| model.tokenize(t, false).unwrap())
        .collect();
    assert_eq!(ids, g.texts(), "token ids of {texts:?}");
    // The spec's reference encoding.
    assert_eq!(
        model
            .tokenize("The capital of France is [MASK].", false)
            .unwrap(),
        vec![50281, 510, 5347, 273, 6181, 310, 50284, 15, 50282]
    );
    // Predicting from text equals predicting from the golden ids.
    let opts = PredictOptions {
        samples: 4,
        ..Default::default()
    };
    assert_eq!(
        model.predict(&texts, &opts).unwrap(),
        model.predict_ids(&g.texts(), &opts).unwrap()
    );
}
