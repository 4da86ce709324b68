//! Resolves the tensor names of a checkpoint to the roles of the forward pass.
//!
//! The canonical layout (README, "Tensor layout") is one spelling among those accepted; any
//! prefix, split or fused q/k/v and gate/up, per-layer or shared rotary frequencies and
//! optional biases resolve by role. Anything that cannot be placed, is missing or has a
//! shape the config does not imply is an error naming the tensor and the expected shape.

use super::config::{Config, Layout, Proj};
use super::params::{Layer, Linear, Param, Weights};
use super::tensors::{RawTensor, TensorFile};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the loader decided for one tensor of the file (shown by `emcoder inspect`).
#[derive(Clone, Debug)]
pub struct Placement {
    /// Name in the file.
    pub name: String,
    /// Stored dtype.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// The role, e.g. "layer 0 q,k,v (fused)".
    pub role: String,
    /// Used in place from the memory map (no copy).
    pub in_place: bool,
    /// A tensor int8 precision quantizes (the token embedding and the encoder layers'
    /// linear weights): stored as I8 by `emcoder quantize`.
    pub quantizable: bool,
}

/// Layer-level roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LRole {
    Ln1,
    Ln2,
    Q,
    K,
    V,
    Qkv,
    O,
    Gate,
    Up,
    Down,
    GateUp,
    Freqs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Weight,
    Bias,
    Freqs,
}

const LAYER_ROLES: [(LRole, &[&str]); 11] = [
    (
        LRole::Ln1,
        &[
            "ln1",
            "norm1",
            "attn_norm",
            "attention_norm",
            "input_layernorm",
        ],
    ),
    (
        LRole::Ln2,
        &[
            "ln2",
            "norm2",
            "ffn_norm",
            "mlp_norm",
            "post_attention_layernorm",
        ],
    ),
    (LRole::Q, &["q_proj", "wq"]),
    (LRole::K, &["k_proj", "wk"]),
    (LRole::V, &["v_proj", "wv"]),
    (LRole::Qkv, &["qkv", "wqkv", "in_proj"]),
    (LRole::O, &["out_proj", "o_proj", "wo"]),
    (LRole::Gate, &["gate_proj", "w1"]),
    (LRole::Up, &["up_proj", "w3"]),
    (LRole::Down, &["down_proj", "w2"]),
    (LRole::GateUp, &["w12", "gate_up_proj"]),
];

/// Splits a name into (module path, kind).
fn split_kind(name: &str) -> Option<(&str, Kind)> {
    for (suffix, kind) in [
        (".weight", Kind::Weight),
        (".bias", Kind::Bias),
        ("_weight", Kind::Weight),
        ("_bias", Kind::Bias),
        (".freqs", Kind::Freqs),
    ] {
        if let Some(m) = name.strip_suffix(suffix) {
            return Some((m, kind));
        }
    }
    None
}

/// Finds `layers.N` (or `layer.N`, `blocks.N`) in a module path: (N, the path after it).
fn split_layer(module: &str) -> Option<(usize, Vec<&str>)> {
    let parts: Vec<&str> = module.split('.').collect();
    for i in 0..parts.len().saturating_sub(1) {
        if matches!(parts[i], "layers" | "layer" | "blocks") {
            if let Ok(n) = parts[i + 1].parse::<usize>() {
                return Some((n, parts[i + 2..].to_vec()));
            }
        }
    }
    None
}

fn layer_role(last: &str) -> Option<LRole> {
    let l = last.to_ascii_lowercase();
    LAYER_ROLES
        .iter()
        .find(|(_, names)| names.contains(&l.as_str()))
        .map(|(r, _)| *r)
}

/// Names found for each role, before shapes are checked.
#[derive(Default)]
struct Found<'a> {
    layer: BTreeMap<(usize, LRole, Kind), &'a RawTensor>,
    embedding: Option<&'a RawTensor>,
    embed_norm: Option<&'a RawTensor>,
    final_norm: Option<&'a RawTensor>,
    shared_freqs: Option<&'a RawTensor>,
    /// Head modules: path -> (weight, bias).
    head: BTreeMap<String, (Option<&'a RawTensor>, Option<&'a RawTensor>)>,
}

fn put<'a>(slot: &mut Option<&'a RawTensor>, t: &'a RawTensor, role: &str) -> Result<()> {
    if let Some(prev) = slot {
        return Err(Error::DuplicateRole {
            role: role.into(),
            first: prev.name.clone(),
            second: t.name.clone(),
        });
    }
    *slot = Some(t);
    Ok(())
}

