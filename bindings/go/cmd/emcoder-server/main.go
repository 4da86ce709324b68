// Command emcoder-server is an example HTTP service over the Go binding: JSON in, JSON out.
//
//	go run ./cmd/emcoder-server -model ../../models/emcoder-mini -addr 127.0.0.1:8080
//	curl -s localhost:8080/predict -d '{"texts": ["I am so happy you are here!"], "samples": 20}'
//
// Endpoints:
//
//	POST /predict  {"texts": [...], "samples": N, "seed": S, "deterministic": bool, "truncate": bool}
//	               -> {"results": [{"text", "n_tokens", "samples", "labels": [...], "predicted": [...]}]}
//	GET  /labels   -> {"labels": [...]}
//	GET  /healthz  -> ok
//
// One model serves every request concurrently (a Model is safe for concurrent use). Input
// errors answer 400 with {"error", "code"}; SIGINT/SIGTERM shut the server down gracefully.
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
