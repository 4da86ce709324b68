//! An optional log callback (off by default): what a service operator wants to know about
//! the runtime's choices, kernels, memory budget, arena growth, calls waiting for memory.

use std::sync::{Arc, RwLock};

/// How important a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Details (arena growth).
    Debug = 0,
    /// Choices made (kernels at load, the memory budget).
    Info = 1,
    /// Something the operator may want to change (calls waiting for memory).
    Warn = 2,
}

/// A log sink: `(level, message)`. Called from any thread, possibly concurrently; it must
/// not call back into the runtime.
pub type Logger = Arc<dyn Fn(Level, &str) + Send + Sync>;

static LOGGER: RwLock<Option<(Logger, Level)>> = RwLock::new(None);

/// Installs `logger` for messages of `min_level` and above (process-wide), or removes it
/// with `None`.
pub fn set_logger(logger: Option<Logger>, min_level: Level) {
    *LOGGER.write().unwrap_or_else(|e| e.into_inner()) = logger.map(|l| (l, min_level));
}

/// Whether a message of `level` would be delivered (to skip formatting otherwise).
pub fn enabled(level: Level) -> bool {
    LOGGER
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|(_, min)| level >= *min)
}

/// Delivers `msg()` to the logger, if any wants `level`.
pub fn log(level: Level, msg: impl FnOnce() -> String) {
    let sink = LOGGER
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|(_, min)| level >= *min)
        .map(|(l, _)| l.clone());
    if let Some(l) = sink {
        l(level, &msg());
    }
}
