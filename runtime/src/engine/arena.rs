//! The scratch arenas of a model, under a memory budget.
//!
//! Each running call holds one arena ([`Scratch`]). Before it starts, a call reserves the
//! most scratch it can need (`need`, from [`super::forward::scratch_bound`] at its largest
//! chunk); the budget bounds the sum of the running calls' reservations plus the memory
//! held by idle arenas. A call that would exceed it waits until others finish (or fails at
//! once when asked to, or when it alone needs more than the whole budget). Idle arenas are
//! memory too: when a call finishes, the model keeps at most one idle arena (the one just
//! returned) and frees the others, so after a burst of concurrent calls the model holds
//! one call's scratch, not the burst's.

use super::forward::Scratch;
use super::stop::Stop;
use crate::error::{Error, Result};
use crate::log::{log, Level};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The arenas of one model and its memory budget.
pub struct Arenas {
    budget: usize,
    state: Mutex<State>,
    returned: Condvar,
}

#[derive(Default)]
struct State {
    /// Idle arenas (at most one once every call has finished).
    idle: Vec<Scratch>,
    /// Bytes reserved by the running calls.
    reserved: usize,
}

impl State {
    fn idle_bytes(&self) -> usize {
        self.idle.iter().map(Scratch::bytes).sum()
    }
}

/// An arena lent to one call, with the bytes it reserved.
pub struct Lease {
    /// The arena.
    pub scratch: Scratch,
    reserved: usize,
    /// Its bytes when lent (to report growth).
    lent_bytes: usize,
}

impl Arenas {
    /// Arenas under a budget of `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Arenas {
            budget,
            state: Mutex::new(State::default()),
            returned: Condvar::new(),
        }
    }

    /// The budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes held by idle arenas.
    pub fn idle_bytes(&self) -> usize {
        self.lock().idle_bytes()
    }

    /// Bytes reserved by running calls.
    pub fn reserved_bytes(&self) -> usize {
        self.lock().reserved
    }

    /// The state (an arena holds no invariant a panic could break, so a poisoned lock is
    /// used as is).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lends an arena to a call that needs at most `need` bytes of scratch. While the
    /// running calls' reservations, the idle arenas and `need` exceed the budget it frees
    /// idle arenas, then waits for running calls to finish (`wait`), checking `stop`; it
    /// fails with [`Error::OutOfMemory`] when `need` alone exceeds the budget, or when the
    /// budget is taken and `wait` is false.
    pub fn take(&self, need: usize, wait: bool, stop: &Stop) -> Result<Lease> {
        if need > self.budget {
            return Err(Error::OutOfMemory(format!(
                "this call needs up to {} MB of scratch memory but the model's memory budget is {} MB: raise memory_budget, lower max_rows (or max_tokens), or send fewer or shorter texts per call",
                mb(need),
                mb(self.budget)
            )));
        }
        let mut st = self.lock();
        let mut waited = false;
        loop {
            let idle = st.idle_bytes();
            if st.reserved + need + idle <= self.budget {
                // The largest idle arena serves: its memory moves from idle to the call,
                // so the total stays within the budget.
                let best = (0..st.idle.len()).max_by_key(|&i| st.idle[i].bytes());
                let scratch = match best {
                    Some(i) => st.idle.swap_remove(i),
                    None => Scratch::default(),
                };
                let lent_bytes = scratch.bytes();
                let reserved = need.max(lent_bytes);
                st.reserved += reserved;
                return Ok(Lease {
                    scratch,
                    reserved,
                    lent_bytes,
                });
            }
            if idle > 0 {
                // Free what is idle before waiting for anyone.
                st.idle.clear();
                continue;
            }
            // Nothing idle and need <= budget: running calls hold the rest.
            if !wait {
                return Err(Error::OutOfMemory(format!(
                    "the model's memory budget ({} MB) is taken by running calls ({} MB reserved) and this call needs up to {} MB: retry later, wait for memory (the default), or raise memory_budget",
                    mb(self.budget),
                    mb(st.reserved),
                    mb(need)
                )));
            }
            stop.check()?;
            if !waited {
                waited = true;
                let reserved = st.reserved;
                log(Level::Warn, || {
                    format!(
                        "a call waits for scratch memory: it needs up to {} MB, running calls reserve {} MB of the {} MB budget",
                        mb(need),
                        mb(reserved),
                        mb(self.budget)
                    )
                });
            }
            st = self
                .returned
                .wait_timeout(st, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Returns a call's arena: its reservation ends, and the model keeps at most this one
    /// idle arena (freeing the others); an arena larger than the budget allows next to the
    /// running calls is freed too.
    pub fn give_back(&self, lease: Lease) {
        let now = lease.scratch.bytes();
        if now > lease.lent_bytes {
            log(Level::Debug, || {
                format!(
                    "scratch arena grew from {} MB to {} MB (reserved {} MB)",
                    mb(lease.lent_bytes),
                    mb(now),
                    mb(lease.reserved)
                )
            });
        }
        let mut st = self.lock();
        st.reserved -= lease.reserved;
        st.idle.clear();
        if st.reserved + lease.scratch.bytes() <= self.budget {
            st.idle.push(lease.scratch);
        }
        drop(st);
        self.returned.notify_all();
    }
}

fn mb(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn reservations_stay_within_the_budget() {
        let a = Arenas::new(100);
        let never = Stop::never();
        assert!(
            matches!(a.take(101, true, &never), Err(Error::OutOfMemory(m)) if m.contains("memory_budget"))
        );
        let l1 = a.take(60, true, &never).unwrap();
        assert_eq!(a.reserved_bytes(), 60);
        // A second call of 60 does not fit: fails fast without waiting...
        assert!(
            matches!(a.take(60, false, &never), Err(Error::OutOfMemory(m)) if m.contains("taken"))
        );
        // ...or waits until the first returns (cancelled here by its deadline).
        let late = Stop {
            flag: None,
            deadline: Some(Instant::now() + Duration::from_millis(50)),
            callback: None,
        };
        assert!(matches!(a.take(60, true, &late), Err(Error::Cancelled(_))));
        let l2 = a.take(40, false, &never).unwrap();
        a.give_back(l1);
        a.give_back(l2);
        assert_eq!(a.reserved_bytes(), 0);
    }

    #[test]
    fn a_waiting_call_runs_when_memory_returns() {
        let a = Arc::new(Arenas::new(100));
        let held = a.take(80, true, &Stop::never()).unwrap();
        let started = Arc::new(AtomicBool::new(false));
        let t = {
            let (a, started) = (a.clone(), started.clone());
            std::thread::spawn(move || {
                let l = a.take(50, true, &Stop::never()).unwrap();
                started.store(true, Ordering::SeqCst);
                a.give_back(l);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!started.load(Ordering::SeqCst), "ran beyond the budget");
        a.give_back(held);
        t.join().unwrap();
        assert!(started.load(Ordering::SeqCst));
    }
}
