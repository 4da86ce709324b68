//! Tests of the module: every kernel bit for bit against the scalar reference, the vector
//! quantizers against `quantize_row`, sums that would saturate 16-bit arithmetic, and
//! invariance to m, the row's position and the thread count.

use super::*;

fn kernels() -> Vec<Kernel> {
    let v = Kernel::available();
    eprintln!(
        "int8 kernels tested here: {:?} (cpu {})",
        v,
        crate::cpu::caps().model
    );
    assert!(v.contains(&Kernel::Generic));
    v
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_kernel_matches_the_scalar_reference_bit_for_bit() {
    for (m, k, n) in [
        (1usize, 1usize, 1usize),
        (5, 3, 7),
        (6, 64, 64),
        (7, 65, 65),
        (13, 33, 130),
        (33, 4, 63),
        (97, 96, 28),
        (40, 768, 100),
        (3, 0, 5),
    ] {
        let x = values(m * k, 1);
        let wf = values(n * k, 2);
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 3.0).collect();
        let w = PackedI8::quantize(&wf, n, k, Kernel::Generic).unwrap();
        for bias in [None, Some(&b[..])] {
            let mut refo = vec![0.0; m * n];
            reference_linear_i8(&mut refo, &x, &w, bias, m);
            for kernel in kernels() {
                let w = PackedI8::quantize(&wf, n, k, kernel).unwrap();
                let mut out = vec![f32::NAN; m * n];
                let (mut xq, mut sa) = (Vec::new(), Vec::new());
                linear_i8(&mut out, &x, &w, bias, m, &mut xq, &mut sa, kernel);
                assert_eq!(bits(&out), bits(&refo), "{kernel:?} {m}x{k}x{n}");
            }
        }
    }
}

/// The reference itself against f32: the quantization error of per-channel weights and
/// per-row activations is a few percent of the largest term at most.
#[test]
fn the_reference_approximates_the_f32_product() {
    let (m, k, n) = (9usize, 256usize, 40usize);
    let x = values(m * k, 3);
    let wf = values(n * k, 4);
    let w = PackedI8::quantize(&wf, n, k, Kernel::Generic).unwrap();
    let mut out = vec![0.0; m * n];
    reference_linear_i8(&mut out, &x, &w, None, m);
    for i in 0..m {
        for j in 0..n {
            let f: f32 = (0..k).map(|c| x[i * k + c] * wf[j * k + c]).sum();
            // Each product errs by at most |x| |w| / 127 (half a step of each factor).
            let bound: f32 = (0..k)
                .map(|c| (x[i * k + c].abs() + wf[j * k + c].abs()) / 254.0)
                .sum();
            assert!(
                (out[i * n + j] - f).abs() <= bound,
                "{i},{j}: {} vs {f}",
                out[i * n + j]
            );
        }
    }
}

