//! The C ABI end to end, called as a C caller would: fuzzed texts (any bytes, invalid UTF-8,
//! embedded NULs, long texts), options (samples, seed, tolerance, decision_error, truncate,
//! timeout, `struct_size`, including sizes of older and newer callers), load parameters, and call
//! sequences (load, predict, accessors with any index, free, NULL everywhere it is allowed).
//!
//! Every call must return a documented code; a failure must come with an error object that
//! has a message; results must have the documented shape and finite statistics; the same
//! text, samples and seed must give the same numbers whichever call it was part of.
#![no_main]

use arbitrary::Arbitrary;
use emcoder_fuzz::ffi::*;
use emcoder_fuzz::{fixture, small_tokenizer_path};
use libfuzzer_sys::fuzz_target;
use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Options {
    struct_size: u8,
    n_samples: u8,
    seed: u64,
    truncate: bool,
    tolerance: f32,
    timeout_ms: u8,
    fail_fast_on_memory: bool,
    null: bool,
    /// The low 2 bits of the u8 choose: off, the f64's bits (mostly invalid), or a rate in
    /// (0, 1) from the u8's other bits.
    decision_error: (u8, f64),
}

#[derive(Arbitrary, Debug)]
struct Params {
    struct_size: u8,
    n_threads: u8,
    max_tokens: u16,
    /// device (mod 3: CPU, CUDA, unknown) and device_index (mod 3).
    device: (u8, u8),
    max_rows: u16,
    /// precision (mod 4: F32, BF16, INT8 (ABI 5), unknown).
    precision: u8,
    memory_budget: u32,
    isa: Option<String>,
    tokenizer: u8,
    dir: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Predict {
        texts: Vec<Vec<u8>>,
        repeat: u16,
        sized: bool,
        null_texts: bool,
        opts: Options,
    },
    Accessors {
        text: usize,
        label: usize,
    },
    FreePrediction,
    Load(Params),
    FreeModel,
    Label(usize),
    CodeName(i32),
    Nulls,
}

/// The model most calls use: the full-vocabulary fixture with the built-in tokenizer,
/// loaded once (parsing the tokenizer takes ~100 ms).
fn shared_model() -> *const EmcoderModel {
    struct M(*mut EmcoderModel);
    unsafe impl Send for M {}
    unsafe impl Sync for M {}
    static MODEL: OnceLock<M> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = CString::new(fixture("tiny-vocab-bf16").to_str().unwrap()).unwrap();
            let mut p = emcoder_model_default_params();
            p.n_threads = 2;
            p.max_tokens = 64;
            let mut m = ptr::null_mut();
            let rc = unsafe { emcoder_model_load(dir.as_ptr(), &p, &mut m, ptr::null_mut()) };
            assert_eq!(rc, EMCODER_OK, "the fixture model loads");
            M(m)
        })
        .0
}

fn small_tokenizer() -> &'static CString {
    static P: OnceLock<CString> = OnceLock::new();
    P.get_or_init(|| CString::new(small_tokenizer_path().to_str().unwrap()).unwrap())
}

const EMCODER_OK: i32 = EmcoderStatus::EMCODER_OK as i32;
const EMCODER_ERR_INVALID_ARGUMENT: i32 = EmcoderStatus::EMCODER_ERR_INVALID_ARGUMENT as i32;
const EMCODER_ERR_INTERNAL: i32 = EmcoderStatus::EMCODER_ERR_INTERNAL as i32;
/// Every documented code (0 to -8).
const CODES: std::ops::RangeInclusive<i32> = EmcoderStatus::EMCODER_ERR_DEVICE as i32..=0;

fn emcoder_model_default_params() -> EmcoderModelParams {
    let mut p = std::mem::MaybeUninit::<EmcoderModelParams>::zeroed();
    unsafe {
        emcoder_model_params_init(p.as_mut_ptr(), size_of::<EmcoderModelParams>() as u32);
        p.assume_init()
    }
}

