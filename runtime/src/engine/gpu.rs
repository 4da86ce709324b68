//! The forward pass on a GPU: the same algorithm as [`super::forward`] (packed batches, stage
//! A once per text, the MC samples folded into the rows of stage B, the same chunking), as a
//! sequence of kernel launches (kernels/cuda/emcoder.cu) and matrix products on a
//! [`Backend`].
//!
//! The backend is a trait so that this orchestration runs in two places: on an NVIDIA GPU
//! through cudarc and cuBLAS (`crate::cuda`, feature `cuda`), and, in the tests, on the CPU
//! emulation of the same kernel source (tests/runtime/gpu_emulated.rs), which checks it
//! against the CPU engine on every CI machine.

use super::batch::{chunks, text_groups, Packing};
use super::forward::Dropout;
use super::stop::Stop;
use crate::error::{Error, Result};
use crate::model::{Config, Linear, Weights};

/// One argument of a kernel launch.
pub enum Arg<'a, B> {
    /// A device buffer from element `offset` on.
    Buf(&'a B, usize),
    /// A null pointer.
    Null,
    /// `int`.
    I32(i32),
    /// `unsigned int`.
    U32(u32),
    /// `float`.
    F32(f32),
    /// `long long`.
    I64(i64),
}

/// Element type of a matrix product's operands (the output is always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// f32 operands, f32 arithmetic (never TF32).
    F32,
    /// bf16 operands (u16 buffers), f32 accumulation.
    Bf16,
}

/// A strided view of a matrix in a buffer: rows of `ld` elements from element `offset`.
pub struct Mat<'a, B> {
    /// The buffer.
    pub buf: &'a B,
    /// First element.
    pub offset: usize,
    /// Row stride in elements.
    pub ld: usize,
}

/// What the forward needs of a device.
pub trait Backend {
    /// A device buffer of f32, u32/i32 or u16 (bf16) elements.
    type Buf;
    /// A new buffer holding `v`.
    fn upload_f32(&self, v: &[f32]) -> Result<Self::Buf>;
    /// A new buffer holding `v`.
    fn upload_u32(&self, v: &[u32]) -> Result<Self::Buf>;
    /// A new buffer holding `v`.
    fn upload_u16(&self, v: &[u16]) -> Result<Self::Buf>;
    /// A new buffer of `n` f32 zeros.
    fn zeros_f32(&self, n: usize) -> Result<Self::Buf>;
    /// A new buffer of `n` u16 zeros.
    fn zeros_u16(&self, n: usize) -> Result<Self::Buf>;
    /// The first `n` f32 values of `b` (waits for the work queued before).
    fn download_f32(&self, b: &Self::Buf, n: usize) -> Result<Vec<f32>>;
    /// Queues kernel `name` over `grid` x `block` threads.
    fn launch(
        &self,
        name: &'static str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &[Arg<'_, Self::Buf>],
    ) -> Result<()>;
    /// Queues `y[i][j] = sum_p x[i][p] * w[j][p]` for `i < m, j < n, p < k` (`w` is a
    /// PyTorch weight, (n, k) row-major): operands of type `elem`, f32 output.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        elem: Elem,
        y: Mat<'_, Self::Buf>,
        x: Mat<'_, Self::Buf>,
        w: &Self::Buf,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()>;
    /// Waits until the queued work is done.
    fn synchronize(&self) -> Result<()>;
    /// Threads per block of the reduction kernels (RMSNorm): a power of two up to 1024. It
    /// fixes the order of the sums, so it is a constant of the backend.
    fn reduce_threads(&self) -> u32 {
        256
    }
}

/// A linear layer on the device: weight (n, k), optional bias (n).
pub struct DevLinear<B> {
    w: B,
    b: Option<B>,
    n: usize,
    k: usize,
}

/// One encoder layer on the device, with q|k|v and gate|up fused into one product each.
pub struct DevLayer<B> {
    ln1: B,
    qkv: DevLinear<B>,
    o: DevLinear<B>,
    freqs: B,
    half: usize,
    ln2: B,
    gate_up: DevLinear<B>,
    down: DevLinear<B>,
}

