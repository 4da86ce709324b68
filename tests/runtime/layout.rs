//! The layout options of config.json (`qkv_order`, `gate_up_order`, `rotary_pairs`,
//! `rotary_channels`, `head_activation`): a fixture's weights rearranged the way another
//! publisher could have stored them, loaded with the matching option, compute exactly what the
//! fixture computes (the options undo the rearrangement at load). reference/conformance.py
//! finds the options a checkpoint needs; its tests check the semantics against an independent
//! PyTorch implementation.

mod common;
use common::*;
use emcoder::model::resolve::rotary_permutation;
use emcoder::{LoadOptions, Model, TokenizerChoice};
use std::path::Path;

fn load_dir(dir: &Path) -> Model {
    let opts = LoadOptions {
        tokenizer: TokenizerChoice::None,
        n_threads: 2,
        ..Default::default()
    };
    Model::load(dir, &opts).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Adds `keys` to `dir/config.json`.
fn set_config(dir: &Path, keys: &[(&str, &str)]) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, val) in keys {
        v[*k] = serde_json::Value::from(*val);
    }
    std::fs::write(&path, v.to_string()).unwrap();
}

/// The rearranged weights in `dir` change the result, and `keys` added to config.json give
/// back the fixture's trace `want` bit for bit.
fn assert_option_undoes(dir: &Path, name: &str, want: &[Vec<f32>], keys: &[(&str, &str)]) {
    assert_ne!(
        trace_of(&load_dir(dir), name).last(),
        want.last(),
        "{keys:?}: the rearranged weights must change the result without the option"
    );
    set_config(dir, keys);
    assert_eq!(trace_of(&load_dir(dir), name), want, "{keys:?}");
}

