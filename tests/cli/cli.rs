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
fn stopping_rules_report_their_samples_and_refuse_bad_values() {
    // The shipped model: its decisions settle early on clear texts.
    let texts = "Thank you so much, this made my day!\nI am so angry right now.\n";
    for rule in [["--decide", "0.01"], ["--tolerance", "0.05"]] {
        let mut args = vec!["predict", "-n", "40", "--json"];
        args.extend(rule);
        let v = json_of(&emcoder(&args, Some(texts)));
        for r in v["results"].as_array().unwrap() {
            let n = r["samples"].as_u64().unwrap();
            assert!(n % 10 == 0 && (10..=40).contains(&n), "{rule:?}: {n}");
        }
    }
    let out = emcoder(&["predict", "--decide", "1.5", "ok"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("decision_error 1.5 must lie strictly between 0 and 1"),
        "{err}"
    );
    // Two stopping rules at once is a usage error (clap: exit status 2).
    let out = emcoder(
        &["predict", "--decide", "0.01", "--tolerance", "0.01", "ok"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
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
    assert!(
        s.contains("layout: qkv_order qkv  gate_up_order gate_up  rotary_pairs interleaved  rotary_channels first  head_activation gelu (defaults)"),
        "{s}"
    );
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

#[test]
fn trace_writes_every_hidden_state_and_mc_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = tmp.path().join("ids.json");
    std::fs::write(&ids, "[[1, 17, 33, 2], [1, 2], [1, 500, 7, 9, 11, 2]]").unwrap();
    let out_path = tmp.path().join("trace.safetensors");
    let dir = fixture("tiny-f32").display().to_string();
    let (ids_s, out_s) = (ids.display().to_string(), out_path.display().to_string());
    let base = ["trace", &dir, "--ids", &ids_s, "--out", &out_s];
    let out = emcoder(
        &[&base[..], &["--samples", "8", "--seed", "3"]].concat(),
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&out_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f = |n: &str| -> Vec<f32> {
        let t = st.tensor(n).unwrap_or_else(|_| panic!("no tensor {n}"));
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names.len(), 3 * 8, "{names:?}");
    for (i, len) in [(0, 4), (1, 2), (2, 6)] {
        for s in ["embed", "layer.0", "layer.1", "final_norm"] {
            assert_eq!(st.tensor(&format!("{i}.{s}")).unwrap().shape(), [len, 32]);
        }
        assert_eq!(st.tensor(&format!("{i}.pooled")).unwrap().shape(), [32]);
        assert_eq!(st.tensor(&format!("{i}.mc_std")).unwrap().shape(), [28]);
    }
    // The logits are the deterministic predictions', the MC means the seeded MC run's.
    let lib = emcoder::Model::load(
        &fixture("tiny-f32"),
        &emcoder::LoadOptions {
            tokenizer: emcoder::TokenizerChoice::None,
            ..Default::default()
        },
    )
    .unwrap();
    let ids3: Vec<Vec<u32>> = vec![vec![1, 17, 33, 2], vec![1, 2], vec![1, 500, 7, 9, 11, 2]];
    let want = lib
        .predict_ids(
            &ids3,
            &emcoder::PredictOptions {
                deterministic: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mc = lib
        .predict_ids(
            &ids3,
            &emcoder::PredictOptions {
                samples: 8,
                seed: 3,
                ..Default::default()
            },
        )
        .unwrap();
    for i in 0..3 {
        assert_eq!(&f(&format!("{i}.logits")), want[i].logits.as_ref().unwrap());
        let means: Vec<f32> = mc[i].labels.iter().map(|l| l.mean).collect();
        assert_eq!(f(&format!("{i}.mc_mean")), means);
    }
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let info = header.metadata().as_ref().unwrap();
    assert!(info["layout"].starts_with("qkv_order qkv"), "{info:?}");

    // Bad ids: a clear error naming the file and the format.
    std::fs::write(&ids, "[[1, 2], \"x\"]").unwrap();
    let out = emcoder(&base, None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ids.json") && err.contains("lists of token ids"),
        "{err}"
    );
    std::fs::write(&ids, "[[1, 99999, 2]]").unwrap();
    let out = emcoder(&base, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("99999"));
}

/// Runs `emcoder ARGS` under `ulimit -v KB` (a real address-space limit), feeding `stdin`.
fn emcoder_limited(kb: u64, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kb} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_emcoder"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // A process that fails early stops reading: its error, not the pipe's, is the answer.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// Under a real memory limit (`ulimit -v`), a request whose scratch memory cannot be
/// allocated ends with a clean error that says "out of memory" (exit status 1), not an abort
/// or a signal, and a small request under the same limit still runs.
#[test]
fn predict_under_a_memory_limit_fails_cleanly() {
    let mini = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/emcoder-mini");
    let mini = mini.display().to_string();
    let small = [
        "predict",
        "--model",
        &mini,
        "--threads",
        "2",
        "--deterministic",
        "ok",
    ];
    // The smallest limit, in 50 MB steps, under which loading the model and a one-word
    // prediction run: what this build needs before any scratch memory.
    let base = (2..=40)
        .map(|i| i * 50_000)
        .find(|&kb| emcoder_limited(kb, &small, "").status.success())
        .expect("no limit up to 2 GB lets a one-word prediction run");
    let limit = base + 150_000;
    // 400 texts x 62 tokens x 50 samples: chunks of max_rows (16384) rows, whose scratch is
    // about 390 MB for this model (d 256, d_ffn 688): more than the 150 MB left.
    let texts = format!("{}\n", "happy sad angry wow ".repeat(15)).repeat(400);
    let big = ["predict", "--model", &mini, "--threads", "2", "--json"];
    let out = emcoder_limited(limit, &big, &texts);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ulimit -v {limit}: expected a clean failure (exit 1), got {:?}: {err}",
        out.status
    );
    assert!(
        err.starts_with("error: ") && err.contains("out of memory"),
        "ulimit -v {limit}: {err}"
    );
    assert!(out.stdout.is_empty());
    let out = emcoder_limited(limit, &small, "");
    assert!(
        out.status.success(),
        "ulimit -v {limit}, one word: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--device`: a malformed name says which are valid; a GPU without a driver (or in a build
/// without the cuda feature) is a clear error, never a crash, and the CPU stays the default.
#[test]
fn devices_are_parsed_and_a_missing_gpu_is_a_clear_error() {
    let m = model();
    let out = emcoder(
        &["predict", "--model", &m, "--device", "gpu0", "I am happy"],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown device `gpu0`: use cpu, cuda"),
        "{err}"
    );

    let out = emcoder(
        &[
            "predict",
            "--model",
            &m,
            "--device",
            "cpu",
            "--json",
            "I am happy",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = emcoder(
        &["predict", "--model", &m, "--device", "cuda:0", "I am happy"],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprintln!("cuda:0 ran here: a GPU is present");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no NVIDIA driver library")
            || err.contains("no CUDA backend")
            || err.contains("cuda:0"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
