//! Predicting: options, the call, and the prediction object with its accessors.

use crate::error::{
    call, guard, EmcoderError, FfiResult, EMCODER_ERR_INVALID_UTF8, EMCODER_ERR_OUT_OF_MEMORY,
};
use crate::model::EmcoderModel;
use std::ffi::{c_char, CStr};
use std::ptr;

/// The default seed of the dropout masks (`emcoder_predict_default_options().seed`).
pub const EMCODER_DEFAULT_SEED: u64 = 42;
/// The default number of MC-dropout samples per text, as in the model card.
pub const EMCODER_DEFAULT_SAMPLES: u32 = 50;

/// How to predict. Get one from `emcoder_predict_default_options()` and change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmcoderPredictOptions {
    /// Monte-Carlo dropout samples per text. 0: one deterministic pass with dropout off
    /// (`std`, `aleatoric`... come from that one pass, and the logits are available through
    /// `emcoder_prediction_logits`). Default `EMCODER_DEFAULT_SAMPLES` (50).
    pub n_samples: u32,
    /// Seed of the dropout masks. A text's numbers are a pure function of (model, text,
    /// n_samples, seed): the thread count and the other texts of the call never change them.
    /// Default `EMCODER_DEFAULT_SEED` (42).
    pub seed: u64,
    /// Nonzero: cut texts longer than the model's `max_tokens` (keeping `[CLS] ... [SEP]`);
    /// 0: such texts fail with `EMCODER_ERR_INVALID_ARGUMENT`. Default 0.
    pub truncate: u8,
    /// Adaptive sampling when > 0: samples are drawn in blocks of 10 and a text stops once
    /// every label's mean probability has a standard error below this (never more than
    /// `n_samples`; `emcoder_prediction_n_samples` tells how many were used). 0: always
    /// `n_samples`. Negative or non-finite values fail with `EMCODER_ERR_INVALID_ARGUMENT`.
    /// Default 0.
    pub tolerance: f32,
}

/// Statistics of one label of one text over the MC samples.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EmcoderLabelStats {
    /// Mean of the sigmoid probabilities over the samples.
    pub mean: f32,
    /// Their standard deviation (unbiased, N-1); 0 for a single pass.
    pub std: f32,
    /// Entropy of the mean probability, H(mean), in nats.
    pub total_entropy: f32,
    /// Expected entropy of the samples, mean_s H(p_s) (aleatoric uncertainty).
    pub aleatoric: f32,
    /// Mutual information, total - aleatoric, clamped at 0 (epistemic uncertainty).
    pub epistemic: f32,
    /// 1 when the label is predicted under the model's thresholds, else 0.
    pub predicted: u8,
}

impl From<&emcoder_rt::LabelStats> for EmcoderLabelStats {
    fn from(s: &emcoder_rt::LabelStats) -> Self {
        EmcoderLabelStats {
            mean: s.mean,
            std: s.std,
            total_entropy: s.total_entropy,
            aleatoric: s.aleatoric,
            epistemic: s.epistemic,
            predicted: u8::from(s.predicted),
        }
    }
}

/// The results of one `emcoder_predict` call: per text, its token count and one
/// `EmcoderLabelStats` per label. Owns its data; immutable.
pub struct EmcoderPrediction {
    num_labels: usize,
    /// Per text: samples drawn, 0 for a deterministic pass.
    n_samples: Vec<u32>,
    n_tokens: Vec<usize>,
    /// (texts, num_labels), text-major.
    stats: Vec<EmcoderLabelStats>,
    /// (texts, num_labels) logits of the deterministic pass; empty for MC predictions.
    logits: Vec<f32>,
}

impl EmcoderPrediction {
    fn row<T>(&self, data: &[T], text_index: usize) -> *const T {
        let n = self.num_labels;
        let start = text_index.checked_mul(n);
        match start.and_then(|a| data.get(a..a.checked_add(n)?)) {
            Some(row) if n > 0 => row.as_ptr(),
            _ => ptr::null(),
        }
    }
}

/// Returns the default prediction options: 50 MC samples, seed 42, no truncation.
///
/// Thread safety: safe from any thread.
#[no_mangle]
pub extern "C" fn emcoder_predict_default_options() -> EmcoderPredictOptions {
    let opts = EmcoderPredictOptions {
        n_samples: EMCODER_DEFAULT_SAMPLES,
        seed: EMCODER_DEFAULT_SEED,
        truncate: 0,
        tolerance: 0.0,
    };
    guard(opts, || opts)
}

