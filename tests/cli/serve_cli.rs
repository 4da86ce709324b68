//! `emcoder serve` as a user runs it: the shipped model behind HTTP answers POST /v1/predict
//! with exactly the bytes `emcoder predict --json` prints, and SIGTERM drains (every request
//! the server took gets a whole answer) and exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TEXTS: [&str; 3] = [
    "I am so happy you are here!",
    "Ugh, this is the worst.",
    "ok",
];

/// Starts `emcoder serve --port 0 ARGS`; returns the child, its address and the rest of its
/// stderr (read on a thread, so the pipe never fills).
fn serve(args: &[&str]) -> (Child, SocketAddr, std::thread::JoinHandle<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_emcoder"))
        .args(["serve", "--port", "0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "serve exited before listening"
        );
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    (child, addr, rest)
}

/// POST with `Connection: close`; the status and body, or None when the server closed the
/// connection without answering (it never took the request).
fn post(addr: SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    if c.read_to_end(&mut raw).is_err() || raw.is_empty() {
        return None;
    }
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content length");
    assert_eq!(body.len(), len, "a whole body");
    Some((status, body.to_string()))
}

fn terminate(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn v1_predict_gives_the_bytes_of_predict_json_and_sigterm_exits_0() {
    let (mut child, addr, stderr) = serve(&[]);
    for (opts, flags) in [
        (
            r#""samples": 10, "seed": 7"#,
            vec!["--samples", "10", "--seed", "7"],
        ),
        (r#""deterministic": true"#, vec!["--deterministic"]),
        (r#""decide": 0.05"#, vec!["--decide", "0.05"]),
    ] {
        let body = format!(
            r#"{{"inputs": {}, {opts}}}"#,
            serde_json::to_string(&TEXTS).unwrap()
        );
        let (status, got) = post(addr, "/v1/predict", &body).expect("an answer");
        assert_eq!(status, 200, "{got}");
        let cli = Command::new(env!("CARGO_BIN_EXE_emcoder"))
            .args(["predict", "--json"])
            .args(&flags)
            .args(TEXTS)
            .output()
            .unwrap();
        assert!(cli.status.success());
        assert_eq!(
            got,
            String::from_utf8(cli.stdout).unwrap().trim_end(),
            "{opts}"
        );
    }
    terminate(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(stderr
        .join()
        .unwrap()
        .contains("stopped after answering 3 requests"));
}

#[test]
fn sigterm_under_load_finishes_every_request_it_took() {
    let (mut child, addr, stderr) = serve(&["--max-batch-wait-ms", "20"]);
    let body = format!(
        r#"{{"inputs": {}, "samples": 100}}"#,
        serde_json::to_string(&TEXTS).unwrap()
    );
    let answers: Vec<Option<(u16, String)>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..40u64)
            .map(|i| {
                let body = &body;
                sc.spawn(move || {
                    std::thread::sleep(Duration::from_millis(15 * i));
                    post(addr, "/v1/predict", body)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(250));
        terminate(&child);
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let log = stderr.join().unwrap();
    let answered = answers.iter().flatten().count();
    let ok = answers.iter().flatten().filter(|(s, _)| *s == 200).count();
    eprintln!(
        "{} requests: {ok} answered 200, {} answered 503, {} not taken",
        answers.len(),
        answered - ok,
        answers.len() - answered
    );
    assert!(
        ok >= 1,
        "no request finished before the signal: {answers:?}"
    );
    for (status, body) in answers.iter().flatten() {
        let v: serde_json::Value = serde_json::from_str(body).expect("whole JSON");
        match status {
            200 => assert_eq!(v["results"].as_array().unwrap().len(), 3),
            503 => assert!(v["error"].as_str().unwrap().contains("shutting down")),
            s => panic!("status {s}: {body}"),
        }
    }
    // Every request the server took was answered: its count and the clients' agree.
    assert!(
        log.contains(&format!("stopped after answering {answered} requests")),
        "clients got {answered} answers ({ok} with 200); the server's log:\n{log}"
    );
}
