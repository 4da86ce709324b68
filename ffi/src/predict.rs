//! Predicting: the options (with cancellation and a timeout), the texts (NUL-terminated, or
//! pointer and length), and the two calls.

use super::error::{
    call, EmcoderError, FfiResult, EMCODER_ERR_INVALID_UTF8, EMCODER_ERR_OUT_OF_MEMORY,
};
use super::extensible::{self, field_ends, Extensible};
use super::model::EmcoderModel;
use super::prediction::EmcoderPrediction;
use std::ffi::{c_char, CStr};
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default seed of the dropout masks (`emcoder_predict_default_options().seed`).
pub const EMCODER_DEFAULT_SEED: u64 = 42;
/// The default number of MC-dropout samples per text, as in the model card.
pub const EMCODER_DEFAULT_SAMPLES: u32 = 50;

/// The cell a caller sets to cancel predictions: `typedef volatile int32_t EmcoderCancelFlag`
/// in the header (written there by hand: cbindgen has no `volatile`).
pub type EmcoderCancelFlag = i32;

/// How to predict. Get one from `emcoder_predict_default_options()` (or fill one with
/// `emcoder_predict_options_init`) and change fields. A zero-initialized struct means
/// `n_samples` 0 (one deterministic pass), seed 0, and the defaults of every other field;
/// `struct_size` 0 stands for the ABI 2 layout.
///
/// Growth: fields are only appended, and a new field's 0 means the behaviour before it
/// existed; the library reads only the fields that lie within `struct_size` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmcoderPredictOptions {
    /// `sizeof(EmcoderPredictOptions)` as the caller was compiled: set by
    /// `emcoder_predict_default_options()` / `emcoder_predict_options_init`. The library reads
    /// only the fields that lie entirely within these bytes. 0: the ABI 2 layout.
    pub struct_size: u32,
    /// Monte-Carlo dropout samples per text. 0: one deterministic pass with dropout off
    /// (`std`, `aleatoric`... come from that one pass, and the logits are available through
    /// `emcoder_prediction_logits`). Default `EMCODER_DEFAULT_SAMPLES` (50).
    pub n_samples: u32,
    /// Seed of the dropout masks. A text's numbers are a pure function of (model, text,
    /// n_samples, seed): the thread count and the other texts of the call never change them.
    /// Default `EMCODER_DEFAULT_SEED` (42).
    pub seed: u64,
    /// Nonzero: cut texts longer than the model's `max_tokens` (keeping `[CLS] ... [SEP]`; the
    /// tokenizer sees a bounded prefix of a very long text); 0: such texts fail with
    /// `EMCODER_ERR_INVALID_ARGUMENT`. Default 0.
    pub truncate: u8,
    /// Adaptive sampling when > 0: samples are drawn in blocks of 10 and a text stops once
    /// every label's mean probability has a standard error below this (never more than
    /// `n_samples`; `emcoder_prediction_n_samples` tells how many were used). 0: always
    /// `n_samples`. Negative or non-finite values fail with `EMCODER_ERR_INVALID_ARGUMENT`.
    /// Default 0.
    pub tolerance: f32,
    /// A cancellation flag owned by the caller, or NULL. Setting `*cancel` to nonzero from any
    /// thread stops the calls that were given it: each returns `EMCODER_ERR_CANCELLED` within
    /// about one layer's work (the flag is read before every layer and while waiting for
    /// memory). Write it atomically (C11 `atomic_store_explicit` on an aligned int32_t,
    /// `std::atomic_ref<int32_t>`, Go's `atomic.StoreInt32`; the library reads it with a
    /// relaxed atomic load); it must be 4-byte aligned and stay valid until the call returns.
    /// The library never writes it: reset it yourself before reusing it. Default NULL.
    pub cancel: *const EmcoderCancelFlag,
    /// A deadline, in milliseconds from the start of the call: past it, the call returns
    /// `EMCODER_ERR_CANCELLED` within about one layer's work. Tokenizing is not interrupted,
    /// so a call can overrun by the time its texts take to tokenize (bounded by `max_tokens`
    /// per text when truncating). 0: none. Default 0.
    pub timeout_ms: u64,
    /// Nonzero: when the model's memory budget is taken by running calls, fail at once with
    /// `EMCODER_ERR_OUT_OF_MEMORY` instead of waiting for them (the wait still honours
    /// `cancel` and `timeout_ms`). Default 0 (wait).
    pub fail_fast_on_memory: u8,
    /// Sampling that stops on decisions when nonzero (ABI 3): samples are drawn in blocks of
    /// 10 and a text stops once every label's thresholded decision is settled at this error
    /// rate A: per label, the mean probability lies more than z standard errors from the
    /// label's threshold (and, where the model's `thresholds.json` has a `u` bound and the
    /// mean is above the threshold, the std more than z of its standard errors from `u`), with
    /// z = Phi^-1(1 - A / (2K)) for the K blocks `n_samples` allows (Bonferroni over the
    /// looks). What it guarantees (normal approximation): for each (text, label), the
    /// probability that the reported decision differs from the decision of the label's true
    /// mean is at most A. A text never draws more than `n_samples` samples, and
    /// `emcoder_prediction_n_samples` tells how many it drew; one whose decisions never settle
    /// draws all `n_samples`, the samples of the fixed-N run, so its numbers equal the fixed-N
    /// ones. The statistics are those of the samples drawn. Ignored (but still checked) when
    /// `n_samples` is 0.
    ///
    /// 0: off (always `n_samples`, as before this field existed). Otherwise it must be finite
    /// and strictly between 0 and 1 (e.g. 0.01), and `tolerance` must be 0 (they are two
    /// stopping rules: set one of them); anything else fails with
    /// `EMCODER_ERR_INVALID_ARGUMENT`. The library uses it in single precision. A `double`
    /// so that it starts at offset 48, after the whole ABI 2 struct and not in its tail
    /// padding. Default 0.
    pub decision_error: f64,
}