fn classify(file: &TensorFile) -> Result<Found<'_>> {
    let mut f = Found::default();
    let mut unknown = Vec::new();
    for t in file.tensors.values() {
        // `<weight>_scale`: the row scales of an I8 weight, read with it.
        if let Some(base) = t.name.strip_suffix("_scale") {
            match file.tensors.get(base) {
                Some(w) if w.dtype == safetensors::Dtype::I8 => continue,
                _ => {
                    return Err(Error::BadSafetensors {
                        path: file.path.clone(),
                        reason: format!(
                            "`{}` looks like the scales of an I8 tensor, but `{base}` is not an I8 tensor of the file",
                            t.name
                        ),
                    })
                }
            }
        }
        let Some((module, kind)) = split_kind(&t.name) else {
            unknown.push(t.name.clone());
            continue;
        };
        let last = module.rsplit('.').next().unwrap_or(module);
        if let Some((n, rest)) = split_layer(module) {
            let role = match kind {
                Kind::Freqs if matches!(last, "rotary_emb" | "rotary") => Some(LRole::Freqs),
                Kind::Freqs => None,
                _ => rest.last().and_then(|l| layer_role(l)),
            };
            match role {
                Some(r) => {
                    if let Some(prev) = f.layer.insert((n, r, kind), t) {
                        return Err(Error::DuplicateRole {
                            role: format!("layer {n} {r:?} {kind:?}"),
                            first: prev.name.clone(),
                            second: t.name.clone(),
                        });
                    }
                }
                None => unknown.push(t.name.clone()),
            }
            continue;
        }
        let parts: Vec<&str> = module.split('.').collect();
        match (kind, last) {
            (Kind::Freqs, "rotary_emb" | "rotary") => {
                put(&mut f.shared_freqs, t, "shared rotary freqs")?
            }
            (
                Kind::Weight,
                "token_embedding" | "tok_embeddings" | "embed_tokens" | "word_embeddings",
            ) => put(&mut f.embedding, t, "token embedding")?,
            (Kind::Weight, "embed_norm") => put(&mut f.embed_norm, t, "embed norm")?,
            (Kind::Weight, "final_norm" | "norm_f" | "final_layernorm") => {
                put(&mut f.final_norm, t, "final norm")?
            }
            (Kind::Weight | Kind::Bias, _)
                if parts
                    .iter()
                    .any(|p| matches!(*p, "classifier" | "pre_classifier" | "head")) =>
            {
                let e = f.head.entry(module.to_string()).or_default();
                let slot = if kind == Kind::Weight {
                    &mut e.0
                } else {
                    &mut e.1
                };
                put(slot, t, &format!("head module {module}"))?;
            }
            _ => unknown.push(t.name.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::UnknownTensors { names: unknown });
    }
    Ok(f)
}

