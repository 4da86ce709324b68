package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"emcoder"
)

var fixture = filepath.Join("..", "..", "..", "..", "tests", "fixtures", "tiny-vocab-bf16")

// Starts the server on 127.0.0.1 (a free port), sends real requests, and stops it; the whole
// test is bounded by a 60 s deadline.
func TestServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := config{
		modelDir: fixture,
		addr:     "127.0.0.1:0",
		threads:  2,
		limits:   defaultLimits,
	}
	cfg.limits.maxConcurrent = 8 // the 8 concurrent clients below are all served
	ready := make(chan string, 1)
	stopped := make(chan error, 1)
	serveCtx, stop := context.WithCancel(ctx)
	go func() { stopped <- run(serveCtx, cfg, ready) }()
	var base string
	select {
	case addr := <-ready:
		base = "http://" + addr
	case err := <-stopped:
		t.Fatalf("server did not start: %v", err)
	case <-ctx.Done():
		t.Fatal("server did not start in time")
	}
	client := &http.Client{Timeout: 20 * time.Second}

	post := func(body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/predict", strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		data, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("not JSON (%d): %s", resp.StatusCode, data)
		}
		return resp.StatusCode, v
	}

	resp, err := client.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	status, v := post(`{"texts": ["I am so happy you are here!", "This is awful."], "samples": 5, "seed": 3}`)
	if status != 200 {
		t.Fatalf("predict: %d %v", status, v)
	}
	results := v["results"].([]any)
	if len(results) != 2 {
		t.Fatalf("results: %v", v)
	}
	r0 := results[0].(map[string]any)
	if r0["text"] != "I am so happy you are here!" || r0["samples"].(float64) != 5 ||
		len(r0["labels"].([]any)) != 28 || r0["n_tokens"].(float64) < 3 {
		t.Fatalf("result 0: %v", r0)
	}
	label0 := r0["labels"].([]any)[0].(map[string]any)
	if label0["label"] != "admiration" || label0["mean"].(float64) <= 0 || label0["mean"].(float64) >= 1 {
		t.Fatalf("label 0: %v", label0)
	}

	// The same request from 8 clients at once gives the same answer.
	var wg sync.WaitGroup
	bodies := make([][]byte, 8)
	for i := range bodies {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, err := client.Post(base+"/predict", "application/json",
				strings.NewReader(`{"texts": ["ok", "wow"], "samples": 4}`))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			bodies[i], _ = io.ReadAll(resp.Body)
		}(i)
	}
	wg.Wait()
	for i := range bodies {
		if !bytes.Equal(bodies[i], bodies[0]) || len(bodies[0]) == 0 {
			t.Fatalf("concurrent answer %d differs", i)
		}
	}

	// Stopping early: a loose tolerance stops after the first block of 10, a decision error
	// draws blocks of 10 up to the samples asked for.
	status, v = post(`{"texts": ["ok", "wow"], "samples": 50, "tolerance": 1}`)
	for _, r := range v["results"].([]any) {
		if n := r.(map[string]any)["samples"].(float64); status != 200 || n != 10 {
			t.Fatalf("tolerance 1: %d, %v samples, want 200 and 10", status, n)
		}
	}
	status, v = post(`{"texts": ["ok", "wow"], "samples": 30, "decision_error": 0.01}`)
	for _, r := range v["results"].([]any) {
		if n := int(r.(map[string]any)["samples"].(float64)); status != 200 || n < 10 || n > 30 || n%10 != 0 {
			t.Fatalf("decision_error 0.01: %d, %v samples, want 200 and 10..30 in blocks of 10", status, n)
		}
	}

	for _, c := range []struct {
		body string
		code string
	}{
		{`{"texts": ["x"], "tolerance": -1}`, "EMCODER_ERR_INVALID_ARGUMENT"},
		{`{"texts": ["x"], "decision_error": 1.5}`, "EMCODER_ERR_INVALID_ARGUMENT"},
		{`{"texts": ["x"], "tolerance": 0.01, "decision_error": 0.01}`, "EMCODER_ERR_INVALID_ARGUMENT"},
		{`{"texts": []}`, ""},
		{`not json`, ""},
		{`{"texts": ["x"], "samples": -1}`, ""},
		{`{"texts": ["x"], "unknown": 1}`, ""},
		{`{"texts": ["` + strings.Repeat("a ", 5000) + `"], "deterministic": true}`, "EMCODER_ERR_INVALID_ARGUMENT"},
	} {
		status, v := post(c.body)
		if status != 400 || v["error"] == "" || (c.code != "" && v["code"] != c.code) {
			t.Fatalf("%.40s: got %d %v, want 400 %s", c.body, status, v, c.code)
		}
	}

	stop()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("server did not stop in time")
	}
}