// The first field of ABI 3 starts where the ABI 2 struct ended, never in its tail padding
// (bytes 41..48), which an ABI 2 caller may leave as garbage.
const _: () = assert!(
    std::mem::offset_of!(EmcoderPredictOptions, decision_error)
        == <EmcoderPredictOptions as Extensible>::SIZE_ABI2
);

// SAFETY: repr(C), `struct_size` (u32) first, plain-data fields, ends listed in order.
unsafe impl Extensible for EmcoderPredictOptions {
    const FIELD_ENDS: &'static [usize] = field_ends!(EmcoderPredictOptions {
        struct_size: u32,
        n_samples: u32,
        seed: u64,
        truncate: u8,
        tolerance: f32,
        cancel: *const EmcoderCancelFlag,
        timeout_ms: u64,
        fail_fast_on_memory: u8,
        decision_error: f64,
    });
    const SIZE_ABI2: usize = 48;
    fn defaults() -> Self {
        EmcoderPredictOptions {
            struct_size: size_of::<EmcoderPredictOptions>() as u32,
            n_samples: EMCODER_DEFAULT_SAMPLES,
            seed: EMCODER_DEFAULT_SEED,
            truncate: 0,
            tolerance: 0.0,
            cancel: ptr::null(),
            timeout_ms: 0,
            fail_fast_on_memory: 0,
            decision_error: 0.0,
        }
    }
}

/// A text given as a pointer and a length, for callers whose strings are not NUL-terminated
/// (Go, Python, C++ `std::string_view`): `len` bytes of UTF-8 at `data`, read during the call
/// only. `data` may be NULL when `len` is 0 (an empty text). A text must not contain a NUL
/// byte (U+0000): that is `EMCODER_ERR_INVALID_ARGUMENT`, so that both predict functions read
/// the same texts.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EmcoderText {
    /// The first byte; NULL only when `len` is 0.
    pub data: *const c_char,
    /// The length in bytes (no terminator).
    pub len: usize,
}

/// The caller's cancellation flag, read from the model's worker threads.
struct CancelFlag(*const EmcoderCancelFlag);

// SAFETY: the flag is only read, atomically; the caller keeps it valid until the call
// returns (the field's contract), and the callback holding it is dropped before that.
unsafe impl Send for CancelFlag {}
// SAFETY: as above.
unsafe impl Sync for CancelFlag {}

impl CancelFlag {
    fn is_set(&self) -> bool {
        // SAFETY: a live, aligned i32 (checked when the options are read), written by the
        // caller atomically: a relaxed load never tears.
        unsafe { AtomicI32::from_ptr(self.0.cast_mut()) }.load(Ordering::Relaxed) != 0
    }
}

