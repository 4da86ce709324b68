//! The x86-64 f32 kernels: AVX-512 (assembly inner loops, 14 or 10 weight rows x 32 or 16
//! activation rows) and AVX2 + FMA (6 x 16).

use super::{pack_panel_at, F32Kernel, Geometry, Tile};

/// How far ahead in each weight row the AVX-512 kernels prefetch (see the module docs).
const PREFETCH_BYTES: usize = 256;

/// AVX-512 tile: 14 x 32.
const AVX512: Geometry = Geometry {
    mr: 14,
    nr: 32,
    lanes: 16,
};
/// AVX-512 tile when every weight row maps to the same L1 sets (`4 k` a multiple of
/// 4096 bytes): 14 such rows would exceed the 12 ways and thrash, 10 fit.
const AVX512_ALIASED: Geometry = Geometry {
    mr: 10,
    nr: 32,
    lanes: 16,
};
/// AVX2 tile: 6 x 16.
const AVX2: Geometry = Geometry {
    mr: 6,
    nr: 16,
    lanes: 8,
};

/// The AVX-512F kernel.
pub(crate) struct Avx512;

impl F32Kernel for Avx512 {
    fn geometry(k: usize) -> Geometry {
        if k.is_multiple_of(1024) {
            AVX512_ALIASED
        } else {
            AVX512
        }
    }

    unsafe fn pack_panel(dst: &mut [f32], x: &[f32], r0: usize, rows: usize, wd: usize, k: usize) {
        avx512::pack_panel(dst, x, r0, rows, wd, k)
    }

    unsafe fn tile(t: &Tile, width: usize, wd: usize) {
        avx512::tile(t, width, wd)
    }
}

/// The AVX2 + FMA kernel.
pub(crate) struct Avx2;

impl F32Kernel for Avx2 {
    fn geometry(_k: usize) -> Geometry {
        AVX2
    }

    unsafe fn pack_panel(dst: &mut [f32], x: &[f32], r0: usize, rows: usize, wd: usize, k: usize) {
        pack_panel_at(crate::cpu::Isa::Avx2, dst, x, r0, rows, wd, k)
    }

    unsafe fn tile(t: &Tile, width: usize, wd: usize) {
        avx2::tile(t, width, wd)
    }
}

pub(crate) use avx512::transpose16;

mod avx512 {
    use super::super::Tile;
    use super::{asm_10x16, asm_10x32, asm_14x16, asm_14x32};
    use std::arch::x86_64::*;

