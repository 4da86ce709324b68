//! The x86-64 bf16 kernels: AVX512_BF16 (`vdpbf16ps`) register tiles, AMX tiles, and the
//! AVX-512 weight-packing and activation-conversion helpers.

pub(super) mod avx512 {
    use super::super::{widx, MR, NR};
    use std::arch::x86_64::*;

    /// `to_bits` of 16 values, in 32-bit lanes (round to nearest even, NaN quiet).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn to_bits16(x: __m512) -> __m512i {
        let b = _mm512_castps_si512(x);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
        let sum = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb);
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(0x40));
        _mm512_mask_blend_epi32(nan, _mm512_srli_epi32::<16>(sum), quiet)
    }

    /// Packs whole 16-pair x 16-column blocks of a weight panel: column `c < rows.len()`
    /// (a multiple of 16) is `rows[c]`, pairs `0..pairs` (a multiple of 16). Per block,
    /// each column's 32 values become 16 pairs in one vector, and the 16 vectors are
    /// transposed so that each pair's 16 columns are stored contiguously (`widx`).
    ///
    /// # Safety
    /// The CPU has AVX-512F; every row has at least `2 * pairs` values; `panel` holds
    /// `widx(pairs - 1, rows.len() - 1) + 1` words.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pack_weight_blocks(panel: &mut [u32], rows: &[&[f32]], pairs: usize) {
        debug_assert!(rows.len().is_multiple_of(16) && pairs.is_multiple_of(16));
        debug_assert!(panel.len() > widx(pairs - 1, rows.len() - 1));
        for cg in 0..rows.len() / 16 {
            for pb in 0..pairs / 16 {
                let mut v = [_mm512_setzero_ps(); 16];
                for (c, vc) in v.iter_mut().enumerate() {
                    let r = rows[cg * 16 + c].as_ptr().add(32 * pb);
                    let lo = _mm512_cvtepi32_epi16(to_bits16(_mm512_loadu_ps(r)));
                    let hi = _mm512_cvtepi32_epi16(to_bits16(_mm512_loadu_ps(r.add(16))));
                    let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                    *vc = _mm512_castsi512_ps(w);
                }
                crate::gemm_f32::x86::transpose16(&mut v);
                for (p, vp) in v.iter().enumerate() {
                    let o = panel.as_mut_ptr().add(widx(pb * 16 + p, cg * 16));
                    _mm512_storeu_ps(o as *mut f32, *vp);
                }
            }
        }
    }

    /// Converts the leading multiple of 32 values of `r` into `o` (16 pairs per step) with
    /// `vcvtne2ps2bf16`; returns the pairs written.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn convert_row(o: &mut [u32], r: &[f32]) -> usize {
        let blocks = r.len() / 32;
        for b in 0..blocks {
            let lo = _mm512_loadu_ps(r.as_ptr().add(32 * b));
            let hi = _mm512_loadu_ps(r.as_ptr().add(32 * b + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(o.as_mut_ptr().add(16 * b) as *mut _, v);
        }
        blocks * 16
    }

    /// `vdpbf16ps` tile: MR rows x 4 zmm (64 columns), accumulators in registers.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile(
        tile: &mut [[f32; NR]; MR],
        a: &[u32],
        panel: &[u32],
        kp: usize,
        mr: usize,
        bias: &[f32; NR],
    ) {
        match mr {
            6 => tile_n::<6>(tile, a, panel, kp, bias),
            5 => tile_n::<5>(tile, a, panel, kp, bias),
            4 => tile_n::<4>(tile, a, panel, kp, bias),
            3 => tile_n::<3>(tile, a, panel, kp, bias),
            2 => tile_n::<2>(tile, a, panel, kp, bias),
            _ => tile_n::<1>(tile, a, panel, kp, bias),
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile_n<const R: usize>(
        tile: &mut [[f32; NR]; MR],
        a: &[u32],
        panel: &[u32],
        kp: usize,
        bias: &[f32; NR],
    ) {
        debug_assert!(a.len() >= R * kp && panel.len() >= kp * NR);
        let b = bias.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for row in acc.iter_mut() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(b.add(16 * j));
            }
        }
        let (ap, wp) = (a.as_ptr(), panel.as_ptr());
        // kp is a multiple of 16: blocks of 16 pair rows; inside a block the 4 column
        // blocks of a pair row are 256 words apart and consecutive rows 16 words apart.
        for p in 0..kp {
            let w = wp.add((p / 16) * 1024 + (p % 16) * 16);
            debug_assert_eq!(w, wp.add(widx(p, 0)));
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(w as *const _));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(256) as *const _));
            let w2: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(512) as *const _));
            let w3: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(768) as *const _));
            for (i, row) in acc.iter_mut().enumerate() {
                let x: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*ap.add(i * kp + p) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], x, w0);
                row[1] = _mm512_dpbf16_ps(row[1], x, w1);
                row[2] = _mm512_dpbf16_ps(row[2], x, w2);
                row[3] = _mm512_dpbf16_ps(row[3], x, w3);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                _mm512_storeu_ps(tile[i].as_mut_ptr().add(16 * j), *v);
            }
        }
    }
}
