//! F32 linear layers with hand-written kernels, reading the weights in place.
//!
//! `out (m, n) = x (m, k) · w^T (+ bias)` where `w` is (n, k) row-major as PyTorch's
//! `nn.Linear` stores it (typically a memory-mapped file: it is never copied or repacked).
//!
//! Roles are swapped with respect to a textbook GEMM: the weights are the broadcast operand
//! and the activations the vector operand. Per call the activations are transposed into
//! `scratch` in panels of `NR` rows (32 for AVX-512, 16 for AVX2): for each input channel,
//! the panel's `NR` values are contiguous; the last panel is narrower (its rows rounded up to
//! the vector width, zero-padded). A micro-tile holds `MR` weight rows (output columns) x
//! one panel in registers for all of `k`: per channel it loads the panel's vectors,
//! broadcasts each of the `MR` weights from memory (weight rows are `k` apart) and issues one
//! fused multiply-add per accumulator. The finished tile is transposed (16 x 16 blocks in
//! registers), the bias added, and stored with row/column masks. AVX-512 tiles are 14 weight
//! rows, or 10 when `k` is a multiple of 1024 (then every weight row of a tile falls in the
//! same L1 sets, and 14 of them exceed the 12 ways); the last, short tile of a row is shifted
//! left to end at column `n` and writes only its own columns.
//!
//! Parallel tasks are (one panel) x (a run of at most 16 column tiles): the panel stays in
//! L2 while the weight rows stream past once. The output rows of a tile are prefetched for
//! writing when the tile starts.
//!
//! Weight streaming: the channel loop is unrolled by 16, so each iteration consumes one
//! cache line of each of the tile's weight rows, and it prefetches (`prefetcht0`) the line
//! `PREFETCH_BYTES` = 256 bytes (4 lines) ahead in every row. With few activation rows
//! (a plain pass: 16 rows, one panel) the product is bound by reading the weights, and the
//! hardware prefetchers follow 10-14 interleaved short rows (3 KB at k = 768) poorly:
//! measured on 16 x 768 x 36000 (110 MB of weights) 16.5 -> 22 GB/s, and a plain
//! full-size pass 11.7 -> 10.1 ms. Distances of 256-512 bytes were equally good, 1024 and
//! more no better than none.
//!
//! Determinism: every output element is computed as
//! `acc = 0; for c in 0..k { acc = fma(x[r][c], w[j][c], acc) }; out = acc + bias[j]`,
//! one fused multiply-add per channel in channel order, whatever the kernel, tile, panel,
//! task split or thread count. Results are therefore bit-identical whatever `m`, the rows
//! that share the call and the number of threads, and also identical across the
//! [`F32Isa`] variants (the portable one uses `f32::mul_add`, which is fused too).

use rayon::prelude::*;

/// How far ahead in each weight row the AVX-512 kernels prefetch (see the module docs).
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 256;

/// Which kernel runs the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F32Isa {
    /// AVX-512F: 14 (or 10) weight rows x 32 activation rows (28 zmm accumulators).
    Avx512,
    /// AVX2 + FMA: 6 weight rows x 16 activation rows (12 ymm accumulators).
    Avx2,
    /// Portable code (any CPU): scalar `f32::mul_add`, the same summation order.
    Generic,
}

impl F32Isa {
    /// The best kernel this CPU supports. `EMCODER_F32_ISA=avx2|generic` lowers the choice
    /// (never raises it above what the CPU has).
    pub fn detect() -> Self {
        let best = Self::best();
        match std::env::var("EMCODER_F32_ISA").as_deref() {
            Ok("generic") => F32Isa::Generic,
            Ok("avx2") if best == F32Isa::Avx512 => F32Isa::Avx2,
            _ => best,
        }
    }

    fn best() -> Self {
        if Self::Avx512.runs_here() {
            F32Isa::Avx512
        } else if Self::Avx2.runs_here() {
            F32Isa::Avx2
        } else {
            F32Isa::Generic
        }
    }

    /// Every kernel this CPU can run (for tests that force each variant).
    pub fn available() -> Vec<F32Isa> {
        [F32Isa::Generic, F32Isa::Avx2, F32Isa::Avx512]
            .into_iter()
            .filter(|i| i.runs_here())
            .collect()
    }

