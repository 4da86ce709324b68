//! Loading a model directory, its parameters, and its labels.

use super::error::{call, guard, EmcoderError, FfiResult, EMCODER_ERR_BAD_MODEL};
use super::extensible::{self, field_ends, Extensible};
use std::ffi::{c_char, CStr, CString};
use std::mem::size_of;
use std::path::PathBuf;
use std::ptr;
use std::sync::OnceLock;

/// `EmcoderModelParams::device`: the CPU.
pub const EMCODER_DEVICE_CPU: u32 = 0;
/// `EmcoderModelParams::device`: NVIDIA GPU number `device_index` (ABI 4). Needs a libemcoder
/// built with the `cuda` feature, the NVIDIA driver, NVRTC and cuBLAS; otherwise loading fails
/// with `EMCODER_ERR_DEVICE` saying what is missing.
pub const EMCODER_DEVICE_CUDA: u32 = 1;

/// A loaded model: weights, thresholds, tokenizer, label names and its own pool of worker
/// threads. Immutable after load: one model can serve any number of threads at once.
pub struct EmcoderModel {
    pub(crate) model: emcoder_rt::Model,
    labels: Vec<CString>,
}

/// How to load a model. Get one from `emcoder_model_default_params()` (or fill one with
/// `emcoder_model_params_init`) and change fields. A zero-initialized struct also works: every
/// 0 means the default, and `struct_size` 0 stands for the ABI 2 layout.
///
/// Growth: fields are only appended, and a new field's 0 means the behaviour before it
/// existed; the library reads only the fields that lie within `struct_size` bytes (the others
/// take their defaults), so a program built against an older header keeps working.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EmcoderModelParams {
    /// `sizeof(EmcoderModelParams)` as the caller was compiled: set by
    /// `emcoder_model_default_params()` / `emcoder_model_params_init`. The library reads only
    /// the fields that lie entirely within these bytes. 0 (a zero-initialized struct): the
    /// ABI 2 layout, every field of this version.
    pub struct_size: u32,
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
    /// Compute device: `EMCODER_DEVICE_CPU` (0, the default) or `EMCODER_DEVICE_CUDA` (1: the
    /// GPU `device_index`; the weights are uploaded at load and the forward runs there, see
    /// `EMCODER_ERR_DEVICE`). Other values fail with `EMCODER_ERR_INVALID_ARGUMENT`.
    pub device: u32,
    /// Rows (tokens x samples) computed at once, never changes results. One call's scratch
    /// memory is at most `emcoder_model_scratch_bound()`, a linear function of
    /// `max(max_rows, max_tokens)` and the model's dimensions, whatever the number and length
    /// of the texts. 0: the default (16384).
    pub max_rows: u32,
    /// Precision of the weights and matrix products: `EMCODER_PRECISION_F32` (0, the
    /// default: f32 weights used in place), `EMCODER_PRECISION_BF16` (1: weights packed to
    /// bfloat16 at load, bf16 products with f32 accumulation on AMX / AVX512_BF16 where the
    /// CPU has them; mean probabilities within 0.01 of f32) or `EMCODER_PRECISION_INT8` (2,
    /// ABI 5: int8 weights per output channel, activations quantized per row, exact i32 sums;
    /// CPU only, with `EMCODER_DEVICE_CUDA` the load fails with `EMCODER_ERR_DEVICE`). Other
    /// values fail with `EMCODER_ERR_INVALID_ARGUMENT`.
    pub precision: u32,
    /// Scratch memory, in bytes, that the model's running calls may reserve together (idle
    /// arenas included). Each call reserves the most its texts can need before it starts;
    /// while the budget is taken it waits (or fails with `EMCODER_ERR_OUT_OF_MEMORY` when its
    /// options set `fail_fast_on_memory`), and a call that alone needs more than the budget
    /// fails with `EMCODER_ERR_OUT_OF_MEMORY` (the message names `memory_budget`). 0: the
    /// default, twice `emcoder_model_scratch_bound()`. Weights are not counted. Default 0.
    pub memory_budget: u64,
    /// Instruction-set level of every kernel, by name (`"generic"`, `"avx2"`, `"avx512"`,
    /// `"avx512-bf16"`, `"amx"`, `"neon"`, `"neon-bf16"`; NUL-terminated, read during the call).
    /// An unknown name, or a level this CPU cannot run, fails with
    /// `EMCODER_ERR_INVALID_ARGUMENT`. NULL or `""`: the `EMCODER_ISA` environment variable
    /// when set, else the best level of this CPU. Default NULL.
    pub isa: *const c_char,
    /// Nonzero: read `model.safetensors` into process memory instead of mapping it. A mapped
    /// file that is replaced or truncated in place while the model lives crashes the process
    /// (SIGBUS); update model files by atomic rename, or set this. Default 0 (mapped).
    pub copy_weights: u8,
    /// Nonzero: fail with `EMCODER_ERR_BAD_MODEL` when a weight is NaN or infinite (one pass
    /// over the weights at load). Default 0.
    pub refuse_non_finite: u8,
    /// With `EMCODER_DEVICE_CUDA`: the GPU's number (CUDA device ordinal, as `nvidia-smi`
    /// lists them). Must be 0 with `EMCODER_DEVICE_CPU`. Default 0. (ABI 4; 64 bits so that it
    /// starts past the ABI 2 struct's 64 bytes, not in their tail padding.)
    pub device_index: u64,
}

