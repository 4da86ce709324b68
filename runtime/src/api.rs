//! The public API: [`Model`] loads a model directory with its thread pool and predicts,
//! samples or traces texts (the options and results are in [`crate::options`]).

#[cfg(feature = "cuda")]
use crate::cuda;
use crate::device::Device;
use crate::engine;
use crate::engine::arena::Arenas;
use crate::engine::forward::{Dropout, Forward, Trace};
use crate::engine::stop::Stop;
use crate::engine::workers::Workers;
use crate::error::{Error, Result};
use crate::log;
use crate::model::{Config, FileOptions, ModelFiles};
use crate::options::*;
use emcoder_kernels::cpu::{caps, Isa};
use std::path::Path;

/// A loaded model with its thread pool. Immutable; `&Model` can be shared across threads.
pub struct Model {
    files: ModelFiles,
    pool: Workers,
    opts: LoadOptions,
    isa: Isa,
    /// The kernel of the int8 products at that level.
    i8k: emcoder_kernels::gemm_i8::Kernel,
    /// Scratch arenas under the memory budget (one per running call; one kept idle).
    arenas: Arenas,
    /// The weights on the GPU when the model runs there.
    #[cfg(feature = "cuda")]
    gpu: Option<cuda::GpuModel>,
}

impl Model {
    /// Loads a model directory.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let fo = FileOptions {
            copy_weights: opts.copy_weights,
            scan_non_finite: opts.refuse_non_finite,
        };
        let files = ModelFiles::load_with(dir, &opts.tokenizer, &fo)?;
        if let Some((name, n)) = files.non_finite.first() {
            return Err(Error::BadSafetensors {
                path: dir.join("model.safetensors"),
                reason: format!(
                    "{} tensor(s) hold NaN or infinite values ({name}: {n} of them); the model would predict NaN: re-export the weights (or load without refuse_non_finite to use them anyway)",
                    files.non_finite.len()
                ),
            });
        }
        Self::from_files(files, opts)
    }

    /// Wraps already loaded files with a thread pool.
    pub fn from_files(mut files: ModelFiles, opts: &LoadOptions) -> Result<Self> {
        if opts.max_tokens < 2 {
            return Err(Error::Input(format!(
                "max_tokens {} is too small: [CLS] and [SEP] need 2",
                opts.max_tokens
            )));
        }
        let threads = if opts.n_threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            opts.n_threads
        };
        #[cfg(feature = "cuda")]
        let gpu = match opts.device {
            Device::Cpu => None,
            Device::Cuda(n) => {
                let elem = match opts.precision {
                    Precision::F32 => engine::gpu::Elem::F32,
                    Precision::Bf16 => engine::gpu::Elem::Bf16,
                    Precision::Int8 => {
                        return Err(Error::Device(format!(
                            "{}: int8 precision runs on the CPU only; use f32 or bf16 on the GPU",
                            opts.device
                        )))
                    }
                };
                let rows = opts.max_rows.max(opts.max_tokens);
                let g = cuda::GpuModel::load(&files, n, elem, rows)?;
                log::log(log::Level::Info, || {
                    format!(
                        "model {}: forward on {:?}, {:?} products",
                        files.dir.display(),
                        g.device(),
                        elem
                    )
                });
                Some(g)
            }
        };
        #[cfg(not(feature = "cuda"))]
        if let Device::Cuda(_) = opts.device {
            return Err(Error::Device(format!(
                "{}: this build of emcoder has no CUDA backend; build it with `--features cuda` (cargo) to use NVIDIA GPUs, or use the CPU device",
                opts.device
            )));
        }
        let on_gpu = opts.device != Device::Cpu;
        let pool = Workers::start(threads)?;
        let mut isa = choose_isa(opts.isa)?;
        let rows = opts.max_rows.max(opts.max_tokens);
        let budget = match opts.memory_budget {
            0 => engine::forward::scratch_bound(&files.config, rows).saturating_mul(2),
            b => b,
        };
        // (On a GPU the weights were converted for it; the CPU copy stays as loaded.)
        if opts.precision == Precision::Bf16 && !on_gpu {
            // AMX needs the OS's permission for the tile state, asked for only now; without
            // it the bf16 products run on AVX512_BF16.
            if isa == Isa::Amx && !emcoder_kernels::cpu::request_amx() {
                isa = Isa::Avx512Bf16;
            }
            pool.install(|| -> Result<()> {
                let w = &mut files.weights;
                for l in w.layers.iter_mut() {
                    l.pack_bf16(isa)?;
                }
                w.head1.pack_bf16(isa)?;
                w.head2.pack_bf16(isa)
            })??;
        }
        let mut i8k = emcoder_kernels::gemm_i8::Kernel::for_isa(isa);
        if opts.precision == Precision::Int8 && !on_gpu {
            // As for bf16: the tile state is asked for only now; refused, the products run
            // on the level below.
            if i8k == emcoder_kernels::gemm_i8::Kernel::Amx && !emcoder_kernels::cpu::request_amx()
            {
                i8k = emcoder_kernels::gemm_i8::Kernel::for_isa(Isa::Avx512Bf16);
            }
            let file_backed = !opts.copy_weights;
            pool.install(|| files.weights.pack_i8(file_backed, i8k))??;
        }
        log::log(log::Level::Info, || {
            let kernels: Vec<String> = emcoder_kernels::variants(isa)
                .iter()
                .map(|(f, v)| format!("{f}: {v}"))
                .collect();
            format!(
                "model {}: {:?} precision, {threads} worker threads, cpu {}, kernels at level {isa} ({}; int8 products: {i8k}); scratch memory budget {:.1} MB (one call's bound {:.1} MB)",
                files.dir.display(),
                opts.precision,
                caps().model,
                kernels.join("; "),
                budget as f64 / 1e6,
                engine::forward::scratch_bound(&files.config, rows) as f64 / 1e6
            )
        });
        Ok(Model {
            files,
            pool,
            opts: opts.clone(),
            isa,
            i8k,
            arenas: Arenas::new(budget),
            #[cfg(feature = "cuda")]
            gpu,
        })
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.files.config
    }

    /// Label names in id order.
    pub fn labels(&self) -> &[String] {
        &self.files.config.labels
    }

    /// Everything that was loaded (placements, thresholds, tokenizer source).
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// Precision of weights and products.
    pub fn precision(&self) -> Precision {
        self.opts.precision
    }

    /// The kernel the int8 products run (int8 precision), chosen from the level.
    pub fn int8_kernel(&self) -> emcoder_kernels::gemm_i8::Kernel {
        self.i8k
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Longest accepted text in tokens, `[CLS]` and `[SEP]` included (`LoadOptions::max_tokens`).
    pub fn max_tokens(&self) -> usize {
        self.opts.max_tokens
    }

    /// Where the forward runs.
    pub fn device(&self) -> Device {
        self.opts.device
    }

    /// The GPU's name, compute capability and memory, when the model runs on one.
    pub fn device_description(&self) -> Option<String> {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            return Some(format!("{:?}", g.device()));
        }
        None
    }

    /// The instruction-set level every kernel of this model runs at
    /// ([`Isa::kernels`] names the variant of each kernel family).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Tokenizes one text (`[CLS] ... [SEP]`), applying the token limit.
    pub fn tokenize(&self, text: &str, truncate: bool) -> Result<Vec<u32>> {
        let tok = self.files.tokenizer.as_ref().ok_or_else(|| {
            Error::Input("this model was loaded without a tokenizer: predict from token ids".into())
        })?;
        let ids = tok.encode(text, self.opts.max_tokens, truncate)?;
        self.check_ids(0, &ids)?;
        Ok(ids)
    }

    /// Predicts every text.
    pub fn predict<S: AsRef<str>>(
        &self,
        texts: &[S],
        opts: &PredictOptions,
    ) -> Result<Vec<TextPrediction>> {
        let ids = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.tokenize(t.as_ref(), opts.truncate)
                    .map_err(|e| at_text(i, e))
            })
            .collect::<Result<Vec<_>>>()?;
        self.predict_ids(&ids, opts)
    }

    /// Predicts from token ids (each sequence with its special tokens).
    pub fn predict_ids(
        &self,
        ids: &[Vec<u32>],
        opts: &PredictOptions,
    ) -> Result<Vec<TextPrediction>> {
        let nl = self.config().num_labels;
        let call = Call {
            stop: &opts.stop,
            wait: opts.wait_for_memory,
        };
        // Checked whatever the mode, so a bad value is reported even where a deterministic
        // pass would not use it.
        let rule = StopRule::from_options(opts)?.filter(|_| !opts.deterministic);
        if let Some(rule) = rule {
            let per_text = self.adaptive(ids, opts.samples, opts.seed, rule, &call)?;
            return Ok(ids
                .iter()
                .zip(per_text)
                .map(|(t, z)| TextPrediction {
                    n_tokens: t.len(),
                    samples: (z.len() / nl) as u32,
                    labels: engine::stats::label_stats(&z, nl, &self.files.thresholds),
                    logits: None,
                })
                .collect());
        }
        let n = if opts.deterministic { 1 } else { opts.samples };
        let logits = if opts.deterministic {
            self.validate(ids)?;
            self.run(ids, 0..1, None, None, &call)?
        } else {
            self.sampled(ids, n, opts.seed, &call)?
        };
        let per_text = n as usize * nl;
        Ok(ids
            .iter()
            .zip(logits.chunks_exact(per_text))
            .map(|(t, z)| TextPrediction {
                n_tokens: t.len(),
                samples: n,
                labels: engine::stats::label_stats(z, nl, &self.files.thresholds),
                logits: opts.deterministic.then(|| z.to_vec()),
            })
            .collect())
    }

    /// Adaptive MC sampling (see [`PredictOptions::tolerance`]): per text, its logits
    /// (n_used, num_labels). Blocks continue the sample indices, so a text's samples are
    /// those of a fixed-N run, and where it stops depends on its own samples only.
    pub fn adaptive_logits(
        &self,
        ids: &[Vec<u32>],
        max_samples: u32,
        seed: u64,
        tolerance: f32,
    ) -> Result<Vec<Vec<f32>>> {
        let rule = StopRule::tolerance(tolerance)?;
        self.adaptive(ids, max_samples, seed, rule, &Call::default())
    }

    fn adaptive(
        &self,
        ids: &[Vec<u32>],
        max_samples: u32,
        seed: u64,
        rule: StopRule,
        call: &Call,
    ) -> Result<Vec<Vec<f32>>> {
        check_samples(max_samples)?;
        let nl = self.config().num_labels;
        let blocks = max_samples.div_ceil(ADAPTIVE_BLOCK);
        let settled: Settled = match rule {
            StopRule::Tolerance(tolerance) => {
                // NaN logits (a model with non-finite weights) stop at once, as before.
                Box::new(move |z| {
                    let se = engine::stats::max_standard_error(z, nl);
                    se < tolerance as f64 || se.is_nan()
                })
            }
            StopRule::Decisions(alpha) => {
                let z = engine::stats::normal_quantile(1.0 - alpha as f64 / (2.0 * blocks as f64));
                let th = &self.files.thresholds;
                Box::new(move |s| engine::stats::decisions_settled(s, nl, th, z))
            }
        };
        self.validate(ids)?;
        let dropout = Dropout {
            seed,
            p: self.config().dropout,
        };
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];
        let mut active: Vec<usize> = (0..ids.len()).collect();
        let mut s0 = 0;
        while !active.is_empty() && s0 < max_samples {
            let s1 = (s0 + ADAPTIVE_BLOCK).min(max_samples);
            let batch: Vec<Vec<u32>> = active.iter().map(|&i| ids[i].clone()).collect();
            let z = self.run(&batch, s0..s1, Some(dropout), None, call)?;
            let per = (s1 - s0) as usize * nl;
            for (&i, zt) in active.iter().zip(z.chunks_exact(per)) {
                out[i].extend_from_slice(zt);
            }
            active.retain(|&i| !settled(&out[i]));
            s0 = s1;
        }
        Ok(out)
    }

    /// Logits of the deterministic pass (dropout off): (texts, num_labels).
    pub fn logits(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        self.validate(ids)?;
        self.run(ids, 0..1, None, None, &Call::default())
    }

    /// Logits of `n_samples` MC samples: (texts, n_samples, num_labels), text-major.
    pub fn sample_logits(&self, ids: &[Vec<u32>], n_samples: u32, seed: u64) -> Result<Vec<f32>> {
        self.sampled(ids, n_samples, seed, &Call::default())
    }

    fn sampled(
        &self,
        ids: &[Vec<u32>],
        n_samples: u32,
        seed: u64,
        call: &Call,
    ) -> Result<Vec<f32>> {
        check_samples(n_samples)?;
        self.validate(ids)?;
        let dropout = Dropout {
            seed,
            p: self.config().dropout,
        };
        self.run(ids, 0..n_samples, Some(dropout), None, call)
    }

    /// The deterministic pass with its hidden states (for golden tests and debugging).
    pub fn trace(&self, ids: &[Vec<u32>]) -> Result<(Trace, Vec<f32>)> {
        self.validate(ids)?;
        let mut tr = Trace::default();
        let z = self.run(ids, 0..1, None, Some(&mut tr), &Call::default())?;
        Ok((tr, z))
    }

    /// Bytes held by idle scratch arenas (buffers reused across calls; the model keeps at
    /// most one once its calls have finished).
    pub fn scratch_bytes(&self) -> usize {
        self.arenas.idle_bytes()
    }

    /// The most bytes one call's scratch arena can hold, whatever the number and length of
    /// its texts: [`engine::forward::scratch_bound`] at `max(max_rows, max_tokens)` rows (a
    /// chunk holds at most `max_rows` rows, or one text of up to `max_tokens`).
    pub fn scratch_bound(&self) -> usize {
        let rows = self.opts.max_rows.max(self.opts.max_tokens);
        engine::forward::scratch_bound(self.config(), rows)
    }

    /// The scratch a call on these texts with `n_samples` samples reserves: the bound at
    /// its largest chunk, `min(max(max_rows, longest text), total tokens x samples)` rows.
    pub fn call_scratch(&self, ids: &[Vec<u32>], n_samples: u32) -> usize {
        self.call_scratch_rows(ids, n_samples, self.opts.max_rows)
    }

    fn call_scratch_rows(&self, ids: &[Vec<u32>], n_samples: u32, max_rows: usize) -> usize {
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        let total: usize = ids.iter().map(Vec::len).sum();
        let rows = max_rows
            .max(longest)
            .min(total.saturating_mul(n_samples.max(1) as usize));
        engine::forward::scratch_bound(self.config(), rows)
    }

    /// The memory budget of the scratch arenas, in bytes.
    pub fn memory_budget(&self) -> usize {
        self.arenas.budget()
    }

    /// Runs the forward on this model's pool with a scratch arena lent under the memory
    /// budget. A trace keeps all rows in one chunk.
    fn run(
        &self,
        ids: &[Vec<u32>],
        samples: std::ops::Range<u32>,
        dropout: Option<Dropout>,
        trace: Option<&mut Trace>,
        call: &Call,
    ) -> Result<Vec<f32>> {
        let max_rows = if trace.is_some() {
            usize::MAX
        } else {
            self.opts.max_rows
        };
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            if trace.is_some() {
                return Err(Error::Input(
                    "hidden-state traces come from the CPU engine: load the model on the cpu device".into(),
                ));
            }
            return g.run(
                &self.files.config,
                ids,
                samples,
                dropout,
                max_rows,
                call.stop,
            );
        }
        let fw = Forward {
            cfg: &self.files.config,
            w: &self.files.weights,
            max_rows,
            isa: self.isa,
            i8k: self.i8k,
        };
        let need = self.call_scratch_rows(ids, samples.len() as u32, max_rows);
        let mut lease = self.arenas.take(need, call.wait, call.stop)?;
        let z = self
            .pool
            .install(|| fw.run(&mut lease.scratch, ids, samples, dropout, trace, call.stop));
        self.arenas.give_back(lease);
        z?
    }

    fn validate(&self, ids: &[Vec<u32>]) -> Result<()> {
        ids.iter()
            .enumerate()
            .try_for_each(|(i, t)| self.check_ids(i, t))
    }

    fn check_ids(&self, i: usize, ids: &[u32]) -> Result<()> {
        let v = self.config().vocab_size;
        if ids.is_empty() {
            return Err(Error::Input(format!(
                "text {i}: empty token sequence (a text encodes to at least [CLS] [SEP])"
            )));
        }
        if ids.len() > self.opts.max_tokens {
            return Err(Error::Input(format!(
                "text {i}: {} tokens exceed the limit of {}",
                ids.len(),
                self.opts.max_tokens
            )));
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= v) {
            return Err(Error::Input(format!(
                "text {i}: token id {bad} is out of range for vocab_size {v}"
            )));
        }
        Ok(())
    }
}