    /// Transposes 16 vectors in place: `v[i]` lane `j` becomes `v[j]` lane `i`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn transpose16(v: &mut [__m512; 16]) {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
        }
        let d = |a: __m512| _mm512_castps_pd(a);
        let s = |a: __m512d| _mm512_castpd_ps(a);
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            u[4 * i] = s(_mm512_unpacklo_pd(d(t[4 * i]), d(t[4 * i + 2])));
            u[4 * i + 1] = s(_mm512_unpackhi_pd(d(t[4 * i]), d(t[4 * i + 2])));
            u[4 * i + 2] = s(_mm512_unpacklo_pd(d(t[4 * i + 1]), d(t[4 * i + 3])));
            u[4 * i + 3] = s(_mm512_unpackhi_pd(d(t[4 * i + 1]), d(t[4 * i + 3])));
        }
        // u[4i + c] holds, in 128-bit lane L, column 4L + c of rows 4i..4i+4.
        for c in 0..4 {
            let a0 = _mm512_shuffle_f32x4::<0x44>(u[c], u[4 + c]);
            let a1 = _mm512_shuffle_f32x4::<0xEE>(u[c], u[4 + c]);
            let b0 = _mm512_shuffle_f32x4::<0x44>(u[8 + c], u[12 + c]);
            let b1 = _mm512_shuffle_f32x4::<0xEE>(u[8 + c], u[12 + c]);
            v[c] = _mm512_shuffle_f32x4::<0x88>(a0, b0);
            v[4 + c] = _mm512_shuffle_f32x4::<0xDD>(a0, b0);
            v[8 + c] = _mm512_shuffle_f32x4::<0x88>(a1, b1);
            v[12 + c] = _mm512_shuffle_f32x4::<0xDD>(a1, b1);
        }
    }

    /// Packs rows `r0..r0 + rows` of `x` (row stride `k`) into a panel of width `wd` (a
    /// multiple of 16): `dst[c * wd + r] = x[r0 + r][c]`, zero for `r >= rows`; 16 x 16
    /// blocks transposed in registers.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `dst.len() >= wd * k`; rows `r0..r0 + rows` of `x` exist.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pack_panel(
        dst: &mut [f32],
        x: &[f32],
        r0: usize,
        rows: usize,
        wd: usize,
        k: usize,
    ) {
        debug_assert!(dst.len() >= wd * k && x.len() >= (r0 + rows) * k && wd.is_multiple_of(16));
        let d = dst.as_mut_ptr();
        let src = x.as_ptr().add(r0 * k);
        let mut c0 = 0;
        while c0 < k {
            let kr = 16.min(k - c0);
            for g in 0..wd / 16 {
                let valid = rows.saturating_sub(16 * g).min(16);
                let s = src.add(16 * g * k + c0);
                let o = d.add(c0 * wd + 16 * g);
                let mut v = [_mm512_setzero_ps(); 16];
                if valid == 16 && kr == 16 {
                    for (l, vl) in v.iter_mut().enumerate() {
                        *vl = _mm512_loadu_ps(s.add(l * k));
                    }
                    transpose16(&mut v);
                    for (t, vt) in v.iter().enumerate() {
                        _mm512_storeu_ps(o.add(t * wd), *vt);
                    }
                } else {
                    // Rows past `rows` stay zero; channels past `kr` are masked off.
                    let mask: __mmask16 = ((1u32 << kr) - 1) as u16;
                    for (l, vl) in v.iter_mut().enumerate().take(valid) {
                        *vl = _mm512_maskz_loadu_ps(mask, s.add(l * k));
                    }
                    transpose16(&mut v);
                    for (t, vt) in v.iter().enumerate().take(kr) {
                        _mm512_storeu_ps(o.add(t * wd), *vt);
                    }
                }
            }
            c0 += 16;
        }
    }

    /// Runs one micro-tile of `width` weight rows (14 or 10, the tile geometries; fewer when
    /// n is smaller, done one column at a time) on a panel of width `wd` (16 or 32).
    ///
    /// # Safety
    /// The CPU has AVX-512F; the pointers of `t` cover what [`Tile`] describes: `width`
    /// weight rows of `k`, `wd * k` packed floats, the output rows x columns to write, and
    /// `width` bias values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(t: &Tile, width: usize, wd: usize) {
        // The output lines are needed at the end; fetch them (for writing) meanwhile.
        for r in 0..t.rows {
            let o = t.out.add(r * t.ldo);
            _mm_prefetch::<_MM_HINT_ET0>(o as *const i8);
            _mm_prefetch::<_MM_HINT_ET0>(o.add(width - 1) as *const i8);
        }
        let mut acc = [[0.0f32; 32]; 14];
        if width == 14 || width == 10 {
            match (width, wd) {
                (14, 32) => asm_14x32(&mut acc, t.xp, t.w, t.k),
                (14, _) => asm_14x16(&mut acc, t.xp, t.w, t.k),
                (_, 32) => asm_10x32(&mut acc, t.xp, t.w, t.k),
                _ => asm_10x16(&mut acc, t.xp, t.w, t.k),
            }
            store(t, &acc, wd / 16);
        } else {
            for j in t.cols.clone() {
                let one = t.column(j);
                column(&mut acc[0], &one, wd / 16);
                store(&one, &acc, wd / 16);
            }
        }
    }

    /// One weight row against a panel of `16 nv` rows: `acc[r] = sum_i xp[i][r] w[i]`.
    #[target_feature(enable = "avx512f")]
    unsafe fn column(acc: &mut [f32; 32], t: &Tile, nv: usize) {
        let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for c in 0..t.k {
            let b = _mm512_set1_ps(*t.w.add(c));
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(t.xp.add(c * 16 * nv)), b, a0);
            if nv == 2 {
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(t.xp.add(c * 32 + 16)), b, a1);
            }
        }
        _mm512_storeu_ps(acc.as_mut_ptr(), a0);
        _mm512_storeu_ps(acc.as_mut_ptr().add(16), a1);
    }

    /// Writes a finished tile: `acc[j][16 v + l]` is row `16 v + l`, column `j`; adds the
    /// bias and stores rows `< t.rows`, columns in `t.cols` (16 x 16 blocks transposed).
    #[target_feature(enable = "avx512f")]
    unsafe fn store(t: &Tile, acc: &[[f32; 32]; 14], nv: usize) {
        let cmask = (((1u32 << t.cols.end) - 1) & !((1u32 << t.cols.start) - 1)) as __mmask16;
        let bias = match t.bias {
            Some(b) => _mm512_maskz_loadu_ps(cmask, b),
            None => _mm512_setzero_ps(),
        };
        for v in 0..nv {
            let mut tr = [_mm512_setzero_ps(); 16];
            for (trj, aj) in tr.iter_mut().zip(acc) {
                *trj = _mm512_loadu_ps(aj.as_ptr().add(16 * v));
            }
            transpose16(&mut tr);
            for (l, row) in tr.iter().enumerate().take(t.rows.saturating_sub(16 * v)) {
                let o = t.out.add((16 * v + l) * t.ldo);
                _mm512_mask_storeu_ps(o, cmask, _mm512_add_ps(*row, bias));
            }
        }
    }
}

