//! Bad input gets a clear error naming what to fix, never a panic or a silent guess.

mod common;
use common::*;
use emcoder::{Error, LoadOptions, Model, PredictOptions, TokenizerChoice};
use safetensors::{serialize, Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A writable copy of a fixture directory.
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    (tmp, dir)
}

type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// Rewrites `dir/model.safetensors` through `edit`.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Tensors)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut t: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut t);
    let views: Vec<(String, safetensors::tensor::TensorView)> = t
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&path, serialize(views, None).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> String {
    let opts = LoadOptions {
        tokenizer: TokenizerChoice::None,
        ..Default::default()
    };
    match Model::load(dir, &opts) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message lacks `{p}`: {msg}");
    }
}

#[test]
fn missing_files_and_directories() {
    assert_has(
        &load_err(Path::new("/nonexistent/model")),
        &["/nonexistent/model", "does not exist"],
    );
    let (_t, dir) = copy_fixture("tiny-f32");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_has(&load_err(&dir), &["model.safetensors", "missing"]);
    let (_t, dir) = copy_fixture("tiny-f32");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_has(&load_err(&dir), &["config.json", "missing"]);
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let (_t, dir) = copy_fixture("tiny-f32");
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    for cut in [0usize, 5, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert_has(&load_err(&dir), &["model.safetensors"]);
    }
    // A header whose length field points far past the end of the file.
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    assert_has(&load_err(&dir), &["not a valid safetensors file"]);
    // Garbage in the JSON header.
    let mut b = bytes.clone();
    for x in &mut b[8..40] {
        *x = b'#';
    }
    std::fs::write(&p, &b).unwrap();
    assert_has(&load_err(&dir), &["not a valid safetensors file"]);
}

#[test]
fn wrong_dtype_shape_missing_and_unknown_tensors() {
    let (_t, dir) = copy_fixture("tiny-f32");
    rewrite(&dir, |t| {
        let e = t.get_mut("encoder.final_norm.weight").unwrap();
        e.0 = Dtype::I32;
    });
    assert_has(
        &load_err(&dir),
        &["encoder.final_norm.weight", "I32", "F32, F16, BF16"],
    );

    let (_t, dir) = copy_fixture("tiny-f32");
    rewrite(&dir, |t| {
        let e = t.get_mut("encoder.layers.1.attn.q_proj.weight").unwrap();
        e.1 = vec![16, 64];
    });
    assert_has(
        &load_err(&dir),
        &[
            "encoder.layers.1.attn.q_proj.weight",
            "[16, 64]",
            "[32, 32]",
        ],
    );

    let (_t, dir) = copy_fixture("tiny-f32");
    rewrite(&dir, |t| {
        t.remove("encoder.layers.1.ln2.weight");
    });
    assert_has(
        &load_err(&dir),
        &["layer 1 norm 2", "encoder.layers.1.ln2.weight", "[32]"],
    );

    let (_t, dir) = copy_fixture("tiny-f32");
    rewrite(&dir, |t| {
        t.insert(
            "encoder.mystery.weight".into(),
            (Dtype::F32, vec![2], vec![0; 8]),
        );
    });
    assert_has(&load_err(&dir), &["encoder.mystery.weight", "cannot place"]);

    // Fused and split q/k/v at once is ambiguous.
    let (_t, dir) = copy_fixture("tiny-f32");
    rewrite(&dir, |t| {
        t.insert(
            "encoder.layers.0.attn.Wqkv.weight".into(),
            (Dtype::F32, vec![96, 32], vec![0; 96 * 32 * 4]),
        );
    });
    assert_has(&load_err(&dir), &["Wqkv", "q/k/v"]);
}

#[test]
fn config_that_disagrees_with_the_weights() {
    let (_t, dir) = copy_fixture("tiny-f32");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["d_ffn"] = 90.into();
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    assert_has(&load_err(&dir), &["gate_proj", "[90, 32]", "d_ffn 90"]);

    v["d_ffn"] = 88.into();
    v["n_layers"] = 1.into();
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    assert_has(&load_err(&dir), &["layer 1", "n_layers = 1"]);

    v["n_layers"] = 3.into();
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    assert_has(&load_err(&dir), &["layer 2"]);

    v["n_layers"] = 2.into();
    v["vocab_size"] = 50368.into();
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    assert_has(&load_err(&dir), &["token_embedding", "vocab_size 50368"]);
}

