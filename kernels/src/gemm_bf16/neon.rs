//! The AArch64 FEAT_BF16 kernel: `bfdot` register tiles.
//!
//! `bfdot vd.4s, vn.8h, vm.2h[i]` adds, to each of 4 columns, the dot product of the
//! column's weight pair (a u32 word of the packed panel) with pair `i` of the activation
//! vector: per step, each row's 4 consecutive pairs are loaded once and used by lane.

use super::{widx, MR, NR};
use std::arch::aarch64::*;

/// `tile[i][j] = bias[j] + sum_p dot2(a[i][p], panel[p][j])` for `i < mr`; `a` holds `mr`
/// rows of `kp` pair words (`kp` a multiple of 16).
///
/// # Safety
/// The CPU has FEAT_BF16; `a` holds `mr * kp` words, `panel` `kp * NR`.
#[target_feature(enable = "neon,bf16")]
pub(super) unsafe fn tile(
    tile: &mut [[f32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kp: usize,
    mr: usize,
    bias: &[f32; NR],
) {
    debug_assert!(a.len() >= mr * kp && panel.len() >= kp * NR && kp.is_multiple_of(4));
    match mr {
        6 => tile_n::<6>(tile, a, panel, kp, bias),
        5 => tile_n::<5>(tile, a, panel, kp, bias),
        4 => tile_n::<4>(tile, a, panel, kp, bias),
        3 => tile_n::<3>(tile, a, panel, kp, bias),
        2 => tile_n::<2>(tile, a, panel, kp, bias),
        _ => tile_n::<1>(tile, a, panel, kp, bias),
    }
}

/// `acc += bfdot(w, x[LANE])`.
#[inline]
#[target_feature(enable = "neon,bf16")]
unsafe fn bfdot<const LANE: i32>(acc: float32x4_t, w: uint32x4_t, x: uint32x4_t) -> float32x4_t {
    let mut acc = acc;
    // SAFETY (caller): FEAT_BF16; registers only.
    std::arch::asm!(
        "bfdot {acc:v}.4s, {w:v}.8h, {x:v}.2h[{lane}]",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        lane = const LANE,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// `R` rows x 8 columns (2 vectors) per pass over the pairs.
#[inline]
#[target_feature(enable = "neon,bf16")]
unsafe fn tile_n<const R: usize>(
    tile: &mut [[f32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kp: usize,
    bias: &[f32; NR],
) {
    let (ap, wp) = (a.as_ptr(), panel.as_ptr());
    for c0 in (0..NR).step_by(8) {
        let b0 = vld1q_f32(bias.as_ptr().add(c0));
        let b1 = vld1q_f32(bias.as_ptr().add(c0 + 4));
        let mut acc = [[b0, b1]; R];
        for p in (0..kp).step_by(4) {
            let x: [uint32x4_t; R] = std::array::from_fn(|r| vld1q_u32(ap.add(r * kp + p)));
            macro_rules! step {
                ($lane:literal) => {{
                    let w0 = vld1q_u32(wp.add(widx(p + $lane, c0)));
                    let w1 = vld1q_u32(wp.add(widx(p + $lane, c0 + 4)));
                    for (r, ar) in acc.iter_mut().enumerate() {
                        ar[0] = bfdot::<$lane>(ar[0], w0, x[r]);
                        ar[1] = bfdot::<$lane>(ar[1], w1, x[r]);
                    }
                }};
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
        }
        for (r, ar) in acc.iter().enumerate() {
            vst1q_f32(tile[r].as_mut_ptr().add(c0), ar[0]);
            vst1q_f32(tile[r].as_mut_ptr().add(c0 + 4), ar[1]);
        }
    }
}
