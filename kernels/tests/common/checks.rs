//! Checks of the kernels against their scalar references on any shape and values, shared
//! by the property tests (`kernels/tests/properties.rs`, proptest) and the fuzz target
//! (`fuzz/fuzz_targets/kernels.rs`, which includes this file).
//!
//! Each function takes a shape, `raw` (the values are any f32 bits: NaN, infinities,
//! subnormals, huge) and bytes the values are made from, and asserts: no panic; the
//! bit-identity contracts (the f32 products, attention, SwiGLU and the dropout masks give
//! the same bits at every level, on 1 and 3 threads, for any row split); agreement with the
//! f64 references within the rounding bound on finite, moderate values.
#![allow(dead_code)]

use emcoder_kernels::activation::{silu, swiglu};
use emcoder_kernels::attention::{attention_rows, reference_attention, scratch_len};
use emcoder_kernels::gemm_bf16::{linear_bf16, reference_linear_bf16, PackedBf16};
use emcoder_kernels::gemm_f32::{linear_f32, reference_linear_f32};
use emcoder_kernels::norm::{reference_rmsnorm_row, rmsnorm};
use emcoder_kernels::philox::{dropout_residual_add, DropoutSite};
use emcoder_kernels::{caps, Isa};
use std::sync::OnceLock;

/// `len` floats from bytes. `raw`: each 4 bytes are an f32's bits (NaN, infinities,
/// subnormals, huge values); otherwise each byte is a small value in [-4, 4) (the range of
/// real activations, where results are compared with the f64 references).
pub fn floats(len: usize, bytes: &[u8], raw: bool) -> Vec<f32> {
    if bytes.is_empty() {
        return vec![0.0; len];
    }
    (0..len)
        .map(|i| {
            if raw {
                let b = |j: usize| bytes[(4 * i + j) % bytes.len()];
                f32::from_bits(u32::from_le_bytes([b(0), b(1), b(2), b(3)]))
            } else {
                let x = bytes[(i * 7 + i / bytes.len()) % bytes.len()] as i32 - 128;
                x as f32 / 32.0
            }
        })
        .collect()
}

/// The same bits, or both NaN (the NaN payload and sign are not part of any contract).
pub fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

pub fn pools() -> &'static [rayon::ThreadPool; 2] {
    static P: OnceLock<[rayon::ThreadPool; 2]> = OnceLock::new();
    P.get_or_init(|| {
        let p = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        [p(1), p(3)]
    })
}

pub fn levels() -> &'static [Isa] {
    &caps().available
}

/// Sum of |x_i w_i| (+ |b|), in f64: the scale of a dot product's rounding error.
pub fn magnitude(x: &[f32], w: &[f32], b: f32) -> f64 {
    x.iter()
        .zip(w)
        .map(|(a, c)| (*a as f64 * *c as f64).abs())
        .sum::<f64>()
        + (b as f64).abs()
}

pub fn finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

pub fn gemm_f32_check(m: usize, k: usize, n: usize, bias: bool, raw: bool, bytes: &[u8]) {
    let x = floats(m * k, bytes, raw);
    let w = floats(n * k, &bytes[bytes.len() / 2..], raw);
    let b = bias.then(|| floats(n, &bytes[bytes.len() / 3..], raw));
    let mut first: Option<Vec<f32>> = None;
    for &isa in levels() {
        for pool in pools() {
            let mut out = vec![f32::NAN; m * n];
            let mut scratch = Vec::new();
            pool.install(|| linear_f32(&mut out, &x, &w, b.as_deref(), m, k, n, &mut scratch, isa));
            match &first {
                None => first = Some(out),
                Some(f) => {
                    for (i, (a, c)) in out.iter().zip(f).enumerate() {
                        assert!(
                            same(*a, *c),
                            "linear_f32 {isa} {m}x{k}x{n}: element {i} {a} vs {c}"
                        );
                    }
                }
            }
        }
    }
    let Some(out) = first else { return };
    let mut refo = vec![0.0; m * n];
    reference_linear_f32(&mut refo, &x, &w, b.as_deref(), m, k, n);
    if !(finite(&x) && finite(&w) && b.as_deref().is_none_or(finite)) {
        return;
    }
    // An FMA chain of k terms: |error| <= (k + 1) u sum|x w| (u = 2^-24).
    assert_within_rounding(
        "linear_f32",
        &out,
        &refo,
        &x,
        &w,
        b.as_deref(),
        (m, k, n),
        1e37,
        1.0,
        false,
    );
}

