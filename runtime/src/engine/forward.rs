//! The forward pass over packed batches, with MC dropout folded into the rows.
//!
//! Stage A (once per text): embedding, embed norm and layer 0's attention, i.e. everything
//! before the first dropout site. Stage B (per chunk of (text, sample) sequences): layer 0's
//! dropout-residual, then the rest of the network with every sample's rows in the same
//! matrix products. Deterministic mode is the same code with one sample and no dropout.

use super::batch::{chunks, text_groups, Packing};
use super::stop::Stop;
use crate::error::{Error, Result};
use crate::model::{Config, FusedBf16, Layer, Linear, Weights};
use emcoder_kernels::activation::{gelu, gelu_tanh, swiglu};
use emcoder_kernels::attention::{self, attention_rows};
use emcoder_kernels::gemm_bf16::{
    activation_words, linear_bf16, linear_bf16_packed, linear_bf16_packed_into, pack_activations,
    Epilogue, PackedActivations,
};
use emcoder_kernels::gemm_f32::{self, linear_f32, linear_f32_parts, F32Epilogue, F32Part};
use emcoder_kernels::gemm_i8::{
    self, linear_i8, linear_i8_packed_into, PackedI8, QuantActivations,
};
use emcoder_kernels::norm::{rmsnorm, rmsnorm_inplace};
use emcoder_kernels::philox::{dropout_inplace, dropout_residual_add, DropoutSite};
use emcoder_kernels::rope::{rope_apply, rope_tables};
use emcoder_kernels::Isa;
use rayon::prelude::*;

thread_local! {
    /// Attention scratch of the current task, per worker thread: `attention::scratch_len`
    /// floats, a few tens of KB whatever the sequence length.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows per parallel task of the row-wise kernels.
const ROW_BLOCK: usize = 16;
/// Query rows per attention task (a multiple of every ISA's query block: 16 to 64 rows).
const ATT_BLOCK: usize = 64;

/// MC-dropout settings of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Seed of the counter-based masks.
    pub seed: u64,
    /// Drop probability.
    pub p: f32,
}

/// Hidden states of a deterministic pass, for golden tests (rows in text order).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// After the embed norm, (rows, d).
    pub embed: Vec<f32>,
    /// After each layer, (rows, d).
    pub layers: Vec<Vec<f32>>,
    /// After the final norm, (rows, d).
    pub final_norm: Vec<f32>,
    /// Pooled, (texts, d).
    pub pooled: Vec<f32>,
}

/// What the forward needs to run.
pub struct Forward<'a> {
    /// Hyper-parameters.
    pub cfg: &'a Config,
    /// Weights by role.
    pub w: &'a Weights,
    /// Largest number of rows processed at once (bounds scratch memory).
    pub max_rows: usize,
    /// The instruction-set level every kernel runs at.
    pub isa: Isa,
    /// The kernel of the int8 products (int8 precision).
    pub i8k: gemm_i8::Kernel,
}

/// Every buffer of a forward pass, reused across calls: a call only grows what it needs
/// (to exactly what it needs, fallibly) and never relies on contents. Once warm, a call
/// allocates only per-chunk bookkeeping proportional to its sequences and rows (packing
/// tables, task lists: a few bytes per row), never a buffer of activations.
#[derive(Default)]
pub struct Scratch {
    h0: Vec<f32>,
    a0: Vec<f32>,
    h: Vec<f32>,
    a: Vec<f32>,
    pooled: Vec<f32>,
    z1: Vec<f32>,
    z: Vec<f32>,
    attn: AttnScratch,
    ffn: FfnScratch,
    /// Operands of the matrix products.
    ops: Operands,
}

/// Per-call operand buffers of the matrix products.
#[derive(Default)]
struct Operands {
    /// bf16 activations of the packed products (int8: the quantized activations).
    xp: Vec<u32>,
    /// Row scales of the quantized activations (int8).
    sa: Vec<f32>,
    /// Transposed f32 activation panels of the f32 products.
    fp: Vec<f32>,
}

