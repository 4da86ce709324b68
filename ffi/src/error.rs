//! Error codes, the error object, and the guards every export runs in: no panic crosses the
//! C boundary, every failure becomes a negative code plus an optional `EmcoderError`.

use std::any::Any;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

/// Status codes returned by every function that can fail: 0 is success, each failure has its
/// own negative code. Functions return them as `int32_t`.
#[repr(i32)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmcoderStatus {
    /// Success.
    EMCODER_OK = 0,
    /// An argument is not acceptable: a required pointer is NULL, `n_texts` is 0, an option is
    /// out of range (e.g. `max_tokens` below 2, an unknown `device`), or a text has more
    /// tokens than the model's limit while `truncate` is off.
    EMCODER_ERR_INVALID_ARGUMENT = -1,
    /// A text is not valid UTF-8 (the message names the text index and the byte offset).
    EMCODER_ERR_INVALID_UTF8 = -2,
    /// A file or directory could not be found, opened or read (the message names the path).
    EMCODER_ERR_IO = -3,
    /// A file of the model directory is invalid: safetensors, config.json, thresholds.json or
    /// the tokenizer is corrupt, inconsistent or unsupported (the message says what to fix).
    EMCODER_ERR_BAD_MODEL = -4,
    /// Memory could not be obtained (the message says how much, for what, and what to change):
    /// the call's scratch exceeds the model's `memory_budget`, the budget is taken by running
    /// calls and the call set `fail_fast_on_memory`, or the system refused an allocation
    /// (scratch arenas, embedding and attention buffers, logits, results, packed weights) or a
    /// memory map. Allocations that grow with the request or the model are fallible, so
    /// running out of memory (e.g. under `ulimit -v`) returns this code instead of aborting the
    /// process; what the call allocated is freed and the model stays usable.
    EMCODER_ERR_OUT_OF_MEMORY = -5,
    /// A bug in libemcoder: a panic was caught at the boundary (the message carries the panic
    /// message). Please report it; the library stays usable.
    EMCODER_ERR_INTERNAL = -6,
    /// The prediction was stopped: its `cancel` flag was set, or it ran past its
    /// `timeout_ms` (the message says which). The flag and the deadline are checked before
    /// every layer of every chunk of rows and while the call waits for memory, so a stopped
    /// call returns within about one layer's work; what it used is freed and the model stays
    /// usable.
    EMCODER_ERR_CANCELLED = -7,
    /// The compute device cannot be used: this build has no CUDA backend, or the NVIDIA
    /// driver, NVRTC or cuBLAS is missing, or the GPU does not exist, is not supported or
    /// failed, or the precision does not run there (`EMCODER_PRECISION_INT8` is CPU only); the
    /// message names the device and what to install or change. The process and its CPU models
    /// are unaffected. (ABI 4.)
    EMCODER_ERR_DEVICE = -8,
}

pub(crate) const EMCODER_OK: i32 = EmcoderStatus::EMCODER_OK as i32;
pub(crate) const EMCODER_ERR_INVALID_ARGUMENT: i32 =
    EmcoderStatus::EMCODER_ERR_INVALID_ARGUMENT as i32;
pub(crate) const EMCODER_ERR_INVALID_UTF8: i32 = EmcoderStatus::EMCODER_ERR_INVALID_UTF8 as i32;
pub(crate) const EMCODER_ERR_IO: i32 = EmcoderStatus::EMCODER_ERR_IO as i32;
pub(crate) const EMCODER_ERR_BAD_MODEL: i32 = EmcoderStatus::EMCODER_ERR_BAD_MODEL as i32;
pub(crate) const EMCODER_ERR_OUT_OF_MEMORY: i32 = EmcoderStatus::EMCODER_ERR_OUT_OF_MEMORY as i32;
pub(crate) const EMCODER_ERR_INTERNAL: i32 = EmcoderStatus::EMCODER_ERR_INTERNAL as i32;
pub(crate) const EMCODER_ERR_CANCELLED: i32 = EmcoderStatus::EMCODER_ERR_CANCELLED as i32;
pub(crate) const EMCODER_ERR_DEVICE: i32 = EmcoderStatus::EMCODER_ERR_DEVICE as i32;

/// An error: a negative code and a human-readable message. Created by the library, owned by the
/// caller, released with `emcoder_error_free`.
#[derive(Debug)]
pub struct EmcoderError {
    code: i32,
    message: CString,
}

