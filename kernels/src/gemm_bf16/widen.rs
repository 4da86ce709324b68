//! The widening bf16 kernel, written once over [`Simd`] (AVX2, AVX-512F, NEON and the
//! portable one-lane instance): bf16 weight pairs are widened to f32 in the micro-kernel
//! (`lo = w << 16`, `hi = w & 0xffff0000`) and multiplied with fused multiply-adds against
//! activations already rounded to bf16 and stored as f32 (`Layout::Floats`).
//!
//! Per output element: `acc = bias; for p in pairs { acc = fma(a[2p], w_lo, acc);
//! acc = fma(a[2p+1], w_hi, acc) }`, the same on every instance, so the widening levels give
//! the same bits. Register tile: `R` rows x `CW` vectors of columns (6 x 16 columns on AVX2,
//! 6 x 64 on AVX-512, 6 x 16 on NEON). Per pair, two phases: the even channels (widen `CW`
//! vectors, then per row one broadcast and `CW` multiply-adds), then the odd ones (the words
//! loaded again): `R CW + CW + 1` registers (15 of AVX2's 16). Widening both halves at once
//! needs two more, and LLVM then spills accumulators to the stack (measured: 2x slower).

use super::{widx, MR, NR};

/// How many pairs ahead the kernel prefetches the panel's words (two 16-pair blocks).
const PREFETCH_PAIRS: usize = 32;
use crate::cpu::Isa;
use crate::simd::{self, Simd, SimdOp};

/// `tile[i][j] = bias[j] + sum_p (a[i][2p] w_lo[p][j] + a[i][2p+1] w_hi[p][j])` for
/// `i < mr`; `a` holds `mr` rows of `2 kp` f32 bit patterns.
pub(super) fn tile(
    tile: &mut [[f32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kp: usize,
    mr: usize,
    bias: &[f32; NR],
    isa: Isa,
) {
    assert!(
        mr <= MR && a.len() >= mr * 2 * kp && panel.len() >= kp * NR,
        "bf16 widening tile: operands too small"
    );
    let op = Tile {
        tile,
        a,
        panel,
        kp,
        mr,
        bias,
    };
    // SAFETY: the products check that `isa` runs here; the assert bounds every access.
    unsafe { simd::dispatch(isa, op) }
}

struct Tile<'a> {
    tile: &'a mut [[f32; NR]; MR],
    a: &'a [u32],
    panel: &'a [u32],
    kp: usize,
    mr: usize,
    bias: &'a [f32; NR],
}

impl SimdOp for Tile<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        macro_rules! rows {
            ($cw:literal) => {
                match self.mr {
                    6 => self.rows::<S, 6, $cw>(),
                    5 => self.rows::<S, 5, $cw>(),
                    4 => self.rows::<S, 4, $cw>(),
                    3 => self.rows::<S, 3, $cw>(),
                    2 => self.rows::<S, 2, $cw>(),
                    _ => self.rows::<S, 1, $cw>(),
                }
            };
        }
        // 6 rows x CW vectors of accumulators, plus the widened pair and one broadcast.
        if S::REGS >= 32 {
            rows!(4)
        } else {
            rows!(2)
        }
    }
}

impl Tile<'_> {
    #[inline(always)]
    unsafe fn rows<S: Simd, const R: usize, const CW: usize>(self) {
        let l = S::LANES;
        let (kp, panel) = (self.kp, self.panel.as_ptr());
        debug_assert!(kp.is_multiple_of(16));
        // The loop's addresses are one base per activation row and per column vector plus
        // the pair's offset: computing `r * 2 kp + 2 p` and the block index of `widx` for
        // every pair cost ~15 integer instructions per 24 multiply-adds (AVX2, measured in
        // the disassembly), where the core has little issue width to spare.
        let rows: [*const f32; R] =
            std::array::from_fn(|r| self.a.as_ptr().add(r * 2 * kp) as *const f32);
        for c0 in (0..NR).step_by(CW * l) {
            let mut acc: [[S::V; CW]; R] =
                [std::array::from_fn(|u| S::load(self.bias.as_ptr().add(c0 + u * l))); R];
            // Pairs in the panel's blocks of 16 (1 KB blocks 4 KB apart): inside a block, the
            // pair row of columns c0 + u l.. is 16 words after the previous one.
            for pb in (0..kp).step_by(16) {
                let w: [*const u32; CW] = std::array::from_fn(|u| panel.add(widx(pb, c0 + u * l)));
                debug_assert!(w.iter().all(|p| (*p as usize).is_multiple_of(4 * l)));
                // A new page every 16 pairs, where hardware prefetchers stop: fetch the same
                // columns PREFETCH_PAIRS pairs ahead (past the panel: harmless).
                let ahead: [*const u32; NR / 16] = std::array::from_fn(|u| {
                    panel.wrapping_add(widx(pb + PREFETCH_PAIRS, c0 + 16 * u))
                });
                for q in 0..16 {
                    for pf in ahead.iter().take((CW * l).div_ceil(16)) {
                        S::prefetch(pf.wrapping_add(16 * q) as *const u8);
                    }
                    let ch = 2 * (pb + q);
                    let lo: [S::V; CW] =
                        std::array::from_fn(|u| S::widen_bf16_lo(w[u].add(16 * q)));
                    for (ar, rp) in acc.iter_mut().zip(&rows) {
                        let x = S::splat(*rp.add(ch));
                        for (a, wl) in ar.iter_mut().zip(&lo) {
                            *a = S::fma(x, *wl, *a);
                        }
                    }
                    let hi: [S::V; CW] =
                        std::array::from_fn(|u| S::widen_bf16_hi(w[u].add(16 * q)));
                    for (ar, rp) in acc.iter_mut().zip(&rows) {
                        let x = S::splat(*rp.add(ch + 1));
                        for (a, wh) in ar.iter_mut().zip(&hi) {
                            *a = S::fma(x, *wh, *a);
                        }
                    }
                }
            }
            for (r, ar) in acc.iter().enumerate() {
                for (u, v) in ar.iter().enumerate() {
                    S::store(self.tile[r].as_mut_ptr().add(c0 + u * l), *v);
                }
            }
        }
    }
}
