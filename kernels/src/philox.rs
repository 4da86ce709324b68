//! Counter-based random bits (Philox4x32-10) and the dropout masks built from them.
//!
//! The contract is `docs/dropout-masks.md`: a mask bit is a pure function of
//! `(seed, sample, site, token position, channel)`. The PyTorch reference implements the
//! same function, so seeded MC runs can be compared number for number.

use crate::cpu::Isa;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds: four random u32 words for one 128-bit counter.
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Everything that fixes the masks of one dropout site for one sequence of one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutSite {
    /// The run's seed.
    pub seed: u64,
    /// MC sample index, 0..N.
    pub sample: u32,
    /// Global site index: `2*layer` (attn_out), `2*layer+1` (ffn_out), `2*n_layers` (head).
    pub site: u32,
    /// Drop probability `p` in `[0, 1)`.
    pub p: f32,
}

impl DropoutSite {
    /// Integer threshold: a word below it drops the channel (`floor(p * 2^32)`).
    #[inline]
    pub fn threshold(&self) -> u64 {
        ((self.p as f64) * 4_294_967_296.0).floor() as u64
    }

    /// Scale applied to kept values, `1 / (1 - p)` in f32.
    #[inline]
    pub fn scale(&self) -> f32 {
        1.0f32 / (1.0f32 - self.p)
    }

    #[inline]
    fn key(&self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    /// Writes the mask multipliers (0 or `1/(1-p)`) of token position `pos` for every channel.
    pub fn multipliers(&self, pos: u32, out: &mut [f32]) {
        let thr = self.threshold();
        let scale = self.scale();
        let key = self.key();
        for (block, chunk) in out.chunks_mut(4).enumerate() {
            let words = philox4x32_10([block as u32, pos, self.sample, self.site], key);
            for (o, w) in chunk.iter_mut().zip(words) {
                *o = if (w as u64) < thr { 0.0 } else { scale };
            }
        }
    }

    /// Is `channel` of position `pos` kept? (The scalar definition, for tests.)
    pub fn keep(&self, pos: u32, channel: u32) -> bool {
        let words = philox4x32_10([channel / 4, pos, self.sample, self.site], self.key());
        (words[(channel % 4) as usize] as u64) >= self.threshold()
    }
}

/// Residual add through dropout: `h[c] += mask(pos, c) * a[c]` for one token row.
/// With `site == None` (dropout off) it is a plain `h += a`.
///
/// The SIMD levels run several Philox counters per step in vector registers (16 on
/// AVX-512, 8 on AVX2, 4 on NEON) and select the kept channels with a masked add; every
/// level gives the scalar definition's bits (same masks, `a * scale` rounded, then added;
/// a dropped channel leaves `h` untouched).
pub fn dropout_residual_add(
    h: &mut [f32],
    a: &[f32],
    site: Option<&DropoutSite>,
    pos: u32,
    isa: Isa,
) {
    assert_eq!(h.len(), a.len(), "dropout_residual_add: row lengths differ");
    match site {
        None => {
            for (x, y) in h.iter_mut().zip(a) {
                *x += *y;
            }
        }
        Some(s) => {
            isa.assert_runs_here();
            #[allow(unused_mut)]
            let mut done = 0;
            if s.threshold() <= u32::MAX as u64 {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the level runs here (checked above): AVX-512F and BMI2.
                    Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                        done = unsafe { avx512::residual_add(h, a, s, pos) }
                    }
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above: AVX2.
                    Isa::Avx2 => done = unsafe { avx2::residual_add(h, a, s, pos) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: NEON is part of every AArch64 CPU.
                    Isa::Neon | Isa::NeonBf16 => done = unsafe { neon::residual_add(h, a, s, pos) },
                    _ => {}
                }
            }
            residual_add_scalar(&mut h[done..], &a[done..], s, pos, done / 4);
        }
    }
}

