//! The forward pass over packed batches, with MC dropout folded into the rows.
//!
//! Stage A (once per text): embedding, embed norm and layer 0's attention, i.e. everything
//! before the first dropout site. Stage B (per chunk of (text, sample) sequences): layer 0's
//! dropout-residual, then the rest of the network with every sample's rows in the same
//! matrix products. Deterministic mode is the same code with one sample and no dropout.

use super::batch::{chunks, Packing};
use crate::model::{Config, Layer, Linear, Weights};
use emcoder_kernels::activation::{gelu, swiglu};
use emcoder_kernels::attention::attention_rows;
use emcoder_kernels::gemm_bf16::{
    linear_bf16, linear_bf16_packed, pack_activations, Bf16Isa, PackedActivations,
};
use emcoder_kernels::matmul::{self, Parallelism};
use emcoder_kernels::norm::{rmsnorm, rmsnorm_inplace};
use emcoder_kernels::philox::{dropout_inplace, dropout_residual_add, DropoutSite};
use emcoder_kernels::rope::{rope_apply, rope_tables};
use rayon::prelude::*;

/// Rows per parallel task of the row-wise kernels.
const ROW_BLOCK: usize = 16;
/// Query rows per attention task.
const ATT_BLOCK: usize = 16;

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
    /// Threads for the matrix products (the pool's size).
    pub threads: usize,
    /// Largest number of rows processed at once (bounds scratch memory).
    pub max_rows: usize,
    /// Kernel of the bf16 products (used by linears that carry packed bf16 weights).
    pub bf16_isa: Bf16Isa,
    /// Scratch of the bf16 activations.
    pub xp: std::sync::Mutex<Vec<u32>>,
}