/// The level a model runs at: the requested one (it must run here), else `EMCODER_ISA`
/// (validated when the process first asked), else the best this CPU runs.
fn choose_isa(requested: Option<Isa>) -> Result<Isa> {
    let caps = caps();
    match requested {
        Some(isa) if isa.runs_here() => Ok(isa),
        Some(isa) => Err(Error::Input(format!(
            "this CPU ({}) cannot run the {isa} kernels; it runs: {}",
            caps.model,
            caps.available_names()
        ))),
        None => caps.selected.clone().map_err(Error::Input),
    }
}

/// How one call runs: when to stop, and whether to wait for memory.
struct Call<'a> {
    stop: &'a Stop,
    wait: bool,
}

impl Default for Call<'_> {
    fn default() -> Self {
        static NEVER: Stop = Stop {
            flag: None,
            deadline: None,
            callback: None,
        };
        Call {
            stop: &NEVER,
            wait: true,
        }
    }
}

/// Whether a text's samples so far, (n, num_labels) logits, let it stop.
type Settled<'a> = Box<dyn Fn(&[f32]) -> bool + Sync + 'a>;

/// When adaptive sampling stops a text (see [`PredictOptions`]).
#[derive(Clone, Copy, Debug)]
enum StopRule {
    /// Every label's mean has a standard error below this.
    Tolerance(f32),
    /// Every thresholded decision is settled at this error rate.
    Decisions(f32),
}

