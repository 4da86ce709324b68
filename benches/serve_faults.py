#!/usr/bin/env python3
"""Fault runs of `emcoder serve` on 127.0.0.1 (standard library only), each with its figure:

1. slow clients: 32 connections trickle valid bodies one byte per 100 ms while one normal
   client sends deterministic requests; its p50/p99 latency next to the same requests with no
   slow clients (the server stays responsive), and what the slow clients got;
2. 1,000 malformed requests (broken JSON, wrong types, unknown fields, invalid UTF-8, bodies
   over the limit, a Content-Length shorter than the body, random bytes, wrong methods and paths): every answer a
   JSON 4xx, and the server still healthy and predicting after them;
3. SIGTERM under load: 48 clients in a loop of MC N=50 requests, SIGTERM after 3 s: exit
   status, time to exit, answers by status, no truncated answer, and the server's count of
   answered requests equal to the clients'.

    python3 benches/serve_faults.py [path/to/emcoder]   # default target/release/emcoder
"""
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/emcoder")
TEXTS = [line.split("\t")[0] for line in open(os.path.join(ROOT, "data/goemotions/test.tsv"), encoding="utf-8")][:200]


def start(*flags):
    p = subprocess.Popen([BIN, "serve", "--port", "0", *flags], stderr=subprocess.PIPE, text=True)
    while True:
        line = p.stderr.readline()
        if not line:
            raise SystemExit("emcoder serve exited before listening")
        m = re.search(r"listening on http://([0-9.]+):(\d+)", line)
        if m:
            break
    log = []
    threading.Thread(target=lambda: log.extend(p.stderr), daemon=True).start()
    return p, (m.group(1), int(m.group(2))), log


def request(addr, method, path, body=b"", headers=None, timeout=60):
    """One request on its own connection; (status, body) or None when no answer came."""
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    hdrs = {"Content-Length": str(len(body)), "Content-Type": "application/json"}
    hdrs.update(headers or {})
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    try:
        s = socket.create_connection(addr, timeout=timeout)
        s.sendall(head.encode() + body)
        return read(s)
    except OSError:
        return None


def read(s):
    raw = b""
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        raw += chunk
    s.close()
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"content-length: *(\d+)", head, re.I)
    if m and len(body) != int(m.group(1)):
        return (status, b"TRUNCATED")
    return status, body


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def latencies(addr, n):
    out = []
    for i in range(n):
        body = json.dumps({"inputs": TEXTS[i % len(TEXTS)], "deterministic": True}).encode()
        t = time.perf_counter()
        r = request(addr, "POST", "/v1/predict", body)
        out.append((time.perf_counter() - t) * 1e3)
        assert r and r[0] == 200, r
    return out


def slow_clients():
    p, addr, _ = start()
    try:
        latencies(addr, 20)  # warm-up
        base = latencies(addr, 200)
        results = []

        def trickle(i):
            body = json.dumps({"inputs": TEXTS[i], "samples": 5}).encode()
            s = socket.create_connection(addr, timeout=60)
            s.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            try:
                for b in body:
                    s.sendall(bytes([b]))
                    time.sleep(0.1)
            except OSError:
                pass  # the server answered (408) and closed while the body trickled
            r = read(s)
            results.append(r if r else ("closed without an answer",))

        ts = [threading.Thread(target=trickle, args=(i,)) for i in range(32)]
        for t in ts:
            t.start()
        time.sleep(0.5)
        during = latencies(addr, 200)
        for t in ts:
            t.join()
        statuses = {}
        for r in results:
            k = r[0] if r else "none"
            statuses[k] = statuses.get(k, 0) + 1
        print(f"slow clients: a normal client's deterministic requests, p50/p99 {statistics.median(base):.2f}/{pct(base, .99):.2f} ms alone, "
              f"{statistics.median(during):.2f}/{pct(during, .99):.2f} ms while 32 clients trickle their bodies a byte per 100 ms "
              f"(the slow clients got: {statuses}; bodies of 50-200 bytes take 5-20 s, the body timeout is 10 s -> 408)")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)


