//! F32 linear layers with hand-written kernels, reading the weights in place.
//!
//! `out (m, n) = x (m, k) · w^T (+ bias)` where `w` is (n, k) row-major as PyTorch's
//! `nn.Linear` stores it (typically a memory-mapped file: it is never copied or repacked).
//!
//! Roles are swapped with respect to a textbook GEMM: the weights are the broadcast operand
//! and the activations the vector operand. Per call the activations are transposed into
//! `scratch` in panels of `NR` rows: for each input channel, the panel's `NR` values are
//! contiguous; the last panel is narrower (its rows rounded up to the vector width,
//! zero-padded). A micro-tile holds `MR` weight rows (output columns) x one panel in
//! registers for all of `k`: per channel it loads the panel's vectors, broadcasts each of
//! the `MR` weights from memory (weight rows are `k` apart) and issues one fused
//! multiply-add per accumulator. The finished tile is transposed, the bias added, and stored
//! with row/column masks; the last, short tile of a row is shifted left to end at column `n`
//! and writes only its own columns.
//!
//! One driver ([`drive`]) runs every ISA; an ISA is one implementation of [`F32Kernel`]
//! (its `MR x NR` geometry, its panel packing and its tile function), in the spirit of
//! rten's gemm kernels:
//!
//! | level | kernel | tile (weight rows x activation rows) |
//! |---|---|---|
//! | avx512, avx512-bf16, amx | `x86::Avx512`: assembly, one macro for its four shapes | 14 x 32 (10 x 32 when `k % 1024 == 0`: 14 rows in the same L1 sets exceed its 12 ways) |
//! | avx2 | `x86::Avx2` | 6 x 16 |
//! | neon, neon-bf16 | `neon::Neon`: `fmla` by element, 4 channels per weight load | 6 x 12 |
//! | generic | [`Portable`]: `f32::mul_add` | 4 x 8 |
//!
//! Parallel tasks are (one panel) x (a run of at most 16 column tiles): the panel stays in
//! L2 while the weight rows stream past once.
//!
//! Weight streaming (AVX-512): the channel loop is unrolled by 16, so each iteration
//! consumes one cache line of each of the tile's weight rows, and it prefetches
//! (`prefetcht0`) the line 256 bytes ahead in every row. With few activation rows (a plain
//! pass: 16 rows, one panel) the product is bound by reading the weights, and the hardware
//! prefetchers follow 10-14 interleaved short rows (3 KB at k = 768) poorly: measured on
//! 16 x 768 x 36000 (110 MB of weights) 16.5 -> 22 GB/s, and a plain full-size pass
//! 11.7 -> 10.1 ms. Distances of 256-512 bytes were equally good, 1024 and more no better
//! than none.
//!
//! Determinism: every output element is computed as
//! `acc = 0; for c in 0..k { acc = fma(x[r][c], w[j][c], acc) }; out = acc + bias[j]`,
//! one fused multiply-add per channel in channel order, whatever the kernel, tile, panel,
//! task split or thread count. Results are therefore bit-identical whatever `m`, the rows
//! that share the call and the number of threads, and also identical across the levels
//! (the portable kernel uses `f32::mul_add`, which is fused too).

use crate::cpu::Isa;
use crate::out_ptr::OutPtr;
use crate::simd::{Simd, SimdOp};
use rayon::prelude::*;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// Register tile and packing geometry of one kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Weight rows (output columns) per micro-tile; even (the epilogue's pieces start at
    /// multiples of it, and RoPE pairs must not straddle two pieces).
    pub mr: usize,
    /// Activation rows per full panel.
    pub nr: usize,
    /// f32 lanes per vector (panel widths are multiples of it).
    pub lanes: usize,
}

/// One ISA's f32 micro-kernel: its geometry, its panel packing and its tile.
pub(crate) trait F32Kernel {
    /// The tile geometry for `k` input channels.
    fn geometry(k: usize) -> Geometry;

