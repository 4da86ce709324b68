//! Pointwise activations: SwiGLU's `silu(gate) * up` and the head's exact (erf) GELU, and
//! the exponential the softmax and SiLU use.

/// `e^x` to about 2 ulp, written so that LLVM vectorizes it: a Cephes-style polynomial on
/// `x - n ln 2` with fused multiply-adds (`mul_add` is correctly rounded everywhere, so the
/// scalar and every vectorized copy give the same bits), scaled by `2^n` through the
/// exponent field. Inputs are clamped to `[-87.3, 88.3]` (results stay normal and finite).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_LO, EXP_HI);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // The low mantissa bits of t hold n (two's complement): 2^n's exponent field, no cast.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(EXP_BIAS) << 23);
    let r = n.mul_add(-C1, x);
    let r = n.mul_add(-C2, r);
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p.mul_add(r, *c);
    }
    let e = (p * r).mul_add(r, r) + 1.0;
    e * scale
}

// The constants of `exp` (and of its vector copies, which must use the same ones).
const EXP_LO: f32 = -87.3;
const EXP_HI: f32 = 88.3;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const C1: f32 = 0.693_359_4; // ln 2, high part (exact in few bits)
const C2: f32 = -2.121_944_4e-4; // ln 2 - C1
const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
const EXP_BIAS: u32 = 0x4B40_0000 - 127; // t's bits minus this, shifted: 2^n
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `silu(x) = x * sigmoid(x) = x / (1 + e^-x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt(2)))` (PyTorch `nn.GELU()` default).
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// SwiGLU gate, in place over the gate projection: `gate[i] = silu(gate[i]) * up[i]`.
/// Vectorized (AVX-512 or AVX2+FMA) where the CPU has it; every path gives the same bits.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (and with it FMA).
            return unsafe { swiglu_avx512(gate, up) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { swiglu_avx2(gate, up) };
        }
    }
    swiglu_generic(gate, up)
}

#[inline(always)]
fn swiglu_generic(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * *u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn swiglu_avx512(gate: &mut [f32], up: &[f32]) {
    swiglu_generic(gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    swiglu_generic(gate, up)
}

/// In place `x[i] = e^(x[i] - max)`; returns the sum (a softmax's numerator and
/// denominator). Summed in 8 interleaved partial sums (fixed order; vectorizes).
pub fn exp_sub_sum(x: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (and with it FMA).
        return unsafe { exp_sub_sum_avx512(x, max) };
    }
    exp_sub_sum_generic(x, max)
}

#[inline(always)]
fn exp_sub_sum_generic(x: &mut [f32], max: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
            *v = exp(*v - max);
            *a += *v;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        s += *v;
    }
    s
}

/// [`exp`] of 16 lanes: the same operations in the same order (so the same bits).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let c = _mm512_set1_ps;
    // clamp: operands ordered so that a NaN input stays NaN, as f32::clamp does.
    let x = _mm512_min_ps(c(EXP_HI), _mm512_max_ps(c(EXP_LO), x));
    let t = _mm512_add_ps(_mm512_mul_ps(x, c(LOG2E)), c(ROUND));
    let n = _mm512_sub_ps(t, c(ROUND));
    let bits = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(EXP_BIAS as i32));
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(bits));
    let r = _mm512_fmadd_ps(n, c(-C1), x);
    let r = _mm512_fmadd_ps(n, c(-C2), r);
    let mut p = c(EXP_POLY[0]);
    for k in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, c(*k));
    }
    let e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), c(1.0));
    _mm512_mul_ps(e, scale)
}

/// [`exp_sub_sum_generic`] with explicit vectors (LLVM leaves the generic loop nearly
/// scalar): 16 values per step, added to the 8 partial sums as two chunks of 8 in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn exp_sub_sum_avx512(x: &mut [f32], max: f32) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm512_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let n16 = x.len() / 16 * 16;
    for i in (0..n16).step_by(16) {
        // SAFETY: i + 16 <= x.len().
        let p = x.as_mut_ptr().add(i);
        let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p), m));
        _mm512_storeu_ps(p, e);
        acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
        acc = _mm256_add_ps(acc, _mm512_extractf32x8_ps::<1>(e));
    }
    let mut a = [0.0f32; 8];
    _mm256_storeu_ps(a.as_mut_ptr(), acc);
    let mut rest = x[n16..].chunks_exact_mut(8);
    for c in &mut rest {
        for (a, v) in a.iter_mut().zip(c.iter_mut()) {
            *v = exp(*v - max);
            *a += *v;
        }
    }
    let mut s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    for v in rest.into_remainder() {
        *v = exp(*v - max);
        s += *v;
    }
    s
}

/// Logistic sigmoid, stable for large |x|.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert!((sigmoid(0.3) - 0.574_442_5).abs() < 1e-6);
    }

    #[test]
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn vector_paths_give_the_scalar_bits() {
        let g0: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.731).sin() * 12.0).collect();
        let up: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.173).cos()).collect();
        let mut g = g0.clone();
        swiglu(&mut g, &up);
        let mut want = g0.clone();
        swiglu_generic(&mut want, &up);
        assert_eq!(g, want);
        for (i, (o, (x, u))) in g.iter().zip(g0.iter().zip(&up)).enumerate() {
            let r = (*x as f64) / (1.0 + (-*x as f64).exp()) * *u as f64;
            assert!(
                (*o as f64 - r).abs() <= 1e-6 * r.abs().max(1e-3),
                "{i}: {o} vs {r}"
            );
        }
        for n in [1usize, 7, 8, 9, 16, 17, 24, 33, 64, 100, 1000] {
            // from e^0.5 down past the clamp at -87.3
            let mut a: Vec<f32> = (0..n)
                .map(|i| -(i as f32) * 0.3 * (1.0 + (i % 7) as f32))
                .collect();
            let mut b = a.clone();
            let (sa, sb) = (exp_sub_sum(&mut a, 0.5), exp_sub_sum_generic(&mut b, 0.5));
            assert_eq!((a, sa), (b, sb));
        }
    }
}