/// Every weight and activation at +-127 (and k large): sums no 16-bit intermediate could
/// hold, and the u8 kernels' offset at its extreme (activations at -127 become 1, at 127
/// become 255).
#[test]
fn extreme_values_sum_exactly() {
    let (m, k, n) = (7usize, 2048usize, 70usize);
    let x: Vec<f32> = (0..m * k)
        .map(|i| if (i / 3 + i / k) % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let wf: Vec<f32> = (0..n * k)
        .map(|i| if (i / 5 + i / k) % 3 == 0 { -2.0 } else { 2.0 })
        .collect();
    let w = PackedI8::quantize(&wf, n, k, Kernel::Generic).unwrap();
    assert_eq!(w.q(0, 0).unsigned_abs(), 127);
    let mut refo = vec![0.0; m * n];
    reference_linear_i8(&mut refo, &x, &w, None, m);
    for kernel in kernels() {
        let w = PackedI8::quantize(&wf, n, k, kernel).unwrap();
        let mut out = vec![0.0; m * n];
        let (mut xq, mut sa) = (Vec::new(), Vec::new());
        linear_i8(&mut out, &x, &w, None, m, &mut xq, &mut sa, kernel);
        assert_eq!(bits(&out), bits(&refo), "{kernel:?}");
    }
    // All of one sign: the largest sums (127 * 127 * 2048 = 33 million: beyond f32's
    // exact integers, so the conversion's rounding is checked too).
    let x = vec![-1.0f32; m * k];
    let wf = vec![-2.0f32; n * k];
    let w = PackedI8::quantize(&wf, n, k, Kernel::Generic).unwrap();
    reference_linear_i8(&mut refo, &x, &w, None, m);
    assert_eq!(refo[0], 2.0 * 2048.0);
    for kernel in kernels() {
        let w = PackedI8::quantize(&wf, n, k, kernel).unwrap();
        let mut out = vec![0.0; m * n];
        let (mut xq, mut sa) = (Vec::new(), Vec::new());
        linear_i8(&mut out, &x, &w, None, m, &mut xq, &mut sa, kernel);
        assert_eq!(bits(&out), bits(&refo), "{kernel:?}");
    }
}

/// Each kernel's activation quantizer writes `quantize_row`'s values (in its encoding) and
/// scales, for ties, zeros, NaN, infinities, subnormals and lengths with vector tails.
#[test]
fn vector_quantizers_match_quantize_row() {
    let k = 77;
    let mut rows: Vec<Vec<f32>> = vec![
        values(k, 5),
        vec![0.0; k],
        (0..k).map(|i| i as f32 - 38.0).collect(),
        (0..k).map(|i| (i as f32 - 38.0) * 0.5).collect(), // ties at x * 127/38
        (0..k).map(|i| f32::from_bits(i as u32 + 1)).collect(), // subnormals
        (0..k).map(|i| if i == 40 { 3.0e38 } else { 1.0 }).collect(),
    ];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut r = values(k, 6);
        r[70] = bad;
        rows.push(r);
        let mut r = values(k, 7);
        r[3] = bad; // inside the vector part
        rows.push(r);
    }
    // Rows whose quantized values hit exact .5 ties: amax 127 makes inv = 1.
    let mut ties: Vec<f32> = (0..k).map(|i| (i as f32 - 38.0) + 0.5).collect();
    ties[k - 1] = 127.0;
    rows.push(ties);
    let m = rows.len();
    let x: Vec<f32> = rows.concat();
    for kernel in kernels() {
        let (mut xq, mut sa) = (Vec::new(), Vec::new());
        quantize_activations(&mut xq, &mut sa, &x, m, k, kernel);
        let off = align_words(xq.as_ptr());
        let rw = row_words(kernel, quads(k));
        let mut q = vec![0i8; k];
        for (i, r) in rows.iter().enumerate() {
            let s = quantize_row(r, &mut q);
            assert_eq!(
                sa[i].to_bits(),
                s.unwrap_or(f32::NAN).to_bits(),
                "{kernel:?} row {i} scale"
            );
            let words = &xq[off + i * rw..off + (i + 1) * rw];
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            for c in 0..4 * quads(k) {
                let want = q.get(c).copied().unwrap_or(0);
                let got = match kernel.layout() {
                    Layout::S8 => bytes[c] as i8,
                    Layout::U8 => (bytes[c] ^ 0x80) as i8,
                    Layout::S16 => {
                        let v = i16::from_le_bytes([bytes[2 * c], bytes[2 * c + 1]]);
                        i8::try_from(v).expect("i16 activations stay within i8")
                    }
                };
                assert_eq!(got, want, "{kernel:?} row {i} channel {c}");
            }
        }
    }
}