// SAFETY: repr(C), `struct_size` (u32) first, plain-data fields, ends listed in order.
unsafe impl Extensible for EmcoderModelParams {
    const FIELD_ENDS: &'static [usize] = field_ends!(EmcoderModelParams {
        struct_size: u32,
        tokenizer_path: *const c_char,
        n_threads: u32,
        max_tokens: u32,
        device: u32,
        max_rows: u32,
        precision: u32,
        memory_budget: u64,
        isa: *const c_char,
        copy_weights: u8,
        refuse_non_finite: u8,
        device_index: u64,
    });
    const SIZE_ABI2: usize = 64;
    fn defaults() -> Self {
        let d = emcoder_rt::LoadOptions::default();
        EmcoderModelParams {
            struct_size: size_of::<EmcoderModelParams>() as u32,
            tokenizer_path: ptr::null(),
            n_threads: 0,
            max_tokens: u32::try_from(d.max_tokens).unwrap_or(0),
            device: EMCODER_DEVICE_CPU,
            max_rows: u32::try_from(d.max_rows).unwrap_or(0),
            precision: EMCODER_PRECISION_F32,
            memory_budget: 0,
            isa: ptr::null(),
            copy_weights: 0,
            refuse_non_finite: 0,
            device_index: 0,
        }
    }
}

/// `EmcoderModelParams::precision`: f32 weights and products.
pub const EMCODER_PRECISION_F32: u32 = 0;
/// `EmcoderModelParams::precision`: bf16 weights and products, f32 accumulation.
pub const EMCODER_PRECISION_BF16: u32 = 1;
/// `EmcoderModelParams::precision` (ABI 5): the encoder's linear weights int8 per output
/// channel and the token embedding int8 per row (symmetric, f32 scales), activations quantized
/// per row, exact i32 sums; attention, norms, pooling, the head and the statistics stay f32.
/// Weights are quantized at load, or read as they are from an int8 model directory written by
/// `emcoder quantize` (the other precisions widen such a model to f32). CPU only: with
/// `EMCODER_DEVICE_CUDA` the load fails with `EMCODER_ERR_DEVICE`. A library older than ABI 5
/// refuses this value with `EMCODER_ERR_INVALID_ARGUMENT`.
pub const EMCODER_PRECISION_INT8: u32 = 2;

