//! BF16 linear layers: weights packed once to bfloat16 pairs, activations rounded to bf16
//! per call, products accumulated in f32. Norms, softmax and everything else stay f32.
//!
//! Layout: output columns are grouped in panels of `NR` = 64; inside a panel, for each
//! pair of input channels `(2p, 2p+1)` the 64 columns' weights are stored as u32 words
//! `lo = w[2p], hi = w[2p+1]` (the operand layout of `vdpbf16ps` and `bfdot`). `k` is padded
//! to even and `n` to a multiple of 64 with zeros. Every output element is summed over k in
//! the same order whatever `m`, the row's position and the thread count, so results are
//! batch- and thread-invariant like the f32 path.
//!
//! The kernel of each level ([`Isa`]):
//! - `amx`: AMX tiles (`tdpbf16ps`), 32 x 32 output blocks per step;
//! - `avx512-bf16`: `vdpbf16ps` register tiles;
//! - `neon-bf16`: `bfdot` register tiles (`neon` module);
//! - `avx512`, `avx2`, `neon` and `generic`: one kernel written over [`crate::simd::Simd`]
//!   (`widen` module): the bf16 weights are widened in the micro-kernel (a shift or a mask
//!   per loaded vector) and multiplied with f32 fused multiply-adds against activations
//!   rounded to bf16 and stored as f32. These levels give the same bits as each other.
//!
//! The activations' layout depends on the kernel ([`pack_activations`]).

use crate::cpu::Isa;
pub use crate::packing::Epilogue;
use crate::packing::{align_words, tasks, widx, Dests, LineAligned};
use crate::simd::{self, bf16_bits, Simd, SimdOp};
use half::bf16;
use rayon::prelude::*;

#[cfg(target_arch = "aarch64")]
mod neon;
mod widen;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
use x86::avx512;

/// Output columns per panel.
pub const NR: usize = crate::packing::NR;
/// Rows per micro-tile.
pub const MR: usize = 6;
/// Rows per parallel task.
const MC: usize = 96;
/// Rows of a group of tasks that share weight panels (about 1.2 MB of activations at
/// k = 768: inside a core's L2).
const SB_ROWS: usize = 768;

/// How a level's kernel wants the activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Row-major rows of `pairs(k)` u32 words, each two bf16 (avx512-bf16, neon-bf16).
    Pairs,
    /// AMX: per 32-row block, per step of 16 pairs, the 32 rows' 16 pairs (1 KB tiles).
    AmxTiles,
    /// Row-major rows of `2 pairs(k)` f32 values rounded to bf16 (the widening kernels).
    Floats,
}

fn layout(isa: Isa) -> Layout {
    match isa {
        Isa::Amx => Layout::AmxTiles,
        Isa::Avx512Bf16 | Isa::NeonBf16 => Layout::Pairs,
        _ => Layout::Floats,
    }
}

/// Panics unless the products can run at `isa` here: the level runs on this CPU and, for
/// `amx`, the OS granted this process the tile state (asked for on first use: a process
/// that never runs a bf16 product at the amx level never asks).
#[track_caller]
fn check_level(isa: Isa) {
    isa.assert_runs_here();
    assert!(
        isa != Isa::Amx || crate::cpu::request_amx(),
        "the OS did not grant this process the AMX tile state: use the avx512-bf16 level"
    );
}

/// Words per row of packed activations.
fn row_words(isa: Isa, k: usize) -> usize {
    match layout(isa) {
        Layout::Floats => 2 * pairs(k),
        _ => pairs(k),
    }
}

/// A (n, k) weight matrix packed for the kernels.
#[derive(Clone, Debug)]
pub struct PackedBf16 {
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    kp: usize,
    panels: usize,
    data: LineAligned,
}

/// Packs a pair of f32 values into one u32 of two bf16 (`lo` = even channel).
#[inline]
pub fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | (bf16_bits(hi) << 16)
}

