//! Tests of the module: every level against the scalar reference, invariance, packing.

use super::*;

fn isas() -> Vec<Isa> {
    let v = crate::cpu::caps().available.clone();
    eprintln!("bf16 kernels tested here: {v:?}");
    v
}

#[test]
fn every_isa_matches_the_scalar_reference_on_odd_sizes() {
    for (m, k, n) in [
        (1usize, 1usize, 1usize),
        (5, 3, 7),
        (6, 64, 64),
        (7, 65, 65),
        (13, 33, 130),
        (97, 96, 28),
        (33, 768, 100),
    ] {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.125)
            .collect();
        let wf: Vec<f32> = (0..n * k)
            .map(|i| ((i * 29 % 11) as f32 - 5.0) * 0.0625)
            .collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
        let w = PackedBf16::pack(&wf, n, k, Isa::Generic);
        let mut refo = vec![0.0; m * n];
        reference_linear_bf16(&mut refo, &x, &w, Some(&b), m);
        for isa in isas() {
            let mut out = vec![f32::NAN; m * n];
            let mut xp = Vec::new();
            linear_bf16(&mut out, &x, &w, Some(&b), m, &mut xp, isa);
            for (a, r) in out.iter().zip(&refo) {
                // f32 accumulation of exact bf16 products: relative error ~ k * 2^-24
                assert!(
                    (a - r).abs() <= 1e-5 * (k as f32) * r.abs().max(1.0),
                    "{isa:?} {m}x{k}x{n}: {a} vs {r}"
                );
            }
        }
    }
}

/// Every level's vector block packing gives the scalar loop's words, for NaN,
/// infinities, subnormals, ties and shapes with partial blocks (columns and pairs), and
/// fused parts.
#[test]
fn simd_packing_equals_scalar_packing() {
    let levels: Vec<Isa> = crate::cpu::caps()
        .available
        .iter()
        .copied()
        .filter(|i| *i != Isa::Generic)
        .collect();
    eprintln!("vector packing tested at: {levels:?}");
    let mut x = 0x9e37_79b9u32;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        match x % 16 {
            0 => f32::NAN,
            1 => f32::NEG_INFINITY,
            2 => f32::from_bits(x % 0x0080_0000), // subnormal
            3 => f32::from_bits((x & 0xffff_0000) | 0x8000), // a tie
            _ => f32::from_bits(x) % 1e6,
        }
    };
    for (k, widths) in [
        (768usize, vec![64usize]),
        (64, vec![16, 48]),
        (96, vec![40, 70, 64]),
        (65, vec![33]),
        (31, vec![64]),
        (800, vec![130]),
        (8, vec![8, 3]),
        (17, vec![5, 4]),
    ] {
        let ws: Vec<Vec<f32>> = widths
            .iter()
            .map(|n| (0..n * k).map(|_| next()).collect())
            .collect();
        let parts: Vec<(&[f32], usize)> = ws
            .iter()
            .zip(&widths)
            .map(|(w, &n)| (w.as_slice(), n))
            .collect();
        let b = PackedBf16::pack_parts_with(&parts, k, None).unwrap();
        for &isa in &levels {
            let a = PackedBf16::pack_parts_with(&parts, k, Some(isa)).unwrap();
            assert!(
                a.data.words() == b.data.words(),
                "{isa}: k {k} widths {widths:?}"
            );
        }
    }
}

#[test]
fn bf16_rounding_matches_half() {
    let mut vals: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
        f32::from_bits(0x3f80_8000), // a tie: rounds to even
        f32::from_bits(0x3f81_8000), // a tie: rounds up to even
        f32::from_bits(0x7f7f_ffff),
    ];
    let mut x = 0x1234_5678u32;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        vals.push(f32::from_bits(x));
    }
    for v in vals {
        assert_eq!(
            bf16_bits(v),
            bf16::from_f32(v).to_bits() as u32,
            "{v:e} {:#x}",
            v.to_bits()
        );
    }
}

