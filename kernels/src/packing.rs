//! What the packed products (bf16 and int8) share: the panel layout of the weights, cache-line
//! aligned buffers, the outputs a product's columns go to, the epilogue type, and the AMX
//! tile configuration.

use crate::out_ptr::OutPtr;

/// Output columns per weight panel.
pub const NR: usize = 64;

/// Words to skip from `p` to the next 64-byte (cache line) boundary.
pub(crate) fn align_words(p: *const u32) -> usize {
    ((64 - (p as usize) % 64) % 64) / 4
}

/// `len` zeroed words starting on a cache line (tiles and vectors never straddle lines).
#[derive(Debug)]
pub(crate) struct LineAligned {
    buf: Vec<u32>,
    off: usize,
    len: usize,
}

impl LineAligned {
    /// `None` when the memory cannot be had (never an abort).
    pub(crate) fn try_zeroed(len: usize) -> Option<Self> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(len.checked_add(16)?).ok()?;
        buf.resize(len + 16, 0u32);
        let off = align_words(buf.as_ptr());
        Some(LineAligned { buf, off, len })
    }
    pub(crate) fn words(&self) -> &[u32] {
        &self.buf[self.off..self.off + self.len]
    }
    pub(crate) fn words_mut(&mut self) -> &mut [u32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl Clone for LineAligned {
    fn clone(&self) -> Self {
        let mut c =
            LineAligned::try_zeroed(self.len).expect("out of memory cloning packed weights");
        c.words_mut().copy_from_slice(self.words());
        c
    }
}

/// Word index of row `p` (a bf16 pair or an int8 quad of input channels), column `c` (< NR)
/// inside a panel. The panel is stored in 16-row x 16-column blocks of 1 KB (block
/// (p/16, c/16), rows-major inside), so that every AMX B tile is one contiguous block; the
/// AVX-512 kernels read the 4 column blocks of a row (16 columns each).
#[inline(always)]
pub(crate) const fn widx(p: usize, c: usize) -> usize {
    ((p / 16) * (NR / 16) + c / 16) * 256 + (p % 16) * 16 + c % 16
}

/// An epilogue run on each finished piece of an output row before it is stored:
/// `(row, first column, values)`, columns counted across all outputs of the product.
pub type Epilogue<'e> = &'e (dyn Fn(usize, usize, &mut [f32]) + Sync);

/// Where the columns of a product go: consecutive column ranges to separate (m, n_i)
/// row-major buffers (q, k and v of one fused product).
pub(crate) struct Dests {
    pub(crate) parts: Vec<(OutPtr, usize, usize)>, // (buffer, first column, width)
}

impl Dests {
    /// The outputs of a product of `m` rows and `n` columns: one (m, n) buffer, or several
    /// whose widths (`len / m`) sum to `n`, in column order. Panics when they do not fit.
    pub(crate) fn new(outs: &mut [&mut [f32]], m: usize, n: usize) -> Self {
        if outs.len() == 1 {
            assert!(outs[0].len() >= m * n, "linear product: output too small");
            return Dests {
                parts: vec![(OutPtr(outs[0].as_mut_ptr()), 0, n)],
            };
        }
        let mut parts = Vec::with_capacity(outs.len());
        let mut start = 0;
        for o in outs.iter_mut() {
            let width = o.len() / m;
            assert!(width > 0, "linear product: empty output part");
            parts.push((OutPtr(o.as_mut_ptr()), start, width));
            start += width;
        }
        assert_eq!(start, n, "linear product: output widths do not sum to {n}");
        Dests { parts }
    }

    /// Where `len` values at the columns `c0..` of `row` go: per output part they fall in,
    /// `(the first element's address, the range of the values that go there)`. The
    /// addresses are only computed here; writing through them is the caller's (unsafe) job.
    pub(crate) fn pieces(
        &self,
        row: usize,
        c0: usize,
        len: usize,
    ) -> impl Iterator<Item = (*mut f32, std::ops::Range<usize>)> + '_ {
        self.parts.iter().filter_map(move |&(ptr, start, width)| {
            let (lo, hi) = (c0.max(start), (c0 + len).min(start + width));
            (lo < hi).then(|| {
                let at = ptr.ptr().wrapping_add(row * width + (lo - start));
                (at, lo - c0..hi - c0)
            })
        })
    }

    /// Stores `vals`, the columns `c0..` of `row`, into the buffers that own them.
    ///
    /// # Safety
    /// Every part's buffer holds at least `m` rows of its width, `row < m`, and no other
    /// task writes these elements.
    pub(crate) unsafe fn store(&self, row: usize, c0: usize, vals: &[f32]) {
        for (at, r) in self.pieces(row, c0, vals.len()) {
            // An inlined vector copy: a memmove call per 64-float piece cost 13% of bf16 time.
            let o = std::slice::from_raw_parts_mut(at, r.len());
            for (o, x) in o.iter_mut().zip(&vals[r]) {
                *o = *x;
            }
        }
    }
}