impl EmcoderModelParams {
    fn to_options(self) -> FfiResult<emcoder_rt::LoadOptions> {
        let device = match (self.device, self.device_index) {
            (EMCODER_DEVICE_CPU, 0) => emcoder_rt::Device::Cpu,
            (EMCODER_DEVICE_CPU, i) => {
                return Err(EmcoderError::invalid(format!(
                    "device_index {i} is for EMCODER_DEVICE_CUDA ({EMCODER_DEVICE_CUDA}); with EMCODER_DEVICE_CPU it must be 0"
                )))
            }
            (EMCODER_DEVICE_CUDA, i) => emcoder_rt::Device::Cuda(usize::try_from(i).map_err(|_| {
                EmcoderError::invalid(format!("device_index {i} is not a GPU number"))
            })?),
            (other, _) => {
                return Err(EmcoderError::invalid(format!(
                    "device {other} is unknown: use EMCODER_DEVICE_CPU ({EMCODER_DEVICE_CPU}) or EMCODER_DEVICE_CUDA ({EMCODER_DEVICE_CUDA})"
                )))
            }
        };
        let defaults = emcoder_rt::LoadOptions::default();
        let tokenizer = if self.tokenizer_path.is_null() {
            emcoder_rt::TokenizerChoice::Auto
        } else {
            // SAFETY: a non-NULL tokenizer_path is a NUL-terminated string, per the field's doc.
            let path = unsafe { CStr::from_ptr(self.tokenizer_path) };
            emcoder_rt::TokenizerChoice::Path(c_path(path, "tokenizer_path")?)
        };
        let isa = if self.isa.is_null() {
            None
        } else {
            // SAFETY: a non-NULL isa is a NUL-terminated string, per the field's doc.
            parse_isa(unsafe { CStr::from_ptr(self.isa) })?
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
                EMCODER_PRECISION_INT8 => emcoder_rt::Precision::Int8,
                other => {
                    return Err(EmcoderError::invalid(format!(
                        "precision {other} is unknown: use EMCODER_PRECISION_F32 ({EMCODER_PRECISION_F32}), EMCODER_PRECISION_BF16 ({EMCODER_PRECISION_BF16}) or EMCODER_PRECISION_INT8 ({EMCODER_PRECISION_INT8})"
                    )))
                }
            },
            isa,
            // A budget beyond the address space is no budget (32-bit targets).
            memory_budget: usize::try_from(self.memory_budget).unwrap_or(usize::MAX),
            copy_weights: self.copy_weights != 0,
            refuse_non_finite: self.refuse_non_finite != 0,
            device,
        })
    }
}

/// The `isa` parameter: `""` is the default, a name must be a known level.
fn parse_isa(name: &CStr) -> FfiResult<Option<emcoder_rt::Isa>> {
    let name = name.to_string_lossy();
    if name.trim().is_empty() {
        return Ok(None);
    }
    emcoder_rt::Isa::parse(&name).map(Some).ok_or_else(|| {
        EmcoderError::invalid(format!(
            "isa {name:?} is not an instruction-set level; this CPU runs: {}",
            emcoder_rt::caps().available_names()
        ))
    })
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
                super::error::EMCODER_ERR_INVALID_UTF8,
                format!("{what} is not valid UTF-8: {e}"),
            )
        })
    }
}

/// Fills `*params` with the default load parameters (built-in or directory tokenizer, all
/// cores, 4096 tokens, CPU, f32, the default memory budget, mapped weights) for a struct of
/// `struct_size` bytes, and sets `params->struct_size`: it writes the fields that lie within
/// `struct_size` bytes and nothing past them. Pass `sizeof(EmcoderModelParams)`, as the inline
/// `emcoder_model_default_params()` of this header does.
///
/// NULL handling: `params` NULL, or `struct_size` < 4, writes nothing.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `params` is NULL or points to `struct_size` writable bytes, aligned for the struct.
#[no_mangle]
pub unsafe extern "C" fn emcoder_model_params_init(
    params: *mut EmcoderModelParams,
    struct_size: u32,
) {
    // SAFETY: per this function's contract.
    guard((), || unsafe { extensible::init(params, struct_size) })
}

