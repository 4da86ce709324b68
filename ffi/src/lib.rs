//! # emcoder-ffi
//!
//! The C ABI of the emcoder runtime, built as `libemcoder.so` and `libemcoder.a`; the header
//! `include/emcoder.h` is generated from this crate by cbindgen (see `cbindgen.toml`) and a test
//! fails when the committed header drifts from the code.
//!
//! This crate only translates: it checks the C arguments, calls [`emcoder_rt`], maps errors to
//! codes and catches panics. Layout:
//! - [`error`]: codes, the error object, the panic guards;
//! - [`model`]: load parameters, loading, labels;
//! - [`predict`]: predict options, prediction results;
//! - [`debug`]: `emcoder_debug_panic`, which proves the panic guarantee in tests.
//!
//! Conventions (the header states them for every function): 0 is success and each failure has
//! its own negative code; errors come back through an optional `EmcoderError **err`; NULL
//! options mean defaults; each handle has one `*_free`, which accepts NULL; no panic crosses the
//! boundary (a caught panic is `EMCODER_ERR_INTERNAL`).

pub mod error;
pub mod model;
pub mod predict;
// Last, so that the header lists emcoder_debug_panic after the API proper.
pub mod debug;

pub use debug::*;
pub use error::*;
pub use model::*;
pub use predict::*;

use std::ffi::c_char;

/// Version of the C ABI this header describes. A change of any struct layout, function
/// signature or meaning increments it; compare it with `emcoder_abi_version()` at start-up to
/// detect a header/library mismatch.
pub const EMCODER_ABI_VERSION: u32 = 1;

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
/// check `emcoder_abi_version() == EMCODER_ABI_VERSION` before any other call.
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
            (32, 8)
        );
        assert_eq!(
            (
                size_of::<EmcoderPredictOptions>(),
                align_of::<EmcoderPredictOptions>()
            ),
            (24, 8)
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
