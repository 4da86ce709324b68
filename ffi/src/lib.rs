//! # emcoder-ffi
//!
//! The C ABI of the emcoder runtime, built as `libemcoder.so` and `libemcoder.a`; the header
//! `include/emcoder.h` is generated from this crate by cbindgen (see `cbindgen.toml`) and a test
//! fails when the committed header drifts from the code.
//!
//! This crate only translates: it checks the C arguments, calls [`emcoder_rt`], maps errors to
//! codes and catches panics. Layout:
//! - [`error`]: codes, the error object, the panic guards;
//! - [`extensible`]: the `struct_size` protocol of the params and options structs;
//! - [`model`]: load parameters, loading, labels, memory figures;
//! - [`predict`]: predict options (cancellation, timeout), texts, the predict calls;
//! - [`prediction`]: the prediction object and its accessors;
//! - [`log`]: the log callback;
//! - [`debug`]: `emcoder_debug_panic`, which proves the panic guarantee in tests.
//!
//! Conventions (the header states them for every function): 0 is success and each failure has
//! its own negative code; errors come back through an optional `EmcoderError **err`; NULL
//! options mean defaults; each handle has one `*_free`, which accepts NULL; no panic crosses the
//! boundary (a caught panic is `EMCODER_ERR_INTERNAL`); structs passed in start with
//! `struct_size` and only grow at their end.

// The modules name each other through `super::`, never `crate::`: fuzz/ compiles this crate
// as a module of a fuzz target (the crate has no rlib to depend on, see Cargo.toml).
pub mod error;
pub(crate) mod extensible;
pub mod model;
pub mod predict;
pub mod prediction;
// After the model and the predictions, in the header too.
pub mod log;
// Last, so that the header lists emcoder_debug_panic after the API proper.
pub mod debug;

pub use debug::*;
pub use error::*;
pub use log::*;
pub use model::*;
pub use predict::*;
pub use prediction::*;

use std::ffi::c_char;

/// Version of the C ABI this header describes, within the SONAME `libemcoder.so.0`. Each
/// compatible addition (a field appended to a struct, a new function, a new error code, a new
/// value of a field such as `EMCODER_PRECISION_*`) increments it; a library of version N serves every program built against a header of
/// version 2..=N. An incompatible change would change the SONAME instead. Check
/// `emcoder_abi_version() >= EMCODER_ABI_VERSION` at start-up. (ABI 1 had no `struct_size`:
/// programs built against it must be rebuilt.) History: 2, `struct_size` and the ABI 2 fields;
/// 3, `EmcoderPredictOptions.decision_error` (sampling that stops on decisions); 4,
/// `EMCODER_DEVICE_CUDA`, `EmcoderModelParams.device_index` and `EMCODER_ERR_DEVICE` (NVIDIA
/// GPUs, in a libemcoder built with the `cuda` feature); 5, `EMCODER_PRECISION_INT8` (int8
/// weights and products on the CPU; a library of ABI 4 or older refuses the value with
/// `EMCODER_ERR_INVALID_ARGUMENT`).
pub const EMCODER_ABI_VERSION: u32 = 5;

/// Returns the version of libemcoder, e.g. `"0.1.0"`.
///
/// Ownership: the string is static; never free it.
/// Thread safety: safe from any thread.
#[no_mangle]
pub extern "C" fn emcoder_version() -> *const c_char {
    const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(v) => v,
        Err(_) => panic!("the package version contains a NUL byte"),
    };
    error::guard(VERSION.as_ptr(), || VERSION.as_ptr())
}

/// Returns the ABI version of the loaded library. A program built against this header should
/// check `emcoder_abi_version() >= EMCODER_ABI_VERSION` before any other call: a newer library
/// serves older programs (see `EMCODER_ABI_VERSION`), an older one lacks what this header
/// declares.
///
/// Thread safety: safe from any thread.
#[no_mangle]
pub extern "C" fn emcoder_abi_version() -> u32 {
    error::guard(EMCODER_ABI_VERSION, || EMCODER_ABI_VERSION)
}

#[cfg(test)]
mod header_drift;

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_and_abi() {
        // SAFETY: the version is a static C string.
        let v = unsafe { CStr::from_ptr(emcoder_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        assert_eq!(emcoder_abi_version(), EMCODER_ABI_VERSION);
    }

    /// The layouts the bindings hard-code (Python's ctypes structs, Go through cgo) and the C
    /// test asserts: a change here is an ABI change (bump EMCODER_ABI_VERSION).
    #[test]
    fn struct_layouts() {
        use std::mem::{align_of, size_of};
        assert_eq!(
            (
                size_of::<EmcoderModelParams>(),
                align_of::<EmcoderModelParams>()
            ),
            (72, 8)
        );
        assert_eq!(
            (
                size_of::<EmcoderPredictOptions>(),
                align_of::<EmcoderPredictOptions>()
            ),
            (56, 8)
        );
        assert_eq!(
            (size_of::<EmcoderText>(), align_of::<EmcoderText>()),
            (16, 8)
        );
        assert_eq!(
            (
                size_of::<EmcoderLabelStats>(),
                align_of::<EmcoderLabelStats>()
            ),
            (24, 4)
        );
    }

    #[test]
    fn debug_panic_is_caught() {
        let mut err = std::ptr::null_mut();
        // SAFETY: `err` is writable; the error is freed below.
        unsafe {
            assert_eq!(emcoder_debug_panic(&mut err), EMCODER_ERR_INTERNAL);
            assert!((*err).message().contains("deliberate panic"));
            emcoder_error_free(err);
            assert_eq!(
                emcoder_debug_panic(std::ptr::null_mut()),
                EMCODER_ERR_INTERNAL
            );
        }
    }
}
