//! BF16 linear layers: weights packed once to bfloat16 pairs, activations rounded to bf16
//! per call, products accumulated in f32 (AVX512_BF16 `vdpbf16ps` where the CPU has it,
//! a portable kernel otherwise). Norms, softmax and everything else stay f32.
//!
//! Layout: output columns are grouped in panels of `NR` = 64; inside a panel, for each
//! pair of input channels `(2p, 2p+1)` the 64 columns' weights are stored as u32 words
//! `lo = w[2p], hi = w[2p+1]` (the operand layout of `vdpbf16ps`). `k` is padded to even
//! and `n` to a multiple of 64 with zeros. Every output element is summed over k in the same
//! order whatever `m`, the row's position and the thread count, so results are batch- and
//! thread-invariant like the f32 path.

use half::bf16;
use rayon::prelude::*;

/// Output columns per panel.
pub const NR: usize = 64;
/// Rows per micro-tile.
pub const MR: usize = 6;
/// Rows per parallel task.
const MC: usize = 96;
/// Rows of a group of tasks that share weight panels (about 1.2 MB of activations at
/// k = 768: inside a core's L2).
const SB_ROWS: usize = 768;

/// Which kernel runs the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Isa {
    /// Intel AMX tiles (`tdpbf16ps`), 32x32 output blocks per step.
    Amx,
    /// AVX-512 with the BF16 extension (`vdpbf16ps`).
    Avx512Bf16,
    /// Portable code (any CPU): the same bf16-rounded operands, f32 multiply-adds.
    Generic,
}

impl Bf16Isa {
    /// The best kernel this CPU (and OS) supports. `EMCODER_BF16_ISA=avx512|generic`
    /// lowers the choice (never raises it above what the CPU has).
    pub fn detect() -> Self {
        let best = Self::best();
        match std::env::var("EMCODER_BF16_ISA").as_deref() {
            Ok("generic") => Bf16Isa::Generic,
            Ok("avx512") if best == Bf16Isa::Amx => Bf16Isa::Avx512Bf16,
            _ => best,
        }
    }

    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if amx::available() {
                return Bf16Isa::Amx;
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16")
            {
                return Bf16Isa::Avx512Bf16;
            }
        }
        Bf16Isa::Generic
    }

    /// Every kernel this CPU can run (for tests that force each variant).
    pub fn available() -> Vec<Bf16Isa> {
        let mut v = vec![Bf16Isa::Generic];
        match Self::best() {
            Bf16Isa::Amx => v.extend([Bf16Isa::Avx512Bf16, Bf16Isa::Amx]),
            Bf16Isa::Avx512Bf16 => v.push(Bf16Isa::Avx512Bf16),
            Bf16Isa::Generic => {}
        }
        v
    }
}

/// Words to skip from `p` to the next 64-byte (cache line) boundary.
fn align_words(p: *const u32) -> usize {
    ((64 - (p as usize) % 64) % 64) / 4
}

/// `len` zeroed words starting on a cache line (tiles and vectors never straddle lines).
#[derive(Debug)]
struct LineAligned {
    buf: Vec<u32>,
    off: usize,
    len: usize,
}

