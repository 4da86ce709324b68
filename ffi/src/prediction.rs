//! The result of a prediction: per text, its token count and one `EmcoderLabelStats` per
//! label, with their accessors.

use super::error::{guard, EmcoderError, FfiResult, EMCODER_ERR_OUT_OF_MEMORY};
use std::ptr;

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

/// The results of one `emcoder_predict` or `emcoder_predict_texts` call: per text, its token
/// count and one `EmcoderLabelStats` per label. Owns its data; immutable.
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
    /// Copies the runtime's predictions (fallible: the copies are as large as the request).
    pub(crate) fn from_runtime(
        preds: &[emcoder_rt::TextPrediction],
        num_labels: usize,
    ) -> FfiResult<Self> {
        let oom = |what: &str| {
            EmcoderError::new(
                EMCODER_ERR_OUT_OF_MEMORY,
                format!(
                    "cannot allocate the {what} of {} texts x {num_labels} labels for the result",
                    preds.len()
                ),
            )
        };
        let n = preds.len();
        let mut p = EmcoderPrediction {
            num_labels,
            n_samples: Vec::new(),
            n_tokens: Vec::new(),
            stats: Vec::new(),
            logits: Vec::new(),
        };
        p.n_samples
            .try_reserve_exact(n)
            .map_err(|_| oom("sample counts"))?;
        p.n_tokens
            .try_reserve_exact(n)
            .map_err(|_| oom("token counts"))?;
        p.stats
            .try_reserve_exact(n.saturating_mul(num_labels))
            .map_err(|_| oom("statistics"))?;
        if preds.iter().any(|t| t.logits.is_some()) {
            p.logits
                .try_reserve_exact(n.saturating_mul(num_labels))
                .map_err(|_| oom("logits"))?;
        }
        for t in preds {
            p.n_samples
                .push(if t.logits.is_some() { 0 } else { t.samples });
            p.n_tokens.push(t.n_tokens);
            p.stats.extend(t.labels.iter().map(EmcoderLabelStats::from));
            if let Some(z) = &t.logits {
                p.logits.extend_from_slice(z);
            }
        }
        Ok(p)
    }

    fn row<T>(&self, data: &[T], text_index: usize) -> *const T {
        let n = self.num_labels;
        let start = text_index.checked_mul(n);
        match start.and_then(|a| data.get(a..a.checked_add(n)?)) {
            Some(row) if n > 0 => row.as_ptr(),
            _ => ptr::null(),
        }
    }
}

/// Frees a prediction.
///
/// NULL handling: NULL is a no-op.
/// Thread safety: call it once, after every other use of the prediction has returned.
///
/// # Safety
/// `prediction` is NULL or a prediction from `emcoder_predict` or `emcoder_predict_texts`
/// that has not been freed.
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
/// for a deterministic pass; with `tolerance` or `decision_error` set, the samples that text
/// drew before it stopped (at most `n_samples`). (Per text, so that adaptive sampling can stop
/// texts early.)
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
