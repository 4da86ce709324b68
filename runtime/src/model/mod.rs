//! The model: config, weights resolved by role, thresholds and tokenizer of a model directory.

pub mod config;
pub mod params;
pub mod resolve;
pub mod tensors;
pub mod thresholds;
pub mod tokenizer;

use crate::error::{Error, Result};
pub use config::Config;
pub use params::{FusedBf16, Layer, Linear, Param, Weights};
pub use resolve::Placement;
use std::path::{Path, PathBuf};
pub use thresholds::Threshold;
pub use tokenizer::{TextTokenizer, TokenizerSource};

/// Which tokenizer to load with a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum TokenizerChoice {
    /// `<dir>/tokenizer.json`, else the built-in ModernBERT tokenizer.
    #[default]
    Auto,
    /// This file.
    Path(PathBuf),
    /// None: the model predicts from token ids only.
    None,
}

/// A loaded model directory. Immutable after load; share it across threads.
pub struct ModelFiles {
    /// Directory it was loaded from.
    pub dir: PathBuf,
    /// Hyper-parameters.
    pub config: Config,
    /// Weights by role.
    pub weights: Weights,
    /// What each tensor of the file was resolved to.
    pub placements: Vec<Placement>,
    /// One threshold per label (0.5 each without a thresholds.json).
    pub thresholds: Vec<Threshold>,
    /// Whether thresholds came from a file.
    pub thresholds_file: Option<PathBuf>,
    /// The tokenizer, unless loaded without one.
    pub tokenizer: Option<TextTokenizer>,
}

impl ModelFiles {
    /// Config, weights, placements and thresholds of `dir`.
    #[allow(clippy::type_complexity)]
    fn load_weights(
        dir: &Path,
    ) -> Result<(
        Config,
        Weights,
        Vec<Placement>,
        Vec<Threshold>,
        Option<PathBuf>,
    )> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let file = tensors::TensorFile::open(&dir.join("model.safetensors"))?;
        let (weights, placements) = resolve::resolve(&file, &config)?;
        let tpath = dir.join("thresholds.json");
        let (thresholds, thresholds_file) = if tpath.exists() {
            (
                thresholds::load_thresholds(&tpath, &config.labels)?,
                Some(tpath),
            )
        } else {
            (vec![Threshold::default(); config.num_labels], None)
        };
        Ok((config, weights, placements, thresholds, thresholds_file))
    }

    /// Loads `dir` (`model.safetensors`, `config.json`, optional `thresholds.json` and
    /// `tokenizer.json`).
    pub fn load(dir: &Path, tokenizer: &TokenizerChoice) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_owned(),
                hint: "the model directory does not exist (it must hold model.safetensors and config.json)".into(),
            });
        }
        // The tokenizer (a 3.5 MB JSON for ModernBERT) parses on its own thread while the
        // weights are mapped and resolved: load time is the longer of the two, not the sum.
        let load_tokenizer = || -> Result<Option<TextTokenizer>> {
            Ok(match tokenizer {
                TokenizerChoice::None => None,
                TokenizerChoice::Path(p) => Some(TextTokenizer::from_file(p)?),
                TokenizerChoice::Auto => {
                    let p = dir.join("tokenizer.json");
                    Some(if p.exists() {
                        TextTokenizer::from_file(&p)?
                    } else {
                        TextTokenizer::builtin()?
                    })
                }
            })
        };
        let (model, tokenizer) = std::thread::scope(|s| {
            let tok = s.spawn(load_tokenizer);
            let model = Self::load_weights(dir);
            let tok = tok
                .join()
                .unwrap_or_else(|_| Err(Error::Tokenizer("the tokenizer loader panicked".into())));
            (model, tok)
        });
        let (config, weights, placements, thresholds, thresholds_file) = model?;
        let tokenizer = tokenizer?;
        if let Some(t) = &tokenizer {
            if t.vocab_size() > config.vocab_size {
                return Err(Error::Config(format!(
                    "the tokenizer ({}) has {} ids but the model's embedding has vocab_size {}: use the tokenizer the model was trained with",
                    t.source,
                    t.vocab_size(),
                    config.vocab_size
                )));
            }
        }
        Ok(ModelFiles {
            dir: dir.to_owned(),
            config,
            weights,
            placements,
            thresholds,
            thresholds_file,
            tokenizer,
        })
    }
}
