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
//!
//! Two drivers share that pair loop ([`pairs`]): [`tile`] runs one row tile over all the
//! pairs; [`block`], for tasks of a few rows (a plain pass), runs every row tile on 64
//! pairs at a time (K-blocked), with the same chain per element.

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
        mr <= MR && a.len() >= mr * 2 * kp && panel.len() >= kp * NR && kp.is_multiple_of(16),
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
        let rows = row_bases::<R>(self.a, 0, self.kp);
        for c0 in (0..NR).step_by(CW * l) {
            let mut acc: [[S::V; CW]; R] =
                [std::array::from_fn(|u| S::load(self.bias.as_ptr().add(c0 + u * l))); R];
            pairs::<S, R, CW>(&mut acc, &rows, self.panel, c0, 0..self.kp, true);
            for (r, ar) in acc.iter().enumerate() {
                for (u, v) in ar.iter().enumerate() {
                    S::store(self.tile[r].as_mut_ptr().add(c0 + u * l), *v);
                }
            }
        }
    }
}

/// The f32 values of activation rows `r0..r0 + R` (rows of `2 kp` words). One base per row
/// (and per column vector in [`pairs`]) plus the pair's offset: computing `r * 2 kp + 2 p`
/// and the block index of `widx` for every pair cost ~15 integer instructions per 24
/// multiply-adds (AVX2, measured in the disassembly), where the core has little issue width
/// to spare.
#[inline(always)]
unsafe fn row_bases<const R: usize>(a: &[u32], r0: usize, kp: usize) -> [*const f32; R] {
    std::array::from_fn(|r| a.as_ptr().add((r0 + r) * 2 * kp) as *const f32)
}

/// The multiply-adds of pairs `ps` (whole 16-pair blocks) into `R` rows x `CW` vectors of
/// accumulators for the columns `c0..` of the panel: per pair, the even channels (widen `CW`
/// vectors, then per row one broadcast and `CW` fused multiply-adds), then the odd ones.
/// With `prefetch`, the panel's words `PREFETCH_PAIRS` ahead are fetched into L1 (a new page
/// every 16 pairs, where hardware prefetchers stop; past the panel: harmless).
#[inline(always)]
unsafe fn pairs<S: Simd, const R: usize, const CW: usize>(
    acc: &mut [[S::V; CW]; R],
    rows: &[*const f32; R],
    panel: &[u32],
    c0: usize,
    ps: std::ops::Range<usize>,
    prefetch: bool,
) {
    let l = S::LANES;
    let panel = panel.as_ptr();
    // The panel's blocks of 16 pairs (1 KB blocks 4 KB apart): inside a block, the pair row
    // of columns c0 + u l.. is 16 words after the previous one.
    for pb in ps.step_by(16) {
        let w: [*const u32; CW] = std::array::from_fn(|u| panel.add(widx(pb, c0 + u * l)));
        debug_assert!(w.iter().all(|p| (*p as usize).is_multiple_of(4 * l)));
        let ahead: [*const u32; NR / 16] =
            std::array::from_fn(|u| panel.wrapping_add(widx(pb + PREFETCH_PAIRS, c0 + 16 * u)));
        for q in 0..16 {
            if prefetch {
                for pf in ahead.iter().take((CW * l).div_ceil(16)) {
                    S::prefetch(pf.wrapping_add(16 * q) as *const u8);
                }
            }
            let ch = 2 * (pb + q);
            let lo: [S::V; CW] = std::array::from_fn(|u| S::widen_bf16_lo(w[u].add(16 * q)));
            for (ar, rp) in acc.iter_mut().zip(rows) {
                let x = S::splat(*rp.add(ch));
                for (a, wl) in ar.iter_mut().zip(&lo) {
                    *a = S::fma(x, *wl, *a);
                }
            }
            let hi: [S::V; CW] = std::array::from_fn(|u| S::widen_bf16_hi(w[u].add(16 * q)));
            for (ar, rp) in acc.iter_mut().zip(rows) {
                let x = S::splat(*rp.add(ch + 1));
                for (a, wh) in ar.iter_mut().zip(&hi) {
                    *a = S::fma(x, *wh, *a);
                }
            }
        }
    }
}

/// How many pairs one K-blocked pass over a task's rows covers: the panel's words for them
/// (16 KB at `NR` = 64) stay in L1 while every row tile of the task uses them.
const KB: usize = 64;
/// The most rows of a task that run K-blocked ([`block`]); more run [`tile`] row tile by
/// row tile. Both give the same bits.
pub(super) const BLOCKED_ROWS: usize = 32;