impl LineAligned {
    fn zeroed(len: usize) -> Self {
        let buf = vec![0u32; len + 16];
        let off = align_words(buf.as_ptr());
        LineAligned { buf, off, len }
    }
    fn words(&self) -> &[u32] {
        &self.buf[self.off..self.off + self.len]
    }
    fn words_mut(&mut self) -> &mut [u32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl Clone for LineAligned {
    fn clone(&self) -> Self {
        let mut c = LineAligned::zeroed(self.len);
        c.words_mut().copy_from_slice(self.words());
        c
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

/// Word index of pair `p`, column `c` (< NR) inside a panel. The panel is stored in
/// 16-pair x 16-column blocks of 1 KB (block (p/16, c/16), pairs-major inside), so that
/// every AMX B tile is one contiguous block; the AVX-512 kernel reads the 4 column blocks
/// of a pair row (16 columns each).
#[inline(always)]
const fn widx(p: usize, c: usize) -> usize {
    ((p / 16) * (NR / 16) + c / 16) * 256 + (p % 16) * 16 + c % 16
}

/// Round-to-nearest-even f32 -> bf16 bits (NaN stays NaN, quiet), the same bits as
/// `half::bf16::from_f32` with plain integer arithmetic (tested).
#[inline]
fn to_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() {
        (b >> 16) | 0x40
    } else {
        (b + 0x7fff + ((b >> 16) & 1)) >> 16
    }
}

/// Packs a pair of f32 values into one u32 of two bf16 (`lo` = even channel).
#[inline]
pub fn pair(lo: f32, hi: f32) -> u32 {
    to_bits(lo) | (to_bits(hi) << 16)
}

impl PackedBf16 {
    /// Packs `w`, (n, k) row-major f32 (an `nn.Linear` weight).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        Self::pack_parts(&[(w, n)], k)
    }

    /// Packs several weights of the same input width stacked by output rows, e.g. q, k
    /// and v into one (3d, d) product: `parts` are `(weight (n_i, k) row-major, n_i)`.
    pub fn pack_parts(parts: &[(&[f32], usize)], k: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        let simd = is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        Self::pack_parts_with(parts, k, simd)
    }

    /// [`Self::pack_parts`], with the AVX-512 block conversion or only the scalar loop
    /// (the same bits; `simd` only where the CPU has AVX-512F).
    fn pack_parts_with(parts: &[(&[f32], usize)], k: usize, simd: bool) -> Self {
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
        let mut data = LineAligned::zeroed(panels * kp * NR);
        data.words_mut()
            .par_chunks_mut(kp * NR)
            .enumerate()
            .for_each(|(pi, panel)| {
                let cols = NR.min(n - pi * NR);
                let rows: Vec<&[f32]> = (0..cols).map(|j| row_of(pi * NR + j)).collect();
                // AVX-512: whole blocks of 16 columns x 16 pairs (32 values of each row),
                // converted 16 at a time and transposed in registers (the load time of a
                // bf16 model is mostly this loop).
                let (vec_cols, vec_pairs) = if simd {
                    (cols / 16 * 16, k / 32 * 16)
                } else {
                    (0, 0)
                };
                #[cfg(target_arch = "x86_64")]
                if vec_cols > 0 && vec_pairs > 0 {
                    // SAFETY: `simd` only when the CPU has AVX-512F; the rows hold k >=
                    // 2 * vec_pairs values; the blocks written are inside this panel
                    // (pairs < vec_pairs <= kp, columns < vec_cols <= NR).
                    unsafe { avx512::pack_weight_blocks(panel, &rows[..vec_cols], vec_pairs) };
                }
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
        PackedBf16 {
            n,
            k,
            kp,
            panels,
            data,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len * 4
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

/// Pairs of input channels per row: `ceil(k/2)` padded with zero pairs to a multiple of 16
/// (one AMX tile row). Zero pairs add exactly 0, so no kernel's result changes.
pub fn pairs(k: usize) -> usize {
    k.div_ceil(2).div_ceil(16) * 16
}

/// Rows of the packed activations: `m` padded with zero rows to a multiple of 32.
fn padded_rows(m: usize) -> usize {
    m.div_ceil(32) * 32
}

/// Rounds activations `x` (m, k) to bf16 pairs `(padded m, pairs(k))` (round to nearest
/// even; the AVX-512 path converts 32 values per instruction).
///
/// Layout: row-major rows of `pairs(k)` words for the AVX-512 and portable kernels. For
/// AMX (`isa == Amx`) the layout is tiled so that every A tile is one contiguous 1 KB
/// block: per 32-row block, per step of 16 pairs, the 32 rows' 16 pairs (64 bytes each).
/// A product must use the `isa` its activations were packed for.
pub fn pack_activations(xp: &mut Vec<u32>, x: &[f32], m: usize, k: usize, isa: Bf16Isa) {
    let kp = pairs(k);
    let len = padded_rows(m) * kp;
    if xp.len() < len + 16 {
        xp.resize(len + 16, 0);
    }
    // Start on a cache line (PackedActivations::new finds the same offset).
    let off = align_words(xp.as_ptr());
    let xp = &mut xp[off..off + len];
    let convert = |o: &mut [u32], r: &[f32]| {
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if isa != Bf16Isa::Generic {
            // SAFETY: Avx512Bf16 and Amx are only chosen when the CPU has AVX512_BF16.
            done = unsafe { avx512::convert_row(o, r) };
        }
        let k = r.len();
        for p in done..k.div_ceil(2) {
            o[p] = pair(r[2 * p], if 2 * p + 1 < k { r[2 * p + 1] } else { 0.0 });
        }
        o[k.div_ceil(2)..].fill(0);
    };
    if isa == Bf16Isa::Amx {
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
        return;
    }
    // Only the padding must be zero: rows m.. of the last block, pairs ceil(k/2).. of a row.
    xp[m * kp..len].fill(0);
    xp[..m * kp]
        .par_chunks_mut(kp)
        .zip(x.par_chunks(k))
        .for_each(|(o, r)| convert(o, &r[..k]));
}

/// Activations already packed by [`pack_activations`] (shared by several products of the
/// same input, e.g. q, k and v).
pub struct PackedActivations<'a> {
    xp: &'a [u32],
    m: usize,
    k: usize,
}

impl<'a> PackedActivations<'a> {
    /// Wraps `xp` holding `m` rows of `k` channels.
    pub fn new(xp: &'a [u32], m: usize, k: usize) -> Self {
        let off = align_words(xp.as_ptr());
        assert!(
            xp.len() >= off + padded_rows(m) * pairs(k),
            "PackedActivations: buffer too small"
        );
        PackedActivations {
            xp: &xp[off..],
            m,
            k,
        }
    }
}

/// Raw output pointer shared by the tasks; each writes a disjoint block.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: tasks write disjoint (row range x column panel) blocks of one output buffer.
unsafe impl Send for OutPtr {}
// SAFETY: as above; no two tasks touch the same element.
unsafe impl Sync for OutPtr {}

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
    isa: Bf16Isa,
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
    linear_bf16_packed(out, &PackedActivations::new(xp, m, k), w, bias, isa);
}

/// [`linear_bf16`] on activations packed beforehand.
pub fn linear_bf16_packed(
    out: &mut [f32],
    a: &PackedActivations,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    isa: Bf16Isa,
) {
    linear_bf16_packed_into(&mut [out], a, w, bias, None, isa)
}

/// An epilogue run on each finished piece of an output row before it is stored:
/// `(row, first column, values)`, columns counted across all outputs of the product.
pub type Epilogue<'e> = &'e (dyn Fn(usize, usize, &mut [f32]) + Sync);

/// Where the columns of a product go: consecutive column ranges to separate (m, n_i)
/// row-major buffers (q, k and v of one fused product).
struct Dests {
    parts: Vec<(OutPtr, usize, usize)>, // (buffer, first column, width)
}

impl Dests {
    /// Stores `vals`, the columns `c0..` of `row`, into the buffers that own them.
    ///
    /// # Safety
    /// Every part's buffer holds at least `m` rows of its width, `row < m`, and no other
    /// task writes these elements.
    unsafe fn store(&self, row: usize, c0: usize, vals: &[f32]) {
        let mut c = c0;
        let mut v = vals;
        for &(ptr, start, width) in &self.parts {
            if v.is_empty() {
                break;
            }
            if c < start || c >= start + width {
                continue;
            }
            let take = v.len().min(start + width - c);
            // An inlined vector copy: a memmove call per 64-float piece cost 13% of bf16 time.
            let o = std::slice::from_raw_parts_mut(ptr.ptr().add(row * width + (c - start)), take);
            for (o, x) in o.iter_mut().zip(&v[..take]) {
                *o = *x;
            }
            c += take;
            v = &v[take..];
        }
    }
}

/// [`linear_bf16_packed`] with the output columns split over `outs` (widths in column
/// order, summing to the weight's rows: `outs[i]` is (m, n_i)) and an optional epilogue.
pub fn linear_bf16_packed_into(
    outs: &mut [&mut [f32]],
    a: &PackedActivations,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    epilogue: Option<Epilogue>,
    isa: Bf16Isa,
) {
    let (n, m, xp) = (w.n, a.m, a.xp);
    assert_eq!(
        a.k, w.k,
        "linear_bf16_packed: activations have {} channels, weights {}",
        a.k, w.k
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear_bf16_packed: bias length");
    }
    if m == 0 || n == 0 {
        return;
    }
    let dst = if outs.len() == 1 {
        assert!(
            outs[0].len() >= m * n,
            "linear_bf16_packed: output too small"
        );
        Dests {
            parts: vec![(OutPtr(outs[0].as_mut_ptr()), 0, n)],
        }
    } else {
        let mut parts = Vec::with_capacity(outs.len());
        let mut start = 0;
        for o in outs.iter_mut() {
            let width = o.len() / m;
            assert!(width > 0, "linear_bf16_packed: empty output part");
            parts.push((OutPtr(o.as_mut_ptr()), start, width));
            start += width;
        }
        assert_eq!(
            start, n,
            "linear_bf16_packed: output widths do not sum to {n}"
        );
        Dests { parts }
    };
    let dst = &dst;
    // Task order: row blocks grouped so a group's activations stay in L2 (SB_ROWS rows),
    // and within a group panel by panel, so each weight panel is read once per group
    // (row block-major order re-read every panel per block: 3.4 MB of q|k|v panels do not
    // stay in L2).
    let rbs = m.div_ceil(MC);
    let per_group = (SB_ROWS / MC).max(1);
    let tasks: Vec<(usize, usize)> = (0..rbs.div_ceil(per_group))
        .flat_map(|g| {
            let rb = g * per_group..((g + 1) * per_group).min(rbs);
            (0..w.panels).flat_map(move |pi| rb.clone().map(move |rb| (rb, pi)))
        })
        .collect();
    tasks.into_par_iter().for_each(|(rb, pi)| {
        let r0 = rb * MC;
        let rows = MC.min(m - r0);
        let panel = &w.data.words()[pi * w.kp * NR..(pi + 1) * w.kp * NR];
        let c0 = pi * NR;
        let cols = NR.min(n - c0);
        let mut bias_p = [0.0f32; NR];
        if let Some(b) = bias {
            bias_p[..cols].copy_from_slice(&b[c0..c0 + cols]);
        }
        #[cfg(target_arch = "x86_64")]
        if isa == Bf16Isa::Amx {
            let mut buf = [0.0f32; 32 * NR];
            // SAFETY: `available()` granted the AMX state for this process; the tile config
            // is loaded for this thread and released at the end. xp has whole 32-row blocks
            // (padded rows) of `kp` pairs (a multiple of 16) and the panel `kp` x 64 words.
            unsafe { amx::configure() };
            let mut r = 0;
            while r < rows {
                let a = xp[(r0 + r) * w.kp..].as_ptr();
                // SAFETY: as above; `a` starts a 32-row block of the tiled layout inside xp.
                unsafe { amx::block(&mut buf, a, panel.as_ptr(), w.kp) };
                for i in 0..32.min(rows - r) {
                    let src = &mut buf[i * NR..i * NR + cols];
                    for (v, b) in src.iter_mut().zip(&bias_p) {
                        *v += *b;
                    }
                    if let Some(e) = epilogue {
                        e(r0 + r + i, c0, src);
                    }
                    // SAFETY: row r0+r+i < m, columns c0..c0+cols < n: inside the outputs
                    // and owned by this task alone.
                    unsafe { dst.store(r0 + r + i, c0, src) };
                }
                r += 32;
            }
            // SAFETY: releases this thread's tile state.
            unsafe { amx::release() };
            return;
        }
        let mut r = 0;
        while r < rows {
            let mr = MR.min(rows - r);
            let a = &xp[(r0 + r) * w.kp..(r0 + r + mr) * w.kp];
            let mut tile = [[0.0f32; NR]; MR];
            tile_kernel(&mut tile, a, panel, w.kp, mr, &bias_p, isa);
            for (i, t) in tile.iter_mut().take(mr).enumerate() {
                if let Some(e) = epilogue {
                    e(r0 + r + i, c0, &mut t[..cols]);
                }
                // SAFETY: row r0+r+i < m and columns c0..c0+cols < n: inside the outputs,
                // and this (row block, panel) pair belongs to this task alone.
                unsafe { dst.store(r0 + r + i, c0, &t[..cols]) };
            }
            r += mr;
        }
    });
}

/// One MR x NR tile: `tile[i][j] = bias[j] + sum_p dot2(a[i][p], panel[p][j])`.
fn tile_kernel(
    tile: &mut [[f32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kp: usize,
    mr: usize,
    bias: &[f32; NR],
    isa: Bf16Isa,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx512Bf16 is only produced by `detect()` when the CPU has the features
        // (tests force it only after the same check).
        Bf16Isa::Avx512Bf16 | Bf16Isa::Amx => unsafe { avx512::tile(tile, a, panel, kp, mr, bias) },
        _ => generic_tile(tile, a, panel, kp, mr, bias),
    }
}

#[inline]
fn lo(w: u32) -> f32 {
    f32::from_bits(w << 16)
}
#[inline]
fn hi(w: u32) -> f32 {
    f32::from_bits(w & 0xffff_0000)
}

/// Portable kernel: per element, per pair, `acc += a_lo*w_lo + a_hi*w_hi` in f32.
fn generic_tile(
    tile: &mut [[f32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kp: usize,
    mr: usize,
    bias: &[f32; NR],
) {
    for (i, row) in tile.iter_mut().take(mr).enumerate() {
        let mut acc = *bias;
        let ar = &a[i * kp..(i + 1) * kp];
        for (p, &av) in ar.iter().enumerate() {
            let (al, ah) = (lo(av), hi(av));
            for (cb, accb) in acc.chunks_exact_mut(16).enumerate() {
                let wp = &panel[widx(p, 16 * cb)..widx(p, 16 * cb) + 16];
                for (c, &wv) in accb.iter_mut().zip(wp) {
                    *c += al * lo(wv) + ah * hi(wv);
                }
            }
        }
        *row = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{widx, MR, NR};
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
                crate::gemm_f32::transpose16(&mut v);
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

#[cfg(target_arch = "x86_64")]
mod amx {
    use super::NR;
    use std::arch::asm;
    use std::sync::OnceLock;

    /// CPUID says AMX-TILE and AMX-BF16, and Linux granted this process the tile state
    /// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), once.
    pub fn available() -> bool {
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            // CPUID leaf 7 (structured extended features); reading it has no side effect.
            let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
            let cpu = edx & (1 << 22) != 0 && edx & (1 << 24) != 0;
            if !cpu || !cfg!(target_os = "linux") {
                return false;
            }
            let ret: i64;
            // SAFETY: the arch_prctl syscall (158) with ARCH_REQ_XCOMP_PERM (0x1023) and
            // XFEATURE_XTILEDATA (18) only changes this process's permitted xsave state.
            unsafe {
                asm!("syscall", inlateout("rax") 158i64 => ret, in("rdi") 0x1023i64, in("rsi") 18i64,
                     lateout("rcx") _, lateout("r11") _, options(nostack));
            }
            ret == 0
        })
    }

    /// Loads the tile configuration: 8 tiles of 16 rows x 64 bytes.
    pub unsafe fn configure() {
        let mut cfg = [0u8; 64];
        cfg[0] = 1; // palette 1
        for t in 0..8 {
            cfg[16 + 2 * t] = 64; // bytes per row
            cfg[48 + t] = 16; // rows
        }
        asm!("ldtilecfg [{0}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
    }

    /// Releases the tile state of this thread.
    pub unsafe fn release() {
        asm!("tilerelease", options(nostack, nomem));
    }

    /// `out (32 x 64) = A (32 rows of kp pairs, tiled: per step of 16 pairs, rows 0-15 then
    /// 16-31, each a contiguous 1 KB tile) x panel (kp x 64)`.
    /// tmm0..3: C (rows 0-15 | 16-31) x (cols 0-15 | 16-31) of one 32-column half;
    /// tmm4/5: A rows 0-15 / 16-31; tmm6/7: B columns 0-15 / 16-31.
    pub unsafe fn block(out: &mut [f32; 32 * NR], a: *const u32, panel: *const u32, kp: usize) {
        let a_stride = 64usize;
        let b_stride = 64usize; // 16 columns x 4 bytes: B tiles are contiguous
        let c_stride = NR * 4;
        for half in 0..2 {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            let mut q = 0;
            while q < kp {
                let a0 = a.add(q * 32);
                let a1 = a0.add(256);
                // B tiles: contiguous 1 KB blocks (16 pairs x 16 columns).
                let b0 = panel.add(q * NR + half * 2 * 256);
                let b1 = b0.add(256);
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                    sa = in(reg) a_stride, sb = in(reg) b_stride,
                    options(nostack, readonly),
                );
                q += 16;
            }
            let o = out.as_mut_ptr().add(half * 32);
            asm!(
                "tilestored [{o0} + {s}*1], tmm0",
                "tilestored [{o1} + {s}*1], tmm1",
                "tilestored [{o2} + {s}*1], tmm2",
                "tilestored [{o3} + {s}*1], tmm3",
                o0 = in(reg) o, o1 = in(reg) o.add(16), o2 = in(reg) o.add(16 * NR), o3 = in(reg) o.add(16 * NR + 16),
                s = in(reg) c_stride,
                options(nostack),
            );
        }
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
mod tests {
    use super::*;

    fn isas() -> Vec<Bf16Isa> {
        let v = Bf16Isa::available();
        eprintln!("bf16 kernels tested here: {v:?}");
        v
    }

    #[test]
    fn every_isa_matches_the_scalar_reference_on_odd_sizes() {
        for (m, k, n) in [
            (1usize, 1usize, 1usize),
            (5, 3, 7),
            (6, 64, 64),
            (7, 65, 65),
            (13, 33, 130),
            (97, 96, 28),
            (33, 768, 100),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.125)
                .collect();
            let wf: Vec<f32> = (0..n * k)
                .map(|i| ((i * 29 % 11) as f32 - 5.0) * 0.0625)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
            let w = PackedBf16::pack(&wf, n, k);
            let mut refo = vec![0.0; m * n];
            reference_linear_bf16(&mut refo, &x, &w, Some(&b), m);
            for isa in isas() {
                let mut out = vec![f32::NAN; m * n];
                let mut xp = Vec::new();
                linear_bf16(&mut out, &x, &w, Some(&b), m, &mut xp, isa);
                for (a, r) in out.iter().zip(&refo) {
                    // f32 accumulation of exact bf16 products: relative error ~ k * 2^-24
                    assert!(
                        (a - r).abs() <= 1e-5 * (k as f32) * r.abs().max(1.0),
                        "{isa:?} {m}x{k}x{n}: {a} vs {r}"
                    );
                }
            }
        }
    }

    /// The AVX-512 block packing gives the scalar loop's words, for NaN, infinities,
    /// subnormals, ties and shapes with partial blocks (columns and pairs), and fused parts.
    #[test]
    fn simd_packing_equals_scalar_packing() {
        #[cfg(target_arch = "x86_64")]
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F: only the scalar packing exists here");
            return;
        }
        let mut x = 0x9e37_79b9u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 16 {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 => f32::from_bits(x % 0x0080_0000), // subnormal
                3 => f32::from_bits((x & 0xffff_0000) | 0x8000), // a tie
                _ => f32::from_bits(x) % 1e6,
            }
        };
        for (k, widths) in [
            (768usize, vec![64usize]),
            (64, vec![16, 48]),
            (96, vec![40, 70, 64]),
            (65, vec![33]),
            (31, vec![64]),
            (800, vec![130]),
        ] {
            let ws: Vec<Vec<f32>> = widths
                .iter()
                .map(|n| (0..n * k).map(|_| next()).collect())
                .collect();
            let parts: Vec<(&[f32], usize)> = ws
                .iter()
                .zip(&widths)
                .map(|(w, &n)| (w.as_slice(), n))
                .collect();
            let a = PackedBf16::pack_parts_with(&parts, k, true);
            let b = PackedBf16::pack_parts_with(&parts, k, false);
            assert!(a.data.words() == b.data.words(), "k {k} widths {widths:?}");
        }
    }

    #[test]
    fn bf16_rounding_matches_half() {
        let mut vals: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::from_bits(0x3f80_8000), // a tie: rounds to even
            f32::from_bits(0x3f81_8000), // a tie: rounds up to even
            f32::from_bits(0x7f7f_ffff),
        ];
        let mut x = 0x1234_5678u32;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            vals.push(f32::from_bits(x));
        }
        for v in vals {
            assert_eq!(
                to_bits(v),
                bf16::from_f32(v).to_bits() as u32,
                "{v:e} {:#x}",
                v.to_bits()
            );
        }
    }

    /// q, k and v packed as one product, split back into three buffers, with an epilogue,
    /// give the bits of three separate products followed by the same epilogue.
    #[test]
    fn fused_parts_split_outputs_and_epilogue() {
        // widths 40 + 70 + 64: part boundaries fall inside 64-column panels.
        let (m, k) = (37usize, 50usize);
        let widths = [40usize, 70, 64];
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.1)
            .collect();
        let ws: Vec<Vec<f32>> = widths
            .iter()
            .enumerate()
            .map(|(p, &n)| {
                (0..n * k)
                    .map(|i| ((i * 7 + p) % 19) as f32 * 0.05 - 0.4)
                    .collect()
            })
            .collect();
        let bias: Vec<f32> = (0..widths.iter().sum::<usize>())
            .map(|i| i as f32 * 0.01)
            .collect();
        let epi = |row: usize, c0: usize, v: &mut [f32]| {
            for (j, x) in v.iter_mut().enumerate() {
                *x = *x * 2.0 + (row * 1000 + c0 + j) as f32;
            }
        };
        for isa in Bf16Isa::available() {
            let mut xp = Vec::new();
            pack_activations(&mut xp, &x, m, k, isa);
            let a = PackedActivations::new(&xp, m, k);
            let fused = PackedBf16::pack_parts(
                &[
                    (&ws[0], widths[0]),
                    (&ws[1], widths[1]),
                    (&ws[2], widths[2]),
                ],
                k,
            );
            let mut outs: Vec<Vec<f32>> = widths.iter().map(|n| vec![f32::NAN; m * n]).collect();
            {
                let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                linear_bf16_packed_into(&mut refs, &a, &fused, Some(&bias), Some(&epi), isa);
            }
            let mut c0 = 0;
            for (p, &n) in widths.iter().enumerate() {
                let mut want = vec![0.0; m * n];
                let w = PackedBf16::pack(&ws[p], n, k);
                linear_bf16_packed(&mut want, &a, &w, Some(&bias[c0..c0 + n]), isa);
                for (r, row) in want.chunks_exact_mut(n).enumerate() {
                    epi(r, c0, row);
                }
                assert_eq!(outs[p], want, "{isa:?} part {p}");
                c0 += n;
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_m_or_threads() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (k, n, mmax) = (96usize, 130usize, 200usize);
        let x: Vec<f32> = (0..mmax * k)
            .map(|i| (i * 7919 % 1013) as f32 / 1013.0 - 0.5)
            .collect();
        let wf: Vec<f32> = (0..n * k)
            .map(|i| (i * 104729 % 997) as f32 / 997.0 - 0.5)
            .collect();
        let w = PackedBf16::pack(&wf, n, k);
        for isa in isas() {
            let mut xp = Vec::new();
            let mut base = vec![0.0; mmax * n];
            linear_bf16(&mut base, &x, &w, None, mmax, &mut xp, isa);
            for m in [1usize, 5, 6, 7, 95, 96, 97, 150] {
                let mut o = vec![0.0; m * n];
                pool.install(|| linear_bf16(&mut o, &x, &w, None, m, &mut xp, isa));
                assert!(o[..] == base[..m * n], "{isa:?} m={m}");
            }
        }
    }
}