/// The scalar definition of [`dropout_residual_add`] from channel `4 * block0` on.
fn residual_add_scalar(h: &mut [f32], a: &[f32], s: &DropoutSite, pos: u32, block0: usize) {
    let thr = s.threshold();
    let scale = s.scale();
    let key = s.key();
    for (block, (hc, ac)) in h.chunks_mut(4).zip(a.chunks(4)).enumerate() {
        let words = philox4x32_10([(block0 + block) as u32, pos, s.sample, s.site], key);
        for ((x, y), w) in hc.iter_mut().zip(ac).zip(words) {
            if (w as u64) >= thr {
                *x += *y * scale;
            }
        }
    }
}

/// The Philox round keys of `key`: round `r` uses `key + r * (W0, W1)`.
#[inline(always)]
fn round_keys(key: [u32; 2]) -> [[u32; 2]; 10] {
    let mut k = key;
    std::array::from_fn(|r| {
        if r > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        k
    })
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{round_keys, DropoutSite, M0, M1};
    use std::arch::x86_64::*;

    /// High and low 32 bits of the 16 products `m * c`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mulhilo(m: __m512i, c: __m512i) -> (__m512i, __m512i) {
        let lo = _mm512_mullo_epi32(m, c);
        // Even lanes: 64-bit products of lanes 0, 2, ...; odd lanes shifted down first.
        let even = _mm512_srli_epi64::<32>(_mm512_mul_epu32(m, c));
        let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(m), _mm512_srli_epi64::<32>(c));
        let hi = _mm512_mask_blend_epi32(0xAAAA, even, odd);
        (hi, lo)
    }

    /// Philox4x32-10 of the 16 counters `[b0 + lane, pos, sample, site]`: word j of each.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn philox16(b0: u32, pos: u32, sample: u32, site: u32, keys: &[[u32; 2]; 10]) -> [__m512i; 4] {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut c0 = _mm512_add_epi32(_mm512_set1_epi32(b0 as i32), lanes);
        let mut c1 = _mm512_set1_epi32(pos as i32);
        let mut c2 = _mm512_set1_epi32(sample as i32);
        let mut c3 = _mm512_set1_epi32(site as i32);
        let (m0, m1) = (_mm512_set1_epi32(M0 as i32), _mm512_set1_epi32(M1 as i32));
        for k in keys {
            let (hi0, lo0) = mulhilo(m0, c0);
            let (hi1, lo1) = mulhilo(m1, c2);
            let k0 = _mm512_set1_epi32(k[0] as i32);
            let k1 = _mm512_set1_epi32(k[1] as i32);
            let n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), k0);
            let n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), k1);
            (c0, c1, c2, c3) = (n0, lo1, n2, lo0);
        }
        [c0, c1, c2, c3]
    }

    /// The vector part of `dropout_residual_add`: whole groups of 64 channels. Returns the
    /// channels done (a multiple of 64).
    ///
    /// # Safety
    /// The CPU has AVX-512F and BMI2; `s.threshold()` fits in u32.
    #[target_feature(enable = "avx512f,bmi2")]
    pub unsafe fn residual_add(h: &mut [f32], a: &[f32], s: &DropoutSite, pos: u32) -> usize {
        let n = h.len().min(a.len()) / 64 * 64;
        let scale = _mm512_set1_ps(s.scale());
        let keys = round_keys(s.key());
        let t = _mm512_set1_epi32(s.threshold() as u32 as i32);
        let mut g = 0;
        while g < n {
            let w = philox16((g / 4) as u32, pos, s.sample, s.site, &keys);
            // keep bit of channel g + 4*lane + j is bit `lane` of kj.
            let mut bits = 0u64;
            for (j, wj) in w.iter().enumerate() {
                let kj = _mm512_cmpge_epu32_mask(*wj, t) as u64;
                bits |= _pdep_u64(kj, 0x1111_1111_1111_1111u64 << j);
            }
            for q in 0..4 {
                let m = (bits >> (16 * q)) as u16;
                let hp = h.as_mut_ptr().add(g + 16 * q);
                let x = _mm512_loadu_ps(hp);
                let y = _mm512_mul_ps(_mm512_loadu_ps(a.as_ptr().add(g + 16 * q)), scale);
                _mm512_storeu_ps(hp, _mm512_mask_add_ps(x, m, x, y));
            }
            g += 64;
        }
        n
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{round_keys, DropoutSite, M0, M1};
    use std::arch::x86_64::*;

    /// High and low 32 bits of the 8 products `m * c`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mulhilo(m: __m256i, c: __m256i) -> (__m256i, __m256i) {
        let lo = _mm256_mullo_epi32(m, c);
        let even = _mm256_srli_epi64::<32>(_mm256_mul_epu32(m, c));
        let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(m), _mm256_srli_epi64::<32>(c));
        (_mm256_blend_epi32::<0b1010_1010>(even, odd), lo)
    }

    /// Philox4x32-10 of the 8 counters `[b0 + lane, pos, sample, site]`: word j of each.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn philox8(b0: u32, pos: u32, sample: u32, site: u32, keys: &[[u32; 2]; 10]) -> [__m256i; 4] {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut c0 = _mm256_add_epi32(_mm256_set1_epi32(b0 as i32), lanes);
        let mut c1 = _mm256_set1_epi32(pos as i32);
        let mut c2 = _mm256_set1_epi32(sample as i32);
        let mut c3 = _mm256_set1_epi32(site as i32);
        let (m0, m1) = (_mm256_set1_epi32(M0 as i32), _mm256_set1_epi32(M1 as i32));
        for k in keys {
            let (hi0, lo0) = mulhilo(m0, c0);
            let (hi1, lo1) = mulhilo(m1, c2);
            let k0 = _mm256_set1_epi32(k[0] as i32);
            let k1 = _mm256_set1_epi32(k[1] as i32);
            let n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0);
            let n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1);
            (c0, c1, c2, c3) = (n0, lo1, n2, lo0);
        }
        [c0, c1, c2, c3]
    }

    /// The vector part of `dropout_residual_add`: whole groups of 32 channels. Word j of
    /// counter lane i is channel `4 i + j`: a 4 x 8 transpose puts the words in channel
    /// order, and an unsigned compare against the threshold gives each channel's keep mask.
    /// Returns the channels done (a multiple of 32).
    ///
    /// # Safety
    /// The CPU has AVX2; `s.threshold()` fits in u32.
    #[target_feature(enable = "avx2")]
    pub unsafe fn residual_add(h: &mut [f32], a: &[f32], s: &DropoutSite, pos: u32) -> usize {
        let n = h.len().min(a.len()) / 32 * 32;
        let scale = _mm256_set1_ps(s.scale());
        let keys = round_keys(s.key());
        let t = _mm256_set1_epi32(s.threshold() as u32 as i32);
        let mut g = 0;
        while g < n {
            let [w0, w1, w2, w3] = philox8((g / 4) as u32, pos, s.sample, s.site, &keys);
            let t0 = _mm256_unpacklo_epi32(w0, w1);
            let t1 = _mm256_unpacklo_epi32(w2, w3);
            let t2 = _mm256_unpackhi_epi32(w0, w1);
            let t3 = _mm256_unpackhi_epi32(w2, w3);
            // r0: channels 0-3 | 16-19, r1: 4-7 | 20-23, r2: 8-11 | 24-27, r3: 12-15 | 28-31.
            let r0 = _mm256_unpacklo_epi64(t0, t1);
            let r1 = _mm256_unpackhi_epi64(t0, t1);
            let r2 = _mm256_unpacklo_epi64(t2, t3);
            let r3 = _mm256_unpackhi_epi64(t2, t3);
            let words = [
                _mm256_permute2x128_si256::<0x20>(r0, r1),
                _mm256_permute2x128_si256::<0x20>(r2, r3),
                _mm256_permute2x128_si256::<0x31>(r0, r1),
                _mm256_permute2x128_si256::<0x31>(r2, r3),
            ];
            for (q, w) in words.iter().enumerate() {
                // w >= t (unsigned) <=> max(w, t) == w.
                let keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_max_epu32(*w, t), *w));
                let hp = h.as_mut_ptr().add(g + 8 * q);
                let x = _mm256_loadu_ps(hp);
                let y = _mm256_mul_ps(_mm256_loadu_ps(a.as_ptr().add(g + 8 * q)), scale);
                _mm256_storeu_ps(hp, _mm256_blendv_ps(x, _mm256_add_ps(x, y), keep));
            }
            g += 32;
        }
        n
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{round_keys, DropoutSite, M0, M1};
    use std::arch::aarch64::*;

    /// High and low 32 bits of the 4 products `m * c`.
    #[inline(always)]
    unsafe fn mulhilo(m: uint32x4_t, c: uint32x4_t) -> (uint32x4_t, uint32x4_t) {
        let lo = vmulq_u32(m, c);
        let p01 = vmull_u32(vget_low_u32(m), vget_low_u32(c));
        let p23 = vmull_high_u32(m, c);
        let hi = vuzp2q_u32(vreinterpretq_u32_u64(p01), vreinterpretq_u32_u64(p23));
        (hi, lo)
    }

    /// Philox4x32-10 of the 4 counters `[b0 + lane, pos, sample, site]`: word j of each.
    #[inline(always)]
    unsafe fn philox4(
        b0: u32,
        pos: u32,
        sample: u32,
        site: u32,
        keys: &[[u32; 2]; 10],
    ) -> [uint32x4_t; 4] {
        let lanes: [u32; 4] = [0, 1, 2, 3];
        let mut c0 = vaddq_u32(vdupq_n_u32(b0), vld1q_u32(lanes.as_ptr()));
        let mut c1 = vdupq_n_u32(pos);
        let mut c2 = vdupq_n_u32(sample);
        let mut c3 = vdupq_n_u32(site);
        let (m0, m1) = (vdupq_n_u32(M0), vdupq_n_u32(M1));
        for k in keys {
            let (hi0, lo0) = mulhilo(m0, c0);
            let (hi1, lo1) = mulhilo(m1, c2);
            let n0 = veorq_u32(veorq_u32(hi1, c1), vdupq_n_u32(k[0]));
            let n2 = veorq_u32(veorq_u32(hi0, c3), vdupq_n_u32(k[1]));
            (c0, c1, c2, c3) = (n0, lo1, n2, lo0);
        }
        [c0, c1, c2, c3]
    }

    /// The vector part of `dropout_residual_add`: whole groups of 16 channels (a 4 x 4
    /// transpose puts the words in channel order). Returns the channels done.
    ///
    /// # Safety
    /// NEON (every AArch64 CPU); `s.threshold()` fits in u32.
    #[target_feature(enable = "neon")]
    pub unsafe fn residual_add(h: &mut [f32], a: &[f32], s: &DropoutSite, pos: u32) -> usize {
        let n = h.len().min(a.len()) / 16 * 16;
        let scale = vdupq_n_f32(s.scale());
        let keys = round_keys(s.key());
        let t = vdupq_n_u32(s.threshold() as u32);
        let u64s = |x: uint32x4_t| vreinterpretq_u64_u32(x);
        let u32s = |x: uint64x2_t| vreinterpretq_u32_u64(x);
        let mut g = 0;
        while g < n {
            let [w0, w1, w2, w3] = philox4((g / 4) as u32, pos, s.sample, s.site, &keys);
            let t0 = vtrn1q_u32(w0, w1);
            let t1 = vtrn2q_u32(w0, w1);
            let t2 = vtrn1q_u32(w2, w3);
            let t3 = vtrn2q_u32(w2, w3);
            let words = [
                u32s(vtrn1q_u64(u64s(t0), u64s(t2))),
                u32s(vtrn1q_u64(u64s(t1), u64s(t3))),
                u32s(vtrn2q_u64(u64s(t0), u64s(t2))),
                u32s(vtrn2q_u64(u64s(t1), u64s(t3))),
            ];
            for (q, w) in words.iter().enumerate() {
                let keep = vcgeq_u32(*w, t);
                let hp = h.as_mut_ptr().add(g + 4 * q);
                let x = vld1q_f32(hp);
                let y = vmulq_f32(vld1q_f32(a.as_ptr().add(g + 4 * q)), scale);
                vst1q_f32(hp, vbslq_f32(keep, vaddq_f32(x, y), x));
            }
            g += 16;
        }
        n
    }
}

