//! Batching across requests: handlers put tokenized jobs in one bounded queue; one engine
//! thread merges the jobs that share their sampling options into one `predict_ids` call
//! (bounded by tokens x samples and a short wait for company) and hands each job exactly its
//! own results. Results are a pure function of (model, text, N, seed) whatever the batch
//! makeup (the runtime's contract), so merging never changes a number.

use crate::metrics::Metrics;
use emcoder::{Error, Model, PredictOptions, Stop, TextPrediction};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How a job samples; jobs merge only with jobs of equal sampling.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// MC samples (the most drawn with a stopping rule).
    pub samples: u32,
    /// Seed of the dropout masks.
    pub seed: u64,
    /// One pass with dropout off.
    pub deterministic: bool,
    /// Adaptive sampling's tolerance.
    pub tolerance: Option<f32>,
    /// Stopping on decisions at this error rate.
    pub decide: Option<f32>,
}

impl Sampling {
    fn options(&self, stop: Stop) -> PredictOptions {
        PredictOptions {
            samples: self.samples,
            seed: self.seed,
            deterministic: self.deterministic,
            truncate: false, // applied when the handler tokenized
            tolerance: self.tolerance,
            decision_error: self.decide,
            stop,
            wait_for_memory: true,
        }
    }

    /// Rows of work per token: the samples a text may draw (1 for a deterministic pass).
    pub fn rows_per_token(&self) -> usize {
        if self.deterministic {
            1
        } else {
            self.samples.max(1) as usize
        }
    }
}

/// A job's fate as the requester sees it: cancelled when its client went away, dead once
/// that or its deadline happened. The engine stops a batch whose every job is dead.
pub struct Ticket {
    cancelled: AtomicBool,
    deadline: Instant,
}

