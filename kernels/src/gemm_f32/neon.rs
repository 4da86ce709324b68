//! The AArch64 NEON f32 kernel: 6 weight rows x 12 activation rows (3 vectors of 4).
//!
//! Per 4 channels, each of the 6 weight rows is loaded once as a vector of 4 consecutive
//! weights and used by lane (`fmla vd.4s, vn.4s, vm.s[i]`): 6 weight loads and 12 panel
//! loads feed 72 fused multiply-adds into 18 accumulators (27 of the 32 registers).
//! Each element is the same chain as every other kernel's: one fused multiply-add per
//! channel in channel order, then the bias.

use super::{pack_panel_at, F32Kernel, Geometry, Tile};
use std::arch::aarch64::*;

/// Weight rows per tile.
const MR: usize = 6;

/// The NEON kernel.
pub(crate) struct Neon;

impl F32Kernel for Neon {
    fn geometry(_k: usize) -> Geometry {
        Geometry {
            mr: MR,
            nr: 12,
            lanes: 4,
        }
    }

    unsafe fn pack_panel(dst: &mut [f32], x: &[f32], r0: usize, rows: usize, wd: usize, k: usize) {
        pack_panel_at(crate::cpu::Isa::Neon, dst, x, r0, rows, wd, k)
    }

    unsafe fn tile(t: &Tile, width: usize, wd: usize) {
        match (width, wd / 4) {
            (MR, 3) => kernel::<MR, 3>(t),
            (MR, 2) => kernel::<MR, 2>(t),
            (MR, _) => kernel::<MR, 1>(t),
            (_, nv) => {
                for j in t.cols.clone() {
                    let one = t.column(j);
                    match nv {
                        3 => kernel::<1, 3>(&one),
                        2 => kernel::<1, 2>(&one),
                        _ => kernel::<1, 1>(&one),
                    }
                }
            }
        }
    }
}

/// `R` weight rows x `4 NV` packed rows, accumulators in registers for all of k.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn kernel<const R: usize, const NV: usize>(t: &Tile) {
    let (xp, w, k) = (t.xp, t.w, t.k);
    let wd = 4 * NV;
    let mut acc = [[vdupq_n_f32(0.0); NV]; R];
    let k4 = k / 4 * 4;
    let mut c = 0;
    while c < k4 {
        let wv: [float32x4_t; R] = std::array::from_fn(|j| vld1q_f32(w.add(j * k + c)));
        macro_rules! lane {
            ($l:literal) => {{
                let xv: [float32x4_t; NV] =
                    std::array::from_fn(|v| vld1q_f32(xp.add((c + $l) * wd + 4 * v)));
                for (aj, wj) in acc.iter_mut().zip(&wv) {
                    for (a, x) in aj.iter_mut().zip(&xv) {
                        *a = vfmaq_laneq_f32::<$l>(*a, *x, *wj);
                    }
                }
            }};
        }
        lane!(0);
        lane!(1);
        lane!(2);
        lane!(3);
        c += 4;
    }
    while c < k {
        let xv: [float32x4_t; NV] = std::array::from_fn(|v| vld1q_f32(xp.add(c * wd + 4 * v)));
        for (j, aj) in acc.iter_mut().enumerate() {
            let b = vld1q_dup_f32(w.add(j * k + c));
            for (a, x) in aj.iter_mut().zip(&xv) {
                *a = vfmaq_f32(*a, *x, b);
            }
        }
        c += 1;
    }
    let mut buf = [[0.0f32; 12]; MR];
    for (bj, aj) in buf.iter_mut().zip(&acc) {
        for (v, a) in aj.iter().enumerate() {
            vst1q_f32(bj.as_mut_ptr().add(4 * v), *a);
        }
    }
    // R == 1 is one column (`Tile::column`): its own column 0.
    for j in t.cols.clone() {
        let b = t.bias.map_or(0.0, |b| *b.add(j));
        for (r, v) in buf[j].iter().enumerate().take(t.rows) {
            *t.out.add(r * t.ldo + j) = v + b;
        }
    }
}