#[test]
fn non_finite_rows_give_nan_outputs_and_leave_others_alone() {
    let (m, k, n) = (4usize, 70usize, 65usize);
    let mut x = values(m * k, 8);
    x[k + 5] = f32::NAN;
    x[3 * k + 69] = f32::INFINITY;
    let wf = values(n * k, 9);
    let w = PackedI8::quantize(&wf, n, k, Kernel::Generic).unwrap();
    let mut refo = vec![0.0; m * n];
    reference_linear_i8(&mut refo, &x, &w, None, m);
    for kernel in kernels() {
        let w = PackedI8::quantize(&wf, n, k, kernel).unwrap();
        let mut out = vec![0.0; m * n];
        let (mut xq, mut sa) = (Vec::new(), Vec::new());
        linear_i8(&mut out, &x, &w, None, m, &mut xq, &mut sa, kernel);
        assert!(out[n..2 * n].iter().all(|v| v.is_nan()), "{kernel:?}");
        assert!(out[3 * n..].iter().all(|v| v.is_nan()), "{kernel:?}");
        assert!(out[..n].iter().all(|v| v.is_finite()), "{kernel:?}");
        assert_eq!(
            bits(&out[2 * n..3 * n]),
            bits(&refo[2 * n..3 * n]),
            "{kernel:?}"
        );
    }
}

#[test]
fn weights_must_be_finite() {
    let mut w = values(3 * 10, 10);
    w[25] = f32::NAN;
    let e = PackedI8::quantize(&w, 3, 10, Kernel::Generic).unwrap_err();
    assert!(e.contains("row 2") && e.contains("NaN"), "{e}");
    // A row of zeros: scale 1, zeros.
    let (q, s) = quantize_rows(&[0.0; 8], 2, 4).unwrap();
    assert_eq!((q, s), (vec![0i8; 8], vec![1.0, 1.0]));
}

#[test]
fn rows_do_not_depend_on_m_or_threads() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let (k, n, mmax) = (300usize, 130usize, 200usize);
    let x = values(mmax * k, 11);
    let wf = values(n * k, 12);
    for kernel in kernels() {
        let w = PackedI8::quantize(&wf, n, k, kernel).unwrap();
        let (mut xq, mut sa) = (Vec::new(), Vec::new());
        let mut base = vec![0.0; mmax * n];
        linear_i8(&mut base, &x, &w, None, mmax, &mut xq, &mut sa, kernel);
        for m in [1usize, 5, 6, 7, 31, 32, 33, 95, 96, 97, 150] {
            let mut o = vec![0.0; m * n];
            pool.install(|| linear_i8(&mut o, &x, &w, None, m, &mut xq, &mut sa, kernel));
            assert!(bits(&o) == bits(&base[..m * n]), "{kernel:?} m={m}");
        }
        // A row alone gives its bits in the batch.
        let mut o = vec![0.0; n];
        linear_i8(
            &mut o,
            &x[77 * k..78 * k],
            &w,
            None,
            1,
            &mut xq,
            &mut sa,
            kernel,
        );
        assert!(bits(&o) == bits(&base[77 * n..78 * n]), "{kernel:?} row 77");
    }
}

/// Stacked parts split into several outputs with an epilogue that sees the columns of the
/// stacked product: the same values as separate products.
#[test]
fn fused_parts_split_outputs_and_epilogue() {
    let (m, k) = (11usize, 96usize);
    let dims = [40usize, 64, 30];
    let ws: Vec<Vec<f32>> = dims
        .iter()
        .enumerate()
        .map(|(i, &n)| values(n * k, 20 + i))
        .collect();
    let qs: Vec<(Vec<i8>, Vec<f32>)> = ws
        .iter()
        .zip(&dims)
        .map(|(w, &n)| quantize_rows(w, n, k).unwrap())
        .collect();
    let parts: Vec<QuantPart> = qs
        .iter()
        .zip(&dims)
        .map(|((q, s), &n)| (&q[..], &s[..], n))
        .collect();
    let x = values(m * k, 30);
    let epi = |row: usize, c0: usize, vals: &mut [f32]| {
        for (j, v) in vals.iter_mut().enumerate() {
            *v += (row * 1000 + c0 + j) as f32;
        }
    };
    for kernel in kernels() {
        let fused = PackedI8::pack_parts(&parts, k, kernel).unwrap();
        let (mut xq, mut sa) = (Vec::new(), Vec::new());
        quantize_activations(&mut xq, &mut sa, &x, m, k, kernel);
        let a = QuantActivations::new(&xq, &sa, m, k, kernel);
        let mut outs: Vec<Vec<f32>> = dims.iter().map(|&n| vec![0.0; m * n]).collect();
        {
            let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
            linear_i8_packed_into(&mut refs, &a, &fused, None, Some(&epi));
        }
        let mut c0 = 0;
        for ((w, &n), o) in ws.iter().zip(&dims).zip(&outs) {
            let alone = PackedI8::quantize(w, n, k, kernel).unwrap();
            let mut want = vec![0.0; m * n];
            let (mut xq2, mut sa2) = (Vec::new(), Vec::new());
            linear_i8(&mut want, &x, &alone, None, m, &mut xq2, &mut sa2, kernel);
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] += (i * 1000 + c0 + j) as f32;
                }
            }
            assert_eq!(bits(o), bits(&want), "{kernel:?} part at column {c0}");
            c0 += n;
        }
    }
}

