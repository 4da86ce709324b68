//! Loading a model directory, its parameters, and its labels.

use crate::error::{call, guard, EmcoderError, FfiResult, EMCODER_ERR_BAD_MODEL};
use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;
use std::ptr;

/// The CPU, the only device of this build.
pub const EMCODER_DEVICE_CPU: u32 = 0;

/// A loaded model: weights, thresholds, tokenizer, label names and its own pool of worker
/// threads. Immutable after load: one model can serve any number of threads at once.
pub struct EmcoderModel {
    pub(crate) model: emcoder_rt::Model,
    labels: Vec<CString>,
}

/// How to load a model. Get one from `emcoder_model_default_params()` and change fields;
/// a zero-initialized struct also works (every 0 means the default).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EmcoderModelParams {
    /// A `tokenizer.json` file (NUL-terminated path, read during the load call only).
    /// NULL: `<model_dir>/tokenizer.json` when the directory holds one, else the built-in
    /// ModernBERT tokenizer. Default NULL.
    pub tokenizer_path: *const c_char,
    /// Worker threads of the model's own pool; 0: one per available core. Default 0.
    pub n_threads: u32,
    /// Longest accepted text in tokens, `[CLS]` and `[SEP]` included; longer texts fail with
    /// `EMCODER_ERR_INVALID_ARGUMENT` unless the prediction truncates. Must be 0 or >= 2;
    /// 0: the default (4096).
    pub max_tokens: u32,
    /// Compute device: `EMCODER_DEVICE_CPU` (0). This build has no CUDA: any other value fails
    /// with `EMCODER_ERR_INVALID_ARGUMENT`. Default 0.
    pub device: u32,
    /// Rows (tokens x samples) computed at once: bounds scratch memory, never changes results.
    /// 0: the default (16384).
    pub max_rows: u32,
    /// Precision of the weights and matrix products: `EMCODER_PRECISION_F32` (0, the
    /// default: f32 weights used in place) or `EMCODER_PRECISION_BF16` (1: weights packed to
    /// bfloat16 at load, bf16 products with f32 accumulation on AMX / AVX512_BF16 where the
    /// CPU has them; mean probabilities within 0.01 of f32). Other values fail with
    /// `EMCODER_ERR_INVALID_ARGUMENT`.
    pub precision: u32,
}

/// `EmcoderModelParams::precision`: f32 weights and products.
pub const EMCODER_PRECISION_F32: u32 = 0;
/// `EmcoderModelParams::precision`: bf16 weights and products, f32 accumulation.
pub const EMCODER_PRECISION_BF16: u32 = 1;

impl EmcoderModelParams {
    fn to_options(self) -> FfiResult<emcoder_rt::LoadOptions> {
        if self.device != EMCODER_DEVICE_CPU {
            return Err(EmcoderError::invalid(format!(
                "device {} is not available: libemcoder was not built with CUDA (use {} for the CPU)",
                self.device, EMCODER_DEVICE_CPU
            )));
        }
        let defaults = emcoder_rt::LoadOptions::default();
        let tokenizer = if self.tokenizer_path.is_null() {
            emcoder_rt::TokenizerChoice::Auto
        } else {
            // SAFETY: a non-NULL tokenizer_path is a NUL-terminated string, per the field's doc.
            let path = unsafe { CStr::from_ptr(self.tokenizer_path) };
            emcoder_rt::TokenizerChoice::Path(c_path(path, "tokenizer_path")?)
        };
        Ok(emcoder_rt::LoadOptions {
            tokenizer,
            n_threads: self.n_threads as usize,
            max_tokens: match self.max_tokens {
                0 => defaults.max_tokens,
                n => n as usize,
            },
            max_rows: match self.max_rows {
                0 => defaults.max_rows,
                n => n as usize,
            },
            precision: match self.precision {
                EMCODER_PRECISION_F32 => emcoder_rt::Precision::F32,
                EMCODER_PRECISION_BF16 => emcoder_rt::Precision::Bf16,
                other => {
                    return Err(EmcoderError::invalid(format!(
                        "precision {other} is unknown: use EMCODER_PRECISION_F32 (0) or EMCODER_PRECISION_BF16 (1)"
                    )))
                }
            },
            // EMCODER_ISA (validated at load) or the best level of this CPU.
            isa: None,
            memory_budget: 0,
            copy_weights: false,
            refuse_non_finite: false,
        })
    }
}