impl Scratch {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let f = [
            &self.h0,
            &self.a0,
            &self.h,
            &self.a,
            &self.pooled,
            &self.z1,
            &self.z,
            &self.attn.x,
            &self.attn.q,
            &self.attn.k,
            &self.attn.v,
            &self.attn.cos,
            &self.attn.sin,
            &self.ffn.x,
            &self.ffn.g,
            &self.ffn.u,
        ];
        f.iter().map(|v| v.capacity() * 4).sum::<usize>()
            + self.ops.xp.capacity() * 4
            + self.ops.sa.capacity() * 4
            + self.ops.fp.capacity() * 4
    }
}

/// The first `n` elements of `v`, growing it when shorter (new elements 0, old ones kept;
/// to exactly `n`, so capacities stay within [`scratch_bound`]). Running out of memory is
/// an error, not an abort.
fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> Result<&mut [T]> {
    if v.len() < n {
        reserve(v, n)?;
        v.resize(n, T::default());
    }
    Ok(&mut v[..n])
}

/// Capacity for `n` elements in `v` (exactly), fallibly.
fn reserve<T>(v: &mut Vec<T>, n: usize) -> Result<()> {
    if v.capacity() < n {
        v.try_reserve_exact(n - v.len()).map_err(|_| {
            Error::OutOfMemory(format!(
                "{:.1} MB of scratch memory could not be allocated: lower max_rows or the memory budget, or free memory",
                (n * std::mem::size_of::<T>()) as f64 / 1e6
            ))
        })?;
    }
    Ok(())
}

/// The most bytes a [`Scratch`] arena holds when no chunk has more than `rows` rows (the
/// engine's chunks have at most `max(max_rows, max_tokens)`: a text is never split):
/// `4 (rows (12 d + 2 f + labels + 2 max(d, f) + 34) + 64 max(d, f) + 1040)` for model
/// width `d` and feed-forward width `f`. Per row: the residual streams and stage A's copies
/// (4 d), pooling and the head (2 d + labels), attention's input, q, k, v and RoPE tables
/// (5 d), the feed-forward's input, gate and up (d + 2 f), and the product operands (the
/// f32 panels and the bf16 rows of the widest product, the latter padded by up to 33
/// words; int8 rows are at most half as wide, plus one scale per row); the constant covers the padding of the last panel and row block. The attention
/// kernel's own scratch is per worker thread and does not grow with the length
/// (`attention::scratch_len`).
pub fn scratch_bound(cfg: &Config, rows: usize) -> usize {
    let (d, f, l) = (cfg.d_model, cfg.d_ffn, cfg.num_labels);
    let wide = d.max(f);
    4 * (rows * (12 * d + 2 * f + l + 2 * wide + 34) + 64 * wide + 1040)
}

