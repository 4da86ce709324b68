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

use crate::cpu::Isa;
use crate::simd::{self, Simd, SimdOp, C1, C2, EXP_BIAS, EXP_HI, EXP_LO, EXP_POLY, LOG2E, ROUND};

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

/// GELU's tanh approximation, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (PyTorch
/// `nn.GELU(approximate="tanh")`, Hugging Face `gelu_pytorch_tanh` / `gelu_new`), for
/// checkpoints whose head was trained with it (`head_activation` in config.json).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + libm::tanhf(K * (x + 0.044_715 * x * x * x)))
}

/// SwiGLU gate, in place over the gate projection: `gate[i] = silu(gate[i]) * up[i]`,
/// vectorized for `isa`; every level gives the bits of the scalar [`silu`].
pub fn swiglu(gate: &mut [f32], up: &[f32], isa: Isa) {
    isa.assert_runs_here();
    assert!(up.len() >= gate.len(), "swiglu: up shorter than gate");
    // SAFETY: the level runs here (checked above).
    unsafe { simd::dispatch(isa, Swiglu { gate, up }) }
}

struct Swiglu<'a> {
    gate: &'a mut [f32],
    up: &'a [f32],
}

impl SimdOp for Swiglu<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let n = self.gate.len();
        let nv = n / S::LANES * S::LANES;
        let (g, u) = (self.gate.as_mut_ptr(), self.up.as_ptr());
        let one = S::splat(1.0);
        for i in (0..nv).step_by(S::LANES) {
            // silu(x) * u = x / (1 + e^-x) * u, as the scalar code.
            let x = S::load(g.add(i));
            let e = simd::exp::<S>(S::sub(S::zero(), x));
            let s = S::div(x, S::add(one, e));
            S::store(g.add(i), S::mul(s, S::load(u.add(i))));
        }
        for i in nv..n {
            *g.add(i) = silu(*g.add(i)) * *u.add(i);
        }
    }
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
        // The tanh form against an f64 evaluation, and where it departs from the erf form.
        for x in [-6.0f32, -3.0, -1.0, -0.1, 0.0, 0.5, 1.0, 2.5, 8.0] {
            let xd = x as f64;
            let k = (2.0 / std::f64::consts::PI).sqrt();
            let want = 0.5 * xd * (1.0 + (k * (xd + 0.044715 * xd * xd * xd)).tanh());
            assert!((gelu_tanh(x) as f64 - want).abs() < 1e-6, "gelu_tanh({x})");
        }
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu_tanh(1.0) - gelu(1.0)).abs() > 1e-4);
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
    fn every_level_gives_the_scalar_bits() {
        // Values across exp's range, both clamps, signed zeros, infinities and NaN.
        let mut g0: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.731).sin() * 12.0).collect();
        g0.extend([
            0.0,
            -0.0,
            100.0,
            -100.0,
            88.5,
            -88.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        let up: Vec<f32> = (0..g0.len()).map(|i| (i as f32 * 0.173).cos()).collect();
        let mut want = g0.clone();
        for (g, u) in want.iter_mut().zip(&up) {
            *g = silu(*g) * *u;
        }
        for (i, (o, (x, u))) in want.iter().zip(g0.iter().zip(&up)).enumerate().take(1037) {
            let r = (*x as f64) / (1.0 + (-*x as f64).exp()) * *u as f64;
            assert!(
                (*o as f64 - r).abs() <= 1e-6 * r.abs().max(1e-3),
                "{i}: {o} vs {r}"
            );
        }
        for isa in crate::cpu::caps().available.iter().copied() {
            // Every length around the vector widths (tails).
            for n in [0usize, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, g0.len()] {
                let mut g = g0[..n].to_vec();
                swiglu(&mut g, &up[..n], isa);
                let same = g
                    .iter()
                    .zip(&want[..n])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa} n={n}");
            }
            // NaN stays NaN.
            let mut g = vec![f32::NAN; 40];
            swiglu(&mut g, &[1.0; 40], isa);
            assert!(g.iter().all(|v| v.is_nan()), "{isa}");
        }
    }

    #[test]
    fn vector_exp_gives_the_scalar_bits() {
        struct Exp<'a>(&'a mut [f32]);
        impl SimdOp for Exp<'_> {
            type Output = ();
            #[inline(always)]
            unsafe fn run<S: Simd>(self) {
                let n = self.0.len() / S::LANES * S::LANES;
                for i in (0..n).step_by(S::LANES) {
                    let p = self.0.as_mut_ptr().add(i);
                    S::store(p, simd::exp::<S>(S::load(p)));
                }
            }
        }
        let mut xs: Vec<f32> = (0..4096).map(|i| -100.0 + i as f32 * 0.0473).collect();
        xs.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            88.3,
            -87.3,
            1e-30,
            -1e-30,
        ]);
        xs.resize(xs.len().next_multiple_of(16), 0.5);
        for isa in crate::cpu::caps().available.iter().copied() {
            let mut v = xs.clone();
            // SAFETY: the level is available here.
            unsafe { simd::dispatch(isa, Exp(&mut v)) };
            for (x, e) in xs.iter().zip(&v) {
                assert_eq!(e.to_bits(), exp(*x).to_bits(), "{isa}: exp({x})");
            }
        }
    }
}