/// Texts from C, checked: non-NULL entries, valid UTF-8.
///
/// # Safety
/// `texts` points to `n_texts` pointers, each NULL or NUL-terminated.
unsafe fn c_texts<'a>(texts: *const *const c_char, n_texts: usize) -> FfiResult<Vec<&'a str>> {
    if n_texts == 0 {
        return Err(EmcoderError::invalid(
            "emcoder_predict: `n_texts` is 0: pass at least one text",
        ));
    }
    if texts.is_null() {
        return Err(EmcoderError::invalid("emcoder_predict: `texts` is NULL"));
    }
    if n_texts > isize::MAX as usize / size_of::<*const c_char>() {
        return Err(EmcoderError::invalid(format!(
            "emcoder_predict: `n_texts` {n_texts} is impossibly large"
        )));
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
            let s = unsafe { CStr::from_ptr(p) };
            s.to_str().map_err(|e| {
                EmcoderError::new(
                    EMCODER_ERR_INVALID_UTF8,
                    format!(
                        "texts[{i}] is not valid UTF-8: invalid byte at offset {}",
                        e.valid_up_to()
                    ),
                )
            })
        })
        .collect()
}

/// Checks, before any work, that the logits of the request (texts x samples x labels floats,
/// the largest buffer a prediction allocates) can be allocated.
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

/// Predicts the emotions of `n_texts` texts: for each, one `EmcoderLabelStats` per label over
/// `options->n_samples` MC-dropout samples (or one deterministic pass when it is 0).
///
/// Returns 0 and sets `*out` to the new prediction, or returns a negative code, sets `*out` to
/// NULL and, when `err` is not NULL, sets `*err` to a new error (else `*err` is set to NULL).
/// Codes: `EMCODER_ERR_INVALID_ARGUMENT` (NULL `model`/`texts`/`out` or a NULL entry of `texts`,
/// `n_texts` 0, a text over `max_tokens` without truncation), `EMCODER_ERR_INVALID_UTF8`,
/// `EMCODER_ERR_BAD_MODEL` (the tokenizer fails), `EMCODER_ERR_OUT_OF_MEMORY`.
///
/// Ownership: the caller owns `*out` (free it with `emcoder_prediction_free`) and `*err`;
/// `texts` and `options` are only read during the call.
/// NULL handling: `options` NULL means `emcoder_predict_default_options()`; `err` may be NULL;
/// `model`, `texts`, every `texts[i]` and `out` must not be NULL.
/// Thread safety: safe to call concurrently from any number of threads on the same model; the
/// calls share the model's worker threads.
///
/// # Safety
/// `model` is NULL or a live model; `texts` is NULL or points to `n_texts` pointers, each NULL
/// or NUL-terminated; `options` is NULL or valid; `out` and `err` are NULL or point to writable
/// storage for one pointer.
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
        if out.is_null() {
            return Err(EmcoderError::invalid("emcoder_predict: `out` is NULL"));
        }
        // SAFETY: `out` is non-NULL and writable, per the contract.
        unsafe { *out = ptr::null_mut() };
        // SAFETY: NULL or a live model, per the contract.
        let Some(m) = (unsafe { model.as_ref() }) else {
            return Err(EmcoderError::invalid("emcoder_predict: `model` is NULL"));
        };
        // SAFETY: `options` is NULL or valid, per the contract.
        let o = unsafe { options.as_ref() }
            .copied()
            .unwrap_or_else(|| emcoder_predict_default_options());
        // SAFETY: `texts` satisfies c_texts' contract, per this function's contract.
        let texts = unsafe { c_texts(texts, n_texts) }?;
        let num_labels = m.model.labels().len();
        check_memory(texts.len(), o.n_samples, num_labels)?;
        if !(o.tolerance >= 0.0 && o.tolerance.is_finite()) {
            return Err(EmcoderError::invalid(format!(
                "tolerance {} must be 0 (off) or a positive number",
                o.tolerance
            )));
        }
        let opts = emcoder_rt::PredictOptions {
            samples: o.n_samples.max(1),
            seed: o.seed,
            deterministic: o.n_samples == 0,
            truncate: o.truncate != 0,
            tolerance: (o.tolerance > 0.0).then_some(o.tolerance),
            ..Default::default()
        };
        let preds = m.model.predict(&texts, &opts)?;
        let mut p = EmcoderPrediction {
            num_labels,
            n_samples: preds
                .iter()
                .map(|t| if t.logits.is_some() { 0 } else { t.samples })
                .collect(),
            n_tokens: preds.iter().map(|t| t.n_tokens).collect(),
            stats: Vec::with_capacity(preds.len() * num_labels),
            logits: Vec::new(),
        };
        for t in &preds {
            p.stats.extend(t.labels.iter().map(EmcoderLabelStats::from));
            if let Some(z) = &t.logits {
                p.logits.extend_from_slice(z);
            }
        }
        // SAFETY: as above; ownership passes to the caller.
        unsafe { *out = Box::into_raw(Box::new(p)) };
        Ok(())
    })
}

