//! The x86-64 int8 kernels: AVX512_VNNI and AVX-VNNI register tiles, the AVX2 widening
//! tile, AMX-INT8 blocks, and the vector activation quantizers.

use super::{Layout, MR, NR, QMAX};
use crate::packing::widx;
use std::arch::x86_64::*;

/// `f::<R>(args)` for the tile's row count `mr` (1..=6) as a constant.
macro_rules! by_rows {
    ($mr:expr, $f:ident, $($arg:expr),*) => {
        match $mr {
            6 => $f::<6>($($arg),*),
            5 => $f::<5>($($arg),*),
            4 => $f::<4>($($arg),*),
            3 => $f::<3>($($arg),*),
            2 => $f::<2>($($arg),*),
            _ => $f::<1>($($arg),*),
        }
    };
}

/// `(max |x|, all finite)` with AVX-512 (the same values as `amax_scalar`: the maximum of
/// finite values does not depend on the order).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn amax_avx512(r: &[f32]) -> (f32, bool) {
    let n = r.len() / 16 * 16;
    let mut m = _mm512_setzero_ps();
    let mut ok: __mmask16 = 0xffff;
    let big = _mm512_set1_ps(f32::MAX);
    for c in (0..n).step_by(16) {
        let a = _mm512_abs_ps(_mm512_loadu_ps(r.as_ptr().add(c)));
        ok &= _mm512_cmp_ps_mask::<_CMP_LE_OQ>(a, big);
        m = _mm512_max_ps(m, a);
    }
    let (tail, fin) = super::amax_scalar(&r[n..]);
    let v = _mm512_reduce_max_ps(m);
    (if tail > v { tail } else { v }, fin && ok == 0xffff)
}

/// `(max |x|, all finite)` with AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn amax_avx2(r: &[f32]) -> (f32, bool) {
    let n = r.len() / 8 * 8;
    let mut m = _mm256_setzero_ps();
    let mut ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let big = _mm256_set1_ps(f32::MAX);
    for c in (0..n).step_by(8) {
        let a = _mm256_and_ps(_mm256_loadu_ps(r.as_ptr().add(c)), abs);
        ok = _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LE_OQ>(a, big));
        m = _mm256_max_ps(m, a);
    }
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), m);
    let (mut v, fin) = super::amax_scalar(&r[n..]);
    for x in lanes {
        v = if x > v { x } else { v };
    }
    (v, fin && _mm256_movemask_ps(ok) == 0xff)
}

/// Quantizes the leading multiple of 16 values of `r` with factor `inv` into `o` in the
/// layout's encoding; returns how many it did. `cvtps2dq` rounds to nearest even (the
/// default MXCSR), as `round_ties_even`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_avx512(o: &mut [u8], r: &[f32], inv: f32, layout: Layout) -> usize {
    let n = r.len() / 16 * 16;
    let vinv = _mm512_set1_ps(inv);
    let (lo, hi) = (
        _mm512_set1_epi32(-(QMAX as i32)),
        _mm512_set1_epi32(QMAX as i32),
    );
    for c in (0..n).step_by(16) {
        let q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(r.as_ptr().add(c)), vinv));
        let q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
        match layout {
            Layout::S16 => _mm256_storeu_si256(
                o.as_mut_ptr().add(2 * c) as *mut _,
                _mm512_cvtepi32_epi16(q),
            ),
            Layout::S8 => {
                _mm_storeu_si128(o.as_mut_ptr().add(c) as *mut _, _mm512_cvtepi32_epi8(q))
            }
            Layout::U8 => {
                let b = _mm_xor_si128(_mm512_cvtepi32_epi8(q), _mm_set1_epi8(-128));
                _mm_storeu_si128(o.as_mut_ptr().add(c) as *mut _, b)
            }
        }
    }
    n
}

/// As [`quantize_avx512`], with AVX2 (16 values per step).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_avx2(o: &mut [u8], r: &[f32], inv: f32, layout: Layout) -> usize {
    let n = r.len() / 16 * 16;
    let vinv = _mm256_set1_ps(inv);
    let (lo, hi) = (
        _mm256_set1_epi32(-(QMAX as i32)),
        _mm256_set1_epi32(QMAX as i32),
    );
    let q8 = |p: *const f32| {
        let q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p), vinv));
        _mm256_min_epi32(_mm256_max_epi32(q, lo), hi)
    };
    for c in (0..n).step_by(16) {
        let p = r.as_ptr().add(c);
        // 16 i16 in order: packs works per 128-bit lane, the permute puts the lanes back.
        let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(q8(p), q8(p.add(8))));
        match layout {
            Layout::S16 => _mm256_storeu_si256(o.as_mut_ptr().add(2 * c) as *mut _, w),
            _ => {
                let b =
                    _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                let b = if layout == Layout::U8 {
                    _mm_xor_si128(b, _mm_set1_epi8(-128))
                } else {
                    b
                };
                _mm_storeu_si128(o.as_mut_ptr().add(c) as *mut _, b)
            }
        }
    }
    n
}

