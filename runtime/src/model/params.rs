//! Typed views of the weights, resolved to the roles of the forward pass.

use super::tensors::{Quantized, Storage};
use crate::error::{Error, Result};
use emcoder_kernels::gemm_bf16::PackedBf16;
use emcoder_kernels::gemm_i8::{quantize_rows, Kernel, PackedI8, QuantPart};
use emcoder_kernels::Isa;
use std::borrow::Cow;
use std::sync::Arc;

/// A contiguous run of f32 values inside a tensor (a whole tensor, or the rows of one
/// projection inside a fused one).
#[derive(Clone, Debug)]
pub struct Param {
    storage: Arc<Storage>,
    start: usize,
    len: usize,
}

impl Param {
    /// The whole of `storage`.
    pub fn whole(storage: Arc<Storage>) -> Self {
        let len = storage.len();
        Param {
            storage,
            start: 0,
            len,
        }
    }

    /// Values `start..start+len` of this param.
    pub fn sub(&self, start: usize, len: usize) -> Self {
        assert!(start + len <= self.len, "Param::sub out of range");
        Param {
            storage: self.storage.clone(),
            start: self.start + start,
            len,
        }
    }

    /// A param holding `values` (derived data such as default RoPE frequencies).
    pub fn owned(values: Vec<f32>) -> Self {
        Self::whole(Arc::new(Storage::Owned(values)))
    }

    /// The values.
    #[inline]
    pub fn data(&self) -> &[f32] {
        &self.storage.as_slice()[self.start..self.start + self.len]
    }

    /// True when the values are read in place from the memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        self.storage.is_mapped()
    }

    /// See [`Storage::release_pages`]: the whole storage this param reads from.
    pub fn release_pages(&self, file_backed: bool) {
        self.storage.release_pages(file_backed)
    }

    /// A param of int8 rows (`q` (rows, cols) row-major, one scale per row).
    pub fn quantized_owned(q: Vec<i8>, scale: Vec<f32>, cols: usize) -> Self {
        Self::whole(Arc::new(Storage::Quantized(Quantized::owned(
            q, scale, cols,
        ))))
    }

    /// The int8 values and the scales of this param's rows, when it is stored as int8 rows
    /// (an int8 model file, or quantized at load). [`Param::data`] on such a param widens
    /// the whole tensor to f32 once (`q * scale`).
    pub fn quantized(&self) -> Option<(&[i8], &[f32])> {
        let q = self.storage.quantized()?;
        let cols = q.cols().max(1);
        if !(self.start.is_multiple_of(cols) && self.len.is_multiple_of(cols)) {
            return None;
        }
        let rows = self.start / cols..(self.start + self.len) / cols;
        Some((&q.q()[self.start..self.start + self.len], &q.scales()[rows]))
    }

    /// The rows of this param (`rows` x `cols`) as int8 with their scales: stored so, or
    /// quantized now ([`quantize_rows`]). `what` names the tensor in the error (NaN or
    /// infinite values cannot be quantized).
    pub fn quant_rows(&self, rows: usize, cols: usize, what: &str) -> Result<QuantRows<'_>> {
        if let Some((q, s)) = self.quantized() {
            return Ok((Cow::Borrowed(q), Cow::Borrowed(s)));
        }
        let (q, s) = quantize_rows(self.data(), rows, cols)
            .map_err(|e| Error::Input(format!("int8 precision: {what}: {e}")))?;
        Ok((Cow::Owned(q), Cow::Owned(s)))
    }
}

/// Int8 rows and their scales, borrowed from an int8 file or quantized at load.
pub type QuantRows<'a> = (Cow<'a, [i8]>, Cow<'a, [f32]>);

/// A linear layer `y = x W^T + b`, `W` stored (out_dim, in_dim) like PyTorch.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Weight, (out_dim, in_dim) row-major.
    pub w: Param,
    /// Optional bias, (out_dim,).
    pub b: Option<Param>,
    /// Output features.
    pub out_dim: usize,
    /// Input features.
    pub in_dim: usize,
    /// The weight packed to bf16, when the model runs in bf16 precision.
    pub packed: Option<Arc<PackedBf16>>,
    /// The weight quantized and packed to int8, when the model runs in int8 precision.
    pub i8: Option<Arc<PackedI8>>,
}