/// A path from C: any bytes on Unix, UTF-8 elsewhere.
fn c_path(s: &CStr, what: &str) -> FfiResult<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let _ = what;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        s.to_str().map(PathBuf::from).map_err(|e| {
            EmcoderError::new(
                crate::error::EMCODER_ERR_INVALID_UTF8,
                format!("{what} is not valid UTF-8: {e}"),
            )
        })
    }
}

/// Returns the default load parameters: built-in or directory tokenizer, all cores, 4096 tokens,
/// CPU.
///
/// Thread safety: safe from any thread.
#[no_mangle]
pub extern "C" fn emcoder_model_default_params() -> EmcoderModelParams {
    let params = EmcoderModelParams {
        tokenizer_path: ptr::null(),
        n_threads: 0,
        max_tokens: 0,
        device: EMCODER_DEVICE_CPU,
        max_rows: 0,
        precision: EMCODER_PRECISION_F32,
    };
    guard(params, || {
        let d = emcoder_rt::LoadOptions::default();
        EmcoderModelParams {
            max_tokens: u32::try_from(d.max_tokens).unwrap_or(0),
            max_rows: u32::try_from(d.max_rows).unwrap_or(0),
            ..params
        }
    })
}

/// Loads the model directory `model_dir` (`model.safetensors`, `config.json`, optional
/// `thresholds.json` and `tokenizer.json`) and starts its worker threads.
///
/// Returns 0 and sets `*out` to the new model, or returns a negative code, sets `*out` to NULL
/// and, when `err` is not NULL, sets `*err` to a new error (else `*err` is set to NULL).
/// Codes: `EMCODER_ERR_INVALID_ARGUMENT` (NULL `model_dir`/`out`, bad params),
/// `EMCODER_ERR_IO` (missing directory or file, unreadable file),
/// `EMCODER_ERR_BAD_MODEL` (invalid file contents), `EMCODER_ERR_OUT_OF_MEMORY`.
///
/// Ownership: the caller owns `*out` (free it with `emcoder_model_free`) and `*err` (free it
/// with `emcoder_error_free`); `model_dir` and `params` are only read during the call.
/// NULL handling: `params` NULL means `emcoder_model_default_params()`; `err` may be NULL;
/// `model_dir` and `out` must not be NULL.
/// Thread safety: safe from any thread; loads may run concurrently.
///
/// # Safety
/// `model_dir` is NULL or a NUL-terminated string; `params` is NULL or points to a valid
/// struct whose `tokenizer_path` is NULL or NUL-terminated; `out` and `err` are NULL or point to
/// writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn emcoder_model_load(
    model_dir: *const c_char,
    params: *const EmcoderModelParams,
    out: *mut *mut EmcoderModel,
    err: *mut *mut EmcoderError,
) -> i32 {
    call(err, || {
        if out.is_null() {
            return Err(EmcoderError::invalid("emcoder_model_load: `out` is NULL"));
        }
        // SAFETY: `out` is non-NULL and writable, per the contract.
        unsafe { *out = ptr::null_mut() };
        if model_dir.is_null() {
            return Err(EmcoderError::invalid(
                "emcoder_model_load: `model_dir` is NULL",
            ));
        }
        // SAFETY: `params` is NULL or points to a valid struct, per the contract.
        let params = unsafe { params.as_ref() }
            .copied()
            .unwrap_or_else(|| emcoder_model_default_params());
        let opts = params.to_options()?;
        // SAFETY: `model_dir` is a non-NULL NUL-terminated string, per the contract.
        let dir = c_path(unsafe { CStr::from_ptr(model_dir) }, "model_dir")?;
        let model = emcoder_rt::Model::load(&dir, &opts)?;
        let labels = model
            .labels()
            .iter()
            .map(|l| {
                CString::new(l.as_str()).map_err(|_| {
                    EmcoderError::new(
                        EMCODER_ERR_BAD_MODEL,
                        format!("{}: label {l:?} contains a NUL byte", dir.display()),
                    )
                })
            })
            .collect::<FfiResult<Vec<_>>>()?;
        let handle = Box::new(EmcoderModel { model, labels });
        // SAFETY: as above; ownership passes to the caller.
        unsafe { *out = Box::into_raw(handle) };
        Ok(())
    })
}