/// Loads the model directory `model_dir` (`model.safetensors`, `config.json`, optional
/// `thresholds.json` and `tokenizer.json`) and starts its worker threads.
///
/// Returns 0 and sets `*out` to the new model, or returns a negative code, sets `*out` to NULL
/// and, when `err` is not NULL, sets `*err` to a new error (else `*err` is set to NULL).
/// Codes: `EMCODER_ERR_INVALID_ARGUMENT` (NULL `model_dir`/`out`, bad params),
/// `EMCODER_ERR_IO` (missing directory or file, unreadable file),
/// `EMCODER_ERR_BAD_MODEL` (invalid file contents), `EMCODER_ERR_OUT_OF_MEMORY`,
/// `EMCODER_ERR_DEVICE` (a GPU that cannot be used, or `EMCODER_PRECISION_INT8` on a GPU).
///
/// Ownership: the caller owns `*out` (free it with `emcoder_model_free`) and `*err` (free it
/// with `emcoder_error_free`); `model_dir` and `params` are only read during the call.
/// NULL handling: `params` NULL means `emcoder_model_default_params()`; `err` may be NULL;
/// `model_dir` and `out` must not be NULL.
/// Thread safety: safe from any thread; loads may run concurrently.
/// Weights: an F32 `model.safetensors` is used in place from a memory map unless
/// `copy_weights` is set. Replacing or truncating that file in place while the model lives
/// crashes the process with SIGBUS: update model directories by writing a new file and
/// renaming it over the old one (the mapping keeps the old inode), or load with
/// `copy_weights`.
///
/// # Safety
/// `model_dir` is NULL or a NUL-terminated string; `params` is NULL or points to a valid
/// struct of at least `params->struct_size` bytes (of the ABI 2 layout when it is 0) whose
/// `tokenizer_path` and `isa` are NULL or NUL-terminated; `out` and `err` are NULL or point to
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
        let params = if params.is_null() {
            EmcoderModelParams::defaults()
        } else {
            // SAFETY: `params` points to a valid struct of `struct_size` bytes (contract).
            unsafe { extensible::read(params) }
        };
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

/// Frees a model: stops its worker threads and waits for them to exit, so that no code of the
/// library runs for this model once it returns (calling `dlclose` on libemcoder right after is
/// safe when no other model is alive and no log callback is set).
///
/// NULL handling: NULL is a no-op.
/// Thread safety: call it once, after every other call on this model (and every prediction
/// running on it) has returned. Predictions made by the model stay valid: they own their data.
/// Fork: in a child process forked after the load, it frees the model's memory without
/// waiting for the threads (the child has none of them).
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

/// Returns the most scratch memory, in bytes, that one call on this model can use, whatever the
/// number and length of its texts: a linear function of `max(max_rows, max_tokens)` and the
/// model's dimensions. (Weights, the tokenized texts and the results are not scratch.)
///
/// NULL handling: `model` NULL returns 0.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn emcoder_model_scratch_bound(model: *const EmcoderModel) -> u64 {
    guard(0, || {
        // SAFETY: NULL or a live model, per the contract.
        unsafe { model.as_ref() }.map_or(0, |m| m.model.scratch_bound() as u64)
    })
}

/// Returns the memory budget of the model's scratch arenas, in bytes: the `memory_budget`
/// parameter, or its default (twice `emcoder_model_scratch_bound()`) when that was 0.
///
/// NULL handling: `model` NULL returns 0.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn emcoder_model_memory_budget(model: *const EmcoderModel) -> u64 {
    guard(0, || {
        // SAFETY: NULL or a live model, per the contract.
        unsafe { model.as_ref() }.map_or(0, |m| m.model.memory_budget() as u64)
    })
}

/// Returns the name of the instruction-set level the model's kernels run at, e.g.
/// `"avx512"` (the names of `EmcoderModelParams::isa`).
///
/// Ownership: the string is static; never free it.
/// NULL handling: `model` NULL returns NULL.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn emcoder_model_isa(model: *const EmcoderModel) -> *const c_char {
    guard(ptr::null(), || {
        // SAFETY: NULL or a live model, per the contract.
        unsafe { model.as_ref() }.map_or(ptr::null(), |m| isa_name(m.model.isa()))
    })
}

