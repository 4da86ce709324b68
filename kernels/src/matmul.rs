//! Linear layers as matrix products through the `gemm` crate.
//!
//! The engine's f32 products run on [`crate::gemm_f32`] (1.7-2x faster here, no padding,
//! weights read in place). This wrapper stays as the baseline the benchmarks and probes
//! compare against, and as the reference of `gemm_f32`'s tests.

pub use gemm::Parallelism;

/// Products with fewer rows than this are computed on a zero-padded copy of this many rows.
///
/// The `gemm` crate (0.19) picks its algorithm from the shape: matrix-vector kernels for
/// `m <= 1`, dot-product ("horizontal") kernels when `m * n <= 256`, and for `m <= 64 &&
/// n <= 64` a depth block of `min(k, 512)` instead of the cache-derived one. Each sums in
/// another order, so a row's result would depend on how many other rows share the product.
/// With at least 65 rows every product takes the blocked path whose depth blocking depends
/// on `k` only, which makes results batch-invariant (tested below at this model's shapes).
pub const MIN_ROWS: usize = 65;

/// `out (m, n) = x (m, k) · w^T (+ bias)` where `w` is (n, k) row-major, as PyTorch stores
/// `nn.Linear` weights. The product reads `w` in place (transposed through strides).
#[allow(clippy::too_many_arguments)]
pub fn linear(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
    par: Parallelism,
) {
    assert!(
        out.len() >= m * n && x.len() >= m * k && w.len() >= n * k,
        "linear: buffer too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    if m < MIN_ROWS {
        let mut xp = vec![0.0f32; MIN_ROWS * k];
        xp[..m * k].copy_from_slice(&x[..m * k]);
        let mut op = vec![0.0f32; MIN_ROWS * n];
        linear(&mut op, &xp, w, bias, MIN_ROWS, k, n, par);
        out[..m * n].copy_from_slice(&op[..m * n]);
        return;
    }
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias length");
        for row in out.chunks_exact_mut(n).take(m) {
            row.copy_from_slice(b);
        }
    }
    // SAFETY: the asserts above guarantee every index the strides reach is in bounds:
    // dst (m,n) with strides (n,1), lhs (m,k) with (k,1), rhs (k,n) with (1,k) over w (n,k).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Scalar reference of [`linear`] (f64 accumulation).
pub fn reference_linear(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                .sum();
            out[i * n + j] = (s + bias.map_or(0.0, |b| b[j] as f64)) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_on_interesting_sizes() {
        for (m, k, n) in [
            (1usize, 1usize, 1usize),
            (3, 5, 7),
            (17, 33, 9),
            (64, 96, 130),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.25)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 29 % 11) as f32 - 5.0) * 0.125)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            for bias in [None, Some(b.as_slice())] {
                let mut out = vec![f32::NAN; m * n];
                linear(&mut out, &x, &w, bias, m, k, n, Parallelism::None);
                let mut refo = vec![0.0; m * n];
                reference_linear(&mut refo, &x, &w, bias, m, k, n);
                for (a, r) in out.iter().zip(&refo) {
                    assert!(
                        (a - r).abs() <= 1e-5 * (k as f32).sqrt() * r.abs().max(1.0),
                        "{m}x{k}x{n}: {a} vs {r}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod invariance {
    use super::*;

    /// A row's result is bit-identical whatever the number of rows and threads.
    #[test]
    fn rows_do_not_depend_on_m_or_threads() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (k, n) in [
            (16usize, 16usize),
            (768, 28),
            (2048, 28),
            (16, 40),
            (40, 16),
            (16, 28),
            (32, 28),
            (32, 88),
            (88, 32),
            (256, 688),
            (688, 256),
            (768, 2048),
            (2048, 768),
        ] {
            let mmax = 300;
            let x: Vec<f32> = (0..mmax * k)
                .map(|i| (i * 7919 % 1013) as f32 / 1013.0 - 0.5)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| (i * 104729 % 997) as f32 / 997.0 - 0.5)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            let mut base = vec![0.0; mmax * n];
            linear(&mut base, &x, &w, Some(&b), mmax, k, n, Parallelism::None);
            for m in (1..40).chain([63, 64, 65, 66, 127, 200, 257]) {
                for par in [Parallelism::None, Parallelism::Rayon(2)] {
                    let mut o = vec![0.0; m * n];
                    pool.install(|| linear(&mut o, &x, &w, Some(&b), m, k, n, par));
                    assert!(o[..] == base[..m * n], "k={k} n={n} m={m} {par:?}");
                }
            }
        }
    }
}
