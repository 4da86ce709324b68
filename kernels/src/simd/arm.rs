//! The AArch64 instance of [`Simd`]: NEON (Advanced SIMD), 4 f32 lanes, 32 registers.

use super::{Simd, SimdOp, EXP_BIAS};
use std::arch::aarch64::*;

/// NEON: 4 f32 lanes, 32 q registers.
#[derive(Clone, Copy)]
pub(crate) struct Neon;

/// Runs `op` compiled for NEON (part of the AArch64 baseline; the wrapper keeps the shape
/// of the x86 entry points).
///
/// # Safety
/// The CPU has NEON (every AArch64 CPU does).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn run_neon<O: SimdOp>(op: O) -> O::Output {
    op.run::<Neon>()
}

// SAFETY: NEON is mandatory on AArch64.
unsafe impl Simd for Neon {
    const LANES: usize = 4;
    const REGS: usize = 32;
    type V = float32x4_t;
    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        vdupq_n_f32(0.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        vdupq_n_f32(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vaddq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vsubq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmulq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vdivq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // vfmaq_f32(c, a, b) = c + a * b, fused.
        vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmaxq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vminq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn pow2_from_rounded(t: float32x4_t) -> float32x4_t {
        let bits = vsubq_u32(vreinterpretq_u32_f32(t), vdupq_n_u32(EXP_BIAS));
        vreinterpretq_f32_u32(vshlq_n_u32::<23>(bits))
    }
    #[inline(always)]
    unsafe fn widen_bf16_lo(p: *const u32) -> float32x4_t {
        let w = (p as *const uint32x4_t).read_volatile();
        vreinterpretq_f32_u32(vshlq_n_u32::<16>(w))
    }
    #[inline(always)]
    unsafe fn widen_bf16_hi(p: *const u32) -> float32x4_t {
        let w = (p as *const uint32x4_t).read_volatile();
        vreinterpretq_f32_u32(vandq_u32(w, vdupq_n_u32(0xffff_0000)))
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        // SAFETY: a prefetch hint never faults.
        std::arch::asm!("prfm pldl1keep, [{p}]", p = in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [float32x4_t]) {
        debug_assert_eq!(v.len(), 4);
        let t0 = vtrn1q_f32(v[0], v[1]);
        let t1 = vtrn2q_f32(v[0], v[1]);
        let t2 = vtrn1q_f32(v[2], v[3]);
        let t3 = vtrn2q_f32(v[2], v[3]);
        let f = |x: float32x4_t| vreinterpretq_f64_f32(x);
        let h = |x: float64x2_t| vreinterpretq_f32_f64(x);
        v[0] = h(vtrn1q_f64(f(t0), f(t2)));
        v[1] = h(vtrn1q_f64(f(t1), f(t3)));
        v[2] = h(vtrn2q_f64(f(t0), f(t2)));
        v[3] = h(vtrn2q_f64(f(t1), f(t3)));
    }
    #[inline(always)]
    unsafe fn round_bf16(v: float32x4_t) -> float32x4_t {
        let b = vreinterpretq_u32_f32(v);
        let lsb = vandq_u32(vshrq_n_u32::<16>(b), vdupq_n_u32(1));
        let sum = vaddq_u32(vaddq_u32(b, vdupq_n_u32(0x7fff)), lsb);
        let hi = vdupq_n_u32(0xffff_0000);
        let rounded = vandq_u32(sum, hi);
        let quiet = vandq_u32(vorrq_u32(b, vdupq_n_u32(0x40_0000)), hi);
        // NaN: not equal to itself.
        let nan = vmvnq_u32(vceqq_f32(v, v));
        vreinterpretq_f32_u32(vbslq_u32(nan, quiet, rounded))
    }
    #[inline(always)]
    unsafe fn bf16_pair_words(even: float32x4_t, odd: float32x4_t) -> float32x4_t {
        let lo = vshrq_n_u32::<16>(vreinterpretq_u32_f32(even));
        let hi = vandq_u32(vreinterpretq_u32_f32(odd), vdupq_n_u32(0xffff_0000));
        vreinterpretq_f32_u32(vorrq_u32(lo, hi))
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> float32x4_t {
        vcvtq_f32_s32(vld1q_s32(p))
    }
}