/// Resolves and shape-checks every tensor of `file` against `cfg`.
pub fn resolve(file: &TensorFile, cfg: &Config) -> Result<(Weights, Vec<Placement>)> {
    let found = classify(file)?;
    let mut r = Resolver {
        file,
        cfg,
        placements: Vec::new(),
        i8_ok: true,
    };
    let (d, f, v, nl) = (cfg.d_model, cfg.d_ffn, cfg.vocab_size, cfg.num_labels);

    let embedding = r.tensor(
        found.embedding,
        "token embedding",
        "encoder.token_embedding.weight",
        &[v, d],
    )?;
    r.i8_ok = false;
    let embed_norm = r.tensor(
        found.embed_norm,
        "embed norm",
        "encoder.embed_norm.weight",
        &[d],
    )?;
    let final_norm = r.tensor(
        found.final_norm,
        "final norm",
        "encoder.final_norm.weight",
        &[d],
    )?;

    if let Some(&(n, _, _)) = found.layer.keys().find(|(n, _, _)| *n >= cfg.n_layers) {
        return Err(Error::Config(format!(
            "the checkpoint has tensors for layer {n} but config.json says n_layers = {}",
            cfg.n_layers
        )));
    }
    let (freqs, rot_dim) = r.freqs(&found)?;
    r.i8_ok = true;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for (i, layer_freqs) in freqs.iter().enumerate() {
        let get = |role: LRole, kind: Kind| found.layer.get(&(i, role, kind)).copied();
        let canon = |m: &str| format!("encoder.layers.{i}.{m}.weight");
        let ln1 = r.tensor(
            get(LRole::Ln1, Kind::Weight),
            &format!("layer {i} norm 1"),
            &canon("ln1"),
            &[d],
        )?;
        let ln2 = r.tensor(
            get(LRole::Ln2, Kind::Weight),
            &format!("layer {i} norm 2"),
            &canon("ln2"),
            &[d],
        )?;
        let [q, k, vv] = r.fused3(
            i,
            &found,
            [LRole::Q, LRole::K, LRole::V],
            LRole::Qkv,
            d,
            d,
            "attn",
            ["q_proj", "k_proj", "v_proj"],
        )?;
        let o = r.linear(
            get(LRole::O, Kind::Weight),
            get(LRole::O, Kind::Bias),
            &format!("layer {i} attention output"),
            &canon("attn.out_proj"),
            d,
            d,
        )?;
        let [gate, up] = r.fused2(i, &found, d, f)?;
        let down = r.linear(
            get(LRole::Down, Kind::Weight),
            get(LRole::Down, Kind::Bias),
            &format!("layer {i} SwiGLU down"),
            &canon("ffn.down_proj"),
            d,
            f,
        )?;
        layers.push(Layer {
            ln1,
            q,
            k,
            v: vv,
            o,
            freqs: layer_freqs.clone(),
            ln2,
            gate,
            up,
            down,
            qkv: None,
            gate_up: None,
            qkv_i8: None,
            gate_up_i8: None,
        });
    }
    r.i8_ok = false;
    rotary_to_canonical(&mut layers, cfg, rot_dim);
    let (head1, head2) = r.head(&found.head, d, nl)?;
    let w = Weights {
        embedding,
        embed_norm,
        layers,
        final_norm,
        head1,
        head2,
        rot_dim,
    };
    r.placements.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((w, r.placements))
}

/// The channel order, within each head, that turns the checkpoint's rotary layout into the
/// engine's (interleaved pairs on the first `rot` channels): entry `j` is the checkpoint
/// channel that becomes channel `j`. `None` when the layout already is the engine's.
pub fn rotary_permutation(layout: &Layout, head_dim: usize, rot: usize) -> Option<Vec<usize>> {
    let base = if layout.rotary_last {
        head_dim - rot
    } else {
        0
    };
    if !layout.rotary_half && base == 0 {
        return None;
    }
    let mut perm = Vec::with_capacity(head_dim);
    for i in 0..rot / 2 {
        let (a, b) = if layout.rotary_half {
            (i, i + rot / 2)
        } else {
            (2 * i, 2 * i + 1)
        };
        perm.push(base + a);
        perm.push(base + b);
    }
    perm.extend((0..head_dim).filter(|c| !(base..base + rot).contains(c)));
    Some(perm)
}

/// Rewrites q and k of every layer (weights and biases, rows within each head) so that the
/// checkpoint's rotary pairs become the engine's. Scores `q . k` are sums over the same
/// channel pairs in another order, so attention is unchanged up to rounding; v and the output
/// projection are untouched. The permuted rows are owned copies (2 d^2 floats per layer).
fn rotary_to_canonical(layers: &mut [Layer], cfg: &Config, rot: usize) {
    let hd = cfg.head_dim();
    let Some(perm) = rotary_permutation(&cfg.layout, hd, rot) else {
        return;
    };
    let permute = |lin: &Linear| -> Linear {
        let k = lin.in_dim;
        let rows = || (0..lin.out_dim / hd).flat_map(|h| perm.iter().map(move |&c| h * hd + c));
        // Int8 rows move with their scales (quantizing per row commutes with the move).
        let w = match lin.w.quantized() {
            Some((q, s)) => Param::quantized_owned(
                rows()
                    .flat_map(|r| q[r * k..(r + 1) * k].iter().copied())
                    .collect(),
                rows().map(|r| s[r]).collect(),
                k,
            ),
            None => {
                let w = lin.w.data();
                let mut out = Vec::with_capacity(w.len());
                for r in rows() {
                    out.extend_from_slice(&w[r * k..(r + 1) * k]);
                }
                Param::owned(out)
            }
        };
        let b = lin.b.as_ref().map(|b| {
            let b = b.data();
            let v = (0..lin.out_dim / hd)
                .flat_map(|h| perm.iter().map(move |&c| b[h * hd + c]))
                .collect();
            Param::owned(v)
        });
        Linear {
            w,
            b,
            out_dim: lin.out_dim,
            in_dim: k,
            packed: None,
            i8: None,
        }
    };
    for l in layers {
        l.q = permute(&l.q);
        l.k = permute(&l.k);
    }
}

