//! f32 vectors of one instruction set, so that a kernel is written once and compiled per
//! ISA (in the spirit of rten-simd).
//!
//! A kernel is a generic `#[inline(always)]` function over `S: Simd`; its entry point per
//! ISA is a `#[target_feature]` function that calls it with that ISA's type, so the trait's
//! methods inline into code compiled for the ISA. [`Scalar`] (one lane) is the portable
//! instance: kernels written this way give the same bits on every ISA whenever they do the
//! same operations per element in the same order (each vector lane is one element's chain).

use crate::cpu::Isa;

#[cfg(target_arch = "aarch64")]
pub(crate) mod arm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// One ISA's f32 vector.
///
/// # Safety
/// Implementations may only be used on CPUs that have their ISA; every method is `unsafe`
/// for that reason (and pointers must cover `LANES` elements).
pub(crate) unsafe trait Simd: Copy + Send + Sync + 'static {
    /// f32 lanes per vector.
    const LANES: usize;
    /// Architectural vector registers (bounds the register tiles of the kernels).
    const REGS: usize;
    /// The vector.
    type V: Copy;

    /// All lanes 0.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `LANES` floats to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` with one rounding (fused).
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum; where a lane of either operand is NaN the result is NaN or `b`
    /// (x86 semantics; NEON gives NaN): callers pass the data as `b` so NaN propagates.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum, NaN as in [`Simd::max`].
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// `2^n` per lane from `t = n + 1.5 * 2^23` (the rounding trick of [`exp`]): the float
    /// whose bits are `(bits(t) - EXP_BIAS) << 23`.
    unsafe fn pow2_from_rounded(t: Self::V) -> Self::V;
    /// `LANES` u32 words from `p`, each a pair of bf16 values (low half = even channel),
    /// the even channels widened to f32 (`w << 16`). The load is its own (volatile), so
    /// that a kernel can widen the even and the odd halves in separate phases without the
    /// compiler keeping the raw words alive in registers in between. `p` must be aligned to
    /// the vector's size (`4 LANES` bytes): the packed bf16 panels are.
    unsafe fn widen_bf16_lo(p: *const u32) -> Self::V;
    /// As [`Simd::widen_bf16_lo`], the odd channels (`w & 0xffff0000`).
    unsafe fn widen_bf16_hi(p: *const u32) -> Self::V;
    /// A hint to fetch the cache line of `p` into L1 (never faults, whatever `p`).
    unsafe fn prefetch(p: *const u8);
    /// Transposes `LANES` vectors in place (`v.len() == LANES`): lane `j` of `v[i]` becomes
    /// lane `i` of `v[j]`.
    unsafe fn transpose(v: &mut [Self::V]);
    /// Each lane rounded to bf16 (round to nearest even; a NaN stays NaN, quiet), as the
    /// bit pattern `rounded << 16`: the f32 value the bf16 kernels multiply.
    unsafe fn round_bf16(v: Self::V) -> Self::V;
    /// Per lane, the u32 word of a bf16 pair from two [`Simd::round_bf16`] results:
    /// `bits(even) >> 16 | bits(odd) & 0xffff0000`, as a float vector's bits.
    unsafe fn bf16_pair_words(even: Self::V, odd: Self::V) -> Self::V;
    /// `LANES` i32 values from `p` (unaligned), each converted to the nearest f32 (ties to
    /// even, as `i32 as f32`): the int8 products' accumulators.
    unsafe fn load_i32(p: *const i32) -> Self::V;
}

/// Round-to-nearest-even f32 -> bf16 bits (NaN stays NaN, quiet), the same bits as
/// `half::bf16::from_f32` with plain integer arithmetic (tested).
#[inline]
pub(crate) fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() {
        (b >> 16) | 0x40
    } else {
        (b + 0x7fff + ((b >> 16) & 1)) >> 16
    }
}

/// The portable one-lane instance.
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