impl EmcoderError {
    /// An error with `code` and `message` (interior NUL bytes are written as `\0`).
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        let message = message.into().replace('\0', "\\0");
        EmcoderError {
            code,
            message: CString::new(message).unwrap_or_default(),
        }
    }

    /// An `EMCODER_ERR_INVALID_ARGUMENT` error.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(EMCODER_ERR_INVALID_ARGUMENT, message)
    }

    /// The code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        self.message.to_str().unwrap_or("")
    }

    /// The message as a C string, valid as long as `self`.
    pub(crate) fn message_ptr(&self) -> *const c_char {
        self.message.as_ptr()
    }

    fn from_panic(payload: Box<dyn Any + Send>) -> Self {
        let what = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(no message)".to_string()
        };
        // A payload whose destructor panics must not escape either: forget the second payload.
        if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(again);
        }
        Self::new(
            EMCODER_ERR_INTERNAL,
            format!("internal error: libemcoder panicked: {what} (please report this bug)"),
        )
    }
}

/// Maps a runtime error to its code, keeping the runtime's message (it says what to fix).
impl From<emcoder_rt::Error> for EmcoderError {
    fn from(e: emcoder_rt::Error) -> Self {
        use emcoder_rt::Error as E;
        let code = match &e {
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::OutOfMemory => {
                EMCODER_ERR_OUT_OF_MEMORY
            }
            E::Io { .. } | E::MissingFile { .. } => EMCODER_ERR_IO,
            E::BadSafetensors { .. }
            | E::BadJson { .. }
            | E::Config(_)
            | E::Shape { .. }
            | E::Dtype { .. }
            | E::MissingTensor { .. }
            | E::UnknownTensors { .. }
            | E::DuplicateRole { .. }
            | E::Tokenizer(_) => EMCODER_ERR_BAD_MODEL,
            E::Input(_) => EMCODER_ERR_INVALID_ARGUMENT,
            E::OutOfMemory(_) => EMCODER_ERR_OUT_OF_MEMORY,
            E::Cancelled(_) => EMCODER_ERR_CANCELLED,
            E::Device(_) => EMCODER_ERR_DEVICE,
        };
        EmcoderError::new(code, e.to_string())
    }
}

/// The result of the body of an export.
pub(crate) type FfiResult<T> = Result<T, EmcoderError>;

/// Runs the body of an export that reports errors: `*err` (when `err` is not NULL) is set to
/// NULL, then to a new error on failure; a panic becomes `EMCODER_ERR_INTERNAL`. Returns the code.
pub(crate) fn call(err: *mut *mut EmcoderError, body: impl FnOnce() -> FfiResult<()>) -> i32 {
    if !err.is_null() {
        // SAFETY: the caller passes NULL or a pointer to writable storage for one pointer.
        unsafe { *err = ptr::null_mut() };
    }
    let e = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return EMCODER_OK,
        Ok(Err(e)) => e,
        Err(payload) => EmcoderError::from_panic(payload),
    };
    let code = e.code;
    if !err.is_null() {
        // SAFETY: as above; the caller owns the new error and frees it with emcoder_error_free.
        unsafe { *err = Box::into_raw(Box::new(e)) };
    }
    code
}

/// Runs the body of an export without an error out-parameter; a panic yields `fallback`.
pub(crate) fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            drop(EmcoderError::from_panic(payload));
            fallback
        }
    }
}

/// Returns the code of `error`.
///
/// NULL handling: `error` NULL (no error) returns `EMCODER_OK` (0).
/// Thread safety: safe from any thread; the error is immutable.
///
/// # Safety
/// `error` is NULL or an error from this library that has not been freed.
#[no_mangle]
pub unsafe extern "C" fn emcoder_error_code(error: *const EmcoderError) -> i32 {
    guard(EMCODER_ERR_INTERNAL, || {
        // SAFETY: NULL or a live error, by the contract above.
        unsafe { error.as_ref() }.map_or(EMCODER_OK, |e| e.code)
    })
}

/// Returns the message of `error`: a NUL-terminated UTF-8 string owned by the error, valid until
/// `emcoder_error_free(error)`.
///
/// NULL handling: `error` NULL returns a static empty string (never NULL), so the result can be
/// printed unconditionally.
/// Thread safety: safe from any thread; the error is immutable.
///
/// # Safety
/// `error` is NULL or an error from this library that has not been freed.
#[no_mangle]
pub unsafe extern "C" fn emcoder_error_message(error: *const EmcoderError) -> *const c_char {
    guard(c"".as_ptr(), || {
        // SAFETY: NULL or a live error, by the contract above.
        unsafe { error.as_ref() }.map_or(c"".as_ptr(), |e| e.message_ptr())
    })
}

/// Frees an error (and its message).
///
/// NULL handling: NULL is a no-op.
/// Thread safety: must not race with any other use of the same error; freeing it twice is
/// undefined behaviour.
///
/// # Safety
/// `error` is NULL or an error from this library that has not been freed.
#[no_mangle]
pub unsafe extern "C" fn emcoder_error_free(error: *mut EmcoderError) {
    guard((), || {
        if !error.is_null() {
            // SAFETY: the error was made by Box::into_raw in `call` and is freed once.
            drop(unsafe { Box::from_raw(error) });
        }
    })
}

