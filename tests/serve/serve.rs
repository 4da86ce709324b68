//! The service in-process on a free port, driven over real TCP with a minimal HTTP/1.1 client
//! (so that bodies can be malformed, trickled or abandoned): the API's shapes against the
//! runtime's own answers, batching across requests, every limit, deadlines, disconnects and
//! the drain on shutdown. The CLI's `serve` (same JSON as `predict --json`, SIGTERM) is tested
//! in tests/cli/serve_cli.rs; the page in a real browser and the TEI client by
//! scripts/test-serve.sh.

use emcoder::{LoadOptions, Model, PredictOptions};
use emcoder_serve::{routes, ServeConfig};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn model() -> Arc<Model> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-vocab-bf16");
    let opts = LoadOptions {
        n_threads: 2,
        max_tokens: 256,
        ..Default::default()
    };
    Arc::new(Model::load(&dir, &opts).expect("the tiny fixture loads"))
}

/// A running service and the means to stop it.
struct Server {
    addr: SocketAddr,
    model: Arc<Model>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Server {
    fn start(cfg: ServeConfig) -> Server {
        let model = model();
        let m = model.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?;
                addr_tx.send(l.local_addr().unwrap()).unwrap();
                emcoder_serve::serve(m, cfg, l, async move {
                    let _ = rx.await;
                })
                .await
                .map_err(|e| e.to_string())
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server binds");
        Server {
            addr,
            model,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Signals the shutdown and waits for `serve` to return.
    fn shutdown(&mut self) -> Result<(), String> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.thread
            .take()
            .map(|t| t.join().expect("the server thread does not panic"))
            .unwrap_or(Ok(()))
    }

    fn post(&self, path: &str, body: &Value) -> Resp {
        request(self.addr, "POST", path, &[], body.to_string().as_bytes())
    }
    fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], b"")
    }
    fn metric(&self, name: &str) -> f64 {
        let text = String::from_utf8(self.get("/metrics").body).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v.trim().parse::<f64>().unwrap())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The error message of a JSON error, checked to have the error shape.
    fn error(&self) -> String {
        let v = self.json();
        assert!(v["error_type"].is_string(), "no error_type in {v}");
        v["error"].as_str().expect("an error message").to_string()
    }
}

/// Sends raw bytes as one request (`Connection: close`) and reads the whole answer.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

fn read_response(s: &mut TcpStream) -> Resp {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head: {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    } else if let Some((_, n)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        assert_eq!(body.len(), n.parse::<usize>().unwrap(), "a whole body");
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

fn cfg() -> ServeConfig {
    ServeConfig {
        model_id: "tiny-vocab-bf16".into(),
        ..Default::default()
    }
}

/// The runtime's own answer, the bytes `emcoder predict --json` prints (compared as text:
/// parsing JSON back into f64 may move the last bit).
fn expected_v1(model: &Model, texts: &[&str], opts: &PredictOptions, adaptive: bool) -> String {
    let p = model.predict(texts, opts).unwrap();
    emcoder::report::predictions_json(model.labels(), texts, &p, adaptive).to_string()
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }
}

#[test]
fn info_health_openapi_metrics_and_the_page() {
    let s = Server::start(cfg());
    let h = s.get("/health");
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
    let info = s.get("/info").json();
    assert_eq!(info["labels"].as_array().unwrap().len(), 28);
    assert_eq!(info["model_type"]["classifier"]["id2label"]["17"], "joy");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["limits"]["max_texts"], 64);
    assert_eq!(info["precision"], "f32");
    // The OpenAPI document lists every route the router serves.
    let api = s.get("/openapi.json").json();
    for (method, path) in routes::ROUTES {
        assert!(
            api["paths"][path][method.to_lowercase()].is_object(),
            "openapi.json lacks {method} {path}"
        );
    }
    assert_eq!(api["paths"].as_object().unwrap().len(), 7);
    // The page: HTML with the form, and nothing fetched from elsewhere.
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("<textarea") && html.contains("/v1/predict"));
    for external in ["src=\"http", "href=\"http", "url(http", "@import", "//cdn"] {
        assert!(!html.contains(external), "the page loads {external}...");
    }
    s.post("/v1/predict", &json!({"inputs": "hello"}));
    let m = String::from_utf8(s.get("/metrics").body).unwrap();
    for name in [
        "emcoder_requests_total{route=\"/v1/predict\",status=\"200\"} 1",
        "emcoder_request_duration_seconds_bucket",
        "emcoder_queue_depth 0",
        "emcoder_batch_texts_bucket",
        "emcoder_texts_total 1",
        "emcoder_samples_total 50",
        "emcoder_queue_wait_seconds",
    ] {
        assert!(m.contains(name), "/metrics lacks {name}:\n{m}");
    }
    assert_eq!(
        s.metric("emcoder_memory_budget_bytes"),
        s.model.memory_budget() as f64
    );
    let scratch = s.metric("emcoder_scratch_bytes");
    assert!(
        scratch > 0.0 && scratch <= s.model.memory_budget() as f64,
        "scratch {scratch}, model {}",
        s.model.scratch_bytes()
    );
}