impl EmcoderPredictOptions {
    /// `decision_error` checked: None when 0 (off), else the error rate in single precision,
    /// strictly between 0 and 1.
    fn decision_error(&self) -> FfiResult<Option<f32>> {
        let a = self.decision_error;
        if a == 0.0 {
            return Ok(None);
        }
        // In (0, 1) as a double and still so once rounded to the f32 the runtime uses.
        let single = a as f32;
        if !(a > 0.0 && a < 1.0 && single > 0.0 && single < 1.0) {
            return Err(EmcoderError::invalid(format!(
                "decision_error {a} must be 0 (off) or an error rate strictly between 0 and 1 \
                 (e.g. 0.01){}",
                if a > 0.0 && a < 1.0 {
                    format!(" that single precision can hold (it rounds to {single})")
                } else {
                    String::new()
                }
            )));
        }
        Ok(Some(single))
    }

    fn to_options(self) -> FfiResult<emcoder_rt::PredictOptions> {
        if !(self.tolerance >= 0.0 && self.tolerance.is_finite()) {
            return Err(EmcoderError::invalid(format!(
                "tolerance {} must be 0 (off) or a positive number",
                self.tolerance
            )));
        }
        let decision_error = self.decision_error()?;
        if self.tolerance > 0.0 && decision_error.is_some() {
            return Err(EmcoderError::invalid(format!(
                "tolerance {} and decision_error {} are two stopping rules: set one of them \
                 (the other 0)",
                self.tolerance, self.decision_error
            )));
        }
        if !(self.cancel as usize).is_multiple_of(align_of::<AtomicI32>()) {
            return Err(EmcoderError::invalid(format!(
                "cancel {:p} is not aligned to 4 bytes",
                self.cancel
            )));
        }
        let callback: Option<emcoder_rt::engine::stop::StopFn> =
            (!self.cancel.is_null()).then(|| {
                let flag = CancelFlag(self.cancel);
                Arc::new(move || flag.is_set()) as emcoder_rt::engine::stop::StopFn
            });
        // A timeout too far away for the clock is no timeout.
        let deadline = (self.timeout_ms > 0)
            .then(|| Instant::now().checked_add(Duration::from_millis(self.timeout_ms)))
            .flatten();
        Ok(emcoder_rt::PredictOptions {
            samples: self.n_samples.max(1),
            seed: self.seed,
            deterministic: self.n_samples == 0,
            truncate: self.truncate != 0,
            tolerance: (self.tolerance > 0.0).then_some(self.tolerance),
            decision_error,
            stop: emcoder_rt::Stop {
                flag: None,
                deadline,
                callback,
            },
            wait_for_memory: self.fail_fast_on_memory == 0,
        })
    }
}

/// Fills `*options` with the default prediction options (50 MC samples, seed 42, no
/// truncation, no adaptive sampling or stopping on decisions, no cancellation flag, no
/// timeout, waiting for memory) for a struct of `struct_size` bytes, and sets
/// `options->struct_size`: it writes the fields that lie within `struct_size` bytes and
/// nothing past them. Pass `sizeof(EmcoderPredictOptions)`, as the inline
/// `emcoder_predict_default_options()` of this header does.
///
/// NULL handling: `options` NULL, or `struct_size` < 4, writes nothing.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `options` is NULL or points to `struct_size` writable bytes, aligned for the struct.
#[no_mangle]
pub unsafe extern "C" fn emcoder_predict_options_init(
    options: *mut EmcoderPredictOptions,
    struct_size: u32,
) {
    // SAFETY: per this function's contract.
    super::error::guard((), || unsafe { extensible::init(options, struct_size) })
}

/// `n_texts` checked against the size of one entry: not 0, not beyond the address space.
fn check_count(func: &str, n_texts: usize, entry: usize) -> FfiResult<()> {
    if n_texts == 0 {
        return Err(EmcoderError::invalid(format!(
            "{func}: `n_texts` is 0: pass at least one text"
        )));
    }
    if n_texts > isize::MAX as usize / entry {
        return Err(EmcoderError::invalid(format!(
            "{func}: `n_texts` {n_texts} is impossibly large"
        )));
    }
    Ok(())
}