/// The level's name as a C string that lives as long as the process.
fn isa_name(isa: emcoder_rt::Isa) -> *const c_char {
    static NAMES: OnceLock<Vec<(emcoder_rt::Isa, CString)>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            emcoder_rt::Isa::ALL
                .iter()
                .map(|&i| (i, CString::new(i.name()).unwrap_or_default()))
                .collect()
        })
        .iter()
        .find(|(i, _)| *i == isa)
        .map_or(ptr::null(), |(_, name)| name.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::*;
    use std::mem::offset_of;

    /// What `emcoder_model_default_params()` (inline in the header) returns.
    fn default_params() -> EmcoderModelParams {
        let mut p = std::mem::MaybeUninit::<EmcoderModelParams>::zeroed();
        // SAFETY: `p` is a whole, writable struct; zeroed is a valid value.
        unsafe {
            emcoder_model_params_init(p.as_mut_ptr(), size_of::<EmcoderModelParams>() as u32);
            p.assume_init()
        }
    }

    #[test]
    fn defaults_match_the_runtime() {
        let p = default_params();
        let d = emcoder_rt::LoadOptions::default();
        assert_eq!(p.struct_size as usize, size_of::<EmcoderModelParams>());
        assert!(p.tokenizer_path.is_null() && p.isa.is_null());
        assert_eq!((p.n_threads, p.device), (0, EMCODER_DEVICE_CPU));
        assert_eq!(p.max_tokens as usize, d.max_tokens);
        assert_eq!(p.max_rows as usize, d.max_rows);
        assert_eq!(
            (p.memory_budget, p.copy_weights, p.refuse_non_finite),
            (0, 0, 0)
        );
        // SAFETY: NULL writes nothing.
        unsafe { emcoder_model_params_init(ptr::null_mut(), 64) };
    }

    /// The ABI 2 layout is frozen: `struct_size` 0 means these 64 bytes.
    #[test]
    fn abi2_layout() {
        type P = EmcoderModelParams;
        assert_eq!(P::SIZE_ABI2, 64);
        // ABI 4's device_index starts past the ABI 2 bytes.
        assert_eq!(offset_of!(P, device_index), 64);
        assert_eq!(size_of::<P>(), 72);
        assert_eq!(offset_of!(P, tokenizer_path), 8);
        assert_eq!(offset_of!(P, precision), 32);
        // The first field added after the ABI 1 set starts past its sizeof (40), not in
        // its tail padding.
        assert_eq!(offset_of!(P, memory_budget), 40);
        assert_eq!(offset_of!(P, refuse_non_finite), 57);
    }

    #[test]
    fn zeroed_and_smaller_structs_read_as_defaults() {
        // SAFETY: every source is a whole struct.
        unsafe {
            let zero = std::mem::zeroed::<EmcoderModelParams>();
            let o = extensible::read(&zero).to_options().unwrap();
            let d = emcoder_rt::LoadOptions::default();
            assert_eq!((o.max_tokens, o.max_rows), (d.max_tokens, d.max_rows));
            assert_eq!((o.memory_budget, o.isa), (0, None));
            // A caller that knows only the ABI 1 fields (40 bytes): what lies past them,
            // here garbage, is never read.
            let old = EmcoderModelParams {
                struct_size: 40,
                n_threads: 3,
                memory_budget: 12345,
                isa: c"bogus".as_ptr(),
                copy_weights: 7,
                ..default_params()
            };
            let p = extensible::read(&old);
            assert_eq!((p.struct_size, p.n_threads), (40, 3));
            assert_eq!((p.memory_budget, p.copy_weights), (0, 0));
            assert!(p.isa.is_null());
            assert!(p.to_options().is_ok());
        }
    }

    #[test]
    fn isa_names() {
        let with = |name: &CStr| {
            EmcoderModelParams {
                isa: name.as_ptr(),
                ..default_params()
            }
            .to_options()
        };
        assert_eq!(with(c"").unwrap().isa, None);
        assert_eq!(
            with(c"generic").unwrap().isa,
            Some(emcoder_rt::Isa::Generic)
        );
        let e = with(c"sse9").unwrap_err();
        assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
        assert!(e.message().contains("sse9"), "{}", e.message());
        for isa in emcoder_rt::Isa::ALL {
            // SAFETY: a static C string.
            let name = unsafe { CStr::from_ptr(isa_name(isa)) };
            assert_eq!(name.to_str().unwrap(), isa.name());
        }
    }

    #[test]
    fn devices_and_bad_device_params() {
        let with = |device, device_index| {
            EmcoderModelParams {
                device,
                device_index,
                ..default_params()
            }
            .to_options()
        };
        assert_eq!(
            with(EMCODER_DEVICE_CPU, 0).unwrap().device,
            emcoder_rt::Device::Cpu
        );
        assert_eq!(
            with(EMCODER_DEVICE_CUDA, 3).unwrap().device,
            emcoder_rt::Device::Cuda(3)
        );
        for (device, index, says) in [
            (2, 0, "device 2 is unknown"),
            (
                EMCODER_DEVICE_CPU,
                1,
                "device_index 1 is for EMCODER_DEVICE_CUDA",
            ),
        ] {
            let e = with(device, index).unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
            assert!(e.message().contains(says), "{}", e.message());
        }
    }

    #[test]
    fn precisions_and_an_unknown_precision() {
        let with = |precision| {
            EmcoderModelParams {
                precision,
                ..default_params()
            }
            .to_options()
        };
        for (value, want) in [
            (EMCODER_PRECISION_F32, emcoder_rt::Precision::F32),
            (EMCODER_PRECISION_BF16, emcoder_rt::Precision::Bf16),
            (EMCODER_PRECISION_INT8, emcoder_rt::Precision::Int8),
        ] {
            assert_eq!(with(value).unwrap().precision, want);
        }
        assert_eq!(EMCODER_PRECISION_INT8, 2);
        for bad in [3, 7, u32::MAX] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
            let m = e.message();
            assert!(m.contains(&format!("precision {bad} is unknown")), "{m}");
            assert!(m.contains("EMCODER_PRECISION_INT8 (2)"), "{m}");
        }
    }

    /// int8 loads on the CPU; on a GPU it is a device error that says int8 is CPU only (or,
    /// in a build without the cuda feature, that there is no CUDA backend).
    #[test]
    fn int8_loads_on_the_cpu_and_is_a_device_error_on_a_gpu() {
        let dir = std::ffi::CString::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny-vocab-bf16"
        ))
        .unwrap();
        let cpu = EmcoderModelParams {
            precision: EMCODER_PRECISION_INT8,
            n_threads: 1,
            ..default_params()
        };
        let gpu = EmcoderModelParams {
            device: EMCODER_DEVICE_CUDA,
            ..cpu
        };
        let (mut m, mut err) = (ptr::null_mut(), ptr::null_mut());
        // SAFETY: valid pointers; the model and the error are freed.
        unsafe {
            assert_eq!(emcoder_model_load(dir.as_ptr(), &cpu, &mut m, &mut err), 0);
            assert!(!m.is_null() && err.is_null());
            assert_eq!((*m).model.precision(), emcoder_rt::Precision::Int8);
            emcoder_model_free(m);
            let code = emcoder_model_load(dir.as_ptr(), &gpu, &mut m, &mut err);
            assert_eq!(code, EMCODER_ERR_DEVICE);
            assert!(m.is_null());
            let msg = (*err).message();
            assert!(msg.contains("int8") || msg.contains("CUDA"), "{msg}");
            emcoder_error_free(err);
        }
    }

    /// A GPU that cannot be used (no driver here, or a build without the cuda feature) is
    /// EMCODER_ERR_DEVICE with what to do, and the library stays usable. (A fixture with the
    /// full vocabulary: the built-in tokenizer is checked before the device is opened.)
    #[test]
    fn an_unusable_gpu_is_a_device_error() {
        let dir = std::ffi::CString::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny-vocab-bf16"
        ))
        .unwrap();
        let p = EmcoderModelParams {
            device: EMCODER_DEVICE_CUDA,
            device_index: 0,
            tokenizer_path: ptr::null(),
            ..default_params()
        };
        let (mut m, mut err) = (ptr::null_mut(), ptr::null_mut());
        // SAFETY: valid pointers; the error is freed.
        unsafe {
            let code = emcoder_model_load(dir.as_ptr(), &p, &mut m, &mut err);
            if code == 0 {
                eprintln!("a GPU is usable here");
                emcoder_model_free(m);
                return;
            }
            assert_eq!(code, crate::error::EMCODER_ERR_DEVICE);
            assert!(m.is_null());
            let msg = CStr::from_ptr(crate::error::emcoder_error_message(err)).to_string_lossy();
            assert!(msg.contains("cuda:0") || msg.contains("CUDA"), "{msg}");
            crate::error::emcoder_error_free(err);
        }
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
            assert_eq!(emcoder_model_scratch_bound(ptr::null()), 0);
            assert_eq!(emcoder_model_memory_budget(ptr::null()), 0);
            assert!(emcoder_model_isa(ptr::null()).is_null());
            emcoder_model_free(ptr::null_mut());
        }
    }
}
