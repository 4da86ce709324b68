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

    /// Stores `vals`, the columns `c0..` of `row`, into the buffers that own them.
    ///
    /// # Safety
    /// Every part's buffer holds at least `m` rows of its width, `row < m`, and no other
    /// task writes these elements.
    pub(crate) unsafe fn store(&self, row: usize, c0: usize, vals: &[f32]) {
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
}