/// Text `i` as UTF-8 without NUL bytes.
fn check_text(i: usize, bytes: &[u8]) -> FfiResult<&str> {
    let s = std::str::from_utf8(bytes).map_err(|e| {
        EmcoderError::new(
            EMCODER_ERR_INVALID_UTF8,
            format!(
                "texts[{i}] is not valid UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(EmcoderError::invalid(format!(
            "texts[{i}] contains a NUL byte at offset {at}: texts may not contain U+0000"
        )));
    }
    Ok(s)
}

/// NUL-terminated texts from C, checked: non-NULL entries, valid UTF-8.
///
/// # Safety
/// `texts` points to `n_texts` pointers, each NULL or NUL-terminated.
unsafe fn c_texts<'a>(texts: *const *const c_char, n_texts: usize) -> FfiResult<Vec<&'a str>> {
    check_count("emcoder_predict", n_texts, size_of::<*const c_char>())?;
    if texts.is_null() {
        return Err(EmcoderError::invalid("emcoder_predict: `texts` is NULL"));
    }
    // SAFETY: `texts` points to `n_texts` pointers (contract), and the size fits in isize.
    let ptrs = unsafe { std::slice::from_raw_parts(texts, n_texts) };
    ptrs.iter()
        .enumerate()
        .map(|(i, &p)| {
            if p.is_null() {
                return Err(EmcoderError::invalid(format!(
                    "emcoder_predict: texts[{i}] is NULL"
                )));
            }
            // SAFETY: a non-NULL entry is NUL-terminated (contract) and outlives the call.
            check_text(i, unsafe { CStr::from_ptr(p) }.to_bytes())
        })
        .collect()
}

/// (pointer, length) texts from C, checked: a NULL pointer only with length 0, lengths within
/// the address space, valid UTF-8 without NUL bytes.
///
/// # Safety
/// `texts` points to `n_texts` entries, each NULL with length 0 or `len` readable bytes.
unsafe fn sized_texts<'a>(texts: *const EmcoderText, n_texts: usize) -> FfiResult<Vec<&'a str>> {
    check_count("emcoder_predict_texts", n_texts, size_of::<EmcoderText>())?;
    if texts.is_null() {
        return Err(EmcoderError::invalid(
            "emcoder_predict_texts: `texts` is NULL",
        ));
    }
    // SAFETY: `texts` points to `n_texts` entries (contract), and the size fits in isize.
    let entries = unsafe { std::slice::from_raw_parts(texts, n_texts) };
    entries
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.len == 0 {
                return Ok("");
            }
            if t.data.is_null() {
                return Err(EmcoderError::invalid(format!(
                    "emcoder_predict_texts: texts[{i}].data is NULL but its len is {}",
                    t.len
                )));
            }
            if t.len > isize::MAX as usize {
                return Err(EmcoderError::invalid(format!(
                    "emcoder_predict_texts: texts[{i}].len {} is impossibly large",
                    t.len
                )));
            }
            // SAFETY: `len` readable bytes at `data` (contract), len <= isize::MAX.
            check_text(i, unsafe {
                std::slice::from_raw_parts(t.data.cast::<u8>(), t.len)
            })
        })
        .collect()
}

/// Checks, before any work, that the logits of the request (texts x samples x labels floats,
/// the largest buffer of the results) can be allocated.
fn check_memory(n_texts: usize, n_samples: u32, num_labels: usize) -> FfiResult<()> {
    let floats = n_texts
        .checked_mul(n_samples.max(1) as usize)
        .and_then(|n| n.checked_mul(num_labels));
    let ok = floats.is_some_and(|n| Vec::<f32>::new().try_reserve_exact(n).is_ok());
    if ok {
        return Ok(());
    }
    Err(EmcoderError::new(
        EMCODER_ERR_OUT_OF_MEMORY,
        format!(
            "cannot allocate the logits of {n_texts} texts x {} samples x {num_labels} labels \
             ({} bytes): predict fewer texts or samples per call",
            n_samples.max(1),
            floats.map_or("more than usize::MAX".into(), |n| (n as u128 * 4)
                .to_string())
        ),
    ))
}