#[test]
fn v1_predict_is_the_json_of_predict_for_every_option() {
    let s = Server::start(cfg());
    let texts = ["I am so happy you are here!", "This is the worst.", ""];
    let base = PredictOptions::default();
    let cases: Vec<(Value, PredictOptions, bool)> = vec![
        (json!({"inputs": texts}), base.clone(), false),
        (
            json!({"inputs": texts, "samples": 7, "seed": 9}),
            PredictOptions {
                samples: 7,
                seed: 9,
                ..base.clone()
            },
            false,
        ),
        (
            json!({"inputs": texts, "deterministic": true}),
            PredictOptions {
                deterministic: true,
                ..base.clone()
            },
            false,
        ),
        (
            json!({"inputs": texts, "tolerance": 0.02, "samples": 60}),
            PredictOptions {
                tolerance: Some(0.02),
                samples: 60,
                ..base.clone()
            },
            true,
        ),
        (
            json!({"inputs": texts, "decide": 0.05, "samples": 40, "seed": 3}),
            PredictOptions {
                decision_error: Some(0.05),
                samples: 40,
                seed: 3,
                ..base.clone()
            },
            true,
        ),
    ];
    for (req, opts, adaptive) in cases {
        let r = s.post("/v1/predict", &req);
        assert_eq!(r.status, 200, "{req}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.text(),
            expected_v1(&s.model, &texts, &opts, adaptive),
            "{req}"
        );
    }
    // One text as a plain string.
    let r = s.post(
        "/v1/predict",
        &json!({"inputs": "hello there", "samples": 5}),
    );
    let opts = PredictOptions { samples: 5, ..base };
    assert_eq!(
        r.text(),
        expected_v1(&s.model, &["hello there"], &opts, false)
    );
}

#[test]
fn tei_predict_scores_are_mc_means_highest_first() {
    let s = Server::start(cfg());
    let model = &s.model;
    let text = "I am so happy you are here!";
    let p = &model.predict(&[text], &PredictOptions::default()).unwrap()[0];
    let check = |list: &Value| {
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 28);
        for w in list.windows(2) {
            assert!(
                w[0]["score"].as_f64() >= w[1]["score"].as_f64(),
                "highest first"
            );
        }
        for e in list {
            let i = model
                .labels()
                .iter()
                .position(|l| l == e["label"].as_str().unwrap())
                .unwrap();
            assert_eq!(e["score"].as_f64().unwrap() as f32, p.labels[i].mean);
        }
    };
    // A string: one list; a list of strings: a list of lists.
    check(&s.post("/predict", &json!({"inputs": text})).json());
    let many = s.post("/predict", &json!({"inputs": [text, text]})).json();
    assert_eq!(many.as_array().unwrap().len(), 2);
    check(&many[0]);
    check(&many[1]);
    // POST / (the Inference API, what InferenceClient sends): always a list of lists, top_k.
    let root = s
        .post("/", &json!({"inputs": text, "parameters": {}}))
        .json();
    check(&root[0]);
    let top = s
        .post("/", &json!({"inputs": text, "parameters": {"top_k": 3}}))
        .json();
    assert_eq!(top[0].as_array().unwrap().len(), 3);
    assert_eq!(top[0][0], root[0][0]);
    // Raw scores: the deterministic pass's logits.
    let det = &model
        .predict(
            &[text],
            &PredictOptions {
                deterministic: true,
                ..Default::default()
            },
        )
        .unwrap()[0];
    let raw = s
        .post("/predict", &json!({"inputs": text, "raw_scores": true}))
        .json();
    for e in raw.as_array().unwrap() {
        let i = model
            .labels()
            .iter()
            .position(|l| l == e["label"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            e["score"].as_f64().unwrap() as f32,
            det.logits.as_ref().unwrap()[i]
        );
    }
    let none = s.post(
        "/",
        &json!({"inputs": text, "parameters": {"function_to_apply": "none"}}),
    );
    assert_eq!(none.json()[0], raw);
    let soft = s.post(
        "/",
        &json!({"inputs": text, "parameters": {"function_to_apply": "softmax"}}),
    );
    assert_eq!(soft.status, 400);
    assert!(soft.error().contains("multi-label"));
    let left = s.post(
        "/predict",
        &json!({"inputs": text, "truncation_direction": "Left"}),
    );
    assert_eq!(left.status, 400);
}