fn emcoder_predict_default_options() -> EmcoderPredictOptions {
    let mut p = std::mem::MaybeUninit::<EmcoderPredictOptions>::zeroed();
    unsafe {
        emcoder_predict_options_init(p.as_mut_ptr(), size_of::<EmcoderPredictOptions>() as u32);
        p.assume_init()
    }
}

/// Checks a call's code and error object, and frees the error.
fn checked(what: &str, rc: i32, err: *mut EmcoderError) -> i32 {
    assert!(CODES.contains(&rc), "{what}: undocumented code {rc}");
    assert_ne!(
        rc, EMCODER_ERR_INTERNAL,
        "{what}: internal error (a caught panic or a bug)"
    );
    unsafe {
        if rc == EMCODER_OK {
            assert!(err.is_null(), "{what}: success with an error object");
        } else {
            assert!(
                !err.is_null(),
                "{what}: failure {rc} without an error object"
            );
            assert_eq!(emcoder_error_code(err), rc);
            let msg = CStr::from_ptr(emcoder_error_message(err)).to_string_lossy();
            assert!(
                msg.len() > 10,
                "{what}: error {rc} without a useful message: {msg:?}"
            );
        }
        emcoder_error_free(err);
    }
    rc
}

struct State {
    /// A model this input loaded (freed at the end), else the shared one.
    own: *mut EmcoderModel,
    pred: *mut EmcoderPrediction,
}

impl State {
    fn model(&self) -> *const EmcoderModel {
        if self.own.is_null() {
            shared_model()
        } else {
            self.own
        }
    }
}

/// `v` as a caller compiled against another header passes it: in a zero-filled 128-byte
/// buffer whose `struct_size` is this build's size, 0 (the ABI 2 layout), any size up to 128
/// (older or odd callers), or larger than this build's (a newer caller, extra bytes zero).
fn as_caller<T: Copy>(v: &T, choice: u8) -> [u64; 16] {
    let size = size_of::<T>();
    let mut buf = [0u64; 16];
    // SAFETY: T is a plain repr(C) struct of at most 128 bytes.
    unsafe {
        ptr::copy_nonoverlapping(
            v as *const T as *const u8,
            buf.as_mut_ptr() as *mut u8,
            size,
        )
    };
    let ss = match choice % 4 {
        0 => size as u32,
        1 => 0,
        2 => choice as u32 % 129,
        _ => (size + 8 * (1 + choice as usize / 4 % 4)).min(128) as u32,
    };
    // SAFETY: struct_size is the first field, a u32.
    unsafe { *(buf.as_mut_ptr() as *mut u32) = ss };
    buf
}

