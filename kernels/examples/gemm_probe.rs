//! Quick single-shape timing of the f32 (gemm crate, own kernel) and bf16 linear kernels: `cargo run --release -p emcoder-kernels --example gemm_probe -- M K N THREADS`.
use emcoder_kernels::gemm_bf16::{linear_bf16, PackedBf16};
use emcoder_kernels::gemm_f32::linear_f32;
use emcoder_kernels::matmul::{linear, Parallelism};
use emcoder_kernels::Isa;
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|x| x.parse().expect("numbers"))
        .collect();
    let (m, k, n, t) = (
        a.first().copied().unwrap_or(800),
        a.get(1).copied().unwrap_or(768),
        a.get(2).copied().unwrap_or(2048),
        a.get(3).copied().unwrap_or(1),
    );
    let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut out = vec![0.0; m * n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build()
        .unwrap();
    let par = if t > 1 {
        Parallelism::Rayon(t)
    } else {
        Parallelism::None
    };
    let level = emcoder_kernels::caps().best;
    let packed = PackedBf16::pack(&w, n, k, level);
    let mut xp = Vec::new();
    let flop = 2.0 * (m * k * n) as f64;
    let mut fp = Vec::new();
    for (name, isa) in [
        ("f32 gemm crate", None),
        ("f32 own", Some(Isa::Generic)),
        ("bf16 best level", Some(level)),
    ] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let s = Instant::now();
            pool.install(|| match isa {
                None => linear(&mut out, &x, &w, None, m, k, n, par),
                // (Generic marks the own f32 kernel at the best level.)
                Some(Isa::Generic) => linear_f32(&mut out, &x, &w, None, m, k, n, &mut fp, level),
                Some(i) => linear_bf16(&mut out, &x, &packed, None, m, &mut xp, i),
            });
            best = best.min(s.elapsed().as_secs_f64());
        }
        println!(
            "{name:>14}: {m}x{k}x{n} {t} thr: {:.1} GFLOP/s ({:.2} ms)",
            flop / best / 1e9,
            best * 1e3
        );
    }
}