#[test]
fn every_level_has_a_kernel_that_runs() {
    for isa in crate::cpu::caps().available.clone() {
        let k = Kernel::for_isa(isa);
        assert!(k.runs_here(), "{isa:?} -> {k:?}");
        assert!(k.level() <= isa || k == Kernel::Generic, "{isa:?} -> {k:?}");
    }
}

/// Rows made on the fly quantize to the bytes and scales of rows made first.
#[test]
fn fused_row_quantization_equals_the_two_passes() {
    let (m, k) = (45usize, 131usize);
    let x = values(m * k, 40);
    for kernel in kernels() {
        let (mut xq, mut sa) = (Vec::new(), Vec::new());
        quantize_activations(&mut xq, &mut sa, &x, m, k, kernel);
        let (mut xq2, mut sa2) = (vec![7u32; 3], Vec::new());
        quantize_activations_with(&mut xq2, &mut sa2, m, k, kernel, |i, buf| {
            buf.copy_from_slice(&x[i * k..(i + 1) * k])
        });
        let n = padded_rows(m) * row_words(kernel, quads(k));
        let (o1, o2) = (align_words(xq.as_ptr()), align_words(xq2.as_ptr()));
        assert!(xq[o1..o1 + n] == xq2[o2..o2 + n], "{kernel:?}");
        assert_eq!(bits(&sa), bits(&sa2), "{kernel:?}");
    }
}

#[test]
fn kernel_names_parse() {
    for k in Kernel::ALL {
        assert_eq!(Kernel::parse(k.name().split(' ').next().unwrap()), Some(k));
    }
    assert_eq!(Kernel::parse("AVX2"), Some(Kernel::Avx2));
    assert_eq!(Kernel::parse("vnni"), None);
}

/// Each layout holds the same quantized weights; a product with weights packed for another
/// layout is refused (a caller bug), never a wrong result.
#[test]
fn weight_layouts_hold_the_same_values() {
    let (n, k) = (70usize, 45usize);
    let wf = values(n * k, 50);
    let quads = PackedI8::quantize(&wf, n, k, Kernel::Generic).unwrap();
    let octets = PackedI8::quantize(&wf, n, k, Kernel::NeonI8mm).unwrap();
    for j in 0..n {
        for c in 0..k {
            assert_eq!(quads.q(j, c), octets.q(j, c), "{j},{c}");
        }
        assert_eq!(quads.scale(j), octets.scale(j));
    }
    let r = std::panic::catch_unwind(|| {
        let (mut xq, mut sa) = (Vec::new(), Vec::new());
        let mut out = vec![0.0; n];
        linear_i8(
            &mut out,
            &wf[..k],
            &octets,
            None,
            1,
            &mut xq,
            &mut sa,
            Kernel::Generic,
        );
    });
    assert!(r.is_err(), "octet weights with the generic kernel");
}
