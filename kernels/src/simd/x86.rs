//! The x86-64 instances of [`Simd`]: AVX2 + FMA (8 lanes) and AVX-512F (16 lanes).

use super::{Simd, SimdOp, EXP_BIAS};
use std::arch::x86_64::*;

/// AVX2 + FMA: 8 f32 lanes, 16 ymm registers.
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

/// AVX-512F: 16 f32 lanes, 32 zmm registers.
#[derive(Clone, Copy)]
pub(crate) struct Avx512;

/// Runs `op` compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn run_avx2<O: SimdOp>(op: O) -> O::Output {
    op.run::<Avx2>()
}

/// Runs `op` compiled for AVX-512F (and AVX2 + FMA).
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn run_avx512<O: SimdOp>(op: O) -> O::Output {
    op.run::<Avx512>()
}

// SAFETY: used only through `run_avx2`, i.e. on CPUs with AVX2 and FMA.
unsafe impl Simd for Avx2 {
    const LANES: usize = 8;
    const REGS: usize = 16;
    type V = __m256;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        _mm256_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        _mm256_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn pow2_from_rounded(t: __m256) -> __m256 {
        let bits = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(EXP_BIAS as i32));
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bits))
    }
    #[inline(always)]
    unsafe fn widen_bf16_lo(p: *const u32) -> __m256 {
        let w = (p as *const __m256i).read_volatile();
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
    }
    #[inline(always)]
    unsafe fn widen_bf16_hi(p: *const u32) -> __m256 {
        let w = (p as *const __m256i).read_volatile();
        _mm256_castsi256_ps(_mm256_and_si256(
            w,
            _mm256_set1_epi32(0xffff_0000u32 as i32),
        ))
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [__m256]) {
        debug_assert_eq!(v.len(), 8);
        let t: [__m256; 8] = std::array::from_fn(|i| {
            let (a, b) = (v[i & !1], v[i | 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        // t[4h + 0]: rows 4h, 4h+1, columns 0, 1 | 4, 5; t[4h + 1]: the same rows, columns
        // 2, 3 | 6, 7; t[4h + 2], t[4h + 3]: rows 4h+2, 4h+3 likewise.
        let u: [__m256; 8] = std::array::from_fn(|i| {
            let base = (i / 4) * 4;
            let (a, b) = (t[base + (i % 2)], t[base + 2 + (i % 2)]);
            if (i / 2) % 2 == 0 {
                _mm256_shuffle_ps::<0x44>(a, b)
            } else {
                _mm256_shuffle_ps::<0xEE>(a, b)
            }
        });
        // u[4h + 0]: column 0 | 4 of rows 4h..4h+4; u[4h + 2]: 1 | 5; u[4h + 1]: 2 | 6;
        // u[4h + 3]: 3 | 7.
        let order = [0usize, 2, 1, 3];
        for c in 0..4 {
            let (a, b) = (u[order[c]], u[4 + order[c]]);
            v[c] = _mm256_permute2f128_ps::<0x20>(a, b);
            v[c + 4] = _mm256_permute2f128_ps::<0x31>(a, b);
        }
    }
    #[inline(always)]
    unsafe fn round_bf16(v: __m256) -> __m256 {
        round_bf16_8(v)
    }
    #[inline(always)]
    unsafe fn bf16_pair_words(even: __m256, odd: __m256) -> __m256 {
        let lo = _mm256_srli_epi32::<16>(_mm256_castps_si256(even));
        let hi = _mm256_and_si256(
            _mm256_castps_si256(odd),
            _mm256_set1_epi32(0xffff_0000u32 as i32),
        );
        _mm256_castsi256_ps(_mm256_or_si256(lo, hi))
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_loadu_si256(p as *const __m256i))
    }
}

/// Round to nearest even to bf16, NaN quiet, as `bits << 16` (8 lanes).
#[inline(always)]
unsafe fn round_bf16_8(v: __m256) -> __m256 {
    let b = _mm256_castps_si256(v);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
    let sum = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), lsb);
    let hi = _mm256_set1_epi32(0xffff_0000u32 as i32);
    let rounded = _mm256_and_si256(sum, hi);
    let quiet = _mm256_and_si256(_mm256_or_si256(b, _mm256_set1_epi32(0x40_0000)), hi);
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
    _mm256_blendv_ps(
        _mm256_castsi256_ps(rounded),
        _mm256_castsi256_ps(quiet),
        nan,
    )
}

// SAFETY: used only through `run_avx512`, i.e. on CPUs with AVX-512F.
unsafe impl Simd for Avx512 {
    const LANES: usize = 16;
    const REGS: usize = 32;
    type V = __m512;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        _mm512_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        _mm512_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn pow2_from_rounded(t: __m512) -> __m512 {
        let bits = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(EXP_BIAS as i32));
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(bits))
    }
    #[inline(always)]
    unsafe fn widen_bf16_lo(p: *const u32) -> __m512 {
        let w = (p as *const __m512i).read_volatile();
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
    }
    #[inline(always)]
    unsafe fn widen_bf16_hi(p: *const u32) -> __m512 {
        let w = (p as *const __m512i).read_volatile();
        _mm512_castsi512_ps(_mm512_and_si512(
            w,
            _mm512_set1_epi32(0xffff_0000u32 as i32),
        ))
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [__m512]) {
        let a: &mut [__m512; 16] = v.try_into().expect("16 vectors");
        crate::gemm_f32::x86::transpose16(a)
    }
    #[inline(always)]
    unsafe fn round_bf16(v: __m512) -> __m512 {
        let b = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
        let sum = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb);
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let rounded = _mm512_and_si512(sum, hi);
        let quiet = _mm512_and_si512(_mm512_or_si512(b, _mm512_set1_epi32(0x40_0000)), hi);
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, rounded, quiet))
    }
    #[inline(always)]
    unsafe fn bf16_pair_words(even: __m512, odd: __m512) -> __m512 {
        let lo = _mm512_srli_epi32::<16>(_mm512_castps_si512(even));
        let hi = _mm512_and_si512(
            _mm512_castps_si512(odd),
            _mm512_set1_epi32(0xffff_0000u32 as i32),
        );
        _mm512_castsi512_ps(_mm512_or_si512(lo, hi))
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_loadu_si512(p as *const _))
    }
}
