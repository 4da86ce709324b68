//! Counter-based random bits (Philox4x32-10) and the dropout masks built from them.
//!
//! The contract is `docs/dropout-masks.md`: a mask bit is a pure function of
//! `(seed, sample, site, token position, channel)`. The PyTorch reference implements the
//! same function, so seeded MC runs can be compared number for number.

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
/// On AVX-512 CPUs, 16 Philox counters run per step in vector registers and the 64 keep
/// bits they give select the channels of a masked add; the result is bit-identical to the
/// scalar code (same masks, `a * scale` rounded, then added).
pub fn dropout_residual_add(h: &mut [f32], a: &[f32], site: Option<&DropoutSite>, pos: u32) {
    debug_assert_eq!(h.len(), a.len());
    match site {
        None => {
            for (x, y) in h.iter_mut().zip(a) {
                *x += *y;
            }
        }
        Some(s) => {
            #[allow(unused_mut)]
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if simd::available() {
                // SAFETY: `available()` checked avx512f and bmi2 on this CPU.
                done = unsafe { simd::residual_add(h, a, s, pos) };
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

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{DropoutSite, M0, M1, W0, W1};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    /// AVX-512F (16-lane Philox, masked adds) and BMI2 (`pdep` to interleave mask bits).
    pub fn available() -> bool {
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            std::env::var("EMCODER_SCALAR_PHILOX").is_err()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("bmi2")
        })
    }

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
    fn philox16(b0: u32, pos: u32, sample: u32, site: u32, key: [u32; 2]) -> [__m512i; 4] {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut c0 = _mm512_add_epi32(_mm512_set1_epi32(b0 as i32), lanes);
        let mut c1 = _mm512_set1_epi32(pos as i32);
        let mut c2 = _mm512_set1_epi32(sample as i32);
        let mut c3 = _mm512_set1_epi32(site as i32);
        let (m0, m1) = (_mm512_set1_epi32(M0 as i32), _mm512_set1_epi32(M1 as i32));
        let mut k = key;
        for round in 0..10 {
            if round > 0 {
                k[0] = k[0].wrapping_add(W0);
                k[1] = k[1].wrapping_add(W1);
            }
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
    #[target_feature(enable = "avx512f,bmi2")]
    pub unsafe fn residual_add(h: &mut [f32], a: &[f32], s: &DropoutSite, pos: u32) -> usize {
        let n = h.len().min(a.len()) / 64 * 64;
        let thr = s.threshold();
        let scale = _mm512_set1_ps(s.scale());
        let key = s.key();
        if thr > u32::MAX as u64 {
            return 0; // p = 1 cannot happen (p < 1), but keep the scalar definition then
        }
        let t = _mm512_set1_epi32(thr as u32 as i32);
        let mut g = 0;
        while g < n {
            let w = philox16((g / 4) as u32, pos, s.sample, s.site, key);
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
            dropout_residual_add(&mut h, &a, Some(&site), 11);
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
            for width in [1usize, 63, 64, 65, 128, 200, 768] {
                let a: Vec<f32> = (0..width).map(|i| (i as f32 * 0.37).sin()).collect();
                for pos in [0u32, 3, 511] {
                    let mut h: Vec<f32> = (0..width).map(|i| (i as f32 * 0.11).cos()).collect();
                    let mut want = h.clone();
                    residual_add_scalar(&mut want, &a, &site, pos, 0);
                    dropout_residual_add(&mut h, &a, Some(&site), pos);
                    assert_eq!(h, want, "p {p} width {width} pos {pos}");
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
