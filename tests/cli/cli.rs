//! The `emcoder` command line, run as a user runs it.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn emcoder(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_emcoder"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn model() -> String {
    fixture("tiny-vocab-bf16").display().to_string()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn predict_json_has_exactly_the_documented_shape() {
    let m = model();
    let args = [
        "predict",
        "--model",
        &m,
        "--samples",
        "7",
        "--json",
        "I am so happy!",
        "",
    ];
    let out = emcoder(&args, None);
    let v = json_of(&out);
    let results = v["results"].as_array().unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1);
    assert_eq!(results.len(), 2);
    let r = &results[0];
    let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["labels", "n_tokens", "text"]);
    assert_eq!(r["text"], "I am so happy!");
    assert_eq!(results[1]["n_tokens"], 2);
    let labels = r["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 28);
    assert_eq!(labels[0]["label"], "admiration");
    assert_eq!(labels[27]["label"], "neutral");
    let mut lk: Vec<&str> = labels[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    lk.sort();
    assert_eq!(
        lk,
        [
            "aleatoric",
            "epistemic",
            "label",
            "mean",
            "predicted",
            "std",
            "total_entropy"
        ]
    );
    for l in labels {
        let (mean, std) = (l["mean"].as_f64().unwrap(), l["std"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&mean) && std >= 0.0);
        let (t, a, e) = (
            l["total_entropy"].as_f64().unwrap(),
            l["aleatoric"].as_f64().unwrap(),
            l["epistemic"].as_f64().unwrap(),
        );
        assert!((t - a - e).abs() < 1e-5 || e == 0.0, "{l}");
    }
    // Same seed, same numbers; the default seed is fixed.
    let again = json_of(&emcoder(&args, None));
    assert_eq!(again, v);
}

#[test]
fn deterministic_json_carries_logits_and_matches_the_library() {
    let m = model();
    let v = json_of(&emcoder(
        &[
            "predict",
            "--model",
            &m,
            "--deterministic",
            "--json",
            "Thank you so much!",
        ],
        None,
    ));
    let r = &v["results"][0];
    let logits: Vec<f64> = r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(logits.len(), 28);
    let lib = emcoder::Model::load(&fixture("tiny-vocab-bf16"), &Default::default()).unwrap();
    let ids = lib.tokenize("Thank you so much!", false).unwrap();
    let z = lib.logits(&[ids]).unwrap();
    for (a, b) in logits.iter().zip(&z) {
        assert_eq!(*a as f32, *b);
    }
    assert_eq!(r["labels"][3]["std"], 0.0);
}

#[test]
fn texts_from_stdin_one_per_line() {
    let m = model();
    let v = json_of(&emcoder(
        &["predict", "--model", &m, "-n", "3", "--json"],
        Some("first line\nsecond line\n"),
    ));
    let texts: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first line", "second line"]);
}

#[test]
fn table_is_sorted_and_marks_predictions() {
    let m = model();
    let out = emcoder(
        &[
            "predict",
            "--model",
            &m,
            "-n",
            "5",
            "--top",
            "0",
            "What a day",
        ],
        None,
    );
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.contains("Emotion") && s.contains("± Uncertainty") && s.contains("Predicted:"),
        "{s}"
    );
    let probs: Vec<f64> = s
        .lines()
        .filter(|l| {
            l.len() > 2 && (l.starts_with("* ") || l.starts_with("  ")) && !l.contains("Emotion")
        })
        .map(|l| l[2..].split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(probs.len(), 28, "{s}");
    assert!(
        probs.windows(2).all(|w| w[0] >= w[1]),
        "not sorted: {probs:?}"
    );
}

#[test]
fn inspect_shows_roles_and_errors_are_clear() {
    let out = emcoder(
        &["inspect", &fixture("tiny-fused-bias").display().to_string()],
        None,
    );
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.contains("encoder.layers.1.attn.Wqkv.weight") && s.contains("q,k,v (fused"),
        "{s}"
    );
    assert!(s.contains("rot_dim 8 (from config / rope_theta)"), "{s}");
    let out = emcoder(&["predict", "--model", "/no/such/dir", "hello"], None);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: ") && err.contains("/no/such/dir"),
        "{err}"
    );
    let out = emcoder(
        &["predict", "--model", &model(), "--samples", "0", "hello"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
}
