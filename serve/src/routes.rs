//! The routes: what each takes and answers, the request limits, and the per-request line of
//! log and metrics.

use crate::api::{self, ApiError, TeiRequest, V1Request};
use crate::batcher::{Arrival, Failure, Job, Refused, Sampling, Ticket};
use crate::metrics::Metrics;
use crate::AppState;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use emcoder::{Error, TextPrediction};
use http_body_util::LengthLimitError;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The demo page: one file, no external resources (it works offline).
pub const PAGE: &str = include_str!("../assets/index.html");
/// The OpenAPI 3 document of every route.
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

/// Every route as (method, path); the OpenAPI document lists each (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("POST", "/"),
    ("POST", "/predict"),
    ("POST", "/v1/predict"),
    ("GET", "/health"),
    ("GET", "/info"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

type Shared = Arc<AppState>;

/// The service's routes over `state`.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(page).post(tei_root))
        .route("/predict", post(tei_predict))
        .route("/v1/predict", post(v1_predict))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// What a prediction route served, for the log line.
#[derive(Clone, Copy)]
struct Served {
    texts: usize,
    samples: u64,
}

static REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// Metrics and one structured log line per request; JSON for axum's empty 405.
async fn observe(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "validation",
            format!("{method} is not allowed on {route}: see the Allow header, or /openapi.json"),
        )
        .into_response();
        // axum adds the Allow header to the response it sends.
        if let Some(a) = resp.headers().get(header::ALLOW) {
            r.headers_mut().insert(header::ALLOW, a.clone());
        }
        resp = r;
    }
    let status = resp.status();
    let secs = start.elapsed().as_secs_f64();
    let m = &st.metrics;
    m.requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    m.latency.with_label_values(&[route.as_str()]).observe(secs);
    let served = resp.extensions().get::<Served>().copied();
    tracing::info!(
        id,
        method = %method,
        route = %route,
        status = status.as_u16(),
        ms = format!("{:.2}", secs * 1e3),
        texts = served.map(|s| s.texts),
        samples = served.map(|s| s.samples),
        "request"
    );
    resp
}

/// Requests answered so far (every route and status).
pub fn answered(m: &Metrics) -> u64 {
    use prometheus::core::Collector;
    m.requests
        .collect()
        .iter()
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|x| x.get_counter().get_value() as u64)
        })
        .sum()
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn health(State(st): State<Shared>) -> Response {
    if st.draining.load(Ordering::Relaxed) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down: send new requests to another instance",
        )
        .into_response();
    }
    Json(json!({"status": "ok"})).into_response()
}

async fn metrics(State(st): State<Shared>) -> Response {
    st.metrics
        .scratch_bytes
        .set(st.model.scratch_bytes() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {method} {path}: see GET /openapi.json for the routes"),
    )
    .into_response()
}

async fn info(State(st): State<Shared>) -> Response {
    let m = &st.model;
    let c = &st.cfg;
    let labels = m.labels();
    let id2label: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), json!(l)))
        .collect();
    let label2id: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), json!(i)))
        .collect();
    Json(json!({
        "model_id": c.model_id,
        "model_dir": m.files().dir.display().to_string(),
        "model_type": {"classifier": {"id2label": id2label, "label2id": label2id}},
        "labels": labels,
        "precision": m.precision().name(),
        "isa": m.isa().name(),
        "cpu": emcoder::caps().model,
        "device": m.device().to_string(),
        "threads": m.threads(),
        "version": env!("CARGO_PKG_VERSION"),
        "max_input_length": m.max_tokens(),
        "max_client_batch_size": c.max_texts,
        "max_batch_tokens": c.batch.max_cost,
        "max_concurrent_requests": c.batch.max_queue,
        "defaults": {"samples": c.samples, "seed": c.seed},
        "limits": {
            "max_body_bytes": c.max_body_bytes,
            "max_texts": c.max_texts,
            "max_request_tokens": c.max_request_tokens,
            "max_samples": c.max_samples,
            "max_queue": c.batch.max_queue,
            "request_timeout_ms": c.request_timeout.as_millis() as u64,
            "body_timeout_ms": c.body_timeout.as_millis() as u64,
        },
        "batching": {
            "enabled": c.batch.enabled,
            "max_cost_tokens_x_samples": c.batch.max_cost,
            "max_texts": c.batch.max_texts,
            "max_wait_ms": c.batch.max_wait.as_secs_f64() * 1e3,
        },
    }))
    .into_response()
}