/// The body shared by both predict functions, after the arguments are checked.
///
/// # Safety
/// `model` is NULL or live; `options` is NULL or valid for its `struct_size`; `out` is NULL
/// or writable; `texts` yields the checked texts (it runs after the options are read).
unsafe fn predict_with<'a>(
    func: &str,
    model: *const EmcoderModel,
    options: *const EmcoderPredictOptions,
    out: *mut *mut EmcoderPrediction,
    texts: impl FnOnce() -> FfiResult<Vec<&'a str>>,
) -> FfiResult<()> {
    if out.is_null() {
        return Err(EmcoderError::invalid(format!("{func}: `out` is NULL")));
    }
    // SAFETY: `out` is non-NULL and writable, per the contract.
    unsafe { *out = ptr::null_mut() };
    // SAFETY: NULL or a live model, per the contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return Err(EmcoderError::invalid(format!("{func}: `model` is NULL")));
    };
    let o = if options.is_null() {
        EmcoderPredictOptions::defaults()
    } else {
        // SAFETY: `options` points to a valid struct of `struct_size` bytes (contract).
        unsafe { extensible::read(options) }
    };
    let opts = o.to_options()?;
    let texts = texts()?;
    let num_labels = m.model.labels().len();
    check_memory(texts.len(), o.n_samples, num_labels)?;
    // A flag set (or a deadline passed) before the call spares the tokenizing too.
    opts.stop.check()?;
    let preds = m.model.predict(&texts, &opts)?;
    let p = EmcoderPrediction::from_runtime(&preds, num_labels)?;
    // SAFETY: as above; ownership passes to the caller.
    unsafe { *out = Box::into_raw(Box::new(p)) };
    Ok(())
}

/// Predicts the emotions of `n_texts` NUL-terminated texts: for each, one `EmcoderLabelStats`
/// per label over `options->n_samples` MC-dropout samples (or one deterministic pass when it
/// is 0).
///
/// Returns 0 and sets `*out` to the new prediction, or returns a negative code, sets `*out` to
/// NULL and, when `err` is not NULL, sets `*err` to a new error (else `*err` is set to NULL).
/// Codes: `EMCODER_ERR_INVALID_ARGUMENT` (NULL `model`/`texts`/`out` or a NULL entry of `texts`,
/// `n_texts` 0, a text over `max_tokens` without truncation, a bad option, a model loaded
/// before this process forked), `EMCODER_ERR_INVALID_UTF8`, `EMCODER_ERR_BAD_MODEL` (the
/// tokenizer fails), `EMCODER_ERR_OUT_OF_MEMORY` (see its doc), `EMCODER_ERR_CANCELLED`
/// (`options->cancel` set, or `options->timeout_ms` passed).
///
/// Memory: the call's scratch is at most `emcoder_model_scratch_bound()`, reserved under the
/// model's memory budget before the work starts (see `EmcoderModelParams::memory_budget`);
/// the results take texts x labels x 24 bytes; MC samples take texts x samples x labels x 4
/// bytes while the call runs.
/// Ownership: the caller owns `*out` (free it with `emcoder_prediction_free`) and `*err`;
/// `texts` and `options` are only read during the call.
/// NULL handling: `options` NULL means `emcoder_predict_default_options()`; `err` may be NULL;
/// `model`, `texts`, every `texts[i]` and `out` must not be NULL.
/// Thread safety: safe to call concurrently from any number of threads on the same model; the
/// calls share the model's worker threads.
/// Fork: in a child process forked after the model was loaded, the model has no worker threads
/// (fork copies only the calling thread): the call fails with `EMCODER_ERR_INVALID_ARGUMENT`
/// (the message says so) instead of waiting forever. Load a new model in the child.
///
/// # Safety
/// `model` is NULL or a live model; `texts` is NULL or points to `n_texts` pointers, each NULL
/// or NUL-terminated; `options` is NULL or valid (see `EmcoderPredictOptions::struct_size`);
/// `out` and `err` are NULL or point to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn emcoder_predict(
    model: *const EmcoderModel,
    texts: *const *const c_char,
    n_texts: usize,
    options: *const EmcoderPredictOptions,
    out: *mut *mut EmcoderPrediction,
    err: *mut *mut EmcoderError,
) -> i32 {
    call(err, || {
        // SAFETY: this function's contract covers predict_with's and c_texts'.
        unsafe {
            predict_with("emcoder_predict", model, options, out, || {
                c_texts(texts, n_texts)
            })
        }
    })
}

