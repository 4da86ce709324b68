//! The CUDA backend on a real GPU, against the CPU engine: every kernel on odd sizes (the
//! checks of tests/kernels/cuda_checks.rs, which also run on the CPU emulation), the forward
//! on the fixtures (f32 and bf16, deterministic and seeded MC, chunking and batch
//! composition), and the shipped model on the first 500 GoEmotions test texts.
//!
//! Without a GPU (this CI) every test says SKIPPED and why, and passes; with
//! `EMCODER_REQUIRE_GPU` set (scripts/gpu-check.sh) a GPU that does not open fails them.
//! Each test prints one `GPU-CHECK {json}` line with its numbers for the check's report.
//! Built only with the `cuda` feature.
#![cfg(feature = "cuda")]

#[path = "../kernels/cuda_checks.rs"]
mod cuda_checks;

use cuda_checks::{Launch, A};
use emcoder::cuda::{CudaBackend, CudaDevice, DevBuf};
use emcoder::engine::gpu::{Arg, Backend};
use emcoder::{Device, LoadOptions, Model, Precision, PredictOptions, TokenizerChoice};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

fn require_gpu() -> bool {
    std::env::var_os("EMCODER_REQUIRE_GPU").is_some()
}

/// Says why a test cannot run here; fails when a GPU is required.
fn skip(why: &str) {
    assert!(!require_gpu(), "EMCODER_REQUIRE_GPU is set, but: {why}");
    eprintln!("SKIPPED: {why}");
}

fn report(check: &str, v: serde_json::Value) {
    let mut v = v;
    v["check"] = serde_json::json!(check);
    println!("GPU-CHECK {v}");
}

/// A backend on GPU 0, or why there is none.
type Opened = Result<Arc<Mutex<CudaBackend>>, String>;

/// One backend per head width (the kernels are compiled for it), shared by the tests.
fn backend(head_dim: usize) -> Option<Arc<Mutex<CudaBackend>>> {
    static B: OnceLock<Mutex<HashMap<usize, Opened>>> = OnceLock::new();
    let mut m = B
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let b = m.entry(head_dim).or_insert_with(|| {
        CudaDevice::open(0, head_dim)
            .and_then(|d| CudaBackend::new(Arc::new(d)))
            .map(|b| Arc::new(Mutex::new(b)))
            .map_err(|e| e.to_string())
    });
    match b {
        Ok(b) => Some(b.clone()),
        Err(e) => {
            skip(&format!("no GPU: {e}"));
            None
        }
    }
}

/// The GPU as a [`Launch`] of the kernel checks.
struct Gpu;

impl Launch for Gpu {
    fn launch(
        &self,
        head_dim: usize,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &mut [A],
    ) -> bool {
        let Some(b) = backend(head_dim) else {
            return false;
        };
        let b = b.lock().unwrap_or_else(|p| p.into_inner());
        let bufs: Vec<Option<DevBuf>> = args
            .iter()
            .map(|a| match a {
                A::F(v) => Some(b.upload_f32(v).unwrap()),
                A::U(v) => Some(b.upload_u32(v).unwrap()),
                A::I(v) => Some(
                    b.upload_u32(&v.iter().map(|x| *x as u32).collect::<Vec<_>>())
                        .unwrap(),
                ),
                A::H(v) => Some(b.upload_u16(v).unwrap()),
                _ => None,
            })
            .collect();
        let dev_args: Vec<Arg<'_, DevBuf>> = args
            .iter()
            .zip(&bufs)
            .map(|(a, buf)| match (a, buf) {
                (_, Some(d)) => Arg::Buf(d, 0),
                (A::Null, _) => Arg::Null,
                (A::Int(x), _) => Arg::I32(*x),
                (A::Uns(x), _) => Arg::U32(*x),
                (A::Flt(x), _) => Arg::F32(*x),
                (A::Long(x), _) => Arg::I64(*x),
                _ => unreachable!(),
            })
            .collect();
        let name: &'static str = emcoder::cuda::KERNELS
            .iter()
            .find(|k| **k == kernel)
            .unwrap_or_else(|| panic!("unknown kernel {kernel}"));
        b.launch(name, grid, block, &dev_args).unwrap();
        b.synchronize().unwrap();
        for (a, buf) in args.iter_mut().zip(&bufs) {
            let Some(d) = buf else { continue };
            match a {
                A::F(v) => {
                    *v = b
                        .download_u32(d)
                        .unwrap()
                        .into_iter()
                        .map(f32::from_bits)
                        .collect()
                }
                A::U(v) => *v = b.download_u32(d).unwrap(),
                A::I(v) => {
                    *v = b
                        .download_u32(d)
                        .unwrap()
                        .into_iter()
                        .map(|x| x as i32)
                        .collect()
                }
                A::H(v) => *v = b.download_u16(d).unwrap(),
                _ => {}
            }
        }
        true
    }
}

