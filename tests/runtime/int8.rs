//! Int8 precision: close to f32 (and to the PyTorch goldens) within the quantization error,
//! the same invariance contract as f32 (threads, batch, chunking), `emcoder quantize`'s
//! files giving exactly the numbers of `--precision int8` on the original, and malformed
//! int8 files refused with errors that say what to fix.

mod common;
use common::*;
use emcoder::model::quantize::quantize;
use emcoder::{LoadOptions, Model, Precision, PredictOptions, TokenizerChoice};
use safetensors::Dtype;
use std::path::Path;

fn texts() -> Vec<Vec<u32>> {
    sample_texts()
}

fn opts(precision: Precision, threads: usize, max_rows: usize) -> LoadOptions {
    LoadOptions {
        tokenizer: TokenizerChoice::None,
        n_threads: threads,
        precision,
        max_rows,
        ..Default::default()
    }
}

fn load_dir(dir: &Path, precision: Precision) -> Model {
    Model::load(dir, &opts(precision, 2, 16384))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Deterministic logits against the PyTorch goldens (f32), and MC means against the f32
/// engine with the same masks. The bounds are the quantization error of these tiny random
/// fixtures, whose narrow rows quantize coarsely: measured worst cases (Xeon, AMX) 0.029
/// of the largest logit and 0.016 in mean probability; a product that lost a scale, a
/// bias or a channel misses them by orders of magnitude. The shipped model's figures are
/// the accuracy benchmark's (`emcoder eval --precision int8`).
#[test]
fn int8_stays_close_to_f32_and_to_the_goldens() {
    for name in ID_FIXTURES {
        let g = Golden::load(name);
        let ids = g.texts();
        let q = load_dir(&fixture(name), Precision::Int8);
        let f = load_dir(&fixture(name), Precision::F32);
        let logits = q.logits(&ids).unwrap();
        let gl = g.f("logits");
        let scale = gl.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = max_diff(&logits, gl);
        eprintln!("{name}: int8 logits vs PyTorch f32: max |diff| {d:e} (logits up to {scale})");
        assert!(
            d <= 0.05 * scale.max(1.0),
            "{name}: {d} vs logits up to {scale}"
        );
        assert!(d > 0.0, "{name}: the int8 path was not taken");
        let po = PredictOptions {
            samples: 20,
            seed: 8,
            ..Default::default()
        };
        let (a, b) = (
            f.predict_ids(&ids, &po).unwrap(),
            q.predict_ids(&ids, &po).unwrap(),
        );
        let mut worst = 0.0f32;
        for (x, y) in a.iter().zip(&b) {
            for (s, t) in x.labels.iter().zip(&y.labels) {
                worst = worst.max((s.mean - t.mean).abs());
            }
        }
        eprintln!("{name}: int8 vs f32 MC means (20 samples): max |diff| {worst:e}");
        assert!(
            worst <= 0.025,
            "{name}: int8 vs f32 mean probabilities differ by {worst}"
        );
    }
}

#[test]
fn int8_results_do_not_depend_on_threads_batch_or_chunking() {
    let ids = texts();
    let name = "tiny-fused-bias";
    let base = Model::load(&fixture(name), &opts(Precision::Int8, 1, 16384)).unwrap();
    let z = base.sample_logits(&ids, 6, 3).unwrap();
    for (threads, max_rows) in [(2, 16384), (3, 16384), (2, 7), (3, 40)] {
        let m = Model::load(&fixture(name), &opts(Precision::Int8, threads, max_rows)).unwrap();
        let y = m.sample_logits(&ids, 6, 3).unwrap();
        assert!(
            y == z,
            "threads {threads}, max_rows {max_rows}: max diff {:e}",
            max_diff(&y, &z)
        );
    }
    let l = base.config().num_labels;
    for (i, t) in ids.iter().enumerate() {
        let alone = base.sample_logits(std::slice::from_ref(t), 6, 3).unwrap();
        assert!(
            alone == z[i * 6 * l..(i + 1) * 6 * l],
            "text {i} alone vs in batch"
        );
    }
    // The first samples of a longer run are a shorter run.
    let c = base.sample_logits(&ids, 2, 3).unwrap();
    for t in 0..ids.len() {
        assert!(
            c[t * 2 * l..(t + 1) * 2 * l] == z[t * 6 * l..(t * 6 + 2) * l],
            "text {t} prefix"
        );
    }
}

/// `quantize` writes I8 tensors with row scales that load zero-copy and give exactly the
/// numbers of `--precision int8` on the original, for every layout of the fixtures (split
/// and fused q/k/v, biases, partial and permuted rotary channels, BF16 storage).
#[test]
fn quantized_files_give_the_numbers_of_int8_at_load() {
    let ids = texts();
    for name in ID_FIXTURES {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("q");
        let r = quantize(&fixture(name), &out, false).unwrap();
        assert!(r.quantized > 0 && r.bytes_out < r.bytes_in, "{name}: {r:?}");
        assert!(
            r.files.contains(&"config.json".to_string()),
            "{name}: {r:?}"
        );
        let orig = load_dir(&fixture(name), Precision::Int8);
        let q = load_dir(&out, Precision::Int8);
        assert!(
            q.sample_logits(&ids, 4, 7).unwrap() == orig.sample_logits(&ids, 4, 7).unwrap(),
            "{name}: int8 file vs --precision int8"
        );
        assert!(
            q.logits(&ids).unwrap() == orig.logits(&ids).unwrap(),
            "{name}"
        );
        // In place from the map, every quantized tensor as I8.
        let placed = &q.files().placements;
        let i8s: Vec<_> = placed.iter().filter(|p| p.dtype == "I8").collect();
        assert_eq!(i8s.len(), r.quantized, "{name}");
        assert!(i8s.iter().all(|p| p.in_place && p.quantizable), "{name}");
        // An f32 load of the int8 file widens q * scale: close to the original f32.
        let f = load_dir(&out, Precision::F32);
        let f0 = load_dir(&fixture(name), Precision::F32);
        let (a, b) = (f.logits(&ids).unwrap(), f0.logits(&ids).unwrap());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            max_diff(&a, &b) <= 0.05 * scale.max(1.0),
            "{name}: f32 load of int8"
        );
        // Quantizing again copies the int8 tensors as they are.
        let again = tmp.path().join("q2");
        let r2 = quantize(&out, &again, false).unwrap();
        assert_eq!(r2.quantized, 0, "{name}");
        let tensors = |d: &Path| {
            let b = std::fs::read(d.join("model.safetensors")).unwrap();
            let st = safetensors::SafeTensors::deserialize(&b).unwrap();
            let mut v: Vec<_> = st
                .tensors()
                .into_iter()
                .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert!(
            tensors(&out) == tensors(&again),
            "{name}: quantizing an int8 model"
        );
        // The output is not overwritten without force, nor written over the input.
        let e = quantize(&fixture(name), &out, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--force"), "{e}");
        quantize(&fixture(name), &out, true).unwrap();
        let e = quantize(&out, &out, true).unwrap_err().to_string();
        assert!(e.contains("is the input"), "{e}");
    }
}

/// A writable int8 copy of `tiny-f32` (quantized), edited by `edit`; the load error.
fn load_edited(edit: impl FnOnce(&mut Tensors)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    quantize(&fixture("tiny-f32"), &out, false).unwrap();
    rewrite(&out, edit);
    match Model::load(&out, &opts(Precision::Int8, 1, 16384)) {
        Ok(_) => panic!("the edited int8 file loaded"),
        Err(e) => e.to_string(),
    }
}

const W: &str = "encoder.layers.0.attn.out_proj.weight";

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn malformed_int8_files_are_load_errors_that_say_what_to_fix() {
    let scale = format!("{W}_scale");
    let set_scale = |v: f32| {
        let s = scale.clone();
        move |t: &mut Tensors| {
            let e = t.get_mut(&s).unwrap();
            let mut vals: Vec<f32> =
                e.2.chunks(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
            vals[3] = v;
            e.2 = f32_bytes(&vals);
        }
    };
    for (what, v) in [
        ("zero", 0.0f32),
        ("NaN", f32::NAN),
        ("infinite", f32::INFINITY),
        ("negative", -1.0),
    ] {
        let e = load_edited(set_scale(v));
        assert!(
            e.contains(&scale) && e.contains("row 3") && e.contains("finite and positive"),
            "{what}: {e}"
        );
    }
    // A scale per row, not fewer.
    let s = scale.clone();
    let e = load_edited(move |t| {
        let x = t.get_mut(&s).unwrap();
        x.1 = vec![x.1[0] - 1];
        x.2.truncate(x.2.len() - 4);
    });
    assert!(
        e.contains(&scale) && e.contains("must be F32 of shape"),
        "{e}"
    );
    // F16 scales.
    let s = scale.clone();
    let e = load_edited(move |t| {
        let x = t.get_mut(&s).unwrap();
        x.0 = Dtype::F16;
        x.2.truncate(x.2.len() / 2);
    });
    assert!(e.contains("must be F32"), "{e}");
    // No scales.
    let s = scale.clone();
    let e = load_edited(move |t| {
        t.remove(&s);
    });
    assert!(e.contains(W) && e.contains("emcoder quantize"), "{e}");
    // Scales of nothing.
    let e = load_edited(|t| {
        let x = t.get("encoder.embed_norm.weight").unwrap().clone();
        t.insert(
            "encoder.embed_norm.weight_scale".into(),
            (Dtype::F32, x.1, x.2),
        );
    });
    assert!(
        e.contains("encoder.embed_norm.weight_scale") && e.contains("not an I8 tensor"),
        "{e}"
    );
    // I8 where f32 is required: a norm, a bias, the head.
    for name in ["encoder.embed_norm.weight", "classifier.3.weight"] {
        let n = name.to_string();
        let e = load_edited(move |t| {
            let x = t.get_mut(&n).unwrap();
            let len = x.1.iter().product::<usize>();
            x.0 = Dtype::I8;
            x.2 = vec![1u8; len];
            let rows = x.1[0];
            t.insert(
                format!("{n}_scale"),
                (Dtype::F32, vec![rows], f32_bytes(&vec![1.0; rows])),
            );
        });
        assert!(
            e.contains(name) && e.contains("I8") && e.contains("linear weights only"),
            "{name}: {e}"
        );
    }
}

#[test]
fn weights_with_nan_cannot_be_quantized() {
    let (_tmp, dir) = copy_fixture("tiny-f32");
    rewrite(&dir, |t| {
        let x = t.get_mut(W).unwrap();
        x.2[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let e = match Model::load(&dir, &opts(Precision::Int8, 1, 16384)) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("layer 0 attention output") && e.contains("NaN"),
        "{e}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let e = quantize(&dir, &tmp.path().join("q"), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains(W) && e.contains("NaN"), "{e}");
}
