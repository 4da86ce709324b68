//! Checks of every CUDA kernel (kernels/cuda/emcoder.cu) against the CPU engine's kernels
//! and scalar references, written once for every place the kernels run: the CPU emulation
//! (tests/kernels/cuda_emulated.rs, every CI run) and a real GPU through cudarc
//! (tests/runtime/gpu_device.rs, scripts/gpu-check.sh).
//!
//! Masks, copies, pooling and the bf16 rounding must give the CPU engine's bits; the rest
//! agrees within a few f32 ulps (the GPU's expf, cosf, erff are not the CPU's).

#![allow(dead_code)]

use emcoder_kernels::activation::{gelu, gelu_tanh, silu};
use emcoder_kernels::attention::reference_attention;
use emcoder_kernels::norm::reference_rmsnorm_row;
use emcoder_kernels::philox::{dropout_inplace, dropout_residual_add, philox4x32_10, DropoutSite};
use emcoder_kernels::rope::{rope_rows, rope_tables};
use emcoder_kernels::Isa;

/// Runs one kernel: `args` are its parameters in order; the buffers among them hold their
/// contents after the kernel on return. False when the checks cannot run here (they then
/// return, the caller having said why).
pub trait Launch {
    fn launch(
        &self,
        head_dim: usize,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &mut [A],
    ) -> bool;
}

/// One kernel argument, as the harness (kernels/cuda/emulate/harness.cpp) reads it.
#[derive(Clone, Debug)]
pub enum A {
    F(Vec<f32>),
    U(Vec<u32>),
    I(Vec<i32>),
    H(Vec<u16>),
    Null,
    Int(i32),
    Uns(u32),
    Flt(f32),
    Long(i64),
}

impl A {
    pub fn f(&self) -> &[f32] {
        match self {
            A::F(v) => v,
            other => panic!("not an f32 buffer: {other:?}"),
        }
    }
    pub fn u(&self) -> &[u32] {
        match self {
            A::U(v) => v,
            other => panic!("not a u32 buffer: {other:?}"),
        }
    }
    pub fn h(&self) -> &[u16] {
        match self {
            A::H(v) => v,
            other => panic!("not a u16 buffer: {other:?}"),
        }
    }
}

/// Deterministic pseudo-random values in [-scale, scale) (xorshift).
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

pub fn blocks(n: usize, per: usize) -> u32 {
    n.div_ceil(per).max(1) as u32
}

/// Relative difference with a floor on the magnitude (for values near 0).
pub fn close(a: f32, b: f32, rel: f32, floor: f32) -> bool {
    (a - b).abs() <= rel * b.abs().max(floor)
}