impl Forward<'_> {
    /// Several products of the same input (q, k, v; gate, up): in bf16 the input is
    /// rounded and packed once for all of them. In f32 they run as one pass, and
    /// `epilogue` (if any) runs on each finished piece of an output row; returns whether
    /// it ran (otherwise the caller applies it afterwards).
    fn linears<const N: usize>(
        &self,
        ops: &mut Operands,
        x: &[f32],
        m: usize,
        outs: [(&Linear, &mut [f32]); N],
        epilogue: Option<F32Epilogue>,
    ) -> Result<bool> {
        if outs.iter().all(|(l, _)| l.packed.is_some()) {
            let k = outs[0].0.in_dim;
            reserve(&mut ops.xp, activation_words(m, k, self.isa))?;
            pack_activations(&mut ops.xp, x, m, k, self.isa);
            let a = PackedActivations::new(&ops.xp, m, k, self.isa);
            for (lin, out) in outs {
                if let Some(p) = &lin.packed {
                    linear_bf16_packed(out, &a, p, lin.b.as_ref().map(|b| b.data()));
                }
            }
        } else if outs.iter().all(|(l, _)| l.packed.is_none()) {
            // f32: the input is packed once and all products run in one parallel pass.
            let k = outs[0].0.in_dim;
            reserve(&mut ops.fp, gemm_f32::scratch_len(m, k, self.isa))?;
            let mut parts: Vec<F32Part> = outs
                .into_iter()
                .map(|(lin, out)| {
                    (
                        out,
                        lin.w.data(),
                        lin.b.as_ref().map(|b| b.data()),
                        lin.out_dim,
                    )
                })
                .collect();
            linear_f32_parts(&mut parts, x, m, k, &mut ops.fp, self.isa, epilogue);
            return Ok(epilogue.is_some());
        } else {
            for (lin, out) in outs {
                self.linear(ops, out, x, lin, m)?;
            }
        }
        Ok(false)
    }

    /// One fused bf16 product (q|k|v, gate|up) of `x` (m rows) into `outs`, with an
    /// optional epilogue on each finished piece of a row.
    fn fused(
        &self,
        ops: &mut Operands,
        x: &[f32],
        m: usize,
        f: &FusedBf16,
        outs: &mut [&mut [f32]],
        epilogue: Option<Epilogue>,
    ) -> Result<()> {
        let k = f.packed.k;
        reserve(&mut ops.xp, activation_words(m, k, self.isa))?;
        pack_activations(&mut ops.xp, x, m, k, self.isa);
        let a = PackedActivations::new(&ops.xp, m, k, self.isa);
        let b = f.bias.as_deref();
        linear_bf16_packed_into(outs, &a, &f.packed, b, epilogue);
        Ok(())
    }

    /// An int8 product (`p`, with `bias`) of the `m` rows `row(i, buf)` makes, into `outs`,
    /// with an optional epilogue on each finished piece of a row. The rows are made and
    /// quantized in cache (an RMSNorm or a SwiGLU fused with the quantization): they never
    /// go to memory as f32.
    #[allow(clippy::too_many_arguments)]
    fn product_i8(
        &self,
        ops: &mut Operands,
        m: usize,
        p: &PackedI8,
        bias: Option<&[f32]>,
        outs: &mut [&mut [f32]],
        epilogue: Option<Epilogue>,
        row: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Result<()> {
        let k = p.k;
        reserve(&mut ops.xp, gemm_i8::activation_words(m, k, self.i8k))?;
        reserve(&mut ops.sa, m)?;
        gemm_i8::quantize_activations_with(&mut ops.xp, &mut ops.sa, m, k, self.i8k, row);
        let a = QuantActivations::new(&ops.xp, &ops.sa, m, k, self.i8k);
        linear_i8_packed_into(outs, &a, p, bias, epilogue);
        Ok(())
    }

    /// One product `out = x · lin^T (+ b)` of `m` rows.
    fn linear(
        &self,
        ops: &mut Operands,
        out: &mut [f32],
        x: &[f32],
        lin: &Linear,
        m: usize,
    ) -> Result<()> {
        let b = lin.b.as_ref().map(|b| b.data());
        let k = lin.in_dim;
        if let Some(p) = &lin.i8 {
            reserve(&mut ops.xp, gemm_i8::activation_words(m, k, self.i8k))?;
            reserve(&mut ops.sa, m)?;
            linear_i8(out, x, p, b, m, &mut ops.xp, &mut ops.sa, self.i8k);
            return Ok(());
        }
        match &lin.packed {
            Some(_) => reserve(&mut ops.xp, activation_words(m, k, self.isa))?,
            None => reserve(&mut ops.fp, gemm_f32::scratch_len(m, k, self.isa))?,
        }
        match &lin.packed {
            Some(p) => linear_bf16(out, x, p, b, m, &mut ops.xp, self.isa),
            None => linear_f32(
                out,
                x,
                lin.w.data(),
                b,
                m,
                lin.in_dim,
                lin.out_dim,
                &mut ops.fp,
                self.isa,
            ),
        }
        Ok(())
    }

    /// Logits of every text under the MC samples `samples` (sample indices, so a later
    /// block continues an earlier one): (texts, samples.len(), num_labels), text-major.
    /// Token ids must already be validated (< vocab_size, non-empty).
    pub fn run(
        &self,
        sc: &mut Scratch,
        texts: &[Vec<u32>],
        samples: std::ops::Range<u32>,
        dropout: Option<Dropout>,
        mut trace: Option<&mut Trace>,
        stop: &Stop,
    ) -> Result<Vec<f32>> {
        let (d, nl) = (self.cfg.d_model, self.cfg.num_labels);
        let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let site = |sample: u32, site: u32| {
            dropout.map(|dr| DropoutSite {
                seed: dr.seed,
                sample,
                site,
                p: dr.p,
            })
        };

        // Texts in groups of at most `max_rows` tokens (a longer text alone): stage A's
        // buffers are bounded like stage B's, whatever the number and length of the texts.
        let n_samples = samples.len();
        let mut logits = Vec::new();
        reserve(&mut logits, texts.len() * n_samples * nl)?;
        logits.resize(texts.len() * n_samples * nl, 0.0f32);
        let n_layers = self.cfg.n_layers as u32;
        for group in text_groups(&lens, self.max_rows) {
            stop.check()?;
            // Stage A: per text, up to layer 0's attention output, for this group's texts.
            let lens = &lens[group.clone()];
            let texts = &texts[group.clone()];
            let pack_a = Packing::new(lens.iter().enumerate().map(|(t, &l)| (t, 0, l)));
            let ra = pack_a.rows();
            let h0 = grow(&mut sc.h0, ra * d)?;
            self.embed(h0, texts);
            if let Some(tr) = trace.as_deref_mut() {
                tr.embed = h0.to_vec();
            }
            let a0 = grow(&mut sc.a0, ra * d)?;
            self.attention(
                a0,
                h0,
                &self.w.layers[0],
                &pack_a,
                &mut sc.attn,
                &mut sc.ops,
            )?;
            let (h0, a0) = (&sc.h0[..ra * d], &sc.a0[..ra * d]);

            for chunk in chunks(lens, samples.clone(), self.max_rows) {
                let pack = Packing::new(chunk);
                let rows = pack.rows();
                // Layer 0 residual: h = h0 + dropout(a0), per (text, sample) sequence.
                let h = grow(&mut sc.h, rows * d)?;
                h.par_chunks_mut(d).enumerate().for_each(|(r, hr)| {
                    let s = &pack.seqs[pack.row_seq[r] as usize];
                    let pos = pack.row_pos[r];
                    let src = (pack_a.seqs[s.text].row0 + pos as usize) * d;
                    hr.copy_from_slice(&h0[src..src + d]);
                    dropout_residual_add(
                        hr,
                        &a0[src..src + d],
                        site(s.sample, 0).as_ref(),
                        pos,
                        self.isa,
                    );
                });
                let a = grow(&mut sc.a, rows * d)?;
                for (l, layer) in self.w.layers.iter().enumerate() {
                    let l = l as u32;
                    stop.check()?;
                    if l > 0 {
                        self.attention(a, h, layer, &pack, &mut sc.attn, &mut sc.ops)?;
                        self.residual(h, a, &pack, |s| site(s, 2 * l));
                        stop.check()?;
                    }
                    self.ffn(a, h, layer, rows, &mut sc.ffn, &mut sc.ops)?;
                    self.residual(h, a, &pack, |s| site(s, 2 * l + 1));
                    if let Some(tr) = trace.as_deref_mut() {
                        tr.layers.push(h.to_vec());
                    }
                }
                // Final norm, masked mean pooling per sequence.
                rmsnorm_inplace(
                    h,
                    self.w.final_norm.data(),
                    rows,
                    d,
                    self.cfg.norm_eps,
                    self.isa,
                );
                let h = &*h;
                let ns = pack.seqs.len();
                let pooled = grow(&mut sc.pooled, ns * d)?;
                pooled.par_chunks_mut(d).zip(&pack.seqs).for_each(|(p, s)| {
                    // f64 sums in rows order, 64 channels at a time (no allocation).
                    let count = (s.len as f64).max(1e-9);
                    for (c0, pc) in (0..d).step_by(64).zip(p.chunks_mut(64)) {
                        let mut acc = [0.0f64; 64];
                        for r in s.row0..s.row0 + s.len {
                            let row = &h[r * d + c0..r * d + c0 + pc.len()];
                            for (a, x) in acc.iter_mut().zip(row) {
                                *a += *x as f64;
                            }
                        }
                        for (o, a) in pc.iter_mut().zip(&acc) {
                            *o = (*a / count) as f32;
                        }
                    }
                });
                if let Some(tr) = trace.as_deref_mut() {
                    tr.final_norm = h.to_vec();
                    tr.pooled = pooled.to_vec();
                }
                // Head: Linear -> GELU -> Dropout (site 2L, position 0) -> Linear.
                let z1 = grow(&mut sc.z1, ns * d)?;
                self.linear(&mut sc.ops, z1, pooled, &self.w.head1, ns)?;
                let act = if self.cfg.layout.gelu_tanh {
                    gelu_tanh
                } else {
                    gelu
                };
                z1.par_chunks_mut(d).zip(&pack.seqs).for_each(|(z, s)| {
                    z.iter_mut().for_each(|v| *v = act(*v));
                    if let Some(st) = site(s.sample, 2 * n_layers) {
                        dropout_inplace(z, &st, 0);
                    }
                });
                let z = grow(&mut sc.z, ns * nl)?;
                self.linear(&mut sc.ops, z, z1, &self.w.head2, ns)?;
                for (zs, s) in z.chunks_exact(nl).zip(&pack.seqs) {
                    let text = group.start + s.text;
                    let at = (text * n_samples + (s.sample - samples.start) as usize) * nl;
                    logits[at..at + nl].copy_from_slice(zs);
                }
            }
        }
        Ok(logits)
    }

    /// `h = embed_norm(token_embedding[ids])` for all texts, packed.
    fn embed(&self, h: &mut [f32], texts: &[Vec<u32>]) {
        let d = self.cfg.d_model;
        let ids: Vec<u32> = texts.iter().flatten().copied().collect();
        let (wn, eps, isa) = (self.w.embed_norm.data(), self.cfg.norm_eps, self.isa);
        // Int8 rows (int8 precision, or an int8 file at any precision) are widened on
        // gather: `q * scale`, the values an f32 reader of the table sees.
        let quantized = self.w.embedding.quantized();
        let emb = match quantized {
            Some(_) => &[][..],
            None => self.w.embedding.data(),
        };
        h.par_chunks_mut(d).zip(&ids).for_each(|(hr, &id)| {
            let id = id as usize;
            match quantized {
                Some((q, s)) => {
                    for (o, &v) in hr.iter_mut().zip(&q[id * d..(id + 1) * d]) {
                        *o = v as f32 * s[id];
                    }
                }
                None => hr.copy_from_slice(&emb[id * d..(id + 1) * d]),
            }
            rmsnorm_inplace(hr, wn, 1, d, eps, isa);
        });
    }

    /// `h += dropout(a)` row by row; `site_of(sample)` gives the row's mask (None: off).
    fn residual(
        &self,
        h: &mut [f32],
        a: &[f32],
        pack: &Packing,
        site_of: impl Fn(u32) -> Option<DropoutSite> + Sync,
    ) {
        let d = self.cfg.d_model;
        h.par_chunks_mut(d)
            .zip(a.par_chunks(d))
            .enumerate()
            .for_each(|(r, (hr, ar))| {
                let s = &pack.seqs[pack.row_seq[r] as usize];
                dropout_residual_add(
                    hr,
                    ar,
                    site_of(s.sample).as_ref(),
                    pack.row_pos[r],
                    self.isa,
                );
            });
    }

    /// `out = out_proj(attention(rope(q), rope(k), v))` of `rmsnorm_1(h)`, per sequence:
    /// the three steps below.
    fn attention(
        &self,
        out: &mut [f32],
        h: &[f32],
        layer: &Layer,
        pack: &Packing,
        s: &mut AttnScratch,
        ops: &mut Operands,
    ) -> Result<()> {
        let n = pack.rows() * self.cfg.d_model;
        self.qkv(h, layer, pack, s, ops)?;
        self.attend(pack, s)?;
        self.linear(ops, out, &s.x[..n], &layer.o, pack.rows())
    }

    /// Step 1: `x = rmsnorm_1(h)`, then `q, k, v` projections with RoPE on `q` and `k`
    /// (in the products' epilogues where the kernels offer one, else after them), into
    /// `s.x, s.q, s.k, s.v`.
    fn qkv(
        &self,
        h: &[f32],
        layer: &Layer,
        pack: &Packing,
        s: &mut AttnScratch,
        ops: &mut Operands,
    ) -> Result<()> {
        let cfg = self.cfg;
        let (d, rows) = (cfg.d_model, pack.rows());
        let n = rows * d;
        let (x, q, k, v) = (
            grow(&mut s.x, n)?,
            grow(&mut s.q, n)?,
            grow(&mut s.k, n)?,
            grow(&mut s.v, n)?,
        );
        let isa = self.isa;
        // (int8: RMSNorm runs inside the product's quantization, row by row.)
        if layer.qkv_i8.is_none() {
            rows_par(x, h, d, |xo, xi| {
                rmsnorm(xo, xi, layer.ln1.data(), xi.len() / d, d, cfg.norm_eps, isa)
            });
        }
        // RoPE tables: q and k rotate at each row's position inside its own sequence.
        let freqs = layer.freqs.data();
        let half = freqs.len();
        let t_max = pack.max_len();
        let (cos, sin) = (
            grow(&mut s.cos, t_max * half)?,
            grow(&mut s.sin, t_max * half)?,
        );
        rope_tables(cos, sin, freqs, t_max);
        let hd = cfg.head_dim();
        let (cos, sin) = (&*cos, &*sin);
        let rope_at = |r: usize| {
            let t = pack.row_pos[r] as usize;
            (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            )
        };

        // RoPE on a finished piece of row r of q|k (columns c0.. of the q|k|v column space,
        // 0..2d are q then k), while the piece is still in cache. Pieces start at even
        // columns, so RoPE pairs never straddle two of them when hd is even.
        let rope_piece = |r: usize, c0: usize, vals: &mut [f32]| {
            let (cs, sn) = rope_at(r);
            let end = (c0 + vals.len()).min(2 * d);
            let mut c = c0;
            while c < end {
                // The head containing column c, and its rotated channels.
                let head0 = c - c % hd;
                let hi = end.min(head0 + 2 * half);
                if c < hi {
                    let p0 = (c - head0) / 2;
                    rope_apply(&mut vals[c - c0..hi - c0], &cs[p0..], &sn[p0..]);
                }
                c = head0 + hd;
            }
        };
        let roped = match (&layer.qkv, &layer.qkv_i8) {
            (_, Some(f)) => {
                // One int8 product for q|k|v of rmsnorm_1(h), RoPE in its epilogue.
                let epilogue = hd.is_multiple_of(2).then_some(&rope_piece as _);
                let (w, eps) = (layer.ln1.data(), cfg.norm_eps);
                self.product_i8(
                    ops,
                    rows,
                    &f.packed,
                    f.bias.as_deref(),
                    &mut [q, k, v],
                    epilogue,
                    |r, buf| rmsnorm(buf, &h[r * d..(r + 1) * d], w, 1, d, eps, isa),
                )?;
                epilogue.is_some()
            }
            (Some(f), None) => {
                // One bf16 product for q|k|v, RoPE in its epilogue.
                let epilogue = hd.is_multiple_of(2).then_some(&rope_piece as _);
                self.fused(ops, x, rows, f, &mut [q, k, v], epilogue)?;
                epilogue.is_some()
            }
            (None, None) => {
                // f32 (or unfused bf16): q, k and v as parts of one pass; in f32 RoPE runs
                // in its epilogue (part 0 is q, 1 is k, 2 is v: untouched).
                let epilogue = |part: usize, r: usize, c0: usize, vals: &mut [f32]| {
                    if part < 2 {
                        rope_piece(r, part * d + c0, vals)
                    }
                };
                let epilogue = hd.is_multiple_of(2).then_some(&epilogue as F32Epilogue);
                let parts = [(&layer.q, q), (&layer.k, k), (&layer.v, v)];
                self.linears(ops, x, rows, parts, epilogue)?
            }
        };
        if !roped {
            for m in [&mut s.q[..n], &mut s.k[..n]] {
                m.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
                    let (c, sn) = rope_at(r);
                    for head in row.chunks_exact_mut(hd) {
                        rope_apply(&mut head[..2 * half], c, sn);
                    }
                });
            }
        }
        Ok(())
    }

    /// Step 2: the attention kernel on `s.q, s.k, s.v`, per sequence, in tasks of up to
    /// `ATT_BLOCK` query rows (never crossing a sequence); the result replaces `s.x`.
    fn attend(&self, pack: &Packing, s: &mut AttnScratch) -> Result<()> {
        let cfg = self.cfg;
        let (d, isa) = (cfg.d_model, self.isa);
        let n = pack.rows() * d;
        let mut tasks = Vec::new();
        let mut rest = &mut s.x[..n];
        for sq in &pack.seqs {
            let mut r0 = 0;
            while r0 < sq.len {
                let n = ATT_BLOCK.min(sq.len - r0);
                let (blk, tail) = rest.split_at_mut(n * d);
                tasks.push((sq, r0, blk));
                rest = tail;
                r0 += n;
            }
        }
        let (q, k, v) = (&s.q[..n], &s.k[..n], &s.v[..n]);
        let oom = std::sync::atomic::AtomicBool::new(false);
        tasks.into_par_iter().for_each(|(sq, r0, blk)| {
            SCORES.with_borrow_mut(|scores| {
                let Ok(scores) = grow(scores, attention::scratch_len(cfg.head_dim())) else {
                    oom.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                };
                let span = sq.row0 * d..(sq.row0 + sq.len) * d;
                attention_rows(
                    blk,
                    &q[span.clone()],
                    &k[span.clone()],
                    &v[span],
                    sq.len,
                    d,
                    cfg.n_head,
                    r0,
                    scores,
                    isa,
                );
            })
        });
        if oom.into_inner() {
            return Err(Error::OutOfMemory(
                "the attention kernel's per-thread scratch could not be allocated".into(),
            ));
        }
        Ok(())
    }

    /// `out = down(silu(gate(x)) * up(x))` with `x = rmsnorm_2(h)`.
    fn ffn(
        &self,
        out: &mut [f32],
        h: &[f32],
        layer: &Layer,
        rows: usize,
        s: &mut FfnScratch,
        ops: &mut Operands,
    ) -> Result<()> {
        let (d, f) = (self.cfg.d_model, self.cfg.d_ffn);
        let (x, g, u) = (
            grow(&mut s.x, rows * d)?,
            grow(&mut s.g, rows * f)?,
            grow(&mut s.u, rows * f)?,
        );
        let (eps, isa) = (self.cfg.norm_eps, self.isa);
        if let (Some(fu), Some(down)) = (&layer.gate_up_i8, &layer.down.i8) {
            // int8: RMSNorm fused into gate|up's quantization, SwiGLU into down's.
            let w = layer.ln2.data();
            self.product_i8(
                ops,
                rows,
                &fu.packed,
                fu.bias.as_deref(),
                &mut [&mut *g, &mut *u],
                None,
                |r, buf| rmsnorm(buf, &h[r * d..(r + 1) * d], w, 1, d, eps, isa),
            )?;
            let (g, u) = (&*g, &*u);
            let b = layer.down.b.as_ref().map(|b| b.data());
            return self.product_i8(ops, rows, down, b, &mut [out], None, |r, buf| {
                buf.copy_from_slice(&g[r * f..(r + 1) * f]);
                swiglu(buf, &u[r * f..(r + 1) * f], isa)
            });
        }
        rows_par(x, h, d, |xo, xi| {
            rmsnorm(xo, xi, layer.ln2.data(), xi.len() / d, d, eps, isa)
        });
        match &layer.gate_up {
            Some(fu) => self.fused(ops, x, rows, fu, &mut [&mut *g, &mut *u], None)?,
            None => {
                let parts = [(&layer.gate, &mut *g), (&layer.up, &mut *u)];
                self.linears(ops, x, rows, parts, None)?;
            }
        }
        g.par_chunks_mut(ROW_BLOCK * f)
            .zip(u.par_chunks(ROW_BLOCK * f))
            .for_each(|(g, u)| swiglu(g, u, isa));
        self.linear(ops, out, g, &layer.down, rows)
    }
}

/// Runs `f(out_block, in_block)` over blocks of ROW_BLOCK rows in parallel.
fn rows_par(out: &mut [f32], x: &[f32], d: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) {
    out.par_chunks_mut(ROW_BLOCK * d)
        .zip(x.par_chunks(ROW_BLOCK * d))
        .for_each(|(o, i)| f(o, i));
}

/// Reused buffers of the attention block.
#[derive(Default)]
struct AttnScratch {
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Reused buffers of the feed-forward block.
#[derive(Default)]
struct FfnScratch {
    x: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
}
