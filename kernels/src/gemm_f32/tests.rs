//! Tests of the module: every level against the scalar reference, invariance, packing.

use super::*;

fn isas() -> Vec<Isa> {
    let v = crate::cpu::caps().available.clone();
    eprintln!("f32 kernels tested here: {v:?}");
    v
}

/// Several weights in one pass give each weight's own product, bit for bit.
#[test]
fn parts_equal_separate_products() {
    let k = 96;
    let widths = [40usize, 7, 33, 0, 64];
    let ws: Vec<Vec<f32>> = widths
        .iter()
        .enumerate()
        .map(|(i, &n)| data(n * k, 31 + 2 * i, 97))
        .collect();
    let bs: Vec<Vec<f32>> = widths.iter().map(|&n| data(n, 7, 13)).collect();
    for isa in isas() {
        for m in [1usize, 16, 33, 100] {
            let x = data(m * k, 17, 101);
            let mut outs: Vec<Vec<f32>> = widths.iter().map(|n| vec![f32::NAN; m * n]).collect();
            {
                let mut parts: Vec<F32Part> = outs
                    .iter_mut()
                    .zip(&ws)
                    .zip(&bs)
                    .zip(widths)
                    .enumerate()
                    .map(|(i, (((o, w), b), n))| {
                        (
                            o.as_mut_slice(),
                            w.as_slice(),
                            (i % 2 == 0).then_some(b.as_slice()),
                            n,
                        )
                    })
                    .collect();
                linear_f32_parts(&mut parts, &x, m, k, &mut Vec::new(), isa, None);
            }
            for (i, &n) in widths.iter().enumerate() {
                let mut want = vec![0.0; m * n];
                let b = (i % 2 == 0).then_some(bs[i].as_slice());
                linear_f32(&mut want, &x, &ws[i], b, m, k, n, &mut Vec::new(), isa);
                assert!(outs[i] == want, "{isa:?} m={m} part {i}");
            }
        }
    }
}

/// The epilogue sees every output element exactly once, in pieces that start at even
/// columns, with the right part, row and column: `v -> 2 v + part + column / 8 + row`
/// applied twice or not at all gives other values.
#[test]
fn epilogue_sees_every_element_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let k = 80;
    // 500 columns: several tasks per panel (at most 16 tiles each).
    let widths = [500usize, 7, 0, 64];
    let ws: Vec<Vec<f32>> = widths
        .iter()
        .enumerate()
        .map(|(i, &n)| data(n * k, 29 + 2 * i, 89))
        .collect();
    let f = |part: usize, row: usize, col: usize, v: f32| {
        2.0 * v + part as f32 + (col / 8) as f32 + row as f32
    };
    for isa in isas() {
        for m in [1usize, 16, 33, 100] {
            let x = data(m * k, 19, 103);
            let odd = AtomicBool::new(false);
            let ep = |part: usize, row: usize, c0: usize, vals: &mut [f32]| {
                if c0 % 2 == 1 {
                    odd.store(true, Ordering::Relaxed);
                }
                for (j, v) in vals.iter_mut().enumerate() {
                    *v = f(part, row, c0 + j, *v);
                }
            };
            let mut outs: Vec<Vec<f32>> = widths.iter().map(|n| vec![0.0; m * n]).collect();
            {
                let mut parts: Vec<F32Part> = outs
                    .iter_mut()
                    .zip(&ws)
                    .zip(widths)
                    .map(|((o, w), n)| (o.as_mut_slice(), w.as_slice(), None, n))
                    .collect();
                linear_f32_parts(&mut parts, &x, m, k, &mut Vec::new(), isa, Some(&ep));
            }
            assert!(
                !odd.load(Ordering::Relaxed),
                "{isa:?} m={m}: odd first column"
            );
            for (i, &n) in widths.iter().enumerate() {
                let mut want = vec![0.0; m * n];
                linear_f32(&mut want, &x, &ws[i], None, m, k, n, &mut Vec::new(), isa);
                for (e, v) in want.iter_mut().enumerate() {
                    *v = f(i, e / n, e % n, *v);
                }
                assert!(outs[i] == want, "{isa:?} m={m} part {i}");
            }
        }
    }
}