pub fn philox_gives_the_known_answers_and_the_cpu_words(l: &dyn Launch) {
    let mut ctr = vec![
        0u32, 0, 0, 0, 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344,
    ];
    ctr.extend(values(4 * 40, 3, 1.0).iter().map(|x| x.to_bits()));
    let n = ctr.len() / 4;
    for key in [[0u32, 0], [0xa4093822, 0x299f31d0], [0xffff_ffff, 7]] {
        let mut args = [
            A::U(vec![0; 4 * n]),
            A::U(ctr.clone()),
            A::Int(n as i32),
            A::Uns(key[0]),
            A::Uns(key[1]),
        ];
        if !l.launch(
            16,
            "philox_words",
            [blocks(n, 32), 1, 1],
            [32, 1, 1],
            &mut args,
        ) {
            return;
        }
        for i in 0..n {
            let want = philox4x32_10(ctr[4 * i..4 * i + 4].try_into().unwrap(), key);
            assert_eq!(
                &args[0].u()[4 * i..4 * i + 4],
                &want,
                "counter {i}, key {key:x?}"
            );
        }
        if key == [0, 0] {
            assert_eq!(
                &args[0].u()[..4],
                &[0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
            );
        }
        if key == [0xa4093822, 0x299f31d0] {
            assert_eq!(
                &args[0].u()[4..8],
                &[0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
            );
        }
    }
}

/// The residual add through dropout gives the CPU engine's bits, row by row, with rows of
/// mixed positions and samples, widths that are not multiples of 4, a row stride wider than
/// the row, and dropout off.
pub fn dropout_masks_are_the_cpu_bits(l: &dyn Launch) {
    for (d, p, seed) in [
        (1usize, 0.1f32, 7u64),
        (6, 0.5, 1 << 40),
        (771, 0.1, 42),
        (64, 0.0, 3),
    ] {
        let rows = 9;
        let (ld_h, ld_a) = (d + 3, 2 * d);
        let pos: Vec<u32> = (0..rows as u32).map(|r| (r * 7) % 5).collect();
        let sample: Vec<u32> = (0..rows as u32).map(|r| r / 3 + 1).collect();
        let h0 = values(rows * ld_h, 1, 2.0);
        let a0 = values(rows * ld_a, 2, 2.0);
        let site = 5u32;
        for dropout in [1, 0] {
            let thr = ((p as f64) * 4_294_967_296.0).floor() as u32;
            let scale = 1.0f32 / (1.0 - p);
            let mut args = [
                A::F(h0.clone()),
                A::F(a0.clone()),
                A::U(pos.clone()),
                A::U(sample.clone()),
                A::Int(rows as i32),
                A::Int(d as i32),
                A::Int(ld_h as i32),
                A::Int(ld_a as i32),
                A::Uns(seed as u32),
                A::Uns((seed >> 32) as u32),
                A::Uns(site),
                A::Uns(thr),
                A::Flt(scale),
                A::Int(dropout),
            ];
            let n = rows * d.div_ceil(4);
            if !l.launch(
                16,
                "dropout_residual_add",
                [blocks(n, 128), 1, 1],
                [128, 1, 1],
                &mut args,
            ) {
                return;
            }
            let got = args[0].f();
            for r in 0..rows {
                let mut want = h0[r * ld_h..r * ld_h + d].to_vec();
                let s = DropoutSite {
                    seed,
                    sample: sample[r],
                    site,
                    p,
                };
                let site_opt = (dropout == 1).then_some(&s);
                dropout_residual_add(
                    &mut want,
                    &a0[r * ld_a..r * ld_a + d],
                    site_opt,
                    pos[r],
                    Isa::Generic,
                );
                let g = &got[r * ld_h..r * ld_h + d];
                assert!(
                    g.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "d={d} p={p} dropout={dropout} row {r}: not the CPU bits"
                );
                // The stride's padding is untouched.
                assert_eq!(
                    &got[r * ld_h + d..(r + 1) * ld_h],
                    &h0[r * ld_h + d..(r + 1) * ld_h]
                );
            }
        }
    }
}

pub fn head_dropout_is_the_cpu_bits(l: &dyn Launch) {
    let (rows, d, p, seed, site) = (7usize, 37usize, 0.25f32, 99u64, 24u32);
    let x0 = values(rows * d, 5, 3.0);
    let sample: Vec<u32> = (0..rows as u32).map(|r| r * 3).collect();
    let mut args = [
        A::F(x0.clone()),
        A::U(sample.clone()),
        A::Int(rows as i32),
        A::Int(d as i32),
        A::Uns(seed as u32),
        A::Uns(0),
        A::Uns(site),
        A::Uns(((p as f64) * 4_294_967_296.0).floor() as u32),
        A::Flt(1.0 / (1.0 - p)),
    ];
    if !l.launch(
        16,
        "dropout_inplace",
        [blocks(rows * 10, 64), 1, 1],
        [64, 1, 1],
        &mut args,
    ) {
        return;
    }
    for r in 0..rows {
        let mut want = x0[r * d..(r + 1) * d].to_vec();
        dropout_inplace(
            &mut want,
            &DropoutSite {
                seed,
                sample: sample[r],
                site,
                p,
            },
            0,
        );
        let got = &args[0].f()[r * d..(r + 1) * d];
        assert!(
            got.iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "row {r}"
        );
        assert!(got.contains(&0.0), "p = 0.25 over 37 channels drops some");
    }
}

pub fn row_gathers_and_bf16_rounding_are_exact(l: &dyn Launch) {
    let (vocab, d) = (11usize, 70usize);
    let table = values(vocab * d, 8, 5.0);
    let idx: Vec<u32> = vec![3, 0, 10, 3, 7];
    let rows = idx.len();
    let mut args = [
        A::F(vec![0.0; rows * d]),
        A::F(table.clone()),
        A::U(idx.clone()),
        A::Int(rows as i32),
        A::Int(d as i32),
    ];
    if !l.launch(
        16,
        "gather_rows",
        [blocks(d, 32), rows as u32, 1],
        [32, 1, 1],
        &mut args,
    ) {
        return;
    }
    for (r, &i) in idx.iter().enumerate() {
        assert_eq!(
            &args[0].f()[r * d..(r + 1) * d],
            &table[i as usize * d..(i as usize + 1) * d]
        );
    }
    let t16: Vec<u16> = table
        .iter()
        .map(|x| half::bf16::from_f32(*x).to_bits())
        .collect();
    let mut args = [
        A::F(vec![0.0; rows * d]),
        A::H(t16.clone()),
        A::U(idx.clone()),
        A::Int(rows as i32),
        A::Int(d as i32),
    ];
    l.launch(
        16,
        "gather_rows_bf16",
        [blocks(d, 32), rows as u32, 1],
        [32, 1, 1],
        &mut args,
    );
    for (r, &i) in idx.iter().enumerate() {
        for c in 0..d {
            let want = half::bf16::from_bits(t16[i as usize * d + c]).to_f32();
            assert_eq!(args[0].f()[r * d + c].to_bits(), want.to_bits());
        }
    }
    // Rounding to nearest even, ties both ways, subnormals, infinities, NaN, the largest
    // finite values (one rounds to infinity).
    let mut x: Vec<f32> = values(300, 9, 1e3);
    x.extend([
        0.0,
        -0.0,
        1.0,
        f32::from_bits(0x3f80_8000), // a tie, to even (down)
        f32::from_bits(0x3f81_8000), // a tie, to even (up)
        f32::from_bits(0x3f80_8001),
        f32::from_bits(0x0000_0001),
        f32::from_bits(0x8000_7fff),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001), // a signalling NaN stays a NaN
        f32::MAX,
        f32::from_bits(0x7f7f_7fff),
    ]);
    let mut args = [
        A::H(vec![0; x.len()]),
        A::F(x.clone()),
        A::Long(x.len() as i64),
    ];
    l.launch(
        16,
        "f32_to_bf16",
        [blocks(x.len(), 64), 1, 1],
        [64, 1, 1],
        &mut args,
    );
    for (v, got) in x.iter().zip(args[0].h()) {
        let want = half::bf16::from_f32(*v);
        if v.is_nan() {
            assert!(half::bf16::from_bits(*got).is_nan(), "{v:e} -> {got:#x}");
        } else {
            assert_eq!(*got, want.to_bits(), "{v:e} ({:#x})", v.to_bits());
        }
    }
}

pub fn rmsnorm_matches_the_reference(l: &dyn Launch) {
    for d in [1usize, 7, 255, 256, 257, 768, 1000] {
        let rows = 3;
        let x = values(rows * d, d as u64, 4.0);
        let w = values(d, 77, 1.5);
        let eps = 1.1920929e-7f32;
        let mut args = [
            A::F(vec![0.0; rows * d]),
            A::F(x.clone()),
            A::F(w.clone()),
            A::Int(rows as i32),
            A::Int(d as i32),
            A::Flt(eps),
        ];
        // 256 threads (a GPU's block) and 8 (fewer threads than channels; the emulated GPU
        // forward uses few).
        for threads in [256u32, 8] {
            if !l.launch(
                16,
                "rmsnorm",
                [rows as u32, 1, 1],
                [threads, 1, 1],
                &mut args,
            ) {
                return;
            }
            check_rmsnorm(&args[0], &x, &w, rows, d, eps);
        }
    }
}

fn check_rmsnorm(out: &A, x: &[f32], w: &[f32], rows: usize, d: usize, eps: f32) {
    for r in 0..rows {
        let mut want = vec![0.0; d];
        reference_rmsnorm_row(&mut want, &x[r * d..(r + 1) * d], w, eps);
        for (c, (g, y)) in out.f()[r * d..(r + 1) * d].iter().zip(&want).enumerate() {
            assert!(
                close(*g, *y, 4e-6, 1e-3),
                "d={d} row {r} channel {c}: {g} vs {y}"
            );
        }
    }
}

/// RoPE on the q and k parts of q|k|v rows at mixed positions, with a partial rotation
/// (rot_dim < head_dim: the tail passes through) and v untouched.
pub fn rope_matches_the_cpu_rotation(l: &dyn Launch) {
    for (n_heads, head_dim, half) in [(2usize, 8usize, 4usize), (3, 64, 16), (12, 64, 32)] {
        let d = n_heads * head_dim;
        let rows = 6;
        let ld = 3 * d;
        let pos: Vec<u32> = vec![0, 1, 2, 9, 130, 1];
        let freqs: Vec<f32> = (0..half)
            .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / (2 * half) as f32))
            .collect();
        let x0 = values(rows * ld, 11, 2.0);
        let mut args = [
            A::F(x0.clone()),
            A::U(pos.clone()),
            A::F(freqs.clone()),
            A::Int(rows as i32),
            A::Int(ld as i32),
            A::Int(0),
            A::Int(2 * n_heads as i32), // q and k are adjacent: one call rotates both
            A::Int(head_dim as i32),
            A::Int(half as i32),
        ];
        if !l.launch(
            16,
            "rope",
            [blocks(2 * n_heads * half, 64), rows as u32, 1],
            [64, 1, 1],
            &mut args,
        ) {
            return;
        }
        let tmax = 131;
        let (mut cos, mut sin) = (vec![0.0; tmax * half], vec![0.0; tmax * half]);
        rope_tables(&mut cos, &mut sin, &freqs, tmax);
        let got = args[0].f();
        for r in 0..rows {
            let mut want = x0[r * ld..r * ld + 2 * d].to_vec();
            // q and k rows as one row of 2 n_heads heads at position pos[r].
            rope_rows(
                &mut want,
                &cos,
                &sin,
                half,
                pos[r] as usize,
                2 * d,
                head_dim,
            );
            for (c, (g, y)) in got[r * ld..r * ld + 2 * d].iter().zip(&want).enumerate() {
                // cos/sin of large angles: the GPU's and the CPU's libm differ by an ulp or two
                assert!(
                    (g - y).abs() <= 2e-6 * 4.0,
                    "heads={n_heads} hd={head_dim} row {r} ch {c}: {g} vs {y}"
                );
                if c % head_dim >= 2 * half {
                    assert_eq!(g.to_bits(), y.to_bits(), "pass-through channel changed");
                }
            }
            assert_eq!(
                &got[r * ld + 2 * d..(r + 1) * ld],
                &x0[r * ld + 2 * d..(r + 1) * ld],
                "v changed"
            );
        }
    }
}

