//! Times the attention kernel on one thread at several sequence lengths and reports GFLOP/s
//! (`4 t^2 d` per sequence: scores and weighted sum), next to a same-thread f32 product
//! for scale: `cargo run --release -p emcoder-kernels --example attention_probe -- [D HEADS]`
//! (default d 768, 12 heads). `EMCODER_ISA` picks the level.
use emcoder_kernels::attention::{attention_rows, scratch_len};
use emcoder_kernels::gemm_f32::linear_f32;
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|x| x.parse().expect("numbers"))
        .collect();
    let (d, heads) = (
        a.first().copied().unwrap_or(768),
        a.get(1).copied().unwrap_or(12),
    );
    let isa = emcoder_kernels::caps()
        .selected
        .clone()
        .unwrap_or_else(|e| panic!("{e}"));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let data = |n: usize, s: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + s * 13) % 1013) as f32 / 1013.0 - 0.5) * 0.5)
            .collect()
    };
    // A same-thread f32 product of this model's shape for scale.
    let (m, k, n) = (800, d, d);
    let (x, w) = (data(m * k, 1), data(n * k, 2));
    let mut o = vec![0.0; m * n];
    let mut fp = Vec::new();
    let gemm = pool.install(|| {
        best_of(7, || {
            linear_f32(&mut o, &x, &w, None, m, k, n, &mut fp, isa)
        })
    });
    println!(
        "level {isa}, 1 thread: f32 product {m}x{k}x{n}: {:.1} GFLOP/s",
        2.0 * (m * k * n) as f64 / gemm / 1e9
    );
    let mut scratch = vec![0.0; scratch_len(d / heads)];
    for t in [16usize, 64, 256, 1024, 4096] {
        let (q, kk, v) = (data(t * d, 3), data(t * d, 4), data(t * d, 5));
        let mut out = vec![0.0; t * d];
        let reps = (1 << 22) / (t * t).max(1) + 1;
        let s = best_of(5, || {
            for _ in 0..reps.min(64) {
                attention_rows(&mut out, &q, &kk, &v, t, d, heads, 0, &mut scratch, isa);
            }
        }) / reps.min(64) as f64;
        let flop = 4.0 * (t * t * d) as f64;
        println!(
            "t={t:5}: {:9.3} ms, {:6.1} GFLOP/s ({:.0}% of the product's rate)",
            s * 1e3,
            flop / s / 1e9,
            100.0 * (flop / s) / (2.0 * (m * k * n) as f64 / gemm)
        );
    }
}

/// Fastest of `n` runs of `f`, in seconds.
fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}
