//! Shared helpers of the runtime's integration tests: fixture paths, golden files, comparisons.
#![allow(dead_code)]

use emcoder::{LoadOptions, Model, TokenizerChoice};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// Small-vocab fixtures: predicted from token ids, no tokenizer.
pub const ID_FIXTURES: [&str; 4] = [
    "tiny-f32",
    "tiny-rot-partial",
    "tiny-fused-bias",
    "tiny-bf16",
];

/// Loads a fixture model with `threads` workers (full-vocab fixtures get the built-in tokenizer).
pub fn load(name: &str, threads: usize) -> Model {
    let tokenizer = if name.contains("vocab") {
        TokenizerChoice::Auto
    } else {
        TokenizerChoice::None
    };
    let opts = LoadOptions {
        tokenizer,
        n_threads: threads,
        ..Default::default()
    };
    Model::load(&fixture(name), &opts).unwrap_or_else(|e| panic!("loading fixture {name}: {e}"))
}

/// A golden file's tensors (floats widened to f32, ints to i64) and metadata.
pub struct Golden {
    pub f32s: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
    pub meta: HashMap<String, String>,
}

impl Golden {
    pub fn load(name: &str) -> Golden {
        let path = fixture(name).join("golden.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, md) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = md.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (mut f32s, mut ints) = (HashMap::new(), HashMap::new());
        for (name, v) in st.tensors() {
            let shape = v.shape().to_vec();
            let d = v.data();
            match v.dtype() {
                Dtype::F32 => {
                    f32s.insert(
                        name,
                        (
                            shape,
                            d.chunks_exact(4)
                                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                                .collect(),
                        ),
                    );
                }
                Dtype::I64 => {
                    ints.insert(
                        name,
                        (
                            shape,
                            d.chunks_exact(8)
                                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                                .collect(),
                        ),
                    );
                }
                Dtype::I32 => {
                    ints.insert(
                        name,
                        (
                            shape,
                            d.chunks_exact(4)
                                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                                .collect(),
                        ),
                    );
                }
                Dtype::U8 | Dtype::BOOL => {
                    ints.insert(name, (shape, d.iter().map(|&b| b as i64).collect()));
                }
                other => panic!("golden tensor {name}: unexpected dtype {other:?}"),
            }
        }
        Golden { f32s, ints, meta }
    }

    pub fn f(&self, name: &str) -> &[f32] {
        &self
            .f32s
            .get(name)
            .unwrap_or_else(|| panic!("golden lacks `{name}`"))
            .1
    }

    pub fn shape(&self, name: &str) -> &[usize] {
        &self
            .f32s
            .get(name)
            .unwrap_or_else(|| panic!("golden lacks `{name}`"))
            .0
    }

    pub fn i(&self, name: &str) -> &[i64] {
        &self
            .ints
            .get(name)
            .unwrap_or_else(|| panic!("golden lacks `{name}`"))
            .1
    }

    pub fn meta_num(&self, key: &str) -> f64 {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("golden metadata lacks `{key}`"))
            .parse()
            .unwrap()
    }

    /// The input texts as token-id sequences.
    pub fn texts(&self) -> Vec<Vec<u32>> {
        let ids = self.i("input_ids");
        let mut at = 0;
        self.i("lengths")
            .iter()
            .map(|&n| {
                let t = ids[at..at + n as usize].iter().map(|&x| x as u32).collect();
                at += n as usize;
                t
            })
            .collect()
    }
}

/// Asserts `|got - want| <= atol + rtol * |want|` element-wise; on failure prints the first
/// values of both and the max difference.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs golden {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0.0f32);
    let mut fail = false;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = (g - w).abs();
        if diff.is_nan() || diff > atol + rtol * w.abs() {
            fail = true;
        }
        if diff.is_nan() || diff > worst.1 {
            worst = (i, diff);
        }
    }
    let k = got.len().min(6);
    assert!(
        !fail,
        "{what}: max |diff| {:e} at {} (tolerance {atol:e} + {rtol:e}*|want|)\n  got  {:?}\n  want {:?}",
        worst.1,
        worst.0,
        &got[..k],
        &want[..k]
    );
}

/// Max |a - b|.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Reorders (N, B, L) sample-major logits into (B, N, L) text-major.
pub fn to_text_major(x: &[f32], n: usize, b: usize, l: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for s in 0..n {
        for t in 0..b {
            out[(t * n + s) * l..(t * n + s + 1) * l]
                .copy_from_slice(&x[(s * b + t) * l..(s * b + t + 1) * l]);
        }
    }
    out
}

/// A writable copy of a fixture directory.
pub fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    (tmp, dir)
}

pub type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// Rewrites `dir/model.safetensors` through `edit`.
pub fn rewrite(dir: &Path, edit: impl FnOnce(&mut Tensors)) {
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
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Five token-id texts of 2 to 42 tokens (one empty between [CLS] and [SEP]), ids < 503.
pub fn sample_texts() -> Vec<Vec<u32>> {
    let mk = |n: usize, s: u32| -> Vec<u32> {
        let mut v = vec![1];
        v.extend((0..n).map(|i| (i as u32 * 37 + s * 101) % 500 + 3));
        v.push(2);
        v
    };
    vec![mk(5, 1), mk(0, 2), mk(17, 3), mk(40, 4), mk(9, 5)]
}