impl PackedBf16 {
    /// Packs `w`, (n, k) row-major f32 (an `nn.Linear` weight). `isa` only picks how
    /// the packing runs (the words are the same for every level). Panics when the memory
    /// cannot be had ([`Self::try_pack_parts`] returns an error instead).
    pub fn pack(w: &[f32], n: usize, k: usize, isa: Isa) -> Self {
        Self::pack_parts(&[(w, n)], k, isa)
    }

    /// Packs several weights of the same input width stacked by output rows, e.g. q, k
    /// and v into one (3d, d) product: `parts` are `(weight (n_i, k) row-major, n_i)`.
    /// Panics when the memory cannot be had.
    pub fn pack_parts(parts: &[(&[f32], usize)], k: usize, isa: Isa) -> Self {
        Self::try_pack_parts(parts, k, isa).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::pack_parts`], with an error (how many bytes) when the packed weights cannot
    /// be allocated.
    pub fn try_pack_parts(parts: &[(&[f32], usize)], k: usize, isa: Isa) -> Result<Self, String> {
        isa.assert_runs_here();
        Self::pack_parts_with(parts, k, (isa != Isa::Generic).then_some(isa))
    }

    /// [`Self::pack_parts`], with the vector block conversion of level `simd` (AVX-512:
    /// 16 columns x 16 pairs; AVX2 8 x 8; NEON 4 x 4) or, with `None`, only the scalar loop:
    /// the same words either way (tested). `simd` must run here.
    fn pack_parts_with(
        parts: &[(&[f32], usize)],
        k: usize,
        simd: Option<Isa>,
    ) -> Result<Self, String> {
        for (w, n) in parts {
            assert!(w.len() >= n * k, "PackedBf16::pack: weight too small");
        }
        let n: usize = parts.iter().map(|p| p.1).sum();
        let row_of = |col: usize| -> &[f32] {
            let mut c = col;
            for (w, ni) in parts {
                if c < *ni {
                    return &w[c * k..(c + 1) * k];
                }
                c -= ni;
            }
            unreachable!("column {col} beyond {n}")
        };
        let kp = pairs(k);
        let panels = n.div_ceil(NR);
        let words = panels * kp * NR;
        let mut data = LineAligned::try_zeroed(words).ok_or_else(|| {
            format!(
                "out of memory: {:.1} MB for bf16 weights ({n} x {k}) could not be allocated",
                words as f64 * 4e-6
            )
        })?;
        // k = 0 (no pairs): nothing to fill; chunks of 0 words would panic.
        data.words_mut()
            .par_chunks_mut((kp * NR).max(1))
            .enumerate()
            .for_each(|(pi, panel)| {
                let cols = NR.min(n - pi * NR);
                let rows: Vec<&[f32]> = (0..cols).map(|j| row_of(pi * NR + j)).collect();
                // Whole blocks of L columns x L pairs (2 L values of each row), converted a
                // vector at a time and transposed in registers (the load time of a bf16
                // model is mostly this loop). The blocks it fills, columns < vec_cols x
                // pairs < vec_pairs, are skipped below ((0, 0) where none ran).
                let (vec_cols, vec_pairs) = match simd {
                    #[cfg(target_arch = "x86_64")]
                    Some(Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx) => {
                        let vec = (cols / 16 * 16, k / 32 * 16);
                        if vec.0 > 0 && vec.1 > 0 {
                            // SAFETY: these levels have AVX-512F (the caller checked the
                            // level runs here); the rows hold k >= 2 * vec_pairs values;
                            // the blocks written are inside this panel (pairs < vec_pairs
                            // <= kp, columns < vec_cols <= NR).
                            unsafe { avx512::pack_weight_blocks(panel, &rows[..vec.0], vec.1) };
                        }
                        vec
                    }
                    // SAFETY: the caller checked that the level runs here.
                    Some(isa) => unsafe {
                        simd::dispatch(
                            isa,
                            PackBlocks {
                                panel,
                                rows: &rows,
                                k,
                            },
                        )
                    },
                    None => (0, 0),
                };
                // The rest (all of it without AVX-512): pair-major so the writes are
                // sequential; the panel's rows are read in step.
                for p in 0..k.div_ceil(2) {
                    let j0 = if p < vec_pairs { vec_cols } else { 0 };
                    for (j, row) in rows.iter().enumerate().skip(j0) {
                        let hi = if 2 * p + 1 < k { row[2 * p + 1] } else { 0.0 };
                        panel[widx(p, j)] = pair(row[2 * p], hi);
                    }
                }
            });
        Ok(PackedBf16 {
            n,
            k,
            kp,
            panels,
            data,
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.words().len() * 4
    }

    /// The weight `w[col][ch]` as the kernels see it (bf16-rounded), for references.
    pub fn get(&self, col: usize, ch: usize) -> f32 {
        let word = self.data.words()[(col / NR) * self.kp * NR + widx(ch / 2, col % NR)];
        let bits = if ch.is_multiple_of(2) {
            word & 0xffff
        } else {
            word >> 16
        };
        bf16::from_bits(bits as u16).to_f32()
    }
}

/// The vector part of the weight packing for one panel: whole blocks of `L` columns x `L`
/// pairs. Per block, `L` columns' `L` first and `L` next channels are transposed into
/// channel vectors (one lane per column), rounded, and combined into `L` vectors of pair
/// words, each stored where `widx` puts that pair's `L` columns (contiguous).
struct PackBlocks<'a> {
    panel: &'a mut [u32],
    rows: &'a [&'a [f32]],
    k: usize,
}

impl SimdOp for PackBlocks<'_> {
    /// `(vec_cols, vec_pairs)`: the columns x pairs it filled.
    type Output = (usize, usize);
    #[inline(always)]
    unsafe fn run<S: Simd>(self) -> (usize, usize) {
        let l = S::LANES;
        let (cols, pairs) = (self.rows.len() / l * l, self.k / (2 * l) * l);
        if l == 1 || cols == 0 || pairs == 0 {
            return (0, 0);
        }
        let mut a = [S::zero(); 16];
        let mut b = [S::zero(); 16];
        for cg in (0..cols).step_by(l) {
            for p0 in (0..pairs).step_by(l) {
                for j in 0..l {
                    let r = self.rows[cg + j].as_ptr().add(2 * p0);
                    a[j] = S::load(r);
                    b[j] = S::load(r.add(l));
                }
                S::transpose(&mut a[..l]);
                S::transpose(&mut b[..l]);
                // Channel 2 p0 + c is a[c] for c < l, else b[c - l].
                for i in 0..l {
                    let ch = |c: usize| if c < l { a[c] } else { b[c - l] };
                    let (even, odd) = (S::round_bf16(ch(2 * i)), S::round_bf16(ch(2 * i + 1)));
                    let w = S::bf16_pair_words(even, odd);
                    let o = self.panel.as_mut_ptr().add(widx(p0 + i, cg));
                    S::store(o as *mut f32, w);
                }
            }
        }
        (cols, pairs)
    }
}

/// Pairs of input channels per row: `ceil(k/2)` padded with zero pairs to a multiple of 16
/// (one AMX tile row). Zero pairs add exactly 0, so no kernel's result changes.
pub fn pairs(k: usize) -> usize {
    k.div_ceil(2).div_ceil(16) * 16
}

/// Rows of the packed activations: `m` padded with zero rows to a multiple of 32.
fn padded_rows(m: usize) -> usize {
    m.div_ceil(32) * 32
}

/// The u32 words of `xp` that [`pack_activations`] uses for `m` rows of `k` channels at
/// level `isa`: a caller that reserves this much capacity beforehand (fallibly) makes the
/// packing allocate nothing.
pub fn activation_words(m: usize, k: usize, isa: Isa) -> usize {
    padded_rows(m) * row_words(isa, k) + 16
}

/// `x` rounded to bf16 and back to f32 (round to nearest even, NaN quiet): the value the
/// kernels multiply.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(bf16_bits(x) << 16)
}

/// Rounds activations `x` (m, k) to bf16 (round to nearest even) for the kernel of `isa`,
/// into `xp` (grown as needed, rows padded with zeros to a multiple of 32 and channels to
/// `2 pairs(k)`). A product must use the `isa` its activations were packed for.
///
/// Layouts: `avx512-bf16` and `neon-bf16` take row-major rows of `pairs(k)` words (two
/// bf16 each; the AVX-512 path converts 32 values per instruction); `amx` tiles them so
/// that every A tile is one contiguous 1 KB block (per 32-row block, per step of 16 pairs,
/// the 32 rows' 16 pairs); the widening kernels take rows of `2 pairs(k)` f32 values.
pub fn pack_activations(xp: &mut Vec<u32>, x: &[f32], m: usize, k: usize, isa: Isa) {
    isa.assert_runs_here();
    assert!(x.len() >= m * k, "pack_activations: input too small");
    let kp = pairs(k);
    let rw = row_words(isa, k);
    let len = padded_rows(m) * rw;
    debug_assert_eq!(len + 16, activation_words(m, k, isa));
    if xp.len() < len + 16 {
        xp.reserve_exact(len + 16 - xp.len());
        xp.resize(len + 16, 0);
    }
    // Start on a cache line (PackedActivations::new finds the same offset).
    let off = align_words(xp.as_ptr());
    let xp = &mut xp[off..off + len];
    if k == 0 {
        // No channels: rows of padding only (and chunks of 0 would panic below).
        xp.fill(0);
        return;
    }
    let convert = |o: &mut [u32], r: &[f32]| {
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512Bf16 || isa == Isa::Amx {
            // SAFETY: these levels have AVX512_BF16 (checked above).
            done = unsafe { avx512::convert_row(o, r) };
        }
        let k = r.len();
        for p in done..k.div_ceil(2) {
            o[p] = pair(r[2 * p], if 2 * p + 1 < k { r[2 * p + 1] } else { 0.0 });
        }
        o[k.div_ceil(2)..].fill(0);
    };
    match layout(isa) {
        Layout::AmxTiles => {
            let steps = kp / 16;
            xp[..len]
                .par_chunks_mut(32 * kp)
                .enumerate()
                .for_each(|(b, blk)| {
                    for rr in 0..32 {
                        let row = b * 32 + rr;
                        for q in 0..steps {
                            let o = &mut blk[(q * 32 + rr) * 16..(q * 32 + rr + 1) * 16];
                            if row < m && 32 * q < k {
                                let r = &x[row * k + 32 * q..row * k + (32 * q + 32).min(k)];
                                convert(o, r);
                            } else {
                                o.fill(0);
                            }
                        }
                    }
                });
        }
        Layout::Pairs => {
            // Only the padding must be zero: rows m.. of the last block, pairs ceil(k/2)..
            xp[m * rw..len].fill(0);
            xp[..m * rw]
                .par_chunks_mut(rw)
                .zip(x.par_chunks(k))
                .for_each(|(o, r)| convert(o, &r[..k]));
        }
        Layout::Floats => {
            xp[m * rw..len].fill(0);
            xp[..m * rw]
                .par_chunks_mut(rw)
                .zip(x.par_chunks(k))
                .for_each(|(o, r)| {
                    // SAFETY: the level runs here (checked above).
                    unsafe {
                        simd::dispatch(
                            isa,
                            RoundRow {
                                o: &mut o[..k],
                                r: &r[..k],
                            },
                        )
                    };
                    o[k..].fill(0);
                });
        }
    }
}

/// `o[i] = bits(round_bf16(r[i]))`: one row of the widening kernels' activations.
struct RoundRow<'a> {
    o: &'a mut [u32],
    r: &'a [f32],
}

impl SimdOp for RoundRow<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let n = self.r.len().min(self.o.len());
        let nv = n / S::LANES * S::LANES;
        let (o, r) = (self.o.as_mut_ptr() as *mut f32, self.r.as_ptr());
        for i in (0..nv).step_by(S::LANES) {
            S::store(o.add(i), S::round_bf16(S::load(r.add(i))));
        }
        for i in nv..n {
            *self.o.get_unchecked_mut(i) = bf16_bits(*r.add(i)) << 16;
        }
    }
}

/// Activations already packed by [`pack_activations`] (shared by several products of the
/// same input, e.g. q, k and v).
pub struct PackedActivations<'a> {
    xp: &'a [u32],
    m: usize,
    k: usize,
    isa: Isa,
}

impl<'a> PackedActivations<'a> {
    /// Wraps `xp` holding `m` rows of `k` channels packed for `isa`.
    pub fn new(xp: &'a [u32], m: usize, k: usize, isa: Isa) -> Self {
        let off = align_words(xp.as_ptr());
        assert!(
            xp.len() >= off + padded_rows(m) * row_words(isa, k),
            "PackedActivations: buffer too small"
        );
        PackedActivations {
            xp: &xp[off..],
            m,
            k,
            isa,
        }
    }
}

/// `out (m, n) = x (m, k) · W^T (+ bias)` with `W` packed. `xp` is scratch for the bf16
/// activations. Runs on the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn linear_bf16(
    out: &mut [f32],
    x: &[f32],
    w: &PackedBf16,
    bias: Option<&[f32]>,
    m: usize,
    xp: &mut Vec<u32>,
    isa: Isa,
) {
    let (n, k) = (w.n, w.k);
    assert!(
        out.len() >= m * n && x.len() >= m * k,
        "linear_bf16: buffer too small"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear_bf16: bias length");
    }
    if m == 0 || n == 0 {
        return;
    }
    pack_activations(xp, x, m, k, isa);
    linear_bf16_packed(out, &PackedActivations::new(xp, m, k, isa), w, bias);
}

/// [`linear_bf16`] on activations packed beforehand (with the kernel they were packed for).
pub fn linear_bf16_packed(
    out: &mut [f32],
    a: &PackedActivations,
    w: &PackedBf16,
    bias: Option<&[f32]>,
) {
    linear_bf16_packed_into(&mut [out], a, w, bias, None)
}

/// [`linear_bf16_packed`] with the output columns split over `outs` (widths in column
/// order, summing to the weight's rows: `outs[i]` is (m, n_i)) and an optional epilogue.
pub fn linear_bf16_packed_into(
    outs: &mut [&mut [f32]],
    a: &PackedActivations,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    epilogue: Option<Epilogue>,
) {
    let (n, m, xp, isa) = (w.n, a.m, a.xp, a.isa);
    let rw = row_words(isa, w.k);
    assert_eq!(
        a.k, w.k,
        "linear_bf16_packed: activations have {} channels, weights {}",
        a.k, w.k
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear_bf16_packed: bias length");
    }
    check_level(isa);
    if m == 0 || n == 0 {
        return;
    }
    if w.k == 0 && epilogue.is_none() {
        // No channels: every output is its bias (the same on every level, AMX included,
        // whose tiles need at least one step of pairs).
        let (mut c0, single) = (0, outs.len() == 1);
        for o in outs.iter_mut() {
            let width = if single { n } else { o.len() / m };
            for row in o.chunks_exact_mut(width).take(m) {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = bias.map_or(0.0, |b| b[c0 + j]);
                }
            }
            c0 += width;
        }
        return;
    }
    let dst = Dests::new(outs, m, n);
    let dst = &dst;
    tasks(m, w.panels, MC, SB_ROWS)
        .into_par_iter()
        .for_each(|(rb, pi)| {
            let r0 = rb * MC;
            let rows = MC.min(m - r0);
            let panel = &w.data.words()[pi * w.kp * NR..(pi + 1) * w.kp * NR];
            let c0 = pi * NR;
            let cols = NR.min(n - c0);
            let mut bias_p = [0.0f32; NR];
            if let Some(b) = bias {
                bias_p[..cols].copy_from_slice(&b[c0..c0 + cols]);
            }
            // A finished row of this task's columns: the epilogue, then into the outputs.
            let finish = |row: usize, vals: &mut [f32]| {
                assert!((r0..r0 + rows).contains(&row) && vals.len() == cols);
                if let Some(e) = epilogue {
                    e(row, c0, vals);
                }
                // SAFETY: row r0..r0+rows < m and columns c0..c0+cols < n (asserted): inside the
                // outputs, and this (row block, panel) pair belongs to this task alone.
                unsafe { dst.store(row, c0, vals) };
            };
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Amx {
                let mut buf = [0.0f32; 32 * NR];
                // SAFETY: `available()` granted the AMX state for this process; the tile config
                // is loaded for this thread and released at the end. xp has whole 32-row blocks
                // (padded rows) of `kp` pairs (a multiple of 16) and the panel `kp` x 64 words.
                unsafe { crate::packing::amx::configure() };
                let mut r = 0;
                while r < rows {
                    let a = xp[(r0 + r) * w.kp..].as_ptr();
                    // SAFETY: as above; `a` starts a 32-row block of the tiled layout inside xp.
                    unsafe {
                        crate::packing::amx::block(
                            buf.as_mut_ptr() as *mut u32,
                            a,
                            crate::packing::amx::ATiles::Blocked,
                            panel.as_ptr(),
                            w.kp,
                            crate::packing::amx::Dot::Bf16,
                        )
                    };
                    for i in 0..32.min(rows - r) {
                        let src = &mut buf[i * NR..i * NR + cols];
                        for (v, b) in src.iter_mut().zip(&bias_p) {
                            *v += *b;
                        }
                        finish(r0 + r + i, src);
                    }
                    r += 32;
                }
                // SAFETY: releases this thread's tile state.
                unsafe { crate::packing::amx::release() };
                return;
            }
            if layout(isa) == Layout::Floats && rows <= widen::BLOCKED_ROWS {
                // The widening levels with few rows: all at once, K-blocked (widen::block).
                // Uninitialized (no 24 KB to zero per task): block() starts every row it is
                // given from the bias.
                let mut acc = [std::mem::MaybeUninit::<[f32; NR]>::uninit(); MC];
                let acc = widen::block(
                    &mut acc[..rows],
                    &xp[r0 * rw..(r0 + rows) * rw],
                    panel,
                    w.kp,
                    &bias_p,
                    isa,
                );
                for (i, t) in acc.iter_mut().enumerate() {
                    finish(r0 + i, &mut t[..cols]);
                }
                return;
            }
            let mut r = 0;
            while r < rows {
                let mr = MR.min(rows - r);
                let a = &xp[(r0 + r) * rw..(r0 + r + mr) * rw];
                let mut tile = [[0.0f32; NR]; MR];
                tile_kernel(&mut tile, a, panel, w.kp, mr, &bias_p, isa);
                for (i, t) in tile.iter_mut().take(mr).enumerate() {
                    finish(r0 + r + i, &mut t[..cols]);
                }
                r += mr;
            }
        });
}

/// One MR x NR tile: `tile[i][j] = bias[j] + sum_p dot2(a[i][p], panel[p][j])` for
/// `i < mr`, with the kernel of `isa` (`a`: `mr` rows in that kernel's layout).
fn tile_kernel(
    tile: &mut [[f32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kp: usize,
    mr: usize,
    bias: &[f32; NR],
    isa: Isa,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: these levels have AVX512_BF16 (the products check the level runs here).
        Isa::Avx512Bf16 | Isa::Amx => unsafe { avx512::tile(tile, a, panel, kp, mr, bias) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above: FEAT_BF16.
        Isa::NeonBf16 => unsafe { neon::tile(tile, a, panel, kp, mr, bias) },
        _ => widen::tile(tile, a, panel, kp, mr, bias, isa),
    }
}

/// Scalar reference: the same bf16-rounded operands, summed in f64.
pub fn reference_linear_bf16(
    out: &mut [f32],
    x: &[f32],
    w: &PackedBf16,
    bias: Option<&[f32]>,
    m: usize,
) {
    let (n, k) = (w.n, w.k);
    for i in 0..m {
        for j in 0..n {
            let mut s = bias.map_or(0.0, |b| b[j] as f64);
            for c in 0..k {
                let a = bf16::from_f32(x[i * k + c]).to_f32() as f64;
                s += a * w.get(j, c) as f64;
            }
            out[i * n + j] = s as f32;
        }
    }
}

#[cfg(test)]
mod tests;
