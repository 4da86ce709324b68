//! Test support exported with the API: a deliberate panic that proves the guard works.

use super::error::{call, EmcoderError};

/// Panics inside the library on purpose. It exists only so that tests can prove the guarantee
/// that no panic crosses the C boundary: it returns `EMCODER_ERR_INTERNAL` and, when `err` is not
/// NULL, sets `*err` to an error whose message carries the panic message. The panic message is
/// also printed on stderr by the Rust panic hook. Never useful in production code.
///
/// NULL handling: `err` may be NULL.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `err` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn emcoder_debug_panic(err: *mut *mut EmcoderError) -> i32 {
    call(err, || {
        panic!("emcoder_debug_panic: a deliberate panic to test the C boundary")
    })
}
