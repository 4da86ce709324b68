//! `emcoder`: predict emotions with uncertainty, inspect a model directory.

mod bench;
mod eval;
mod make_model;
mod output;
mod serve;

use clap::{Args, Parser, Subcommand};
use emcoder::{LoadOptions, Model, PredictOptions, TokenizerChoice};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

/// The default model, shipped in the repository.
const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/emcoder-mini");

#[derive(Parser)]
#[command(
    name = "emcoder",
    version,
    about = "EmCoder emotion recognition with MC-dropout uncertainty"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Predict emotions (mean probability and uncertainty) for texts.
    Predict(PredictArgs),
    /// Evaluate on a labelled TSV split: the model card's tables, rejection curve, calibration.
    Eval(EvalArgs),
    /// Benchmark MC inference: latency, texts/s, GFLOP/s and the share of the machine's peak.
    Bench(BenchArgs),
    /// Write a random model in the canonical layout (for benchmarks; published size by default).
    MakeModel {
        /// Output directory.
        dir: PathBuf,
        #[arg(long, default_value_t = 50368)]
        vocab: usize,
        #[arg(long, default_value_t = 768)]
        d_model: usize,
        #[arg(long, default_value_t = 12)]
        heads: usize,
        #[arg(long, default_value_t = 6)]
        layers: usize,
        #[arg(long, default_value_t = 2048)]
        d_ffn: usize,
        /// Store BF16 instead of F32.
        #[arg(long)]
        bf16: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Show a model directory: config, every tensor with dtype, shape and resolved role.
    Inspect {
        /// The model directory.
        dir: PathBuf,
        /// Tokenizer file (default: <dir>/tokenizer.json, else the built-in one).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
    /// Run token ids through a model with dropout off and write every hidden state, for
    /// checks against another implementation (reference/conformance.py).
    Trace(TraceArgs),
    /// Write an int8 model directory: the token embedding and the encoder's linear weights
    /// as I8 with a scale per row (a quarter of their f32 size), everything else copied. It
    /// loads with `--precision int8` and gives the same numbers as `--precision int8` on
    /// the original.
    Quantize {
        /// The model directory to quantize (F32, F16 or BF16 weights).
        input: PathBuf,
        /// Where to write the int8 model (created if needed).
        output: PathBuf,
        /// Replace an existing model.safetensors in the output directory.
        #[arg(long)]
        force: bool,
    },
    /// Serve the model over HTTP: TEI-compatible POST /predict, POST /v1/predict (the JSON of
    /// predict --json), /health, /info, /metrics, /openapi.json and a demo page at /
    /// (docs/serve.md). Stops on SIGTERM or SIGINT after finishing accepted requests.
    Serve(serve::ServeArgs),
    /// Show this CPU, the instruction-set levels it runs and each kernel family's variant.
    Cpu {
        /// Print only the level names this CPU runs, one per line (for scripts).
        #[arg(long)]
        levels: bool,
    },
}

#[derive(Args)]
struct TraceArgs {
    /// The model directory.
    dir: PathBuf,
    /// JSON file of the texts' token ids, special tokens included: `[[50281, 42, 50282], ...]`.
    #[arg(long)]
    ids: PathBuf,
    /// Output file (safetensors, f32). Per text i (each run alone): `i.embed` (T, d) after
    /// the embed norm, `i.layer.L` (T, d) after layer L, `i.final_norm` (T, d), `i.pooled`
    /// (d,), `i.logits` (labels,); with --samples also `i.mc_mean` and `i.mc_std` (labels,).
    #[arg(long)]
    out: PathBuf,
    /// Also MC-dropout with this many samples (all texts in one call).
    #[arg(long)]
    samples: Option<u32>,
    /// Seed of the dropout masks for --samples.
    #[arg(long, default_value_t = emcoder::DEFAULT_SEED)]
    seed: u64,
    /// Precision of weights and matrix products: f32, bf16 or int8.
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model directory [default: $EMCODER_MODEL, else the shipped models/emcoder-mini].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Tokenizer file [default: <model>/tokenizer.json, else the built-in ModernBERT one].
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Longest accepted text, in tokens.
    #[arg(long, default_value_t = emcoder::DEFAULT_MAX_TOKENS)]
    max_tokens: usize,
    /// Precision of weights and matrix products: f32, bf16 (f32 accumulation), or int8
    /// (int8 weights and activations, exact i32 sums; CPU only).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Where the forward runs: cpu, cuda (GPU 0) or cuda:N (needs a build with
    /// `--features cuda`, the NVIDIA driver, NVRTC and cuBLAS).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// How predictions sample (shared by `predict` and `eval`).
#[derive(Args, Clone)]
struct SamplingArgs {
    /// MC-dropout samples per text.
    #[arg(long, short = 'n', default_value_t = emcoder::DEFAULT_SAMPLES)]
    samples: u32,
    /// Seed of the dropout masks.
    #[arg(long, default_value_t = emcoder::DEFAULT_SEED)]
    seed: u64,
    /// One pass with dropout off (predict --json then prints the logits).
    #[arg(long)]
    deterministic: bool,
    /// Adaptive sampling: stop a text once every label's mean has a standard error below E
    /// (samples drawn in blocks of 10, at most --samples).
    #[arg(long, value_name = "E")]
    tolerance: Option<f32>,
    /// Sampling that stops on decisions: stop a text once every label's thresholded decision
    /// is settled at error rate A (a z-test per label against its threshold, Bonferroni over
    /// the blocks of 10; at most --samples). Exclusive with --tolerance.
    #[arg(long, value_name = "A", conflicts_with = "tolerance")]
    decide: Option<f32>,
    /// Stop the prediction after this many seconds (an error, exit status 1): checked
    /// before every layer, so it stops within about one layer's work.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
}

impl SamplingArgs {
    /// The prediction options; a timeout's deadline starts now.
    fn options(&self, truncate: bool) -> PredictOptions {
        // A negative timeout is already past; one too large for a deadline is no deadline.
        let deadline = self.timeout.and_then(|s| {
            let d = std::time::Duration::try_from_secs_f64(s.max(0.0)).ok()?;
            std::time::Instant::now().checked_add(d)
        });
        PredictOptions {
            samples: self.samples,
            seed: self.seed,
            deterministic: self.deterministic,
            truncate,
            tolerance: self.tolerance,
            decision_error: self.decide,
            stop: emcoder::Stop {
                deadline,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Adaptive sampling is on (it is ignored in deterministic mode).
    fn adaptive(&self) -> bool {
        (self.tolerance.is_some() || self.decide.is_some()) && !self.deterministic
    }

    /// The sampling mode in words.
    fn describe(&self) -> String {
        match (self.deterministic, self.tolerance, self.decide) {
            (true, _, _) => "deterministic".to_string(),
            (false, Some(t), _) => format!(
                "adaptive MC N<={} tolerance={t} seed={}",
                self.samples, self.seed
            ),
            (false, None, Some(a)) => format!(
                "MC stopping on decisions N<={} decision error={a} seed={}",
                self.samples, self.seed
            ),
            (false, None, None) => format!("MC N={} seed={}", self.samples, self.seed),
        }
    }
}

#[derive(Args)]
struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Truncate texts longer than --max-tokens instead of failing.
    #[arg(long)]
    truncate: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Labels per table (0 = all).
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Texts to classify; read from stdin, one per line, when none are given.
    texts: Vec<String>,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// GoEmotions-style TSV: text, comma-separated label ids, id.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Evaluate only the first K texts.
    #[arg(long)]
    limit: Option<usize>,
    /// Texts per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Write rejection_curve.png and reliability.png into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// MC samples per text (0: one deterministic pass).
    #[arg(long, short = 'n', default_value_t = emcoder::DEFAULT_SAMPLES)]
    samples: u32,
    /// Tokens per text (with [CLS] and [SEP]).
    #[arg(long, default_value_t = 16)]
    tokens: usize,
    /// Texts per call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Mixed lengths 8..64 instead of --tokens.
    #[arg(long)]
    mixed: bool,
    /// Timed iterations (after one warm-up).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Predict(a) => predict(a),
        Cmd::Eval(a) => eval_cmd(a),
        Cmd::Bench(a) => bench_cmd(a),
        Cmd::MakeModel {
            dir,
            vocab,
            d_model,
            heads,
            layers,
            d_ffn,
            bf16,
            seed,
        } => {
            let shape = make_model::Shape {
                vocab,
                d_model,
                n_head: heads,
                n_layers: layers,
                d_ffn,
            };
            make_model::write(&dir, &shape, bf16, seed).map_err(|e| e.into())
        }
        Cmd::Inspect { dir, tokenizer } => inspect(dir, tokenizer),
        Cmd::Quantize {
            input,
            output,
            force,
        } => emcoder::model::quantize::quantize(&input, &output, force)
            .map(|r| {
                println!(
                    "{}: {} tensors quantized to int8 (with row scales), {} copied; model.safetensors {:.1} MB -> {:.1} MB; copied {}",
                    output.display(),
                    r.quantized,
                    r.copied,
                    r.bytes_in as f64 / 1e6,
                    r.bytes_out as f64 / 1e6,
                    if r.files.is_empty() { "no other files".to_string() } else { r.files.join(", ") }
                );
                println!("load it with --precision int8 (an f32 or bf16 load widens it back)");
            })
            .map_err(|e| e.into()),
        Cmd::Trace(a) => trace(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Cpu { levels } => {
            if levels {
                for isa in &emcoder::caps().available {
                    println!("{isa}");
                }
            } else {
                print!("{}", output::cpu_report());
            }
            Ok(())
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// The default model: `share/emcoder/models/emcoder-mini` under the binary's prefix when it is
/// there (`<prefix>/bin/emcoder`, as a release tarball lays it out: scripts/release.sh), else
/// the models/emcoder-mini of the checkout the binary was built in.
fn default_model() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            Some(
                exe.parent()?
                    .parent()?
                    .join("share/emcoder/models/emcoder-mini"),
            )
        })
        .filter(|dir| dir.join("config.json").is_file())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL))
}

pub(crate) fn load(m: &ModelArgs) -> Result<Model, Box<dyn std::error::Error>> {
    let dir = match &m.model {
        Some(d) => d.clone(),
        None => std::env::var_os("EMCODER_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(default_model),
    };
    let opts = LoadOptions {
        tokenizer: m
            .tokenizer
            .clone()
            .map(TokenizerChoice::Path)
            .unwrap_or_default(),
        n_threads: m.threads,
        max_tokens: m.max_tokens,
        precision: m.precision.parse()?,
        device: m.device.parse()?,
        ..Default::default()
    };
    Ok(Model::load(&dir, &opts)?)
}

fn predict(a: PredictArgs) -> CliResult {
    let texts = if a.texts.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()?
    } else {
        a.texts.clone()
    };
    let model = load(&a.model)?;
    let opts = a.sampling.options(a.truncate);
    let preds = model.predict(&texts, &opts)?;
    if a.json {
        println!(
            "{}",
            emcoder::report::predictions_json(
                model.labels(),
                &texts,
                &preds,
                a.sampling.adaptive()
            )
        );
    } else {
        print!(
            "{}",
            output::predictions_table(&model, &texts, &preds, a.top)
        );
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> CliResult {
    let model = load(&a.model)?;
    let mut examples = eval::data::read_tsv(&a.data, model.config().num_labels)?;
    if let Some(k) = a.limit {
        examples.truncate(k);
    }
    if examples.is_empty() {
        return Err(format!("{} holds no examples", a.data.display()).into());
    }
    let opts = a.sampling.options(true);
    let sp = &a.sampling;
    let e = eval::evaluate(&model, &examples, &opts, a.batch)?;
    // With a tolerance or a decision error, also run the fixed-N evaluation: speedup and
    // agreement of decisions.
    let versus_fixed = if sp.adaptive() {
        let fixed = eval::evaluate(
            &model,
            &examples,
            &PredictOptions {
                tolerance: None,
                decision_error: None,
                ..opts.clone()
            },
            a.batch,
        )?;
        let same = e
            .decisions
            .iter()
            .zip(&fixed.decisions)
            .filter(|(x, y)| x == y)
            .count();
        Some(serde_json::json!({
            "fixed_samples": sp.samples,
            "mean_samples": e.mean_samples,
            "fixed_seconds": fixed.seconds,
            "adaptive_seconds": e.seconds,
            "speedup": fixed.seconds / e.seconds.max(1e-9),
            "decision_agreement": same as f64 / e.decisions.len().max(1) as f64,
            "fixed_macro_f1": fixed.thresholded.macro_avg.f1,
            "fixed": eval::to_json(&fixed, model.labels(), serde_json::json!({"n_samples": sp.samples, "seed": sp.seed})),
        }))
    } else {
        None
    };
    // A lower precision: the same texts, samples and seed in f32 beside it.
    let versus_f32 = if model.precision() != emcoder::Precision::F32 {
        let f32_model = load(&ModelArgs {
            precision: "f32".into(),
            ..a.model.clone()
        })?;
        let f = eval::evaluate(&f32_model, &examples, &opts, a.batch)?;
        Some(eval::compare::compare(
            model.precision().name(),
            &f,
            &e,
            &model.files().thresholds,
        ))
    } else {
        None
    };
    let mode = sp.describe();
    let setup = format!(
        "model {} | data {} | {} | {mode}",
        model.precision().name(),
        model.files().dir.display(),
        a.data.display()
    );
    if let Some(dir) = &a.plot {
        eval::plots(&e, dir, &format!("F1-rejection curve ({mode})"))?;
    }
    if a.json {
        let s = serde_json::json!({"model": model.files().dir.display().to_string(), "data": a.data.display().to_string(),
            "n_samples": if sp.deterministic { 1 } else { sp.samples }, "seed": sp.seed, "deterministic": sp.deterministic,
            "tolerance": sp.tolerance, "decision_error": sp.decide});
        let mut v = eval::to_json(&e, model.labels(), s);
        if let Some(vf) = versus_fixed {
            v["adaptive_vs_fixed"] = vf;
        }
        if let Some(c) = &versus_f32 {
            v["versus_f32"] = serde_json::to_value(c)?;
        }
        v["precision"] = serde_json::json!(model.precision().name());
        println!("{v}");
    } else {
        print!("{}", eval::to_text(&e, model.labels(), &setup));
        if let Some(c) = &versus_f32 {
            print!("{}", eval::compare::to_text(c));
        }
        if let Some(vf) = versus_fixed {
            println!(
                "\nAdaptive vs fixed N={}: {:.1} samples per text on average, {:.2}x faster ({:.1} s vs {:.1} s), {:.2}% of the thresholded decisions equal, fixed-N macro F1 {:.4}",
                sp.samples,
                vf["mean_samples"].as_f64().unwrap_or(0.0),
                vf["speedup"].as_f64().unwrap_or(0.0),
                vf["adaptive_seconds"].as_f64().unwrap_or(0.0),
                vf["fixed_seconds"].as_f64().unwrap_or(0.0),
                100.0 * vf["decision_agreement"].as_f64().unwrap_or(0.0),
                vf["fixed_macro_f1"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

fn bench_cmd(a: BenchArgs) -> CliResult {
    let t = std::time::Instant::now();
    let model = load(&a.model)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let ids = bench::inputs(model.config().vocab_size, a.tokens, a.batch, a.mixed);
    let mut v = bench::run(&model, &ids, a.samples, a.iters, f64::NAN)?;
    // Peak memory of the load and the runs, before the peak product's own matrices.
    v["max_rss_mb"] = serde_json::json!(bench::max_rss_mb());
    // The GEMM peak of the CPU in the model's precision, for context; on a GPU it says
    // nothing (null in the JSON).
    let peak = match model.device() {
        emcoder::Device::Cpu => bench::peak_gflops(&model, 2048, 5),
        emcoder::Device::Cuda(_) => f64::NAN,
    };
    v["peak_gflops"] = serde_json::json!(peak);
    v["fraction_of_peak"] = serde_json::json!(v["gflops"].as_f64().unwrap_or(f64::NAN) / peak);
    v["load_ms"] = serde_json::json!(load_ms);
    v["precision"] = serde_json::json!(a.model.precision);
    v["scratch_mb"] = serde_json::json!(model.scratch_bytes() as f64 / 1e6);
    let k = output::kernels_json(&model);
    v["cpu"] = k["cpu"].clone();
    v["isa"] = k["isa"].clone();
    v["kernels"] = k["kernels"].clone();
    v["device"] = serde_json::json!(model.device().to_string());
    #[cfg(feature = "cuda")]
    if model.device() != emcoder::Device::Cpu {
        // Kernel launches and cuBLAS products of one call (launch overhead bounds short calls).
        let before = emcoder::cuda::launches();
        if a.samples == 0 {
            model.logits(&ids)?;
        } else {
            model.sample_logits(&ids, a.samples, emcoder::DEFAULT_SEED)?;
        }
        v["gpu_launches_per_call"] = serde_json::json!(emcoder::cuda::launches() - before);
    }
    v["gpu"] = serde_json::json!(model.device_description());
    if a.json {
        println!("{v}");
    } else {
        println!(
            "{} text(s) x {} tokens, N={} samples, {} threads, {}: median {:.2} ms (p10 {:.2}, p90 {:.2}), {:.1} texts/s, {:.1} GFLOP/s = {:.0}% of the {:.1} GFLOP/s {} GEMM peak; load {:.0} ms; max RSS {:.0} MB (scratch arena {:.1} MB)",
            a.batch, if a.mixed { "8..64".to_string() } else { a.tokens.to_string() }, a.samples, model.threads(), a.model.precision,
            v["median_ms"].as_f64().unwrap_or(0.0), v["p10_ms"].as_f64().unwrap_or(0.0), v["p90_ms"].as_f64().unwrap_or(0.0),
            v["texts_per_s"].as_f64().unwrap_or(0.0), v["gflops"].as_f64().unwrap_or(0.0),
            100.0 * v["fraction_of_peak"].as_f64().unwrap_or(0.0), peak, a.model.precision, load_ms, v["max_rss_mb"].as_f64().unwrap_or(0.0),
            v["scratch_mb"].as_f64().unwrap_or(0.0)
        );
        match model.device_description() {
            Some(gpu) => println!("device: {gpu}"),
            None => println!(
                "cpu: {}; kernels at level {}",
                emcoder::caps().model,
                model.isa()
            ),
        }
    }
    Ok(())
}

fn trace(a: TraceArgs) -> CliResult {
    let text = std::fs::read_to_string(&a.ids)
        .map_err(|e| format!("reading the ids file {}: {e}", a.ids.display()))?;
    let ids: Vec<Vec<u32>> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: expected a JSON list of lists of token ids, like [[50281, 42, 50282]]: {e}",
            a.ids.display()
        )
    })?;
    let opts = LoadOptions {
        tokenizer: TokenizerChoice::None,
        n_threads: a.threads,
        max_tokens: ids.iter().map(Vec::len).max().unwrap_or(0).max(2),
        precision: a.precision.parse()?,
        ..Default::default()
    };
    let model = Model::load(&a.dir, &opts)?;
    let d = model.config().d_model;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (i, t) in ids.iter().enumerate() {
        let (tr, logits) = model
            .trace(std::slice::from_ref(t))
            .map_err(|e| format!("text {i}: {e}"))?;
        let rows = |v: Vec<f32>| (vec![v.len() / d.max(1), d], v);
        let mut put = |name: String, (shape, v): (Vec<usize>, Vec<f32>)| {
            tensors.push((format!("{i}.{name}"), shape, v))
        };
        put("embed".into(), rows(tr.embed));
        for (l, h) in tr.layers.into_iter().enumerate() {
            put(format!("layer.{l}"), rows(h));
        }
        put("final_norm".into(), rows(tr.final_norm));
        put("pooled".into(), (vec![d], tr.pooled));
        put("logits".into(), (vec![logits.len()], logits));
    }
    if let Some(n) = a.samples {
        let po = PredictOptions {
            samples: n,
            seed: a.seed,
            ..Default::default()
        };
        for (i, p) in model.predict_ids(&ids, &po)?.into_iter().enumerate() {
            let nl = p.labels.len();
            let mean = p.labels.iter().map(|l| l.mean).collect();
            let std = p.labels.iter().map(|l| l.std).collect();
            tensors.push((format!("{i}.mc_mean"), vec![nl], mean));
            tensors.push((format!("{i}.mc_std"), vec![nl], std));
        }
    }
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, shape, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut info = std::collections::HashMap::new();
    info.insert("layout".to_string(), model.config().layout.describe());
    info.insert(
        "norm_eps".to_string(),
        format!("{:e}", model.config().norm_eps),
    );
    info.insert("isa".to_string(), model.isa().to_string());
    safetensors::serialize_to_file(views, Some(info), &a.out)
        .map_err(|e| format!("writing {}: {e}", a.out.display()))?;
    Ok(())
}

fn inspect(dir: PathBuf, tokenizer: Option<PathBuf>) -> CliResult {
    // The weights are inspected even when the tokenizer does not fit them: that is reported.
    let scan = emcoder::FileOptions {
        scan_non_finite: true,
        ..Default::default()
    };
    let files = emcoder::ModelFiles::load_with(&dir, &TokenizerChoice::None, &scan)?;
    let choice = tokenizer.map(TokenizerChoice::Path).unwrap_or_default();
    let tok =
        emcoder::ModelFiles::load(&dir, &choice).map(|f| f.tokenizer.map(|t| t.source.to_string()));
    let tok_line = match tok {
        Ok(Some(src)) => src,
        Ok(None) => "none".into(),
        Err(e) => format!("UNUSABLE: {e}"),
    };
    print!("{}", output::inspect_report(&files, &tok_line));
    Ok(())
}
