//! RMSNorm: `y = x / sqrt(mean(x^2) + eps) * weight`, computed in f32 (no bias, no centering).
//!
//! One plain loop (8 interleaved partial sums of squares, then an f64 reduction) compiled
//! per level: under AVX2, AVX-512 or NEON target features LLVM vectorizes the partial sums
//! without reordering them, so every level gives the same bits (tested).

use crate::cpu::Isa;
use crate::simd::{self, Simd, SimdOp};

/// Normalizes `rows` rows of width `d` from `x` into `out`.
///
/// `out`, `x`: (rows, d) row-major; `weight`: (d,).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm(
    out: &mut [f32],
    x: &[f32],
    weight: &[f32],
    rows: usize,
    d: usize,
    eps: f32,
    isa: Isa,
) {
    assert!(
        out.len() >= rows * d && x.len() >= rows * d && weight.len() == d,
        "rmsnorm: buffer too small"
    );
    isa.assert_runs_here();
    let op = Norm {
        out: Some(out),
        x,
        inplace: None,
        weight,
        rows,
        d,
        eps,
    };
    // SAFETY: the level runs here (checked above).
    unsafe { simd::dispatch(isa, op) }
}

/// In-place [`rmsnorm`] of `rows` rows of width `d`.
pub fn rmsnorm_inplace(x: &mut [f32], weight: &[f32], rows: usize, d: usize, eps: f32, isa: Isa) {
    assert!(
        x.len() >= rows * d && weight.len() == d,
        "rmsnorm: buffer too small"
    );
    isa.assert_runs_here();
    let op = Norm {
        out: None,
        x: &[],
        inplace: Some(x),
        weight,
        rows,
        d,
        eps,
    };
    // SAFETY: the level runs here (checked above).
    unsafe { simd::dispatch(isa, op) }
}

/// Arguments of one RMSNorm call (out of place, or in place).
struct Norm<'a> {
    out: Option<&'a mut [f32]>,
    x: &'a [f32],
    inplace: Option<&'a mut [f32]>,
    weight: &'a [f32],
    rows: usize,
    d: usize,
    eps: f32,
}

impl SimdOp for Norm<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let (d, w, eps) = (self.d, self.weight, self.eps);
        if d == 0 {
            return; // empty rows (chunks of 0 would panic)
        }
        if let Some(x) = self.inplace {
            for xr in x.chunks_exact_mut(d).take(self.rows) {
                let inv = inv_rms(xr, eps);
                for (v, w) in xr.iter_mut().zip(w) {
                    *v = *v * inv * *w;
                }
            }
        } else if let Some(out) = self.out {
            for (o, xr) in out
                .chunks_exact_mut(d)
                .zip(self.x.chunks_exact(d))
                .take(self.rows)
            {
                let inv = inv_rms(xr, eps);
                for ((y, v), w) in o.iter_mut().zip(xr).zip(w) {
                    *y = *v * inv * *w;
                }
            }
        }
    }
}

/// `1 / sqrt(mean(x^2) + eps)` of one row, with the sum of squares in 8 f32 lanes
/// (vectorizes well) and the final reduction in f64.
#[inline(always)]
pub fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += *v * *v;
        }
    }
    let mut sum: f64 = lanes.iter().map(|&l| l as f64).sum();
    for v in tail {
        sum += (*v as f64) * (*v as f64);
    }
    let mean = (sum / x.len().max(1) as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// Scalar reference of [`rmsnorm`] for one row, all in f64.
pub fn reference_rmsnorm_row(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let ms: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps as f64).sqrt();
    for ((y, v), w) in out.iter_mut().zip(x).zip(weight) {
        *y = ((*v as f64) * inv * (*w as f64)) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/, target `kernels`): rows of width 0 panicked ("chunk size
    /// must be non-zero"); they are empty, nothing to do.
    #[test]
    fn zero_width_rows() {
        for isa in crate::cpu::caps().available.iter().copied() {
            let mut out = [1.0f32; 4];
            rmsnorm(&mut out, &[], &[], 3, 0, 1e-5, isa);
            rmsnorm_inplace(&mut out[..0], &[], 3, 0, 1e-5, isa);
            assert_eq!(out, [1.0; 4]);
        }
    }

    #[test]
    fn matches_reference_on_odd_sizes() {
        for d in [1usize, 7, 8, 9, 33, 768] {
            let x: Vec<f32> = (0..2 * d)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3)
                .collect();
            let w: Vec<f32> = (0..d).map(|i| 1.0 + 0.01 * i as f32).collect();
            let mut out = vec![0.0; 2 * d];
            rmsnorm(&mut out, &x, &w, 2, d, 1e-6, Isa::Generic);
            for isa in crate::cpu::caps().available.iter().copied() {
                let mut o = vec![0.0; 2 * d];
                rmsnorm(&mut o, &x, &w, 2, d, 1e-6, isa);
                assert!(o == out, "{isa} d={d}: not the generic bits");
                let mut inplace = x.clone();
                rmsnorm_inplace(&mut inplace, &w, 2, d, 1e-6, isa);
                assert!(inplace == out, "{isa} d={d}: in place differs");
            }
            for r in 0..2 {
                let mut refo = vec![0.0; d];
                reference_rmsnorm_row(&mut refo, &x[r * d..(r + 1) * d], &w, 1e-6);
                for (a, b) in out[r * d..(r + 1) * d].iter().zip(&refo) {
                    // relative error bound: a few f32 ulps
                    assert!(
                        (a - b).abs() <= 4e-6 * b.abs().max(1e-3),
                        "d={d}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