/// q, k and v packed as one product, split back into three buffers, with an epilogue,
/// give the bits of three separate products followed by the same epilogue.
#[test]
fn fused_parts_split_outputs_and_epilogue() {
    // widths 40 + 70 + 64: part boundaries fall inside 64-column panels.
    let (m, k) = (37usize, 50usize);
    let widths = [40usize, 70, 64];
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.1)
        .collect();
    let ws: Vec<Vec<f32>> = widths
        .iter()
        .enumerate()
        .map(|(p, &n)| {
            (0..n * k)
                .map(|i| ((i * 7 + p) % 19) as f32 * 0.05 - 0.4)
                .collect()
        })
        .collect();
    let bias: Vec<f32> = (0..widths.iter().sum::<usize>())
        .map(|i| i as f32 * 0.01)
        .collect();
    let epi = |row: usize, c0: usize, v: &mut [f32]| {
        for (j, x) in v.iter_mut().enumerate() {
            *x = *x * 2.0 + (row * 1000 + c0 + j) as f32;
        }
    };
    for isa in isas() {
        let mut xp = Vec::new();
        pack_activations(&mut xp, &x, m, k, isa);
        let a = PackedActivations::new(&xp, m, k, isa);
        let fused = PackedBf16::pack_parts(
            &[
                (&ws[0], widths[0]),
                (&ws[1], widths[1]),
                (&ws[2], widths[2]),
            ],
            k,
            isa,
        );
        let mut outs: Vec<Vec<f32>> = widths.iter().map(|n| vec![f32::NAN; m * n]).collect();
        {
            let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            linear_bf16_packed_into(&mut refs, &a, &fused, Some(&bias), Some(&epi));
        }
        let mut c0 = 0;
        for (p, &n) in widths.iter().enumerate() {
            let mut want = vec![0.0; m * n];
            let w = PackedBf16::pack(&ws[p], n, k, isa);
            linear_bf16_packed(&mut want, &a, &w, Some(&bias[c0..c0 + n]));
            for (r, row) in want.chunks_exact_mut(n).enumerate() {
                epi(r, c0, row);
            }
            assert_eq!(outs[p], want, "{isa:?} part {p}");
            c0 += n;
        }
    }
}

#[test]
fn rows_do_not_depend_on_m_or_threads() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // k = 300: 160 pairs, three K-blocks where a task of at most 32 rows runs blocked
    // (m = 1..7, and the last 8 rows of mmax), while the rows of tasks of 96 run unblocked.
    let (k, n, mmax) = (300usize, 130usize, 200usize);
    let x: Vec<f32> = (0..mmax * k)
        .map(|i| (i * 7919 % 1013) as f32 / 1013.0 - 0.5)
        .collect();
    let wf: Vec<f32> = (0..n * k)
        .map(|i| (i * 104729 % 997) as f32 / 997.0 - 0.5)
        .collect();
    let w = PackedBf16::pack(&wf, n, k, Isa::Generic);
    for isa in isas() {
        let mut xp = Vec::new();
        let mut base = vec![0.0; mmax * n];
        linear_bf16(&mut base, &x, &w, None, mmax, &mut xp, isa);
        for m in [1usize, 5, 6, 7, 95, 96, 97, 150] {
            let mut o = vec![0.0; m * n];
            pool.install(|| linear_bf16(&mut o, &x, &w, None, m, &mut xp, isa));
            assert!(o[..] == base[..m * n], "{isa:?} m={m}");
        }
    }
}

/// The widening levels (generic, avx2, avx512, neon) compute the same chain per
/// element, so they give the same bits; `bfdot`/`vdpbf16ps`/AMX only agree within the
/// tolerance of the reference test.
#[test]
fn widening_levels_give_the_same_bits() {
    let (m, k, n) = (37usize, 130usize, 200usize);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 29) as f32 - 14.0) * 0.07)
        .collect();
    let wf: Vec<f32> = (0..n * k)
        .map(|i| ((i * 11 % 31) as f32 - 15.0) * 0.03)
        .collect();
    let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
    let w = PackedBf16::pack(&wf, n, k, Isa::Generic);
    let mut want = vec![0.0; m * n];
    linear_bf16(
        &mut want,
        &x,
        &w,
        Some(&b),
        m,
        &mut Vec::new(),
        Isa::Generic,
    );
    for isa in isas().into_iter().filter(|i| layout(*i) == Layout::Floats) {
        let mut o = vec![0.0; m * n];
        linear_bf16(&mut o, &x, &w, Some(&b), m, &mut Vec::new(), isa);
        assert!(o == want, "{isa}");
    }
}

/// Found by fuzzing (fuzz/, target `kernels`): packing a weight with no input channels
/// (k = 0) panicked in the parallel packing loop ("chunk_size must not be zero"). The
/// product of an empty row is the bias, at every level.
#[test]
fn zero_input_channels() {
    let (m, n) = (3usize, 5usize);
    let b: Vec<f32> = (0..n).map(|i| i as f32 - 1.5).collect();
    for isa in isas() {
        let w = PackedBf16::pack(&[], n, 0, isa);
        let mut out = vec![f32::NAN; m * n];
        linear_bf16(&mut out, &[], &w, Some(&b), m, &mut Vec::new(), isa);
        for r in 0..m {
            assert_eq!(out[r * n..(r + 1) * n], b[..], "{isa}");
        }
        linear_bf16(&mut out, &[], &w, None, m, &mut Vec::new(), isa);
        assert!(out.iter().all(|&x| x == 0.0), "{isa}");
    }
}
