//! Int8 linear layers: weights quantized once per output channel, activations per row at
//! run time, products summed in i32 (exact), scales, bias and epilogue applied in f32:
//!
//! ```text
//! y[i][j] = (f32(sum_c qa[i][c] * qw[j][c]) * sw[j]) * sa[i] + b[j]
//! ```
//!
//! Quantization (weights at load, activations per product): symmetric, per row,
//! `amax = max |x|`, `q = clamp(round_ties_even(x * (127 / amax)), -127, 127)`, scale
//! `amax / 127` ([`quantize_row`]). A row of zeros (or of subnormals only) has q = 0 and
//! scale 1. An activation row
//! holding NaN or infinity quantizes to zeros with a NaN scale, so its outputs are NaN as in
//! f32 (weights must be finite: [`quantize_rows`] refuses them).
//!
//! Integer sums are exact and the f32 operations after them are the same on every level, so
//! every kernel gives the same bits, whatever `m`, the row's position or the thread count.
//!
//! Packed weights: output columns in panels of [`NR`] = 64; inside a panel, for each quad of
//! input channels `(4q .. 4q+3)`, the 64 columns' 4 bytes as u32 words, in blocks of 16
//! quads x 16 columns (1 KB, quads-major inside: the bf16 pairs' `widx`). A block is one
//! AMX B tile; the 16 columns of a quad are one AVX-512 vector. `k` is padded with zero
//! quads to a multiple of 64 channels (at least 64), `n` to whole panels of zero columns.
//!
//! The kernels ([`Kernel`], chosen per level by [`Kernel::for_isa`]):
//! - `amx-int8`: AMX tiles, `tdpbssd` (s8 x s8), 32 x 32 outputs per step;
//! - `avx512-vnni` / `avx-vnni`: `vpdpbusd` (u8 x s8) on zmm / ymm register tiles, with the
//!   activations stored as `q + 128` (u8) and `128 * sum_c qw[j][c]` subtracted (the
//!   accumulators start from it): never saturates;
//! - `avx2`: weights and activations widened to i16, `vpmaddwd` (pairs summed into i32
//!   exactly; `vpmaddubsw`'s saturating i16 sums are not used);
//! - `neon-i8mm`: `smmla` on 2 rows x 2 columns x 8 channels (weights packed in octets);
//!   `neon-dotprod`: `sdot` by lane; `neon`: `smull` + `sadalp` (i16 products, i32 sums);
//! - `generic`: plain Rust.

use crate::cpu::Isa;
use crate::packing::{align_words, tasks, widx, Dests, Epilogue, LineAligned};
use crate::simd::{self, Simd, SimdOp};
use rayon::prelude::*;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Output columns per panel.
pub const NR: usize = crate::packing::NR;
/// Rows per register tile.
const MR: usize = 6;
/// Rows per parallel task (a multiple of the AMX kernel's 32-row blocks).
const MC: usize = 96;
/// Rows of a group of tasks that share weight panels (as in the bf16 products).
const SB_ROWS: usize = 768;
/// The largest quantized magnitude.
pub const QMAX: f32 = 127.0;

/// An int8 kernel: one per instruction-set extension with integer dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Plain Rust.
    Generic,
    /// AVX2: i16 widening, `vpmaddwd`.
    Avx2,
    /// AVX-VNNI: `vpdpbusd` on ymm.
    AvxVnni,
    /// AVX512_VNNI: `vpdpbusd` on zmm.
    Avx512Vnni,
    /// AMX-INT8: `tdpbssd` tiles.
    Amx,
    /// AArch64 Advanced SIMD: `smull` + `sadalp`.
    Neon,
    /// AArch64 FEAT_DotProd: `sdot`.
    NeonDot,
    /// AArch64 FEAT_I8MM: `smmla` (2 x 8 by 8 x 2 blocks; weights in octets).
    NeonI8mm,
}

/// How a kernel wants the packed weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WeightLayout {
    /// Per quad of channels, the 64 columns' 4 bytes in 1 KB blocks of 16 quads x 16 columns
    /// (`widx`).
    Quads,
    /// Per octet of channels, the 64 columns' 8 bytes in column order (`oidx`): a pair of
    /// columns' octets is one 16-byte `smmla` operand.
    Octets,
}

