package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"emcoder"
)

// Limits of one request.
const (
	maxBodyBytes = 1 << 20
	maxTexts     = 256
	maxSamples   = 1000
)

type config struct {
	modelDir string
	addr     string
	threads  int
}

type predictRequest struct {
	Texts         []string `json:"texts"`
	Samples       int      `json:"samples"` // 0: the default (50)
	Seed          *uint64  `json:"seed"`    // null: the default (42)
	Deterministic bool     `json:"deterministic"`
	Truncate      bool     `json:"truncate"`
}

type result struct {
	Text string `json:"text"`
	emcoder.Prediction
	Predicted []string `json:"predicted"`
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// run loads the model, serves until ctx is done, then shuts down gracefully. The listening
// address is sent on ready (useful with port 0).
func run(ctx context.Context, cfg config, ready chan<- string) error {
	model, err := emcoder.Load(cfg.modelDir, &emcoder.Options{Threads: cfg.threads})
	if err != nil {
		return err
	}
	defer model.Close()
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: newHandler(model), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	ready <- ln.Addr().String()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func newHandler(model *emcoder.Model) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /labels", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]string{"labels": model.Labels()})
	})
	mux.HandleFunc("POST /predict", func(w http.ResponseWriter, r *http.Request) {
		var req predictRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "bad JSON: " + err.Error()})
			return
		}
		if len(req.Texts) == 0 || len(req.Texts) > maxTexts {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf("texts: give 1 to %d texts", maxTexts)})
			return
		}
		if req.Samples < 0 || req.Samples > maxSamples {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf("samples: 0 (default) to %d", maxSamples)})
			return
		}
		opts := emcoder.DefaultPredictOptions()
		if req.Samples > 0 {
			opts.Samples = req.Samples
		}
		if req.Seed != nil {
			opts.Seed = *req.Seed
		}
		opts.Deterministic, opts.Truncate = req.Deterministic, req.Truncate
		preds, err := model.Predict(r.Context(), req.Texts, &opts)
		if err != nil {
			status, code := http.StatusInternalServerError, ""
			var e *emcoder.Error
			if errors.As(err, &e) {
				code = e.Code.String()
				if e.Code == emcoder.CodeInvalidArgument || e.Code == emcoder.CodeInvalidUTF8 {
					status = http.StatusBadRequest
				}
			}
			writeJSON(w, status, errorBody{Error: err.Error(), Code: code})
			return
		}
		out := make([]result, len(preds))
		for i, p := range preds {
			out[i] = result{Text: req.Texts[i], Prediction: p, Predicted: []string{}}
			for _, l := range p.Labels {
				if l.Predicted {
					out[i].Predicted = append(out[i].Predicted, l.Label)
				}
			}
		}
		writeJSON(w, http.StatusOK, map[string][]result{"results": out})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