    /// Transposes rows `r0..r0 + rows` of `x` (row stride `k`) into one panel of width `wd`
    /// (a multiple of `lanes`): `dst[c * wd + r] = x[r0 + r][c]`, zero for `r >= rows`.
    ///
    /// # Safety
    /// The CPU runs this kernel's ISA; `dst.len() >= wd * k`; rows `r0..r0 + rows` of `x`
    /// exist and `rows <= wd`.
    unsafe fn pack_panel(dst: &mut [f32], x: &[f32], r0: usize, rows: usize, wd: usize, k: usize);

    /// Runs one micro-tile of `width` weight rows (`mr`, or fewer when `n < mr`) on a panel
    /// of width `wd`, writing what `t` describes.
    ///
    /// # Safety
    /// The CPU runs this kernel's ISA; the pointers of `t` cover what [`Tile`] describes:
    /// `width` weight rows of `k`, `wd * k` packed floats, the output rows x columns to
    /// write, and `width` bias values.
    unsafe fn tile(t: &Tile, width: usize, wd: usize);
}

/// Most column tiles per task.
const MAX_TILES_PER_TASK: usize = 16;
/// Tasks per thread aimed at when there are few panels (load balance on a shared machine).
const TASKS_PER_THREAD: usize = 4;

/// `out (m, n) = x (m, k) · w^T (+ bias)`; `w` is (n, k) row-major exactly as PyTorch's
/// `nn.Linear` stores it and is read in place (never copied or repacked).
///
/// `scratch` is caller-owned and reused across calls: it grows as needed (to about
/// `m * k` floats, rounded up to whole panels) and never shrinks. Runs on the current rayon
/// pool. Each output element is one fused multiply-add chain over `k` in channel order plus
/// the bias, so results do not depend on `m`, on the other rows or on the thread count.
///
/// Panics when a buffer is too small, the bias length is not `n`, or `isa` is a level
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
    isa: Isa,
) {
    linear_f32_parts(&mut [(out, w, bias, n)], x, m, k, scratch, isa, None)
}

/// The floats of `scratch` that [`linear_f32`] (or [`linear_f32_parts`]) uses for `m` rows
/// of `k` channels at level `isa`: a caller that reserves this much capacity beforehand
/// (fallibly) makes the product allocate nothing.
pub fn scratch_len(m: usize, k: usize, isa: Isa) -> usize {
    if m == 0 || k == 0 {
        return 0;
    }
    let g = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => <x86::Avx512 as F32Kernel>::geometry(k),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => <x86::Avx2 as F32Kernel>::geometry(k),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonBf16 => <neon::Neon as F32Kernel>::geometry(k),
        _ => Portable::geometry(k),
    };
    packed_len(g, m, k)
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
    isa: Isa,
    epilogue: Option<F32Epilogue>,
) {
    assert!(
        x.len() >= m * k,
        "linear_f32: input too small ({} for {m}x{k})",
        x.len()
    );
    for (o, w, b, n) in parts.iter() {
        assert!(
            o.len() >= m * n && w.len() >= n * k,
            "linear_f32: buffer too small (out {} for {m}x{n}, w {} for {n}x{k})",
            o.len(),
            w.len()
        );
        if let Some(b) = b {
            assert_eq!(b.len(), *n, "linear_f32: bias length");
        }
    }
    isa.assert_runs_here();
    if m == 0 {
        return;
    }
    if k == 0 {
        for (pi, (o, _, b, n)) in parts.iter_mut().enumerate() {
            if *n == 0 {
                continue;
            }
            for (r, row) in o[..m * *n].chunks_exact_mut(*n).enumerate() {
                match b {
                    Some(b) => row.copy_from_slice(b),
                    None => row.fill(0.0),
                }
                if let Some(ep) = epilogue {
                    ep(pi, r, 0, row);
                }
            }
        }
        return;
    }
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
    if ps.is_empty() {
        return;
    }
    // SAFETY (each arm): the level runs here (checked above), and the kernel is that
    // level's; the asserts above bound what the driver reads and writes.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                drive::<x86::Avx512>(&ps, x, m, k, scratch, epilogue)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => drive::<x86::Avx2>(&ps, x, m, k, scratch, epilogue),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon | Isa::NeonBf16 => drive::<neon::Neon>(&ps, x, m, k, scratch, epilogue),
            _ => drive::<Portable>(&ps, x, m, k, scratch, epilogue),
        }
    }
}

