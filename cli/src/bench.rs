//! `emcoder bench`: in-process latency of MC inference, achieved GFLOP/s and the share of
//! the machine's peak, measured by the same tool with a large GEMM of the same precision.

use emcoder::{Model, Precision};
use emcoder_kernels::gemm_bf16::{linear_bf16, PackedBf16};
use emcoder_kernels::gemm_f32::linear_f32;
use emcoder_kernels::gemm_i8::{linear_i8, PackedI8};
use serde_json::{json, Value};
use std::time::Instant;

/// Floating-point operations the engine performs for `texts` of the given lengths and `n`
/// samples (stage A once per text, the rest per sample; multiply-add = 2).
pub fn flops(cfg: &emcoder::Config, lens: &[usize], n: usize) -> f64 {
    let (d, f, l, c) = (
        cfg.d_model as f64,
        cfg.d_ffn as f64,
        cfg.n_layers as f64,
        cfg.num_labels as f64,
    );
    let mut total = 0.0;
    for &t in lens {
        let t = t as f64;
        let attn = t * 8.0 * d * d + 4.0 * t * t * d; // q,k,v,o projections + scores and weighted sum
        let ffn = t * 6.0 * d * f;
        total += attn; // layer 0's attention, once per text
        total += n as f64 * (ffn + (l - 1.0) * (attn + ffn) + 2.0 * d * d + 2.0 * d * c);
    }
    total
}

/// GFLOP/s of one `size^3` product in the model's precision, on as many threads as the
/// model uses (median of `iters`): the machine's practical peak for this workload.
pub fn peak_gflops(model: &Model, size: usize, iters: usize) -> f64 {
    let x = vec![0.5f32; size * size];
    let w = vec![0.25f32; size * size];
    let mut out = vec![0.0f32; size * size];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(model.threads())
        .build()
        .expect("thread pool");
    let isa = model.isa();
    let packed =
        (model.precision() == Precision::Bf16).then(|| PackedBf16::pack(&w, size, size, isa));
    // int8: the same product on int8 weights and activations (GOP/s of the int8 kernel).
    let packed8 = (model.precision() == Precision::Int8)
        .then(|| PackedI8::quantize(&w, size, size, model.int8_kernel()).expect("finite weights"));
    let mut xp = Vec::new();
    let mut fp = Vec::new();
    let mut sa = Vec::new();
    let mut times: Vec<f64> = (0..iters.max(1) + 1)
        .map(|_| {
            let t = Instant::now();
            pool.install(|| match (&packed, &packed8) {
                (_, Some(p)) => {
                    let k = model.int8_kernel();
                    linear_i8(&mut out, &x, p, None, size, &mut xp, &mut sa, k)
                }
                (Some(p), None) => linear_bf16(&mut out, &x, p, None, size, &mut xp, isa),
                (None, None) => linear_f32(&mut out, &x, &w, None, size, size, size, &mut fp, isa),
            });
            t.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    times.sort_by(f64::total_cmp);
    2.0 * (size as f64).powi(3) / times[times.len() / 2] / 1e9
}

/// Synthetic inputs: `batch` texts of `tokens` ids each (`[CLS]` .. `[SEP]`), or lengths
/// spread over 8..=64 when `mixed`.
pub fn inputs(vocab: usize, tokens: usize, batch: usize, mixed: bool) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            let len = if mixed { 8 + (b * 37) % 57 } else { tokens }.max(2);
            let mut v = vec![50281u32.min(vocab as u32 - 1)];
            v.extend((0..len - 2).map(|i| ((b * 7919 + i * 104_729) % 50_000.min(vocab)) as u32));
            v.push(50282u32.min(vocab as u32 - 1));
            v
        })
        .collect()
}

/// Runs the benchmark and returns its JSON record.
pub fn run(
    model: &Model,
    ids: &[Vec<u32>],
    samples: u32,
    iters: usize,
    peak: f64,
) -> emcoder::Result<Value> {
    let run_once = || -> emcoder::Result<f64> {
        let t = Instant::now();
        if samples == 0 {
            model.logits(ids)?;
        } else {
            model.sample_logits(ids, samples, emcoder::DEFAULT_SEED)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    run_once()?; // warm-up
    let mut ms = (0..iters.max(1))
        .map(|_| run_once())
        .collect::<emcoder::Result<Vec<f64>>>()?;
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let median = q(0.5);
    let lens: Vec<usize> = ids.iter().map(|t| t.len()).collect();
    let gflops = flops(model.config(), &lens, samples.max(1) as usize) / (median / 1e3) / 1e9;
    Ok(json!({
        "median_ms": median, "p10_ms": q(0.1), "p90_ms": q(0.9),
        "texts_per_s": ids.len() as f64 / (median / 1e3),
        "gflops": gflops, "peak_gflops": peak, "fraction_of_peak": gflops / peak,
        "iters": ms.len(), "threads": model.threads(), "samples": samples, "batch": ids.len(),
        "tokens": lens,
    }))
}

/// Peak resident memory of this process (VmHWM), in MB; 0 where /proc is unavailable.
pub fn max_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
