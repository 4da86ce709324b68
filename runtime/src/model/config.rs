//! `config.json`: the model's hyper-parameters, in either key family of the spec
//! (the model's own keys or the Hugging Face generic names).

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// The GoEmotions label names in id order, used when a config has no `id2label`.
pub const GOEMOTIONS_LABELS: [&str; 28] = [
    "admiration",
    "amusement",
    "anger",
    "annoyance",
    "approval",
    "caring",
    "confusion",
    "curiosity",
    "desire",
    "disappointment",
    "disapproval",
    "disgust",
    "embarrassment",
    "excitement",
    "fear",
    "gratitude",
    "grief",
    "joy",
    "love",
    "nervousness",
    "optimism",
    "pride",
    "realization",
    "relief",
    "remorse",
    "sadness",
    "surprise",
    "neutral",
];

/// Hyper-parameters of an EmCoder model.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Model width `d`.
    pub d_model: usize,
    /// Attention heads; `head_dim = d_model / n_head`.
    pub n_head: usize,
    /// Encoder layers.
    pub n_layers: usize,
    /// SwiGLU hidden size.
    pub d_ffn: usize,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// MC-dropout probability at every site.
    pub dropout: f32,
    /// Output labels (28 for EmCoder).
    pub num_labels: usize,
    /// Label names in id order.
    pub labels: Vec<String>,
    /// RoPE base, used only when the checkpoint stores no `freqs`.
    pub rope_theta: f32,
    /// RMSNorm epsilon (default: f32 machine epsilon, like `nn.RMSNorm(eps=None)`).
    pub norm_eps: f32,
    /// Rotary dimension from the config, if it states one.
    pub rot_dim: Option<usize>,
    /// Which key family the file used ("emcoder" or "huggingface"), for `inspect`.
    pub key_family: &'static str,
    /// The layout details the spec leaves open (see [`Layout`]).
    pub layout: Layout,
}

/// The details of the architecture that the published checkpoint does not document and that
/// would not fail to load if guessed wrong (they give other numbers instead). Each is a
/// `config.json` key; the defaults are the spec's reading, and `reference/conformance.py`
/// finds which values a checkpoint needs (docs/conformance.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `qkv_order`: the order of the q, k and v row blocks in a fused (3d, d) projection
    /// (`"qkv"`, the default, or any permutation such as `"kqv"`). Split tensors are placed
    /// by their names.
    pub qkv_order: [Proj; 3],
    /// `gate_up_order`: `"gate_up"` (default: a fused w12 holds the gate rows first; split
    /// tensors are what their names say) or `"up_gate"` (fused: up rows first; split: the
    /// tensor named gate / w1 is the up projection and the one named up / w3 the gate).
    pub up_first: bool,
    /// `rotary_pairs`: `"interleaved"` (default; pairs (2i, 2i+1), GPT-J /
    /// rotary-embedding-torch) or `"half"` (pairs (i, i + rot_dim/2), GPT-NeoX `rotate_half`).
    pub rotary_half: bool,
    /// `rotary_channels`: `"first"` (default; the first rot_dim channels of each head rotate)
    /// or `"last"` (the last rot_dim). Only matters when rot_dim < head_dim.
    pub rotary_last: bool,
    /// `head_activation`: `"gelu"` (default, the exact erf form) or `"gelu_tanh"` (the tanh
    /// approximation; also spelled `gelu_pytorch_tanh`, `gelu_new`).
    pub gelu_tanh: bool,
}

/// One of the three attention projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proj {
    /// Query.
    Q,
    /// Key.
    K,
    /// Value.
    V,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            qkv_order: [Proj::Q, Proj::K, Proj::V],
            up_first: false,
            rotary_half: false,
            rotary_last: false,
            gelu_tanh: false,
        }
    }
}

impl Layout {
    /// The `config.json` keys and values of this layout, for `inspect` and reports.
    pub fn describe(&self) -> String {
        let order: String = self
            .qkv_order
            .iter()
            .map(|p| match p {
                Proj::Q => 'q',
                Proj::K => 'k',
                Proj::V => 'v',
            })
            .collect();
        format!(
            "qkv_order {order}  gate_up_order {}  rotary_pairs {}  rotary_channels {}  head_activation {}",
            if self.up_first { "up_gate" } else { "gate_up" },
            if self.rotary_half { "half" } else { "interleaved" },
            if self.rotary_last { "last" } else { "first" },
            if self.gelu_tanh { "gelu_tanh" } else { "gelu" },
        )
    }

