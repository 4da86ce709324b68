//! The model loader on a folder assembled from fuzzed files: `config.json`,
//! `model.safetensors`, `thresholds.json` and `tokenizer.json`, each either a fixture's file
//! (as committed, or its int8 copy from `emcoder quantize`: I8 tensors with F32 row scales),
//! absent, replaced by fuzzed bytes, or edited where the structure is (a JSON field set to a
//! fuzzed value; a safetensors header entry's dtype, shape or offsets changed; bytes flipped;
//! the file cut short). A folder that loads is then used: predictions from fuzzed token ids
//! (ids out of range, empty sequences, several texts) must be results or errors, never a
//! panic, a crash or non-finite statistics from finite weights.
#![no_main]

use arbitrary::Arbitrary;
use emcoder_fuzz::{fixture, scratch_dir, small_tokenizer_path};
use emcoder_rt::{LoadOptions, Model, Precision, PredictOptions, TokenizerChoice};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FIXTURES: [&str; 4] = [
    "tiny-f32",
    "tiny-bf16",
    "tiny-fused-bias",
    "tiny-rot-partial",
];

#[derive(Arbitrary, Debug)]
enum Json {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Null,
    List(Vec<i32>),
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Json::Int(i) => Value::from(*i),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::from(s.as_str()),
            Json::Bool(b) => Value::from(*b),
            Json::Null => Value::Null,
            Json::List(l) => Value::from(l.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Edit {
    Keep,
    Absent,
    Replace(Vec<u8>),
    Truncate(u32),
    Flip(Vec<(u32, u8)>),
    /// JSON files: set the `key`-th key (of the top level, or of the object under it) to a value;
    /// safetensors: the same on the header's JSON.
    Field {
        key: u8,
        inner: Option<u8>,
        value: Json,
    },
    /// JSON files: remove the `key`-th key.
    Remove {
        key: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Tok {
    None,
    Small,
    Fuzzed(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    base: u8,
    config: Edit,
    weights: Edit,
    thresholds: Edit,
    tokenizer: Tok,
    copy_weights: bool,
    refuse_non_finite: bool,
    /// f32, bf16 or int8.
    precision: u8,
    /// The fixture's int8 copy instead of its committed weights.
    int8_file: bool,
    max_tokens: u8,
    texts: Vec<Vec<u16>>,
    samples: u8,
}

/// A fixture's file; `int8.model.safetensors` is the fixture's weights quantized by
/// `emcoder quantize` (made once per process).
fn original(name: &str, file: &str) -> &'static [u8] {
    static CACHE: OnceLock<Vec<((String, String), Vec<u8>)>> = OnceLock::new();
    let c = CACHE.get_or_init(|| {
        let mut v = Vec::new();
        let q = scratch_dir("loader-int8");
        for f in FIXTURES {
            for file in ["config.json", "model.safetensors", "thresholds.json"] {
                let b = std::fs::read(fixture(f).join(file)).unwrap_or_default();
                v.push(((f.to_string(), file.to_string()), b));
            }
            let out = q.join(f);
            emcoder_rt::model::quantize::quantize(&fixture(f), &out, true)
                .expect("quantizing a fixture");
            let b = std::fs::read(out.join("model.safetensors")).expect("the int8 fixture");
            v.push(((f.to_string(), "int8.model.safetensors".to_string()), b));
        }
        v
    });
    &c.iter()
        .find(|((f, n), _)| f == name && n == file)
        .unwrap()
        .1
}

fn edit_json(v: &mut Value, key: u8, inner: Option<u8>, value: &Json) {
    let Value::Object(map) = v else { return };
    if map.is_empty() {
        return;
    }
    let k = map.keys().nth(key as usize % map.len()).unwrap().clone();
    let slot = map.get_mut(&k).unwrap();
    match (inner, slot) {
        (Some(i), Value::Object(m)) if !m.is_empty() => {
            let k2 = m.keys().nth(i as usize % m.len()).unwrap().clone();
            m.insert(k2, value.value());
        }
        (Some(i), Value::Array(a)) if !a.is_empty() => {
            let n = a.len();
            a[i as usize % n] = value.value();
        }
        (_, s) => *s = value.value(),
    }
}

/// Applies an edit; `None`: the file is absent.
fn apply(orig: &[u8], edit: &Edit, safetensors: bool) -> Option<Vec<u8>> {
    let mut b = orig.to_vec();
    match edit {
        Edit::Keep => {}
        Edit::Absent => return None,
        Edit::Replace(r) => b = r.clone(),
        Edit::Truncate(n) => b.truncate(*n as usize % (b.len() + 1)),
        Edit::Flip(fl) => {
            if !b.is_empty() {
                for (pos, x) in fl.iter().take(16) {
                    let n = b.len();
                    b[*pos as usize % n] ^= x;
                }
            }
        }
        Edit::Field { key, inner, value } => {
            if safetensors {
                if b.len() >= 8 {
                    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
                    if let Some(Ok(mut h)) = b.get(8..8 + n).map(serde_json::from_slice::<Value>) {
                        edit_json(&mut h, *key, *inner, value);
                        let mut hb = serde_json::to_vec(&h).unwrap();
                        while hb.len() % 8 != 0 {
                            hb.push(b' ');
                        }
                        let mut out = (hb.len() as u64).to_le_bytes().to_vec();
                        out.extend_from_slice(&hb);
                        out.extend_from_slice(&b[8 + n..]);
                        b = out;
                    }
                }
            } else if let Ok(mut v) = serde_json::from_slice::<Value>(&b) {
                edit_json(&mut v, *key, *inner, value);
                b = serde_json::to_vec(&v).unwrap();
            }
        }
        Edit::Remove { key } => {
            if let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&b) {
                if !m.is_empty() {
                    let k = m.keys().nth(*key as usize % m.len()).unwrap().clone();
                    m.remove(&k);
                }
                b = serde_json::to_vec(&Value::Object(m)).unwrap();
            }
        }
    }
    Some(b)
}

fn write(dir: &Path, name: &str, bytes: Option<Vec<u8>>) {
    let p = dir.join(name);
    match bytes {
        Some(b) => std::fs::write(p, b).unwrap(),
        None => {
            let _ = std::fs::remove_file(p);
        }
    }
}

fuzz_target!(|input: Input| {
    let base = FIXTURES[input.base as usize % FIXTURES.len()];
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch_dir("loader"));
    write(
        dir,
        "config.json",
        apply(original(base, "config.json"), &input.config, false),
    );
    write(
        dir,
        "model.safetensors",
        apply(
            original(
                base,
                if input.int8_file {
                    "int8.model.safetensors"
                } else {
                    "model.safetensors"
                },
            ),
            &input.weights,
            true,
        ),
    );
    let th = original(base, "thresholds.json");
    let th = if th.is_empty() {
        None
    } else {
        apply(th, &input.thresholds, false)
    };
    write(dir, "thresholds.json", th);
    let tokenizer = match &input.tokenizer {
        Tok::None => TokenizerChoice::None,
        Tok::Small => TokenizerChoice::Path(small_tokenizer_path().to_owned()),
        Tok::Fuzzed(b) => {
            let p = dir.join("fuzzed-tokenizer.json");
            std::fs::write(&p, b).unwrap();
            TokenizerChoice::Path(p)
        }
    };
    let opts = LoadOptions {
        tokenizer,
        n_threads: 1,
        max_tokens: 2 + input.max_tokens as usize % 64,
        precision: [Precision::F32, Precision::Bf16, Precision::Int8][input.precision as usize % 3],
        copy_weights: input.copy_weights,
        refuse_non_finite: input.refuse_non_finite,
        ..LoadOptions::default()
    };
    let model = match Model::load(dir, &opts) {
        Ok(m) => m,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.len() > 10, "an error must say what to fix: {msg:?}");
            return;
        }
    };
    let ids: Vec<Vec<u32>> = input
        .texts
        .iter()
        .take(4)
        .map(|t| t.iter().take(80).map(|&i| i as u32 % 600).collect())
        .collect();
    for deterministic in [true, false] {
        let po = PredictOptions {
            samples: 1 + input.samples as u32 % 4,
            deterministic,
            ..PredictOptions::default()
        };
        if let Ok(preds) = model.predict_ids(&ids, &po) {
            assert_eq!(preds.len(), ids.len());
            for p in &preds {
                assert_eq!(p.labels.len(), model.config().num_labels);
            }
        }
    }
    if model.files().tokenizer.is_some() {
        let _ = model.predict(
            &["i am so happy", "", "zzz ? ! wow"],
            &PredictOptions {
                samples: 2,
                ..Default::default()
            },
        );
    }
});
