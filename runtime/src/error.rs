//! The one error type of the runtime. Every variant says what to fix.

use std::path::PathBuf;

/// Errors of loading a model or running it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A required file of the model directory is missing.
    #[error("{path} is missing: {hint}")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// What the user can do.
        hint: String,
    },
    /// The safetensors file is truncated, has a corrupt header or bad offsets.
    #[error("{path} is not a valid safetensors file: {reason}")]
    BadSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSON file (config, thresholds) is not valid or lacks a key.
    #[error("{path}: {reason}")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration is inconsistent (with itself or with the weights).
    #[error("invalid config: {0}")]
    Config(String),
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected} ({why})")]
    Shape {
        /// Tensor name in the file.
        name: String,
        /// Its shape.
        found: Vec<usize>,
        /// The shape wanted, in words.
        expected: String,
        /// Which config values imply it.
        why: String,
    },
    /// A tensor is stored in an unsupported dtype.
    #[error("tensor `{name}` has dtype {dtype}; supported: F32, F16, BF16, and I8 (with an F32 `{name}_scale` of one scale per row, as `emcoder quantize` writes) for the token embedding and the encoder layers' linear weights only")]
    Dtype {
        /// Tensor name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("missing tensor for {role}: expected a name like `{expected}` with shape {shape}")]
    MissingTensor {
        /// The role, e.g. "layer 3 attention output".
        role: String,
        /// A canonical name for it.
        expected: String,
        /// The shape it must have.
        shape: String,
    },
    /// Tensors the loader could not place in the model.
    #[error("cannot place tensor(s) {names:?}: names not recognized for any role (see docs/models.md: tensor layout)")]
    UnknownTensors {
        /// The unplaced names.
        names: Vec<String>,
    },
    /// Two tensors claim the same role.
    #[error("tensors `{first}` and `{second}` both resolve to {role}")]
    DuplicateRole {
        /// The role.
        role: String,
        /// The first name.
        first: String,
        /// The second name.
        second: String,
    },
    /// The tokenizer could not be loaded (a text it cannot encode is [`Error::Input`]).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An input (text, option) is not acceptable.
    #[error("invalid input: {0}")]
    Input(String),
    /// Memory could not be obtained (the message says how much, for what, and what to
    /// change); the model stays usable.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The call was cancelled or ran past its deadline (the message says which); what it
    /// used is freed and the model stays usable.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A compute device (GPU) is missing, not supported or failed (the message names the
    /// device and what to install or change); the CPU keeps working.
    #[error("device: {0}")]
    Device(String),
}

/// Result with the runtime's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
