//! Writes an int8 model directory (`emcoder quantize IN_DIR OUT_DIR`).
//!
//! The tensors int8 precision quantizes (the token embedding and the encoder layers' linear
//! weights) are written as I8 with an F32 `<name>_scale` of one scale per row, quantized
//! exactly as `--precision int8` quantizes them at load (`gemm_i8::quantize_rows`), so the
//! written model gives the same numbers as `--precision int8` on the original. Every other
//! tensor is copied as stored, and every other file of the directory (config, thresholds,
//! tokenizer, ...) is copied as it is.

use super::tensors::TensorFile;
use super::{FileOptions, ModelFiles, TokenizerChoice};
use crate::error::{Error, Result};
use emcoder_kernels::gemm_i8::quantize_rows;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// What was written.
#[derive(Clone, Debug)]
pub struct Report {
    /// Tensors written as I8.
    pub quantized: usize,
    /// Tensors copied as stored.
    pub copied: usize,
    /// Size of the input and the output `model.safetensors`, bytes.
    pub bytes_in: u64,
    /// As above.
    pub bytes_out: u64,
    /// Other files copied.
    pub files: Vec<String>,
}

/// Quantizes the model in `input` into `output` (created; an existing `model.safetensors`
/// there is replaced only with `force`).
pub fn quantize(input: &Path, output: &Path, force: bool) -> Result<Report> {
    quantize_dir(input, output, force).map_err(Error::Input)
}

fn quantize_dir(input: &Path, output: &Path, force: bool) -> std::result::Result<Report, String> {
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(format!(
            "the output directory {} is the input: write the int8 model to another directory",
            output.display()
        ));
    }
    let out_st = output.join("model.safetensors");
    if out_st.exists() && !force {
        return Err(format!(
            "{} exists: pass --force to replace it, or choose another directory",
            out_st.display()
        ));
    }
    // Resolving the model first: a model that does not load is not quantized.
    let files = ModelFiles::load_with(input, &TokenizerChoice::None, &FileOptions::default())
        .map_err(|e| e.to_string())?;
    let quantizable: HashMap<&str, bool> = files
        .placements
        .iter()
        .map(|p| (p.name.as_str(), p.quantizable))
        .collect();
    let in_st = input.join("model.safetensors");
    let file = TensorFile::open(&in_st, false).map_err(|e| e.to_string())?;

    // (name, dtype, shape, bytes), in the file's order.
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let (mut quantized, mut copied) = (0, 0);
    for t in file.tensors.values() {
        let q = quantizable.get(t.name.as_str()).copied().unwrap_or(false);
        if q && t.dtype != Dtype::I8 {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let storage = file.load(t).map_err(|e| e.to_string())?;
            let (qv, s) = quantize_rows(storage.as_slice(), rows, cols)
                .map_err(|e| format!("`{}`: {e}", t.name))?;
            tensors.push((
                t.name.clone(),
                Dtype::I8,
                t.shape.clone(),
                qv.iter().map(|&v| v as u8).collect(),
            ));
            tensors.push((
                format!("{}_scale", t.name),
                Dtype::F32,
                vec![rows],
                s.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
            quantized += 1;
        } else {
            // Other tensors, and the I8 tensors and scales of an int8 input, as stored.
            tensors.push((
                t.name.clone(),
                t.dtype,
                t.shape.clone(),
                file.bytes(t).to_vec(),
            ));
            copied += 1;
        }
    }
    std::fs::create_dir_all(output)
        .map_err(|e| format!("cannot create {}: {e}", output.display()))?;
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("`{n}`: {e}"))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let meta: HashMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        (
            "emcoder_int8".to_string(),
            "I8 tensors: symmetric per row, q = clamp(round_ties_even(x * 127 / max|row|), -127, 127), value = q * <name>_scale".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    // Written beside, then renamed: a process mapping the old file keeps a whole file.
    let tmp = output.join(".model.safetensors.tmp");
    safetensors::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &out_st)
        .map_err(|e| format!("cannot move {} into place: {e}", tmp.display()))?;

    let mut copied_files = Vec::new();
    let entries =
        std::fs::read_dir(input).map_err(|e| format!("cannot list {}: {e}", input.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if n == "model.safetensors" || !e.path().is_file() {
            continue;
        }
        std::fs::copy(e.path(), output.join(n))
            .map_err(|err| format!("cannot copy {}: {err}", e.path().display()))?;
        copied_files.push(n.to_string());
    }
    copied_files.sort();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Ok(Report {
        quantized,
        copied,
        bytes_in: size(&in_st),
        bytes_out: size(&out_st),
        files: copied_files,
    })
}