impl Linear {
    /// Packs the weight to bf16 for the bf16 kernels (the f32 weight stays mapped, unused);
    /// `isa` picks how the packing runs.
    pub fn pack_bf16(&mut self, isa: Isa) -> Result<()> {
        let p = PackedBf16::try_pack_parts(&[(self.w.data(), self.out_dim)], self.in_dim, isa)
            .map_err(Error::OutOfMemory)?;
        self.packed = Some(Arc::new(p));
        Ok(())
    }

    /// Quantizes (unless stored as int8) and packs the weight for the int8 kernels; `what`
    /// names it in errors.
    pub fn pack_i8(&mut self, what: &str, kernel: Kernel) -> Result<()> {
        let (q, s) = self.w.quant_rows(self.out_dim, self.in_dim, what)?;
        let p = PackedI8::pack_parts(&[(&q, &s, self.out_dim)], self.in_dim, kernel)
            .map_err(Error::OutOfMemory)?;
        self.i8 = Some(Arc::new(p));
        Ok(())
    }

    /// Rows `r0..r0+n` of this layer (one projection of a fused q/k/v or gate/up).
    pub fn rows(&self, r0: usize, n: usize) -> Linear {
        Linear {
            w: self.w.sub(r0 * self.in_dim, n * self.in_dim),
            b: self.b.as_ref().map(|b| b.sub(r0, n)),
            out_dim: n,
            in_dim: self.in_dim,
            packed: None,
            i8: None,
        }
    }
}

/// The stacked biases of `parts` (zeros for parts without one), when any part has a bias.
fn stacked_bias(parts: &[&Linear]) -> Option<Vec<f32>> {
    parts.iter().any(|l| l.b.is_some()).then(|| {
        parts
            .iter()
            .flat_map(|l| match &l.b {
                Some(b) => b.data().to_vec(),
                None => vec![0.0; l.out_dim],
            })
            .collect()
    })
}

/// Several linear layers of one input quantized and packed as a single int8 product (q|k|v,
/// gate|up).
#[derive(Clone, Debug)]
pub struct FusedI8 {
    /// The stacked weights.
    pub packed: Arc<PackedI8>,
    /// The stacked biases (zeros for parts without one), when any part has a bias.
    pub bias: Option<Vec<f32>>,
}

impl FusedI8 {
    fn new(parts: &[&Linear], what: &str, kernel: Kernel) -> Result<Self> {
        let k = parts[0].in_dim;
        let rows = parts
            .iter()
            .map(|l| l.w.quant_rows(l.out_dim, k, what))
            .collect::<Result<Vec<_>>>()?;
        let qp: Vec<QuantPart> = rows
            .iter()
            .zip(parts)
            .map(|((q, s), l)| (&q[..], &s[..], l.out_dim))
            .collect();
        let packed = PackedI8::pack_parts(&qp, k, kernel).map_err(Error::OutOfMemory)?;
        Ok(FusedI8 {
            packed: Arc::new(packed),
            bias: stacked_bias(parts),
        })
    }
}

/// Several linear layers of one input packed as a single bf16 product (q|k|v, gate|up).
#[derive(Clone, Debug)]
pub struct FusedBf16 {
    /// The stacked weights.
    pub packed: Arc<PackedBf16>,
    /// The stacked biases (zeros for parts without one), when any part has a bias.
    pub bias: Option<Vec<f32>>,
}

impl FusedBf16 {
    fn new(parts: &[&Linear], isa: Isa) -> Result<Self> {
        let k = parts[0].in_dim;
        let ws: Vec<(&[f32], usize)> = parts.iter().map(|l| (l.w.data(), l.out_dim)).collect();
        let bias = stacked_bias(parts);
        let packed = PackedBf16::try_pack_parts(&ws, k, isa).map_err(Error::OutOfMemory)?;
        Ok(FusedBf16 {
            packed: Arc::new(packed),
            bias,
        })
    }
}

