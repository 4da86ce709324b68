//! `model.safetensors`: memory-mapped, parsed with checked offsets, F32 tensors used in place
//! (zero copy), F16/BF16 widened to F32 once at load, I8 tensors (int8 models, with a scale
//! per row) used in place and widened only if an f32 product asks for them.

use crate::error::{Error, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a tensor's f32 values live.
#[derive(Debug)]
pub enum Storage {
    /// Inside the memory map, already f32 and 4-byte aligned: no copy.
    Mapped {
        /// The map (kept alive by every tensor that points into it).
        map: Arc<Mmap>,
        /// Byte offset in the map.
        offset: usize,
        /// Number of f32 values.
        len: usize,
    },
    /// Widened from F16/BF16 (or copied from an unaligned F32 tensor).
    Owned(Vec<f32>),
    /// Int8 rows with a scale per row (value = q * scale): an I8 tensor of the file, or
    /// quantized at load for int8 precision.
    Quantized(Quantized),
}

/// Int8 rows of `cols` values with one f32 scale per row.
#[derive(Debug)]
pub struct Quantized {
    q: QBytes,
    scale: Vec<f32>,
    cols: usize,
    /// `q * scale` as f32, made on first use by an f32 reader (f32 or bf16 precision, the
    /// GPU) of an int8 file.
    widened: std::sync::OnceLock<Vec<f32>>,
}

#[derive(Debug)]
enum QBytes {
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
    Owned(Vec<i8>),
}

impl Quantized {
    /// Rows quantized at load (`q` (rows, cols) row-major, one scale per row).
    pub fn owned(q: Vec<i8>, scale: Vec<f32>, cols: usize) -> Self {
        assert_eq!(q.len(), scale.len() * cols, "Quantized::owned: shapes");
        Quantized {
            q: QBytes::Owned(q),
            scale,
            cols,
            widened: std::sync::OnceLock::new(),
        }
    }

    /// The int8 values, (rows, cols) row-major.
    pub fn q(&self) -> &[i8] {
        match &self.q {
            QBytes::Owned(v) => v,
            QBytes::Mapped { map, offset, len } => {
                let b = &map[*offset..*offset + *len];
                // SAFETY: i8 and u8 have the same size and alignment; the map is read-only
                // and outlives the borrow.
                unsafe { std::slice::from_raw_parts(b.as_ptr() as *const i8, b.len()) }
            }
        }
    }

    /// One scale per row.
    pub fn scales(&self) -> &[f32] {
        &self.scale
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn widened(&self) -> &[f32] {
        self.widened.get_or_init(|| {
            let cols = self.cols.max(1);
            self.q()
                .chunks(cols)
                .zip(&self.scale)
                .flat_map(|(r, &s)| r.iter().map(move |&v| v as f32 * s))
                .collect()
        })
    }
}

impl Storage {
    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Storage::Owned(v) => v,
            Storage::Quantized(q) => q.widened(),
            Storage::Mapped { map, offset, len } => {
                let bytes = &map[*offset..*offset + *len * 4];
                // SAFETY: `bytes` is inside the live map (bounds checked by the slice above),
                // its start is 4-byte aligned (checked in `RawTensor::to_storage`), and every
                // bit pattern is a valid f32. The map is read-only and outlives the borrow.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, *len) }
            }
        }
    }

    /// Drops the pages of these values from the process's memory (`madvise(DONTNEED)`),
    /// when they are read in place from a map of the file: for weights that were quantized or
    /// repacked and will not be read again (a later read fetches them from the file again,
    /// so nothing breaks). `file_backed` must be false for weights copied into memory
    /// (`copy_weights`: an anonymous map would read back zeros); then nothing is done.
    pub fn release_pages(&self, file_backed: bool) {
        if !file_backed {
            return;
        }
        let (map, offset, bytes) = match self {
            Storage::Mapped { map, offset, len } => (map, *offset, *len * 4),
            Storage::Quantized(Quantized {
                q: QBytes::Mapped { map, offset, len },
                ..
            }) => (map, *offset, *len),
            _ => return,
        };
        // Whole pages inside the range only: the tensors beside it keep theirs.
        let page = 4096;
        let start = offset.div_ceil(page) * page;
        let end = (offset + bytes) / page * page;
        if end > start {
            // SAFETY: a read-only private map of the file: DONTNEED drops the pages, and a
            // later access reads the file's bytes again (the caller promised file_backed).
            // The range is inside the map (a tensor's bytes, checked at open).
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }

    /// Number of values (without widening int8 rows).
    pub fn len(&self) -> usize {
        match self {
            Storage::Owned(v) => v.len(),
            Storage::Mapped { len, .. } => *len,
            Storage::Quantized(q) => q.q().len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the values are used in place from the file.
    pub fn is_mapped(&self) -> bool {
        match self {
            Storage::Mapped { .. } => true,
            Storage::Quantized(q) => matches!(q.q, QBytes::Mapped { .. }),
            Storage::Owned(_) => false,
        }
    }

    /// The int8 rows, when the values are stored so.
    pub fn quantized(&self) -> Option<&Quantized> {
        match self {
            Storage::Quantized(q) => Some(q),
            _ => None,
        }
    }
}

/// One tensor as the file describes it.
#[derive(Clone, Debug)]
pub struct RawTensor {
    /// Name in the file.
    pub name: String,
    /// Stored dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    offset: usize,
    nbytes: usize,
}

impl RawTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Short dtype name ("F32", "BF16", ...).
    pub fn dtype_name(&self) -> String {
        format!("{:?}", self.dtype)
    }
}

/// An opened safetensors file: the map plus the tensor index.
pub struct TensorFile {
    /// The file's path.
    pub path: PathBuf,
    map: Arc<Mmap>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, RawTensor>,
}

impl TensorFile {
    /// Maps and indexes `path` (or, with `copy`, reads it into process memory: an
    /// anonymous map, so the same code reads it). Truncated files, corrupt headers,
    /// overlapping or out-of-range offsets are reported as [`Error::BadSafetensors`].
    pub fn open(path: &Path, copy: bool) -> Result<Self> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_owned(),
                hint: "a model directory needs model.safetensors".into(),
            },
            _ => Error::Io {
                path: path.to_owned(),
                source: e,
            },
        })?;
        let bad = |reason: String| Error::BadSafetensors {
            path: path.to_owned(),
            reason,
        };
        let len = file
            .metadata()
            .map_err(|e| Error::Io {
                path: path.to_owned(),
                source: e,
            })?
            .len();
        if len < 8 {
            return Err(bad(format!(
                "file is {len} bytes; a safetensors file starts with an 8-byte header size"
            )));
        }
        let io = |e: std::io::Error| Error::Io {
            path: path.to_owned(),
            source: e,
        };
        let map = if copy {
            let n = usize::try_from(len).map_err(|_| bad(format!("{len} bytes")))?;
            let mut m = memmap2::MmapMut::map_anon(n).map_err(|e| {
                Error::OutOfMemory(format!(
                    "cannot allocate {:.1} MB to copy {} into memory ({e}): load it mapped instead (copy_weights off)",
                    n as f64 / 1e6,
                    path.display()
                ))
            })?;
            use std::io::Read;
            (&file).read_exact(&mut m[..]).map_err(io)?;
            m.make_read_only().map_err(io)?
        } else {
            // SAFETY: the file is opened read-only. A map is only valid while nobody
            // truncates or rewrites the file in place: documented (README, header) with
            // the remedy, atomic renames or copy_weights.
            unsafe { Mmap::map(&file) }.map_err(io)?
        };
        let map = Arc::new(map);
        let st = SafeTensors::deserialize(&map).map_err(|e| bad(e.to_string()))?;
        let base = map.as_ptr() as usize;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let offset = data.as_ptr() as usize - base;
            tensors.insert(
                name.clone(),
                RawTensor {
                    name,
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    offset,
                    nbytes: data.len(),
                },
            );
        }
        Ok(TensorFile {
            path: path.to_owned(),
            map,
            tensors,
        })
    }

    /// How many of `t`'s values are NaN or infinite (0 for non-float dtypes).
    pub fn non_finite(&self, t: &RawTensor) -> usize {
        let bytes = &self.map[t.offset..t.offset + t.nbytes];
        match t.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .filter(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
                .count(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .filter(|b| !half::f16::from_le_bytes([b[0], b[1]]).is_finite())
                .count(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .filter(|b| !half::bf16::from_le_bytes([b[0], b[1]]).is_finite())
                .count(),
            _ => 0,
        }
    }

    /// Reads an I8 tensor `t` of shape (rows, cols) with its F32 scales `scale` (rows,): the
    /// values in place from the map. A scale tensor of another dtype or shape, or holding a
    /// zero, negative, NaN or infinite scale, is an error that names it.
    pub fn load_quantized(&self, t: &RawTensor, scale: &RawTensor) -> Result<Storage> {
        let bad = |reason: String| Error::BadSafetensors {
            path: self.path.clone(),
            reason,
        };
        if t.dtype != Dtype::I8 || t.shape.len() != 2 {
            return Err(bad(format!(
                "`{}` ({} {:?}) is not a 2-D I8 tensor",
                t.name,
                t.dtype_name(),
                t.shape
            )));
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        if scale.dtype != Dtype::F32 || scale.shape != [rows] {
            return Err(bad(format!(
                "`{}` must be F32 of shape [{rows}] (one scale per row of the I8 tensor `{}`), found {} {:?}",
                scale.name,
                t.name,
                scale.dtype_name(),
                scale.shape
            )));
        }
        let sb = &self.map[scale.offset..scale.offset + scale.nbytes];
        let scales: Vec<f32> = sb
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some((r, s)) = scales
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(bad(format!(
                "`{}` holds the scale {s} for row {r}; scales must be finite and positive (re-run `emcoder quantize` on the original model)",
                scale.name
            )));
        }
        debug_assert_eq!(t.nbytes, rows * cols);
        Ok(Storage::Quantized(Quantized {
            q: QBytes::Mapped {
                map: self.map.clone(),
                offset: t.offset,
                len: t.nbytes,
            },
            scale: scales,
            cols,
            widened: std::sync::OnceLock::new(),
        }))
    }

    /// The stored bytes of `t` (for tools that copy tensors as they are).
    pub fn bytes(&self, t: &RawTensor) -> &[u8] {
        &self.map[t.offset..t.offset + t.nbytes]
    }

    /// Reads tensor `t` as f32: in place when possible, widened otherwise.
    pub fn load(&self, t: &RawTensor) -> Result<Storage> {
        let bytes = &self.map[t.offset..t.offset + t.nbytes];
        let n = t.numel();
        match t.dtype {
            Dtype::F32 if t.offset.is_multiple_of(4) => Ok(Storage::Mapped {
                map: self.map.clone(),
                offset: t.offset,
                len: n,
            }),
            Dtype::F32 => Ok(Storage::Owned(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )),
            Dtype::F16 => Ok(Storage::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            )),
            Dtype::BF16 => Ok(Storage::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            )),
            _ => Err(Error::Dtype {
                name: t.name.clone(),
                dtype: t.dtype_name(),
            }),
        }
    }
}