/// The 14 weight rows of an AVX-512 tile, passed to `$cb` as a list of
/// `(address, broadcast register, accumulators for a 32-row panel (2), accumulator for a
/// 16-row panel, byte offsets of the 32-row accumulators in `acc`)`, followed by the row
/// pointer the rows beyond 10 need (`d`), if any.
///
/// Registers: zmm0-27 accumulators (weight row j, panel vector v in zmm(2j + v), resp.
/// zmm(j) for a 16-row panel), zmm28-29 the panel's vectors, zmm30-31 broadcasts
/// (alternating). Row pointers: a = row 0, b = row 5, d = row 10 and t = 3 s (s: the row
/// stride in bytes), so the rows are a, a+s, a+2s, a+t, a+4s, b, ..., d+t with no per-row
/// registers.
#[rustfmt::skip]
macro_rules! tile_rows {
    (10, $cb:ident!($($a:tt)*)) => { tile_rows!(@ab $cb!($($a)*) []); };
    (14, $cb:ident!($($a:tt)*)) => {
        tile_rows!(@ab $cb!($($a)*) [
            ("{d}",         "zmm30", "zmm20", "zmm21", "zmm10", "1280", "1344")
            ("{d} + {s}",   "zmm31", "zmm22", "zmm23", "zmm11", "1408", "1472")
            ("{d} + {s}*2", "zmm30", "zmm24", "zmm25", "zmm12", "1536", "1600")
            ("{d} + {t}",   "zmm31", "zmm26", "zmm27", "zmm13", "1664", "1728")
        ] d);
    };
    (@ab $cb:ident!($($a:tt)*) [$($more:tt)*] $($d:ident)?) => {
        $cb!($($a)*; [
            ("{a}",         "zmm30", "zmm0",  "zmm1",  "zmm0", "0",    "64")
            ("{a} + {s}",   "zmm31", "zmm2",  "zmm3",  "zmm1", "128",  "192")
            ("{a} + {s}*2", "zmm30", "zmm4",  "zmm5",  "zmm2", "256",  "320")
            ("{a} + {t}",   "zmm31", "zmm6",  "zmm7",  "zmm3", "384",  "448")
            ("{a} + {s}*4", "zmm30", "zmm8",  "zmm9",  "zmm4", "512",  "576")
            ("{b}",         "zmm31", "zmm10", "zmm11", "zmm5", "640",  "704")
            ("{b} + {s}",   "zmm30", "zmm12", "zmm13", "zmm6", "768",  "832")
            ("{b} + {s}*2", "zmm31", "zmm14", "zmm15", "zmm7", "896",  "960")
            ("{b} + {t}",   "zmm30", "zmm16", "zmm17", "zmm8", "1024", "1088")
            ("{b} + {s}*4", "zmm31", "zmm18", "zmm19", "zmm9", "1152", "1216")
            $($more)*
        ] $($d)?);
    };
}