/// Packed sequences of lengths around the tiles (1, key tile +- 1, query tile +- 1, several
/// tiles) against the f64 reference, per sequence.
pub fn attention_matches_the_reference_on_packed_sequences(l: &dyn Launch) {
    for (head_dim, n_heads) in [(16usize, 2usize), (64, 3)] {
        let lens = [1usize, 5, 31, 33, 64, 65, 130];
        let d = head_dim * n_heads;
        let ld = 3 * d;
        let mut offsets = vec![0i32];
        for l in lens {
            offsets.push(offsets.last().unwrap() + l as i32);
        }
        let rows = *offsets.last().unwrap() as usize;
        // Scores of a few units: the softmax is neither flat nor one-hot.
        let qkv = values(rows * ld, head_dim as u64, 1.5);
        let mut args = [
            A::F(vec![f32::NAN; rows * d]),
            A::F(qkv.clone()),
            A::I(offsets.clone()),
            A::Int(n_heads as i32),
            A::Int(ld as i32),
            A::Int(0),
            A::Int(d as i32),
            A::Int(2 * d as i32),
            A::Int(d as i32),
        ];
        let longest = *lens.iter().max().unwrap();
        if !l.launch(
            head_dim,
            "attention",
            [blocks(longest, 64), n_heads as u32, lens.len() as u32],
            [64, 1, 1],
            &mut args,
        ) {
            return;
        }
        let got = args[0].f();
        let mut worst = 0.0f32;
        for (s, &t) in lens.iter().enumerate() {
            let r0 = offsets[s] as usize;
            let part = |col: usize| -> Vec<f32> {
                (0..t)
                    .flat_map(|i| qkv[(r0 + i) * ld + col..(r0 + i) * ld + col + d].to_vec())
                    .collect()
            };
            let (q, k, v) = (part(0), part(d), part(2 * d));
            let mut want = vec![0.0; t * d];
            reference_attention(&mut want, &q, &k, &v, t, d, n_heads);
            for (i, (g, y)) in got[r0 * d..(r0 + t) * d].iter().zip(&want).enumerate() {
                let e = (g - y).abs() / y.abs().max(1.0);
                worst = worst.max(e);
                assert!(
                    e <= 2e-5,
                    "hd={head_dim} seq {s} (t={t}) element {i}: {g} vs {y}"
                );
            }
        }
        eprintln!("attention hd={head_dim}: max relative error {worst:e}");
    }
}