// post sends a body to /predict and decodes the JSON answer.
func post(t *testing.T, client *http.Client, url, body string) (int, http.Header, map[string]any) {
	t.Helper()
	resp, err := client.Post(url+"/predict", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("not JSON (%d): %.200s", resp.StatusCode, data)
	}
	return resp.StatusCode, resp.Header, v
}

// Oversized, too many, too heavy, concurrent beyond the limit and slow requests each get their
// JSON error, on a server listening on 127.0.0.1; the server keeps answering afterwards.
func TestServerLimits(t *testing.T) {
	model, err := emcoder.Load(fixture, &emcoder.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	lim := limits{
		maxBodyBytes:  64 << 10,
		maxTexts:      8,
		maxSamples:    5000,
		maxWork:       2_000_000,
		maxConcurrent: 1,
		timeout:       100 * time.Millisecond,
	}
	s := newServer(model, lim)
	ts := httptest.NewServer(s.routes()) // 127.0.0.1, a free port
	defer ts.Close()
	client := &http.Client{Timeout: 30 * time.Second}
	texts := func(n, bytes int) string {
		q := make([]string, n)
		for i := range q {
			q[i] = `"` + strings.Repeat("a b ", bytes/4) + `"`
		}
		return "[" + strings.Join(q, ",") + "]"
	}

	for _, c := range []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"body over 64 KiB", `{"texts": ` + texts(4, 20000) + `}`, 413, ""},
		{"9 texts", `{"texts": ` + texts(9, 4) + `}`, 413, ""},
		{"tokens x samples", `{"texts": ` + texts(8, 1000) + `, "samples": 400}`, 413, ""},
		{"samples over the limit", `{"texts": ["ok"], "samples": 5001}`, 400, ""},
		{"NUL byte", `{"texts": ["a\u0000b"]}`, 400, "EMCODER_ERR_INVALID_ARGUMENT"},
		// 8 texts x 1000 bytes x 200 samples: within the limits, seconds of work: stopped at
		// the 100 ms deadline.
		{"slow", `{"texts": ` + texts(8, 1000) + `, "samples": 200}`, 504, "EMCODER_ERR_CANCELLED"},
	} {
		start := time.Now()
		status, _, v := post(t, client, ts.URL, c.body)
		if status != c.status || v["error"] == "" || (c.code != "" && v["code"] != c.code) {
			t.Fatalf("%s: got %d %.300v, want %d %s", c.name, status, v, c.status, c.code)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("%s: answered after %v", c.name, took)
		}
	}

	// Every prediction slot taken: 503 with Retry-After, then served once it is free.
	s.sem <- struct{}{}
	status, header, v := post(t, client, ts.URL, `{"texts": ["ok"]}`)
	if status != 503 || header.Get("Retry-After") == "" || v["error"] == "" {
		t.Fatalf("busy: got %d %v", status, v)
	}
	<-s.sem
	if status, _, v := post(t, client, ts.URL, `{"texts": ["ok"], "samples": 3}`); status != 200 {
		t.Fatalf("after the limits: got %d %v", status, v)
	}

	// A client that gives up cancels its inference: the slot comes back.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	slow, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/predict",
		strings.NewReader(`{"texts": `+texts(8, 1000)+`, "samples": 200}`))
	if resp, err := client.Do(slow); err == nil {
		resp.Body.Close()
		t.Fatalf("the slow request was answered: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(s.sem) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(s.sem) > 0 {
		t.Fatal("the prediction of a departed client still runs")
	}
}