pub fn gemm_bf16_check(m: usize, k: usize, n: usize, bias: bool, raw: bool, bytes: &[u8]) {
    let x = floats(m * k, bytes, raw);
    let wf = floats(n * k, &bytes[bytes.len() / 2..], raw);
    let b = bias.then(|| floats(n, &bytes[bytes.len() / 3..], raw));
    let packed = PackedBf16::pack(&wf, n, k, Isa::Generic);
    let mut refo = vec![0.0; m * n];
    reference_linear_bf16(&mut refo, &x, &packed, b.as_deref(), m);
    let check = finite(&x) && finite(&wf) && b.as_deref().is_none_or(finite);
    for &isa in levels() {
        let w = PackedBf16::pack(&wf, n, k, isa);
        let mut per_pool: Option<Vec<f32>> = None;
        for pool in pools() {
            let mut out = vec![f32::NAN; m * n];
            let mut xp = Vec::new();
            pool.install(|| linear_bf16(&mut out, &x, &w, b.as_deref(), m, &mut xp, isa));
            match &per_pool {
                None => per_pool = Some(out),
                Some(f) => assert!(
                    out.iter().zip(f).all(|(a, c)| same(*a, *c)),
                    "linear_bf16 {isa} {m}x{k}x{n}: thread count changed bits"
                ),
            }
        }
        let out = per_pool.unwrap();
        if !check {
            continue;
        }
        // bf16-rounded operands (|rounding| <= 2^-8 relative each) summed in f32.
        let what = format!("linear_bf16 {isa}");
        assert_within_rounding(
            &what,
            &out,
            &refo,
            &x,
            &wf,
            b.as_deref(),
            (m, k, n),
            1e36,
            1.02,
            true,
        );
    }
}

/// Asserts that every element of `out` (m, n) is within the rounding bound of an FMA chain
/// of the f64 reference `refo`: `(k + 2) u sum|x w| * slack` plus the subnormal floor
/// (u = 2^-24), skipping elements whose `sum |x w|` exceeds `max_mag` (they may overflow f32
/// on the way). `bf16_dot`: the products may come from bf16 dot-product instructions
/// (`vdpbf16ps`, AMX `tdpbf16ps`, Arm `bfdot`), which treat subnormal bf16 inputs as zero: the
/// terms with a subnormal factor may then be missing (they matter only when the other factor
/// is huge, which raw bit patterns produce).
#[allow(clippy::too_many_arguments)]
fn assert_within_rounding(
    what: &str,
    out: &[f32],
    refo: &[f32],
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    (m, k, n): (usize, usize, usize),
    max_mag: f64,
    slack: f64,
    bf16_dot: bool,
) {
    let subnormal = |v: f32| {
        let b = half::bf16::from_f32(v);
        b.is_finite() && !b.is_normal() && b.to_bits() & 0x7fff != 0
    };
    for i in 0..m {
        for j in 0..n {
            let mag = magnitude(
                &x[i * k..(i + 1) * k],
                &w[j * k..(j + 1) * k],
                b.map_or(0.0, |b| b[j]),
            );
            if mag > max_mag {
                continue;
            }
            let flushed: f64 = if bf16_dot {
                (0..k)
                    .filter(|&p| subnormal(x[i * k + p]) || subnormal(w[j * k + p]))
                    .map(|p| (x[i * k + p] as f64 * w[j * k + p] as f64).abs())
                    .sum()
            } else {
                0.0
            };
            let bound = (k as f64 + 2.0) * 2f64.powi(-24) * mag * slack + 1e-37 + 1.01 * flushed;
            let (a, r) = (out[i * n + j] as f64, refo[i * n + j] as f64);
            assert!(
                (a - r).abs() <= bound,
                "{what} {m}x{k}x{n} ({i},{j}): {a} vs {r} (bound {bound})"
            );
        }
    }
}

