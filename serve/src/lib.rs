//! # emcoder-serve
//!
//! The model behind HTTP (`emcoder serve`): TEI's `POST /predict` (and `POST /`, the shape
//! `huggingface_hub.InferenceClient` sends), `POST /v1/predict` with the whole answer of
//! `emcoder predict --json`, health, info, Prometheus metrics, the OpenAPI document and a demo
//! page. Requests that arrive together share engine calls ([`batcher`]); every limit refuses
//! with a JSON error that says what to change ([`api`]). docs/serve.md is the user's guide.
//!
//! Layers: [`routes`] (handlers, limits) -> [`batcher`] (queue, engine thread) -> the
//! `emcoder` runtime; [`metrics`] observes both.

pub mod api;
pub mod batcher;
pub mod metrics;
pub mod routes;

use batcher::{BatchLimits, Batcher};
use emcoder::Model;
use metrics::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Everything `emcoder serve` is told besides the model.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to listen on (port 0: any free port; the log says which).
    pub addr: SocketAddr,
    /// Merging of concurrent requests into engine calls, and the queue's bound.
    pub batch: BatchLimits,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most texts in one request (413 beyond).
    pub max_texts: usize,
    /// Most tokens of one request's texts together (413 beyond).
    pub max_request_tokens: usize,
    /// Most MC samples one request may ask (400 beyond).
    pub max_samples: u32,
    /// Samples of `/predict` and the default of `/v1/predict`.
    pub samples: u32,
    /// Seed of `/predict` and the default of `/v1/predict`.
    pub seed: u64,
    /// Deadline of a request from its arrival (504 beyond).
    pub request_timeout: Duration,
    /// Longest time to receive a request's body (408 beyond: slow clients).
    pub body_timeout: Duration,
    /// After SIGTERM/SIGINT: how long accepted requests may take to finish.
    pub grace: Duration,
    /// A name for the model in `/info` (its directory by default).
    pub model_id: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            batch: BatchLimits {
                enabled: true,
                max_cost: 65_536,
                max_texts: 256,
                max_wait: Duration::from_millis(2),
                max_queue: 256,
            },
            max_body_bytes: 1 << 20,
            max_texts: 64,
            max_request_tokens: 16_384,
            max_samples: 1000,
            samples: emcoder::DEFAULT_SAMPLES,
            seed: emcoder::DEFAULT_SEED,
            request_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            model_id: String::new(),
        }
    }
}

/// Why the service could not start or stopped.
#[derive(Debug)]
pub struct ServeError(pub String);

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServeError {}

/// What the handlers share.
pub struct AppState {
    /// The model.
    pub model: Arc<Model>,
    /// The queue and its engine thread.
    pub batcher: Batcher,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The limits and defaults.
    pub cfg: ServeConfig,
    /// Set once a shutdown began: `/health` answers 503 so balancers stop sending.
    pub draining: AtomicBool,
}

/// Serves on the current thread until SIGTERM or SIGINT, then drains and returns (the
/// process exits 0). Logs one line per request on stderr (`json_logs`: JSON lines).
pub fn run(model: Model, cfg: ServeConfig, json_logs: bool) -> Result<(), ServeError> {
    init_logs(json_logs);
    // Tokenizing runs on the blocking pool; a few threads keep up with the engine, and a
    // bounded pool bounds the threads (and their allocator arenas) under any load.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(8)
        .thread_name("emcoder-http")
        .build()
        .map_err(|e| ServeError(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let listener = TcpListener::bind(cfg.addr).await.map_err(|e| {
            ServeError(format!(
                "cannot listen on {}: {e} (choose another --port or --host)",
                cfg.addr
            ))
        })?;
        serve(Arc::new(model), cfg, listener, shutdown_signal()).await
    })
}

/// Serves on `listener` until `shutdown` completes, then stops accepting, lets accepted
/// requests finish within the grace period (those still queued after it get 503) and returns.
pub async fn serve(
    model: Arc<Model>,
    cfg: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let batcher = Batcher::start(model.clone(), cfg.batch.clone(), metrics.clone())
        .map_err(|e| ServeError(format!("cannot start the engine thread: {e}")))?;
    let grace = cfg.grace;
    let state = Arc::new(AppState {
        model,
        batcher,
        metrics,
        cfg,
        draining: AtomicBool::new(false),
    });
    let app = routes::router(state.clone());
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError(format!("cannot read the listening address: {e}")))?;
    let m = &state.model;
    eprintln!(
        "emcoder serve: listening on http://{addr} (model {}, precision {}, isa {}, {} threads)",
        m.files().dir.display(),
        m.precision().name(),
        m.isa().name(),
        m.threads()
    );
    tracing::info!(%addr, "listening");

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        st.draining.store(true, Ordering::Relaxed);
        tracing::info!("shutdown: no new connections; finishing accepted requests");
        let _ = signalled_tx.send(());
    });
    let mut server = tokio::spawn(async move { server.await });
    let served = tokio::select! {
        r = &mut server => Some(r),
        _ = signalled_rx => None,
    };
    let served = match served {
        Some(r) => r,
        None => match tokio::time::timeout(grace, &mut server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    queued = state.batcher.queued(),
                    "shutdown: the grace period is over; answering what was not started with 503"
                );
                state.batcher.abandon();
                // Answers to the abandoned requests go out; a client still sending its
                // body gets the connection closed.
                match tokio::time::timeout(Duration::from_secs(2), &mut server).await {
                    Ok(r) => r,
                    Err(_) => {
                        server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        },
    };
    state.batcher.close();
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || st.batcher.join()).await;
    let answered: u64 = routes::answered(&state.metrics);
    tracing::info!(answered, "shutdown complete");
    eprintln!("emcoder serve: stopped after answering {answered} requests");
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServeError(format!("the server failed: {e}"))),
        Err(e) => Err(ServeError(format!("the server task failed: {e}"))),
    }
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

fn init_logs(json: bool) {
    let b = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    let _ = if json {
        b.json().flatten_event(true).try_init()
    } else {
        b.try_init()
    };
}