/// The weights on the device.
pub struct DevWeights<B> {
    embedding: B,
    embed_norm: B,
    layers: Vec<DevLayer<B>>,
    final_norm: B,
    head1: DevLinear<B>,
    head2: DevLinear<B>,
    elem: Elem,
}

/// Uploads the linears `parts` as one (their weights' rows stacked, their biases too, a
/// missing bias as zeros when another part has one), in `elem`.
fn upload_linear<G: Backend>(g: &G, parts: &[&Linear], elem: Elem) -> Result<DevLinear<G::Buf>> {
    let k = parts[0].in_dim;
    let n: usize = parts.iter().map(|l| l.out_dim).sum();
    let mut w = Vec::new();
    w.try_reserve_exact(n * k).map_err(|_| {
        Error::OutOfMemory(format!(
            "{:.1} MB of host memory to stage a weight",
            (n * k * 4) as f64 / 1e6
        ))
    })?;
    for l in parts {
        w.extend_from_slice(l.w.data());
    }
    let w = match elem {
        Elem::F32 => g.upload_f32(&w)?,
        Elem::Bf16 => {
            let w16: Vec<u16> = w
                .iter()
                .map(|v| half::bf16::from_f32(*v).to_bits())
                .collect();
            g.upload_u16(&w16)?
        }
    };
    let b = if parts.iter().any(|l| l.b.is_some()) {
        let mut b = Vec::with_capacity(n);
        for l in parts {
            match &l.b {
                Some(p) => b.extend_from_slice(p.data()),
                None => b.extend(std::iter::repeat_n(0.0, l.out_dim)),
            }
        }
        Some(g.upload_f32(&b)?)
    } else {
        None
    };
    Ok(DevLinear { w, b, n, k })
}