struct Resolver<'a> {
    file: &'a TensorFile,
    cfg: &'a Config,
    placements: Vec<Placement>,
    /// Placing the token embedding or the encoder layers (where I8 weights may be).
    i8_ok: bool,
}

fn shape_str(s: &[usize]) -> String {
    format!("{s:?}")
}

impl Resolver<'_> {
    fn why(&self) -> String {
        let c = self.cfg;
        format!(
            "config: d_model {}, d_ffn {}, vocab_size {}, num_labels {}, n_head {}",
            c.d_model, c.d_ffn, c.vocab_size, c.num_labels, c.n_head
        )
    }

    fn check(&self, t: &RawTensor, shape: &[usize]) -> Result<()> {
        if t.shape != shape {
            return Err(Error::Shape {
                name: t.name.clone(),
                found: t.shape.clone(),
                expected: shape_str(shape),
                why: self.why(),
            });
        }
        Ok(())
    }

    fn place(&mut self, t: &RawTensor, role: &str) -> Result<Param> {
        // Int8 (an I8 tensor and its row scales) only where int8 precision quantizes.
        let quantizable = self.i8_ok && t.shape.len() == 2;
        let storage = if t.dtype == safetensors::Dtype::I8 {
            let scale = format!("{}_scale", t.name);
            match self.file.tensors.get(&scale) {
                Some(s) if quantizable => self.file.load_quantized(t, s)?,
                _ if !quantizable => {
                    return Err(Error::Dtype {
                        name: t.name.clone(),
                        dtype: t.dtype_name(),
                    })
                }
                _ => {
                    return Err(Error::BadSafetensors {
                        path: self.file.path.clone(),
                        reason: format!(
                            "the I8 tensor `{}` has no `{scale}` (F32, one scale per row): re-run `emcoder quantize` on the original model",
                            t.name
                        ),
                    })
                }
            }
        } else {
            self.file.load(t)?
        };
        let p = Param::whole(Arc::new(storage));
        self.placements.push(Placement {
            name: t.name.clone(),
            dtype: t.dtype_name(),
            shape: t.shape.clone(),
            role: role.into(),
            in_place: p.is_mapped(),
            quantizable,
        });
        Ok(p)
    }

    /// A required tensor of a fixed shape.
    fn tensor(
        &mut self,
        t: Option<&RawTensor>,
        role: &str,
        canonical: &str,
        shape: &[usize],
    ) -> Result<Param> {
        let t = t.ok_or_else(|| Error::MissingTensor {
            role: role.into(),
            expected: canonical.into(),
            shape: shape_str(shape),
        })?;
        self.check(t, shape)?;
        self.place(t, role)
    }

    /// A linear layer (out, in) with an optional bias (out,).
    fn linear(
        &mut self,
        w: Option<&RawTensor>,
        b: Option<&RawTensor>,
        role: &str,
        canonical: &str,
        out: usize,
        inp: usize,
    ) -> Result<Linear> {
        if w.is_none() {
            if let Some(b) = b {
                return Err(Error::MissingTensor {
                    role: format!("{role} weight (bias `{}` found)", b.name),
                    expected: canonical.into(),
                    shape: shape_str(&[out, inp]),
                });
            }
        }
        let w = self.tensor(w, role, canonical, &[out, inp])?;
        let b = match b {
            Some(b) => {
                self.check(b, &[out])?;
                Some(self.place(b, &format!("{role} bias"))?)
            }
            None => None,
        };
        Ok(Linear {
            w,
            b,
            out_dim: out,
            in_dim: inp,
            packed: None,
            i8: None,
        })
    }

    /// q, k, v: three split tensors or one fused (3d, d) in q,k,v order.
    #[allow(clippy::too_many_arguments)]
    fn fused3(
        &mut self,
        i: usize,
        f: &Found,
        split: [LRole; 3],
        fused: LRole,
        out: usize,
        inp: usize,
        m: &str,
        names: [&str; 3],
    ) -> Result<[Linear; 3]> {
        let get = |role: LRole, kind: Kind| f.layer.get(&(i, role, kind)).copied();
        let any_split = split
            .iter()
            .any(|r| get(*r, Kind::Weight).is_some() || get(*r, Kind::Bias).is_some());
        if let Some(fw) = get(fused, Kind::Weight) {
            if any_split {
                let other = split
                    .iter()
                    .find_map(|r| get(*r, Kind::Weight).or(get(*r, Kind::Bias)))
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                return Err(Error::DuplicateRole {
                    role: format!("layer {i} q/k/v"),
                    first: fw.name.clone(),
                    second: other,
                });
            }
            let order = self.cfg.layout.qkv_order;
            let rows: Vec<String> = order
                .iter()
                .map(|p| format!("{p:?}").to_lowercase())
                .collect();
            let lin = self.linear(
                Some(fw),
                get(fused, Kind::Bias),
                &format!("layer {i} q,k,v (fused, {} rows)", rows.join("|")),
                &format!("encoder.layers.{i}.{m}.Wqkv.weight"),
                3 * out,
                inp,
            )?;
            let block = |p: Proj| {
                let at = order.iter().position(|x| *x == p).expect("a permutation");
                lin.rows(at * out, out)
            };
            return Ok([block(Proj::Q), block(Proj::K), block(Proj::V)]);
        }
        let mut v = Vec::with_capacity(3);
        for (r, n) in split.iter().zip(names) {
            v.push(self.linear(
                get(*r, Kind::Weight),
                get(*r, Kind::Bias),
                &format!("layer {i} {}", &n[..1]),
                &format!("encoder.layers.{i}.{m}.{n}.weight"),
                out,
                inp,
            )?);
        }
        Ok([v.remove(0), v.remove(0), v.remove(0)])
    }

    /// SwiGLU gate and up: split, or fused (2f, d) with gate rows first (up rows first with
    /// `gate_up_order: up_gate`, which also swaps the roles of split tensors).
    fn fused2(&mut self, i: usize, f: &Found, d: usize, ff: usize) -> Result<[Linear; 2]> {
        let [a, b] = self.fused2_by_name(i, f, d, ff)?;
        Ok(if self.cfg.layout.up_first {
            [b, a]
        } else {
            [a, b]
        })
    }

    /// Gate and up as the names (or the fused rows' default order) say.
    fn fused2_by_name(&mut self, i: usize, f: &Found, d: usize, ff: usize) -> Result<[Linear; 2]> {
        let get = |role: LRole, kind: Kind| f.layer.get(&(i, role, kind)).copied();
        let swapped = self.cfg.layout.up_first;
        if let Some(fw) = get(LRole::GateUp, Kind::Weight) {
            if let Some(t) = get(LRole::Gate, Kind::Weight).or(get(LRole::Up, Kind::Weight)) {
                return Err(Error::DuplicateRole {
                    role: format!("layer {i} SwiGLU gate/up"),
                    first: fw.name.clone(),
                    second: t.name.clone(),
                });
            }
            let lin = self.linear(
                Some(fw),
                get(LRole::GateUp, Kind::Bias),
                &format!(
                    "layer {i} SwiGLU gate,up (fused, {} rows first)",
                    if swapped { "up" } else { "gate" }
                ),
                &format!("encoder.layers.{i}.ffn.w12.weight"),
                2 * ff,
                d,
            )?;
            return Ok([lin.rows(0, ff), lin.rows(ff, ff)]);
        }
        let gate = self.linear(
            get(LRole::Gate, Kind::Weight),
            get(LRole::Gate, Kind::Bias),
            &format!(
                "layer {i} SwiGLU {}",
                if swapped {
                    "up (gate_up_order up_gate)"
                } else {
                    "gate"
                }
            ),
            &format!("encoder.layers.{i}.ffn.gate_proj.weight"),
            ff,
            d,
        )?;
        let up = self.linear(
            get(LRole::Up, Kind::Weight),
            get(LRole::Up, Kind::Bias),
            &format!(
                "layer {i} SwiGLU {}",
                if swapped {
                    "gate (gate_up_order up_gate)"
                } else {
                    "up"
                }
            ),
            &format!("encoder.layers.{i}.ffn.up_proj.weight"),
            ff,
            d,
        )?;
        Ok([gate, up])
    }

    /// Per-layer or shared rotary frequencies; defaults from `rope_theta` when none is stored.
    fn freqs(&mut self, f: &Found) -> Result<(Vec<Param>, usize)> {
        let hd = self.cfg.head_dim();
        let per_layer: Vec<Option<&RawTensor>> = (0..self.cfg.n_layers)
            .map(|i| f.layer.get(&(i, LRole::Freqs, Kind::Freqs)).copied())
            .collect();
        let n_stored = per_layer.iter().filter(|t| t.is_some()).count();
        if let (Some(shared), Some(Some(layer))) =
            (f.shared_freqs, per_layer.iter().find(|t| t.is_some()))
        {
            return Err(Error::DuplicateRole {
                role: "rotary freqs (shared and per layer)".into(),
                first: shared.name.clone(),
                second: layer.name.clone(),
            });
        }
        let why = self.why();
        let check_len = |t: &RawTensor| -> Result<usize> {
            let ok = t.shape.len() == 1 && t.shape[0] >= 1 && 2 * t.shape[0] <= hd;
            if !ok {
                return Err(Error::Shape {
                    name: t.name.clone(),
                    found: t.shape.clone(),
                    expected: format!("(rot_dim/2,) with rot_dim even and <= head_dim {hd}"),
                    why: why.clone(),
                });
            }
            Ok(2 * t.shape[0])
        };
        let (params, rot) = if let Some(t) = f.shared_freqs {
            let rot = check_len(t)?;
            let p = self.place(t, "rotary freqs (shared by all layers)")?;
            (vec![p; self.cfg.n_layers], rot)
        } else if n_stored > 0 {
            let mut out = Vec::new();
            let mut rot = None;
            for (i, t) in per_layer.iter().enumerate() {
                let t = t.ok_or_else(|| Error::MissingTensor {
                    role: format!("layer {i} rotary freqs (other layers store theirs)"),
                    expected: format!("encoder.layers.{i}.attn.rotary_emb.freqs"),
                    shape: "(rot_dim/2,)".into(),
                })?;
                let r = check_len(t)?;
                if rot.is_some_and(|x| x != r) {
                    return Err(Error::Shape {
                        name: t.name.clone(),
                        found: t.shape.clone(),
                        expected: format!("({},) like the other layers", rot.unwrap() / 2),
                        why: why.clone(),
                    });
                }
                rot = Some(r);
                out.push(self.place(t, &format!("layer {i} rotary freqs"))?);
            }
            (out, rot.unwrap())
        } else {
            let rot = self.cfg.rot_dim.unwrap_or(hd);
            let theta = self.cfg.rope_theta as f64;
            let fr: Vec<f32> = (0..rot / 2)
                .map(|i| (1.0 / theta.powf(2.0 * i as f64 / rot as f64)) as f32)
                .collect();
            (vec![Param::owned(fr); self.cfg.n_layers], rot)
        };
        if let Some(r) = self.cfg.rot_dim {
            if r != rot {
                return Err(Error::Config(format!(
                    "config rot_dim {r} disagrees with the stored freqs (rot_dim {rot})"
                )));
            }
        }
        Ok((params, rot))
    }

    /// The head: the (d, d) linear is first, the (num_labels, d) one last.
    fn head(
        &mut self,
        mods: &BTreeMap<String, (Option<&RawTensor>, Option<&RawTensor>)>,
        d: usize,
        nl: usize,
    ) -> Result<(Linear, Linear)> {
        let (mut first, mut last) = (None, None);
        for (path, (w, b)) in mods {
            let Some(w) = w else {
                return Err(Error::MissingTensor {
                    role: format!("head module `{path}` weight (only a bias is stored)"),
                    expected: format!("{path}.weight"),
                    shape: "(d, d) or (num_labels, d)".into(),
                });
            };
            let slot = if w.shape == [d, d] && (first.is_none() || nl != d) {
                &mut first
            } else if w.shape == [nl, d] {
                &mut last
            } else {
                return Err(Error::Shape {
                    name: w.name.clone(),
                    found: w.shape.clone(),
                    expected: format!("[{d}, {d}] (first head linear) or [{nl}, {d}] (last)"),
                    why: self.why(),
                });
            };
            if let Some((prev, _)) = slot.replace((*w, *b)) {
                let prev: &RawTensor = prev;
                return Err(Error::DuplicateRole {
                    role: "the same head linear".into(),
                    first: prev.name.clone(),
                    second: w.name.clone(),
                });
            }
        }
        let (w1, b1) = first.unzip();
        let (w2, b2) = last.unzip();
        let h1 = self.linear(
            w1,
            b1.flatten(),
            "head linear 1 (d -> d)",
            "classifier.0.weight",
            d,
            d,
        )?;
        let h2 = self.linear(
            w2,
            b2.flatten(),
            "head linear 2 (d -> num_labels)",
            "classifier.3.weight",
            nl,
            d,
        )?;
        Ok((h1, h2))
    }
}
