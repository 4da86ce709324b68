//! The log callback: the runtime's messages (kernels and memory budget at load, arena growth,
//! calls waiting for memory) delivered to a C function.

use super::error::{guard, EMCODER_ERR_INVALID_ARGUMENT, EMCODER_OK};
use emcoder_rt::log::Level;
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, RwLock};

/// Log level: details (scratch arena growth).
pub const EMCODER_LOG_DEBUG: i32 = 0;
/// Log level: choices made (kernels and memory budget at load).
pub const EMCODER_LOG_INFO: i32 = 1;
/// Log level: something an operator may want to change (calls waiting for memory).
pub const EMCODER_LOG_WARN: i32 = 2;

/// A log callback: `level` (`EMCODER_LOG_*`), a NUL-terminated UTF-8 `message` valid only
/// during the call, and the `user` pointer given to `emcoder_set_log_callback`.
pub type EmcoderLogCallback =
    Option<unsafe extern "C" fn(level: i32, message: *const c_char, user: *mut c_void)>;

/// The installed callback and its user pointer.
#[derive(Clone, Copy)]
struct Sink {
    cb: unsafe extern "C" fn(i32, *const c_char, *mut c_void),
    user: *mut c_void,
}

// SAFETY: the caller promises that the callback may be called from any thread with `user`
// (emcoder_set_log_callback's contract).
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

/// Read-locked for the whole of each delivery, so that replacing the callback waits for the
/// deliveries in progress: once `emcoder_set_log_callback` returns, the old callback is done.
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Delivers one message; nothing may unwind out of it into the runtime.
fn deliver(level: Level, message: &str) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let sink = SINK.read().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = *sink {
            let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
            let level = match level {
                Level::Debug => EMCODER_LOG_DEBUG,
                Level::Info => EMCODER_LOG_INFO,
                Level::Warn => EMCODER_LOG_WARN,
            };
            // SAFETY: the callback and `user` are what the caller installed (contract).
            unsafe { (s.cb)(level, text.as_ptr(), s.user) };
        }
    }));
}

/// Sets the process-wide log callback, or removes it with `cb` NULL (the default: no
/// logging). Messages of `min_level` and above are delivered: `EMCODER_LOG_INFO` reports the
/// kernels and memory budget chosen at each load, `EMCODER_LOG_WARN` the calls that wait for
/// memory, `EMCODER_LOG_DEBUG` also the growth of scratch arenas.
///
/// Returns 0, or `EMCODER_ERR_INVALID_ARGUMENT` (and changes nothing) when `min_level` is not
/// one of the `EMCODER_LOG_*` levels.
/// The callback: called from any thread, possibly from several at once (make it thread-safe),
/// with `user` as given; `message` is valid only during the call. It must not call into
/// libemcoder (no `emcoder_set_log_callback`, no predict: that could deadlock) and must not
/// unwind (no C++ exception, no longjmp) out of the call.
/// Replacing or removing the callback waits for the deliveries in progress: once this function
/// returns, the previous callback is neither running nor called again, so its `user` may be
/// freed (and the code it lives in unloaded).
/// Thread safety: safe from any thread; the setting is process-wide (all models).
///
/// # Safety
/// `cb` is NULL or a function that may be called as described, with `user`, until the callback
/// is replaced or removed.
#[no_mangle]
pub unsafe extern "C" fn emcoder_set_log_callback(
    cb: EmcoderLogCallback,
    user: *mut c_void,
    min_level: i32,
) -> i32 {
    guard(super::error::EMCODER_ERR_INTERNAL, || {
        let min = match min_level {
            EMCODER_LOG_DEBUG => Level::Debug,
            EMCODER_LOG_INFO => Level::Info,
            EMCODER_LOG_WARN => Level::Warn,
            _ => return EMCODER_ERR_INVALID_ARGUMENT,
        };
        let mut sink = SINK.write().unwrap_or_else(|e| e.into_inner());
        *sink = cb.map(|cb| Sink { cb, user });
        let logger: Option<emcoder_rt::log::Logger> = sink.map(|_| Arc::new(deliver) as _);
        emcoder_rt::log::set_logger(logger, min);
        EMCODER_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<(i32, String, usize)>> = Mutex::new(Vec::new());

    unsafe extern "C" fn record(level: i32, message: *const c_char, user: *mut c_void) {
        // SAFETY: the message is a NUL-terminated string during the call.
        let m = unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        SEEN.lock().unwrap().push((level, m, user as usize));
    }

    #[test]
    fn messages_reach_the_callback_at_their_level() {
        // SAFETY: `record` is thread-safe and `user` is never dereferenced.
        unsafe {
            assert_eq!(
                emcoder_set_log_callback(Some(record), 7 as *mut c_void, 5),
                EMCODER_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                emcoder_set_log_callback(Some(record), 7 as *mut c_void, EMCODER_LOG_INFO),
                EMCODER_OK
            );
        }
        emcoder_rt::log::log(Level::Debug, || "too low".into());
        emcoder_rt::log::log(Level::Warn, || "a\0b".into());
        // SAFETY: removing the callback.
        unsafe { emcoder_set_log_callback(None, std::ptr::null_mut(), EMCODER_LOG_DEBUG) };
        emcoder_rt::log::log(Level::Warn, || "after removal".into());
        let seen = SEEN.lock().unwrap();
        let ours: Vec<_> = seen.iter().filter(|(_, _, u)| *u == 7).collect();
        assert_eq!(ours.len(), 1, "{seen:?}");
        assert_eq!(ours[0].0, EMCODER_LOG_WARN);
        assert_eq!(ours[0].1, "a\\0b");
    }
}
