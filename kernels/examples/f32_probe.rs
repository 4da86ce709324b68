//! Times the `gemm` crate's f32 `matmul::linear` against `gemm_f32::linear_f32` (median of
//! 7 runs) at this model's shapes:
//! `cargo run --release -p emcoder-kernels --example f32_probe -- [THREADS] [M K N]...`
//! (default: 2 threads, the benchmark shapes). `EMCODER_ISA` picks the kernel.
use emcoder_kernels::gemm_f32::linear_f32;
use emcoder_kernels::matmul::{linear, Parallelism};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|x| x.parse().expect("numbers"))
        .collect();
    let t = a.first().copied().unwrap_or(2);
    let mut shapes: Vec<(usize, usize, usize)> = a[1.min(a.len())..]
        .chunks_exact(3)
        .map(|s| (s[0], s[1], s[2]))
        .collect();
    if shapes.is_empty() {
        shapes = vec![
            (800, 768, 2304),
            (800, 768, 768),
            (800, 768, 4096),
            (800, 2048, 768),
            (16, 768, 2304),
            (16, 2048, 768),
            (2048, 2048, 2048),
        ];
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build()
        .unwrap();
    let par = if t > 1 {
        Parallelism::Rayon(t)
    } else {
        Parallelism::None
    };
    let isa = emcoder_kernels::caps()
        .selected
        .clone()
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{t} thread(s), own kernel {isa}, median of 7 (GFLOP/s; W GB/s)");
    for (m, k, n) in shapes {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let (mut o1, mut o2) = (vec![0.0; m * n], vec![0.0; m * n]);
        let mut scratch = Vec::new();
        let flop = 2.0 * (m * k * n) as f64;
        let time = |f: &mut dyn FnMut()| {
            f();
            median(
                (0..7)
                    .map(|_| {
                        let s = Instant::now();
                        f();
                        s.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        };
        let tg = time(&mut || pool.install(|| linear(&mut o1, &x, &w, Some(&b), m, k, n, par)));
        let to = time(&mut || {
            pool.install(|| linear_f32(&mut o2, &x, &w, Some(&b), m, k, n, &mut scratch, isa))
        });
        let err = o1
            .iter()
            .zip(&o2)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0f32, f32::max);
        println!(
            "{m:>5}x{k:>4}x{n:>4}: gemm {:6.1}  own {:6.1} GFLOP/s ({:5.1} GB/s W, {:.3} ms)  max rel diff {err:.1e}",
            flop / tg / 1e9,
            flop / to / 1e9,
            (n * k * 4) as f64 / to / 1e9,
            to * 1e3
        );
    }
}
