// Package emcoder is the Go binding of libemcoder, the native runtime of EmCoder: a 28-label
// emotion classifier whose uncertainty comes from Monte-Carlo dropout.
//
//	m, err := emcoder.Load("tests/fixtures/tiny-vocab-bf16", nil)
//	if err != nil { ... }
//	defer m.Close()
//	preds, err := m.Predict([]string{"I am so happy you are here!"}, nil)
//	for _, l := range preds[0].Labels { fmt.Println(l.Label, l.Mean, l.Std) }
//
// A *Model is safe for concurrent use by any number of goroutines: the model is immutable and
// the calls share its pool of worker threads. Close waits for running predictions to finish.
// Results are copied into Go memory; nothing returned needs freeing.
//
// Linking: by default the package links the library built in this checkout
// (../../target/release, with an rpath); build with -tags emcoder_pkgconfig to use an
// installed one through pkg-config.
package emcoder

/*
#include <stdlib.h>
#include "emcoder.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// Code is a status code of libemcoder (EMCODER_ERR_* in emcoder.h).
type Code int32

// The error codes of the C API.
const (
	CodeInvalidArgument Code = C.EMCODER_ERR_INVALID_ARGUMENT // NULL/empty/out-of-range input, text too long
	CodeInvalidUTF8     Code = C.EMCODER_ERR_INVALID_UTF8     // a text is not valid UTF-8
	CodeIO              Code = C.EMCODER_ERR_IO               // a file is missing or unreadable
	CodeBadModel        Code = C.EMCODER_ERR_BAD_MODEL        // a model file is invalid
	CodeOutOfMemory     Code = C.EMCODER_ERR_OUT_OF_MEMORY    // the request's buffers cannot be allocated
	CodeInternal        Code = C.EMCODER_ERR_INTERNAL         // a bug: a panic caught in the library
)

// String returns the C name of the code, e.g. "EMCODER_ERR_IO".
func (c Code) String() string { return C.GoString(C.emcoder_error_code_name(C.int32_t(c))) }

// Error is an error of libemcoder: its code and message. Compare with errors.Is against the
// Err* values, which match any error of the same code.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "emcoder: " + e.Code.String()
	}
	return "emcoder: " + e.Message
}

// Is reports whether target is the sentinel (or an error) of the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// Sentinels for errors.Is, one per code.
var (
	ErrInvalidArgument = &Error{Code: CodeInvalidArgument}
	ErrInvalidUTF8     = &Error{Code: CodeInvalidUTF8}
	ErrIO              = &Error{Code: CodeIO}
	ErrBadModel        = &Error{Code: CodeBadModel}
	ErrOutOfMemory     = &Error{Code: CodeOutOfMemory}
	ErrInternal        = &Error{Code: CodeInternal}
	// ErrClosed is returned by calls on a closed Model.
	ErrClosed = errors.New("emcoder: model is closed")
)

// takeError converts a failed call's code and error object (freeing it) into a Go error.
func takeError(code C.int32_t, e *C.EmcoderError) error {
	msg := C.GoString(C.emcoder_error_message(e))
	C.emcoder_error_free(e)
	return &Error{Code: Code(code), Message: msg}
}

// Version returns the version of the loaded libemcoder, e.g. "0.1.0".
func Version() string { return C.GoString(C.emcoder_version()) }

// checkABI fails when the loaded library does not speak the ABI of the header compiled in.
func checkABI() error {
	if got := uint32(C.emcoder_abi_version()); got != C.EMCODER_ABI_VERSION {
		return &Error{Code: CodeInternal, Message: fmt.Sprintf(
			"libemcoder has ABI version %d but emcoder.h is version %d: rebuild", got, C.EMCODER_ABI_VERSION)}
	}
	return nil
}

// Options say how to load a model; nil or zero fields mean the defaults.
type Options struct {
	// TokenizerPath is a tokenizer.json; "": <dir>/tokenizer.json, else the built-in one.
	TokenizerPath string
	// Threads of the model's worker pool; 0: all cores.
	Threads int
	// MaxTokens is the longest accepted text in tokens ([CLS] and [SEP] included); 0: 4096.
	MaxTokens int
	// MaxRows bounds the rows (tokens x samples) computed at once; 0: the library's default.
	MaxRows int
}

// PredictOptions say how to predict; nil means DefaultPredictOptions().
type PredictOptions struct {
	// Samples is the number of MC-dropout samples per text; 0: the default (50).
	Samples int
	// Seed of the dropout masks, used as given (the default options use 42).
	Seed uint64
	// Deterministic asks for one pass with dropout off (Samples is then ignored); the
	// predictions then carry the logits.
	Deterministic bool
	// Truncate cuts texts longer than MaxTokens instead of failing.
	Truncate bool
}

// DefaultPredictOptions returns the library's defaults: 50 samples, seed 42.
func DefaultPredictOptions() PredictOptions {
	return PredictOptions{Samples: C.EMCODER_DEFAULT_SAMPLES, Seed: C.EMCODER_DEFAULT_SEED}
}

// LabelStats are the statistics of one label of one text over the MC samples.
type LabelStats struct {
	Label        string  `json:"label"`
	Mean         float32 `json:"mean"`          // mean sigmoid probability
	Std          float32 `json:"std"`           // its standard deviation (N-1)
	TotalEntropy float32 `json:"total_entropy"` // H(mean), nats
	Aleatoric    float32 `json:"aleatoric"`     // mean of H(p_s)
	Epistemic    float32 `json:"epistemic"`     // total - aleatoric
	Predicted    bool    `json:"predicted"`     // above the model's threshold
}

// Prediction is the result for one text.
type Prediction struct {
	Tokens  int          `json:"n_tokens"`         // tokens, [CLS] and [SEP] included
	Samples int          `json:"samples"`          // MC samples drawn; 0: deterministic pass
	Labels  []LabelStats `json:"labels"`           // one per label, in label-id order
	Logits  []float32    `json:"logits,omitempty"` // deterministic predictions only
}

// Model is a loaded model. Safe for concurrent use; call Close when done.
type Model struct {
	mu      sync.RWMutex
	ptr     *C.EmcoderModel
	labels  []string
	cleanup runtime.Cleanup
}

// Load loads a model directory (model.safetensors, config.json, optional thresholds.json and
// tokenizer.json). opts may be nil.
func Load(dir string, opts *Options) (*Model, error) {
	if err := checkABI(); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &Options{}
	}
	for name, v := range map[string]int{"Threads": opts.Threads, "MaxTokens": opts.MaxTokens, "MaxRows": opts.MaxRows} {
		if v < 0 || uint64(v) > 1<<32-1 {
			return nil, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("Options.%s %d is out of range", name, v)}
		}
	}
	if strings.IndexByte(dir, 0) >= 0 || strings.IndexByte(opts.TokenizerPath, 0) >= 0 {
		return nil, &Error{Code: CodeInvalidArgument, Message: "a path contains a NUL byte"}
	}
	params := C.emcoder_model_default_params()
	params.n_threads = C.uint32_t(opts.Threads)
	if opts.MaxTokens != 0 {
		params.max_tokens = C.uint32_t(opts.MaxTokens)
	}
	if opts.MaxRows != 0 {
		params.max_rows = C.uint32_t(opts.MaxRows)
	}
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	if opts.TokenizerPath != "" {
		ctok := C.CString(opts.TokenizerPath)
		defer C.free(unsafe.Pointer(ctok))
		params.tokenizer_path = ctok
	}
	var ptr *C.EmcoderModel
	var cerr *C.EmcoderError
	if code := C.emcoder_model_load(cdir, &params, &ptr, &cerr); code != C.EMCODER_OK {
		return nil, takeError(code, cerr)
	}
	m := &Model{ptr: ptr}
	for i := 0; i < int(C.emcoder_model_num_labels(ptr)); i++ {
		m.labels = append(m.labels, C.GoString(C.emcoder_model_label(ptr, C.size_t(i))))
	}
	// Frees the model if the caller forgets Close (Close cancels this).
	m.cleanup = runtime.AddCleanup(m, func(p *C.EmcoderModel) { C.emcoder_model_free(p) }, ptr)
	return m, nil
}

// Labels returns the label names in id order (the order of Prediction.Labels).
func (m *Model) Labels() []string { return append([]string(nil), m.labels...) }

// Close frees the model after running predictions finish. Closing twice is a no-op.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ptr != nil {
		m.cleanup.Stop()
		C.emcoder_model_free(m.ptr)
		m.ptr = nil
	}
	return nil
}

// Predict predicts every text (UTF-8). opts may be nil (DefaultPredictOptions). An empty
// texts gives an empty result. Errors are *Error (see the Err* sentinels) or ErrClosed.
func (m *Model) Predict(texts []string, opts *PredictOptions) ([]Prediction, error) {
	o := DefaultPredictOptions()
	if opts != nil {
		o = *opts
	}
	copts := C.emcoder_predict_default_options()
	switch {
	case o.Deterministic:
		copts.n_samples = 0
	case o.Samples < 0 || uint64(o.Samples) > 1<<32-1:
		return nil, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("Samples %d is out of range", o.Samples)}
	case o.Samples > 0:
		copts.n_samples = C.uint32_t(o.Samples)
	}
	copts.seed = C.uint64_t(o.Seed)
	if o.Truncate {
		copts.truncate = 1
	}
	if len(texts) == 0 {
		return []Prediction{}, nil
	}
	// C strings live in C memory; the array of pointers to them may live in Go memory.
	ctexts := make([]*C.char, len(texts))
	defer func() {
		for _, p := range ctexts {
			C.free(unsafe.Pointer(p))
		}
	}()
	for i, t := range texts {
		if strings.IndexByte(t, 0) >= 0 {
			return nil, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("text %d contains a NUL byte", i)}
		}
		ctexts[i] = C.CString(t)
	}

	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return nil, ErrClosed
	}
	var p *C.EmcoderPrediction
	var cerr *C.EmcoderError
	code := C.emcoder_predict(m.ptr, &ctexts[0], C.size_t(len(texts)), &copts, &p, &cerr)
	if code != C.EMCODER_OK {
		return nil, takeError(code, cerr)
	}
	defer C.emcoder_prediction_free(p)
	return m.copyPrediction(p, len(texts)), nil
}

// copyPrediction copies a C prediction into Go values.
func (m *Model) copyPrediction(p *C.EmcoderPrediction, n int) []Prediction {
	nl := int(C.emcoder_prediction_num_labels(p))
	out := make([]Prediction, n)
	for i := range out {
		ci := C.size_t(i)
		stats := unsafe.Slice(C.emcoder_prediction_labels(p, ci), nl)
		labels := make([]LabelStats, nl)
		for j, s := range stats {
			labels[j] = LabelStats{
				Label: m.labels[j], Mean: float32(s.mean), Std: float32(s.std),
				TotalEntropy: float32(s.total_entropy), Aleatoric: float32(s.aleatoric),
				Epistemic: float32(s.epistemic), Predicted: s.predicted != 0,
			}
		}
		out[i] = Prediction{
			Tokens:  int(C.emcoder_prediction_n_tokens(p, ci)),
			Samples: int(C.emcoder_prediction_n_samples(p, ci)),
			Labels:  labels,
		}
		if z := C.emcoder_prediction_logits(p, ci); z != nil {
			out[i].Logits = make([]float32, nl)
			for j, v := range unsafe.Slice(z, nl) {
				out[i].Logits[j] = float32(v)
			}
		}
	}
	return out
}