/// One weight of a product (see [`linear_f32_parts`]).
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
fn panel_width(g: Geometry, m: usize, p: usize) -> usize {
    (m - p * g.nr).min(g.nr).div_ceil(g.lanes) * g.lanes
}

/// Floats of packed activations for `m` rows of `k` channels.
fn packed_len(g: Geometry, m: usize, k: usize) -> usize {
    let panels = m.div_ceil(g.nr);
    ((panels - 1) * g.nr + panel_width(g, m, panels - 1)) * k
}

/// Portable transpose of rows `r0..r0 + rows` of `x` (row stride `k`) into one panel of
/// width `wd`: `dst[c * wd + r] = x[r0 + r][c]`, zero for `r >= rows` (blocks of 16
/// channels, so each row is read in runs).
pub(crate) fn pack_panel_scalar(
    dst: &mut [f32],
    x: &[f32],
    r0: usize,
    rows: usize,
    wd: usize,
    k: usize,
) {
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

/// [`pack_panel_scalar`] with `L x L` blocks (full rows and channels) transposed in `S`'s
/// registers: the panel packing of the AVX2 kernel (and any other `Simd` level).
pub(crate) struct PackPanel<'a> {
    pub dst: &'a mut [f32],
    pub x: &'a [f32],
    pub r0: usize,
    pub rows: usize,
    pub wd: usize,
    pub k: usize,
}

impl SimdOp for PackPanel<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let PackPanel {
            dst,
            x,
            r0,
            rows,
            wd,
            k,
        } = self;
        let l = S::LANES;
        let (full_rows, full_k) = (rows / l * l, k / l * l);
        if l == 1 || full_rows == 0 || full_k == 0 {
            return pack_panel_scalar(dst, x, r0, rows, wd, k);
        }
        let (d, src) = (dst.as_mut_ptr(), x.as_ptr().add(r0 * k));
        let mut v = [S::zero(); 16];
        for c0 in (0..full_k).step_by(l) {
            for g in (0..full_rows).step_by(l) {
                for (i, vi) in v[..l].iter_mut().enumerate() {
                    *vi = S::load(src.add((g + i) * k + c0));
                }
                S::transpose(&mut v[..l]);
                for (t, vt) in v[..l].iter().enumerate() {
                    S::store(d.add((c0 + t) * wd + g), *vt);
                }
            }
        }
        // The rest: channels full_k.. of every row, and rows full_rows..wd (padding zero).
        for c in 0..k {
            let r_from = if c < full_k { full_rows } else { 0 };
            for r in r_from..wd {
                *d.add(c * wd + r) = if r < rows { *src.add(r * k + c) } else { 0.0 };
            }
        }
    }
}

/// [`PackPanel`] compiled for level `isa` (the packing of the AVX2 and NEON kernels).
///
/// # Safety
/// `isa` runs here; the arguments satisfy [`F32Kernel::pack_panel`]'s contract.
pub(crate) unsafe fn pack_panel_at(
    isa: Isa,
    dst: &mut [f32],
    x: &[f32],
    r0: usize,
    rows: usize,
    wd: usize,
    k: usize,
) {
    let op = PackPanel {
        dst,
        x,
        r0,
        rows,
        wd,
        k,
    };
    crate::simd::dispatch(isa, op)
}

