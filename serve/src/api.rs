//! The request bodies the service takes and its JSON errors: parsing with the position or field
//! of what is wrong, and one error shape, `{"error": ..., "error_type": ...}` (TEI's), with
//! what to fix.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// A refusal or failure, answered as JSON.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// TEI's `error_type`: validation, overloaded, timeout, unavailable, backend, not_found.
    pub kind: &'static str,
    /// What went wrong and what to change.
    pub message: String,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400: the request is malformed or asks for something invalid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "validation", message)
    }
    /// 413: the request is larger than a limit.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "validation", message)
    }
    /// Any status.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "error_type": self.kind});
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// Parses a JSON body into `T`, saying where it is wrong: the byte position of invalid UTF-8,
/// the line and column of a syntax error, the field of a wrong type or unknown name.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty: send a JSON object, e.g. {\"inputs\": \"I am so happy\"}",
        ));
    }
    if let Err(e) = std::str::from_utf8(body) {
        return Err(ApiError::bad_request(format!(
            "the request body is not valid UTF-8 at byte {}: send JSON text in UTF-8",
            e.valid_up_to()
        )));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let v: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." || path == "?" {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body at `{path}`: {inner}"))
        }
    })?;
    Ok(v)
}

/// `inputs`: one text or a list of texts.
pub fn texts(inputs: &Value) -> Result<(Vec<String>, bool), ApiError> {
    match inputs {
        Value::String(s) => Ok((vec![s.clone()], true)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Array(_) => Err(ApiError::bad_request(format!(
                    "`inputs[{i}]` is a list: text pairs are not supported (EmCoder classifies single texts); send strings"
                ))),
                other => Err(ApiError::bad_request(format!(
                    "`inputs[{i}]` is {}, expected a string",
                    kind(other)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|t| (t, false)),
        other => Err(ApiError::bad_request(format!(
            "`inputs` is {}, expected a string or a list of strings",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `POST /predict` and `POST /` (TEI's sequence classification, and the Inference API's shape
/// that `huggingface_hub.InferenceClient` sends to `/`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct TeiRequest {
    /// A text or a list of texts.
    pub inputs: Value,
    /// Logits (of a deterministic pass) instead of MC mean probabilities.
    #[serde(default)]
    pub raw_scores: bool,
    /// Truncate texts over the token limit instead of refusing them.
    pub truncate: Option<bool>,
    /// Only `Right` (the end of a long text is cut).
    pub truncation_direction: Option<String>,
    /// The Inference API's parameters.
    pub parameters: Option<TeiParameters>,
}

/// `parameters` of the Inference API's text classification.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct TeiParameters {
    /// Only the `top_k` highest labels.
    pub top_k: Option<usize>,
    /// `sigmoid` (the default: MC mean probabilities) or `none` (raw scores).
    pub function_to_apply: Option<String>,
}

/// `POST /v1/predict`: the options of `emcoder predict`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct V1Request {
    /// A text or a list of texts.
    pub inputs: Value,
    /// MC samples (the most drawn with `tolerance` or `decide`).
    pub samples: Option<u32>,
    /// Seed of the dropout masks.
    pub seed: Option<u64>,
    /// One pass with dropout off; the results then carry the logits.
    #[serde(default)]
    pub deterministic: bool,
    /// Adaptive sampling: stop once every mean's standard error is below this.
    pub tolerance: Option<f32>,
    /// Stop once every label's decision is settled at this error rate.
    pub decide: Option<f32>,
    /// Truncate texts over the token limit instead of refusing them.
    #[serde(default)]
    pub truncate: bool,
    /// A deadline shorter than the server's, in milliseconds.
    pub timeout_ms: Option<u64>,
}