/// One channel of a 32-row panel: the panel's two vectors at byte offsets $x0/$x1 of `xp`,
/// then per weight row (at byte offset $off of its row pointer) a broadcast and two
/// multiply-adds.
#[rustfmt::skip]
macro_rules! step32 {
    ($x0:literal, $x1:literal, $off:literal,
     [$(($addr:tt, $bc:tt, $a0:tt, $a1:tt, $a:tt, $o0:tt, $o1:tt))*]) => {
        concat!(
            "vmovups zmm28, [{xp} + ", $x0, "]\n",
            "vmovups zmm29, [{xp} + ", $x1, "]\n",
            $(
                "vbroadcastss ", $bc, ", dword ptr [", $addr, " + ", $off, "]\n",
                "vfmadd231ps ", $a0, ", zmm28, ", $bc, "\n",
                "vfmadd231ps ", $a1, ", zmm29, ", $bc, "\n",
            )*
        )
    };
}

/// One channel of a 16-row panel: one vector, then per weight row one multiply-add with an
/// embedded broadcast (each weight is used once).
#[rustfmt::skip]
macro_rules! step16 {
    ($x0:literal, $off:literal,
     [$(($addr:tt, $bc:tt, $a0:tt, $a1:tt, $a:tt, $o0:tt, $o1:tt))*]) => {
        concat!(
            "vmovups zmm28, [{xp} + ", $x0, "]\n",
            $( "vfmadd231ps ", $a, ", zmm28, dword ptr [", $addr, " + ", $off, "]{{1to16}}\n", )*
        )
    };
}

/// The 16 channels of one loop iteration (one cache line of each weight row): `step32` at
/// panel byte offsets 128 i and 128 i + 64, or `step16` at 64 i, and weight offset 4 i.
#[rustfmt::skip]
macro_rules! x16 {
    (32, $rows:tt) => {
        concat!(
            step32!("0", "64", "0", $rows), step32!("128", "192", "4", $rows),
            step32!("256", "320", "8", $rows), step32!("384", "448", "12", $rows),
            step32!("512", "576", "16", $rows), step32!("640", "704", "20", $rows),
            step32!("768", "832", "24", $rows), step32!("896", "960", "28", $rows),
            step32!("1024", "1088", "32", $rows), step32!("1152", "1216", "36", $rows),
            step32!("1280", "1344", "40", $rows), step32!("1408", "1472", "44", $rows),
            step32!("1536", "1600", "48", $rows), step32!("1664", "1728", "52", $rows),
            step32!("1792", "1856", "56", $rows), step32!("1920", "1984", "60", $rows),
        )
    };
    (16, $rows:tt) => {
        concat!(
            step16!("0", "0", $rows), step16!("64", "4", $rows),
            step16!("128", "8", $rows), step16!("192", "12", $rows),
            step16!("256", "16", $rows), step16!("320", "20", $rows),
            step16!("384", "24", $rows), step16!("448", "28", $rows),
            step16!("512", "32", $rows), step16!("576", "36", $rows),
            step16!("640", "40", $rows), step16!("704", "44", $rows),
            step16!("768", "48", $rows), step16!("832", "52", $rows),
            step16!("896", "56", $rows), step16!("960", "60", $rows),
        )
    };
}

