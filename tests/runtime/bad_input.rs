//! Bad input gets a clear error naming what to fix, never a panic or a silent guess.

mod common;
use common::*;
use emcoder::{Error, LoadOptions, Model, PredictOptions, TokenizerChoice};
use safetensors::Dtype;
use std::path::Path;

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

/// Config values that size allocations are checked against the tensors before anything of
/// their size is allocated: these used to abort the process (a 24 TB label list, an 8 GB
/// layer list) instead of failing the load.
#[test]
fn hostile_config_values_fail_the_load_without_allocating() {
    let (_t, dir) = copy_fixture("tiny-f32");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let base: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let with = |key: &str, value: serde_json::Value, drop_labels: bool| {
        let mut v = base.clone();
        v[key] = value;
        if drop_labels {
            let o = v.as_object_mut().unwrap();
            o.remove("id2label");
            o.remove("label2id");
        }
        std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
        load_err(&dir)
    };
    let e = with("num_labels", 1_000_000_000_000u64.into(), true);
    assert_has(&e, &["num_labels = 1000000000000", "no tensor"]);
    let e = with("n_layers", 1_000_000_000u64.into(), false);
    assert_has(&e, &["n_layers = 1000000000", "tensors"]);
    let e = with("num_hidden_layers", usize::MAX.into(), false);
    assert!(
        e.contains("n_layers") || e.contains("num_hidden_layers"),
        "{e}"
    );
    for eps in [0.0, -1.0] {
        let e = with("norm_eps", eps.into(), false);
        assert_has(&e, &["norm_eps", "positive"]);
    }
    let e = with("d_model", 4_000_000_000u64.into(), false);
    assert_has(&e, &["token_embedding", "d_model 4000000000"]);
    let e = with("rot_dim", 1_000_000_000_000u64.into(), false);
    assert_has(&e, &["rot_dim"]);
    // A label count the head confirms is named generically.
    let mut v = base.clone();
    let o = v.as_object_mut().unwrap();
    o.remove("id2label");
    o.remove("label2id");
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    let opts = LoadOptions {
        tokenizer: TokenizerChoice::None,
        ..Default::default()
    };
    let m = Model::load(&dir, &opts).unwrap();
    assert_eq!(m.labels().len(), 28);
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
    // Stopping rules: values out of range and both at once are refused in every mode, also
    // by a deterministic pass (which draws no samples to stop on).
    for deterministic in [false, true] {
        let with = |tolerance: Option<f32>, decision_error: Option<f32>| PredictOptions {
            deterministic,
            tolerance,
            decision_error,
            ..Default::default()
        };
        for (opts, want) in [
            (with(Some(0.0), None), "tolerance 0 must be a positive"),
            (with(Some(f32::NAN), None), "tolerance NaN"),
            (with(Some(f32::INFINITY), None), "tolerance inf"),
            (with(None, Some(1.0)), "decision_error 1 must lie strictly"),
            (with(None, Some(-0.5)), "decision_error -0.5"),
            (with(Some(0.01), Some(0.01)), "set one of them"),
        ] {
            let e = model.predict(&["hi"], &opts).unwrap_err().to_string();
            assert_has(&e, &[want]);
        }
        // Valid values: a deterministic pass ignores them and returns its logits.
        let p = model.predict(&["hi"], &with(Some(0.01), None)).unwrap();
        assert_eq!(p[0].logits.is_some(), deterministic);
    }
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

/// A very long text is never tokenized whole: truncation and the token limit look at a
/// bounded prefix, and the kept tokens are exactly the whole text's first tokens.
#[test]
fn very_long_texts_are_tokenized_by_a_bounded_prefix() {
    let with_limit = |max_tokens: usize| {
        let opts = LoadOptions {
            tokenizer: TokenizerChoice::Auto,
            n_threads: 1,
            max_tokens,
            ..Default::default()
        };
        Model::load(&fixture("tiny-vocab-bf16"), &opts).unwrap()
    };
    // Real text: the GoEmotions test split joined (about 350 KB, 80k tokens).
    let tsv = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/goemotions/test.tsv"),
    )
    .unwrap();
    let text: String = tsv
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect::<Vec<_>>()
        .join(" ");
    let whole = with_limit(1 << 24).tokenize(&text, false).unwrap();
    assert!(whole.len() > 50_000, "{} tokens", whole.len());
    for limit in [2usize, 17, 512, 4096] {
        let m = with_limit(limit);
        let got = m.tokenize(&text, true).unwrap();
        let mut want = whole[..limit - 1].to_vec();
        want.push(50282);
        assert_eq!(got, want, "limit {limit}");
        let e = m.tokenize(&text, false).unwrap_err();
        assert_has(&e.to_string(), &["more than the limit", "truncation"]);
    }
    // 100 MB: truncated or refused from a prefix (tokenized whole it would take seconds
    // and gigabytes of encodings).
    let huge = "so happy for you ".repeat(100 << 20 >> 4);
    let m = with_limit(512);
    let ids = m.tokenize(&huge, true).unwrap();
    assert_eq!(ids.len(), 512);
    assert_eq!(ids[..8], whole_prefix(&m, &huge[..4096])[..8]);
    assert_has(
        &m.tokenize(&huge, false).unwrap_err().to_string(),
        &["more than 512 tokens"],
    );
    // One unbroken 10 MB run (no word boundary to cut at) is bounded too.
    let run = "x".repeat(10 << 20);
    assert_eq!(m.tokenize(&run, true).unwrap().len(), 512);
}

