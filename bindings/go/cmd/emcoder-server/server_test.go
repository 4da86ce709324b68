package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Starts the server on 127.0.0.1 (a free port), sends real requests, and stops it; the whole
// test is bounded by a 60 s deadline.
func TestServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := config{
		modelDir: filepath.Join("..", "..", "..", "..", "tests", "fixtures", "tiny-vocab-bf16"),
		addr:     "127.0.0.1:0",
		threads:  2,
	}
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

	for _, c := range []struct {
		body string
		code string
	}{
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