/// Defines one AVX-512 micro-kernel `$name(acc, xp, w, k)`: `$rows` (14 or 10) weight rows
/// from `w` (row stride `k`) x a `$panel`-row panel `xp` (32 or 16), over `k` channels:
/// `acc[j][r] = sum_i xp[$panel i + r] * w[j k + i]`, fused multiply-adds in channel order.
/// The channel loop is unrolled by 16 (one cache line of each weight row per iteration)
/// and prefetches the line `PREFETCH_BYTES` ahead in every row (a prefetch never faults:
/// past the last row it only wastes a request). With a 16-row panel, lanes 16..32 of `acc`
/// are left as they are.
macro_rules! avx512_kernel {
    ($name:ident, rows = $rows:tt, panel = $panel:tt) => {
        tile_rows!($rows, avx512_kernel!(@emit $name, $panel));
    };
    (@emit $name:ident, $panel:tt;
     [$(($addr:tt, $bc:tt, $a0:tt, $a1:tt, $a:tt, $o0:tt, $o1:tt))*]
     $($d:ident)?) => {
        /// A generated AVX-512 micro-kernel (see `avx512_kernel!`).
        ///
        /// # Safety
        /// The CPU has AVX-512F; `w` covers the tile's weight rows of `k` floats with stride
        /// `k`; `xp` covers `panel * k` floats.
        #[target_feature(enable = "avx512f")]
        #[rustfmt::skip]
        unsafe fn $name(acc: &mut [[f32; 32]; 14], xp: *const f32, w: *const f32, k: usize) {
            // SAFETY (caller): the loop reads the tile's weight rows x k and the panel's
            // floats and writes the accumulators to `acc`; every register it changes is
            // declared.
            avx512_kernel!(@asm $panel, acc, xp, w, k,
                [$(($addr, $bc, $a0, $a1, $a, $o0, $o1))*] $($d)?)
        }
    };
    (@asm 32, $acc:ident, $xp:ident, $w:ident, $k:ident,
     [$(($addr:tt, $bc:tt, $a0:tt, $a1:tt, $a:tt, $o0:tt, $o1:tt))*]
     $($d:ident)?) => {
        std::arch::asm!(
            $( concat!("vpxord ", $a0, ", ", $a0, ", ", $a0), concat!("vpxord ", $a1, ", ", $a1, ", ", $a1), )*
            "test {n4}, {n4}",
            "jz 3f",
            ".p2align 6",
            "2:",
            $( concat!("prefetcht0 [", $addr, " + {pd}]"), )*
            x16!(32, [$(($addr, $bc, $a0, $a1, $a, $o0, $o1))*]),
            "add {xp}, 2048",
            "add {a}, 64",
            "add {b}, 64",
            $( concat!("add {", stringify!($d), "}, 64"), )?
            "dec {n4}",
            "jnz 2b",
            "3:",
            "test {n1}, {n1}",
            "jz 5f",
            "4:",
            step32!("0", "64", "0", [$(($addr, $bc, $a0, $a1, $a, $o0, $o1))*]),
            "add {xp}, 128",
            "add {a}, 4",
            "add {b}, 4",
            $( concat!("add {", stringify!($d), "}, 4"), )?
            "dec {n1}",
            "jnz 4b",
            "5:",
            $( concat!("vmovups [{acc} + ", $o0, "], ", $a0), concat!("vmovups [{acc} + ", $o1, "], ", $a1), )*
            xp = inout(reg) $xp => _,
            a = inout(reg) $w => _,
            b = inout(reg) $w.add(5 * $k) => _,
            $( $d = inout(reg) $w.add(10 * $k) => _, )?
            s = in(reg) $k * 4,
            t = in(reg) $k * 12,
            n4 = inout(reg) $k / 16 => _,
            n1 = inout(reg) $k % 16 => _,
            pd = const PREFETCH_BYTES,
            acc = in(reg) $acc.as_mut_ptr(),
            $( out($a0) _, out($a1) _, )*
            out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
            options(nostack),
        )
    };
    (@asm 16, $acc:ident, $xp:ident, $w:ident, $k:ident,
     [$(($addr:tt, $bc:tt, $a0:tt, $a1:tt, $a:tt, $o0:tt, $o1:tt))*]
     $($d:ident)?) => {
        std::arch::asm!(
            $( concat!("vpxord ", $a, ", ", $a, ", ", $a), )*
            "test {n4}, {n4}",
            "jz 3f",
            ".p2align 6",
            "2:",
            $( concat!("prefetcht0 [", $addr, " + {pd}]"), )*
            x16!(16, [$(($addr, $bc, $a0, $a1, $a, $o0, $o1))*]),
            "add {xp}, 1024",
            "add {a}, 64",
            "add {b}, 64",
            $( concat!("add {", stringify!($d), "}, 64"), )?
            "dec {n4}",
            "jnz 2b",
            "3:",
            "test {n1}, {n1}",
            "jz 5f",
            "4:",
            step16!("0", "0", [$(($addr, $bc, $a0, $a1, $a, $o0, $o1))*]),
            "add {xp}, 64",
            "add {a}, 4",
            "add {b}, 4",
            $( concat!("add {", stringify!($d), "}, 4"), )?
            "dec {n1}",
            "jnz 4b",
            "5:",
            // Accumulator j goes to row j of `acc` (128 bytes apart, as for 32 rows).
            $( concat!("vmovups [{acc} + ", $o0, "], ", $a), )*
            xp = inout(reg) $xp => _,
            a = inout(reg) $w => _,
            b = inout(reg) $w.add(5 * $k) => _,
            $( $d = inout(reg) $w.add(10 * $k) => _, )?
            s = in(reg) $k * 4,
            t = in(reg) $k * 12,
            n4 = inout(reg) $k / 16 => _,
            n1 = inout(reg) $k % 16 => _,
            pd = const PREFETCH_BYTES,
            acc = in(reg) $acc.as_mut_ptr(),
            $( out($a) _, )*
            out("zmm28") _,
            options(nostack),
        )
    };
}