/// The tasks of a packed product of `m` rows over `panels` weight panels: `(row block of
/// `mc` rows, panel)`. Row blocks are grouped so that a group's activations stay in L2
/// (`group_rows` rows), and within a group the order is panel by panel, so that each weight
/// panel is read once per group (row block-major order re-read every panel per block: 3.4 MB
/// of q|k|v panels do not stay in L2).
pub(crate) fn tasks(m: usize, panels: usize, mc: usize, group_rows: usize) -> Vec<(usize, usize)> {
    let rbs = m.div_ceil(mc);
    let per_group = (group_rows / mc).max(1);
    (0..rbs.div_ceil(per_group))
        .flat_map(|g| {
            let rb = g * per_group..((g + 1) * per_group).min(rbs);
            (0..panels).flat_map(move |pi| rb.clone().map(move |rb| (rb, pi)))
        })
        .collect()
}

/// The AMX tile configuration both packed products use.
#[cfg(target_arch = "x86_64")]
pub(crate) mod amx {
    use std::arch::asm;

    /// Loads the tile configuration: 8 tiles of 16 rows x 64 bytes.
    ///
    /// # Safety
    /// The CPU has AMX and the OS granted this process the tile state.
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
    ///
    /// # Safety
    /// As [`configure`].
    pub unsafe fn release() {
        asm!("tilerelease", options(nostack, nomem));
    }

    /// The tile product.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Dot {
        /// `tdpbf16ps`: bf16 pairs, f32 sums.
        Bf16,
        /// `tdpbssd`: s8 quads, i32 sums.
        Int8,
    }

    /// Where the A tiles (16 rows x 64 bytes) of a 32-row block are.
    #[derive(Clone, Copy)]
    pub enum ATiles {
        /// Per step of 16 words of k, rows 0-15 then 16-31, each a contiguous 1 KB tile (the
        /// bf16 activations' layout).
        Blocked,
        /// Row-major rows of `words` words (the int8 activations).
        Rows {
            /// Words per row.
            words: usize,
        },
    }

    /// `out (32 x 64 four-byte sums, row-major) = A (32 rows) x panel (kw x 64 words, in the
    /// 1 KB blocks of [`super::widx`])`, `kw` a multiple of 16.
    /// tmm0..3: C (rows 0-15 | 16-31) x (columns 0-15 | 16-31) of one 32-column half;
    /// tmm4/5: A rows 0-15 / 16-31; tmm6/7: B columns 0-15 / 16-31 (contiguous blocks).
    ///
    /// # Safety
    /// As [`configure`], and configured; the CPU has the product (AMX-BF16 or AMX-INT8); `out`
    /// holds 32 x 64 elements; `a` holds the block's A tiles as `at` says for `kw` words of
    /// k; `panel` holds `kw * 64` words.
    pub unsafe fn block(
        out: *mut u32,
        a: *const u32,
        at: ATiles,
        panel: *const u32,
        kw: usize,
        dot: Dot,
    ) {
        let (step, half_rows, a_stride) = match at {
            ATiles::Blocked => (512, 256, 64),
            ATiles::Rows { words } => (16, 16 * words, words * 4),
        };
        let b_stride = 64usize; // 16 columns x 4 bytes: B tiles are contiguous
        let c_stride = super::NR * 4;
        for half in 0..2 {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            let mut q = 0;
            while q < kw {
                let a0 = a.add(q / 16 * step);
                let a1 = a0.add(half_rows);
                let b0 = panel.add(q * super::NR + half * 2 * 256);
                let b1 = b0.add(256);
                match dot {
                    Dot::Bf16 => asm!(
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
                    ),
                    Dot::Int8 => asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbssd tmm0, tmm4, tmm6",
                        "tdpbssd tmm1, tmm4, tmm7",
                        "tdpbssd tmm2, tmm5, tmm6",
                        "tdpbssd tmm3, tmm5, tmm7",
                        a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                        sa = in(reg) a_stride, sb = in(reg) b_stride,
                        options(nostack, readonly),
                    ),
                }
                q += 16;
            }
            let o = out.add(half * 32);
            asm!(
                "tilestored [{o0} + {s}*1], tmm0",
                "tilestored [{o1} + {s}*1], tmm1",
                "tilestored [{o2} + {s}*1], tmm2",
                "tilestored [{o3} + {s}*1], tmm3",
                o0 = in(reg) o, o1 = in(reg) o.add(16), o2 = in(reg) o.add(16 * super::NR),
                o3 = in(reg) o.add(16 * super::NR + 16),
                s = in(reg) c_stride,
                options(nostack),
            );
        }
    }
}