/// In-place dropout of one row (the head's site): `x[c] *= mask(pos, c)`.
pub fn dropout_inplace(x: &mut [f32], site: &DropoutSite, pos: u32) {
    let thr = site.threshold();
    let scale = site.scale();
    let key = site.key();
    for (block, chunk) in x.chunks_mut(4).enumerate() {
        let words = philox4x32_10([block as u32, pos, site.sample, site.site], key);
        for (v, w) in chunk.iter_mut().zip(words) {
            *v = if (w as u64) < thr { 0.0 } else { *v * scale };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_vectors() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn mask_rate_and_scale() {
        let site = DropoutSite {
            seed: 7,
            sample: 3,
            site: 1,
            p: 0.1,
        };
        let mut m = vec![0.0f32; 1000];
        let mut dropped = 0;
        for pos in 0..100 {
            site.multipliers(pos, &mut m);
            for (c, v) in m.iter().enumerate() {
                assert_eq!(*v != 0.0, site.keep(pos, c as u32));
                if *v == 0.0 {
                    dropped += 1;
                } else {
                    assert_eq!(*v, 1.0 / 0.9f32);
                }
            }
        }
        // 100k Bernoulli(0.1) draws: 10000 +- 95 (sd); 5 sd band.
        assert!((9525..=10475).contains(&dropped), "dropped {dropped}");
    }

    #[test]
    fn fused_epilogues_match_multipliers() {
        let site = DropoutSite {
            seed: 0xdead_beef_0000_0001,
            sample: 9,
            site: 4,
            p: 0.25,
        };
        for width in [1usize, 3, 4, 5, 33] {
            let a: Vec<f32> = (0..width).map(|i| i as f32 * 0.5 - 1.0).collect();
            let mut m = vec![0.0; width];
            site.multipliers(11, &mut m);
            let mut h = vec![1.0f32; width];
            dropout_residual_add(&mut h, &a, Some(&site), 11, Isa::Generic);
            let mut x = a.clone();
            dropout_inplace(&mut x, &site, 11);
            for c in 0..width {
                assert_eq!(h[c], 1.0 + a[c] * m[c]);
                assert_eq!(x[c], a[c] * m[c]);
            }
        }
    }

    #[test]
    fn vector_residual_add_equals_the_scalar_definition() {
        for p in [0.0f32, 0.1, 0.5, 0.97] {
            let site = DropoutSite {
                seed: 0x0123_4567_89ab_cdef,
                sample: 17,
                site: 5,
                p,
            };
            for width in [1usize, 4, 15, 16, 17, 31, 32, 33, 63, 64, 65, 128, 200, 768] {
                let a: Vec<f32> = (0..width).map(|i| (i as f32 * 0.37).sin()).collect();
                for pos in [0u32, 3, 511] {
                    // Signed zeros in h: a dropped channel must keep -0.0 (not -0.0 + 0.0).
                    let h0: Vec<f32> = (0..width)
                        .map(|i| {
                            if i % 5 == 0 {
                                -0.0
                            } else {
                                (i as f32 * 0.11).cos()
                            }
                        })
                        .collect();
                    let mut want = h0.clone();
                    residual_add_scalar(&mut want, &a, &site, pos, 0);
                    for isa in crate::cpu::caps().available.iter().copied() {
                        let mut h = h0.clone();
                        dropout_residual_add(&mut h, &a, Some(&site), pos, isa);
                        let same = h.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{isa}: p {p} width {width} pos {pos}");
                    }
                }
            }
        }
    }

    #[test]
    fn p_zero_keeps_everything() {
        let site = DropoutSite {
            seed: 1,
            sample: 0,
            site: 0,
            p: 0.0,
        };
        assert!((0..64).all(|c| site.keep(0, c)));
    }
}