pub fn pointwise_kernels_match_the_cpu_functions(l: &dyn Launch) {
    let (rows, f) = (5usize, 131usize);
    let ld = 2 * f + 3;
    let gu = values(rows * ld, 21, 12.0);
    let mut args = [
        A::F(vec![0.0; rows * f]),
        A::F(gu.clone()),
        A::Int(rows as i32),
        A::Int(f as i32),
        A::Int(ld as i32),
        A::Int(0),
        A::Int(f as i32),
    ];
    if !l.launch(
        16,
        "swiglu",
        [blocks(rows * f, 128), 1, 1],
        [128, 1, 1],
        &mut args,
    ) {
        return;
    }
    for r in 0..rows {
        for c in 0..f {
            let want = silu(gu[r * ld + c]) * gu[r * ld + f + c];
            let g = args[0].f()[r * f + c];
            assert!(
                close(g, want, 1e-6, 1e-6),
                "swiglu row {r} ch {c}: {g} vs {want}"
            );
        }
    }
    let n = 29;
    let x = values(rows * n, 22, 6.0);
    let b = values(n, 23, 1.0);
    for (act, name) in [(0, "none"), (1, "gelu"), (2, "gelu_tanh")] {
        for bias in [true, false] {
            let mut args = [
                A::F(x.clone()),
                if bias { A::F(b.clone()) } else { A::Null },
                A::Int(rows as i32),
                A::Int(n as i32),
                A::Int(act),
            ];
            l.launch(
                16,
                "bias_act",
                [blocks(rows * n, 64), 1, 1],
                [64, 1, 1],
                &mut args,
            );
            for i in 0..rows * n {
                let v = x[i] + if bias { b[i % n] } else { 0.0 };
                let want = match act {
                    0 => v,
                    1 => gelu(v),
                    _ => gelu_tanh(v),
                };
                let g = args[0].f()[i];
                assert!(
                    close(g, want, 2e-6, 1e-5),
                    "{name} bias={bias} {i}: {g} vs {want}"
                );
            }
        }
    }
}

