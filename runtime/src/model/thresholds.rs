//! `thresholds.json`: per-label decision thresholds, `{"label": {"p": .., "f1": .., "u": ..}}`.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The decision rule of one label: predicted when `mean >= p` and (if `u` is set) `std <= u`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    /// Minimum mean probability.
    pub p: f32,
    /// Optional upper bound on the label's std (an earlier release's format).
    pub u: Option<f32>,
    /// Validation F1 recorded with the threshold, if any (informational).
    pub f1: Option<f32>,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            p: 0.5,
            u: None,
            f1: None,
        }
    }
}

impl Threshold {
    /// Applies the rule.
    pub fn decide(&self, mean: f32, std: f32) -> bool {
        mean >= self.p && self.u.is_none_or(|u| std <= u)
    }
}

/// Reads `path` and returns one threshold per label, in id order.
/// Every label must appear once; unknown labels are an error.
pub fn load_thresholds(path: &Path, labels: &[String]) -> Result<Vec<Threshold>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e,
    })?;
    parse_thresholds(&text, labels).map_err(|reason| Error::BadJson {
        path: path.to_owned(),
        reason,
    })
}

/// Parses thresholds JSON text (see [`load_thresholds`]).
pub fn parse_thresholds(text: &str, labels: &[String]) -> Result<Vec<Threshold>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("the top level must be an object of label -> {\"p\": ...}")?;
    let mut out: Vec<Option<Threshold>> = vec![None; labels.len()];
    for (name, entry) in obj {
        let i = labels
            .iter()
            .position(|l| l == name)
            .ok_or_else(|| format!("label `{name}` is not one of the model's labels"))?;
        let num = |key: &str| -> Result<Option<f32>, String> {
            match entry.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_f64()
                    .map(|f| Some(f as f32))
                    .ok_or(format!("`{name}.{key}` must be a number")),
            }
        };
        let p = match entry {
            Value::Number(n) => n.as_f64().map(|f| f as f32),
            Value::Object(_) => num("p")?,
            _ => None,
        }
        .ok_or_else(|| format!("`{name}` needs a threshold `p` (e.g. {{\"p\": 0.5}})"))?;
        if !(0.0..=1.0).contains(&p) {
            return Err(format!("`{name}.p` = {p} must be in [0, 1]"));
        }
        let (u, f1) = if entry.is_object() {
            (num("u")?, num("f1")?)
        } else {
            (None, None)
        };
        if let Some(u) = u {
            if u.is_nan() || u < 0.0 {
                return Err(format!("`{name}.u` = {u} must be >= 0"));
            }
        }
        out[i] = Some(Threshold { p, u, f1 });
    }
    out.into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| format!("no threshold for label `{}`", labels[i])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn both_forms() {
        let t = parse_thresholds(
            r#"{"a": {"p": 0.3, "f1": 0.5}, "b": {"p": 0.6, "u": 0.1}}"#,
            &labels(),
        )
        .unwrap();
        assert_eq!(
            t[0],
            Threshold {
                p: 0.3,
                u: None,
                f1: Some(0.5)
            }
        );
        assert!(t[1].decide(0.7, 0.05));
        assert!(!t[1].decide(0.7, 0.2));
        assert!(!t[0].decide(0.29, 0.0));
    }

    #[test]
    fn errors() {
        assert!(parse_thresholds(r#"{"a": {"p": 0.3}}"#, &labels())
            .unwrap_err()
            .contains("`b`"));
        assert!(
            parse_thresholds(r#"{"a": {"p": 0.3}, "b": {"p": 2}}"#, &labels())
                .unwrap_err()
                .contains("[0, 1]")
        );
        assert!(
            parse_thresholds(r#"{"a": {"p": 0.3}, "zz": {"p": 0.1}}"#, &labels())
                .unwrap_err()
                .contains("zz")
        );
        assert!(parse_thresholds("[", &labels())
            .unwrap_err()
            .contains("invalid JSON"));
    }
}