def malformed():
    p, addr, _ = start("--max-body-bytes", "65536")
    rng = random.Random(7)
    cases = [
        lambda: ("POST", "/v1/predict", b'{"inputs": "x"', {}),
        lambda: ("POST", "/predict", b"{inputs: x}", {}),
        lambda: ("POST", "/v1/predict", b'{"inputs": 42}', {}),
        lambda: ("POST", "/v1/predict", b'{"inputs": "x", "samples": "many"}', {}),
        lambda: ("POST", "/v1/predict", b'{"inputs": "x", "sample": 5}', {}),
        lambda: ("POST", "/predict", b'{"inputs": "caf\xc3\x28"}', {}),
        lambda: ("POST", "/v1/predict", b'{"inputs": []}', {}),
        lambda: ("POST", "/v1/predict", b'{"inputs": [["a", "b"]]}', {}),
        lambda: ("POST", "/v1/predict", b'{"inputs": "x", "samples": 0}', {}),
        lambda: ("POST", "/v1/predict", b'{"inputs": "x", "decide": 2}', {}),
        lambda: ("POST", "/v1/predict", b" " * 70000, {}),
        lambda: ("POST", "/v1/predict", json.dumps({"inputs": ["a"] * 65}).encode(), {}),
        lambda: ("POST", "/v1/predict", json.dumps({"inputs": "word " * 5000}).encode(), {}),
        lambda: ("POST", "/", b"", {}),
        lambda: ("POST", "/v1/predict", b'{"inputs": "x"}', {"Content-Length": "9"}),
        lambda: ("POST", "/v1/predict", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))), {}),
        lambda: ("DELETE", "/v1/predict", b"", {}),
        lambda: ("GET", "/../../etc/passwd", b"", {}),
        lambda: ("PUT", "/predict", b'{"inputs": "x"}', {}),
    ]
    statuses = {}
    t = time.perf_counter()
    bad = []
    for i in range(1000):
        method, path, body, hdrs = cases[i % len(cases)]()
        r = request(addr, method, path, body, hdrs, timeout=30)
        k = r[0] if r else "none"
        statuses[k] = statuses.get(k, 0) + 1
        ok = r is not None and 400 <= r[0] < 500 and r[1] != b"TRUNCATED"
        if ok:
            try:
                ok = isinstance(json.loads(r[1])["error"], str)
            except Exception:
                ok = False
        if not ok:
            bad.append((method, path, body[:60], r and r[:2]))
    secs = time.perf_counter() - t
    health = request(addr, "GET", "/health")
    after = request(addr, "POST", "/v1/predict", b'{"inputs": "still here", "samples": 5}')
    p.send_signal(signal.SIGTERM)
    code = p.wait(30)
    print(f"1,000 malformed requests ({len(cases)} kinds, round robin) in {secs:.1f} s: statuses {dict(sorted(statuses.items(), key=str))}; "
          f"{1000 - len(bad)} JSON 4xx errors, {len(bad)} other; then /health {health and health[0]}, a prediction {after and after[0]}; exit {code}")
    assert not bad, bad[:5]
    assert health[0] == 200 and after[0] == 200 and code == 0


def sigterm_under_load():
    p, addr, log = start("--max-queue", "1024")
    answers = []
    stop = threading.Event()

    def client(i):
        k = i
        while not stop.is_set():
            body = json.dumps({"inputs": TEXTS[k % len(TEXTS)], "samples": 50}).encode()
            r = request(addr, "POST", "/v1/predict", body)
            answers.append(r)
            if r is None:
                return  # the listener is closed: no more requests taken
            k += 48

    ts = [threading.Thread(target=client, args=(i,)) for i in range(48)]
    for t in ts:
        t.start()
    time.sleep(3)
    t0 = time.perf_counter()
    p.send_signal(signal.SIGTERM)
    code = p.wait(60)
    exit_s = time.perf_counter() - t0
    stop.set()
    for t in ts:
        t.join()
    got = [a for a in answers if a is not None]
    by = {}
    for s, _ in got:
        by[s] = by.get(s, 0) + 1
    truncated = sum(1 for _, b in got if b == b"TRUNCATED")
    m = re.search(r"stopped after answering (\d+) requests", "".join(log))
    served = int(m.group(1)) if m else None
    print(f"SIGTERM under load (48 clients, MC N=50, signal after 3 s): exit {code} {exit_s:.2f} s after the signal; "
          f"answers {by}, {truncated} truncated, {len(answers) - len(got)} connections refused after the listener closed; "
          f"the server answered {served}, the clients received {len(got)}")
    assert code == 0 and truncated == 0 and served == len(got) and set(by) <= {200, 503}


if __name__ == "__main__":
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} logical CPUs; {BIN}")
    slow_clients()
    malformed()
    sigterm_under_load()