/// The one driver of every kernel: pack the activations once (in parallel, panel by
/// panel), then tasks of (part, one panel, a run of column tiles) in one parallel pass,
/// each followed by the epilogue on the elements it wrote.
///
/// # Safety
/// The CPU runs `K`'s ISA; `x` holds `m x k` floats; every part's `out` holds `m x n` and
/// its `w` `n x k` floats (and `bias` `n`).
unsafe fn drive<K: F32Kernel>(
    parts: &[Part],
    x: &[f32],
    m: usize,
    k: usize,
    scratch: &mut Vec<f32>,
    epilogue: Option<F32Epilogue>,
) {
    let g = K::geometry(k);
    let len = packed_len(g, m, k);
    if scratch.len() < len {
        scratch.reserve_exact(len - scratch.len());
        scratch.resize(len, 0.0);
    }
    let xp = &mut scratch[..len];
    xp.par_chunks_mut(g.nr * k)
        .enumerate()
        .for_each(|(p, dst)| {
            let r0 = p * g.nr;
            let rows = g.nr.min(m - r0);
            let wd = panel_width(g, m, p);
            debug_assert_eq!(dst.len(), wd * k);
            // SAFETY: K's ISA runs here (caller); `dst` holds the whole panel (`wd * k`
            // floats) and rows r0..r0+rows of `x` exist (rows <= m - r0).
            unsafe { K::pack_panel(dst, x, r0, rows, wd, k) };
        });
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
            // SAFETY: K's ISA runs here. The tile reads `width` weight rows of `k` at
            // `w[c0 * k..]` (c0 + width <= n), the panel's `wd * k` floats and the bias at
            // c0.., and writes rows r0..r0+rows x columns own..c0+width of this part's
            // output: this task's panel and column tiles, which no other task writes.
            unsafe { K::tile(&tile, width, wd) };
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
pub(crate) struct Tile {
    /// Packed panel: for each channel, the panel's rows contiguous.
    pub xp: *const f32,
    /// First weight row of the tile (row stride `k`).
    pub w: *const f32,
    /// Channels.
    pub k: usize,
    /// Output element (first row, first column) of the tile.
    pub out: *mut f32,
    /// Output row stride.
    pub ldo: usize,
    /// Rows to write.
    pub rows: usize,
    /// Columns to write.
    pub cols: std::ops::Range<usize>,
    /// Bias at the tile's first column.
    pub bias: Option<*const f32>,
}

impl Tile {
    /// The tile of column `j` alone.
    ///
    /// # Safety
    /// `j < width` of this tile (the pointers stay inside the buffers).
    pub(crate) unsafe fn column(&self, j: usize) -> Tile {
        Tile {
            w: self.w.add(j * self.k),
            out: self.out.add(j),
            cols: 0..1,
            bias: self.bias.map(|b| b.add(j)),
            ..*self
        }
    }
}

/// The portable kernel (any CPU): 4 weight rows x 8 activation rows of scalar fused
/// multiply-add chains (`f32::mul_add`; a libm call where the target has no FMA).
pub(crate) struct Portable;

impl F32Kernel for Portable {
    fn geometry(_k: usize) -> Geometry {
        Geometry {
            mr: 4,
            nr: 8,
            lanes: 1,
        }
    }

    unsafe fn pack_panel(dst: &mut [f32], x: &[f32], r0: usize, rows: usize, wd: usize, k: usize) {
        pack_panel_scalar(dst, x, r0, rows, wd, k)
    }

    unsafe fn tile(t: &Tile, width: usize, wd: usize) {
        const MR: usize = 4;
        const NR: usize = 8;
        let mut acc = [[0.0f32; NR]; MR];
        for c in 0..t.k {
            let xs = std::slice::from_raw_parts(t.xp.add(c * wd), wd.min(NR));
            for (j, aj) in acc.iter_mut().enumerate().take(width) {
                let wv = *t.w.add(j * t.k + c);
                for (a, x) in aj.iter_mut().zip(xs) {
                    *a = x.mul_add(wv, *a);
                }
            }
        }
        for j in t.cols.clone() {
            let b = t.bias.map_or(0.0, |b| *b.add(j));
            for (r, v) in acc[j].iter().enumerate().take(t.rows) {
                *t.out.add(r * t.ldo + j) = v + b;
            }
        }
    }
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
mod tests;