/// Word index of octet `o` (channels 8o..8o+7), column `c` (< NR), half `h` (channels
/// 8o+4h..) inside a panel of the octet layout.
#[inline(always)]
const fn oidx(o: usize, c: usize, h: usize) -> usize {
    o * 2 * NR + 2 * c + h
}

/// How a kernel wants the quantized activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Rows of `kq` words, 4 s8 each.
    S8,
    /// Rows of `kq` words, 4 u8 (`q + 128`) each.
    U8,
    /// Rows of `2 kq` words, 2 i16 each.
    S16,
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 8] = [
        Kernel::Generic,
        Kernel::Avx2,
        Kernel::AvxVnni,
        Kernel::Avx512Vnni,
        Kernel::Amx,
        Kernel::Neon,
        Kernel::NeonDot,
        Kernel::NeonI8mm,
    ];

    /// The name logs and `emcoder cpu` use.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Generic => "generic (i32 sums)",
            Kernel::Avx2 => "avx2 (i16 widening, vpmaddwd)",
            Kernel::AvxVnni => "avx-vnni (vpdpbusd ymm)",
            Kernel::Avx512Vnni => "avx512-vnni (vpdpbusd zmm)",
            Kernel::Amx => "amx-int8 (tdpbssd tiles)",
            Kernel::Neon => "neon (smull + sadalp)",
            Kernel::NeonDot => "neon-dotprod (sdot)",
            Kernel::NeonI8mm => "neon-i8mm (smmla)",
        }
    }

    /// A kernel by the first word of its name (`generic`, `avx2`, `avx-vnni`, `avx512-vnni`,
    /// `amx-int8`, `neon`, `neon-dotprod`).
    pub fn parse(s: &str) -> Option<Kernel> {
        let s = s.trim().to_ascii_lowercase();
        Kernel::ALL
            .into_iter()
            .find(|k| k.name().split(' ').next() == Some(s.as_str()))
    }

    /// The level whose vectors quantize the activations and finish the outputs.
    pub fn level(self) -> Isa {
        match self {
            Kernel::Generic => Isa::Generic,
            Kernel::Avx2 | Kernel::AvxVnni => Isa::Avx2,
            Kernel::Avx512Vnni => Isa::Avx512,
            Kernel::Amx => Isa::Amx,
            Kernel::Neon | Kernel::NeonDot | Kernel::NeonI8mm => Isa::Neon,
        }
    }

    /// True when this CPU (and OS, for AMX) runs the kernel. Asks the OS for the AMX tile
    /// state when asked about `Amx`.
    pub fn runs_here(self) -> bool {
        self.cpu_has() && (self != Kernel::Amx || crate::cpu::request_amx())
    }

    /// True when this CPU has the kernel's level and instructions (for AMX, without asking
    /// the OS for the tile state).
    fn cpu_has(self) -> bool {
        let f = crate::cpu::caps().int8;
        self.level().runs_here()
            && match self {
                Kernel::AvxVnni => f.avx_vnni,
                Kernel::Avx512Vnni => f.avx512_vnni,
                Kernel::Amx => f.amx_int8,
                Kernel::NeonDot => f.dotprod,
                Kernel::NeonI8mm => f.i8mm,
                _ => true,
            }
    }

    /// The kernel the int8 products run at level `isa` on this CPU: the best integer
    /// dot-product instructions the level allows. `Amx` where the CPU and OS have AMX-INT8;
    /// the process asks the OS for the tile state only when it runs an AMX product (a
    /// caller that wants no surprise asks first with [`crate::cpu::request_amx`] and takes
    /// the `avx512-bf16` level's kernel when refused).
    pub fn for_isa(isa: Isa) -> Kernel {
        // `EMCODER_INT8=<kernel>` (e.g. `avx2` on a VNNI machine, to measure the kernel a
        // CPU without VNNI runs): honoured when that kernel runs here at this level.
        if let Some(k) = crate::cpu::caps()
            .int8_requested
            .as_deref()
            .and_then(Kernel::parse)
        {
            if k.cpu_has() && k.level() <= isa {
                return k;
            }
        }
        let f = crate::cpu::caps().int8;
        let x86 = |zmm: bool| {
            if zmm && f.avx512_vnni {
                Kernel::Avx512Vnni
            } else if f.avx_vnni {
                Kernel::AvxVnni
            } else {
                Kernel::Avx2
            }
        };
        match isa {
            Isa::Generic => Kernel::Generic,
            Isa::Avx2 => x86(false),
            Isa::Avx512 | Isa::Avx512Bf16 => x86(true),
            Isa::Amx if f.amx_int8 => Kernel::Amx,
            Isa::Amx => x86(true),
            Isa::Neon | Isa::NeonBf16 if f.i8mm => Kernel::NeonI8mm,
            Isa::Neon | Isa::NeonBf16 if f.dotprod => Kernel::NeonDot,
            Isa::Neon | Isa::NeonBf16 => Kernel::Neon,
        }
    }

    /// Every kernel this CPU runs.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.runs_here()).collect()
    }

    fn layout(self) -> Layout {
        match self {
            Kernel::AvxVnni | Kernel::Avx512Vnni => Layout::U8,
            Kernel::Avx2 => Layout::S16,
            _ => Layout::S8,
        }
    }

    /// How the kernel wants the weights.
    fn weights(self) -> WeightLayout {
        match self {
            Kernel::NeonI8mm => WeightLayout::Octets,
            _ => WeightLayout::Quads,
        }
    }

    #[track_caller]
    fn check(self) {
        assert!(
            self.runs_here(),
            "the {} int8 kernel cannot run on this CPU",
            self.name()
        );
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Quads of input channels per row: `ceil(k / 4)` padded to a multiple of 16 (at least 16):
/// zero quads add exactly 0.
pub fn quads(k: usize) -> usize {
    k.div_ceil(4).div_ceil(16).max(1) * 16
}

/// The scale of a row and the factor that quantizes it: `(amax / 127, 127 / amax)`;
/// `(1, 0)` for a row of zeros or of subnormal values only (where `127 / amax` would
/// overflow), `None` when the row holds NaN or infinity.
#[inline]
pub fn row_scale(amax: f32, finite: bool) -> Option<(f32, f32)> {
    if !finite {
        None
    } else if amax < f32::MIN_POSITIVE {
        Some((1.0, 0.0))
    } else {
        Some((amax / QMAX, QMAX / amax))
    }
}

/// One value quantized with the factor `inv` of its row.
#[inline]
pub fn quantize_value(x: f32, inv: f32) -> i8 {
    (x * inv).round_ties_even().clamp(-QMAX, QMAX) as i8
}

/// Quantizes `r` into `q` (same length); returns the scale, `None` (and zeros) when `r`
/// holds NaN or infinity. The definition every kernel's activation quantizer matches.
pub fn quantize_row(r: &[f32], q: &mut [i8]) -> Option<f32> {
    let (amax, finite) = amax_scalar(r);
    match row_scale(amax, finite) {
        Some((scale, inv)) => {
            for (o, &x) in q.iter_mut().zip(r) {
                *o = quantize_value(x, inv);
            }
            Some(scale)
        }
        None => {
            q.fill(0);
            None
        }
    }
}

/// Quantizes the rows of `w` ((n, k) row-major f32: a weight or an embedding table) per
/// row: `(q (n, k) row-major, scales (n,))`. Refuses NaN and infinity (which int8 cannot
/// hold) with the first offending row.
pub fn quantize_rows(w: &[f32], n: usize, k: usize) -> Result<(Vec<i8>, Vec<f32>), String> {
    assert!(w.len() >= n * k, "quantize_rows: input too small");
    let mut q = Vec::new();
    q.try_reserve_exact(n * k).map_err(|_| {
        format!(
            "out of memory: {:.1} MB for int8 weights could not be allocated",
            (n * k) as f64 / 1e6
        )
    })?;
    q.resize(n * k, 0i8);
    let mut scales = vec![0.0f32; n];
    let bad = std::sync::atomic::AtomicUsize::new(usize::MAX);
    if k > 0 {
        q.par_chunks_mut(k)
            .zip(scales.par_iter_mut())
            .enumerate()
            .for_each(
                |(j, (qr, s))| match quantize_row(&w[j * k..(j + 1) * k], qr) {
                    Some(v) => *s = v,
                    None => {
                        bad.fetch_min(j, std::sync::atomic::Ordering::Relaxed);
                    }
                },
            );
    } else {
        scales.fill(1.0);
    }
    match bad.into_inner() {
        usize::MAX => Ok((q, scales)),
        j => Err(format!(
            "row {j} holds NaN or infinite values, which int8 cannot represent"
        )),
    }
}

/// An (n, k) weight quantized and packed for the kernels, with its per-column scales.
#[derive(Clone, Debug)]
pub struct PackedI8 {
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    kq: usize,
    panels: usize,
    layout: WeightLayout,
    data: LineAligned,
    /// Scale of each output column, padded with zeros to whole panels.
    scale: Vec<f32>,
    /// `-128 * sum_c q[j][c]` per column (padded): where the u8 kernels' sums start.
    comp: Vec<i32>,
}

/// One part of a stacked weight: `(q (n_i, k) row-major, scales (n_i,), n_i)`.
pub type QuantPart<'a> = (&'a [i8], &'a [f32], usize);

impl PackedI8 {
    /// Quantizes `w` ((n, k) row-major f32, an `nn.Linear` weight) and packs it for
    /// `kernel`.
    pub fn quantize(w: &[f32], n: usize, k: usize, kernel: Kernel) -> Result<Self, String> {
        let (q, s) = quantize_rows(w, n, k)?;
        Self::pack_parts(&[(&q, &s, n)], k, kernel)
    }

    /// Packs already quantized weights of the same input width stacked by output rows (q, k
    /// and v as one (3d, d) product) for `kernel` (the layout is the same for every kernel
    /// but `neon-i8mm`'s). Errors when the memory cannot be had or `k` is too large for
    /// exact i32 sums.
    pub fn pack_parts(parts: &[QuantPart], k: usize, kernel: Kernel) -> Result<Self, String> {
        let layout = kernel.weights();
        // |sum| <= 255 * 127 * k for the u8 kernels: exact in i32 below this.
        if k > (i32::MAX as usize) / (255 * 127) {
            return Err(format!(
                "{k} input channels are too many for exact int8 sums in i32 (at most {})",
                (i32::MAX as usize) / (255 * 127)
            ));
        }
        for (q, s, n) in parts {
            assert!(
                q.len() >= n * k && s.len() >= *n,
                "PackedI8::pack_parts: part too small"
            );
        }
        let n: usize = parts.iter().map(|p| p.2).sum();
        let kq = quads(k);
        let panels = n.div_ceil(NR);
        let words = panels * kq * NR;
        let mut data = LineAligned::try_zeroed(words).ok_or_else(|| {
            format!(
                "out of memory: {:.1} MB for int8 weights ({n} x {k}) could not be allocated",
                words as f64 * 4e-6
            )
        })?;
        let row_of = |col: usize| -> (&[i8], f32) {
            let mut c = col;
            for (q, s, ni) in parts {
                if c < *ni {
                    return (&q[c * k..(c + 1) * k], s[c]);
                }
                c -= ni;
            }
            unreachable!("column {col} beyond {n}")
        };
        let mut scale = vec![0.0f32; panels * NR];
        let mut comp = vec![0i32; panels * NR];
        for j in 0..n {
            let (r, s) = row_of(j);
            scale[j] = s;
            comp[j] = -128 * r.iter().map(|&v| v as i32).sum::<i32>();
        }
        data.words_mut()
            .par_chunks_mut(kq * NR)
            .enumerate()
            .for_each(|(pi, panel)| {
                for j in 0..NR.min(n - pi * NR) {
                    let (r, _) = row_of(pi * NR + j);
                    for (q, quad) in r.chunks(4).enumerate() {
                        let mut b = [0u8; 4];
                        for (o, &v) in b.iter_mut().zip(quad) {
                            *o = v as u8;
                        }
                        let at = match layout {
                            WeightLayout::Quads => widx(q, j),
                            WeightLayout::Octets => oidx(q / 2, j, q % 2),
                        };
                        panel[at] = u32::from_le_bytes(b);
                    }
                }
            });
        Ok(PackedI8 {
            n,
            k,
            kq,
            panels,
            layout,
            data,
            scale,
            comp,
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.words().len() * 4 + self.scale.len() * 8
    }

    /// The quantized weight of column `col`, channel `ch`.
    pub fn q(&self, col: usize, ch: usize) -> i8 {
        let at = match self.layout {
            WeightLayout::Quads => widx(ch / 4, col % NR),
            WeightLayout::Octets => oidx(ch / 8, col % NR, (ch / 4) % 2),
        };
        let word = self.data.words()[(col / NR) * self.kq * NR + at];
        word.to_le_bytes()[ch % 4] as i8
    }

    /// The scale of column `col`.
    pub fn scale(&self, col: usize) -> f32 {
        self.scale[col]
    }
}

/// Rows of the quantized activations: `m` padded with zero rows to whole 32-row blocks.
fn padded_rows(m: usize) -> usize {
    m.div_ceil(32) * 32
}

fn row_words(kernel: Kernel, kq: usize) -> usize {
    match kernel.layout() {
        Layout::S16 => 2 * kq,
        _ => kq,
    }
}

/// The u32 words of `xq` that [`quantize_activations`] uses for `m` rows of `k` channels
/// with `kernel`: reserve this much beforehand (fallibly) and quantizing allocates nothing.
pub fn activation_words(m: usize, k: usize, kernel: Kernel) -> usize {
    padded_rows(m) * row_words(kernel, quads(k)) + 16
}

/// Quantizes activations `x` (m, k) per row for `kernel`: the values into `xq` (grown as
/// needed; rows in the kernel's layout, starting on a cache line), the scales into `sa`
/// (`m` values; NaN for a row holding NaN or infinity).
pub fn quantize_activations(
    xq: &mut Vec<u32>,
    sa: &mut Vec<f32>,
    x: &[f32],
    m: usize,
    k: usize,
    kernel: Kernel,
) {
    assert!(x.len() >= m * k, "quantize_activations: input too small");
    let (xq, rw) = prepare(xq, sa, m, k, kernel);
    if m == 0 {
        return;
    }
    let (layout, level) = (kernel.layout(), kernel.level());
    xq[..m * rw]
        .par_chunks_mut(rw)
        .zip(sa.par_iter_mut())
        .enumerate()
        .for_each(|(i, (o, s))| {
            let r = &x[i * k..(i + 1) * k];
            // SAFETY: the kernel's level runs here (checked above).
            *s = unsafe { quantize_into(o, r, layout, level) };
        });
}

/// The activation buffers of `m` rows of `k` channels for `kernel`: `xq` grown to hold them
/// (from a cache line on; the padding rows zeroed), `sa` to `m` scales. Returns the rows'
/// words and the words per row.
fn prepare<'a>(
    xq: &'a mut Vec<u32>,
    sa: &mut Vec<f32>,
    m: usize,
    k: usize,
    kernel: Kernel,
) -> (&'a mut [u32], usize) {
    kernel.level().assert_runs_here();
    let rw = row_words(kernel, quads(k));
    let len = padded_rows(m) * rw;
    if xq.len() < len + 16 {
        xq.reserve_exact(len + 16 - xq.len());
        xq.resize(len + 16, 0);
    }
    sa.clear();
    sa.resize(m, 0.0);
    let off = align_words(xq.as_ptr());
    let xq = &mut xq[off..off + len];
    xq[m * rw..].fill(0);
    (xq, rw)
}

/// [`quantize_activations`] of rows made on the fly: `row(i, buf)` writes row `i` (`k`
/// values) into `buf`, which is quantized while it is in cache, so the f32 rows never go to
/// memory (an RMSNorm or a SwiGLU fused with the quantization). The same bytes and scales
/// as making every row first and quantizing them then. `buf` is one buffer of `k` floats
/// per parallel split (a few per call).
pub fn quantize_activations_with(
    xq: &mut Vec<u32>,
    sa: &mut Vec<f32>,
    m: usize,
    k: usize,
    kernel: Kernel,
    row: impl Fn(usize, &mut [f32]) + Sync,
) {
    let (xq, rw) = prepare(xq, sa, m, k, kernel);
    if m == 0 {
        return;
    }
    let (layout, level) = (kernel.layout(), kernel.level());
    xq[..m * rw]
        .par_chunks_mut(rw)
        .zip(sa.par_iter_mut())
        .enumerate()
        .for_each_init(
            || vec![0.0f32; k],
            |buf, (i, (o, s))| {
                row(i, buf);
                // SAFETY: the kernel's level runs here (checked above).
                *s = unsafe { quantize_into(o, buf, layout, level) };
            },
        );
}

/// One row: `o` (the row's words) from `r`; returns the scale (NaN: not finite).
///
/// # Safety
/// `level` runs here.
unsafe fn quantize_into(o: &mut [u32], r: &[f32], layout: Layout, level: Isa) -> f32 {
    let (amax, finite) = match level {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => x86::amax_avx512(r),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::amax_avx2(r),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonBf16 => neon::amax(r),
        _ => amax_scalar(r),
    };
    let bytes: &mut [u8] = std::slice::from_raw_parts_mut(o.as_mut_ptr() as *mut u8, o.len() * 4);
    let Some((scale, inv)) = row_scale(amax, finite) else {
        // Zeros in the kernel's encoding (u8: 128), and a NaN scale.
        bytes.fill(if layout == Layout::U8 { 0x80 } else { 0 });
        return f32::NAN;
    };
    #[allow(unused_mut)]
    let mut done = 0;
    match level {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
            done = x86::quantize_avx512(bytes, r, inv, layout);
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => done = x86::quantize_avx2(bytes, r, inv, layout),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonBf16 if layout == Layout::S8 => done = neon::quantize(bytes, r, inv),
        _ => {}
    }
    let k = r.len();
    match layout {
        Layout::S16 => {
            for (c, &x) in r.iter().enumerate().skip(done) {
                let v = quantize_value(x, inv) as i16;
                bytes[2 * c..2 * c + 2].copy_from_slice(&v.to_le_bytes());
            }
            bytes[2 * k..].fill(0);
        }
        Layout::S8 => {
            for (c, &x) in r.iter().enumerate().skip(done) {
                bytes[c] = quantize_value(x, inv) as u8;
            }
            bytes[k..].fill(0);
        }
        Layout::U8 => {
            for (c, &x) in r.iter().enumerate().skip(done) {
                bytes[c] = (quantize_value(x, inv) as u8) ^ 0x80;
            }
            // Padding channels meet zero weights: any value adds 0.
            bytes[k..].fill(0x80);
        }
    }
    scale
}

/// `(max |x|, all finite)` of a row, in plain Rust.
fn amax_scalar(r: &[f32]) -> (f32, bool) {
    let mut amax = 0.0f32;
    let mut finite = true;
    for &x in r {
        let a = x.abs();
        finite &= a <= f32::MAX;
        amax = if a > amax { a } else { amax };
    }
    (amax, finite)
}

/// Activations quantized by [`quantize_activations`] (shared by the products of one input).
pub struct QuantActivations<'a> {
    xq: &'a [u32],
    sa: &'a [f32],
    m: usize,
    k: usize,
    kernel: Kernel,
}

impl<'a> QuantActivations<'a> {
    /// Wraps `xq` and `sa` holding `m` rows of `k` channels quantized for `kernel`.
    pub fn new(xq: &'a [u32], sa: &'a [f32], m: usize, k: usize, kernel: Kernel) -> Self {
        let off = align_words(xq.as_ptr());
        assert!(
            xq.len() >= off + padded_rows(m) * row_words(kernel, quads(k)) && sa.len() >= m,
            "QuantActivations: buffer too small"
        );
        QuantActivations {
            xq: &xq[off..],
            sa,
            m,
            k,
            kernel,
        }
    }
}

/// `out (m, n) = x (m, k) · W^T (+ bias)` with `W` quantized and packed; `xq` and `sa` are
/// scratch for the quantized activations. Runs on the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn linear_i8(
    out: &mut [f32],
    x: &[f32],
    w: &PackedI8,
    bias: Option<&[f32]>,
    m: usize,
    xq: &mut Vec<u32>,
    sa: &mut Vec<f32>,
    kernel: Kernel,
) {
    assert!(
        out.len() >= m * w.n && x.len() >= m * w.k,
        "linear_i8: buffer too small"
    );
    if m == 0 || w.n == 0 {
        return;
    }
    quantize_activations(xq, sa, x, m, w.k, kernel);
    let a = QuantActivations::new(xq, sa, m, w.k, kernel);
    linear_i8_packed_into(&mut [out], &a, w, bias, None);
}