pub fn attention_check(t: usize, nh: usize, hd: usize, split: usize, raw: bool, bytes: &[u8]) {
    let d = nh * hd;
    let q = floats(t * d, bytes, raw);
    let kk = floats(t * d, &bytes[bytes.len() / 3..], raw);
    let v = floats(t * d, &bytes[2 * bytes.len() / 3..], raw);
    let run = |isa: Isa, split: usize| {
        let mut out = vec![f32::NAN; t * d];
        let mut scratch = vec![f32::NAN; scratch_len(hd)];
        for (b, blk) in out.chunks_mut(split * d).enumerate() {
            attention_rows(blk, &q, &kk, &v, t, d, nh, b * split, &mut scratch, isa);
        }
        out
    };
    let generic = run(Isa::Generic, t);
    for &isa in levels() {
        let o = run(isa, split);
        for (i, (a, c)) in o.iter().zip(&generic).enumerate() {
            assert!(
                same(*a, *c),
                "attention {isa} t={t} heads={nh} hd={hd} split={split}: element {i} {a} vs {c}"
            );
        }
    }
    if raw || t > 200 {
        return; // the f64 reference is t^2 work; raw values overflow the scores
    }
    let mut refo = vec![0.0; t * d];
    reference_attention(&mut refo, &q, &kk, &v, t, d, nh);
    for (i, (a, r)) in generic.iter().zip(&refo).enumerate() {
        // Scores up to 16 hd / sqrt(hd) in size: their rounding moves the weights by
        // ~ hd * 2^-24 * |s| relative; values are below 4.
        let tol = 4.0 * (hd as f32 + 8.0) * 1.2e-7 * (16.0 * (hd as f32).sqrt() + 1.0);
        assert!(
            (a - r).abs() <= tol,
            "attention t={t} heads={nh} hd={hd}: element {i} {a} vs {r} (tol {tol})"
        );
    }
}

pub fn norm_check(rows: usize, d: usize, eps: f32, raw: bool, bytes: &[u8]) {
    let x = floats(rows * d, bytes, raw);
    let w = floats(d, &bytes[bytes.len() / 2..], raw);
    let mut refo = vec![0.0; rows * d];
    for r in 0..rows {
        reference_rmsnorm_row(
            &mut refo[r * d..(r + 1) * d],
            &x[r * d..(r + 1) * d],
            &w,
            eps,
        );
    }
    for &isa in levels() {
        let mut out = vec![f32::NAN; rows * d];
        rmsnorm(&mut out, &x, &w, rows, d, eps, isa);
        if raw {
            continue;
        }
        for (i, (a, r)) in out.iter().zip(&refo).enumerate() {
            // x * w / rms: the mean square's rounding (<= d u relative) plus a few ulps.
            let tol = (d as f32 + 8.0) * 1.2e-7 * r.abs() + 1e-37;
            assert!(
                (a - r).abs() <= tol,
                "rmsnorm {isa} rows={rows} d={d} eps={eps}: element {i} {a} vs {r}"
            );
        }
    }
}

pub fn swiglu_check(n: usize, raw: bool, bytes: &[u8]) {
    let g = floats(n, bytes, raw);
    let u = floats(n, &bytes[bytes.len() / 2..], raw);
    let want: Vec<f32> = g.iter().zip(&u).map(|(a, b)| silu(*a) * *b).collect();
    for &isa in levels() {
        let mut o = g.clone();
        swiglu(&mut o, &u, isa);
        for (i, (a, c)) in o.iter().zip(&want).enumerate() {
            assert!(
                same(*a, *c),
                "swiglu {isa} n={n}: element {i} ({}) {a} vs {c}",
                g[i]
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn dropout_check(
    n: usize,
    p: f32,
    seed: u64,
    sample: u32,
    site: u32,
    pos: u32,
    raw: bool,
    bytes: &[u8],
) {
    let h0 = floats(n, bytes, raw);
    let a = floats(n, &bytes[bytes.len() / 2..], raw);
    let s = DropoutSite {
        seed,
        sample,
        site,
        p,
    };
    let want: Vec<f32> = (0..n)
        .map(|c| {
            if s.keep(pos, c as u32) {
                h0[c] + a[c] * s.scale()
            } else {
                h0[c]
            }
        })
        .collect();
    for &isa in levels() {
        let mut h = h0.clone();
        dropout_residual_add(&mut h, &a, Some(&s), pos, isa);
        for (i, (x, y)) in h.iter().zip(&want).enumerate() {
            assert!(
                same(*x, *y),
                "dropout {isa} n={n} p={p}: channel {i} {x} vs {y}"
            );
        }
    }
}