/// Reads the body within the size limit and the body timeout.
async fn read_body(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let limit = st.cfg.max_body_bytes;
    let too_large = |n: String| {
        ApiError::too_large(format!(
            "the request body is {n} bytes, over the limit of {limit}: send fewer or shorter texts (or raise --max-body-bytes)"
        ))
    };
    if let Some(n) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if n > limit as u64 {
            return Err(too_large(n.to_string()));
        }
    }
    match tokio::time::timeout(st.cfg.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request body did not arrive within {} ms: send it at once",
                st.cfg.body_timeout.as_millis()
            ),
        )),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner.downcast_ref::<LengthLimitError>().is_some() {
                Err(too_large(format!("more than {limit}")))
            } else {
                Err(ApiError::bad_request(format!(
                    "cannot read the request body: {inner}"
                )))
            }
        }
        Ok(Ok(b)) => Ok(b.to_vec()),
    }
}

/// Cancels a ticket when the handler's future is dropped (the client went away) before it
/// had its answer.
struct CancelOnDrop(Option<Arc<Ticket>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.cancel();
        }
    }
}

/// Validates, tokenizes, queues and waits for one request's predictions.
async fn predict(
    st: &Shared,
    texts: &[String],
    truncate: bool,
    sampling: Sampling,
    arrival: Arrival,
    arrived: Instant,
    deadline: Instant,
) -> Result<Vec<TextPrediction>, ApiError> {
    let c = &st.cfg;
    if texts.is_empty() {
        return Err(ApiError::bad_request(
            "`inputs` is an empty list: send at least one text",
        ));
    }
    if texts.len() > c.max_texts {
        return Err(ApiError::too_large(format!(
            "{} texts in one request, over the limit of {}: split them over several requests (or raise --max-texts)",
            texts.len(),
            c.max_texts
        )));
    }
    if !sampling.deterministic && (sampling.samples == 0 || sampling.samples > c.max_samples) {
        return Err(ApiError::bad_request(format!(
            "`samples` is {}: ask between 1 and {} (the server's --max-samples)",
            sampling.samples, c.max_samples
        )));
    }
    let model = st.model.clone();
    let owned = texts.to_vec();
    let ids = tokio::task::spawn_blocking(move || {
        owned
            .iter()
            .enumerate()
            .map(|(i, t)| {
                model.tokenize(t, truncate).map_err(|e| match e {
                    Error::Input(m) if m.contains("more than the limit") => ApiError::too_large(
                        format!("text {i}: {m} (send \"truncate\": true to cut it)"),
                    ),
                    e => ApiError::bad_request(format!("text {i}: {e}")),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backend",
            format!("tokenizing failed: {e}"),
        )
    })??;
    let tokens: usize = ids.iter().map(Vec::len).sum();
    if tokens > c.max_request_tokens {
        return Err(ApiError::too_large(format!(
            "the texts have {tokens} tokens together, over the limit of {} per request: split them over several requests (or raise --max-request-tokens)",
            c.max_request_tokens
        )));
    }
    let ticket = Ticket::new(deadline);
    let mut guard = CancelOnDrop(Some(ticket.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let submitted = st
        .batcher
        .submit(Job::new(ids, sampling, ticket.clone(), tx), arrival);
    if let Err((why, _)) = submitted {
        guard.0 = None;
        return Err(match why {
            Refused::QueueFull => overloaded(st),
            Refused::ShuttingDown => shutting_down(),
        });
    }
    let timeout = ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!(
            "the request ran past its deadline of {} ms: send fewer or shorter texts or fewer samples, or raise the deadline (--request-timeout-ms, or `timeout_ms` of /v1/predict)",
            deadline.saturating_duration_since(arrived).as_millis()
        ),
    );
    let answer = tokio::time::timeout_at(deadline.into(), rx).await;
    guard.0 = None;
    match answer {
        Err(_) => {
            ticket.cancel();
            Err(timeout)
        }
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the engine stopped before answering: retry on another instance",
        )),
        Ok(Ok(Ok(p))) => Ok(p),
        Ok(Ok(Err(Failure::Timeout))) => Err(timeout),
        Ok(Ok(Err(Failure::ShuttingDown))) => Err(shutting_down()),
        Ok(Ok(Err(Failure::Engine { message, input }))) => Err(if input {
            ApiError::bad_request(message)
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "backend", message)
        }),
    }
}

/// 429: the queue, or the requests being received, are at `--max-queue`.
fn overloaded(st: &AppState) -> ApiError {
    ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!(
                "the queue is full ({} requests waiting or being received): retry after a second, or send several texts per request",
                st.cfg.batch.max_queue
            ),
        )
    }
}

fn shutting_down() -> ApiError {
    ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down and did not start this request: send it again (to another instance)",
        )
    }
}

fn with_served(mut r: Response, preds: &[TextPrediction]) -> Response {
    r.extensions_mut().insert(Served {
        texts: preds.len(),
        samples: preds.iter().map(|p| u64::from(p.samples)).sum(),
    });
    r
}

/// Announces the request, reads its body and parses it as `T`.
async fn receive<T: serde::de::DeserializeOwned>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Arrival, T), ApiError> {
    let arrival = st.batcher.arriving().ok_or_else(|| overloaded(st))?;
    let bytes = read_body(st, headers, body).await?;
    Ok((arrival, api::parse(&bytes)?))
}