impl Ticket {
    /// A live ticket that dies at `deadline`.
    pub fn new(deadline: Instant) -> Arc<Ticket> {
        Arc::new(Ticket {
            cancelled: AtomicBool::new(false),
            deadline,
        })
    }
    /// The requester no longer wants the result (client gone, or its deadline answered).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
    fn dead(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

/// Why a job got no predictions.
#[derive(Clone, Debug)]
pub enum Failure {
    /// Its deadline passed (or its client left) before or while it ran.
    Timeout,
    /// The server is shutting down and the job's work had not started.
    ShuttingDown,
    /// The engine refused or failed (the message says why); `input` when the texts or
    /// options were at fault.
    Engine { message: String, input: bool },
}

/// The answer a job gets.
pub type Reply = Result<Vec<TextPrediction>, Failure>;

/// One request's work.
pub struct Job {
    /// Token ids of its texts, with their special tokens.
    pub ids: Vec<Vec<u32>>,
    /// How it samples.
    pub sampling: Sampling,
    /// Its deadline and cancellation.
    pub ticket: Arc<Ticket>,
    /// Where its answer goes.
    pub reply: oneshot::Sender<Reply>,
    enqueued: Instant,
}

impl Job {
    /// A job, queued from now.
    pub fn new(
        ids: Vec<Vec<u32>>,
        sampling: Sampling,
        ticket: Arc<Ticket>,
        reply: oneshot::Sender<Reply>,
    ) -> Job {
        Job {
            ids,
            sampling,
            ticket,
            reply,
            enqueued: Instant::now(),
        }
    }
    /// Tokens x samples: the rows of work this job adds to a batch.
    pub fn cost(&self) -> usize {
        let tokens: usize = self.ids.iter().map(Vec::len).sum();
        tokens.saturating_mul(self.sampling.rows_per_token())
    }
}

/// Limits of one engine call and of the queue.
#[derive(Clone, Debug)]
pub struct BatchLimits {
    /// Merge requests at all (off: one engine call per request, for comparison).
    pub enabled: bool,
    /// Tokens x samples of one engine call (a single larger request still runs, alone).
    pub max_cost: usize,
    /// Texts of one engine call.
    pub max_texts: usize,
    /// How long the first job of a batch waits for company while the engine is idle.
    pub max_wait: Duration,
    /// Jobs waiting beyond this are refused (429).
    pub max_queue: usize,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The queue holds `max_queue` jobs.
    QueueFull,
    /// Shutting down: no new work.
    ShuttingDown,
}

struct State {
    jobs: VecDeque<Job>,
    /// No new jobs; the engine thread drains the queue and exits.
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Requests on their way to the queue (body being read, texts tokenized): the engine
    /// waits for company only while there are some, so a lone client never waits.
    arriving: AtomicUsize,
    wake: Condvar,
    /// The grace period is over: the running call stops, what is queued is answered
    /// `ShuttingDown`, and the engine thread exits.
    abandon: Arc<AtomicBool>,
    model: Arc<Model>,
    limits: BatchLimits,
    metrics: Arc<Metrics>,
}

/// The queue and its engine thread.
pub struct Batcher {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Batcher {
    /// Starts the engine thread.
    pub fn start(
        model: Arc<Model>,
        limits: BatchLimits,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Batcher> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closing: false,
            }),
            wake: Condvar::new(),
            arriving: AtomicUsize::new(0),
            abandon: Arc::new(AtomicBool::new(false)),
            model,
            limits,
            metrics,
        });
        shared
            .metrics
            .memory_budget
            .set(shared.model.memory_budget() as i64);
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("emcoder-engine".into())
            .spawn(move || engine_loop(&s))?;
        Ok(Batcher {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a job, or gives it back with the reason it was refused. Its arrival ends in
    /// the same step, so the engine never waits for the very request it just got.
    pub fn submit(&self, job: Job, mut arrival: Arrival) -> Result<(), (Refused, Job)> {
        let mut st = lock(&self.shared.state);
        self.shared.arriving.fetch_sub(1, Ordering::SeqCst);
        arrival.armed = false;
        if st.closing {
            return Err((Refused::ShuttingDown, job));
        }
        if st.jobs.len() >= self.shared.limits.max_queue {
            return Err((Refused::QueueFull, job));
        }
        st.jobs.push_back(job);
        self.shared.metrics.queue_depth.set(st.jobs.len() as i64);
        drop(st);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Announces a request on its way to the queue, until the guard is dropped (after
    /// `submit`, or when the request fails before it). `None` when `max_queue` requests are
    /// already on their way: with the queue's bound, this bounds the memory of requests
    /// (bodies being read, texts tokenized) whatever the number of connections.
    pub fn arriving(&self) -> Option<Arrival> {
        let max = self.shared.limits.max_queue;
        let n = self.shared.arriving.fetch_add(1, Ordering::SeqCst);
        let arrival = Arrival {
            shared: self.shared.clone(),
            armed: true,
        };
        (n < max).then_some(arrival)
    }

    /// Jobs waiting now.
    pub fn queued(&self) -> usize {
        lock(&self.shared.state).jobs.len()
    }

    /// Stops taking jobs; the engine thread finishes the queue, then exits.
    pub fn close(&self) {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
    }

    /// The grace period is over: the running batch is cancelled and every job not started
    /// is answered `ShuttingDown`.
    pub fn abandon(&self) {
        // Set before the lock is taken, so the engine sees it when it next holds the lock.
        self.shared.abandon.store(true, Ordering::SeqCst);
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
    }

    /// Waits for the engine thread to exit (after `close` or `abandon`).
    pub fn join(&self) {
        let t = lock(&self.thread).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

/// A request on its way to the queue (see [`Batcher::arriving`]).
pub struct Arrival {
    shared: Arc<Shared>,
    /// Still counted in `arriving` (`submit` ends it under the queue's lock).
    armed: bool,
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let sh = &self.shared;
        sh.arriving.fetch_sub(1, Ordering::SeqCst);
        // Taken under the lock, so that the engine, between its check and its wait, cannot
        // miss this wake-up.
        drop(lock(&sh.state));
        sh.wake.notify_all();
    }
}

/// A poisoned lock only means a thread panicked while holding it; the queue stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn engine_loop(sh: &Shared) {
    loop {
        let batch = {
            let mut st = lock(&sh.state);
            loop {
                drop_dead(&mut st, sh);
                if sh.abandon.load(Ordering::SeqCst) {
                    for j in st.jobs.drain(..) {
                        let _ = j.reply.send(Err(Failure::ShuttingDown));
                    }
                    sh.metrics.queue_depth.set(0);
                    return;
                }
                if !st.jobs.is_empty() {
                    break;
                }
                if st.closing {
                    return;
                }
                st = sh.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            // A short wait for company while the engine is idle and other requests are on
            // their way; a queue that built up while the engine ran has waited long enough,
            // and a lone request does not wait.
            let until = st.jobs[0].enqueued + sh.limits.max_wait;
            while sh.limits.enabled
                && !st.closing
                && sh.arriving.load(Ordering::SeqCst) > 0
                && !full(&st, &sh.limits)
            {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                st = sh
                    .wake
                    .wait_timeout(st, until - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            drop_dead(&mut st, sh);
            if st.jobs.is_empty() {
                continue;
            }
            let batch = take_batch(&mut st, &sh.limits);
            sh.metrics.queue_depth.set(st.jobs.len() as i64);
            batch
        };
        run_batch(sh, batch);
    }
}

/// Answers and removes the jobs whose deadline passed or whose client left.
fn drop_dead(st: &mut State, sh: &Shared) {
    if st.jobs.iter().any(|j| j.ticket.dead()) {
        let (dead, live): (VecDeque<Job>, VecDeque<Job>) =
            st.jobs.drain(..).partition(|j| j.ticket.dead());
        st.jobs = live;
        for j in dead {
            let _ = j.reply.send(Err(Failure::Timeout));
        }
        sh.metrics.queue_depth.set(st.jobs.len() as i64);
    }
}

/// Whether the jobs that could join the first one already fill a batch.
fn full(st: &State, l: &BatchLimits) -> bool {
    let first = &st.jobs[0].sampling;
    let (mut cost, mut texts) = (0usize, 0usize);
    for j in st.jobs.iter().filter(|j| &j.sampling == first) {
        cost = cost.saturating_add(j.cost());
        texts += j.ids.len();
        if cost >= l.max_cost || texts >= l.max_texts {
            return true;
        }
    }
    false
}

/// The first job and, in queue order, every later job with its sampling that still fits.
fn take_batch(st: &mut State, l: &BatchLimits) -> Vec<Job> {
    let first = st
        .jobs
        .pop_front()
        .expect("caller checked the queue is not empty");
    let (mut cost, mut texts) = (first.cost(), first.ids.len());
    let mut batch = vec![first];
    if !l.enabled {
        return batch;
    }
    let mut i = 0;
    while i < st.jobs.len() {
        let j = &st.jobs[i];
        let fits =
            cost.saturating_add(j.cost()) <= l.max_cost && texts + j.ids.len() <= l.max_texts;
        if j.sampling == batch[0].sampling && fits {
            cost += j.cost();
            texts += j.ids.len();
            batch.push(st.jobs.remove(i).expect("index checked"));
        } else {
            i += 1;
        }
    }
    batch
}

fn run_batch(sh: &Shared, batch: Vec<Job>) {
    let started = Instant::now();
    for j in &batch {
        sh.metrics
            .queue_wait
            .observe(started.duration_since(j.enqueued).as_secs_f64());
    }
    match predict(sh, &batch) {
        Ok(preds) => {
            record(sh, &batch, &preds, started);
            deliver(batch, preds);
        }
        // A failure that is not a cancellation or the shutdown, in a batch of several:
        // each job alone, so that one job's fault is its own.
        Err(Failure::Engine { .. }) if batch.len() > 1 => {
            for j in batch {
                let started = Instant::now();
                let one = vec![j];
                match predict(sh, &one) {
                    Ok(preds) => {
                        record(sh, &one, &preds, started);
                        deliver(one, preds);
                    }
                    Err(f) => fail(one, f),
                }
            }
        }
        Err(f) => {
            if matches!(f, Failure::Timeout | Failure::ShuttingDown) {
                sh.metrics.cancelled_calls.inc();
            }
            fail(batch, f)
        }
    }
}

fn predict(sh: &Shared, batch: &[Job]) -> Result<Vec<TextPrediction>, Failure> {
    if sh.abandon.load(Ordering::Relaxed) {
        return Err(Failure::ShuttingDown);
    }
    // The call stops when every job in it is dead, or when the shutdown's grace is over.
    let tickets: Vec<Arc<Ticket>> = batch.iter().map(|j| j.ticket.clone()).collect();
    let abandon = sh.abandon.clone();
    let stop = Stop {
        flag: None,
        deadline: None,
        callback: Some(Arc::new(move || {
            abandon.load(Ordering::Relaxed) || tickets.iter().all(|t| t.dead())
        })),
    };
    let opts = batch[0].sampling.options(stop);
    let ids: Vec<Vec<u32>> = batch.iter().flat_map(|j| j.ids.iter().cloned()).collect();
    let res = catch_unwind(AssertUnwindSafe(|| sh.model.predict_ids(&ids, &opts)));
    match res {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(Error::Cancelled(_))) if sh.abandon.load(Ordering::Relaxed) => {
            Err(Failure::ShuttingDown)
        }
        Ok(Err(Error::Cancelled(_))) => Err(Failure::Timeout),
        Ok(Err(e)) => Err(Failure::Engine {
            input: matches!(e, Error::Input(_)),
            message: e.to_string(),
        }),
        Err(_) => Err(Failure::Engine {
            message: "internal error: the engine panicked on this batch (please report it with the request)".into(),
            input: false,
        }),
    }
}

/// Metrics of one engine call.
fn record(sh: &Shared, batch: &[Job], preds: &[TextPrediction], started: Instant) {
    let m = &sh.metrics;
    let texts = preds.len();
    let samples: u64 = preds.iter().map(|p| u64::from(p.samples)).sum();
    m.batch_texts.observe(texts as f64);
    m.batch_requests.observe(batch.len() as f64);
    m.batch_seconds.observe(started.elapsed().as_secs_f64());
    m.texts.inc_by(texts as u64);
    m.samples.inc_by(samples);
    m.tokens
        .inc_by(preds.iter().map(|p| p.n_tokens as u64).sum());
}

/// Each job gets its own texts' predictions, in order.
fn deliver(batch: Vec<Job>, preds: Vec<TextPrediction>) {
    let mut rest = preds.into_iter();
    for j in batch {
        let mine: Vec<TextPrediction> = rest.by_ref().take(j.ids.len()).collect();
        let _ = j.reply.send(Ok(mine));
    }
}

fn fail(batch: Vec<Job>, f: Failure) {
    for j in batch {
        let _ = j.reply.send(Err(f.clone()));
    }
}