/// Returns the name of an error code as a static string, e.g. `"EMCODER_ERR_IO"` for -3;
/// `"EMCODER_OK"` for 0 and `"EMCODER_ERR_UNKNOWN"` for a code this library does not define.
///
/// Ownership: the string is static; never free it.
/// Thread safety: safe from any thread.
#[no_mangle]
pub extern "C" fn emcoder_error_code_name(code: i32) -> *const c_char {
    guard(c"EMCODER_ERR_UNKNOWN".as_ptr(), || {
        match code {
            EMCODER_OK => c"EMCODER_OK",
            EMCODER_ERR_INVALID_ARGUMENT => c"EMCODER_ERR_INVALID_ARGUMENT",
            EMCODER_ERR_INVALID_UTF8 => c"EMCODER_ERR_INVALID_UTF8",
            EMCODER_ERR_IO => c"EMCODER_ERR_IO",
            EMCODER_ERR_BAD_MODEL => c"EMCODER_ERR_BAD_MODEL",
            EMCODER_ERR_OUT_OF_MEMORY => c"EMCODER_ERR_OUT_OF_MEMORY",
            EMCODER_ERR_INTERNAL => c"EMCODER_ERR_INTERNAL",
            EMCODER_ERR_CANCELLED => c"EMCODER_ERR_CANCELLED",
            EMCODER_ERR_DEVICE => c"EMCODER_ERR_DEVICE",
            _ => c"EMCODER_ERR_UNKNOWN",
        }
        .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn call_reports_errors_and_panics() {
        let mut err: *mut EmcoderError = ptr::null_mut();
        assert_eq!(call(&mut err, || Ok(())), EMCODER_OK);
        assert!(err.is_null());
        let code = call(&mut err, || Err(EmcoderError::invalid("nope\0x")));
        assert_eq!(code, EMCODER_ERR_INVALID_ARGUMENT);
        // SAFETY: `err` was just set to a live error, freed below.
        unsafe {
            assert_eq!(emcoder_error_code(err), code);
            let msg = CStr::from_ptr(emcoder_error_message(err)).to_str().unwrap();
            assert_eq!(msg, "nope\\0x");
            emcoder_error_free(err);
        }
        let code = call(&mut err, || panic!("boom {}", 7));
        assert_eq!(code, EMCODER_ERR_INTERNAL);
        // SAFETY: as above.
        unsafe {
            assert!((*err).message().contains("boom 7"), "{}", (*err).message());
            emcoder_error_free(err);
        }
        assert_eq!(
            call(ptr::null_mut(), || panic!("no err")),
            EMCODER_ERR_INTERNAL
        );
        assert_eq!(guard(5, || panic!("guarded")), 5);
    }

    #[test]
    fn null_error_is_success() {
        // SAFETY: NULL is allowed everywhere.
        unsafe {
            assert_eq!(emcoder_error_code(ptr::null()), EMCODER_OK);
            assert_eq!(
                CStr::from_ptr(emcoder_error_message(ptr::null())).to_bytes(),
                b""
            );
            emcoder_error_free(ptr::null_mut());
        }
    }

    #[test]
    fn runtime_errors_map_to_codes() {
        use emcoder_rt::Error as E;
        let io = |kind| E::Io {
            path: "x".into(),
            source: std::io::Error::from(kind),
        };
        let code = |e: E| EmcoderError::from(e).code;
        assert_eq!(code(io(std::io::ErrorKind::NotFound)), EMCODER_ERR_IO);
        assert_eq!(
            code(io(std::io::ErrorKind::OutOfMemory)),
            EMCODER_ERR_OUT_OF_MEMORY
        );
        assert_eq!(code(E::Config("c".into())), EMCODER_ERR_BAD_MODEL);
        assert_eq!(code(E::Tokenizer("t".into())), EMCODER_ERR_BAD_MODEL);
        assert_eq!(code(E::Input("i".into())), EMCODER_ERR_INVALID_ARGUMENT);
        assert_eq!(code(E::OutOfMemory("o".into())), EMCODER_ERR_OUT_OF_MEMORY);
        assert_eq!(code(E::Cancelled("c".into())), EMCODER_ERR_CANCELLED);
        assert_eq!(code(E::Device("d".into())), EMCODER_ERR_DEVICE);
        let name = |c| {
            // SAFETY: the name is a static C string.
            unsafe { CStr::from_ptr(emcoder_error_code_name(c)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(name(-7), "EMCODER_ERR_CANCELLED");
        assert_eq!(name(-5), "EMCODER_ERR_OUT_OF_MEMORY");
        assert_eq!(name(-8), "EMCODER_ERR_DEVICE");
        for c in [0, -1, -2, -3, -4, -5, -6, -7, -8] {
            assert_ne!(name(c), "EMCODER_ERR_UNKNOWN", "code {c}");
        }
        assert_eq!(name(-9), "EMCODER_ERR_UNKNOWN");
        assert_eq!(name(1), "EMCODER_ERR_UNKNOWN");
    }
}