impl StopRule {
    /// The rule `opts` asks for, its value checked: None when neither is set, an error when
    /// both are or a value is out of range.
    fn from_options(opts: &PredictOptions) -> Result<Option<StopRule>> {
        let tolerance = opts.tolerance.map(StopRule::tolerance).transpose()?;
        let decisions = opts.decision_error.map(StopRule::decisions).transpose()?;
        match (tolerance, decisions) {
            (Some(_), Some(_)) => Err(Error::Input(
                "tolerance and decision_error are two stopping rules: set one of them".into(),
            )),
            (rule, None) | (None, rule) => Ok(rule),
        }
    }

    fn tolerance(tolerance: f32) -> Result<StopRule> {
        if !(tolerance > 0.0 && tolerance.is_finite()) {
            return Err(Error::Input(format!(
                "tolerance {tolerance} must be a positive number"
            )));
        }
        Ok(StopRule::Tolerance(tolerance))
    }

    fn decisions(alpha: f32) -> Result<StopRule> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(Error::Input(format!(
                "decision_error {alpha} must lie strictly between 0 and 1 (e.g. 0.01)"
            )));
        }
        Ok(StopRule::Decisions(alpha))
    }
}

/// MC sampling needs at least one sample.
fn check_samples(n: u32) -> Result<()> {
    if n == 0 {
        return Err(Error::Input(
            "the number of MC samples must be at least 1 (or ask for deterministic mode)".into(),
        ));
    }
    Ok(())
}