fn predict(
    st: &mut State,
    texts: &[Vec<u8>],
    repeat: u16,
    sized: bool,
    null_texts: bool,
    o: &Options,
) {
    let mut texts: Vec<Vec<u8>> = texts.iter().take(6).cloned().collect();
    if let Some(t) = texts.first_mut() {
        // Long texts: up to ~200 KB.
        let r = 1 + (repeat as usize % 2048);
        if t.len() * r <= 200_000 {
            *t = t.repeat(r);
        }
    }
    let mut opts = emcoder_predict_default_options();
    opts.n_samples = o.n_samples as u32 % 24;
    opts.seed = o.seed;
    opts.truncate = o.truncate as u8;
    opts.tolerance = o.tolerance;
    let (choice, bits) = o.decision_error;
    opts.decision_error = match choice % 4 {
        0 => 0.0,
        1 => bits,
        _ => f64::from(choice / 4 + 1) / 257.0,
    };
    opts.timeout_ms = o.timeout_ms as u64 % 8;
    opts.fail_fast_on_memory = o.fail_fast_on_memory as u8;
    let buf = as_caller(&opts, o.struct_size);
    let optp = if o.null {
        ptr::null()
    } else {
        buf.as_ptr() as *const EmcoderPredictOptions
    };
    let mut out = ptr::null_mut();
    let mut err = ptr::null_mut();
    let rc = if sized {
        let t: Vec<EmcoderText> = texts
            .iter()
            .map(|b| EmcoderText {
                data: if b.is_empty() {
                    ptr::null()
                } else {
                    b.as_ptr() as *const c_char
                },
                len: b.len(),
            })
            .collect();
        let tp = if null_texts { ptr::null() } else { t.as_ptr() };
        unsafe { emcoder_predict_texts(st.model(), tp, t.len(), optp, &mut out, &mut err) }
    } else {
        // NUL-terminated: a text ends at its first NUL byte.
        let c: Vec<CString> = texts
            .iter()
            .map(|b| CString::new(b.split(|&x| x == 0).next().unwrap_or(&[])).unwrap())
            .collect();
        let p: Vec<*const c_char> = c.iter().map(|s| s.as_ptr()).collect();
        let tp = if null_texts { ptr::null() } else { p.as_ptr() };
        unsafe { emcoder_predict(st.model(), tp, p.len(), optp, &mut out, &mut err) }
    };
    if checked("predict", rc, err) != EMCODER_OK {
        assert!(out.is_null(), "a failed predict returned a prediction");
        return;
    }
    assert!(!null_texts || texts.is_empty());
    unsafe {
        assert_eq!(emcoder_prediction_num_texts(out), texts.len());
        let nl = emcoder_prediction_num_labels(out);
        assert_eq!(nl, emcoder_model_num_labels(st.model()));
        for i in 0..texts.len() {
            let ls = emcoder_prediction_labels(out, i);
            assert!(!ls.is_null());
            for l in std::slice::from_raw_parts(ls, nl) {
                assert!(
                    l.mean.is_finite() && (0.0..=1.0).contains(&l.mean),
                    "mean {}",
                    l.mean
                );
                assert!(l.std.is_finite() && l.std >= 0.0, "std {}", l.std);
            }
            let n = emcoder_prediction_n_samples(out, i);
            // NULL or older options (no n_samples field) mean the default, 50.
            // 0: a deterministic pass (n_samples 0), which carries logits.
            assert!(n <= opts.n_samples.max(50), "{n} samples");
            assert_eq!(n == 0, !emcoder_prediction_logits(out, i).is_null());
            assert!(emcoder_prediction_n_tokens(out, i) >= 2);
        }
        emcoder_prediction_free(st.pred);
    }
    st.pred = out;
}