fn whole_prefix(m: &Model, s: &str) -> Vec<u32> {
    m.tokenize(s, true).unwrap()
}

/// NaN or infinite weights are reported (and refused when asked).
#[test]
fn non_finite_weights_are_reported_and_can_be_refused() {
    let (_t, dir) = copy_fixture("tiny-f32");
    rewrite(&dir, |t| {
        let (_, _, bytes) = t.get_mut("encoder.layers.1.ffn.up_proj.weight").unwrap();
        bytes[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        bytes[40..44].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    let scan = emcoder::FileOptions {
        scan_non_finite: true,
        ..Default::default()
    };
    let files = emcoder::ModelFiles::load_with(&dir, &TokenizerChoice::None, &scan).unwrap();
    assert_eq!(
        files.non_finite,
        vec![("encoder.layers.1.ffn.up_proj.weight".to_string(), 2)]
    );
    let opts = |refuse| LoadOptions {
        tokenizer: TokenizerChoice::None,
        refuse_non_finite: refuse,
        ..Default::default()
    };
    let e = Model::load(&dir, &opts(true)).err().unwrap().to_string();
    assert_has(&e, &["up_proj", "NaN or infinite", "refuse_non_finite"]);
    assert!(Model::load(&dir, &opts(false)).is_ok());
    let clean = emcoder::ModelFiles::load_with(&fixture("tiny-f32"), &TokenizerChoice::None, &scan);
    assert!(clean.unwrap().non_finite.is_empty());
}

/// With copy_weights the process owns its weights: the file can be replaced in place
/// (here: truncated) while the model runs. (A mapped model would die of SIGBUS: the README
/// and the header say to replace model files by atomic rename.)
#[test]
fn copied_weights_survive_the_file_being_rewritten() {
    let (_t, dir) = copy_fixture("tiny-f32");
    let opts = |copy| LoadOptions {
        tokenizer: TokenizerChoice::None,
        copy_weights: copy,
        n_threads: 2,
        ..Default::default()
    };
    let mapped = Model::load(&dir, &opts(false)).unwrap();
    let ids = vec![vec![1u32, 5, 9, 2], vec![1, 7, 3, 8, 11, 2]];
    let want = mapped.sample_logits(&ids, 4, 9).unwrap();
    drop(mapped);
    let copied = Model::load(&dir, &opts(true)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("model.safetensors"))
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(copied.sample_logits(&ids, 4, 9).unwrap(), want);
}

/// A level this CPU cannot run is a load error that names the levels it can, never an
/// illegal instruction.
#[test]
fn a_level_this_cpu_cannot_run_is_refused_at_load() {
    let caps = emcoder::caps();
    let missing = emcoder::Isa::ALL
        .into_iter()
        .find(|i| !caps.available.contains(i))
        .expect("no CPU runs both x86-64 and AArch64 levels");
    let opts = LoadOptions {
        tokenizer: TokenizerChoice::None,
        isa: Some(missing),
        ..Default::default()
    };
    let e = Model::load(&fixture("tiny-f32"), &opts)
        .err()
        .unwrap()
        .to_string();
    assert_has(&e, &["cannot run", missing.name(), "generic"]);
    for &isa in &caps.available {
        let ok = LoadOptions {
            isa: Some(isa),
            ..opts.clone()
        };
        assert_eq!(Model::load(&fixture("tiny-f32"), &ok).unwrap().isa(), isa);
    }
}