// SAFETY: plain Rust on f32; runs everywhere.
unsafe impl Simd for Scalar {
    const LANES: usize = 1;
    const REGS: usize = 16;
    type V = f32;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn min(a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn pow2_from_rounded(t: f32) -> f32 {
        f32::from_bits(t.to_bits().wrapping_sub(EXP_BIAS) << 23)
    }
    #[inline(always)]
    unsafe fn widen_bf16_lo(p: *const u32) -> f32 {
        f32::from_bits(p.read_volatile() << 16)
    }
    #[inline(always)]
    unsafe fn widen_bf16_hi(p: *const u32) -> f32 {
        f32::from_bits(p.read_volatile() & 0xffff_0000)
    }
    #[inline(always)]
    unsafe fn prefetch(_p: *const u8) {}
    #[inline(always)]
    unsafe fn transpose(_v: &mut [f32]) {}
    #[inline(always)]
    unsafe fn round_bf16(v: f32) -> f32 {
        f32::from_bits(bf16_bits(v) << 16)
    }
    #[inline(always)]
    unsafe fn bf16_pair_words(even: f32, odd: f32) -> f32 {
        f32::from_bits((even.to_bits() >> 16) | (odd.to_bits() & 0xffff_0000))
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> f32 {
        *p as f32
    }
}

// The constants of `exp` (shared by the scalar function in `activation` and every vector
// copy, which must use the same ones to give the same bits).
pub(crate) const EXP_LO: f32 = -87.3;
pub(crate) const EXP_HI: f32 = 88.3;
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
pub(crate) const C1: f32 = 0.693_359_4; // ln 2, high part (exact in few bits)
pub(crate) const C2: f32 = -2.121_944_4e-4; // ln 2 - C1
pub(crate) const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
pub(crate) const EXP_BIAS: u32 = 0x4B40_0000 - 127; // t's bits minus this, shifted: 2^n
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` per lane: the operations of [`crate::activation::exp`] in the same order, so the
/// same bits on every ISA (clamped to `[-87.3, 88.3]`; NaN stays NaN).
///
/// # Safety
/// The CPU has `S`'s ISA.
#[inline(always)]
pub(crate) unsafe fn exp<S: Simd>(x: S::V) -> S::V {
    let x = S::min(S::splat(EXP_HI), S::max(S::splat(EXP_LO), x));
    let t = S::add(S::mul(x, S::splat(LOG2E)), S::splat(ROUND));
    let n = S::sub(t, S::splat(ROUND));
    let scale = S::pow2_from_rounded(t);
    let r = S::fma(n, S::splat(-C1), x);
    let r = S::fma(n, S::splat(-C2), r);
    let mut p = S::splat(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = S::fma(p, r, S::splat(*c));
    }
    let e = S::add(S::fma(S::mul(p, r), r, r), S::splat(1.0));
    S::mul(e, scale)
}

/// A kernel written once over `S: Simd` (its arguments are the implementing struct's
/// fields). Implementations mark `run` `#[inline(always)]`, so that it is compiled inside
/// the per-ISA entry point of [`dispatch`], with that ISA's target features.
pub(crate) trait SimdOp {
    /// What the kernel returns.
    type Output;
    /// Runs the kernel with `S`'s vectors.
    ///
    /// # Safety
    /// The CPU has `S`'s ISA.
    unsafe fn run<S: Simd>(self) -> Self::Output;
}

/// Runs `op` with the vectors of level `isa` (`Scalar` for the generic level), compiled for
/// that ISA.
///
/// # Safety
/// `isa` runs on this CPU ([`Isa::runs_here`]).
#[inline]
pub(crate) unsafe fn dispatch<O: SimdOp>(isa: Isa, op: O) -> O::Output {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::run_avx2(op),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => x86::run_avx512(op),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonBf16 => arm::run_neon(op),
        _ => op.run::<Scalar>(),
    }
}