fn load(st: &mut State, p: &Params) {
    let mut params = emcoder_model_default_params();
    params.n_threads = p.n_threads as u32 % 4;
    params.max_tokens = p.max_tokens as u32 % 600;
    params.device = (p.device.0 % 3) as u32;
    params.device_index = (p.device.1 % 3) as u64;
    params.max_rows = p.max_rows as u32;
    params.precision = (p.precision % 4) as u32;
    params.memory_budget = p.memory_budget as u64 * 16;
    let isa = p
        .isa
        .as_ref()
        .map(|s| CString::new(s.replace('\0', "")).unwrap());
    params.isa = isa.as_ref().map_or(ptr::null(), |s| s.as_ptr());
    let bad = CString::new("/nonexistent/tokenizer.json").unwrap();
    params.tokenizer_path = match p.tokenizer % 3 {
        0 => small_tokenizer().as_ptr(),
        1 => bad.as_ptr(),
        _ => ptr::null(), // the fixture has none: the built-in one (vocab too large for tiny-f32)
    };
    let buf = as_caller(&params, p.struct_size);
    let dir = match p.dir % 4 {
        0 | 1 => CString::new(fixture("tiny-f32").to_str().unwrap()).unwrap(),
        2 => CString::new(fixture("tiny-bf16").to_str().unwrap()).unwrap(),
        _ => CString::new("/nonexistent-model").unwrap(),
    };
    if params.tokenizer_path.is_null() && p.dir % 4 != 3 {
        return; // the built-in tokenizer: 100 ms a load, and refused by these fixtures
    }
    let mut m = ptr::null_mut();
    let mut err = ptr::null_mut();
    let rc = unsafe {
        emcoder_model_load(
            dir.as_ptr(),
            buf.as_ptr() as *const EmcoderModelParams,
            &mut m,
            &mut err,
        )
    };
    if checked("load", rc, err) == EMCODER_OK {
        assert!(!m.is_null());
        unsafe {
            assert_eq!(emcoder_model_num_labels(m), 28);
            assert!(!emcoder_model_isa(m).is_null());
            // Predictions hold no reference to their model: freeing either first is fine.
            emcoder_model_free(st.own);
        }
        st.own = m;
    } else {
        assert!(m.is_null());
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut st = State {
        own: ptr::null_mut(),
        pred: ptr::null_mut(),
    };
    for op in ops.iter().take(8) {
        match op {
            Op::Predict {
                texts,
                repeat,
                sized,
                null_texts,
                opts,
            } => predict(&mut st, texts, *repeat, *sized, *null_texts, opts),
            Op::Accessors { text, label } => unsafe {
                let p = st.pred;
                let n = emcoder_prediction_num_texts(p);
                let ls = emcoder_prediction_labels(p, *text);
                assert_eq!(ls.is_null(), *text >= n);
                let _ = emcoder_prediction_n_samples(p, *text);
                let _ = emcoder_prediction_n_tokens(p, *text);
                let lg = emcoder_prediction_logits(p, *text);
                if !lg.is_null() {
                    let nl = emcoder_prediction_num_labels(p);
                    assert!(std::slice::from_raw_parts(lg, nl)
                        .iter()
                        .all(|x| x.is_finite()));
                }
                let _ = emcoder_model_label(st.model(), *label);
            },
            Op::FreePrediction => unsafe {
                emcoder_prediction_free(st.pred);
                st.pred = ptr::null_mut();
            },
            Op::Load(p) => load(&mut st, p),
            Op::FreeModel => unsafe {
                emcoder_model_free(st.own);
                st.own = ptr::null_mut();
            },
            Op::Label(i) => unsafe {
                let l = emcoder_model_label(st.model(), *i);
                assert_eq!(l.is_null(), *i >= emcoder_model_num_labels(st.model()));
            },
            Op::CodeName(c) => unsafe {
                let s = CStr::from_ptr(emcoder_error_code_name(*c));
                assert!(!s.to_bytes().is_empty());
            },
            Op::Nulls => unsafe {
                let mut out = ptr::null_mut();
                let mut err = ptr::null_mut();
                let rc =
                    emcoder_predict(ptr::null(), ptr::null(), 0, ptr::null(), &mut out, &mut err);
                assert_eq!(
                    checked("predict(NULL model)", rc, err),
                    EMCODER_ERR_INVALID_ARGUMENT
                );
                let rc = emcoder_predict(
                    st.model(),
                    ptr::null(),
                    0,
                    ptr::null(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                );
                assert_eq!(rc, EMCODER_ERR_INVALID_ARGUMENT);
                let mut err = ptr::null_mut();
                let rc = emcoder_model_load(
                    ptr::null(),
                    ptr::null(),
                    &mut out as *mut _ as *mut *mut EmcoderModel,
                    &mut err,
                );
                assert_eq!(checked("load(NULL)", rc, err), EMCODER_ERR_INVALID_ARGUMENT);
                assert_eq!(emcoder_model_num_labels(ptr::null()), 0);
                assert_eq!(emcoder_prediction_num_texts(ptr::null()), 0);
                assert!(emcoder_prediction_labels(ptr::null(), 0).is_null());
                emcoder_prediction_free(ptr::null_mut());
                emcoder_model_free(ptr::null_mut());
                emcoder_error_free(ptr::null_mut());
            },
        }
    }
    unsafe {
        emcoder_prediction_free(st.pred);
        emcoder_model_free(st.own);
    }
});