/// [`linear_i8`] on activations quantized beforehand, with the output columns split over
/// `outs` (widths in column order summing to `n`: q, k and v of a fused product) and an
/// optional epilogue on each finished piece of a row (columns counted across all outputs).
pub fn linear_i8_packed_into(
    outs: &mut [&mut [f32]],
    a: &QuantActivations,
    w: &PackedI8,
    bias: Option<&[f32]>,
    epilogue: Option<Epilogue>,
) {
    let (n, m, kernel) = (w.n, a.m, a.kernel);
    assert_eq!(
        a.k, w.k,
        "linear_i8: activations have {} channels, weights {}",
        a.k, w.k
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear_i8: bias length");
    }
    kernel.check();
    assert_eq!(
        w.layout,
        kernel.weights(),
        "linear_i8: the weights were packed for another kernel than {kernel}"
    );
    if m == 0 || n == 0 {
        return;
    }
    let dst = Dests::new(outs, m, n);
    let dst = &dst;
    let (kq, rw) = (w.kq, row_words(kernel, w.kq));
    let level = kernel.level();
    tasks(m, w.panels, MC, SB_ROWS)
        .into_par_iter()
        .for_each(|(rb, pi)| {
            let r0 = rb * MC;
            let rows = MC.min(m - r0);
            let panel = &w.data.words()[pi * kq * NR..(pi + 1) * kq * NR];
            let c0 = pi * NR;
            let cols = NR.min(n - c0);
            let mut bias_p = [0.0f32; NR];
            if let Some(b) = bias {
                bias_p[..cols].copy_from_slice(&b[c0..c0 + cols]);
            }
            let sw: &[f32; NR] = w.scale[c0..c0 + NR].try_into().expect("padded scales");
            let comp: &[i32; NR] = w.comp[c0..c0 + NR].try_into().expect("padded sums");
            // A row's i32 sums: scales and bias, the epilogue, then into the outputs.
            let finish = |row: usize, acc: &[i32; NR]| {
                assert!((r0..r0 + rows).contains(&row));
                let op = FinishRow {
                    acc,
                    sw,
                    sa: a.sa[row],
                    bias: &bias_p,
                    epilogue,
                    dst,
                    row,
                    c0,
                    cols,
                };
                // SAFETY: the kernel's level runs here (checked above); row < m and columns
                // c0..c0+cols < n are inside the outputs, and this (row block, panel) pair
                // belongs to this task alone.
                unsafe { simd::dispatch(level, op) };
            };
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Amx {
                let mut buf = [0i32; 32 * NR];
                // SAFETY: `check` made sure the OS granted the tile state; the configuration is
                // this thread's until released below.
                unsafe { crate::packing::amx::configure() };
                let mut r = 0;
                while r < rows {
                    // SAFETY: the activations hold whole 32-row blocks (padded) of `kq` words
                    // per row; the panel holds `kq` x 64 words.
                    unsafe {
                        crate::packing::amx::block(
                            buf.as_mut_ptr() as *mut u32,
                            a.xq[(r0 + r) * rw..].as_ptr(),
                            crate::packing::amx::ATiles::Rows { words: kq },
                            panel.as_ptr(),
                            kq,
                            crate::packing::amx::Dot::Int8,
                        )
                    };
                    for i in 0..32.min(rows - r) {
                        let acc: &[i32; NR] = buf[i * NR..(i + 1) * NR].try_into().expect("row");
                        finish(r0 + r + i, acc);
                    }
                    r += 32;
                }
                // SAFETY: releases this thread's tile state.
                unsafe { crate::packing::amx::release() };
                return;
            }
            let mut r = 0;
            while r < rows {
                let mr = MR.min(rows - r);
                let at = &a.xq[(r0 + r) * rw..(r0 + r + mr) * rw];
                let mut tile = [[0i32; NR]; MR];
                tile_kernel(&mut tile, at, panel, kq, mr, comp, kernel);
                for (i, t) in tile.iter().take(mr).enumerate() {
                    finish(r0 + r + i, t);
                }
                r += mr;
            }
        });
}