/// `emcoder_predict` over texts given as (pointer, length) pairs, so that callers whose
/// strings are not NUL-terminated need not copy them. Same results, codes, memory, ownership,
/// thread safety and fork behaviour; in addition, a text containing a NUL byte, or a NULL
/// `data` with a nonzero `len`, is `EMCODER_ERR_INVALID_ARGUMENT` (the message names
/// `texts[i]`), and invalid UTF-8 is `EMCODER_ERR_INVALID_UTF8`.
///
/// # Safety
/// `model` is NULL or a live model; `texts` is NULL or points to `n_texts` `EmcoderText`s,
/// each with `len` readable bytes at `data` (or `len` 0); `options` is NULL or valid; `out`
/// and `err` are NULL or point to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn emcoder_predict_texts(
    model: *const EmcoderModel,
    texts: *const EmcoderText,
    n_texts: usize,
    options: *const EmcoderPredictOptions,
    out: *mut *mut EmcoderPrediction,
    err: *mut *mut EmcoderError,
) -> i32 {
    call(err, || {
        // SAFETY: this function's contract covers predict_with's and sized_texts'.
        unsafe {
            predict_with("emcoder_predict_texts", model, options, out, || {
                sized_texts(texts, n_texts)
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::*;
    use std::mem::offset_of;

    /// What `emcoder_predict_default_options()` (inline in the header) returns.
    fn default_options() -> EmcoderPredictOptions {
        let mut o = std::mem::MaybeUninit::<EmcoderPredictOptions>::zeroed();
        // SAFETY: `o` is a whole, writable struct; zeroed is a valid value.
        unsafe {
            emcoder_predict_options_init(o.as_mut_ptr(), size_of::<EmcoderPredictOptions>() as u32);
            o.assume_init()
        }
    }

    #[test]
    fn defaults_match_the_runtime() {
        let o = default_options();
        let d = emcoder_rt::PredictOptions::default();
        assert_eq!(EMCODER_DEFAULT_SEED, emcoder_rt::DEFAULT_SEED);
        assert_eq!(EMCODER_DEFAULT_SAMPLES, emcoder_rt::DEFAULT_SAMPLES);
        assert_eq!(o.struct_size as usize, size_of::<EmcoderPredictOptions>());
        assert_eq!(
            (o.n_samples, o.seed, o.truncate != 0),
            (d.samples, d.seed, d.truncate)
        );
        assert!(o.cancel.is_null());
        assert_eq!((o.timeout_ms, o.fail_fast_on_memory), (0, 0));
        assert_eq!(o.decision_error, 0.0);
        let r = o.to_options().unwrap();
        assert!(r.wait_for_memory && r.stop.deadline.is_none() && r.stop.callback.is_none());
        assert_eq!((r.tolerance, r.decision_error), (None, None));
    }

    /// The ABI 2 layout is frozen: `struct_size` 0 means these 48 bytes. ABI 3 appends
    /// `decision_error` after them.
    #[test]
    fn abi2_layout() {
        type O = EmcoderPredictOptions;
        assert_eq!(O::SIZE_ABI2, 48);
        assert_eq!(offset_of!(O, n_samples), 4);
        assert_eq!(offset_of!(O, tolerance), 20);
        // The first field added after the ABI 1 set starts past its sizeof (24).
        assert_eq!(offset_of!(O, cancel), 24);
        assert_eq!(offset_of!(O, fail_fast_on_memory), 40);
        // ABI 3's field starts past the whole ABI 2 struct, not in its tail padding (41..48).
        assert_eq!(offset_of!(O, decision_error), O::SIZE_ABI2);
        assert_eq!(size_of::<O>(), 56);
        assert_eq!(O::FIELD_ENDS.last(), Some(&56));
        assert_eq!(
            (size_of::<EmcoderText>(), offset_of!(EmcoderText, len)),
            (16, 8)
        );
    }

    /// An ABI 2 caller: 48 bytes whose tail padding (41..48) holds garbage, followed by bytes
    /// it does not own. It gets decision_error 0 (off), as before ABI 3.
    #[test]
    fn abi2_callers_get_no_decision_rule() {
        // A 56-byte, 8-aligned buffer: the caller's 48 bytes, then 8 bytes past its struct.
        let mut buf = [0xABu8; 64];
        let at = buf.as_ptr().align_offset(8);
        let caller = &mut buf[at..at + size_of::<EmcoderPredictOptions>()];
        let abi2 = EmcoderPredictOptions {
            n_samples: 20,
            seed: 7,
            ..default_options()
        };
        // SAFETY: the struct's 41 bytes up to `fail_fast_on_memory`; plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts((&abi2 as *const EmcoderPredictOptions).cast::<u8>(), 41)
        };
        caller[..41].copy_from_slice(bytes);
        for size in [48u32, 0] {
            caller[..4].copy_from_slice(&size.to_ne_bytes());
            assert!(caller[41..].iter().all(|&b| b == 0xAB));
            // SAFETY: an 8-aligned buffer of 56 readable bytes.
            let o = unsafe { extensible::read(caller.as_ptr().cast::<EmcoderPredictOptions>()) };
            assert_eq!((o.struct_size, o.n_samples, o.seed), (size, 20, 7));
            assert_eq!(o.decision_error, 0.0);
            let r = o.to_options().unwrap();
            assert_eq!((r.samples, r.tolerance, r.decision_error), (20, None, None));
        }
        // The same bytes read as an ABI 3 struct: the garbage is decision_error, refused.
        caller[..4].copy_from_slice(&56u32.to_ne_bytes());
        // SAFETY: as above.
        let o = unsafe { extensible::read(caller.as_ptr().cast::<EmcoderPredictOptions>()) };
        assert_ne!(o.decision_error, 0.0);
        assert_eq!(
            o.to_options().unwrap_err().code(),
            EMCODER_ERR_INVALID_ARGUMENT
        );
    }

    #[test]
    fn decision_error_values() {
        let with = |tolerance: f32, decision_error: f64| EmcoderPredictOptions {
            tolerance,
            decision_error,
            ..default_options()
        };
        let r = with(0.0, 0.01).to_options().unwrap();
        assert_eq!((r.decision_error, r.tolerance), (Some(0.01f32), None));
        assert_eq!(
            with(0.0, 0.5).to_options().unwrap().decision_error,
            Some(0.5)
        );
        // Off, and the tolerance alone, as before ABI 3.
        assert_eq!(with(0.0, 0.0).to_options().unwrap().decision_error, None);
        assert_eq!(with(0.0, -0.0).to_options().unwrap().decision_error, None);
        assert_eq!(with(0.02, 0.0).to_options().unwrap().tolerance, Some(0.02));
        for bad in [
            -0.01,
            1.0,
            1.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            // In (0, 1) as a double, but 0 or 1 in single precision.
            1e-50,
            1.0 - 1e-12,
        ] {
            let e = with(0.0, bad).to_options().unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT, "{bad}");
            assert!(
                e.message().contains("decision_error") && e.message().contains("e.g. 0.01"),
                "{}",
                e.message()
            );
        }
        let e = with(0.01, 0.05).to_options().unwrap_err();
        assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
        assert!(e.message().contains("set one of them"), "{}", e.message());
        // Both rules are refused in deterministic mode too (n_samples 0 ignores them).
        let det = EmcoderPredictOptions {
            n_samples: 0,
            ..with(0.01, 0.05)
        };
        assert!(det.to_options().is_err());
        assert!(
            EmcoderPredictOptions {
                n_samples: 0,
                ..with(0.0, 0.05)
            }
            .to_options()
            .unwrap()
            .deterministic
        );
    }

    #[test]
    fn cancel_flag_and_timeout() {
        let flag: i32 = 0;
        let o = EmcoderPredictOptions {
            cancel: &flag,
            timeout_ms: 60_000,
            fail_fast_on_memory: 1,
            ..default_options()
        };
        let r = o.to_options().unwrap();
        assert!(r.stop.check().is_ok() && !r.wait_for_memory);
        assert!(r.stop.deadline.is_some());
        // SAFETY: `flag` is a live, aligned i32; the store is atomic.
        unsafe { AtomicI32::from_ptr((&flag as *const i32).cast_mut()) }
            .store(1, Ordering::Relaxed);
        assert!(matches!(
            r.stop.check(),
            Err(emcoder_rt::Error::Cancelled(_))
        ));
        // The longest timeout is accepted (no deadline where the clock cannot hold it).
        let far = EmcoderPredictOptions {
            timeout_ms: u64::MAX,
            ..default_options()
        };
        assert!(far.to_options().unwrap().stop.check().is_ok());
        // A misaligned flag is refused.
        let bytes = [0u8; 8];
        let odd = EmcoderPredictOptions {
            cancel: bytes
                .as_ptr()
                .wrapping_add(1 + (bytes.as_ptr() as usize & 1))
                .cast(),
            ..default_options()
        };
        assert_eq!(
            odd.to_options().unwrap_err().code(),
            EMCODER_ERR_INVALID_ARGUMENT
        );
    }

    #[test]
    fn old_callers_read_as_defaults() {
        // A caller that knows only the ABI 1 fields (24 bytes): the rest is never read.
        let flag = 1i32;
        let old = EmcoderPredictOptions {
            struct_size: 24,
            n_samples: 7,
            cancel: &flag,
            timeout_ms: 5,
            fail_fast_on_memory: 9,
            decision_error: 0.5,
            ..default_options()
        };
        // SAFETY: a whole struct.
        let o = unsafe { extensible::read(&old) };
        assert_eq!((o.struct_size, o.n_samples), (24, 7));
        assert!(o.cancel.is_null());
        assert_eq!((o.timeout_ms, o.fail_fast_on_memory), (0, 0));
        assert_eq!(o.decision_error, 0.0);
        // Zero-initialized: a deterministic pass with every other default.
        // SAFETY: zeroed is a valid value of the struct.
        let zero = unsafe { extensible::read(&std::mem::zeroed::<EmcoderPredictOptions>()) };
        let r = zero.to_options().unwrap();
        assert!(r.deterministic && r.wait_for_memory && r.stop.callback.is_none());
    }

    #[test]
    fn text_errors() {
        let good = c"fine";
        let bad = b"caf\xc3\0";
        // SAFETY: the arrays hold valid pointers or NULL.
        unsafe {
            let e = c_texts([good.as_ptr()].as_ptr(), 0).unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
            let e = c_texts(ptr::null(), 1).unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
            let e = c_texts([good.as_ptr(), ptr::null()].as_ptr(), 2).unwrap_err();
            assert!(e.message().contains("texts[1] is NULL"));
            let e = c_texts([good.as_ptr(), bad.as_ptr().cast()].as_ptr(), 2).unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_UTF8);
            assert!(e.message().contains("texts[1]") && e.message().contains("offset 3"));
        }
    }

    #[test]
    fn sized_text_errors() {
        let t = |s: &[u8]| EmcoderText {
            data: s.as_ptr().cast(),
            len: s.len(),
        };
        // SAFETY: every entry points to `len` readable bytes, or is NULL with len 0.
        unsafe {
            let ok = [
                t(b"no terminator here"),
                EmcoderText {
                    data: ptr::null(),
                    len: 0,
                },
            ];
            assert_eq!(
                sized_texts(ok.as_ptr(), 2).unwrap(),
                ["no terminator here", ""]
            );
            let e = sized_texts(ok.as_ptr(), 0).unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
            let e = sized_texts(ptr::null(), 1).unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
            let e = sized_texts([t(b"ok"), t(b"a\0b")].as_ptr(), 2).unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_ARGUMENT);
            assert!(e.message().contains("texts[1]") && e.message().contains("offset 1"));
            let e = sized_texts([t(b"\xff")].as_ptr(), 1).unwrap_err();
            assert_eq!(e.code(), EMCODER_ERR_INVALID_UTF8);
            let null = EmcoderText {
                data: ptr::null(),
                len: 3,
            };
            let e = sized_texts([null].as_ptr(), 1).unwrap_err();
            assert!(e.message().contains("texts[0].data is NULL"));
        }
    }

    #[test]
    fn huge_requests_are_out_of_memory() {
        assert!(check_memory(10, 50, 28).is_ok());
        let e = check_memory(usize::MAX / 2, u32::MAX, 28).unwrap_err();
        assert_eq!(e.code(), EMCODER_ERR_OUT_OF_MEMORY);
        // 2^48 bytes: more than the address space of x86-64 user space.
        let e = check_memory(1 << 18, 1 << 20, 256).unwrap_err();
        assert_eq!(e.code(), EMCODER_ERR_OUT_OF_MEMORY);
    }
}
