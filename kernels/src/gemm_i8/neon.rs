//! The AArch64 int8 kernels: `smmla` (FEAT_I8MM), `sdot` by lane (FEAT_DotProd) and the
//! plain Advanced SIMD widening tile (`smull` + `sadalp`), and the vector activation
//! quantizer.

use super::{oidx, MR, NR, QMAX};
use crate::packing::widx;
use std::arch::aarch64::*;

/// `(max |x|, all finite)` with NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn amax(r: &[f32]) -> (f32, bool) {
    let n = r.len() / 4 * 4;
    let mut m = vdupq_n_f32(0.0);
    let mut ok = vdupq_n_u32(u32::MAX);
    let big = vdupq_n_f32(f32::MAX);
    for c in (0..n).step_by(4) {
        let a = vabsq_f32(vld1q_f32(r.as_ptr().add(c)));
        ok = vandq_u32(ok, vcleq_f32(a, big));
        m = vmaxq_f32(m, a);
    }
    let (tail, fin) = super::amax_scalar(&r[n..]);
    let v = vmaxvq_f32(m);
    (
        if tail > v { tail } else { v },
        fin && vminvq_u32(ok) == u32::MAX,
    )
}

/// Quantizes the leading multiple of 8 values of `r` into `o` (s8); returns how many.
/// `fcvtns` rounds to nearest even, as `round_ties_even`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn quantize(o: &mut [u8], r: &[f32], inv: f32) -> usize {
    let n = r.len() / 8 * 8;
    let vinv = vdupq_n_f32(inv);
    let (lo, hi) = (vdupq_n_s32(-(QMAX as i32)), vdupq_n_s32(QMAX as i32));
    let q4 = |p: *const f32| {
        let q = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(p), vinv));
        vminq_s32(vmaxq_s32(q, lo), hi)
    };
    for c in (0..n).step_by(8) {
        let p = r.as_ptr().add(c);
        let h = vcombine_s16(vmovn_s32(q4(p)), vmovn_s32(q4(p.add(4))));
        vst1_s8(o.as_mut_ptr().add(c) as *mut i8, vmovn_s16(h));
    }
    n
}

/// `acc += sdot(w, x[LANE])`: to each of 4 columns, the dot product of the column's quad
/// with quad `LANE` of `x`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot<const LANE: i32>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY (caller): FEAT_DotProd; registers only.
    std::arch::asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{lane}]",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        lane = const LANE,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// `sdot` tile: `mr` rows (s8 quads, `kq` words each) x 64 columns.
///
/// # Safety
/// The CPU has FEAT_DotProd; `a` holds `mr * kq` words, `panel` `kq * 64`; `kq` a multiple
/// of 16.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn tile_dot(
    tile: &mut [[i32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kq: usize,
    mr: usize,
) {
    let (a, w) = (a.as_ptr(), panel.as_ptr());
    let mut r = 0;
    while r < mr {
        let rows = (mr - r).min(4);
        let t = &mut tile[r..];
        let ar = a.add(r * kq);
        match rows {
            4 => dot_n::<4>(t, ar, w, kq),
            3 => dot_n::<3>(t, ar, w, kq),
            2 => dot_n::<2>(t, ar, w, kq),
            _ => dot_n::<1>(t, ar, w, kq),
        }
        r += rows;
    }
}

#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_n<const R: usize>(
    tile: &mut [[i32; NR]],
    a: *const u32,
    panel: *const u32,
    kq: usize,
) {
    for c0 in (0..NR).step_by(16) {
        let mut acc = [[vdupq_n_s32(0); 4]; R];
        let mut q = 0;
        while q < kq {
            // Four quads of each row, used by lane.
            let mut x = [vdupq_n_s8(0); R];
            for (i, xi) in x.iter_mut().enumerate() {
                *xi = vld1q_s8(a.add(i * kq + q) as *const i8);
            }
            macro_rules! step {
                ($l:literal) => {{
                    let w = panel.add(widx(q + $l, c0)) as *const i8;
                    let wv = [
                        vld1q_s8(w),
                        vld1q_s8(w.add(16)),
                        vld1q_s8(w.add(32)),
                        vld1q_s8(w.add(48)),
                    ];
                    for (i, row) in acc.iter_mut().enumerate() {
                        for (j, v) in row.iter_mut().enumerate() {
                            *v = sdot::<$l>(*v, wv[j], x[i]);
                        }
                    }
                }};
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
            q += 4;
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                vst1q_s32(tile[i].as_mut_ptr().add(c0 + 4 * j), *v);
            }
        }
    }
}