/// One MR x NR tile of i32 sums: `tile[i][j] = sum_c qa[i][c] qw[j][c]` for `i < mr`
/// (`a`: `mr` rows in the kernel's layout; `comp`: the u8 kernels' starting sums).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn tile_kernel(
    tile: &mut [[i32; NR]; MR],
    a: &[u32],
    panel: &[u32],
    kq: usize,
    mr: usize,
    comp: &[i32; NR],
    kernel: Kernel,
) {
    debug_assert!(a.len() >= mr * row_words(kernel, kq) && panel.len() >= kq * NR);
    match kernel {
        // SAFETY (each arm): the kernel runs here (checked by the product); `a` holds `mr`
        // rows of the kernel's layout and the panel `kq` x 64 words (asserted above).
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => unsafe { x86::tile_vnni512(tile, a, panel, kq, mr, comp) },
        #[cfg(target_arch = "x86_64")]
        Kernel::AvxVnni => unsafe { x86::tile_vnni256(tile, a, panel, kq, mr, comp) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86::tile_avx2(tile, a, panel, kq, mr) },
        #[cfg(target_arch = "aarch64")]
        Kernel::NeonDot => unsafe { neon::tile_dot(tile, a, panel, kq, mr) },
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => unsafe { neon::tile_widen(tile, a, panel, kq, mr) },
        #[cfg(target_arch = "aarch64")]
        Kernel::NeonI8mm => unsafe { neon::tile_mmla(tile, a, panel, kq, mr) },
        _ => tile_generic(tile, a, panel, kq, mr),
    }
}