/// The trace (every hidden state and the logits) of a fixture's golden texts.
fn trace_of(m: &Model, name: &str) -> Vec<Vec<f32>> {
    let (t, logits) = m.trace(&Golden::load(name).texts()).unwrap();
    let mut all = vec![t.embed];
    all.extend(t.layers);
    all.extend([t.final_norm, t.pooled, logits]);
    all
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reorders the row blocks of every tensor whose name ends with `suffix` (weights and biases
/// of a fused projection of `blocks` equal parts): block `i` of the result is block
/// `order[i]` of the fixture.
fn reorder_blocks(t: &mut Tensors, suffix: &str, blocks: usize, order: &[usize]) {
    let mut hits = 0;
    for (name, (_, shape, data)) in t.iter_mut() {
        if !name.contains(suffix) {
            continue;
        }
        hits += 1;
        let v = f32s(data);
        let per = v.len() / blocks;
        assert_eq!(shape[0] % blocks, 0, "{name}");
        let out: Vec<f32> = order
            .iter()
            .flat_map(|&b| v[b * per..(b + 1) * per].to_vec())
            .collect();
        *data = bytes(&out);
    }
    assert!(hits > 0, "no tensor matches {suffix}");
}

#[test]
fn every_qkv_order_of_a_fused_projection() {
    let name = "tiny-fused-bias";
    let want = trace_of(&load(name, 2), name);
    for (order, key) in [
        ([0, 2, 1], "qvk"),
        ([1, 0, 2], "kqv"),
        ([1, 2, 0], "kvq"),
        ([2, 0, 1], "vqk"),
        ([2, 1, 0], "vkq"),
    ] {
        let (_tmp, dir) = copy_fixture(name);
        // Stored block i is q (0), k (1) or v (2) as `key` says.
        rewrite(&dir, |t| reorder_blocks(t, "Wqkv", 3, &order));
        assert_option_undoes(&dir, name, &want, &[("qkv_order", key)]);
    }
}

#[test]
fn up_rows_first_in_a_fused_gate_up() {
    let name = "tiny-fused-bias";
    let want = trace_of(&load(name, 2), name);
    let (_tmp, dir) = copy_fixture(name);
    rewrite(&dir, |t| reorder_blocks(t, "w12", 2, &[1, 0]));
    assert_option_undoes(&dir, name, &want, &[("gate_up_order", "up_gate")]);
    // The bf16 path fuses gate|up again from the reordered halves.
    let opts = LoadOptions {
        tokenizer: TokenizerChoice::None,
        precision: emcoder::Precision::Bf16,
        ..Default::default()
    };
    let a = Model::load(&dir, &opts).unwrap();
    let b = Model::load(&fixture(name), &opts).unwrap();
    assert_eq!(trace_of(&a, name), trace_of(&b, name));
}

#[test]
fn split_gate_and_up_swapped_by_name() {
    // tiny-f32 stores gate_proj / up_proj: with up_gate the one named gate is the up.
    let name = "tiny-f32";
    let want = trace_of(&load(name, 2), name);
    let (_tmp, dir) = copy_fixture(name);
    rewrite(&dir, |t| {
        let names: Vec<String> = t
            .keys()
            .filter(|n| n.contains("gate_proj"))
            .cloned()
            .collect();
        assert!(!names.is_empty());
        for g in names {
            let u = g.replace("gate_proj", "up_proj");
            let gv = t.remove(&g).unwrap();
            let uv = t.remove(&u).unwrap();
            t.insert(g, uv);
            t.insert(u, gv);
        }
    });
    assert_option_undoes(&dir, name, &want, &[("gate_up_order", "up_gate")]);
}

#[test]
fn rotary_permutations() {
    use emcoder::model::config::Layout;
    let l = |half, last| Layout {
        rotary_half: half,
        rotary_last: last,
        ..Layout::default()
    };
    let cases: [(bool, bool, usize, Option<Vec<usize>>); 6] = [
        (false, false, 4, None),
        (false, true, 8, None),
        // half: pairs (i, i + rot/2) become (2i, 2i+1); the rest keeps its order.
        (true, false, 4, Some(vec![0, 2, 1, 3, 4, 5, 6, 7])),
        // last: the rotated channels are 4..8 and move to the front.
        (false, true, 4, Some(vec![4, 5, 6, 7, 0, 1, 2, 3])),
        (true, true, 4, Some(vec![4, 6, 5, 7, 0, 1, 2, 3])),
        (true, false, 8, Some(vec![0, 4, 1, 5, 2, 6, 3, 7])),
    ];
    for (half, last, rot, want) in cases {
        let got = rotary_permutation(&l(half, last), 8, rot);
        assert_eq!(got, want, "half {half}, last {last}, rot_dim {rot}");
    }
}

#[test]
fn rotary_pairs_and_channels_of_another_layout() {
    // tiny-rot-partial: rot_dim 4 of head_dim 8, so "last" moves something.
    let name = "tiny-rot-partial";
    let base = load(name, 2);
    let (hd, rot) = (base.config().head_dim(), base.files().weights.rot_dim);
    assert!(rot < hd);
    let want = trace_of(&base, name);
    for (pairs, channels) in [("half", "first"), ("interleaved", "last"), ("half", "last")] {
        let layout = emcoder::model::config::Config::from_json_str(&format!(
            r#"{{"d_model": 8, "n_head": 1, "n_layers": 1, "d_ffn": 8, "vocab_size": 8,
                "dropout": 0.1, "rotary_pairs": "{pairs}", "rotary_channels": "{channels}"}}"#
        ))
        .unwrap()
        .layout;
        let perm = rotary_permutation(&layout, hd, rot).unwrap();
        let (_tmp, dir) = copy_fixture(name);
        // Store q and k as that publisher would: the engine's channel j is the stored
        // channel perm[j].
        rewrite(&dir, |t| {
            let mut hits = 0;
            for (n, (_, shape, data)) in t.iter_mut() {
                let is_qk = ["q_proj", "k_proj", "wq.", "wk."]
                    .iter()
                    .any(|p| n.contains(p));
                if !is_qk {
                    continue;
                }
                hits += 1;
                let v = f32s(data);
                let k = if shape.len() == 2 { shape[1] } else { 1 };
                let mut out = vec![0.0; v.len()];
                for h in 0..shape[0] / hd {
                    for (j, &c) in perm.iter().enumerate() {
                        let (src, dst) = ((h * hd + j) * k, (h * hd + c) * k);
                        out[dst..dst + k].copy_from_slice(&v[src..src + k]);
                    }
                }
                *data = bytes(&out);
            }
            assert!(hits >= 2, "no q/k tensors found");
        });
        let keys = [("rotary_pairs", pairs), ("rotary_channels", channels)];
        assert_option_undoes(&dir, name, &want, &keys);
    }
}

#[test]
fn tanh_gelu_changes_only_the_head() {
    let name = "tiny-f32";
    let want = trace_of(&load(name, 2), name);
    let (_tmp, dir) = copy_fixture(name);
    set_config(&dir, &[("head_activation", "gelu_tanh")]);
    let got = trace_of(&load_dir(&dir), name);
    let n = got.len();
    assert_eq!(got[..n - 1], want[..n - 1], "everything before the head");
    let d = max_diff(&got[n - 1], &want[n - 1]);
    assert!(d > 1e-6 && d < 0.05, "logits moved by {d}");
}

#[test]
fn bad_layout_values_are_load_errors() {
    let (_tmp, dir) = copy_fixture("tiny-f32");
    set_config(&dir, &[("rotary_pairs", "neox")]);
    let e = Model::load(
        &dir,
        &LoadOptions {
            tokenizer: TokenizerChoice::None,
            ..Default::default()
        },
    )
    .err()
    .expect("an unknown rotary_pairs must not load")
    .to_string();
    assert!(e.contains("rotary_pairs") && e.contains("\"half\""), "{e}");
}
