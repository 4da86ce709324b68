//! What a load and a prediction take and give: precisions, load and predict options, the
//! result of one text, and the defaults.

use crate::device::Device;
use crate::engine::stats::LabelStats;
use crate::engine::stop::Stop;
use crate::error::{Error, Result};
use crate::model::TokenizerChoice;
use emcoder_kernels::cpu::Isa;

/// The default seed of MC sampling (any fixed value; results are a pure function of it).
pub const DEFAULT_SEED: u64 = 42;
/// The default number of MC samples, as in the model card.
pub const DEFAULT_SAMPLES: u32 = 50;
/// The default token limit per text.
pub const DEFAULT_MAX_TOKENS: usize = 4096;

/// Precision of the weights and matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 weights (used in place from the file when stored as F32) and f32 products.
    #[default]
    F32,
    /// Weights packed to bf16 at load, bf16 products with f32 accumulation (AVX512_BF16
    /// where available); norms, softmax, pooling and statistics stay f32.
    Bf16,
    /// The encoder's linear weights int8 per output channel and the token embedding int8 per
    /// row (quantized at load, or read from an int8 model of `emcoder quantize`),
    /// activations quantized per row, exact i32 sums (VNNI, AMX-INT8, sdot where
    /// available); the head, norms, attention, pooling and statistics stay f32. CPU only.
    Int8,
}

impl Precision {
    /// The name `--precision` takes.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            other => Err(Error::Input(format!(
                "unknown precision `{other}`: use f32, bf16 or int8"
            ))),
        }
    }
}

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Tokenizer: `<dir>/tokenizer.json` or the built-in one (default), a file, or none.
    pub tokenizer: TokenizerChoice,
    /// Threads of the model's pool; 0 = all cores.
    pub n_threads: usize,
    /// Longest accepted text in tokens (with `[CLS]` and `[SEP]`).
    pub max_tokens: usize,
    /// Rows (tokens x samples) processed at once; bounds scratch memory, never changes results.
    pub max_rows: usize,
    /// Precision of weights and products.
    pub precision: Precision,
    /// Instruction-set level of every kernel; `None`: `EMCODER_ISA` when set (validated),
    /// else the best this CPU runs. A level this CPU cannot run is a load error.
    pub isa: Option<Isa>,
    /// Scratch memory (bytes) the model's running calls may reserve together, idle arenas
    /// included: a call reserves the most its texts can need ([`Model::call_scratch`]) and
    /// waits (or fails fast, per call) while the budget is taken. 0: the default, twice
    /// [`Model::scratch_bound`] (one worst-case call and as much again for others).
    pub memory_budget: usize,
    /// Copy the weights into process memory instead of mapping the file (see
    /// [`FileOptions::copy_weights`]: a mapped file replaced in place crashes the process).
    pub copy_weights: bool,
    /// Refuse weights holding NaN or infinite values (a pass over the weights at load;
    /// `emcoder inspect` reports them either way).
    pub refuse_non_finite: bool,
    /// Where the forward runs: the CPU (default), or a GPU with the `cuda` feature (the
    /// weights are uploaded at load; tokenizing and the statistics stay on the CPU).
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            tokenizer: TokenizerChoice::Auto,
            n_threads: 0,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_rows: 16384,
            precision: Precision::F32,
            isa: None,
            memory_budget: 0,
            copy_weights: false,
            refuse_non_finite: false,
            device: Device::Cpu,
        }
    }
}

/// How to predict.
#[derive(Clone, Debug)]
pub struct PredictOptions {
    /// MC samples per text (>= 1); ignored when `deterministic`.
    pub samples: u32,
    /// Seed of the dropout masks.
    pub seed: u64,
    /// One pass with dropout off; predictions then also carry the logits.
    pub deterministic: bool,
    /// Truncate texts over the token limit instead of failing.
    pub truncate: bool,
    /// Adaptive sampling: draw samples in blocks of [`ADAPTIVE_BLOCK`] and stop a text once
    /// every label's mean probability has a standard error (std / sqrt(n)) below this,
    /// never drawing more than `samples`. `None`: always `samples`.
    pub tolerance: Option<f32>,
    /// Sampling that stops on decisions: draw samples in blocks of [`ADAPTIVE_BLOCK`] and stop
    /// a text once every label's thresholded decision is settled at this error rate (per
    /// label, a two-sided z-test of the mean against the threshold, and of the std against
    /// the `u` bound where the model has one, Bonferroni-corrected over the blocks that could
    /// be drawn), never drawing more than `samples`. The statistics are those of the samples
    /// drawn. In (0, 1); `None`: off. Exclusive with `tolerance`. Both rules are checked even
    /// for a `deterministic` pass, which ignores them.
    pub decision_error: Option<f32>,
    /// Cancellation flag and deadline, checked before every layer: a stopped call returns
    /// [`Error::Cancelled`] within about one layer's work. Default: never.
    pub stop: Stop,
    /// When the model's memory budget is taken by running calls: wait for memory (true,
    /// the default; `stop` still applies) or fail at once with [`Error::OutOfMemory`].
    pub wait_for_memory: bool,
}

/// Samples per block of adaptive sampling (and the fewest it draws).
pub const ADAPTIVE_BLOCK: u32 = 10;

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            samples: DEFAULT_SAMPLES,
            seed: DEFAULT_SEED,
            deterministic: false,
            truncate: false,
            tolerance: None,
            decision_error: None,
            stop: Stop::never(),
            wait_for_memory: true,
        }
    }
}

/// The result for one text.
#[derive(Clone, Debug, PartialEq)]
pub struct TextPrediction {
    /// Tokens including `[CLS]` and `[SEP]`.
    pub n_tokens: usize,
    /// Samples drawn (1 in deterministic mode).
    pub samples: u32,
    /// One entry per label, in id order.
    pub labels: Vec<LabelStats>,
    /// The logits of the deterministic pass (deterministic mode only).
    pub logits: Option<Vec<f32>>,
}