    /// True when this CPU can run the variant.
    fn runs_here(self) -> bool {
        match self {
            F32Isa::Generic => true,
            #[cfg(target_arch = "x86_64")]
            F32Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            F32Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Register tile and packing geometry of one SIMD variant.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Geometry {
    /// Weight rows (output columns) per micro-tile.
    mr: usize,
    /// Activation rows per full panel.
    nr: usize,
    /// f32 lanes per vector (panel widths are multiples of it).
    lanes: usize,
}

/// AVX-512 tile: 14 x 32.
#[cfg(target_arch = "x86_64")]
const AVX512: Geometry = Geometry {
    mr: 14,
    nr: 32,
    lanes: 16,
};
/// AVX-512 tile when every weight row maps to the same L1 sets (`4 k` a multiple of
/// 4096 bytes): 14 such rows would exceed the 12 ways and thrash, 10 fit.
#[cfg(target_arch = "x86_64")]
const AVX512_ALIASED: Geometry = Geometry {
    mr: 10,
    nr: 32,
    lanes: 16,
};
/// AVX2 tile: 6 x 16.
#[cfg(target_arch = "x86_64")]
const AVX2: Geometry = Geometry {
    mr: 6,
    nr: 16,
    lanes: 8,
};

// The epilogue's pieces start at multiples of the tile width: it must be even (RoPE pairs).
#[cfg(target_arch = "x86_64")]
const _: () = assert!(
    AVX512.mr.is_multiple_of(2) && AVX512_ALIASED.mr.is_multiple_of(2) && AVX2.mr.is_multiple_of(2)
);

/// Most column tiles per task.
#[cfg(target_arch = "x86_64")]
const MAX_TILES_PER_TASK: usize = 16;
/// Tasks per thread aimed at when there are few panels (load balance on a shared machine).
#[cfg(target_arch = "x86_64")]
const TASKS_PER_THREAD: usize = 4;

/// Raw output pointer shared by the tasks; each writes a disjoint block.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
#[cfg(target_arch = "x86_64")]
impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: tasks write disjoint (panel rows x column tiles) blocks of one output buffer.
#[cfg(target_arch = "x86_64")]
unsafe impl Send for OutPtr {}
// SAFETY: as above; no two tasks touch the same element.
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for OutPtr {}

/// `out (m, n) = x (m, k) · w^T (+ bias)`; `w` is (n, k) row-major exactly as PyTorch's
/// `nn.Linear` stores it and is read in place (never copied or repacked).
///
/// `scratch` is caller-owned and reused across calls: it grows as needed (to about
/// `m * k` floats, rounded up to whole panels) and never shrinks. Runs on the current rayon
/// pool. Each output element is one fused multiply-add chain over `k` in channel order plus
/// the bias, so results do not depend on `m`, on the other rows or on the thread count.
///
/// Panics when a buffer is too small, the bias length is not `n`, or `isa` is a variant
/// this CPU cannot run.
#[allow(clippy::too_many_arguments)]
pub fn linear_f32(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
    scratch: &mut Vec<f32>,
    isa: F32Isa,
) {
    assert!(
        out.len() >= m * n && x.len() >= m * k && w.len() >= n * k,
        "linear_f32: buffer too small (out {} for {m}x{n}, x {} for {m}x{k}, w {} for {n}x{k})",
        out.len(),
        x.len(),
        w.len()
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear_f32: bias length");
    }
    assert!(
        isa.runs_here(),
        "linear_f32: this CPU cannot run the {isa:?} kernel"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in out[..m * n].chunks_exact_mut(n) {
            match bias {
                Some(b) => row.copy_from_slice(b),
                None => row.fill(0.0),
            }
        }
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        F32Isa::Avx512 | F32Isa::Avx2 => {
            let part = Part {
                out: OutPtr(out.as_mut_ptr()),
                w,
                bias,
                n,
                index: 0,
            };
            simd_linear(&[part], x, m, k, scratch, geometry(isa, k), isa, None)
        }
        _ => {
            let _ = scratch;
            generic_linear(out, x, w, bias, m, k, n)
        }
    }
}

/// One weight of [`linear_f32_parts`]: `(out (m, n), w (n, k), bias (n), n)`.
pub type F32Part<'a> = (&'a mut [f32], &'a [f32], Option<&'a [f32]>, usize);

/// Runs on each finished piece of an output row of [`linear_f32_parts`]:
/// `(part, row, first column, values)`; the values are columns `first..first + len` of that
/// row of that part. The pieces of a row cover it once, each starts at an even column, and
/// the call comes right after the piece was written (still in cache), on the worker that
/// wrote it: RoPE on q and k runs here.
pub type F32Epilogue<'a> = &'a (dyn Fn(usize, usize, usize, &mut [f32]) + Sync);

/// One product of several weights sharing the input `x`: part `i` computes
/// `outs[i] (m, n_i) = x · w_i^T (+ b_i)` exactly as [`linear_f32`] would (the same bits),
/// but the activations are packed once and all parts run in one parallel pass (q, k and v
/// of a layer; gate and up). Each part is `(out, w (n_i, k), bias, n_i)`. With an
/// `epilogue`, it then transforms every output element exactly once (see [`F32Epilogue`]).
pub fn linear_f32_parts(
    parts: &mut [F32Part],
    x: &[f32],
    m: usize,
    k: usize,
    scratch: &mut Vec<f32>,
    isa: F32Isa,
    epilogue: Option<F32Epilogue>,
) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, F32Isa::Avx512 | F32Isa::Avx2) && m > 0 && k > 0 {
        assert!(
            isa.runs_here(),
            "linear_f32: this CPU cannot run the {isa:?} kernel"
        );
        assert!(x.len() >= m * k, "linear_f32_parts: input too small");
        for (o, w, b, n) in parts.iter() {
            assert!(
                o.len() >= m * n && w.len() >= n * k,
                "linear_f32_parts: buffer too small"
            );
            if let Some(b) = b {
                assert_eq!(b.len(), *n, "linear_f32_parts: bias length");
            }
        }
        let g = geometry(isa, k);
        let ps: Vec<Part> = parts
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| p.3 > 0)
            .map(|(index, (o, w, b, n))| Part {
                out: OutPtr(o.as_mut_ptr()),
                w,
                bias: *b,
                n: *n,
                index,
            })
            .collect();
        return simd_linear(&ps, x, m, k, scratch, g, isa, epilogue);
    }
    for (pi, (o, w, b, n)) in parts.iter_mut().enumerate() {
        linear_f32(o, x, w, *b, m, k, *n, scratch, isa);
        if let (Some(ep), true) = (epilogue, *n > 0) {
            for (r, row) in o[..m * *n].chunks_exact_mut(*n).enumerate() {
                ep(pi, r, 0, row);
            }
        }
    }
}

/// The tile geometry of a SIMD kernel for `k` input channels.
#[cfg(target_arch = "x86_64")]
fn geometry(isa: F32Isa, k: usize) -> Geometry {
    match isa {
        F32Isa::Avx512 if k.is_multiple_of(1024) => AVX512_ALIASED,
        F32Isa::Avx512 => AVX512,
        _ => AVX2,
    }
}

/// One weight of a product (see [`linear_f32_parts`]).
#[cfg(target_arch = "x86_64")]
struct Part<'a> {
    out: OutPtr,
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    n: usize,
    /// Index among the caller's parts (for the epilogue).
    index: usize,
}

/// Width of panel `p` (of `m` rows): `nr`, or for the last one its rows rounded up to the
/// vector width.
#[cfg(target_arch = "x86_64")]
fn panel_width(g: Geometry, m: usize, p: usize) -> usize {
    (m - p * g.nr).min(g.nr).div_ceil(g.lanes) * g.lanes
}

/// Floats of packed activations for `m` rows of `k` channels.
#[cfg(target_arch = "x86_64")]
fn packed_len(g: Geometry, m: usize, k: usize) -> usize {
    let panels = m.div_ceil(g.nr);
    ((panels - 1) * g.nr + panel_width(g, m, panels - 1)) * k
}

/// Portable transpose of rows `r0..r0 + rows` of `x` (row stride `k`) into one panel of
/// width `wd`: `dst[c * wd + r] = x[r0 + r][c]`, zero for `r >= rows`.
#[cfg(target_arch = "x86_64")]
fn pack_panel_scalar(dst: &mut [f32], x: &[f32], r0: usize, rows: usize, wd: usize, k: usize) {
    const KB: usize = 16;
    for c0 in (0..k).step_by(KB) {
        let kr = KB.min(k - c0);
        for r in 0..wd {
            if r < rows {
                let src = &x[(r0 + r) * k + c0..(r0 + r) * k + c0 + kr];
                for (t, &v) in src.iter().enumerate() {
                    dst[(c0 + t) * wd + r] = v;
                }
            } else {
                for t in 0..kr {
                    dst[(c0 + t) * wd + r] = 0.0;
                }
            }
        }
    }
}

/// Transposes `x` (m, k) into panels in `xp` (sized by [`packed_len`]), in parallel.
#[cfg(target_arch = "x86_64")]
fn pack_activations(xp: &mut [f32], x: &[f32], m: usize, k: usize, g: Geometry, isa: F32Isa) {
    xp.par_chunks_mut(g.nr * k)
        .enumerate()
        .for_each(|(p, dst)| {
            let r0 = p * g.nr;
            let rows = g.nr.min(m - r0);
            let wd = panel_width(g, m, p);
            debug_assert_eq!(dst.len(), wd * k);
            if isa == F32Isa::Avx512 {
                // SAFETY: Avx512 passed `runs_here()`; `dst` holds the whole panel (`wd * k`
                // floats) and rows r0..r0+rows of `x` exist (rows <= m - r0).
                unsafe { avx512::pack_panel(dst, x, r0, rows, wd, k) };
            } else {
                pack_panel_scalar(dst, x, r0, rows, wd, k);
            }
        });
}