/// `POST /v1/predict`: the JSON of `emcoder predict --json`.
async fn v1_predict(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let (arrival, req): (Arrival, V1Request) = receive(&st, &headers, body).await?;
    let (texts, _) = api::texts(&req.inputs)?;
    if let Some(t) = req.tolerance {
        if !(t.is_finite() && t > 0.0) {
            return Err(ApiError::bad_request(format!(
                "`tolerance` is {t}: use a positive number, e.g. 0.01"
            )));
        }
    }
    if let Some(a) = req.decide {
        if !(a > 0.0 && a < 1.0) {
            return Err(ApiError::bad_request(format!(
                "`decide` is {a}: use an error rate between 0 and 1, e.g. 0.01"
            )));
        }
    }
    if req.tolerance.is_some() && req.decide.is_some() {
        return Err(ApiError::bad_request(
            "`tolerance` and `decide` are exclusive: send one of them",
        ));
    }
    let mut timeout = st.cfg.request_timeout;
    if let Some(ms) = req.timeout_ms {
        if ms == 0 {
            return Err(ApiError::bad_request(
                "`timeout_ms` is 0: give a deadline in milliseconds, or leave it out",
            ));
        }
        timeout = timeout.min(Duration::from_millis(ms));
    }
    let sampling = Sampling {
        samples: req.samples.unwrap_or(st.cfg.samples),
        seed: req.seed.unwrap_or(st.cfg.seed),
        deterministic: req.deterministic,
        tolerance: req.tolerance,
        decide: req.decide,
    };
    let adaptive = (req.tolerance.is_some() || req.decide.is_some()) && !req.deterministic;
    let preds = predict(
        &st,
        &texts,
        req.truncate,
        sampling,
        arrival,
        arrived,
        arrived + timeout,
    )
    .await?;
    let body = emcoder::report::predictions_json(st.model.labels(), &texts, &preds, adaptive);
    Ok(with_served(Json(body).into_response(), &preds))
}

/// `POST /predict`: TEI's answer shape (a list for one text, a list of lists for several).
async fn tei_predict(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    tei(&st, &headers, body, false).await
}

/// `POST /`: the Inference API's shape (always a list of lists), which
/// `huggingface_hub.InferenceClient(base_url=...)` sends and expects.
async fn tei_root(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    tei(&st, &headers, body, true).await
}

async fn tei(
    st: &Shared,
    headers: &HeaderMap,
    body: Body,
    always_nested: bool,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let (arrival, req): (Arrival, TeiRequest) = receive(st, headers, body).await?;
    let (texts, single) = api::texts(&req.inputs)?;
    if let Some(d) = &req.truncation_direction {
        if !d.eq_ignore_ascii_case("right") {
            return Err(ApiError::bad_request(format!(
                "`truncation_direction` is `{d}`: only `Right` is supported (the end of a long text is cut)"
            )));
        }
    }
    let params = req.parameters.unwrap_or_default();
    let raw = match params.function_to_apply.as_deref() {
        None | Some("sigmoid") => req.raw_scores,
        Some("none") => true,
        Some(f) => {
            return Err(ApiError::bad_request(format!(
                "`parameters.function_to_apply` is `{f}`: EmCoder is multi-label (a sigmoid per label); use `sigmoid` (MC mean probabilities) or `none` (raw scores)"
            )))
        }
    };
    // Scores: the MC mean probability (N and seed of the server); raw scores: the logits of
    // the deterministic pass (dropout off), the model's raw output.
    let sampling = Sampling {
        samples: st.cfg.samples,
        seed: st.cfg.seed,
        deterministic: raw,
        tolerance: None,
        decide: None,
    };
    let truncate = req.truncate.unwrap_or(false);
    let preds = predict(
        st,
        &texts,
        truncate,
        sampling,
        arrival,
        arrived,
        arrived + st.cfg.request_timeout,
    )
    .await?;
    let labels = st.model.labels();
    let per_text: Vec<Value> = preds
        .iter()
        .map(|p| {
            let mut scored: Vec<(&str, f32)> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let s = match (&p.logits, raw) {
                        (Some(z), true) => z[i],
                        _ => p.labels[i].mean,
                    };
                    (l.as_str(), s)
                })
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1));
            if let Some(k) = params.top_k {
                scored.truncate(k);
            }
            Value::Array(
                scored
                    .into_iter()
                    .map(|(l, s)| json!({"label": l, "score": s}))
                    .collect(),
            )
        })
        .collect();
    let body = if single && !always_nested {
        per_text.into_iter().next().unwrap_or(Value::Array(vec![]))
    } else {
        Value::Array(per_text)
    };
    Ok(with_served(Json(body).into_response(), &preds))
}