/// Bytes [`upload`] puts on the device for `w` in `elem`.
pub fn upload_bytes(w: &Weights, elem: Elem) -> usize {
    let per = match elem {
        Elem::F32 => 4,
        Elem::Bf16 => 2,
    };
    let lin = |l: &Linear| l.w.data().len() * per + 4 * l.out_dim;
    let layers: usize = w
        .layers
        .iter()
        .map(|l| {
            [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                .iter()
                .map(|x| lin(x))
                .sum::<usize>()
                + 4 * (l.ln1.data().len() + l.ln2.data().len() + l.freqs.data().len())
        })
        .sum();
    4 * (w.embedding.data().len() + w.embed_norm.data().len() + w.final_norm.data().len())
        + layers
        + lin(&w.head1)
        + lin(&w.head2)
}

/// Uploads the weights for products in `elem`.
pub fn upload<G: Backend>(g: &G, w: &Weights, elem: Elem) -> Result<DevWeights<G::Buf>> {
    let layers = w
        .layers
        .iter()
        .map(|l| {
            Ok(DevLayer {
                ln1: g.upload_f32(l.ln1.data())?,
                qkv: upload_linear(g, &[&l.q, &l.k, &l.v], elem)?,
                o: upload_linear(g, &[&l.o], elem)?,
                freqs: g.upload_f32(l.freqs.data())?,
                half: l.freqs.data().len(),
                ln2: g.upload_f32(l.ln2.data())?,
                gate_up: upload_linear(g, &[&l.gate, &l.up], elem)?,
                down: upload_linear(g, &[&l.down], elem)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = DevWeights {
        embedding: g.upload_f32(w.embedding.data())?,
        embed_norm: g.upload_f32(w.embed_norm.data())?,
        layers,
        final_norm: g.upload_f32(w.final_norm.data())?,
        head1: upload_linear(g, &[&w.head1], elem)?,
        head2: upload_linear(g, &[&w.head2], elem)?,
        elem,
    };
    // Other streams read the weights from now on.
    g.synchronize()?;
    Ok(weights)
}

/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;
/// Query rows per attention block (ATT_QUERIES in the kernel source).
const ATT_QUERIES: usize = 64;

/// Blocks of `per` threads covering `n` items, as a grid dimension.
pub fn blocks(n: usize, per: u32) -> Result<u32> {
    u32::try_from(n.div_ceil(per as usize).max(1))
        .map_err(|_| Error::Input(format!("{n} elements exceed one kernel launch's grid")))
}

/// A grid's y or z dimension that must hold `n` (rows, sequences, heads): at most 65,535.
fn dim(n: usize, what: &str) -> Result<u32> {
    match u32::try_from(n.max(1)) {
        Ok(v) if v <= 65_535 => Ok(v),
        _ => Err(Error::Input(format!(
            "{n} {what} exceed a kernel launch's grid (65535): lower max_rows"
        ))),
    }
}

/// An i32 kernel argument.
fn int(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| {
        Error::Input(format!(
            "{n} exceeds the kernels' 32-bit sizes: lower max_rows"
        ))
    })
}

/// The forward pass of one model on one device.
pub struct GpuForward<'a, G: Backend> {
    /// The device.
    pub g: &'a G,
    /// Hyper-parameters.
    pub cfg: &'a Config,
    /// The weights, uploaded.
    pub w: &'a DevWeights<G::Buf>,
    /// Largest number of rows processed at once.
    pub max_rows: usize,
}

/// Per-chunk device buffers.
struct Chunk<B> {
    rows: usize,
    row_pos: B,
    row_sample: B,
    offsets: B,
    max_len: usize,
    n_seqs: usize,
}

impl<G: Backend> GpuForward<'_, G> {
    /// Logits of every text under the MC samples `samples`: (texts, samples.len(),
    /// num_labels), text-major, like [`super::forward::Forward::run`]. Token ids must be
    /// validated.
    pub fn run(
        &self,
        texts: &[Vec<u32>],
        samples: std::ops::Range<u32>,
        dropout: Option<Dropout>,
        stop: &Stop,
    ) -> Result<Vec<f32>> {
        let (d, nl) = (self.cfg.d_model, self.cfg.num_labels);
        let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let n_samples = samples.len();
        let mut logits = vec![0.0f32; texts.len() * n_samples * nl];
        for group in text_groups(&lens, self.max_rows) {
            stop.check()?;
            let lens = &lens[group.clone()];
            let pack_a = Packing::new(lens.iter().enumerate().map(|(t, &l)| (t, 0, l)));
            let ra = pack_a.rows();
            // Stage A: embedding, embed norm, layer 0's attention, once per text.
            let ids: Vec<u32> = texts[group.clone()].iter().flatten().copied().collect();
            let ids = self.g.upload_u32(&ids)?;
            let h0 = self.g.zeros_f32(ra * d)?;
            self.g.launch(
                "gather_rows",
                [blocks(d, THREADS)?, dim(ra, "rows")?, 1],
                [THREADS, 1, 1],
                &[
                    Arg::Buf(&h0, 0),
                    Arg::Buf(&self.w.embedding, 0),
                    Arg::Buf(&ids, 0),
                    Arg::I32(int(ra)?),
                    Arg::I32(int(d)?),
                ],
            )?;
            self.rmsnorm(&h0, &h0, &self.w.embed_norm, ra)?;
            let ca = self.chunk_buffers(&pack_a)?;
            let a0 = self.attention(&h0, &self.w.layers[0], &ca)?;

            for chunk in chunks(lens, samples.clone(), self.max_rows) {
                let pack = Packing::new(chunk);
                let c = self.chunk_buffers(&pack)?;
                let rows = c.rows;
                // Layer 0's residual: h = h0 + dropout(a0), stage A's rows fanned out to
                // every (text, sample) sequence.
                let src: Vec<u32> = (0..rows)
                    .map(|r| {
                        let s = &pack.seqs[pack.row_seq[r] as usize];
                        (pack_a.seqs[s.text].row0 + pack.row_pos[r] as usize) as u32
                    })
                    .collect();
                let src = self.g.upload_u32(&src)?;
                let h = self.g.zeros_f32(rows * d)?;
                let a = self.g.zeros_f32(rows * d)?;
                for (dst, from) in [(&h, &h0), (&a, &a0)] {
                    self.g.launch(
                        "gather_rows",
                        [blocks(d, THREADS)?, dim(rows, "rows")?, 1],
                        [THREADS, 1, 1],
                        &[
                            Arg::Buf(dst, 0),
                            Arg::Buf(from, 0),
                            Arg::Buf(&src, 0),
                            Arg::I32(int(rows)?),
                            Arg::I32(int(d)?),
                        ],
                    )?;
                }
                self.residual(&h, &a, &c, dropout, 0)?;
                for (l, layer) in self.w.layers.iter().enumerate() {
                    let l = l as u32;
                    stop.check()?;
                    if l > 0 {
                        let a = self.attention(&h, layer, &c)?;
                        self.residual(&h, &a, &c, dropout, 2 * l)?;
                        stop.check()?;
                    }
                    let f = self.ffn(&h, layer, rows)?;
                    self.residual(&h, &f, &c, dropout, 2 * l + 1)?;
                }
                self.rmsnorm(&h, &h, &self.w.final_norm, rows)?;
                let ns = c.n_seqs;
                let pooled = self.g.zeros_f32(ns * d)?;
                self.g.launch(
                    "mean_pool",
                    [blocks(d, THREADS)?, dim(ns, "sequences")?, 1],
                    [THREADS, 1, 1],
                    &[
                        Arg::Buf(&pooled, 0),
                        Arg::Buf(&h, 0),
                        Arg::Buf(&c.offsets, 0),
                        Arg::I32(int(ns)?),
                        Arg::I32(int(d)?),
                    ],
                )?;
                // Head: Linear -> GELU -> Dropout (site 2L, position 0) -> Linear.
                let act = if self.cfg.layout.gelu_tanh { 2 } else { 1 };
                let z1 = self.linear(&pooled, d, &self.w.head1, ns, act)?;
                if let Some(dr) = dropout {
                    let (thr, scale) = mask_constants(dr.p);
                    self.g.launch(
                        "dropout_inplace",
                        [blocks(ns * self.w.head1.n.div_ceil(4), THREADS)?, 1, 1],
                        [THREADS, 1, 1],
                        &[
                            Arg::Buf(&z1, 0),
                            Arg::Buf(&c.row_sample, rows),
                            Arg::I32(int(ns)?),
                            Arg::I32(int(self.w.head1.n)?),
                            Arg::U32(dr.seed as u32),
                            Arg::U32((dr.seed >> 32) as u32),
                            Arg::U32(2 * self.cfg.n_layers as u32),
                            Arg::U32(thr),
                            Arg::F32(scale),
                        ],
                    )?;
                }
                let z = self.linear(&z1, self.w.head1.n, &self.w.head2, ns, 0)?;
                let z = self.g.download_f32(&z, ns * nl)?;
                for (zs, s) in z.chunks_exact(nl).zip(&pack.seqs) {
                    let text = group.start + s.text;
                    let at = (text * n_samples + (s.sample - samples.start) as usize) * nl;
                    logits[at..at + nl].copy_from_slice(zs);
                }
            }
        }
        Ok(logits)
    }

    /// The per-row and per-sequence tables of a packing, on the device. `row_sample` holds
    /// the rows' samples followed by the sequences' (for the head's dropout).
    fn chunk_buffers(&self, pack: &Packing) -> Result<Chunk<G::Buf>> {
        let mut offsets: Vec<u32> = pack.seqs.iter().map(|s| s.row0 as u32).collect();
        offsets.push(pack.rows() as u32);
        let mut samples: Vec<u32> = pack
            .row_seq
            .iter()
            .map(|&s| pack.seqs[s as usize].sample)
            .collect();
        samples.extend(pack.seqs.iter().map(|s| s.sample));
        Ok(Chunk {
            rows: pack.rows(),
            row_pos: self.g.upload_u32(&pack.row_pos)?,
            row_sample: self.g.upload_u32(&samples)?,
            offsets: self.g.upload_u32(&offsets)?,
            max_len: pack.max_len(),
            n_seqs: pack.seqs.len(),
        })
    }

    fn rmsnorm(&self, out: &G::Buf, x: &G::Buf, w: &G::Buf, rows: usize) -> Result<()> {
        self.g.launch(
            "rmsnorm",
            [blocks(rows, 1)?, 1, 1],
            [self.g.reduce_threads(), 1, 1],
            &[
                Arg::Buf(out, 0),
                Arg::Buf(x, 0),
                Arg::Buf(w, 0),
                Arg::I32(int(rows)?),
                Arg::I32(int(self.cfg.d_model)?),
                Arg::F32(self.cfg.norm_eps),
            ],
        )
    }

    /// `h += dropout(a)` at `site` (plain add without dropout).
    fn residual(
        &self,
        h: &G::Buf,
        a: &G::Buf,
        c: &Chunk<G::Buf>,
        dropout: Option<Dropout>,
        site: u32,
    ) -> Result<()> {
        let d = self.cfg.d_model;
        let (seed, (thr, scale)) = match dropout {
            Some(dr) => (dr.seed, mask_constants(dr.p)),
            None => (0, (0, 1.0)),
        };
        self.g.launch(
            "dropout_residual_add",
            [blocks(c.rows * d.div_ceil(4), THREADS)?, 1, 1],
            [THREADS, 1, 1],
            &[
                Arg::Buf(h, 0),
                Arg::Buf(a, 0),
                Arg::Buf(&c.row_pos, 0),
                Arg::Buf(&c.row_sample, 0),
                Arg::I32(int(c.rows)?),
                Arg::I32(int(d)?),
                Arg::I32(int(d)?),
                Arg::I32(int(d)?),
                Arg::U32(seed as u32),
                Arg::U32((seed >> 32) as u32),
                Arg::U32(site),
                Arg::U32(thr),
                Arg::F32(scale),
                Arg::I32(dropout.is_some() as i32),
            ],
        )
    }

    /// `x · lin^T + b` of `m` rows of width `k` (stride `k`), then activation `act` (0 none,
    /// 1 GELU, 2 GELU tanh): a new (m, n) buffer.
    fn linear(
        &self,
        x: &G::Buf,
        k: usize,
        lin: &DevLinear<G::Buf>,
        m: usize,
        act: i32,
    ) -> Result<G::Buf> {
        debug_assert_eq!(k, lin.k);
        let y = self.g.zeros_f32(m * lin.n)?;
        match self.w.elem {
            Elem::F32 => self.g.gemm(
                Elem::F32,
                Mat {
                    buf: &y,
                    offset: 0,
                    ld: lin.n,
                },
                Mat {
                    buf: x,
                    offset: 0,
                    ld: k,
                },
                &lin.w,
                m,
                lin.n,
                k,
            )?,
            Elem::Bf16 => {
                // Activations rounded to bf16 (nearest even), as the CPU engine rounds them.
                let x16 = self.g.zeros_u16(m * k)?;
                self.g.launch(
                    "f32_to_bf16",
                    [blocks(m * k, THREADS)?, 1, 1],
                    [THREADS, 1, 1],
                    &[Arg::Buf(&x16, 0), Arg::Buf(x, 0), Arg::I64((m * k) as i64)],
                )?;
                self.g.gemm(
                    Elem::Bf16,
                    Mat {
                        buf: &y,
                        offset: 0,
                        ld: lin.n,
                    },
                    Mat {
                        buf: &x16,
                        offset: 0,
                        ld: k,
                    },
                    &lin.w,
                    m,
                    lin.n,
                    k,
                )?
            }
        }
        if lin.b.is_some() || act != 0 {
            self.g.launch(
                "bias_act",
                [blocks(m * lin.n, THREADS)?, 1, 1],
                [THREADS, 1, 1],
                &[
                    Arg::Buf(&y, 0),
                    lin.b.as_ref().map_or(Arg::Null, |b| Arg::Buf(b, 0)),
                    Arg::I32(int(m)?),
                    Arg::I32(int(lin.n)?),
                    Arg::I32(act),
                ],
            )?;
        }
        Ok(y)
    }

    /// `out_proj(attention(rope(q), rope(k), v))` of `rmsnorm_1(h)`: a new (rows, d) buffer.
    fn attention(&self, h: &G::Buf, layer: &DevLayer<G::Buf>, c: &Chunk<G::Buf>) -> Result<G::Buf> {
        let cfg = self.cfg;
        let (d, rows, hd) = (cfg.d_model, c.rows, cfg.head_dim());
        let x = self.g.zeros_f32(rows * d)?;
        self.rmsnorm(&x, h, &layer.ln1, rows)?;
        let qkv = self.linear(&x, d, &layer.qkv, rows, 0)?;
        if layer.half > 0 {
            // q and k are adjacent in a q|k|v row: one launch rotates both (2 n_head heads).
            self.g.launch(
                "rope",
                [
                    blocks(2 * cfg.n_head * layer.half, THREADS)?,
                    dim(rows, "rows")?,
                    1,
                ],
                [THREADS, 1, 1],
                &[
                    Arg::Buf(&qkv, 0),
                    Arg::Buf(&c.row_pos, 0),
                    Arg::Buf(&layer.freqs, 0),
                    Arg::I32(int(rows)?),
                    Arg::I32(int(3 * d)?),
                    Arg::I32(0),
                    Arg::I32(int(2 * cfg.n_head)?),
                    Arg::I32(int(hd)?),
                    Arg::I32(int(layer.half)?),
                ],
            )?;
        }
        self.g.launch(
            "attention",
            [
                blocks(c.max_len, ATT_QUERIES as u32)?,
                dim(cfg.n_head, "heads")?,
                dim(c.n_seqs, "sequences")?,
            ],
            [ATT_QUERIES as u32, 1, 1],
            &[
                Arg::Buf(&x, 0),
                Arg::Buf(&qkv, 0),
                Arg::Buf(&c.offsets, 0),
                Arg::I32(int(cfg.n_head)?),
                Arg::I32(int(3 * d)?),
                Arg::I32(0),
                Arg::I32(int(d)?),
                Arg::I32(int(2 * d)?),
                Arg::I32(int(d)?),
            ],
        )?;
        self.linear(&x, d, &layer.o, rows, 0)
    }

    /// `down(silu(gate(x)) * up(x))` with `x = rmsnorm_2(h)`: a new (rows, d) buffer.
    fn ffn(&self, h: &G::Buf, layer: &DevLayer<G::Buf>, rows: usize) -> Result<G::Buf> {
        let (d, f) = (self.cfg.d_model, self.cfg.d_ffn);
        let x = self.g.zeros_f32(rows * d)?;
        self.rmsnorm(&x, h, &layer.ln2, rows)?;
        let gu = self.linear(&x, d, &layer.gate_up, rows, 0)?;
        let g = self.g.zeros_f32(rows * f)?;
        self.g.launch(
            "swiglu",
            [blocks(rows * f, THREADS)?, 1, 1],
            [THREADS, 1, 1],
            &[
                Arg::Buf(&g, 0),
                Arg::Buf(&gu, 0),
                Arg::I32(int(rows)?),
                Arg::I32(int(f)?),
                Arg::I32(int(2 * f)?),
                Arg::I32(0),
                Arg::I32(int(f)?),
            ],
        )?;
        self.linear(&g, f, &layer.down, rows, 0)
    }
}

/// The mask threshold `floor(p * 2^32)` and the kept values' scale `1 / (1 - p)` (f32), as
/// [`emcoder_kernels::philox::DropoutSite`] computes them.
pub fn mask_constants(p: f32) -> (u32, f32) {
    let site = emcoder_kernels::philox::DropoutSite {
        seed: 0,
        sample: 0,
        site: 0,
        p,
    };
    (site.threshold().min(u32::MAX as u64) as u32, site.scale())
}