/// The plain Rust tile (S8 activations).
fn tile_generic(tile: &mut [[i32; NR]; MR], a: &[u32], panel: &[u32], kq: usize, mr: usize) {
    for (i, row) in tile.iter_mut().take(mr).enumerate() {
        *row = [0; NR];
        for q in 0..kq {
            let x = a[i * kq + q].to_le_bytes().map(|b| b as i8 as i32);
            if x == [0; 4] {
                continue;
            }
            for (j, acc) in row.iter_mut().enumerate() {
                let w = panel[widx(q, j)].to_le_bytes().map(|b| b as i8 as i32);
                *acc += x[0] * w[0] + x[1] * w[1] + x[2] * w[2] + x[3] * w[3];
            }
        }
    }
}

/// One finished row: `vals[j] = (f32(acc[j]) * sw[j]) * sa + bias[j]` (the same
/// operations in the same order on every level: no fused multiply-add), the epilogue, then
/// the columns `c0..c0 + cols` of `row` into the outputs with vector stores (a `memmove`
/// call per piece cost 8% of the int8 forward).
struct FinishRow<'a, 'e> {
    acc: &'a [i32; NR],
    sw: &'a [f32; NR],
    sa: f32,
    bias: &'a [f32; NR],
    epilogue: Option<Epilogue<'e>>,
    dst: &'a Dests,
    row: usize,
    c0: usize,
    cols: usize,
}