avx512_kernel!(asm_14x32, rows = 14, panel = 32);
avx512_kernel!(asm_10x32, rows = 10, panel = 32);
avx512_kernel!(asm_14x16, rows = 14, panel = 16);
avx512_kernel!(asm_10x16, rows = 10, panel = 16);

mod avx2 {
    use super::super::Tile;
    use std::arch::x86_64::*;

    /// Runs one micro-tile of `width` (6, or 1..6 when n < 6) weight rows on a panel of
    /// width `wd` (8 or 16).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the pointers of `t` cover what [`Tile`] describes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(t: &Tile, width: usize, wd: usize) {
        for r in 0..t.rows {
            let o = t.out.add(r * t.ldo);
            _mm_prefetch::<_MM_HINT_ET0>(o as *const i8);
            _mm_prefetch::<_MM_HINT_ET0>(o.add(width - 1) as *const i8);
        }
        match (width, wd) {
            (6, 16) => kernel::<6, 2>(t),
            (6, _) => kernel::<6, 1>(t),
            (_, 16) => t.cols.clone().for_each(|j| kernel::<1, 2>(&t.column(j))),
            _ => t.cols.clone().for_each(|j| kernel::<1, 1>(&t.column(j))),
        }
    }

    /// `MR` weight rows x `8 NV` packed rows, accumulators in registers for all of k.
    /// No software prefetch here, unlike the AVX-512 kernel: on an AMD EPYC Zen 3 (AVX2),
    /// interleaved A/B on the full-size model, the same prefetch as AVX-512's made the
    /// plain N=1 pass slower (18.8 ms without, 20.9 with; 7 pairs) and an N=50 pass
    /// slower or no faster (1.22x slower in 5 pairs, 1.01x in 7; benches/RESULTS.md).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel<const MR: usize, const NV: usize>(t: &Tile) {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        let (xp, w, k) = (t.xp, t.w, t.k);
        for c in 0..k {
            let xv: [__m256; NV] =
                std::array::from_fn(|v| _mm256_loadu_ps(xp.add(c * 8 * NV + 8 * v)));
            for (j, aj) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*w.add(j * k + c));
                for (a, x) in aj.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(*x, b, *a);
                }
            }
        }
        let mut buf = [[0.0f32; 16]; 6];
        for (bj, aj) in buf.iter_mut().zip(&acc) {
            for (v, a) in aj.iter().enumerate() {
                _mm256_storeu_ps(bj.as_mut_ptr().add(8 * v), *a);
            }
        }
        for j in t.cols.clone() {
            let b = t.bias.map_or(0.0, |b| *b.add(j));
            for (r, v) in buf[j].iter().enumerate().take(t.rows) {
                *t.out.add(r * t.ldo + j) = v + b;
            }
        }
    }
}