/// One encoder layer.
#[derive(Clone, Debug)]
pub struct Layer {
    /// RMSNorm before attention, (d,).
    pub ln1: Param,
    /// Query projection d -> d.
    pub q: Linear,
    /// Key projection d -> d.
    pub k: Linear,
    /// Value projection d -> d.
    pub v: Linear,
    /// Attention output projection d -> d.
    pub o: Linear,
    /// RoPE frequencies, (rot_dim/2,).
    pub freqs: Param,
    /// RMSNorm before the feed-forward, (d,).
    pub ln2: Param,
    /// SwiGLU gate d -> f.
    pub gate: Linear,
    /// SwiGLU up d -> f.
    pub up: Linear,
    /// SwiGLU down f -> d.
    pub down: Linear,
    /// q, k and v as one bf16 product (bf16 precision).
    pub qkv: Option<FusedBf16>,
    /// gate and up as one bf16 product (bf16 precision).
    pub gate_up: Option<FusedBf16>,
    /// q, k and v as one int8 product (int8 precision).
    pub qkv_i8: Option<FusedI8>,
    /// gate and up as one int8 product (int8 precision).
    pub gate_up_i8: Option<FusedI8>,
}

impl Layer {
    /// Packs the layer for bf16 products: q|k|v and gate|up fused, o and down alone.
    pub fn pack_bf16(&mut self, isa: Isa) -> Result<()> {
        self.qkv = Some(FusedBf16::new(&[&self.q, &self.k, &self.v], isa)?);
        self.gate_up = Some(FusedBf16::new(&[&self.gate, &self.up], isa)?);
        self.o.pack_bf16(isa)?;
        self.down.pack_bf16(isa)
    }

    /// Quantizes and packs layer `i` for int8 products: q|k|v and gate|up fused, o and
    /// down alone. The f32 weights are released afterwards (their params become empty, their
    /// pages of a file map dropped when `file_backed`): an int8 model keeps only its int8
    /// weights.
    pub fn pack_i8(&mut self, i: usize, file_backed: bool, kernel: Kernel) -> Result<()> {
        self.qkv_i8 = Some(FusedI8::new(
            &[&self.q, &self.k, &self.v],
            &format!("layer {i} q, k, v"),
            kernel,
        )?);
        self.gate_up_i8 = Some(FusedI8::new(
            &[&self.gate, &self.up],
            &format!("layer {i} gate, up"),
            kernel,
        )?);
        self.o
            .pack_i8(&format!("layer {i} attention output"), kernel)?;
        self.down.pack_i8(&format!("layer {i} down"), kernel)?;
        for l in [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ] {
            l.w.release_pages(file_backed);
            l.w = Param::owned(Vec::new());
        }
        Ok(())
    }
}

/// All weights of a model, by role.
#[derive(Clone, Debug)]
pub struct Weights {
    /// Token embedding, (V, d).
    pub embedding: Param,
    /// RMSNorm after the embedding, (d,).
    pub embed_norm: Param,
    /// Encoder layers.
    pub layers: Vec<Layer>,
    /// RMSNorm after the last layer, (d,).
    pub final_norm: Param,
    /// Head's first linear d -> d (then GELU, dropout).
    pub head1: Linear,
    /// Head's last linear d -> num_labels.
    pub head2: Linear,
    /// Rotary dimension (2 * len(freqs)).
    pub rot_dim: usize,
}

impl Weights {
    /// Int8 precision: the token embedding as int8 rows with a scale per row (quantized
    /// now unless the file stores it so; the f32 table is released), and every layer
    /// packed for `kernel`'s int8 products ([`Layer::pack_i8`]). The head stays f32. `file_backed`:
    /// the weights are a map of the file (not copied), whose pages of f32 weights that were
    /// quantized are dropped from memory.
    pub fn pack_i8(&mut self, file_backed: bool, kernel: Kernel) -> Result<()> {
        if self.embedding.quantized().is_none() {
            let d = self.embed_norm.data().len();
            let v = self.embedding.data().len() / d.max(1);
            let (q, s) = self.embedding.quant_rows(v, d, "token embedding")?;
            let q = Param::quantized_owned(q.into_owned(), s.into_owned(), d);
            self.embedding.release_pages(file_backed);
            self.embedding = q;
        }
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.pack_i8(i, file_backed, kernel)?;
        }
        Ok(())
    }
}