fn data(len: usize, a: usize, b: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (i * a % b) as f32 / b as f32 - 0.5)
        .collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[test]
fn every_isa_matches_the_scalar_reference_on_odd_sizes() {
    for (m, k, n) in [
        (1usize, 1usize, 1usize),
        (3, 5, 7),
        (17, 33, 9),
        (31, 100, 45),
        (64, 96, 130),
        (33, 768, 28),
        (5, 2048, 768),
        (3, 64, 10),
        (40, 1024, 23),
    ] {
        let x = data(m * k, 7919, 1013);
        let w = data(n * k, 104729, 997);
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 1.0).collect();
        for bias in [None, Some(b.as_slice())] {
            let mut refo = vec![0.0; m * n];
            reference_linear_f32(&mut refo, &x, &w, bias, m, k, n);
            for isa in isas() {
                let mut out = vec![f32::NAN; m * n];
                let mut scratch = Vec::new();
                linear_f32(&mut out, &x, &w, bias, m, k, n, &mut scratch, isa);
                for (a, r) in out.iter().zip(&refo) {
                    assert!(
                        (a - r).abs() <= 1e-5 * (k as f32).sqrt() * r.abs().max(1.0),
                        "{isa:?} {m}x{k}x{n}: {a} vs {r}"
                    );
                }
            }
        }
    }
}

/// A row's result is bit-identical whatever the number of rows and threads.
#[test]
fn rows_do_not_depend_on_m_or_threads() {
    let pools = [pool(1), pool(2)];
    // Debug builds (`cargo test` without --release) check the smaller shapes only.
    let shapes: &[(usize, usize)] = if cfg!(debug_assertions) {
        &[(16, 16), (768, 28), (2048, 28), (40, 16), (256, 688)]
    } else {
        &[
            (16, 16),
            (768, 28),
            (2048, 28),
            (40, 16),
            (256, 688),
            (768, 2304),
            (2048, 768),
            (768, 2048),
        ]
    };
    let all_m: Vec<usize> = (1..40).chain([63, 64, 65, 127, 200, 257]).collect();
    for isa in isas() {
        for &(k, n) in shapes {
            // The portable kernel is slow (a libm fma per product): fewer, smaller cases.
            let (mmax, ms) = if isa == Isa::Generic {
                let ms = vec![1, 2, 15, 16, 17, 33, 65];
                (if k * n > 100_000 { 65 } else { 300 }, ms)
            } else {
                (300, all_m.clone())
            };
            let x = data(mmax * k, 7919, 1013);
            let w = data(n * k, 104729, 997);
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            let mut scratch = Vec::new();
            let mut base = vec![0.0; mmax * n];
            linear_f32(&mut base, &x, &w, Some(&b), mmax, k, n, &mut scratch, isa);
            for &m in ms.iter().filter(|&&m| m <= mmax) {
                for p in &pools {
                    let mut o = vec![0.0; m * n];
                    p.install(|| linear_f32(&mut o, &x, &w, Some(&b), m, k, n, &mut scratch, isa));
                    let t = p.current_num_threads();
                    assert!(
                        o[..] == base[..m * n],
                        "{isa:?} k={k} n={n} m={m} threads={t}"
                    );
                }
            }
        }
    }
}

