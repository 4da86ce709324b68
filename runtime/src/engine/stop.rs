//! Stopping a call: a cancellation flag and a deadline, checked between layers.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// When a call must stop early. The forward pass checks it before every layer of every
/// chunk (and while it waits for memory), so a stopped call returns within about one
/// layer's work with [`Error::Cancelled`], having freed what it used.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    /// Set it (from any thread) to cancel the calls that share it.
    pub flag: Option<Arc<AtomicBool>>,
    /// The call fails once this instant has passed.
    pub deadline: Option<Instant>,
}

impl Stop {
    /// A stop that never fires.
    pub fn never() -> Self {
        Stop::default()
    }

    /// `Err(Cancelled)` when the flag is set or the deadline has passed.
    pub fn check(&self) -> Result<()> {
        if self
            .flag
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
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
        };
        assert!(s.check().is_ok());
        flag.store(true, Ordering::Relaxed);
        assert!(matches!(s.check(), Err(Error::Cancelled(m)) if m.contains("cancelled")));
        let late = Stop {
            flag: None,
            deadline: Some(Instant::now()),
        };
        assert!(matches!(late.check(), Err(Error::Cancelled(m)) if m.contains("deadline")));
    }
}