/// Plain Advanced SIMD tile: per quad, 4 columns' 4 bytes times the row's quad (`smull`,
/// i16 products: |a w| <= 127^2), pairs summed into i32 (`sadalp`). `a` holds `mr` rows of
/// `kq` words (s8 quads).
///
/// # Safety
/// The CPU has NEON; `a` holds `mr * kq` words, `panel` `kq * 64`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile_widen(
    tile: &mut [[i32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kq: usize,
    mr: usize,
) {
    let (a, w) = (a.as_ptr(), panel.as_ptr());
    for (i, row) in tile.iter_mut().take(mr).enumerate() {
        for c0 in (0..NR).step_by(8) {
            // lo: columns c0, c0+1 (two partial sums each), hi: c0+2, c0+3; same for +4.
            let mut acc = [vdupq_n_s32(0); 4];
            for q in 0..kq {
                // The row's quad, repeated over the vector.
                let x = vreinterpretq_s8_s32(vld1q_dup_s32(a.add(i * kq + q) as *const i32));
                let wp = w.add(widx(q, c0)) as *const i8;
                for g in 0..2 {
                    let wv = vld1q_s8(wp.add(16 * g));
                    let lo = vmull_s8(vget_low_s8(x), vget_low_s8(wv));
                    let hi = vmull_high_s8(x, wv);
                    acc[2 * g] = vpadalq_s16(acc[2 * g], lo);
                    acc[2 * g + 1] = vpadalq_s16(acc[2 * g + 1], hi);
                }
            }
            for g in 0..2 {
                let s = vpaddq_s32(acc[2 * g], acc[2 * g + 1]);
                vst1q_s32(row.as_mut_ptr().add(c0 + 4 * g), s);
            }
        }
    }
}

/// `acc += smmla(a, b)`: `a` holds 8 channels of two rows, `b` of two columns; `acc` gets the
/// four dot products `[r0.c0, r0.c1, r1.c0, r1.c1]`.
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY (caller): FEAT_I8MM; registers only.
    std::arch::asm!(
        "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// `smmla` tile: rows in pairs (s8, `kq` words each) x 64 columns of a panel in octets
/// (`oidx`); per octet, two pairs of rows against each pair of columns (each weight vector
/// serves 4 rows), 32 multiply-adds per instruction. A last odd row is paired with zeros.
///
/// # Safety
/// The CPU has FEAT_I8MM; `a` holds `mr * kq` words, `panel` `kq * 64` in octets; `kq` even.
#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn tile_mmla(
    tile: &mut [[i32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kq: usize,
    mr: usize,
) {
    debug_assert!(a.len() >= mr * kq && panel.len() >= kq * NR && kq.is_multiple_of(2));
    let mut r = 0;
    while r < mr {
        let rows = (mr - r).min(4);
        if rows > 2 {
            mmla_rows::<2>(tile, r, rows, a.as_ptr(), panel.as_ptr(), kq);
        } else {
            mmla_rows::<1>(tile, r, rows, a.as_ptr(), panel.as_ptr(), kq);
        }
        r += rows;
    }
}

/// Rows `r0..r0 + rows` (`rows <= 2 P`) as `P` pairs, all 64 columns.
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn mmla_rows<const P: usize>(
    tile: &mut [[i32; NR]; MR],
    r0: usize,
    rows: usize,
    a: *const u32,
    w: *const u32,
    kq: usize,
) {
    for c0 in (0..NR).step_by(16) {
        // acc[pp][p]: columns c0 + 2p, c0 + 2p + 1 of rows r0 + 2pp, r0 + 2pp + 1.
        let mut acc = [[vdupq_n_s32(0); 8]; P];
        for o in 0..kq / 2 {
            let mut x = [vdupq_n_s8(0); P];
            for (pp, xp) in x.iter_mut().enumerate() {
                let r = r0 + 2 * pp;
                let lo = vld1_s8(a.add(r * kq + 2 * o) as *const i8);
                let hi = if r + 1 < r0 + rows {
                    vld1_s8(a.add((r + 1) * kq + 2 * o) as *const i8)
                } else {
                    vdup_n_s8(0)
                };
                *xp = vcombine_s8(lo, hi);
            }
            let wp = w.add(oidx(o, c0, 0)) as *const i8;
            for p in 0..8 {
                let b = vld1q_s8(wp.add(16 * p));
                for (ap, xp) in acc.iter_mut().zip(&x) {
                    ap[p] = smmla(ap[p], *xp, b);
                }
            }
        }
        for (pp, ap) in acc.iter().enumerate() {
            let r = r0 + 2 * pp;
            for p in (0..8).step_by(2) {
                let (u, v) = (
                    vreinterpretq_s64_s32(ap[p]),
                    vreinterpretq_s64_s32(ap[p + 1]),
                );
                let c = c0 + 2 * p;
                vst1q_s32(
                    tile[r].as_mut_ptr().add(c),
                    vreinterpretq_s32_s64(vzip1q_s64(u, v)),
                );
                if r + 1 < r0 + rows {
                    let hi = vreinterpretq_s32_s64(vzip2q_s64(u, v));
                    vst1q_s32(tile[r + 1].as_mut_ptr().add(c), hi);
                }
            }
        }
    }
}