/// `acc[i][j] = bias[j] + sum_p (a[i][2p] w_lo[p][j] + a[i][2p+1] w_hi[p][j])` for every row
/// `i` of `acc` (at most [`BLOCKED_ROWS`]); `a` holds `acc.len()` rows of `2 kp` f32 bit
/// patterns, `panel` `kp` x `NR` words.
///
/// K-blocked: the pairs are taken [`KB`] at a time and, for each block, every row tile runs
/// on it (accumulators loaded from and stored back to `acc` around the block: exact, so each
/// element's chain is that of [`tile`], bit for bit). Row tile by row tile, the first tile
/// of a plain pass (16 rows) pulled the whole panel from memory on its own, with 6 rows of
/// work per byte, and the others re-read it from L2; blocked, the panel streams once,
/// sequentially (a block of pairs is 4 contiguous KB per 16 pairs), under all the rows' work.
/// The full-size model's plain pass in bf16 (Zen 3, AVX2, `emcoder bench` interleaved with
/// the unblocked kernel): time ratio medians 0.86, 0.97, 0.86 over three sets of 7 pairs
/// while the variants were tried, 0.975 over 9 pairs for this one (a noisy 2-core VM: single
/// pairs spread 0.5-1.6). With a task's 96 rows (MC dropout's samples) blocking measured 2%
/// slower (11 pairs): those run [`tile`].
pub(super) fn block<'t>(
    acc: &'t mut [std::mem::MaybeUninit<[f32; NR]>],
    a: &[u32],
    panel: &[u32],
    kp: usize,
    bias: &[f32; NR],
    isa: Isa,
) -> &'t mut [[f32; NR]] {
    assert!(
        acc.len() <= BLOCKED_ROWS
            && a.len() >= acc.len() * 2 * kp
            && panel.len() >= kp * NR
            && kp.is_multiple_of(16),
        "bf16 widening block: operands too small"
    );
    for row in acc.iter_mut() {
        row.write(*bias);
    }
    // SAFETY: every element was just initialized (MaybeUninit<T> has T's layout).
    let acc = unsafe { &mut *(acc as *mut [std::mem::MaybeUninit<[f32; NR]>] as *mut [[f32; NR]]) };
    let op = Block {
        acc: &mut *acc,
        a,
        panel,
        kp,
    };
    // SAFETY: the products check that `isa` runs here; the assert bounds every access.
    unsafe { simd::dispatch(isa, op) };
    acc
}

struct Block<'a> {
    acc: &'a mut [[f32; NR]],
    a: &'a [u32],
    panel: &'a [u32],
    kp: usize,
}

impl SimdOp for Block<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let rows = self.acc.len();
        for kb in (0..self.kp).step_by(KB) {
            let ps = kb..(kb + KB).min(self.kp);
            let mut r = 0;
            while r < rows {
                let mr = MR.min(rows - r);
                macro_rules! tile {
                    ($cw:literal) => {
                        match mr {
                            6 => self.tile::<S, 6, $cw>(r, ps.clone()),
                            5 => self.tile::<S, 5, $cw>(r, ps.clone()),
                            4 => self.tile::<S, 4, $cw>(r, ps.clone()),
                            3 => self.tile::<S, 3, $cw>(r, ps.clone()),
                            2 => self.tile::<S, 2, $cw>(r, ps.clone()),
                            _ => self.tile::<S, 1, $cw>(r, ps.clone()),
                        }
                    };
                }
                // As in [`tile`]: 6 rows x CW vectors of accumulators.
                if S::REGS >= 32 {
                    tile!(4)
                } else {
                    tile!(2)
                }
                r += mr;
            }
        }
    }
}

impl Block<'_> {
    /// Rows `r0..r0 + R` over the pairs `ps`, all `NR` columns, accumulators in `acc`. The
    /// first row tile alone prefetches: the block's 16 KB stay in L1 for the others.
    #[inline(always)]
    unsafe fn tile<S: Simd, const R: usize, const CW: usize>(
        &self,
        r0: usize,
        ps: std::ops::Range<usize>,
    ) {
        let l = S::LANES;
        let rows = row_bases::<R>(self.a, r0, self.kp);
        let acc_rows = self.acc.as_ptr() as *mut [f32; NR];
        for c0 in (0..NR).step_by(CW * l) {
            let mut acc: [[S::V; CW]; R] = std::array::from_fn(|r| {
                std::array::from_fn(|u| S::load((*acc_rows.add(r0 + r)).as_ptr().add(c0 + u * l)))
            });
            pairs::<S, R, CW>(&mut acc, &rows, self.panel, c0, ps.clone(), r0 == 0);
            for (r, ar) in acc.iter().enumerate() {
                for (u, v) in ar.iter().enumerate() {
                    S::store((*acc_rows.add(r0 + r)).as_mut_ptr().add(c0 + u * l), *v);
                }
            }
        }
    }
}
