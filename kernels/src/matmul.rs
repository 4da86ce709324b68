//! Linear layers as matrix products through the `gemm` crate.

pub use gemm::Parallelism;

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
    assert!(out.len() >= m * n && x.len() >= m * k && w.len() >= n * k, "linear: buffer too small");
    if m == 0 || n == 0 {
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
pub fn reference_linear(out: &mut [f32], x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) {
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|c| x[i * k + c] as f64 * w[j * k + c] as f64).sum();
            out[i * n + j] = (s + bias.map_or(0.0, |b| b[j] as f64)) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_on_interesting_sizes() {
        for (m, k, n) in [(1usize, 1usize, 1usize), (3, 5, 7), (17, 33, 9), (64, 96, 130)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.25).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 29 % 11) as f32 - 5.0) * 0.125).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            for bias in [None, Some(b.as_slice())] {
                let mut out = vec![f32::NAN; m * n];
                linear(&mut out, &x, &w, bias, m, k, n, Parallelism::None);
                let mut refo = vec![0.0; m * n];
                reference_linear(&mut refo, &x, &w, bias, m, k, n);
                for (a, r) in out.iter().zip(&refo) {
                    assert!((a - r).abs() <= 1e-5 * (k as f32).sqrt() * r.abs().max(1.0), "{m}x{k}x{n}: {a} vs {r}");
                }
            }
        }
    }
}
