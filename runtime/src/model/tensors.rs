//! `model.safetensors`: memory-mapped, parsed with checked offsets, F32 tensors used in place
//! (zero copy), F16/BF16 widened to F32 once at load.

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
}

impl Storage {
    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Storage::Owned(v) => v,
            Storage::Mapped { map, offset, len } => {
                let bytes = &map[*offset..*offset + *len * 4];
                // SAFETY: `bytes` is inside the live map (bounds checked by the slice above),
                // its start is 4-byte aligned (checked in `RawTensor::to_storage`), and every
                // bit pattern is a valid f32. The map is read-only and outlives the borrow.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, *len) }
            }
        }
    }

    /// True when the values are used in place from the file.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Storage::Mapped { .. })
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