/// `vpdpbusd` zmm tile: `mr` rows x 64 columns, accumulators from `comp`; `a` holds `mr`
/// rows of `kq` words of u8 quads.
///
/// # Safety
/// The CPU has AVX512F, AVX512BW and AVX512_VNNI; `a` holds `mr * kq` words, `panel`
/// `kq * 64`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile_vnni512(
    tile: &mut [[i32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kq: usize,
    mr: usize,
    comp: &[i32; NR],
) {
    let (a, w) = (a.as_ptr(), panel.as_ptr());
    by_rows!(mr, vnni512, tile, a, w, kq, comp)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni512<const R: usize>(
    tile: &mut [[i32; NR]; MR],
    a: *const u32,
    panel: *const u32,
    kq: usize,
    comp: &[i32; NR],
) {
    let c = comp.as_ptr();
    let start = [0, 1, 2, 3].map(|j| _mm512_loadu_si512(c.add(16 * j) as *const _));
    let mut acc = [start; R];
    for q in 0..kq {
        // The quad's 4 column blocks are 256 words apart (`widx`).
        let w = panel.add((q / 16) * 1024 + (q % 16) * 16);
        debug_assert_eq!(w, panel.add(widx(q, 0)));
        let w0 = _mm512_loadu_si512(w as *const _);
        let w1 = _mm512_loadu_si512(w.add(256) as *const _);
        let w2 = _mm512_loadu_si512(w.add(512) as *const _);
        let w3 = _mm512_loadu_si512(w.add(768) as *const _);
        for (i, row) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_epi32(*a.add(i * kq + q) as i32);
            row[0] = _mm512_dpbusd_epi32(row[0], x, w0);
            row[1] = _mm512_dpbusd_epi32(row[1], x, w1);
            row[2] = _mm512_dpbusd_epi32(row[2], x, w2);
            row[3] = _mm512_dpbusd_epi32(row[3], x, w3);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            _mm512_storeu_si512(tile[i].as_mut_ptr().add(16 * j) as *mut _, *v);
        }
    }
}

/// `vpdpbusd` ymm tile (AVX-VNNI): as [`tile_vnni512`], 16 columns per pass.
///
/// # Safety
/// The CPU has AVX2 and AVX-VNNI; sizes as [`tile_vnni512`].
#[target_feature(enable = "avx2,avxvnni")]
pub(super) unsafe fn tile_vnni256(
    tile: &mut [[i32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kq: usize,
    mr: usize,
    comp: &[i32; NR],
) {
    let (a, w) = (a.as_ptr(), panel.as_ptr());
    by_rows!(mr, vnni256, tile, a, w, kq, comp)
}

#[inline]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn vnni256<const R: usize>(
    tile: &mut [[i32; NR]; MR],
    a: *const u32,
    panel: *const u32,
    kq: usize,
    comp: &[i32; NR],
) {
    for c0 in (0..NR).step_by(16) {
        let c = comp.as_ptr().add(c0);
        let start = [0, 1].map(|j| _mm256_loadu_si256(c.add(8 * j) as *const __m256i));
        let mut acc = [start; R];
        for q in 0..kq {
            let w = panel.add(widx(q, c0));
            let w0 = _mm256_loadu_si256(w as *const __m256i);
            let w1 = _mm256_loadu_si256(w.add(8) as *const __m256i);
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_epi32(*a.add(i * kq + q) as i32);
                row[0] = _mm256_dpbusd_avx_epi32(row[0], x, w0);
                row[1] = _mm256_dpbusd_avx_epi32(row[1], x, w1);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                _mm256_storeu_si256(tile[i].as_mut_ptr().add(c0 + 8 * j) as *mut __m256i, *v);
            }
        }
    }
}

/// AVX2 tile: weights widened to i16 (`vpmovsxbw`), activations stored as i16, `vpmaddwd`
/// sums channel pairs into i32 exactly (|a w| <= 127^2: no saturation). 8 columns per
/// pass; `a` holds `mr` rows of `2 kq` words.
///
/// # Safety
/// The CPU has AVX2; `a` holds `2 mr kq` words, `panel` `kq * 64`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn tile_avx2(
    tile: &mut [[i32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kq: usize,
    mr: usize,
) {
    let (a, w) = (a.as_ptr(), panel.as_ptr());
    by_rows!(mr, widen, tile, a, w, kq)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen<const R: usize>(
    tile: &mut [[i32; NR]; MR],
    a: *const u32,
    panel: *const u32,
    kq: usize,
) {
    for c0 in (0..NR).step_by(8) {
        // acc[i][g]: columns c0 + 4g .. +4, two partial sums each (channels 01 and 23).
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for q in 0..kq {
            let w = panel.add(widx(q, c0));
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(w as *const __m128i));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(4) as *const __m128i));
            for (i, row) in acc.iter_mut().enumerate() {
                let x =
                    _mm256_set1_epi64x((a.add(2 * (i * kq + q)) as *const i64).read_unaligned());
                row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(x, w0));
                row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(x, w1));
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // hadd: [c0 c1 c4 c5 | c2 c3 c6 c7]; the permute restores column order.
            let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(row[0], row[1]));
            _mm256_storeu_si256(tile[i].as_mut_ptr().add(c0) as *mut __m256i, s);
        }
    }
}