#[test]
fn invalid_json_files() {
    let (_t, dir) = copy_fixture("tiny-f32");
    std::fs::write(dir.join("config.json"), "{\"d_model\": 32,").unwrap();
    assert_has(&load_err(&dir), &["config.json", "invalid JSON"]);
    let (_t, dir) = copy_fixture("tiny-f32");
    std::fs::write(dir.join("thresholds.json"), "[1, 2").unwrap();
    assert_has(&load_err(&dir), &["thresholds.json", "invalid JSON"]);
    let (_t, dir) = copy_fixture("tiny-f32");
    std::fs::write(dir.join("thresholds.json"), r#"{"joy": {"p": 0.5}}"#).unwrap();
    assert_has(
        &load_err(&dir),
        &["thresholds.json", "no threshold for label `admiration`"],
    );
    let (_t, dir) = copy_fixture("tiny-f32");
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    let e = Model::load(&dir, &LoadOptions::default())
        .err()
        .expect("bad tokenizer.json must fail")
        .to_string();
    assert_has(&e, &["tokenizer", "tokenizer.json"]);
}

#[test]
fn bad_predict_inputs() {
    let model = load("tiny-vocab-bf16", 1);
    let zero = PredictOptions {
        samples: 0,
        ..Default::default()
    };
    assert_has(
        &model.predict(&["hi"], &zero).unwrap_err().to_string(),
        &["at least 1"],
    );
    // The empty text is valid: [CLS] [SEP].
    let p = model
        .predict(
            &[""],
            &PredictOptions {
                samples: 3,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(p[0].n_tokens, 2);
    assert_eq!(model.tokenize("", false).unwrap(), vec![50281, 50282]);
    // No texts: no results.
    assert!(model
        .predict::<&str>(&[], &PredictOptions::default())
        .unwrap()
        .is_empty());
    // Token ids out of range and empty id sequences.
    let e = model
        .predict_ids(&[vec![50281, 60000, 50282]], &PredictOptions::default())
        .unwrap_err();
    assert_has(&e.to_string(), &["60000", "vocab_size 50368"]);
    let e = model
        .predict_ids(&[vec![]], &PredictOptions::default())
        .unwrap_err();
    assert_has(&e.to_string(), &["empty token sequence"]);
    // A model loaded without tokenizer cannot take text.
    let ids_only = load("tiny-f32", 1);
    assert_has(
        &ids_only
            .predict(&["x"], &PredictOptions::default())
            .unwrap_err()
            .to_string(),
        &["without a tokenizer"],
    );
}

#[test]
fn token_limit_errors_or_truncates() {
    let opts = LoadOptions {
        max_tokens: 8,
        n_threads: 1,
        ..Default::default()
    };
    let model = Model::load(&fixture("tiny-vocab-bf16"), &opts).unwrap();
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let e = model
        .predict(
            &["short", long],
            &PredictOptions {
                samples: 2,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::Input(_)));
    assert_has(
        &e.to_string(),
        &["text 1", "more than the limit of 8", "truncation"],
    );
    let ids = model.tokenize(long, true).unwrap();
    assert_eq!(ids.len(), 8);
    assert_eq!((ids[0], ids[7]), (50281, 50282));
    let p = model
        .predict(
            &[long],
            &PredictOptions {
                samples: 2,
                truncate: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(p[0].n_tokens, 8);
    let e = Model::load(
        &fixture("tiny-vocab-bf16"),
        &LoadOptions {
            max_tokens: 1,
            ..Default::default()
        },
    );
    assert_has(&e.err().unwrap().to_string(), &["max_tokens 1"]);
}

#[test]
fn tokenizer_that_does_not_fit_the_model() {
    let e = Model::load(&fixture("tiny-f32"), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert_has(&e, &["50368 ids", "vocab_size 512"]);
    let opts = LoadOptions {
        tokenizer: TokenizerChoice::Path("/no/such/tokenizer.json".into()),
        ..Default::default()
    };
    let e = Model::load(&fixture("tiny-vocab-bf16"), &opts)
        .err()
        .unwrap()
        .to_string();
    assert_has(&e, &["/no/such/tokenizer.json", "missing"]);
}