impl Forward<'_> {
    fn par(&self) -> Parallelism {
        if self.threads > 1 {
            Parallelism::Rayon(self.threads)
        } else {
            Parallelism::None
        }
    }

    /// Several products of the same input (q, k, v; gate, up): in bf16 the input is
    /// rounded and packed once for all of them.
    fn linears<const N: usize>(&self, x: &[f32], m: usize, outs: [(&Linear, &mut Vec<f32>); N]) {
        if outs.iter().all(|(l, _)| l.packed.is_some()) {
            let k = outs[0].0.in_dim;
            let mut xp = self.xp.lock().unwrap_or_else(|e| e.into_inner());
            pack_activations(&mut xp, x, m, k, self.bf16_isa);
            let a = PackedActivations::new(&xp, m, k);
            for (lin, out) in outs {
                if let Some(p) = &lin.packed {
                    linear_bf16_packed(out, &a, p, lin.b.as_ref().map(|b| b.data()), self.bf16_isa);
                }
            }
        } else {
            for (lin, out) in outs {
                self.linear(out, x, lin, m);
            }
        }
    }

    fn linear(&self, out: &mut [f32], x: &[f32], lin: &Linear, m: usize) {
        let b = lin.b.as_ref().map(|b| b.data());
        match &lin.packed {
            Some(p) => {
                let mut xp = self.xp.lock().unwrap_or_else(|e| e.into_inner());
                linear_bf16(out, x, p, b, m, &mut xp, self.bf16_isa)
            }
            None => matmul::linear(
                out,
                x,
                lin.w.data(),
                b,
                m,
                lin.in_dim,
                lin.out_dim,
                self.par(),
            ),
        }
    }

    /// Logits of every text under the MC samples `samples` (sample indices, so a later
    /// block continues an earlier one): (texts, samples.len(), num_labels), text-major.
    /// Token ids must already be validated (< vocab_size, non-empty).
    pub fn run(
        &self,
        texts: &[Vec<u32>],
        samples: std::ops::Range<u32>,
        dropout: Option<Dropout>,
        mut trace: Option<&mut Trace>,
    ) -> Vec<f32> {
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

        // Stage A: per text, up to layer 0's attention output.
        let pack_a = Packing::new(lens.iter().enumerate().map(|(t, &l)| (t, 0, l)));
        let ra = pack_a.rows();
        let mut h0 = vec![0.0f32; ra * d];
        self.embed(&mut h0, texts);
        if let Some(tr) = trace.as_deref_mut() {
            tr.embed = h0.clone();
        }
        let mut a0 = vec![0.0f32; ra * d];
        let mut attn = AttnScratch::default();
        self.attention(&mut a0, &h0, &self.w.layers[0], &pack_a, &mut attn);

        let n_samples = samples.len();
        let mut logits = vec![0.0f32; texts.len() * n_samples * nl];
        let n_layers = self.cfg.n_layers as u32;
        for chunk in chunks(&lens, samples.clone(), self.max_rows) {
            let pack = Packing::new(chunk);
            let rows = pack.rows();
            // Layer 0 residual: h = h0 + dropout(a0), per (text, sample) sequence.
            let mut h = vec![0.0f32; rows * d];
            h.par_chunks_mut(d).enumerate().for_each(|(r, hr)| {
                let s = &pack.seqs[pack.row_seq[r] as usize];
                let pos = pack.row_pos[r];
                let src = (pack_a.seqs[s.text].row0 + pos as usize) * d;
                hr.copy_from_slice(&h0[src..src + d]);
                dropout_residual_add(hr, &a0[src..src + d], site(s.sample, 0).as_ref(), pos);
            });
            let mut a = vec![0.0f32; rows * d];
            let mut ffn = FfnScratch::default();
            for (l, layer) in self.w.layers.iter().enumerate() {
                let l = l as u32;
                if l > 0 {
                    self.attention(&mut a, &h, layer, &pack, &mut attn);
                    self.residual(&mut h, &a, &pack, |s| site(s, 2 * l));
                }
                self.ffn(&mut a, &h, layer, rows, &mut ffn);
                self.residual(&mut h, &a, &pack, |s| site(s, 2 * l + 1));
                if let Some(tr) = trace.as_deref_mut() {
                    tr.layers.push(h.clone());
                }
            }
            // Final norm, masked mean pooling per sequence.
            rmsnorm_inplace(&mut h, self.w.final_norm.data(), rows, d, self.cfg.norm_eps);
            let ns = pack.seqs.len();
            let mut pooled = vec![0.0f32; ns * d];
            pooled.par_chunks_mut(d).zip(&pack.seqs).for_each(|(p, s)| {
                let mut acc = vec![0.0f64; d];
                for r in s.row0..s.row0 + s.len {
                    for (a, x) in acc.iter_mut().zip(&h[r * d..(r + 1) * d]) {
                        *a += *x as f64;
                    }
                }
                let count = (s.len as f64).max(1e-9);
                for (o, a) in p.iter_mut().zip(&acc) {
                    *o = (*a / count) as f32;
                }
            });
            if let Some(tr) = trace.as_deref_mut() {
                tr.final_norm = h.clone();
                tr.pooled = pooled.clone();
            }
            // Head: Linear -> GELU -> Dropout (site 2L, position 0) -> Linear.
            let mut z1 = vec![0.0f32; ns * d];
            self.linear(&mut z1, &pooled, &self.w.head1, ns);
            z1.par_chunks_mut(d).zip(&pack.seqs).for_each(|(z, s)| {
                z.iter_mut().for_each(|v| *v = gelu(*v));
                if let Some(st) = site(s.sample, 2 * n_layers) {
                    dropout_inplace(z, &st, 0);
                }
            });
            let mut z = vec![0.0f32; ns * nl];
            self.linear(&mut z, &z1, &self.w.head2, ns);
            for (zs, s) in z.chunks_exact(nl).zip(&pack.seqs) {
                let at = (s.text * n_samples + (s.sample - samples.start) as usize) * nl;
                logits[at..at + nl].copy_from_slice(zs);
            }
        }
        logits
    }

    /// `h = embed_norm(token_embedding[ids])` for all texts, packed.
    fn embed(&self, h: &mut [f32], texts: &[Vec<u32>]) {
        let d = self.cfg.d_model;
        let emb = self.w.embedding.data();
        let ids: Vec<u32> = texts.iter().flatten().copied().collect();
        let (wn, eps) = (self.w.embed_norm.data(), self.cfg.norm_eps);
        h.par_chunks_mut(d).zip(&ids).for_each(|(hr, &id)| {
            let id = id as usize;
            hr.copy_from_slice(&emb[id * d..(id + 1) * d]);
            rmsnorm_inplace(hr, wn, 1, d, eps);
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
                dropout_residual_add(hr, ar, site_of(s.sample).as_ref(), pack.row_pos[r]);
            });
    }

    /// `out = out_proj(attention(rope(q), rope(k), v))` of `rmsnorm_1(h)`, per sequence.
    fn attention(
        &self,
        out: &mut [f32],
        h: &[f32],
        layer: &Layer,
        pack: &Packing,
        s: &mut AttnScratch,
    ) {
        let cfg = self.cfg;
        let (d, rows) = (cfg.d_model, pack.rows());
        s.resize(rows * d);
        rows_par(&mut s.x[..rows * d], h, d, |xo, xi| {
            rmsnorm(xo, xi, layer.ln1.data(), xi.len() / d, d, cfg.norm_eps)
        });
        self.linears(
            &s.x,
            rows,
            [
                (&layer.q, &mut s.q),
                (&layer.k, &mut s.k),
                (&layer.v, &mut s.v),
            ],
        );

        // RoPE on q and k at each row's position inside its own sequence.
        let freqs = layer.freqs.data();
        let half = freqs.len();
        let t_max = pack.max_len();
        s.cos.resize(t_max * half, 0.0);
        s.sin.resize(t_max * half, 0.0);
        rope_tables(&mut s.cos, &mut s.sin, freqs, t_max);
        let hd = cfg.head_dim();
        let (cos, sin) = (&s.cos, &s.sin);
        for m in [&mut s.q, &mut s.k] {
            m[..rows * d]
                .par_chunks_mut(d)
                .enumerate()
                .for_each(|(r, row)| {
                    let t = pack.row_pos[r] as usize;
                    let (c, sn) = (
                        &cos[t * half..(t + 1) * half],
                        &sin[t * half..(t + 1) * half],
                    );
                    for head in row.chunks_exact_mut(hd) {
                        rope_apply(&mut head[..2 * half], c, sn);
                    }
                });
        }

        // Attention: tasks of up to ATT_BLOCK query rows, never crossing a sequence.
        let mut tasks = Vec::new();
        let mut rest = &mut s.x[..rows * d];
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
        let (q, k, v) = (&s.q, &s.k, &s.v);
        tasks.into_par_iter().for_each(|(sq, r0, blk)| {
            let mut scores = vec![0.0f32; sq.len];
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
                &mut scores,
            );
        });
        self.linear(out, &s.x, &layer.o, rows);
    }

    /// `out = down(silu(gate(x)) * up(x))` with `x = rmsnorm_2(h)`.
    fn ffn(&self, out: &mut [f32], h: &[f32], layer: &Layer, rows: usize, s: &mut FfnScratch) {
        let (d, f) = (self.cfg.d_model, self.cfg.d_ffn);
        s.x.resize(rows * d, 0.0);
        s.g.resize(rows * f, 0.0);
        s.u.resize(rows * f, 0.0);
        let eps = self.cfg.norm_eps;
        rows_par(&mut s.x[..rows * d], h, d, |xo, xi| {
            rmsnorm(xo, xi, layer.ln2.data(), xi.len() / d, d, eps)
        });
        self.linears(&s.x, rows, [(&layer.gate, &mut s.g), (&layer.up, &mut s.u)]);
        s.g[..rows * f]
            .par_chunks_mut(ROW_BLOCK * f)
            .zip(s.u.par_chunks(ROW_BLOCK * f))
            .for_each(|(g, u)| swiglu(g, u));
        self.linear(out, &s.g, &layer.down, rows);
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

impl AttnScratch {
    fn resize(&mut self, n: usize) {
        for b in [&mut self.x, &mut self.q, &mut self.k, &mut self.v] {
            b.resize(n, 0.0);
        }
    }
}

/// Reused buffers of the feed-forward block.
#[derive(Default)]
struct FfnScratch {
    x: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
}