#[test]
fn concurrent_requests_share_engine_calls_and_each_gets_its_own_answer() {
    // The requests are all on their way (every body but its last byte sent) when the first
    // arrives: the engine waits for the others (up to max_wait) and merges them.
    let mut c = cfg();
    c.batch.max_wait = Duration::from_millis(500);
    let s = Server::start(c);
    let reqs: Vec<Value> = (0..16)
        .map(|i| {
            let t = format!("text number {i}, {}", "so happy ".repeat(i));
            // Two sampling groups (seeds): they must not be mixed.
            json!({"inputs": [t], "samples": 10, "seed": i % 2})
        })
        .collect();
    let mut conns: Vec<(TcpStream, Vec<u8>)> = reqs
        .iter()
        .map(|r| {
            let body = r.to_string().into_bytes();
            let mut c = TcpStream::connect(s.addr).unwrap();
            write!(
                c,
                "POST /v1/predict HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            c.write_all(&body[..body.len() - 1]).unwrap();
            (c, body)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for (c, body) in &mut conns {
        c.write_all(&body[body.len() - 1..]).unwrap();
    }
    let answers: Vec<(Value, String)> = reqs
        .iter()
        .zip(conns)
        .map(|(r, (mut c, _))| (r.clone(), read_response(&mut c).text()))
        .collect();
    for (req, got) in &answers {
        let t = req["inputs"][0].as_str().unwrap();
        let opts = PredictOptions {
            samples: 10,
            seed: req["seed"].as_u64().unwrap(),
            ..Default::default()
        };
        assert_eq!(got, &expected_v1(&s.model, &[t], &opts, false), "{t}");
    }
    let calls = s.metric("emcoder_batch_requests_count");
    let merged = s.metric("emcoder_batch_requests_sum");
    assert_eq!(merged, 16.0);
    assert!(
        calls <= 4.0,
        "16 requests in 2 seed groups made {calls} engine calls"
    );
}

#[test]
fn bad_requests_get_json_errors_that_say_what_to_fix_and_the_server_keeps_serving() {
    let mut c = cfg();
    c.max_texts = 4;
    c.max_request_tokens = 300;
    c.max_samples = 100;
    c.max_body_bytes = 4096;
    let s = Server::start(c);
    let raw = |body: &[u8]| request(s.addr, "POST", "/v1/predict", &[], body);
    let cases: Vec<(Resp, u16, &str)> = vec![
        (raw(b"{\"inputs\": \"x\""), 400, "line 1 column"),
        (raw(b"not json"), 400, "line 1 column"),
        (raw(b""), 400, "body is empty"),
        (
            raw(b"{\"inputs\": \"caf\xc3\x28\"}"),
            400,
            "not valid UTF-8 at byte 15",
        ),
        (
            raw(br#"{"inputs": "x", "samples": "ten"}"#),
            400,
            "at `samples`",
        ),
        (
            raw(br#"{"inputs": "x", "samples": -1}"#),
            400,
            "at `samples`",
        ),
        (
            raw(br#"{"inputs": "x", "sample": 10}"#),
            400,
            "unknown field `sample`",
        ),
        (raw(br#"{"text": "x"}"#), 400, "unknown field `text`"),
        (raw(br#"{"samples": 3}"#), 400, "missing field `inputs`"),
        (raw(br#"{"inputs": 5}"#), 400, "`inputs` is a number"),
        (
            raw(br#"{"inputs": ["a", null]}"#),
            400,
            "`inputs[1]` is null",
        ),
        (
            raw(br#"{"inputs": [["a", "b"]]}"#),
            400,
            "text pairs are not supported",
        ),
        (raw(br#"{"inputs": []}"#), 400, "empty list"),
        (
            raw(br#"{"inputs": "x", "samples": 0}"#),
            400,
            "between 1 and 100",
        ),
        (
            raw(br#"{"inputs": "x", "samples": 101}"#),
            400,
            "between 1 and 100",
        ),
        (
            raw(br#"{"inputs": "x", "tolerance": -1}"#),
            400,
            "`tolerance`",
        ),
        (raw(br#"{"inputs": "x", "decide": 1.5}"#), 400, "`decide`"),
        (
            raw(br#"{"inputs": "x", "decide": 0.1, "tolerance": 0.1}"#),
            400,
            "exclusive",
        ),
        (
            raw(br#"{"inputs": "x", "timeout_ms": 0}"#),
            400,
            "timeout_ms",
        ),
        (
            raw(br#"{"inputs": ["a", "b", "c", "d", "e"]}"#),
            413,
            "over the limit of 4",
        ),
        (raw(&[b' '; 5000]), 413, "over the limit of 4096"),
        (
            raw(json!({"inputs": ["word ".repeat(300)]})
                .to_string()
                .as_bytes()),
            413,
            "truncate",
        ),
        (
            raw(
                json!({"inputs": ["word ".repeat(100), "word ".repeat(100), "word ".repeat(100)]})
                    .to_string()
                    .as_bytes(),
            ),
            413,
            "tokens together",
        ),
        (
            request(s.addr, "DELETE", "/v1/predict", &[], b""),
            405,
            "not allowed",
        ),
        (
            request(s.addr, "GET", "/nowhere", &[], b""),
            404,
            "/openapi.json",
        ),
    ];
    for (r, status, needle) in cases {
        let msg = r.error();
        assert_eq!(r.status, status, "{msg}");
        assert!(msg.contains(needle), "`{msg}` lacks `{needle}`");
    }
    // A body over the limit without a Content-Length (chunked) is refused too.
    let mut chunked = b"1000\r\n".to_vec();
    chunked.extend(std::iter::repeat_n(b' ', 4096));
    chunked.extend(b"\r\n1000\r\n");
    chunked.extend(std::iter::repeat_n(b' ', 4096));
    chunked.extend(b"\r\n0\r\n\r\n");
    let r = request(
        s.addr,
        "POST",
        "/v1/predict",
        &[("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_eq!(r.status, 413, "{}", r.text());
    // A text over the token limit is cut with truncate, as `predict --truncate` does.
    let r = s.post(
        "/v1/predict",
        &json!({"inputs": "word ".repeat(300), "truncate": true, "samples": 3}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"][0]["n_tokens"], 256);
    // Random bytes: refused, never a crash.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..300 {
        let n = (i * 7) % 200;
        let body: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"{}[]\":,0123456789.-eEtrufalsn x\\\xff\xc3";
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect();
        let path = ["/v1/predict", "/predict", "/"][i % 3];
        let r = request(s.addr, "POST", path, &[], &body);
        assert!(
            matches!(r.status, 200 | 400 | 413),
            "{path} {body:?}: {}",
            r.status
        );
        if r.status != 200 {
            r.error();
        }
    }
    assert_eq!(s.get("/health").status, 200);
    assert_eq!(
        s.post(
            "/v1/predict",
            &json!({"inputs": "still here", "samples": 2})
        )
        .status,
        200
    );
}

/// A request big enough to keep the tiny model's engine busy for seconds.
fn heavy(timeout_ms: u64) -> Value {
    json!({"inputs": vec!["word ".repeat(250); 4], "samples": 20000, "timeout_ms": timeout_ms})
}

fn big_limits() -> ServeConfig {
    let mut c = cfg();
    c.max_samples = 1_000_000;
    c.max_request_tokens = 1 << 20;
    c
}

#[test]
fn a_deadline_answers_504_and_stops_the_engine_work() {
    let s = Server::start(big_limits());
    let t = Instant::now();
    let r = s.post("/v1/predict", &heavy(200));
    assert_eq!(r.status, 504, "{}", r.error());
    assert!(r.error().contains("deadline of 200 ms"));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "answered at the deadline: {:?}",
        t.elapsed()
    );
    // The engine gives its call up, and serves the next request at once.
    let t = Instant::now();
    while s.metric("emcoder_cancelled_calls_total") < 1.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the engine call was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = s.post("/v1/predict", &json!({"inputs": "quick", "samples": 2}));
    assert_eq!(r.status, 200);
    assert_eq!(
        s.metric("emcoder_texts_total"),
        1.0,
        "the timed-out texts were not predicted"
    );
}

#[test]
fn a_client_that_disconnects_cancels_its_work() {
    let s = Server::start(big_limits());
    let body = heavy(60_000).to_string();
    let mut c = TcpStream::connect(s.addr).unwrap();
    write!(
        c,
        "POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Its call is running, then the client goes away.
    let t = Instant::now();
    while s.metric("emcoder_queue_wait_seconds_count") < 1.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the request never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(c);
    let t = Instant::now();
    while s.metric("emcoder_cancelled_calls_total") < 1.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the engine kept working for a gone client"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        s.post("/v1/predict", &json!({"inputs": "next", "samples": 2}))
            .status,
        200
    );
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let mut c = big_limits();
    c.batch.max_queue = 1;
    let s = Server::start(c);
    std::thread::scope(|sc| {
        // Keeps the engine busy (then times out).
        let busy = sc.spawn(|| s.post("/v1/predict", &heavy(4000)));
        let t = Instant::now();
        while s.metric("emcoder_queue_wait_seconds_count") < 1.0 {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        }
        // One waits in the queue (another sampling, so it cannot join); the rest are refused.
        let waiting = sc.spawn(|| s.post("/v1/predict", &json!({"inputs": "a", "samples": 3})));
        let t = Instant::now();
        while s.metric("emcoder_queue_depth") < 1.0 {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = s.post("/v1/predict", &json!({"inputs": "b", "samples": 3}));
        assert_eq!(r.status, 429, "{}", r.error());
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.error().contains("queue is full"));
        assert_eq!(busy.join().unwrap().status, 504);
        assert_eq!(waiting.join().unwrap().status, 200);
    });
}

#[test]
fn a_slow_client_does_not_hold_up_others_and_gets_408() {
    let mut c = cfg();
    c.body_timeout = Duration::from_millis(1500);
    let s = Server::start(c);
    let body = json!({"inputs": "slow", "samples": 2}).to_string();
    let mut slow = TcpStream::connect(s.addr).unwrap();
    write!(
        slow,
        "POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let t = Instant::now();
    // While it trickles its body, others are answered.
    for (i, b) in body.bytes().take(6).enumerate() {
        slow.write_all(&[b]).unwrap();
        let r = s.post(
            "/v1/predict",
            &json!({"inputs": format!("fast {i}"), "samples": 2}),
        );
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t.elapsed() < Duration::from_millis(1500));
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = read_response(&mut slow);
    assert_eq!(r.status, 408, "{}", r.error());
}

#[test]
fn shutdown_finishes_accepted_requests_and_then_returns() {
    let mut c = cfg();
    c.batch.max_wait = Duration::from_millis(50);
    let mut s = Server::start(c);
    let addr = s.addr;
    let results: Vec<Option<u16>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..24)
            .map(|i| {
                sc.spawn(move || {
                    std::thread::sleep(Duration::from_millis(10 * i));
                    let body =
                        json!({"inputs": vec!["word ".repeat(100); 4], "samples": 200}).to_string();
                    let mut c = TcpStream::connect(addr).ok()?;
                    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    write!(
                        c,
                        "POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .ok()?;
                    let mut raw = Vec::new();
                    // A connection the server never accepted is reset: no answer, not lost.
                    if c.read_to_end(&mut raw).is_err() || raw.is_empty() {
                        return None;
                    }
                    let text = String::from_utf8_lossy(&raw);
                    let status: u16 = text[9..12].parse().unwrap();
                    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
                    // Every answer is whole JSON.
                    let v: Value = serde_json::from_str(body).expect("a whole JSON answer");
                    if status == 200 {
                        assert_eq!(v["results"].as_array().unwrap().len(), 4);
                    }
                    Some(status)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(120));
        s.shutdown().expect("serve returns Ok");
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| **r == Some(200)).count();
    assert!(ok >= 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, None | Some(200) | Some(503))),
        "{results:?}"
    );
}

#[test]
fn a_lone_request_does_not_wait_for_company() {
    let mut c = cfg();
    c.batch.max_wait = Duration::from_secs(5);
    let s = Server::start(c);
    for _ in 0..3 {
        let t = Instant::now();
        let r = s.post("/v1/predict", &json!({"inputs": "alone", "samples": 2}));
        assert_eq!(r.status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "waited {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn requests_being_received_are_bounded_too() {
    // Bodies being read count against --max-queue, so the memory of requests is bounded
    // whatever the number of connections.
    let mut c = cfg();
    c.batch.max_queue = 2;
    let s = Server::start(c);
    let body = json!({"inputs": "partial", "samples": 2})
        .to_string()
        .into_bytes();
    let mut partial: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            write!(
                c,
                "POST /v1/predict HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            c.write_all(&body[..5]).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = s.post("/v1/predict", &json!({"inputs": "third", "samples": 2}));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.error().contains("being received"));
    for c in &mut partial {
        c.write_all(&body[5..]).unwrap();
    }
    for mut c in partial {
        assert_eq!(read_response(&mut c).status, 200);
    }
    assert_eq!(
        s.post("/v1/predict", &json!({"inputs": "now", "samples": 2}))
            .status,
        200
    );
}