/// Frees a prediction.
///
/// NULL handling: NULL is a no-op.
/// Thread safety: call it once, after every other use of the prediction has returned.
///
/// # Safety
/// `prediction` is NULL or a prediction from `emcoder_predict` that has not been freed.
#[no_mangle]
pub unsafe extern "C" fn emcoder_prediction_free(prediction: *mut EmcoderPrediction) {
    guard((), || {
        if !prediction.is_null() {
            // SAFETY: made by Box::into_raw in emcoder_predict, freed once.
            drop(unsafe { Box::from_raw(prediction) });
        }
    })
}

/// Returns the number of texts of the prediction (the `n_texts` of the call).
///
/// NULL handling: NULL returns 0.
/// Thread safety: safe from any thread; a prediction is immutable.
///
/// # Safety
/// `prediction` is NULL or a live prediction.
#[no_mangle]
pub unsafe extern "C" fn emcoder_prediction_num_texts(
    prediction: *const EmcoderPrediction,
) -> usize {
    guard(0, || {
        // SAFETY: NULL or a live prediction, per the contract.
        unsafe { prediction.as_ref() }.map_or(0, |p| p.n_tokens.len())
    })
}

/// Returns the number of labels per text: the length of every array returned by
/// `emcoder_prediction_labels` (and `emcoder_prediction_logits`).
///
/// NULL handling: NULL returns 0.
/// Thread safety: safe from any thread; a prediction is immutable.
///
/// # Safety
/// `prediction` is NULL or a live prediction.
#[no_mangle]
pub unsafe extern "C" fn emcoder_prediction_num_labels(
    prediction: *const EmcoderPrediction,
) -> usize {
    guard(0, || {
        // SAFETY: NULL or a live prediction, per the contract.
        unsafe { prediction.as_ref() }.map_or(0, |p| p.num_labels)
    })
}

/// Returns the MC samples drawn for text `text_index`: the `n_samples` option of the call, 0
/// for a deterministic pass. (Per text, so that adaptive sampling can stop texts early.)
///
/// NULL handling: returns 0 when `prediction` is NULL or `text_index >= num_texts`.
/// Thread safety: safe from any thread; a prediction is immutable.
///
/// # Safety
/// `prediction` is NULL or a live prediction.
#[no_mangle]
pub unsafe extern "C" fn emcoder_prediction_n_samples(
    prediction: *const EmcoderPrediction,
    text_index: usize,
) -> u32 {
    guard(0, || {
        // SAFETY: NULL or a live prediction, per the contract.
        unsafe { prediction.as_ref() }
            .and_then(|p| p.n_samples.get(text_index).copied())
            .unwrap_or(0)
    })
}

/// Returns the number of tokens of text `text_index`, `[CLS]` and `[SEP]` included (after
/// truncation, when the call truncated).
///
/// NULL handling: returns 0 when `prediction` is NULL or `text_index >= num_texts`.
/// Thread safety: safe from any thread; a prediction is immutable.
///
/// # Safety
/// `prediction` is NULL or a live prediction.
#[no_mangle]
pub unsafe extern "C" fn emcoder_prediction_n_tokens(
    prediction: *const EmcoderPrediction,
    text_index: usize,
) -> usize {
    guard(0, || {
        // SAFETY: NULL or a live prediction, per the contract.
        unsafe { prediction.as_ref() }
            .and_then(|p| p.n_tokens.get(text_index).copied())
            .unwrap_or(0)
    })
}

