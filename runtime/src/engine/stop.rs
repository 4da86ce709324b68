//! Stopping a call: a cancellation flag and a deadline, checked between layers.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A caller's own "should this call stop?" test (e.g. a flag in C memory), called from the
/// model's worker threads, so it must be cheap and thread-safe.
pub type StopFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// When a call must stop early. The forward pass checks it before every layer of every
/// chunk (and while it waits for memory), so a stopped call returns within about one
/// layer's work with [`Error::Cancelled`], having freed what it used.
#[derive(Clone, Default)]
pub struct Stop {
    /// Set it (from any thread) to cancel the calls that share it.
    pub flag: Option<Arc<AtomicBool>>,
    /// The call fails once this instant has passed.
    pub deadline: Option<Instant>,
    /// Cancels the call when it returns true.
    pub callback: Option<StopFn>,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("flag", &self.flag)
            .field("deadline", &self.deadline)
            .field("callback", &self.callback.as_ref().map(|_| "fn"))
            .finish()
    }
}

impl Stop {
    /// A stop that never fires.
    pub fn never() -> Self {
        Stop::default()
    }

    /// `Err(Cancelled)` when the flag is set, the callback says so, or the deadline has
    /// passed.
    pub fn check(&self) -> Result<()> {
        let flagged = self
            .flag
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed));
        if flagged || self.callback.as_ref().is_some_and(|c| c()) {
            return Err(Error::Cancelled(
                "the call was cancelled by its caller".into(),
            ));
        }
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return Err(Error::Cancelled(
                    "the call ran past its deadline (raise the timeout, or send fewer or shorter texts or fewer samples)".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn flag_and_deadline() {
        assert!(Stop::never().check().is_ok());
        let flag = Arc::new(AtomicBool::new(false));
        let s = Stop {
            flag: Some(flag.clone()),
            deadline: Some(Instant::now() + Duration::from_secs(60)),
            callback: None,
        };
        assert!(s.check().is_ok());
        flag.store(true, Ordering::Relaxed);
        assert!(matches!(s.check(), Err(Error::Cancelled(m)) if m.contains("cancelled")));
        let late = Stop {
            deadline: Some(Instant::now()),
            ..Stop::never()
        };
        assert!(matches!(late.check(), Err(Error::Cancelled(m)) if m.contains("deadline")));
        let by_fn = Stop {
            callback: Some(Arc::new(|| true)),
            ..Stop::never()
        };
        assert!(matches!(by_fn.check(), Err(Error::Cancelled(m)) if m.contains("cancelled")));
    }
}