pub fn mean_pool_is_the_cpu_f64_mean(l: &dyn Launch) {
    let d = 300;
    let lens = [1usize, 4, 17, 2];
    let mut offsets = vec![0i32];
    for l in lens {
        offsets.push(offsets.last().unwrap() + l as i32);
    }
    let rows = *offsets.last().unwrap() as usize;
    let h = values(rows * d, 31, 3.0);
    let mut args = [
        A::F(vec![0.0; lens.len() * d]),
        A::F(h.clone()),
        A::I(offsets.clone()),
        A::Int(lens.len() as i32),
        A::Int(d as i32),
    ];
    if !l.launch(
        16,
        "mean_pool",
        [blocks(d, 128), lens.len() as u32, 1],
        [128, 1, 1],
        &mut args,
    ) {
        return;
    }
    for (s, &t) in lens.iter().enumerate() {
        for c in 0..d {
            let r0 = offsets[s] as usize;
            // f64 sums in row order, as the CPU engine pools: the same bits.
            let want = ((0..t).map(|i| h[(r0 + i) * d + c] as f64).sum::<f64>() / t as f64) as f32;
            let g = args[0].f()[s * d + c];
            assert_eq!(g.to_bits(), want.to_bits(), "seq {s} ch {c}: {g} vs {want}");
        }
    }
}