/// The SIMD variants: pack the activations once, then tasks of (part, one panel, column
/// tiles) in one parallel pass.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn simd_linear(
    parts: &[Part],
    x: &[f32],
    m: usize,
    k: usize,
    scratch: &mut Vec<f32>,
    g: Geometry,
    isa: F32Isa,
    epilogue: Option<F32Epilogue>,
) {
    let len = packed_len(g, m, k);
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    let xp = &mut scratch[..len];
    pack_activations(xp, x, m, k, g, isa);
    let xp = &*xp;

    let panels = m.div_ceil(g.nr);
    let threads = rayon::current_num_threads().max(1);
    // Per part: column blocks per panel of at most MAX_TILES_PER_TASK tiles each, enough
    // tasks for every thread; with a single panel (m <= nr) a multiple of the thread count.
    let layout: Vec<(usize, usize)> = parts
        .iter()
        .map(|pt| {
            let tiles = pt.n.div_ceil(g.mr);
            let mut per_panel = tiles
                .div_ceil(MAX_TILES_PER_TASK)
                .max((TASKS_PER_THREAD * threads).div_ceil(panels));
            if panels == 1 {
                per_panel = per_panel.next_multiple_of(threads);
            }
            let tiles_per_task = tiles.div_ceil(per_panel.min(tiles));
            (tiles_per_task, tiles.div_ceil(tiles_per_task))
        })
        .collect();
    let tasks: Vec<(usize, usize, usize)> = parts
        .iter()
        .enumerate()
        .flat_map(|(pi, _)| {
            let col_blocks = layout[pi].1;
            (0..panels * col_blocks).map(move |t| (pi, t / col_blocks, t % col_blocks))
        })
        .collect();

    tasks.into_par_iter().for_each(|(pi, p, cb)| {
        let Part {
            out,
            w,
            bias,
            n,
            index,
        } = &parts[pi];
        let (n, dst) = (*n, *out);
        let tiles = n.div_ceil(g.mr);
        let tiles_per_task = layout[pi].0;
        let r0 = p * g.nr;
        let wd = panel_width(g, m, p);
        let rows = g.nr.min(m - r0);
        let panel = &xp[r0 * k..(r0 + wd) * k];
        for t in cb * tiles_per_task..((cb + 1) * tiles_per_task).min(tiles) {
            // A short last tile is shifted left to end at column n (recomputing some
            // columns of its neighbour: each element's chain is the same) and writes
            // only its own columns. With n < mr the tile is narrower instead.
            let own = t * g.mr;
            let (c0, width) = if n < g.mr {
                (0, n)
            } else {
                (own.min(n - g.mr), g.mr)
            };
            let tile = Tile {
                xp: panel.as_ptr(),
                w: w[c0 * k..(c0 + width) * k].as_ptr(),
                k,
                // SAFETY: row r0 < m and column c0 < n: inside this part's output.
                out: unsafe { dst.ptr().add(r0 * n + c0) },
                ldo: n,
                rows,
                cols: own - c0..width,
                bias: bias.map(|b| b[c0..c0 + width].as_ptr()),
            };
            // SAFETY: `isa` passed `runs_here()`. The tile reads `width` weight rows of
            // `k` at `w[c0 * k..]` (c0 + width <= n), the panel's `wd * k` floats and
            // the bias at c0.., and writes rows r0..r0+rows x columns own..c0+width of
            // this part's output: this task's panel and column tiles, which no other task
            // writes.
            unsafe {
                match isa {
                    F32Isa::Avx512 => avx512::tile(&tile, width, wd),
                    _ => avx2::tile(&tile, width, wd),
                }
            }
        }
        if let Some(ep) = epilogue {
            // This task's columns: whole tiles from a multiple of mr (even), up to n.
            let c_lo = cb * tiles_per_task * g.mr;
            let c_hi = ((cb + 1) * tiles_per_task * g.mr).min(n);
            for r in r0..r0 + rows {
                // SAFETY: row r of this panel, columns c_lo..c_hi < n: only this task writes
                // them, and its tiles above have finished writing them.
                let vals = unsafe {
                    std::slice::from_raw_parts_mut(dst.ptr().add(r * n + c_lo), c_hi - c_lo)
                };
                ep(*index, r, c_lo, vals);
            }
        }
    });
}

