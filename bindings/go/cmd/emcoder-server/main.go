// Command emcoder-server is an example HTTP service over the Go binding: JSON in, JSON out.
//
//	go run ./cmd/emcoder-server -model ../../models/emcoder-mini -addr 127.0.0.1:8080
//	curl -s localhost:8080/predict -d '{"texts": ["I am so happy you are here!"], "samples": 20}'
//
// Endpoints:
//
//	POST /predict  {"texts": [...], "samples": N, "seed": S, "deterministic": bool, "truncate": bool,
//	                "tolerance": E, "decision_error": A}   (stop early: one of them, at most N)
//	               -> {"results": [{"text", "n_tokens", "samples", "labels": [...], "predicted": [...]}]}
//	GET  /labels   -> {"labels": [...]}
//	GET  /healthz  -> ok
//
// One model serves every request concurrently (a Model is safe for concurrent use), under
// limits set by flags: request bytes (-max-body-bytes), texts (-max-texts), MC samples
// (-max-samples), estimated tokens x samples (-max-work; a text counts as its bytes + 2
// tokens), concurrent predictions (-max-concurrent) and a per-request deadline (-timeout,
// which cancels the inference within about one layer's work). Errors answer JSON
// {"error", "code"}: 400 bad input, 413 over a size limit, 503 (with Retry-After) when all
// prediction slots are busy or memory is short, 504 past the deadline, 500 otherwise.
// SIGINT/SIGTERM shut the server down gracefully.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg := config{}
	flag.StringVar(&cfg.modelDir, "model", os.Getenv("EMCODER_MODEL"), "model directory (default $EMCODER_MODEL)")
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "listen address")
	flag.IntVar(&cfg.threads, "threads", 0, "worker threads of the model (0: all cores)")
	cfg.limits = defaultLimits
	flag.Int64Var(&cfg.limits.maxBodyBytes, "max-body-bytes", defaultLimits.maxBodyBytes, "largest request body, bytes")
	flag.IntVar(&cfg.limits.maxTexts, "max-texts", defaultLimits.maxTexts, "most texts per request")
	flag.IntVar(&cfg.limits.maxSamples, "max-samples", defaultLimits.maxSamples, "most MC samples per request")
	flag.Int64Var(&cfg.limits.maxWork, "max-work", defaultLimits.maxWork, "most estimated tokens x samples per request")
	flag.IntVar(&cfg.limits.maxConcurrent, "max-concurrent", defaultLimits.maxConcurrent, "most predictions running at once")
	flag.DurationVar(&cfg.limits.timeout, "timeout", defaultLimits.timeout, "deadline of each prediction")
	flag.Parse()
	if cfg.modelDir == "" {
		fmt.Fprintln(os.Stderr, "emcoder-server: -model (or $EMCODER_MODEL) is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ready := make(chan string, 1)
	go func() { log.Printf("emcoder-server listening on http://%s", <-ready) }()
	if err := run(ctx, cfg, ready); err != nil {
		log.Fatal(err)
	}
}
