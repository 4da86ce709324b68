//! The service's Prometheus metrics (`GET /metrics`, text format 0.0.4). Rates (texts and
//! samples per second) are Prometheus' `rate()` over the counters, as is the convention.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the service exports, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    /// `emcoder_requests_total{route, status}`.
    pub requests: IntCounterVec,
    /// `emcoder_request_duration_seconds{route}`.
    pub latency: HistogramVec,
    /// `emcoder_queue_depth`: requests waiting for the engine.
    pub queue_depth: IntGauge,
    /// `emcoder_queue_wait_seconds`: from queued to the start of its engine call.
    pub queue_wait: Histogram,
    /// `emcoder_batch_texts`: texts per engine call.
    pub batch_texts: Histogram,
    /// `emcoder_batch_requests`: requests merged into one engine call.
    pub batch_requests: Histogram,
    /// `emcoder_batch_duration_seconds`: one engine call.
    pub batch_seconds: Histogram,
    /// `emcoder_texts_total`: texts predicted.
    pub texts: IntCounter,
    /// `emcoder_samples_total`: MC samples drawn (1 per text for a deterministic pass).
    pub samples: IntCounter,
    /// `emcoder_tokens_total`: tokens of the texts predicted.
    pub tokens: IntCounter,
    /// `emcoder_cancelled_calls_total`: engine calls stopped early because every request in
    /// them passed its deadline or lost its client, or the shutdown's grace ended.
    pub cancelled_calls: IntCounter,
    /// `emcoder_scratch_bytes`: the engine's idle scratch arena when scraped (it grows to
    /// the largest call so far, within the memory budget).
    pub scratch_bytes: IntGauge,
    /// `emcoder_memory_budget_bytes`: the bound of the engine's scratch memory.
    pub memory_budget: IntGauge,
}

fn buckets(start: f64, factor: f64, n: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, n).expect("constant bucket layout")
}

impl Metrics {
    /// Creates and registers them.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "emcoder_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "emcoder_request_duration_seconds",
                "HTTP request latency, from the request head to the response head",
            )
            .buckets(buckets(0.001, 2.0, 16)),
            &["route"],
        )
        .expect("valid metric");
        let queue_depth = IntGauge::new("emcoder_queue_depth", "Requests waiting for the engine")
            .expect("valid metric");
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new(
                "emcoder_queue_wait_seconds",
                "Time from queueing a request to the start of its engine call",
            )
            .buckets(buckets(0.0005, 2.0, 16)),
        )
        .expect("valid metric");
        let batch_texts = Histogram::with_opts(
            HistogramOpts::new("emcoder_batch_texts", "Texts per engine call")
                .buckets(buckets(1.0, 2.0, 10)),
        )
        .expect("valid metric");
        let batch_requests = Histogram::with_opts(
            HistogramOpts::new(
                "emcoder_batch_requests",
                "Requests merged into one engine call",
            )
            .buckets(buckets(1.0, 2.0, 10)),
        )
        .expect("valid metric");
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "emcoder_batch_duration_seconds",
                "Duration of one engine call",
            )
            .buckets(buckets(0.0005, 2.0, 16)),
        )
        .expect("valid metric");
        let texts =
            IntCounter::new("emcoder_texts_total", "Texts predicted").expect("valid metric");
        let samples = IntCounter::new(
            "emcoder_samples_total",
            "MC samples drawn (1 per text for a deterministic pass)",
        )
        .expect("valid metric");
        let tokens = IntCounter::new("emcoder_tokens_total", "Tokens of the texts predicted")
            .expect("valid metric");
        let cancelled_calls = IntCounter::new(
            "emcoder_cancelled_calls_total",
            "Engine calls stopped early (every request in them timed out or disconnected, or the shutdown's grace ended)",
        )
        .expect("valid metric");
        let scratch_bytes = IntGauge::new(
            "emcoder_scratch_bytes",
            "The engine's idle scratch arena after the last call (grows to the largest call so far, within the budget)",
        )
        .expect("valid metric");
        let memory_budget = IntGauge::new(
            "emcoder_memory_budget_bytes",
            "The bound of the engine's scratch memory",
        )
        .expect("valid metric");
        let m = Metrics {
            registry,
            requests,
            latency,
            queue_depth,
            queue_wait,
            batch_texts,
            batch_requests,
            batch_seconds,
            texts,
            samples,
            tokens,
            cancelled_calls,
            scratch_bytes,
            memory_budget,
        };
        let r = &m.registry;
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.latency.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.queue_wait.clone()),
            Box::new(m.batch_texts.clone()),
            Box::new(m.batch_requests.clone()),
            Box::new(m.batch_seconds.clone()),
            Box::new(m.texts.clone()),
            Box::new(m.samples.clone()),
            Box::new(m.tokens.clone()),
            Box::new(m.cancelled_calls.clone()),
            Box::new(m.scratch_bytes.clone()),
            Box::new(m.memory_budget.clone()),
        ] {
            r.register(c).expect("metric names are distinct");
        }
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into memory fails only on invalid metric families, which these are not.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