fn at_text(i: usize, e: Error) -> Error {
    match e {
        Error::Input(m) if !m.starts_with(&format!("text {i}:")) => {
            Error::Input(format!("text {i}: {m}"))
        }
        Error::Tokenizer(m) => Error::Tokenizer(format!("text {i}: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TokenizerChoice;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    /// The fused bf16 products (q|k|v with RoPE in the epilogue, gate|up) give the bits of
    /// separate products followed by a separate RoPE pass, on full and partial rotation.
    #[test]
    fn fused_bf16_products_equal_separate_ones() {
        for name in ["tiny-f32", "tiny-rot-partial", "tiny-fused-bias"] {
            let bf16 = LoadOptions {
                n_threads: 2,
                precision: Precision::Bf16,
                tokenizer: TokenizerChoice::None,
                ..Default::default()
            };
            let fused = Model::load(&fixture(name), &bf16).unwrap();
            assert!(fused.files.weights.layers[0].qkv.is_some());
            // The same weights packed one linear at a time, no fused products.
            let mut files = ModelFiles::load(&fixture(name), &TokenizerChoice::None).unwrap();
            for l in &mut files.weights.layers {
                for lin in [
                    &mut l.q,
                    &mut l.k,
                    &mut l.v,
                    &mut l.o,
                    &mut l.gate,
                    &mut l.up,
                    &mut l.down,
                ] {
                    lin.pack_bf16(Isa::Generic).unwrap();
                }
            }
            files.weights.head1.pack_bf16(Isa::Generic).unwrap();
            files.weights.head2.pack_bf16(Isa::Generic).unwrap();
            let f32_opts = LoadOptions {
                n_threads: 2,
                tokenizer: TokenizerChoice::None,
                ..Default::default()
            };
            let separate = Model::from_files(files, &f32_opts).unwrap();
            assert!(separate.files.weights.layers[0].qkv.is_none());
            let ids = vec![vec![1, 5, 9, 2], vec![1, 7, 3, 8, 11, 13, 4, 2]];
            let a = fused.sample_logits(&ids, 5, 3).unwrap();
            let b = separate.sample_logits(&ids, 5, 3).unwrap();
            assert!(a == b, "{name}: fused and separate bf16 products differ");
        }
    }
}
