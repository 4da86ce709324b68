//! # emcoder
//!
//! A native runtime for EmCoder, a 28-label emotion classifier whose uncertainty comes from
//! Monte Carlo dropout. Layers of the crate follow the data:
//! [`api`] (the [`Model`]: load, predict, sample, trace) with its [`options`] ->
//! [`model`] (config, weights resolved by role, thresholds, tokenizer, int8 files) ->
//! [`engine`] (packed batches, forward pass with MC samples folded into the rows, statistics)
//! -> `emcoder-kernels` (pure compute kernels); [`device`] and `cuda` (feature `cuda`) put
//! the forward on a GPU, [`error`] and [`log`] serve them all; [`report`] is the JSON of
//! predictions that the CLI and the service print.
//!
//! ```no_run
//! let model = emcoder::Model::load("models/emcoder-mini".as_ref(), &Default::default())?;
//! let out = model.predict(&["I am so happy you are here!"], &Default::default())?;
//! for (label, s) in model.labels().iter().zip(&out[0].labels) {
//!     println!("{label}: {:.3} ± {:.3}", s.mean, s.std);
//! }
//! # Ok::<(), emcoder::Error>(())
//! ```

pub mod api;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod engine;
pub mod error;
pub mod log;
pub mod model;
pub mod options;
pub mod report;

pub use api::Model;
pub use device::{Device, CUDA_BUILT};
pub use engine::forward::Trace;
pub use engine::stats::LabelStats;
pub use engine::stop::Stop;
pub use error::{Error, Result};
pub use model::{Config, FileOptions, ModelFiles, Placement, Threshold, TokenizerChoice};
pub use options::{
    LoadOptions, Precision, PredictOptions, TextPrediction, ADAPTIVE_BLOCK, DEFAULT_MAX_TOKENS,
    DEFAULT_SAMPLES, DEFAULT_SEED,
};

pub use emcoder_kernels::cpu::{caps, CpuCaps, Isa};