    /// True when every detail is the default (the spec's reading).
    pub fn is_default(&self) -> bool {
        *self == Layout::default()
    }

    fn from_obj(obj: &Map<String, Value>) -> Result<Self, String> {
        let mut l = Layout::default();
        let text = |key: &str| -> Result<Option<&str>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(v) => Err(format!("`{key}` must be a string, found {v}")),
            }
        };
        if let Some(s) = text("qkv_order")? {
            let mut order = Vec::new();
            for c in s.chars() {
                order.push(match c.to_ascii_lowercase() {
                    'q' => Proj::Q,
                    'k' => Proj::K,
                    'v' => Proj::V,
                    _ => {
                        return Err(format!(
                            "`qkv_order` {s:?}: use a permutation of \"qkv\" such as \"kqv\""
                        ))
                    }
                });
            }
            let all = [Proj::Q, Proj::K, Proj::V];
            if order.len() != 3 || !all.iter().all(|p| order.contains(p)) {
                return Err(format!(
                    "`qkv_order` {s:?}: use a permutation of \"qkv\" such as \"kqv\""
                ));
            }
            l.qkv_order = [order[0], order[1], order[2]];
        }
        let choice = |key: &str, no: &[&str], yes: &[&str]| -> Result<Option<bool>, String> {
            match text(key)? {
                None => Ok(None),
                Some(s) if no.contains(&s) => Ok(Some(false)),
                Some(s) if yes.contains(&s) => Ok(Some(true)),
                Some(s) => Err(format!(
                    "`{key}` {s:?}: use one of {}",
                    no.iter()
                        .chain(yes)
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        };
        if let Some(b) = choice("gate_up_order", &["gate_up"], &["up_gate"])? {
            l.up_first = b;
        }
        if let Some(b) = choice("rotary_pairs", &["interleaved"], &["half"])? {
            l.rotary_half = b;
        }
        if let Some(b) = choice("rotary_channels", &["first"], &["last"])? {
            l.rotary_last = b;
        }
        if let Some(b) = choice(
            "head_activation",
            &["gelu"],
            &["gelu_tanh", "gelu_pytorch_tanh", "gelu_new"],
        )? {
            l.gelu_tanh = b;
        }
        Ok(l)
    }
}

/// (canonical key, Hugging Face alias) pairs.
const ALIASES: [(&str, &str); 7] = [
    ("d_model", "hidden_size"),
    ("n_head", "num_attention_heads"),
    ("n_layers", "num_hidden_layers"),
    ("d_ffn", "intermediate_size"),
    ("dropout", "hidden_dropout_prob"),
    ("norm_eps", "rms_norm_eps"),
    ("rot_dim", "rotary_dim"),
];

impl Config {
    /// Reads and validates `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_owned(),
                hint: "a model directory needs config.json (d_model, n_head, n_layers, d_ffn, vocab_size, dropout, ...)".into(),
            },
            _ => Error::Io { path: path.to_owned(), source: e },
        })?;
        Self::from_json_str(&text).map_err(|e| match e {
            Error::BadJson { reason, .. } => Error::BadJson {
                path: path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Parses and validates a config from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadJson {
            path: "config.json".into(),
            reason,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the top level must be a JSON object".into()))?;
        let family = if obj.contains_key("d_model") || !obj.contains_key("hidden_size") {
            "emcoder"
        } else {
            "huggingface"
        };
        let get = |key: &str| -> Result<Option<&Value>> { lookup(obj, key) };
        let int = |key: &str| -> Result<Option<usize>> {
            match get(key)? {
                None => Ok(None),
                Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                    bad(format!("`{key}` must be a non-negative integer, found {v}"))
                }),
            }
        };
        let float = |key: &str| -> Result<Option<f32>> {
            match get(key)? {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(|x| Some(x as f32))
                    .ok_or_else(|| bad(format!("`{key}` must be a number, found {v}"))),
            }
        };
        let required = |key: &str| -> Result<usize> {
            int(key)?.ok_or_else(|| bad(format!("missing `{key}` (or its Hugging Face alias)")))
        };

        let d_model = required("d_model")?;
        let n_head = required("n_head")?;
        let n_layers = required("n_layers")?;
        let d_ffn = required("d_ffn")?;
        let vocab_size = required("vocab_size")?;
        let dropout = float("dropout")?.ok_or_else(|| {
            bad(
                "missing `dropout` (or `hidden_dropout_prob`): MC sampling needs the dropout rate"
                    .into(),
            )
        })?;
        let num_labels = int("num_labels")?;
        let labels = parse_labels(obj, num_labels).map_err(bad)?;
        let cfg = Config {
            d_model,
            n_head,
            n_layers,
            d_ffn,
            vocab_size,
            dropout,
            num_labels: num_labels.unwrap_or(labels.len()),
            labels,
            rope_theta: float("rope_theta")?.unwrap_or(10_000.0),
            norm_eps: float("norm_eps")?.unwrap_or(f32::EPSILON),
            rot_dim: int("rot_dim")?,
            key_family: family,
            layout: Layout::from_obj(obj).map_err(bad)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values that size allocations against the tensors actually in the file,
    /// before anything proportional to them is allocated (a tiny folder must not make the
    /// loader allocate gigabytes): `n_layers` against the number of tensors (a layer has at
    /// least 6), `num_labels` against the largest first dimension (the head's last weight
    /// has `num_labels` rows). Then names the labels when the config gave no `id2label`.
    /// (`vocab_size`, `d_model` and `d_ffn` are checked against the shapes by the resolver
    /// before any buffer of their size exists.)
    pub fn check_against_tensors(&mut self, n_tensors: usize, largest_dim0: usize) -> Result<()> {
        if self.n_layers.saturating_mul(6) > n_tensors {
            return Err(Error::Config(format!(
                "config says n_layers = {} but model.safetensors holds only {n_tensors} tensors (each layer has at least 6): fix n_layers (or num_hidden_layers)",
                self.n_layers
            )));
        }
        if self.num_labels > largest_dim0 {
            return Err(Error::Config(format!(
                "config says num_labels = {} but no tensor of model.safetensors has that many rows (the head's last weight is (num_labels, d_model)): fix num_labels",
                self.num_labels
            )));
        }
        if self.labels.len() != self.num_labels {
            self.labels = (0..self.num_labels).map(|i| format!("LABEL_{i}")).collect();
        }
        Ok(())
    }

    /// `d_model / n_head`.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_head
    }

    fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::Config(m));
        for (name, v) in [
            ("d_model", self.d_model),
            ("n_head", self.n_head),
            ("n_layers", self.n_layers),
            ("d_ffn", self.d_ffn),
            ("vocab_size", self.vocab_size),
            ("num_labels", self.num_labels),
        ] {
            if v == 0 {
                return err(format!("`{name}` must be positive"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_head) {
            return err(format!(
                "d_model {} is not divisible by n_head {}",
                self.d_model, self.n_head
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return err(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return err(format!(
                "norm_eps {} must be a finite positive number (PyTorch's default is {:e})",
                self.norm_eps,
                f32::EPSILON
            ));
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return err(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if let Some(r) = self.rot_dim {
            if r == 0 || !r.is_multiple_of(2) || r > self.head_dim() {
                return err(format!(
                    "rot_dim {r} must be even and in 2..={}",
                    self.head_dim()
                ));
            }
        }
        Ok(())
    }
}

/// Looks `key` up under its canonical name and its alias; both present and different is an error.
fn lookup<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Value>> {
    let alias = ALIASES.iter().find(|(k, _)| *k == key).map(|(_, a)| *a);
    let a = obj.get(key);
    let b = alias.and_then(|al| obj.get(al));
    match (a, b) {
        (Some(x), Some(y)) if x != y => Err(Error::Config(format!(
            "`{key}` = {x} disagrees with `{}` = {y}",
            alias.unwrap_or_default()
        ))),
        (Some(x), _) => Ok(Some(x)),
        (None, y) => Ok(y),
    }
}

/// Label names from `id2label` (string keys "0".."n-1"), cross-checked with `num_labels`
/// and `label2id`; without `id2label`, the GoEmotions names.
fn parse_labels(
    obj: &Map<String, Value>,
    num_labels: Option<usize>,
) -> Result<Vec<String>, String> {
    let labels: Vec<String> = match obj.get("id2label") {
        Some(Value::Object(m)) => {
            let n = m.len();
            let mut out = vec![String::new(); n];
            for (k, v) in m {
                let i: usize = k
                    .parse()
                    .map_err(|_| format!("id2label key `{k}` is not an integer"))?;
                if i >= n {
                    return Err(format!(
                        "id2label has {n} entries but a key `{k}`: ids must be 0..{}",
                        n - 1
                    ));
                }
                out[i] = v
                    .as_str()
                    .ok_or_else(|| format!("id2label[{k}] must be a string"))?
                    .to_owned();
            }
            out
        }
        Some(other) => return Err(format!("id2label must be an object, found {other}")),
        None => {
            // Generic names for another count are made once the tensors confirm the count
            // (`Config::check_against_tensors`): a config alone must not size allocations.
            let n = num_labels.unwrap_or(GOEMOTIONS_LABELS.len());
            if n == GOEMOTIONS_LABELS.len() {
                GOEMOTIONS_LABELS.iter().map(|s| s.to_string()).collect()
            } else {
                return Ok(Vec::new());
            }
        }
    };
    if let Some(n) = num_labels {
        if n != labels.len() {
            return Err(format!(
                "num_labels = {n} but id2label has {} entries",
                labels.len()
            ));
        }
    }
    if let Some(Value::Object(m)) = obj.get("label2id") {
        for (name, id) in m {
            let ok = id
                .as_u64()
                .map(|i| labels.get(i as usize) == Some(name))
                .unwrap_or(false);
            if !ok {
                return Err(format!("label2id[{name}] = {id} disagrees with id2label"));
            }
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"d_model": 32, "n_head": 4, "n_layers": 2, "d_ffn": 88, "vocab_size": 512, "dropout": 0.1}"#;

    #[test]
    fn both_key_families() {
        let a = Config::from_json_str(BASE).unwrap();
        let b = Config::from_json_str(
            r#"{"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2,
                "intermediate_size": 88, "vocab_size": 512, "hidden_dropout_prob": 0.1}"#,
        )
        .unwrap();
        assert_eq!(a.d_model, b.d_model);
        assert_eq!(a.labels, b.labels);
        assert_eq!(b.key_family, "huggingface");
        assert_eq!(a.norm_eps, f32::EPSILON);
        assert_eq!(a.labels[27], "neutral");
        assert!(a.layout.is_default());
    }

    #[test]
    fn layout_keys() {
        let c = Config::from_json_str(&BASE.replace(
            "}",
            r#", "qkv_order": "kqv", "gate_up_order": "up_gate", "rotary_pairs": "half",
                "rotary_channels": "last", "head_activation": "gelu_pytorch_tanh"}"#,
        ))
        .unwrap();
        let l = c.layout;
        assert_eq!(l.qkv_order, [Proj::K, Proj::Q, Proj::V]);
        assert!(l.up_first && l.rotary_half && l.rotary_last && l.gelu_tanh);
        assert_eq!(
            l.describe(),
            "qkv_order kqv  gate_up_order up_gate  rotary_pairs half  rotary_channels last  head_activation gelu_tanh"
        );
        for (bad, what) in [
            (r#""qkv_order": "qqv""#, "permutation"),
            (r#""qkv_order": "qk""#, "permutation"),
            (r#""gate_up_order": "gu""#, "gate_up"),
            (r#""rotary_pairs": 2"#, "string"),
            (r#""head_activation": "relu""#, "gelu_tanh"),
        ] {
            let e = Config::from_json_str(&BASE.replace("}", &format!(", {bad}}}")))
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = Config::from_json_str("{not json").unwrap_err().to_string();
        assert!(e.contains("invalid JSON"), "{e}");
        let e = Config::from_json_str(r#"{"d_model": 32}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("n_head"), "{e}");
        let e = Config::from_json_str(&BASE.replace("\"n_head\": 4", "\"n_head\": 5"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("divisible"), "{e}");
        let e = Config::from_json_str(&BASE.replace("0.1}", "1.5}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dropout"), "{e}");
        let e = Config::from_json_str(&BASE.replace("}", r#", "hidden_size": 64}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("disagrees"), "{e}");
        let e = Config::from_json_str(
            &BASE.replace("}", r#", "num_labels": 3, "id2label": {"0": "a"}}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("num_labels"), "{e}");
    }
}
