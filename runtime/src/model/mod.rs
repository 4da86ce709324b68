//! The model: config, weights resolved by role, thresholds and tokenizer of a model directory.

pub mod config;
pub mod params;
pub mod quantize;
pub mod resolve;
pub mod tensors;
pub mod thresholds;
pub mod tokenizer;

use crate::error::{Error, Result};
pub use config::Config;
pub use params::{FusedBf16, FusedI8, Layer, Linear, Param, Weights};
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

/// How the files of a model directory are read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Copy `model.safetensors` into process memory instead of reading the weights in
    /// place from a memory map. With a map (the default), replacing the file in place while
    /// a process uses it crashes that process (SIGBUS on the next page it reads): updates
    /// must be atomic renames. With a copy the process owns its weights, at the cost of
    /// the file's size in memory and the time to read it.
    pub copy_weights: bool,
    /// Count the NaN and infinite values of every tensor ([`ModelFiles::non_finite`]); a
    /// full pass over the weights.
    pub scan_non_finite: bool,
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
    /// Tensors holding NaN or infinite values, with their count (only filled when the
    /// load asked for the scan, [`FileOptions::scan_non_finite`]).
    pub non_finite: Vec<(String, usize)>,
}

/// What `load_weights` reads.
struct Loaded {
    config: Config,
    weights: Weights,
    placements: Vec<Placement>,
    thresholds: Vec<Threshold>,
    thresholds_file: Option<PathBuf>,
    non_finite: Vec<(String, usize)>,
}

impl ModelFiles {
    /// Config, weights, placements and thresholds of `dir`.
    fn load_weights(dir: &Path, fo: &FileOptions) -> Result<Loaded> {
        let mut config = Config::from_file(&dir.join("config.json"))?;
        let file = tensors::TensorFile::open(&dir.join("model.safetensors"), fo.copy_weights)?;
        let largest_dim0 = file
            .tensors
            .values()
            .filter_map(|t| t.shape.first().copied())
            .max()
            .unwrap_or(0);
        config.check_against_tensors(file.tensors.len(), largest_dim0)?;
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
        let non_finite = if fo.scan_non_finite {
            file.tensors
                .values()
                .filter_map(|t| {
                    let n = file.non_finite(t);
                    (n > 0).then(|| (t.name.clone(), n))
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Loaded {
            config,
            weights,
            placements,
            thresholds,
            thresholds_file,
            non_finite,
        })
    }

    /// Loads `dir` (`model.safetensors`, `config.json`, optional `thresholds.json` and
    /// `tokenizer.json`), weights read in place from a memory map.
    pub fn load(dir: &Path, tokenizer: &TokenizerChoice) -> Result<Self> {
        Self::load_with(dir, tokenizer, &FileOptions::default())
    }

    /// [`ModelFiles::load`] with [`FileOptions`].
    pub fn load_with(dir: &Path, tokenizer: &TokenizerChoice, fo: &FileOptions) -> Result<Self> {
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
            let model = Self::load_weights(dir, fo);
            let tok = tok
                .join()
                .unwrap_or_else(|_| Err(Error::Tokenizer("the tokenizer loader panicked".into())));
            (model, tok)
        });
        let Loaded {
            config,
            weights,
            placements,
            thresholds,
            thresholds_file,
            non_finite,
        } = model?;
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
            non_finite,
        })
    }
}