/// The statistics of runtime/src/engine/stats.rs (mean, N-1 std, entropy decomposition),
/// written out here in f64 from their definitions (spec section 2).
pub fn label_stats_match_the_definitions(l: &dyn Launch) {
    fn entropy(p: f64) -> f64 {
        let t = |x: f64| if x > 0.0 { -x * x.ln() } else { 0.0 };
        t(p) + t(1.0 - p)
    }
    let labels = 28;
    for n_samples in [1usize, 2, 50] {
        let n_texts = 3;
        let mut logits = values(n_texts * n_samples * labels, n_samples as u64, 6.0);
        logits[0] = 120.0; // saturated: p = 1, entropy 0
        logits[1] = -120.0;
        let mut args = [
            A::F(vec![0.0; n_texts * labels * 5]),
            A::F(logits.clone()),
            A::Int(n_texts as i32),
            A::Int(n_samples as i32),
            A::Int(labels as i32),
        ];
        if !l.launch(
            16,
            "label_stats",
            [blocks(n_texts * labels, 64), 1, 1],
            [64, 1, 1],
            &mut args,
        ) {
            return;
        }
        for t in 0..n_texts {
            for c in 0..labels {
                let p: Vec<f64> = (0..n_samples)
                    .map(|s| {
                        emcoder_kernels::activation::sigmoid(
                            logits[(t * n_samples + s) * labels + c],
                        ) as f64
                    })
                    .collect();
                let n = n_samples as f64;
                let mean = p.iter().sum::<f64>() / n;
                let std = if n_samples > 1 {
                    (p.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt()
                } else {
                    0.0
                };
                let total = entropy(mean);
                let ale = p.iter().map(|x| entropy(*x)).sum::<f64>() / n;
                let epi = if n_samples > 1 {
                    (total - ale).max(0.0)
                } else {
                    0.0
                };
                let got = &args[0].f()[(t * labels + c) * 5..(t * labels + c) * 5 + 5];
                for (k, (g, w)) in got.iter().zip([mean, std, total, ale, epi]).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-6 * w.abs().max(1e-3),
                        "N={n_samples} text {t} label {c} stat {k}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

/// Every check, by name.
/// A check of the kernels on a launcher.
pub type Check = fn(&dyn Launch);

pub const CHECKS: [(&str, Check); 10] = [
    (
        "philox_gives_the_known_answers_and_the_cpu_words",
        philox_gives_the_known_answers_and_the_cpu_words,
    ),
    (
        "dropout_masks_are_the_cpu_bits",
        dropout_masks_are_the_cpu_bits,
    ),
    ("head_dropout_is_the_cpu_bits", head_dropout_is_the_cpu_bits),
    (
        "row_gathers_and_bf16_rounding_are_exact",
        row_gathers_and_bf16_rounding_are_exact,
    ),
    (
        "rmsnorm_matches_the_reference",
        rmsnorm_matches_the_reference,
    ),
    (
        "rope_matches_the_cpu_rotation",
        rope_matches_the_cpu_rotation,
    ),
    (
        "attention_matches_the_reference_on_packed_sequences",
        attention_matches_the_reference_on_packed_sequences,
    ),
    (
        "pointwise_kernels_match_the_cpu_functions",
        pointwise_kernels_match_the_cpu_functions,
    ),
    (
        "mean_pool_is_the_cpu_f64_mean",
        mean_pool_is_the_cpu_f64_mean,
    ),
    (
        "label_stats_match_the_definitions",
        label_stats_match_the_definitions,
    ),
];