/// Frees a model and stops its worker threads.
///
/// NULL handling: NULL is a no-op.
/// Thread safety: call it once, after every other call on this model (and every prediction
/// running on it) has returned. Predictions made by the model stay valid: they own their data.
///
/// # Safety
/// `model` is NULL or a model from `emcoder_model_load` that has not been freed.
#[no_mangle]
pub unsafe extern "C" fn emcoder_model_free(model: *mut EmcoderModel) {
    guard((), || {
        if !model.is_null() {
            // SAFETY: made by Box::into_raw in emcoder_model_load, freed once.
            drop(unsafe { Box::from_raw(model) });
        }
    })
}

/// Returns the number of labels of the model (28 for EmCoder).
///
/// NULL handling: `model` NULL returns 0.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn emcoder_model_num_labels(model: *const EmcoderModel) -> usize {
    guard(0, || {
        // SAFETY: NULL or a live model, per the contract.
        unsafe { model.as_ref() }.map_or(0, |m| m.labels.len())
    })
}

/// Returns the name of label `index` (label ids are `0 .. num_labels-1`, the order of every
/// `EmcoderLabelStats` array), e.g. `"admiration"` for 0.
///
/// Ownership: the string belongs to the model and is valid until `emcoder_model_free`.
/// NULL handling: returns NULL when `model` is NULL or `index >= num_labels`.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn emcoder_model_label(
    model: *const EmcoderModel,
    index: usize,
) -> *const c_char {
    guard(ptr::null(), || {
        // SAFETY: NULL or a live model, per the contract.
        unsafe { model.as_ref() }
            .and_then(|m| m.labels.get(index))
            .map_or(ptr::null(), |l| l.as_ptr())
    })
}

/// Returns the number of worker threads of the model's pool.
///
/// NULL handling: `model` NULL returns 0.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn emcoder_model_n_threads(model: *const EmcoderModel) -> u32 {
    guard(0, || {
        // SAFETY: NULL or a live model, per the contract.
        unsafe { model.as_ref() }
            .map_or(0, |m| u32::try_from(m.model.threads()).unwrap_or(u32::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::*;

    #[test]
    fn defaults_match_the_runtime() {
        let p = emcoder_model_default_params();
        let d = emcoder_rt::LoadOptions::default();
        assert!(p.tokenizer_path.is_null());
        assert_eq!((p.n_threads, p.device), (0, EMCODER_DEVICE_CPU));
        assert_eq!(p.max_tokens as usize, d.max_tokens);
        assert_eq!(p.max_rows as usize, d.max_rows);
    }

    #[test]
    fn bad_params_are_invalid_arguments() {
        let p = EmcoderModelParams {
            device: 1,
            ..emcoder_model_default_params()
        };
        let e = p.to_options().unwrap_err();
        assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
        assert!(
            e.message().contains("not built with CUDA"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn load_errors() {
        let mut m = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: every pointer is valid or NULL; errors are freed.
        unsafe {
            let code = emcoder_model_load(
                c"/nonexistent/model".as_ptr(),
                ptr::null(),
                &mut m,
                &mut err,
            );
            assert_eq!(code, EMCODER_ERR_IO);
            assert!(m.is_null());
            assert!((*err).message().contains("/nonexistent/model"));
            emcoder_error_free(err);
            let code = emcoder_model_load(ptr::null(), ptr::null(), &mut m, &mut err);
            assert_eq!(code, EMCODER_ERR_INVALID_ARGUMENT);
            emcoder_error_free(err);
            let code =
                emcoder_model_load(c"x".as_ptr(), ptr::null(), ptr::null_mut(), ptr::null_mut());
            assert_eq!(code, EMCODER_ERR_INVALID_ARGUMENT);
            assert_eq!(emcoder_model_num_labels(ptr::null()), 0);
            assert!(emcoder_model_label(ptr::null(), 0).is_null());
            emcoder_model_free(ptr::null_mut());
        }
    }
}