/// Every kernel check on the GPU (one test, so the report has one line).
#[test]
fn gpu_device_kernels_match_the_cpu() {
    if backend(16).is_none() {
        return;
    }
    let mut passed = Vec::new();
    for (name, check) in cuda_checks::CHECKS {
        check(&Gpu);
        passed.push(name);
    }
    report("kernels", serde_json::json!({ "passed": passed }));
}

/// A file of the repository: under `EMCODER_REPO` when set (the binary carried to a GPU
/// machine runs from another folder than it was built in), else this checkout.
fn repo(p: &str) -> PathBuf {
    match std::env::var_os("EMCODER_REPO") {
        Some(r) => PathBuf::from(r).join(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p),
    }
}

fn load(
    dir: &Path,
    device: Device,
    precision: Precision,
    max_rows: usize,
    tokenizer: TokenizerChoice,
) -> Model {
    let opts = LoadOptions {
        tokenizer,
        precision,
        device,
        max_rows,
        ..Default::default()
    };
    Model::load(dir, &opts).unwrap_or_else(|e| panic!("{} on {device}: {e}", dir.display()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn sigmoid(z: &[f32]) -> Vec<f32> {
    z.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
}

/// Mean probability per (text, label) of (texts, n, labels) logits.
fn means(z: &[f32], texts: usize, n: usize, labels: usize) -> Vec<f32> {
    let p = sigmoid(z);
    (0..texts * labels)
        .map(|i| {
            let (t, c) = (i / labels, i % labels);
            (0..n)
                .map(|s| p[(t * n + s) * labels + c] as f64)
                .sum::<f64>() as f32
                / n as f32
        })
        .collect()
}

/// The fixtures on the GPU: f32 logits within 1e-4 of the CPU engine (deterministic and
/// seeded MC: the same masks), bf16 mean probabilities within 0.01; on the GPU, chunking
/// and batch composition change no bit.
#[test]
fn gpu_device_forward_matches_the_cpu_engine() {
    if backend(16).is_none() {
        return;
    }
    let mut rows = Vec::new();
    for name in [
        "tiny-f32",
        "tiny-rot-partial",
        "tiny-fused-bias",
        "tiny-bf16",
    ] {
        let dir = repo("tests/fixtures").join(name);
        for precision in [Precision::F32, Precision::Bf16] {
            let cpu = load(&dir, Device::Cpu, precision, 16384, TokenizerChoice::None);
            let gpu = load(
                &dir,
                Device::Cuda(0),
                precision,
                16384,
                TokenizerChoice::None,
            );
            let small = load(&dir, Device::Cuda(0), precision, 10, TokenizerChoice::None);
            let v = cpu.config().vocab_size as u32;
            let ids: Vec<Vec<u32>> = [4usize, 9, 70, 2, 33]
                .iter()
                .enumerate()
                .map(|(s, &len)| {
                    let mut t = vec![1];
                    t.extend((0..len as u32 - 2).map(|i| (i * 7 + s as u32 * 13) % (v - 3) + 3));
                    t.push(2);
                    t
                })
                .collect();
            let (n, seed) = (5u32, 7u64);
            let nl = cpu.config().num_labels;
            let det = max_diff(&gpu.logits(&ids).unwrap(), &cpu.logits(&ids).unwrap());
            let zg = gpu.sample_logits(&ids, n, seed).unwrap();
            let zc = cpu.sample_logits(&ids, n, seed).unwrap();
            let mc = max_diff(&zg, &zc);
            let mean = max_diff(
                &means(&zg, ids.len(), n as usize, nl),
                &means(&zc, ids.len(), n as usize, nl),
            );
            let chunked = small.sample_logits(&ids, n, seed).unwrap() == zg;
            let alone = gpu.sample_logits(&ids[2..3], n, seed).unwrap();
            let per = n as usize * nl;
            let composition = alone[..] == zg[2 * per..3 * per];
            report(
                "forward",
                serde_json::json!({
                    "fixture": name, "precision": format!("{precision:?}"),
                    "max_logit_diff_deterministic": det, "max_logit_diff_mc": mc,
                    "max_mean_prob_diff": mean, "chunking_same_bits": chunked,
                    "batch_composition_same_bits": composition,
                }),
            );
            rows.push((name, precision, det, mc, mean, chunked, composition));
        }
    }
    for (name, precision, det, mc, mean, chunked, composition) in rows {
        match precision {
            Precision::F32 => {
                assert!(
                    det <= 1e-4 && mc <= 1e-4,
                    "{name} f32: logits differ by {det} / {mc}"
                );
            }
            Precision::Bf16 => assert!(
                mean <= 0.01,
                "{name} bf16: mean probabilities differ by {mean}"
            ),
            Precision::Int8 => unreachable!("int8 runs on the CPU only"),
        }
        assert!(
            chunked,
            "{name} {precision:?}: chunking changed bits on the GPU"
        );
        assert!(
            composition,
            "{name} {precision:?}: batch composition changed bits on the GPU"
        );
    }
}

/// The shipped model on the first 500 GoEmotions test texts, MC N=50, the same seed on both
/// devices: mean probabilities within 1e-4 (f32) / 0.01 (bf16), and every decision that
/// differs has a mean within that tolerance of its threshold.
#[test]
fn gpu_device_shipped_model_agrees_on_goemotions() {
    if backend(16).is_none() {
        return;
    }
    let text = std::fs::read_to_string(repo("data/goemotions/test.tsv")).unwrap();
    let texts: Vec<&str> = text
        .lines()
        .take(500)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let dir = repo("models/emcoder-mini");
    let opts = PredictOptions::default();
    for (precision, tol) in [(Precision::F32, 1e-4f32), (Precision::Bf16, 0.01)] {
        let cpu = load(&dir, Device::Cpu, precision, 16384, TokenizerChoice::Auto);
        let gpu = load(
            &dir,
            Device::Cuda(0),
            precision,
            16384,
            TokenizerChoice::Auto,
        );
        let t = std::time::Instant::now();
        let pg = gpu.predict(&texts, &opts).unwrap();
        let gpu_s = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let pc = cpu.predict(&texts, &opts).unwrap();
        let cpu_s = t.elapsed().as_secs_f64();
        let th = &cpu.files().thresholds;
        let (mut worst, mut differ, mut unexplained) = (0.0f32, 0, Vec::new());
        for (i, (g, c)) in pg.iter().zip(&pc).enumerate() {
            for (l, (a, b)) in g.labels.iter().zip(&c.labels).enumerate() {
                worst = worst.max((a.mean - b.mean).abs());
                if a.predicted != b.predicted {
                    differ += 1;
                    if (b.mean - th[l].p).abs() > tol && (a.mean - th[l].p).abs() > tol {
                        unexplained.push((i, l, a.mean, b.mean));
                    }
                }
            }
        }
        report(
            "goemotions",
            serde_json::json!({
                "precision": format!("{precision:?}"), "texts": texts.len(), "samples": 50,
                "max_mean_prob_diff": worst, "decisions_differing": differ,
                "unexplained": unexplained.len(), "gpu_seconds": gpu_s, "cpu_seconds": cpu_s,
            }),
        );
        assert!(
            worst <= tol,
            "{precision:?}: mean probabilities differ by {worst}"
        );
        assert!(
            unexplained.is_empty(),
            "{precision:?}: decisions differ away from thresholds: {unexplained:?}"
        );
    }
}
