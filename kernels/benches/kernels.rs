//! Micro-benchmarks of every kernel at this model's shapes (d 768, 12 heads, d_ffn 2048),
//! reported as GFLOP/s (products, attention) or GB/s (memory-bound kernels).
//! `cargo bench -p emcoder-kernels` (single thread unless the kernel parallelizes itself).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use emcoder_kernels::activation::swiglu;
use emcoder_kernels::attention::{attention_rows, scratch_len};
use emcoder_kernels::gemm_bf16::{linear_bf16, PackedBf16};
use emcoder_kernels::gemm_f32::linear_f32;
use emcoder_kernels::matmul::{linear, Parallelism};
use emcoder_kernels::norm::rmsnorm;
use emcoder_kernels::philox::{dropout_residual_add, DropoutSite};
use emcoder_kernels::rope::{rope_rows, rope_tables};
use emcoder_kernels::Isa;
use std::hint::black_box;

const D: usize = 768;
const F: usize = 2048;
const H: usize = 12;

/// The level `EMCODER_ISA` selects (the best one by default).
fn isa() -> Isa {
    emcoder_kernels::caps()
        .selected
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn data(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
        .collect()
}

fn gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear");
    // (rows, in, out): q/k/v/o, gate/up, down at 16 tokens x 50 samples = 800 rows.
    for (m, k, n) in [(800usize, D, D), (800, D, F), (800, F, D), (16, D, D)] {
        let (x, w) = (data(m * k), data(n * k));
        let mut out = vec![0.0; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(BenchmarkId::new("f32", format!("{m}x{k}x{n}")), |b| {
            b.iter(|| {
                linear(
                    &mut out,
                    black_box(&x),
                    &w,
                    None,
                    m,
                    k,
                    n,
                    Parallelism::None,
                )
            })
        });
        let isa = isa();
        let p = PackedBf16::pack(&w, n, k, isa);
        let mut xp = Vec::new();
        g.bench_function(
            BenchmarkId::new(format!("bf16-{isa}"), format!("{m}x{k}x{n}")),
            |b| b.iter(|| linear_bf16(&mut out, black_box(&x), &p, None, m, &mut xp, isa)),
        );
    }
    // The hand-written f32 kernel against the gemm crate, both on the global rayon pool
    // (`RAYON_NUM_THREADS` sets its size): fused QKV, o, gate+up, down at 800 rows, the
    // same at 16 rows (one sample), and a square reference.
    let isa = isa();
    let threads = rayon::current_num_threads();
    g.sample_size(20);
    for (m, k, n) in [
        (800usize, D, 3 * D),
        (800, D, D),
        (800, D, 2 * F),
        (800, F, D),
        (16, D, 3 * D),
        (16, F, D),
        (2048, 2048, 2048),
    ] {
        let (x, w, bias) = (data(m * k), data(n * k), data(n));
        let mut out = vec![0.0; m * n];
        let mut scratch = Vec::new();
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(
            BenchmarkId::new("f32-gemm-par", format!("{m}x{k}x{n}")),
            |b| {
                b.iter(|| {
                    linear(
                        &mut out,
                        black_box(&x),
                        &w,
                        Some(&bias),
                        m,
                        k,
                        n,
                        Parallelism::Rayon(threads),
                    )
                })
            },
        );
        g.bench_function(BenchmarkId::new("f32-own", format!("{m}x{k}x{n}")), |b| {
            b.iter(|| {
                linear_f32(
                    &mut out,
                    black_box(&x),
                    &w,
                    Some(&bias),
                    m,
                    k,
                    n,
                    &mut scratch,
                    isa,
                )
            })
        });
    }
    g.finish();
}

fn rowwise(c: &mut Criterion) {
    let rows = 800;
    let (x, w) = (data(rows * D), data(D));
    let mut out = vec![0.0; rows * D];
    let mut g = c.benchmark_group("rowwise");
    g.throughput(Throughput::Bytes((2 * rows * D * 4) as u64));
    g.bench_function("rmsnorm 800x768", |b| {
        b.iter(|| rmsnorm(&mut out, black_box(&x), &w, rows, D, 1e-6, isa()))
    });
    let site = DropoutSite {
        seed: 1,
        sample: 3,
        site: 2,
        p: 0.1,
    };
    g.bench_function("dropout+residual 800x768", |b| {
        b.iter(|| {
            for (r, (h, a)) in out.chunks_exact_mut(D).zip(x.chunks_exact(D)).enumerate() {
                dropout_residual_add(h, a, Some(&site), (r % 16) as u32, isa());
            }
        })
    });
    let (gate, up) = (data(rows * F), data(rows * F));
    let mut gg = gate.clone();
    g.throughput(Throughput::Bytes((3 * rows * F * 4) as u64));
    g.bench_function("swiglu 800x2048", |b| {
        b.iter(|| {
            gg.copy_from_slice(&gate);
            swiglu(&mut gg, black_box(&up), isa())
        })
    });
    let freqs: Vec<f32> = (0..32)
        .map(|i| 1.0 / 10000f32.powf(i as f32 / 32.0))
        .collect();
    let (mut cos, mut sin) = (vec![0.0; 16 * 32], vec![0.0; 16 * 32]);
    rope_tables(&mut cos, &mut sin, &freqs, 16);
    let mut q = data(16 * D);
    g.throughput(Throughput::Bytes((2 * 16 * D * 4) as u64));
    g.bench_function("rope 16x768", |b| {
        b.iter(|| rope_rows(black_box(&mut q), &cos, &sin, 32, 0, D, D / H))
    });
    g.finish();
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    let isa = isa();
    for t in [8usize, 16, 64, 128, 512, 1024] {
        let (q, k, v) = (data(t * D), data(t * D), data(t * D));
        let mut out = vec![0.0; t * D];
        let mut scores = vec![0.0; scratch_len(D / H)];
        g.throughput(Throughput::Elements((4 * t * t * D) as u64));
        g.bench_function(BenchmarkId::new("T", t), |b| {
            b.iter(|| {
                attention_rows(
                    &mut out,
                    black_box(&q),
                    &k,
                    &v,
                    t,
                    D,
                    H,
                    0,
                    &mut scores,
                    isa,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gemm, rowwise, attention);
criterion_main!(benches);