/// One micro-tile's operands: `out[r][c] = sum_i xp[i][r] * w[c][i] + bias[c]` for
/// `r < rows`, `c` in `cols` (tile-relative column indices).
#[cfg(target_arch = "x86_64")]
struct Tile {
    /// Packed panel: for each channel, the panel's rows contiguous.
    xp: *const f32,
    /// First weight row of the tile (row stride `k`).
    w: *const f32,
    /// Channels.
    k: usize,
    /// Output element (first row, first column) of the tile.
    out: *mut f32,
    /// Output row stride.
    ldo: usize,
    /// Rows to write.
    rows: usize,
    /// Columns to write.
    cols: std::ops::Range<usize>,
    /// Bias at the tile's first column.
    bias: Option<*const f32>,
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// The tile of column `j` alone.
    ///
    /// # Safety
    /// `j < width` of this tile (the pointers stay inside the buffers).
    unsafe fn column(&self, j: usize) -> Tile {
        Tile {
            w: self.w.add(j * self.k),
            out: self.out.add(j),
            cols: 0..1,
            bias: self.bias.map(|b| b.add(j)),
            ..*self
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::transpose16;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{asm_10x16, asm_10x32, asm_14x16, asm_14x32, Tile};
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

/// Assembly text of the AVX-512 inner loops: 14 (or 10) weight rows (broadcast from
/// memory, row stride `s` bytes) x 32 or 16 packed rows. Registers: zmm0-27 accumulators (weight row
/// j, panel vector v in zmm(2j + v), resp. zmm(j) for 16 rows), zmm28-29 the panel's
/// vectors, zmm30-31 broadcasts. Row pointers: a = row 0, b = row 5, d = row 10 and
/// t = 3 s, so the rows are a, a+s, a+2s, a+t, a+4s, b, ..., d+t (no per-row registers).
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
mod asm_text {
    /// One channel of the 14 x 32 tile: panel vectors at byte offsets $x0/$x1 of `xp`,
    /// weights at byte offset $d of the row pointers.
    macro_rules! step32 {
        ($x0:literal, $x1:literal, $d:literal) => {
            concat!(
                "vmovups zmm28, [{xp} + ", $x0, "]\n",
                "vmovups zmm29, [{xp} + ", $x1, "]\n",
                bc2!("zmm30", "{a}", $d, "zmm0", "zmm1"),
                bc2!("zmm31", "{a} + {s}", $d, "zmm2", "zmm3"),
                bc2!("zmm30", "{a} + {s}*2", $d, "zmm4", "zmm5"),
                bc2!("zmm31", "{a} + {t}", $d, "zmm6", "zmm7"),
                bc2!("zmm30", "{a} + {s}*4", $d, "zmm8", "zmm9"),
                bc2!("zmm31", "{b}", $d, "zmm10", "zmm11"),
                bc2!("zmm30", "{b} + {s}", $d, "zmm12", "zmm13"),
                bc2!("zmm31", "{b} + {s}*2", $d, "zmm14", "zmm15"),
                bc2!("zmm30", "{b} + {t}", $d, "zmm16", "zmm17"),
                bc2!("zmm31", "{b} + {s}*4", $d, "zmm18", "zmm19"),
                bc2!("zmm30", "{d}", $d, "zmm20", "zmm21"),
                bc2!("zmm31", "{d} + {s}", $d, "zmm22", "zmm23"),
                bc2!("zmm30", "{d} + {s}*2", $d, "zmm24", "zmm25"),
                bc2!("zmm31", "{d} + {t}", $d, "zmm26", "zmm27"),
            )
        };
    }
    /// One channel of the 10 x 32 tile (rows a.. and b.. of `step32`).
    macro_rules! step32_10 {
        ($x0:literal, $x1:literal, $d:literal) => {
            concat!(
                "vmovups zmm28, [{xp} + ", $x0, "]\n",
                "vmovups zmm29, [{xp} + ", $x1, "]\n",
                bc2!("zmm30", "{a}", $d, "zmm0", "zmm1"),
                bc2!("zmm31", "{a} + {s}", $d, "zmm2", "zmm3"),
                bc2!("zmm30", "{a} + {s}*2", $d, "zmm4", "zmm5"),
                bc2!("zmm31", "{a} + {t}", $d, "zmm6", "zmm7"),
                bc2!("zmm30", "{a} + {s}*4", $d, "zmm8", "zmm9"),
                bc2!("zmm31", "{b}", $d, "zmm10", "zmm11"),
                bc2!("zmm30", "{b} + {s}", $d, "zmm12", "zmm13"),
                bc2!("zmm31", "{b} + {s}*2", $d, "zmm14", "zmm15"),
                bc2!("zmm30", "{b} + {t}", $d, "zmm16", "zmm17"),
                bc2!("zmm31", "{b} + {s}*4", $d, "zmm18", "zmm19"),
            )
        };
    }
    /// Broadcasts one weight into $r and multiply-adds it into two accumulators.
    macro_rules! bc2 {
        ($r:literal, $addr:literal, $d:literal, $a0:literal, $a1:literal) => {
            concat!(
                "vbroadcastss ", $r, ", dword ptr [", $addr, " + ", $d, "]\n",
                "vfmadd231ps ", $a0, ", zmm28, ", $r, "\n",
                "vfmadd231ps ", $a1, ", zmm29, ", $r, "\n",
            )
        };
    }
    /// One channel of the 14 x 16 tile (embedded broadcasts: each weight is used once).
    macro_rules! step16 {
        ($x0:literal, $d:literal) => {
            concat!(
                "vmovups zmm28, [{xp} + ", $x0, "]\n",
                eb!("zmm0", "{a}", $d),
                eb!("zmm1", "{a} + {s}", $d),
                eb!("zmm2", "{a} + {s}*2", $d),
                eb!("zmm3", "{a} + {t}", $d),
                eb!("zmm4", "{a} + {s}*4", $d),
                eb!("zmm5", "{b}", $d),
                eb!("zmm6", "{b} + {s}", $d),
                eb!("zmm7", "{b} + {s}*2", $d),
                eb!("zmm8", "{b} + {t}", $d),
                eb!("zmm9", "{b} + {s}*4", $d),
                eb!("zmm10", "{d}", $d),
                eb!("zmm11", "{d} + {s}", $d),
                eb!("zmm12", "{d} + {s}*2", $d),
                eb!("zmm13", "{d} + {t}", $d),
            )
        };
    }
    /// One channel of the 10 x 16 tile (rows a.. and b.. of `step16`).
    macro_rules! step16_10 {
        ($x0:literal, $d:literal) => {
            concat!(
                "vmovups zmm28, [{xp} + ", $x0, "]\n",
                eb!("zmm0", "{a}", $d),
                eb!("zmm1", "{a} + {s}", $d),
                eb!("zmm2", "{a} + {s}*2", $d),
                eb!("zmm3", "{a} + {t}", $d),
                eb!("zmm4", "{a} + {s}*4", $d),
                eb!("zmm5", "{b}", $d),
                eb!("zmm6", "{b} + {s}", $d),
                eb!("zmm7", "{b} + {s}*2", $d),
                eb!("zmm8", "{b} + {t}", $d),
                eb!("zmm9", "{b} + {s}*4", $d),
            )
        };
    }
    /// Multiply-add with an embedded broadcast of one weight.
    macro_rules! eb {
        ($acc:literal, $addr:literal, $d:literal) => {
            concat!("vfmadd231ps ", $acc, ", zmm28, dword ptr [", $addr, " + ", $d, "]{{1to16}}\n")
        };
    }
    /// Prefetches (into L1) the weight line `PREFETCH_BYTES` ahead of each of the 14 row pointers
    /// (a prefetch never faults: past the last row it only wastes a request).
    macro_rules! pf14 {
        () => {
            concat!(
                "prefetcht0 [{a} + {pd}]\n", "prefetcht0 [{a} + {s} + {pd}]\n",
                "prefetcht0 [{a} + {s}*2 + {pd}]\n", "prefetcht0 [{a} + {t} + {pd}]\n",
                "prefetcht0 [{a} + {s}*4 + {pd}]\n", "prefetcht0 [{b} + {pd}]\n",
                "prefetcht0 [{b} + {s} + {pd}]\n", "prefetcht0 [{b} + {s}*2 + {pd}]\n",
                "prefetcht0 [{b} + {t} + {pd}]\n", "prefetcht0 [{b} + {s}*4 + {pd}]\n",
                "prefetcht0 [{d} + {pd}]\n", "prefetcht0 [{d} + {s} + {pd}]\n",
                "prefetcht0 [{d} + {s}*2 + {pd}]\n", "prefetcht0 [{d} + {t} + {pd}]\n",
            )
        };
    }
    /// Prefetches (into L1) the weight line `PREFETCH_BYTES` ahead of each of the 10 row pointers
    /// (rows a.. and b.. of `pf14`).
    macro_rules! pf10 {
        () => {
            concat!(
                "prefetcht0 [{a} + {pd}]\n", "prefetcht0 [{a} + {s} + {pd}]\n",
                "prefetcht0 [{a} + {s}*2 + {pd}]\n", "prefetcht0 [{a} + {t} + {pd}]\n",
                "prefetcht0 [{a} + {s}*4 + {pd}]\n", "prefetcht0 [{b} + {pd}]\n",
                "prefetcht0 [{b} + {s} + {pd}]\n", "prefetcht0 [{b} + {s}*2 + {pd}]\n",
                "prefetcht0 [{b} + {t} + {pd}]\n", "prefetcht0 [{b} + {s}*4 + {pd}]\n",
            )
        };
    }
    /// The 16 channels of one iteration of a 32-row kernel: `$step` at panel byte offsets
    /// 128 i and 128 i + 64 and weight byte offset 4 i, i = 0..16.
    macro_rules! x16_w32 {
        ($step:ident) => {
            concat!(
                $step!("0", "64", "0"),
                $step!("128", "192", "4"),
                $step!("256", "320", "8"),
                $step!("384", "448", "12"),
                $step!("512", "576", "16"),
                $step!("640", "704", "20"),
                $step!("768", "832", "24"),
                $step!("896", "960", "28"),
                $step!("1024", "1088", "32"),
                $step!("1152", "1216", "36"),
                $step!("1280", "1344", "40"),
                $step!("1408", "1472", "44"),
                $step!("1536", "1600", "48"),
                $step!("1664", "1728", "52"),
                $step!("1792", "1856", "56"),
                $step!("1920", "1984", "60"),
            )
        };
    }
    /// The 16 channels of one iteration of a 16-row kernel: `$step` at panel byte offset
    /// 64 i and weight byte offset 4 i, i = 0..16.
    macro_rules! x16_w16 {
        ($step:ident) => {
            concat!(
                $step!("0", "0"),
                $step!("64", "4"),
                $step!("128", "8"),
                $step!("192", "12"),
                $step!("256", "16"),
                $step!("320", "20"),
                $step!("384", "24"),
                $step!("448", "28"),
                $step!("512", "32"),
                $step!("576", "36"),
                $step!("640", "40"),
                $step!("704", "44"),
                $step!("768", "48"),
                $step!("832", "52"),
                $step!("896", "56"),
                $step!("960", "60"),
            )
        };
    }
    pub(super) use {bc2, eb, pf10, pf14, step16, step16_10, step32, step32_10, x16_w16, x16_w32};
}

/// 14 weight rows from `w` (row stride `k`) x a 32-row panel `xp`, over `k` channels:
/// `acc[j][r] = sum_i xp[32 i + r] * w[j k + i]`, fused multiply-adds in channel order
/// (channels unrolled by 16, one cache line of each weight row per iteration).
///
/// # Safety
/// The CPU has AVX-512F; `w` covers 14 rows of `k` floats with stride `k`; `xp` `32 k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[rustfmt::skip]
unsafe fn asm_14x32(acc: &mut [[f32; 32]; 14], xp: *const f32, w: *const f32, k: usize) {
    use asm_text::{bc2, pf14, step32, x16_w32};
    // SAFETY (caller): the loop reads 14 x k weights and 32 x k panel floats and writes
    // the 14 x 32 accumulators to `acc`; every register it changes is declared.
    std::arch::asm!(
        "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2",
        "vpxord zmm3, zmm3, zmm3", "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
        "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7", "vpxord zmm8, zmm8, zmm8",
        "vpxord zmm9, zmm9, zmm9", "vpxord zmm10, zmm10, zmm10", "vpxord zmm11, zmm11, zmm11",
        "vpxord zmm12, zmm12, zmm12", "vpxord zmm13, zmm13, zmm13", "vpxord zmm14, zmm14, zmm14",
        "vpxord zmm15, zmm15, zmm15", "vpxord zmm16, zmm16, zmm16", "vpxord zmm17, zmm17, zmm17",
        "vpxord zmm18, zmm18, zmm18", "vpxord zmm19, zmm19, zmm19", "vpxord zmm20, zmm20, zmm20",
        "vpxord zmm21, zmm21, zmm21", "vpxord zmm22, zmm22, zmm22", "vpxord zmm23, zmm23, zmm23",
        "vpxord zmm24, zmm24, zmm24", "vpxord zmm25, zmm25, zmm25", "vpxord zmm26, zmm26, zmm26",
        "vpxord zmm27, zmm27, zmm27",
        "test {n4}, {n4}",
        "jz 3f",
        ".p2align 6",
        "2:",
        pf14!(),
        x16_w32!(step32),
        "add {xp}, 2048",
        "add {a}, 64",
        "add {b}, 64",
        "add {d}, 64",
        "dec {n4}",
        "jnz 2b",
        "3:",
        "test {n1}, {n1}",
        "jz 5f",
        "4:",
        step32!("0", "64", "0"),
        "add {xp}, 128",
        "add {a}, 4",
        "add {b}, 4",
        "add {d}, 4",
        "dec {n1}",
        "jnz 4b",
        "5:",
        "vmovups [{acc}], zmm0", "vmovups [{acc} + 64], zmm1",
        "vmovups [{acc} + 128], zmm2", "vmovups [{acc} + 192], zmm3",
        "vmovups [{acc} + 256], zmm4", "vmovups [{acc} + 320], zmm5",
        "vmovups [{acc} + 384], zmm6", "vmovups [{acc} + 448], zmm7",
        "vmovups [{acc} + 512], zmm8", "vmovups [{acc} + 576], zmm9",
        "vmovups [{acc} + 640], zmm10", "vmovups [{acc} + 704], zmm11",
        "vmovups [{acc} + 768], zmm12", "vmovups [{acc} + 832], zmm13",
        "vmovups [{acc} + 896], zmm14", "vmovups [{acc} + 960], zmm15",
        "vmovups [{acc} + 1024], zmm16", "vmovups [{acc} + 1088], zmm17",
        "vmovups [{acc} + 1152], zmm18", "vmovups [{acc} + 1216], zmm19",
        "vmovups [{acc} + 1280], zmm20", "vmovups [{acc} + 1344], zmm21",
        "vmovups [{acc} + 1408], zmm22", "vmovups [{acc} + 1472], zmm23",
        "vmovups [{acc} + 1536], zmm24", "vmovups [{acc} + 1600], zmm25",
        "vmovups [{acc} + 1664], zmm26", "vmovups [{acc} + 1728], zmm27",
        xp = inout(reg) xp => _,
        a = inout(reg) w => _,
        b = inout(reg) w.add(5 * k) => _,
        d = inout(reg) w.add(10 * k) => _,
        s = in(reg) k * 4,
        t = in(reg) k * 12,
        n4 = inout(reg) k / 16 => _,
        n1 = inout(reg) k % 16 => _,
        pd = const PREFETCH_BYTES,
        acc = in(reg) acc.as_mut_ptr(),
        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
        out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
        out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _,
        out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
        out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _, out("zmm24") _,
        out("zmm25") _, out("zmm26") _, out("zmm27") _, out("zmm28") _, out("zmm29") _,
        out("zmm30") _, out("zmm31") _,
        options(nostack),
    );
}

/// 10 weight rows from `w` (row stride `k`) x a 32-row panel `xp`, over `k` channels:
/// `acc[j][r] = sum_i xp[32 i + r] * w[j k + i]`, fused multiply-adds in channel order
/// (channels unrolled by 16, one cache line of each weight row per iteration).
///
/// # Safety
/// The CPU has AVX-512F; `w` covers 10 rows of `k` floats with stride `k`; `xp` `32 k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[rustfmt::skip]
unsafe fn asm_10x32(acc: &mut [[f32; 32]; 14], xp: *const f32, w: *const f32, k: usize) {
    use asm_text::{bc2, pf10, step32_10, x16_w32};
    // SAFETY (caller): the loop reads 10 x k weights and 32 x k panel floats and writes
    // the 10 x 32 accumulators to `acc`; every register it changes is declared.
    std::arch::asm!(
        "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2",
        "vpxord zmm3, zmm3, zmm3", "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
        "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7", "vpxord zmm8, zmm8, zmm8",
        "vpxord zmm9, zmm9, zmm9", "vpxord zmm10, zmm10, zmm10", "vpxord zmm11, zmm11, zmm11",
        "vpxord zmm12, zmm12, zmm12", "vpxord zmm13, zmm13, zmm13", "vpxord zmm14, zmm14, zmm14",
        "vpxord zmm15, zmm15, zmm15", "vpxord zmm16, zmm16, zmm16", "vpxord zmm17, zmm17, zmm17",
        "vpxord zmm18, zmm18, zmm18", "vpxord zmm19, zmm19, zmm19",
        "test {n4}, {n4}",
        "jz 3f",
        ".p2align 6",
        "2:",
        pf10!(),
        x16_w32!(step32_10),
        "add {xp}, 2048",
        "add {a}, 64",
        "add {b}, 64",
        "dec {n4}",
        "jnz 2b",
        "3:",
        "test {n1}, {n1}",
        "jz 5f",
        "4:",
        step32_10!("0", "64", "0"),
        "add {xp}, 128",
        "add {a}, 4",
        "add {b}, 4",
        "dec {n1}",
        "jnz 4b",
        "5:",
        "vmovups [{acc}], zmm0", "vmovups [{acc} + 64], zmm1",
        "vmovups [{acc} + 128], zmm2", "vmovups [{acc} + 192], zmm3",
        "vmovups [{acc} + 256], zmm4", "vmovups [{acc} + 320], zmm5",
        "vmovups [{acc} + 384], zmm6", "vmovups [{acc} + 448], zmm7",
        "vmovups [{acc} + 512], zmm8", "vmovups [{acc} + 576], zmm9",
        "vmovups [{acc} + 640], zmm10", "vmovups [{acc} + 704], zmm11",
        "vmovups [{acc} + 768], zmm12", "vmovups [{acc} + 832], zmm13",
        "vmovups [{acc} + 896], zmm14", "vmovups [{acc} + 960], zmm15",
        "vmovups [{acc} + 1024], zmm16", "vmovups [{acc} + 1088], zmm17",
        "vmovups [{acc} + 1152], zmm18", "vmovups [{acc} + 1216], zmm19",
        xp = inout(reg) xp => _,
        a = inout(reg) w => _,
        b = inout(reg) w.add(5 * k) => _,
        s = in(reg) k * 4,
        t = in(reg) k * 12,
        n4 = inout(reg) k / 16 => _,
        n1 = inout(reg) k % 16 => _,
        pd = const PREFETCH_BYTES,
        acc = in(reg) acc.as_mut_ptr(),
        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
        out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
        out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _,
        out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
        out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
        options(nostack),
    );
}

/// 14 weight rows x a 16-row panel: `acc[j][r] = sum_i xp[16 i + r] * w[j k + i]` for
/// `r < 16` (lanes 16..32 of `acc` are left as they are).
///
/// # Safety
/// The CPU has AVX-512F; `w` covers 14 rows of `k` floats with stride `k`; `xp` `16 k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[rustfmt::skip]
unsafe fn asm_14x16(acc: &mut [[f32; 32]; 14], xp: *const f32, w: *const f32, k: usize) {
    use asm_text::{eb, pf14, step16, x16_w16};
    // SAFETY (caller): the loop reads 14 x k weights and 16 x k panel floats and writes
    // the 14 x 16 accumulators to `acc`; every register it changes is declared.
    std::arch::asm!(
        "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2",
        "vpxord zmm3, zmm3, zmm3", "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
        "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7", "vpxord zmm8, zmm8, zmm8",
        "vpxord zmm9, zmm9, zmm9", "vpxord zmm10, zmm10, zmm10", "vpxord zmm11, zmm11, zmm11",
        "vpxord zmm12, zmm12, zmm12", "vpxord zmm13, zmm13, zmm13",
        "test {n4}, {n4}",
        "jz 3f",
        ".p2align 6",
        "2:",
        pf14!(),
        x16_w16!(step16),
        "add {xp}, 1024",
        "add {a}, 64",
        "add {b}, 64",
        "add {d}, 64",
        "dec {n4}",
        "jnz 2b",
        "3:",
        "test {n1}, {n1}",
        "jz 5f",
        "4:",
        step16!("0", "0"),
        "add {xp}, 64",
        "add {a}, 4",
        "add {b}, 4",
        "add {d}, 4",
        "dec {n1}",
        "jnz 4b",
        "5:",
        "vmovups [{acc}], zmm0", "vmovups [{acc} + 128], zmm1",
        "vmovups [{acc} + 256], zmm2", "vmovups [{acc} + 384], zmm3",
        "vmovups [{acc} + 512], zmm4", "vmovups [{acc} + 640], zmm5",
        "vmovups [{acc} + 768], zmm6", "vmovups [{acc} + 896], zmm7",
        "vmovups [{acc} + 1024], zmm8", "vmovups [{acc} + 1152], zmm9",
        "vmovups [{acc} + 1280], zmm10", "vmovups [{acc} + 1408], zmm11",
        "vmovups [{acc} + 1536], zmm12", "vmovups [{acc} + 1664], zmm13",
        xp = inout(reg) xp => _,
        a = inout(reg) w => _,
        b = inout(reg) w.add(5 * k) => _,
        d = inout(reg) w.add(10 * k) => _,
        s = in(reg) k * 4,
        t = in(reg) k * 12,
        n4 = inout(reg) k / 16 => _,
        n1 = inout(reg) k % 16 => _,
        pd = const PREFETCH_BYTES,
        acc = in(reg) acc.as_mut_ptr(),
        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
        out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
        out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm28") _,
        options(nostack),
    );
}

/// 10 weight rows x a 16-row panel: `acc[j][r] = sum_i xp[16 i + r] * w[j k + i]` for
/// `r < 16` (lanes 16..32 of `acc` are left as they are).
///
/// # Safety
/// The CPU has AVX-512F; `w` covers 10 rows of `k` floats with stride `k`; `xp` `16 k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[rustfmt::skip]
unsafe fn asm_10x16(acc: &mut [[f32; 32]; 14], xp: *const f32, w: *const f32, k: usize) {
    use asm_text::{eb, pf10, step16_10, x16_w16};
    // SAFETY (caller): the loop reads 10 x k weights and 16 x k panel floats and writes
    // the 10 x 16 accumulators to `acc`; every register it changes is declared.
    std::arch::asm!(
        "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2",
        "vpxord zmm3, zmm3, zmm3", "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
        "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7", "vpxord zmm8, zmm8, zmm8",
        "vpxord zmm9, zmm9, zmm9",
        "test {n4}, {n4}",
        "jz 3f",
        ".p2align 6",
        "2:",
        pf10!(),
        x16_w16!(step16_10),
        "add {xp}, 1024",
        "add {a}, 64",
        "add {b}, 64",
        "dec {n4}",
        "jnz 2b",
        "3:",
        "test {n1}, {n1}",
        "jz 5f",
        "4:",
        step16_10!("0", "0"),
        "add {xp}, 64",
        "add {a}, 4",
        "add {b}, 4",
        "dec {n1}",
        "jnz 4b",
        "5:",
        "vmovups [{acc}], zmm0", "vmovups [{acc} + 128], zmm1",
        "vmovups [{acc} + 256], zmm2", "vmovups [{acc} + 384], zmm3",
        "vmovups [{acc} + 512], zmm4", "vmovups [{acc} + 640], zmm5",
        "vmovups [{acc} + 768], zmm6", "vmovups [{acc} + 896], zmm7",
        "vmovups [{acc} + 1024], zmm8", "vmovups [{acc} + 1152], zmm9",
        xp = inout(reg) xp => _,
        a = inout(reg) w => _,
        b = inout(reg) w.add(5 * k) => _,
        s = in(reg) k * 4,
        t = in(reg) k * 12,
        n4 = inout(reg) k / 16 => _,
        n1 = inout(reg) k % 16 => _,
        pd = const PREFETCH_BYTES,
        acc = in(reg) acc.as_mut_ptr(),
        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
        out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
        out("zmm28") _,
        options(nostack),
    );
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Tile;
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
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel<const MR: usize, const NV: usize>(t: &Tile) {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        let (xp, w, k) = (t.xp, t.w, t.k);
        for c in 0..k {
            let mut xv = [_mm256_setzero_ps(); NV];
            for (v, xvv) in xv.iter_mut().enumerate() {
                *xvv = _mm256_loadu_ps(xp.add(c * 8 * NV + 8 * v));
            }
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

/// Portable kernel: 4 x 4 scalar tiles of fused multiply-add chains, row blocks in
/// parallel.
fn generic_linear(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    const T: usize = 4;
    out[..m * n]
        .par_chunks_mut(T * n)
        .enumerate()
        .for_each(|(rb, o)| {
            let r0 = rb * T;
            let rows = T.min(m - r0);
            for c0 in (0..n).step_by(T) {
                let cols = T.min(n - c0);
                let mut acc = [[0.0f32; T]; T];
                for c in 0..k {
                    for (i, ai) in acc.iter_mut().enumerate().take(rows) {
                        let xv = x[(r0 + i) * k + c];
                        for (j, a) in ai.iter_mut().enumerate().take(cols) {
                            *a = xv.mul_add(w[(c0 + j) * k + c], *a);
                        }
                    }
                }
                for (i, ai) in acc.iter().enumerate().take(rows) {
                    for (j, a) in ai.iter().enumerate().take(cols) {
                        o[i * n + c0 + j] = a + bias.map_or(0.0, |b| b[c0 + j]);
                    }
                }
            }
        });
}

/// Scalar reference of [`linear_f32`] (f64 accumulation).
pub fn reference_linear_f32(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    crate::matmul::reference_linear(out, x, w, bias, m, k, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isas() -> Vec<F32Isa> {
        let v = F32Isa::available();
        eprintln!("f32 kernels tested here: {v:?}");
        v
    }

    /// Several weights in one pass give each weight's own product, bit for bit.
    #[test]
    fn parts_equal_separate_products() {
        let k = 96;
        let widths = [40usize, 7, 33, 0, 64];
        let ws: Vec<Vec<f32>> = widths
            .iter()
            .enumerate()
            .map(|(i, &n)| data(n * k, 31 + 2 * i, 97))
            .collect();
        let bs: Vec<Vec<f32>> = widths.iter().map(|&n| data(n, 7, 13)).collect();
        for isa in isas() {
            for m in [1usize, 16, 33, 100] {
                let x = data(m * k, 17, 101);
                let mut outs: Vec<Vec<f32>> =
                    widths.iter().map(|n| vec![f32::NAN; m * n]).collect();
                {
                    let mut parts: Vec<F32Part> = outs
                        .iter_mut()
                        .zip(&ws)
                        .zip(&bs)
                        .zip(widths)
                        .enumerate()
                        .map(|(i, (((o, w), b), n))| {
                            (
                                o.as_mut_slice(),
                                w.as_slice(),
                                (i % 2 == 0).then_some(b.as_slice()),
                                n,
                            )
                        })
                        .collect();
                    linear_f32_parts(&mut parts, &x, m, k, &mut Vec::new(), isa, None);
                }
                for (i, &n) in widths.iter().enumerate() {
                    let mut want = vec![0.0; m * n];
                    let b = (i % 2 == 0).then_some(bs[i].as_slice());
                    linear_f32(&mut want, &x, &ws[i], b, m, k, n, &mut Vec::new(), isa);
                    assert!(outs[i] == want, "{isa:?} m={m} part {i}");
                }
            }
        }
    }

    /// The epilogue sees every output element exactly once, in pieces that start at even
    /// columns, with the right part, row and column: `v -> 2 v + part + column / 8 + row`
    /// applied twice or not at all gives other values.
    #[test]
    fn epilogue_sees_every_element_once() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let k = 80;
        // 500 columns: several tasks per panel (at most 16 tiles each).
        let widths = [500usize, 7, 0, 64];
        let ws: Vec<Vec<f32>> = widths
            .iter()
            .enumerate()
            .map(|(i, &n)| data(n * k, 29 + 2 * i, 89))
            .collect();
        let f = |part: usize, row: usize, col: usize, v: f32| {
            2.0 * v + part as f32 + (col / 8) as f32 + row as f32
        };
        for isa in isas() {
            for m in [1usize, 16, 33, 100] {
                let x = data(m * k, 19, 103);
                let odd = AtomicBool::new(false);
                let ep = |part: usize, row: usize, c0: usize, vals: &mut [f32]| {
                    if c0 % 2 == 1 {
                        odd.store(true, Ordering::Relaxed);
                    }
                    for (j, v) in vals.iter_mut().enumerate() {
                        *v = f(part, row, c0 + j, *v);
                    }
                };
                let mut outs: Vec<Vec<f32>> = widths.iter().map(|n| vec![0.0; m * n]).collect();
                {
                    let mut parts: Vec<F32Part> = outs
                        .iter_mut()
                        .zip(&ws)
                        .zip(widths)
                        .map(|((o, w), n)| (o.as_mut_slice(), w.as_slice(), None, n))
                        .collect();
                    linear_f32_parts(&mut parts, &x, m, k, &mut Vec::new(), isa, Some(&ep));
                }
                assert!(
                    !odd.load(Ordering::Relaxed),
                    "{isa:?} m={m}: odd first column"
                );
                for (i, &n) in widths.iter().enumerate() {
                    let mut want = vec![0.0; m * n];
                    linear_f32(&mut want, &x, &ws[i], None, m, k, n, &mut Vec::new(), isa);
                    for (e, v) in want.iter_mut().enumerate() {
                        *v = f(i, e / n, e % n, *v);
                    }
                    assert!(outs[i] == want, "{isa:?} m={m} part {i}");
                }
            }
        }
    }

    fn data(len: usize, a: usize, b: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (i * a % b) as f32 / b as f32 - 0.5)
            .collect()
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn every_isa_matches_the_scalar_reference_on_odd_sizes() {
        for (m, k, n) in [
            (1usize, 1usize, 1usize),
            (3, 5, 7),
            (17, 33, 9),
            (31, 100, 45),
            (64, 96, 130),
            (33, 768, 28),
            (5, 2048, 768),
            (3, 64, 10),
            (40, 1024, 23),
        ] {
            let x = data(m * k, 7919, 1013);
            let w = data(n * k, 104729, 997);
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 1.0).collect();
            for bias in [None, Some(b.as_slice())] {
                let mut refo = vec![0.0; m * n];
                reference_linear_f32(&mut refo, &x, &w, bias, m, k, n);
                for isa in isas() {
                    let mut out = vec![f32::NAN; m * n];
                    let mut scratch = Vec::new();
                    linear_f32(&mut out, &x, &w, bias, m, k, n, &mut scratch, isa);
                    for (a, r) in out.iter().zip(&refo) {
                        assert!(
                            (a - r).abs() <= 1e-5 * (k as f32).sqrt() * r.abs().max(1.0),
                            "{isa:?} {m}x{k}x{n}: {a} vs {r}"
                        );
                    }
                }
            }
        }
    }

    /// A row's result is bit-identical whatever the number of rows and threads.
    #[test]
    fn rows_do_not_depend_on_m_or_threads() {
        let pools = [pool(1), pool(2)];
        // Debug builds (`cargo test` without --release) check the smaller shapes only.
        let shapes: &[(usize, usize)] = if cfg!(debug_assertions) {
            &[(16, 16), (768, 28), (2048, 28), (40, 16), (256, 688)]
        } else {
            &[
                (16, 16),
                (768, 28),
                (2048, 28),
                (40, 16),
                (256, 688),
                (768, 2304),
                (2048, 768),
                (768, 2048),
            ]
        };
        let all_m: Vec<usize> = (1..40).chain([63, 64, 65, 127, 200, 257]).collect();
        for isa in isas() {
            for &(k, n) in shapes {
                // The portable kernel is slow (a libm fma per product): fewer, smaller cases.
                let (mmax, ms) = if isa == F32Isa::Generic {
                    let ms = vec![1, 2, 15, 16, 17, 33, 65];
                    (if k * n > 100_000 { 65 } else { 300 }, ms)
                } else {
                    (300, all_m.clone())
                };
                let x = data(mmax * k, 7919, 1013);
                let w = data(n * k, 104729, 997);
                let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
                let mut scratch = Vec::new();
                let mut base = vec![0.0; mmax * n];
                linear_f32(&mut base, &x, &w, Some(&b), mmax, k, n, &mut scratch, isa);
                for &m in ms.iter().filter(|&&m| m <= mmax) {
                    for p in &pools {
                        let mut o = vec![0.0; m * n];
                        p.install(|| {
                            linear_f32(&mut o, &x, &w, Some(&b), m, k, n, &mut scratch, isa)
                        });
                        let t = p.current_num_threads();
                        assert!(
                            o[..] == base[..m * n],
                            "{isa:?} k={k} n={n} m={m} threads={t}"
                        );
                    }
                }
            }
        }
    }

    /// Every variant computes the same chain of fused multiply-adds, so they agree exactly.
    #[test]
    fn every_isa_gives_the_same_bits() {
        for (m, k, n) in [(5usize, 7usize, 3usize), (37, 100, 45), (70, 256, 130)] {
            let x = data(m * k, 7919, 1013);
            let w = data(n * k, 104729, 997);
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
            let mut first: Option<Vec<f32>> = None;
            for isa in isas() {
                let mut o = vec![0.0; m * n];
                linear_f32(&mut o, &x, &w, Some(&b), m, k, n, &mut Vec::new(), isa);
                match &first {
                    None => first = Some(o),
                    Some(f) => assert!(f[..] == o[..], "{isa:?} {m}x{k}x{n}"),
                }
            }
        }
    }

    #[test]
    fn scratch_is_reused_across_shapes() {
        let shapes = [(70usize, 300usize, 50usize), (5, 40, 33), (100, 500, 20)];
        for isa in isas() {
            let mut shared = Vec::new();
            for &(m, k, n) in &shapes {
                let x = data(m * k, 7919, 1013);
                let w = data(n * k, 104729, 997);
                let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
                linear_f32(&mut a, &x, &w, None, m, k, n, &mut shared, isa);
                linear_f32(&mut b, &x, &w, None, m, k, n, &mut Vec::new(), isa);
                assert!(a == b, "{isa:?} {m}x{k}x{n}");
            }
        }
    }

    #[test]
    fn empty_shapes() {
        let b = [1.0f32, 2.0, 3.0];
        for isa in isas() {
            let mut out = vec![f32::NAN; 6];
            linear_f32(&mut out, &[], &[], Some(&b), 2, 0, 3, &mut Vec::new(), isa);
            assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
            linear_f32(&mut out, &[], &[], None, 2, 0, 3, &mut Vec::new(), isa);
            assert_eq!(out, [0.0; 6]);
            linear_f32(
                &mut out,
                &[],
                &[0.0; 3],
                None,
                0,
                1,
                3,
                &mut Vec::new(),
                isa,
            );
            linear_f32(
                &mut out,
                &[0.0; 2],
                &[],
                None,
                2,
                1,
                0,
                &mut Vec::new(),
                isa,
            );
        }
    }

    #[test]
    #[should_panic(expected = "buffer too small")]
    fn short_weights_panic() {
        let mut out = vec![0.0; 4];
        linear_f32(
            &mut out,
            &[0.0; 4],
            &[0.0; 3],
            None,
            2,
            2,
            2,
            &mut Vec::new(),
            F32Isa::Generic,
        );
    }
}
