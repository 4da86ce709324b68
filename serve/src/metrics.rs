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

/// Registers `metric` in `r` and returns it, so that no metric is made without being
/// exported. The names are constants and distinct: registering cannot fail.
fn add<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, metric: M) -> M {
    r.register(Box::new(metric.clone()))
        .expect("constant, distinct metric names");
    metric
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    add(r, IntCounter::new(name, help).expect("valid metric"))
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    add(r, IntGauge::new(name, help).expect("valid metric"))
}

fn histogram(r: &Registry, name: &str, help: &str, b: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(b);
    add(r, Histogram::with_opts(opts).expect("valid metric"))
}

impl Metrics {
    /// Creates and registers them.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let requests = add(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "emcoder_requests_total",
                    "HTTP requests by route and status",
                ),
                &["route", "status"],
            )
            .expect("valid metric"),
        );
        let latency = add(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "emcoder_request_duration_seconds",
                    "HTTP request latency, from the request head to the response head",
                )
                .buckets(buckets(0.001, 2.0, 16)),
                &["route"],
            )
            .expect("valid metric"),
        );
        Metrics {
            requests,
            latency,
            queue_depth: gauge(&r, "emcoder_queue_depth", "Requests waiting for the engine"),
            queue_wait: histogram(
                &r,
                "emcoder_queue_wait_seconds",
                "Time from queueing a request to the start of its engine call",
                buckets(0.0005, 2.0, 16),
            ),
            batch_texts: histogram(
                &r,
                "emcoder_batch_texts",
                "Texts per engine call",
                buckets(1.0, 2.0, 10),
            ),
            batch_requests: histogram(
                &r,
                "emcoder_batch_requests",
                "Requests merged into one engine call",
                buckets(1.0, 2.0, 10),
            ),
            batch_seconds: histogram(
                &r,
                "emcoder_batch_duration_seconds",
                "Duration of one engine call",
                buckets(0.0005, 2.0, 16),
            ),
            texts: counter(&r, "emcoder_texts_total", "Texts predicted"),
            samples: counter(
                &r,
                "emcoder_samples_total",
                "MC samples drawn (1 per text for a deterministic pass)",
            ),
            tokens: counter(&r, "emcoder_tokens_total", "Tokens of the texts predicted"),
            cancelled_calls: counter(
                &r,
                "emcoder_cancelled_calls_total",
                "Engine calls stopped early (every request in them timed out or disconnected, or the shutdown's grace ended)",
            ),
            scratch_bytes: gauge(
                &r,
                "emcoder_scratch_bytes",
                "The engine's idle scratch arena (grows to the largest call so far, within the budget)",
            ),
            memory_budget: gauge(
                &r,
                "emcoder_memory_budget_bytes",
                "The bound of the engine's scratch memory",
            ),
            registry: r,
        }
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