impl SimdOp for FinishRow<'_, '_> {
    type Output = ();
    /// # Safety
    /// As [`Dests::store`]: `row` and the columns are inside the outputs and this task's.
    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let mut vals = [0.0f32; NR];
        let sa = S::splat(self.sa);
        let (o, acc, sw, b) = (
            vals.as_mut_ptr(),
            self.acc.as_ptr(),
            self.sw.as_ptr(),
            self.bias.as_ptr(),
        );
        for c in (0..NR).step_by(S::LANES) {
            let v = S::mul(S::load_i32(acc.add(c)), S::load(sw.add(c)));
            S::store(o.add(c), S::add(S::mul(v, sa), S::load(b.add(c))));
        }
        let vals = &mut vals[..self.cols];
        if let Some(e) = self.epilogue {
            e(self.row, self.c0, vals);
        }
        for (out, r) in self.dst.pieces(self.row, self.c0, vals.len()) {
            let v = &vals[r];
            let nv = v.len() / S::LANES * S::LANES;
            for i in (0..nv).step_by(S::LANES) {
                S::store(out.add(i), S::load(v.as_ptr().add(i)));
            }
            for (i, x) in v.iter().enumerate().skip(nv) {
                *out.add(i) = *x;
            }
        }
    }
}

/// Scalar reference: each row quantized by [`quantize_row`], sums in i64, the same f32
/// operations after them.
pub fn reference_linear_i8(
    out: &mut [f32],
    x: &[f32],
    w: &PackedI8,
    bias: Option<&[f32]>,
    m: usize,
) {
    let (n, k) = (w.n, w.k);
    let mut q = vec![0i8; k];
    for i in 0..m {
        let sa = quantize_row(&x[i * k..(i + 1) * k], &mut q).unwrap_or(f32::NAN);
        for j in 0..n {
            let s: i64 = (0..k).map(|c| q[c] as i64 * w.q(j, c) as i64).sum();
            let v = (s as i32 as f32 * w.scale(j)) * sa;
            out[i * n + j] = v + bias.map_or(0.0, |b| b[j]);
        }
    }
}
