//! The model's worker threads: a rayon pool whose threads are joined when the model is
//! freed, and which refuses to run in a process forked after the model was loaded.

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A thread pool owned by one model.
pub struct Workers {
    pool: Option<rayon::ThreadPool>,
    handles: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The process that started the threads.
    pid: u32,
    threads: usize,
}

impl Workers {
    /// Starts `threads` worker threads (named `emcoder-<i>`).
    pub fn start(threads: usize) -> Result<Self> {
        let handles: Arc<Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let h = handles.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .spawn_handler(move |t| {
                let name = format!("emcoder-{}", t.index());
                let handle = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || t.run())?;
                h.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
                Ok(())
            })
            .build()
            .map_err(|e| Error::Input(format!("cannot start {threads} worker threads: {e}")))?;
        Ok(Workers {
            pool: Some(pool),
            handles,
            pid: std::process::id(),
            threads,
        })
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on the pool. In a child process forked after the threads started, the
    /// threads do not exist (fork copies only the calling thread): an error instead of a
    /// call that would wait for them forever.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        let pid = std::process::id();
        if pid != self.pid {
            return Err(Error::Input(format!(
                "this model was loaded by process {} and this is process {pid}, forked from it: a fork keeps no worker threads, so load the model again in the child (or load it after forking)",
                self.pid
            )));
        }
        match &self.pool {
            Some(p) => Ok(p.install(f)),
            None => unreachable!("the pool lives until drop"),
        }
    }
}

impl Drop for Workers {
    /// Stops the threads and waits for them to exit, so that nothing of the model runs
    /// after it is freed (a `dlclose` right after `emcoder_model_free` is safe). Skipped
    /// from one of the pool's own threads (it cannot join itself) and in a forked child
    /// (the threads are not there).
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else { return };
        let inside = pool.current_thread_index().is_some();
        drop(pool);
        if inside || std::process::id() != self.pid {
            return;
        }
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn drop_joins_every_thread() {
        static ALIVE: AtomicUsize = AtomicUsize::new(0);
        struct Guard;
        impl Drop for Guard {
            fn drop(&mut self) {
                ALIVE.fetch_sub(1, Ordering::SeqCst);
            }
        }
        thread_local! {
            static G: std::cell::RefCell<Option<Guard>> = const { std::cell::RefCell::new(None) };
        }
        let w = Workers::start(3).unwrap();
        w.install(|| {
            rayon::broadcast(|_| {
                ALIVE.fetch_add(1, Ordering::SeqCst);
                G.with(|g| *g.borrow_mut() = Some(Guard));
            })
        })
        .unwrap();
        assert_eq!(ALIVE.load(Ordering::SeqCst), 3);
        drop(w);
        // Joined: every thread has exited and run its thread-local destructors.
        assert_eq!(ALIVE.load(Ordering::SeqCst), 0);
    }
}