/// Returns the statistics of text `text_index`: an array of `num_labels` entries in label-id
/// order (names from `emcoder_model_label`).
///
/// Ownership: the array belongs to the prediction and is valid until `emcoder_prediction_free`.
/// NULL handling: returns NULL when `prediction` is NULL or `text_index >= num_texts`.
/// Thread safety: safe from any thread; a prediction is immutable.
///
/// # Safety
/// `prediction` is NULL or a live prediction.
#[no_mangle]
pub unsafe extern "C" fn emcoder_prediction_labels(
    prediction: *const EmcoderPrediction,
    text_index: usize,
) -> *const EmcoderLabelStats {
    guard(ptr::null(), || {
        // SAFETY: NULL or a live prediction, per the contract.
        unsafe { prediction.as_ref() }.map_or(ptr::null(), |p| p.row(&p.stats, text_index))
    })
}

/// Returns the logits of text `text_index` from a deterministic prediction (`n_samples` 0): an
/// array of `num_labels` floats in label-id order.
///
/// Ownership: the array belongs to the prediction and is valid until `emcoder_prediction_free`.
/// NULL handling: returns NULL when `prediction` is NULL, `text_index >= num_texts`, or the
/// prediction drew MC samples (it has no single set of logits).
/// Thread safety: safe from any thread; a prediction is immutable.
///
/// # Safety
/// `prediction` is NULL or a live prediction.
#[no_mangle]
pub unsafe extern "C" fn emcoder_prediction_logits(
    prediction: *const EmcoderPrediction,
    text_index: usize,
) -> *const f32 {
    guard(ptr::null(), || {
        // SAFETY: NULL or a live prediction, per the contract.
        unsafe { prediction.as_ref() }.map_or(ptr::null(), |p| p.row(&p.logits, text_index))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::*;

    #[test]
    fn defaults_match_the_runtime() {
        let o = emcoder_predict_default_options();
        let d = emcoder_rt::PredictOptions::default();
        assert_eq!(EMCODER_DEFAULT_SEED, emcoder_rt::DEFAULT_SEED);
        assert_eq!(EMCODER_DEFAULT_SAMPLES, emcoder_rt::DEFAULT_SAMPLES);
        assert_eq!(
            (o.n_samples, o.seed, o.truncate != 0),
            (d.samples, d.seed, d.truncate)
        );
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
    fn huge_requests_are_out_of_memory() {
        assert!(check_memory(10, 50, 28).is_ok());
        let e = check_memory(usize::MAX / 2, u32::MAX, 28).unwrap_err();
        assert_eq!(e.code(), EMCODER_ERR_OUT_OF_MEMORY);
        // 2^48 bytes: more than the address space of x86-64 user space.
        let e = check_memory(1 << 18, 1 << 20, 256).unwrap_err();
        assert_eq!(e.code(), EMCODER_ERR_OUT_OF_MEMORY);
    }

    #[test]
    fn accessors_on_null_and_out_of_range() {
        let p = EmcoderPrediction {
            num_labels: 2,
            n_samples: vec![3],
            n_tokens: vec![5],
            stats: vec![EmcoderLabelStats::default(); 2],
            logits: vec![],
        };
        // SAFETY: NULL or a live prediction.
        unsafe {
            assert_eq!(emcoder_prediction_num_texts(ptr::null()), 0);
            assert_eq!(emcoder_prediction_num_labels(&p), 2);
            assert_eq!(emcoder_prediction_n_samples(&p, 0), 3);
            assert_eq!(emcoder_prediction_n_samples(&p, 1), 0);
            assert_eq!(emcoder_prediction_n_tokens(&p, 0), 5);
            assert_eq!(emcoder_prediction_n_tokens(&p, 1), 0);
            assert!(!emcoder_prediction_labels(&p, 0).is_null());
            assert!(emcoder_prediction_labels(&p, 1).is_null());
            assert!(emcoder_prediction_labels(&p, usize::MAX).is_null());
            assert!(emcoder_prediction_logits(&p, 0).is_null());
            emcoder_prediction_free(ptr::null_mut());
        }
    }
}