/// Every variant computes the same chain of fused multiply-adds, so they agree exactly.
#[test]
fn every_isa_gives_the_same_bits() {
    for (m, k, n) in [(5usize, 7usize, 3usize), (37, 100, 45), (70, 256, 130)] {
        let x = data(m * k, 7919, 1013);
        let w = data(n * k, 104729, 997);
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
        let mut first: Option<Vec<f32>> = None;
        for isa in isas() {
            let mut o = vec![0.0; m * n];
            linear_f32(&mut o, &x, &w, Some(&b), m, k, n, &mut Vec::new(), isa);
            match &first {
                None => first = Some(o),
                Some(f) => assert!(f[..] == o[..], "{isa:?} {m}x{k}x{n}"),
            }
        }
    }
}

/// Every level's panel packing gives the scalar transpose (full and partial blocks,
/// padding rows zero).
#[test]
fn simd_panel_packing_equals_scalar() {
    for (rows, wd, k) in [
        (16usize, 16usize, 768usize),
        (5, 8, 13),
        (9, 16, 40),
        (8, 8, 8),
        (3, 4, 3),
        (12, 12, 17),
    ] {
        let x = data((rows + 2) * k, 7919, 1013);
        let mut want = vec![f32::NAN; wd * k];
        pack_panel_scalar(&mut want, &x, 1, rows, wd, k);
        for isa in isas() {
            let mut got = vec![f32::NAN; wd * k];
            // SAFETY: the level is available here; dst holds wd * k.
            unsafe {
                crate::simd::dispatch(
                    isa,
                    PackPanel {
                        dst: &mut got,
                        x: &x,
                        r0: 1,
                        rows,
                        wd,
                        k,
                    },
                )
            };
            assert!(got == want, "{isa}: rows {rows} wd {wd} k {k}");
        }
    }
}

#[test]
fn scratch_is_reused_across_shapes() {
    let shapes = [(70usize, 300usize, 50usize), (5, 40, 33), (100, 500, 20)];
    for isa in isas() {
        let mut shared = Vec::new();
        for &(m, k, n) in &shapes {
            let x = data(m * k, 7919, 1013);
            let w = data(n * k, 104729, 997);
            let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
            linear_f32(&mut a, &x, &w, None, m, k, n, &mut shared, isa);
            linear_f32(&mut b, &x, &w, None, m, k, n, &mut Vec::new(), isa);
            assert!(a == b, "{isa:?} {m}x{k}x{n}");
        }
    }
}

#[test]
fn empty_shapes() {
    let b = [1.0f32, 2.0, 3.0];
    for isa in isas() {
        let mut out = vec![f32::NAN; 6];
        linear_f32(&mut out, &[], &[], Some(&b), 2, 0, 3, &mut Vec::new(), isa);
        assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        linear_f32(&mut out, &[], &[], None, 2, 0, 3, &mut Vec::new(), isa);
        assert_eq!(out, [0.0; 6]);
        linear_f32(
            &mut out,
            &[],
            &[0.0; 3],
            None,
            0,
            1,
            3,
            &mut Vec::new(),
            isa,
        );
        linear_f32(
            &mut out,
            &[0.0; 2],
            &[],
            None,
            2,
            1,
            0,
            &mut Vec::new(),
            isa,
        );
    }
}

#[test]
#[should_panic(expected = "buffer too small")]
fn short_weights_panic() {
    let mut out = vec![0.0; 4];
    linear_f32(
        &mut out,
        &[0.0; 4],
        &[0.0; 3],
        None,
        2,
        2,
        2,
        &mut Vec::new(),
        Isa::Generic,
    );
}

/// Asking for a level this CPU cannot run panics with a message (the runtime never does:
/// it loads models at available levels only); it never executes the instructions.
#[test]
#[should_panic(expected = "cannot run on this CPU")]
fn a_level_this_cpu_cannot_run_panics() {
    let missing = Isa::ALL
        .into_iter()
        .find(|i| !i.runs_here())
        .expect("no CPU runs both x86-64 and AArch64 levels");
    let mut out = vec![0.0; 4];
    linear_f32(
        &mut out,
        &[1.0; 4],
        &[1.0; 4],
        None,
        2,
        2,
        2,
        &mut Vec::new(),
        missing,
    );
}
