//! `emcoder serve`: the flags of the service (crate emcoder-serve, docs/serve.md).

use clap::Args;
use emcoder_serve::batcher::BatchLimits;
use emcoder_serve::ServeConfig;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: crate::ModelArgs,
    /// Address to listen on (0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0: any free port; the first line on stderr says which).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// MC samples of POST /predict, and the default of POST /v1/predict.
    #[arg(long, default_value_t = emcoder::DEFAULT_SAMPLES)]
    samples: u32,
    /// Seed of POST /predict, and the default of POST /v1/predict.
    #[arg(long, default_value_t = emcoder::DEFAULT_SEED)]
    seed: u64,
    /// Most MC samples one request may ask (400 beyond).
    #[arg(long, default_value_t = 1000)]
    max_samples: u32,
    /// Most texts in one request (413 beyond).
    #[arg(long, default_value_t = 64)]
    max_texts: usize,
    /// Most tokens of one request's texts together (413 beyond; one text's limit is --max-tokens).
    #[arg(long, default_value_t = 16384)]
    max_request_tokens: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Requests waiting for the engine beyond which new ones get 429 (with Retry-After).
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Work of one engine call in tokens x samples: concurrent requests with the same sampling
    /// options merge up to this (a larger single request still runs, alone).
    #[arg(long, default_value_t = 65536)]
    max_batch_rows: usize,
    /// Texts of one engine call.
    #[arg(long, default_value_t = 256)]
    max_batch_texts: usize,
    /// How long a request waits for others to share its engine call while the engine is idle.
    #[arg(long, default_value_t = 2.0)]
    max_batch_wait_ms: f64,
    /// One engine call per request (for comparison; merging never changes a number).
    #[arg(long)]
    no_batching: bool,
    /// Deadline of a request from its arrival (504 beyond; the engine stops its work).
    #[arg(long, default_value_t = 30000)]
    request_timeout_ms: u64,
    /// Longest time to receive a request's body (408 beyond).
    #[arg(long, default_value_t = 10000)]
    body_timeout_ms: u64,
    /// After SIGTERM or SIGINT: how long accepted requests may take to finish (those not
    /// started by then get 503).
    #[arg(long, default_value_t = 30.0)]
    grace_s: f64,
    /// Log JSON lines instead of key=value lines.
    #[arg(long)]
    log_json: bool,
}

fn duration_s(what: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| format!("{what} is {s}: give a non-negative number of seconds"))
}

pub fn run(a: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    for (name, v) in [
        ("--max-texts", a.max_texts),
        ("--max-request-tokens", a.max_request_tokens),
        ("--max-body-bytes", a.max_body_bytes),
        ("--max-queue", a.max_queue),
        ("--max-batch-rows", a.max_batch_rows),
        ("--max-batch-texts", a.max_batch_texts),
    ] {
        if v == 0 {
            return Err(format!("{name} is 0: give a positive limit").into());
        }
    }
    if a.samples == 0 || a.samples > a.max_samples {
        return Err(format!(
            "--samples is {}: give between 1 and --max-samples ({})",
            a.samples, a.max_samples
        )
        .into());
    }
    if a.request_timeout_ms == 0 || a.body_timeout_ms == 0 {
        return Err("--request-timeout-ms and --body-timeout-ms must be positive".into());
    }
    let model = crate::load(&a.model)?;
    let cfg = ServeConfig {
        addr: SocketAddr::new(a.host, a.port),
        batch: BatchLimits {
            enabled: !a.no_batching,
            max_cost: a.max_batch_rows,
            max_texts: a.max_batch_texts,
            max_wait: duration_s("--max-batch-wait-ms", a.max_batch_wait_ms / 1e3)?,
            max_queue: a.max_queue,
        },
        max_body_bytes: a.max_body_bytes,
        max_texts: a.max_texts,
        max_request_tokens: a.max_request_tokens,
        max_samples: a.max_samples,
        samples: a.samples,
        seed: a.seed,
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        body_timeout: Duration::from_millis(a.body_timeout_ms),
        grace: duration_s("--grace-s", a.grace_s)?,
        model_id: model
            .files()
            .dir
            .file_name()
            .map_or_else(|| "emcoder".into(), |n| n.to_string_lossy().into_owned()),
    };
    emcoder_serve::run(model, cfg, a.log_json)?;
    Ok(())
}
