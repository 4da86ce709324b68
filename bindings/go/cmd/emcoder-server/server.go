package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"emcoder"
)

// limits bound what one request, and all of them together, may ask of the server. Every
// request over a limit is answered with a JSON error before any inference.
type limits struct {
	maxBodyBytes  int64         // request body; over it: 413
	maxTexts      int           // texts per request; over it: 413
	maxSamples    int           // MC samples per request; over it: 400
	maxWork       int64         // estimated tokens x samples per request; over it: 413
	maxConcurrent int           // predictions running at once; more: 503 with Retry-After
	timeout       time.Duration // per request, from the start of inference; past it: 504
}

// defaultLimits are the flags' defaults.
var defaultLimits = limits{
	maxBodyBytes:  1 << 20,
	maxTexts:      256,
	maxSamples:    1000,
	maxWork:       4_000_000,
	maxConcurrent: 4,
	timeout:       30 * time.Second,
}

type config struct {
	modelDir string
	addr     string
	threads  int
	limits   limits
}

type predictRequest struct {
	Texts         []string `json:"texts"`
	Samples       int      `json:"samples"` // 0: the default (50)
	Seed          *uint64  `json:"seed"`    // null: the default (42)
	Deterministic bool     `json:"deterministic"`
	Truncate      bool     `json:"truncate"`
	// Stopping early (at most samples; each result's "samples" says how many were drawn):
	// on standard errors below tolerance, or on decisions settled at decision_error. 0: off.
	Tolerance     float32 `json:"tolerance"`
	DecisionError float64 `json:"decision_error"`
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

// server answers the HTTP API with one model under limits.
type server struct {
	model *emcoder.Model
	lim   limits
	sem   chan struct{} // one token per running prediction
}

func newServer(model *emcoder.Model, lim limits) *server {
	return &server{model: model, lim: lim, sem: make(chan struct{}, max(lim.maxConcurrent, 1))}
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
	srv := &http.Server{
		Handler:           newServer(model, cfg.limits).routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second, // a slow client cannot hold a connection forever
	}
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

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /labels", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]string{"labels": s.model.Labels()})
	})
	mux.HandleFunc("POST /predict", s.predict)
	return mux
}

// estimatedTokens bounds the tokens of a text from its bytes: every token but [CLS] and [SEP]
// covers at least one byte.
func estimatedTokens(text string) int64 { return int64(len(text)) + 2 }

func (s *server) predict(w http.ResponseWriter, r *http.Request) {
	var req predictRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.lim.maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{
				Error: fmt.Sprintf("the request body is over %d bytes", s.lim.maxBodyBytes)})
			return
		}
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "bad JSON: " + err.Error()})
		return
	}
	if len(req.Texts) == 0 {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "texts: give at least one text"})
		return
	}
	if len(req.Texts) > s.lim.maxTexts {
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{
			Error: fmt.Sprintf("texts: %d texts, at most %d per request", len(req.Texts), s.lim.maxTexts)})
		return
	}
	if req.Samples < 0 || req.Samples > s.lim.maxSamples {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf("samples: 0 (default) to %d", s.lim.maxSamples)})
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
	// Checked by the library (400 with EMCODER_ERR_INVALID_ARGUMENT); the work estimate below
	// counts every sample either may draw.
	opts.Tolerance, opts.DecisionError = req.Tolerance, req.DecisionError
	samples := int64(opts.Samples)
	if opts.Deterministic {
		samples = 1
	}
	var work int64
	for _, t := range req.Texts {
		work += estimatedTokens(t) * samples
	}
	if work > s.lim.maxWork {
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: fmt.Sprintf(
			"the request asks for about %d tokens x samples, at most %d: send fewer or shorter texts or fewer samples",
			work, s.lim.maxWork)})
		return
	}

	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: fmt.Sprintf(
			"%d predictions are running, the most this server runs at once: retry later", cap(s.sem))})
		return
	}
	// The client's going away cancels the call too (r.Context()).
	ctx, cancel := context.WithTimeout(r.Context(), s.lim.timeout)
	defer cancel()
	preds, err := s.model.Predict(ctx, req.Texts, &opts)
	if err != nil {
		writeError(w, err)
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
}

// writeError answers a failed prediction: 400 for bad input, 504 past the deadline, 503 when
// the client left or memory is short, 500 otherwise.
func writeError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, ""
	var e *emcoder.Error
	if errors.As(err, &e) {
		code = e.Code.String()
		switch e.Code {
		case emcoder.CodeInvalidArgument, emcoder.CodeInvalidUTF8:
			status = http.StatusBadRequest
		case emcoder.CodeCancelled:
			status = http.StatusServiceUnavailable
			if errors.Is(err, context.DeadlineExceeded) {
				status = http.StatusGatewayTimeout
			}
		case emcoder.CodeOutOfMemory:
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", strconv.Itoa(1))
		}
	}
	writeJSON(w, status, errorBody{Error: err.Error(), Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
