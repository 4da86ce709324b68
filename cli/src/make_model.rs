//! `emcoder make-model`: writes a random model of any size in the canonical layout
//! (for benchmarks: the published size is the default; not committed).

use emcoder_kernels::philox::philox4x32_10;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;
use std::path::Path;

/// Sizes of the model to write.
pub struct Shape {
    /// Vocabulary.
    pub vocab: usize,
    /// Width.
    pub d_model: usize,
    /// Heads.
    pub n_head: usize,
    /// Layers.
    pub n_layers: usize,
    /// SwiGLU hidden size.
    pub d_ffn: usize,
}

/// Deterministic pseudo-normal values (sum of 4 uniforms, scaled) from Philox.
fn values(n: usize, std: f32, seed: u64, stream: u32) -> Vec<f32> {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut out = Vec::with_capacity(n);
    let mut i = 0u32;
    while out.len() < n {
        let w = philox4x32_10([i, stream, 0, 0], key);
        let u: f32 = w.iter().map(|&x| x as f32 / 4_294_967_296.0).sum::<f32>() - 2.0; // var 1/3
        out.push(u * std * 3f32.sqrt());
        i += 1;
    }
    out
}

/// Writes `model.safetensors` and `config.json` into `dir` (F32 or BF16).
pub fn write(dir: &Path, s: &Shape, bf16: bool, seed: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (d, f) = (s.d_model, s.d_ffn);
    let hd = d / s.n_head;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut stream = 0u32;
    let mut add = |name: String, shape: Vec<usize>, std: f32, mean: f32| {
        stream += 1;
        let v = values(shape.iter().product(), std, seed, stream)
            .into_iter()
            .map(|x| x + mean)
            .collect();
        tensors.push((name, shape, v));
    };
    add(
        "encoder.token_embedding.weight".into(),
        vec![s.vocab, d],
        1.0,
        0.0,
    );
    add("encoder.embed_norm.weight".into(), vec![d], 0.05, 1.0);
    for i in 0..s.n_layers {
        let p = format!("encoder.layers.{i}");
        add(format!("{p}.ln1.weight"), vec![d], 0.05, 1.0);
        for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            add(
                format!("{p}.attn.{m}.weight"),
                vec![d, d],
                1.0 / (d as f32).sqrt(),
                0.0,
            );
        }
        add(format!("{p}.ln2.weight"), vec![d], 0.05, 1.0);
        add(
            format!("{p}.ffn.gate_proj.weight"),
            vec![f, d],
            1.0 / (d as f32).sqrt(),
            0.0,
        );
        add(
            format!("{p}.ffn.up_proj.weight"),
            vec![f, d],
            1.0 / (d as f32).sqrt(),
            0.0,
        );
        add(
            format!("{p}.ffn.down_proj.weight"),
            vec![d, f],
            1.0 / (f as f32).sqrt(),
            0.0,
        );
    }
    add("encoder.final_norm.weight".into(), vec![d], 0.05, 1.0);
    add(
        "classifier.0.weight".into(),
        vec![d, d],
        1.0 / (d as f32).sqrt(),
        0.0,
    );
    add("classifier.0.bias".into(), vec![d], 0.02, 0.0);
    add(
        "classifier.3.weight".into(),
        vec![28, d],
        1.0 / (d as f32).sqrt(),
        0.0,
    );
    add("classifier.3.bias".into(), vec![28], 0.5, -1.0);
    let freqs: Vec<f32> = (0..hd / 2)
        .map(|i| (1.0 / 10000f64.powf(2.0 * i as f64 / hd as f64)) as f32)
        .collect();
    for i in 0..s.n_layers {
        tensors.push((
            format!("encoder.layers.{i}.attn.rotary_emb.freqs"),
            vec![hd / 2],
            freqs.clone(),
        ));
    }
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, shape, v)| {
            let (dt, b) = if bf16 && !n.ends_with("freqs") {
                (
                    Dtype::BF16,
                    v.iter()
                        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                        .collect(),
                )
            } else {
                (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            };
            (n, dt, shape, b)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, dt, shape, b)| TensorView::new(*dt, shape.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .map_err(|e| e.to_string())?;
    let labels = emcoder::model::config::GOEMOTIONS_LABELS;
    let cfg = json!({
        "d_model": d, "n_head": s.n_head, "n_layers": s.n_layers, "d_ffn": f, "vocab_size": s.vocab,
        "dropout": 0.1, "num_labels": 28, "rope_theta": 10000.0,
        "id2label": labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect::<serde_json::Map<_, _>>(),
        "label2id": labels.iter().enumerate().map(|(i, l)| (l.to_string(), json!(i))).collect::<serde_json::Map<_, _>>(),
        "model_type": "emcoder-random",
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap_or_default(),
    )
    .map_err(|e| format!("cannot write config.json: {e}"))
}
