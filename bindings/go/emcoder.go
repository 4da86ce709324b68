// Package emcoder is the Go binding of libemcoder, the native runtime of EmCoder: a 28-label
// emotion classifier whose uncertainty comes from Monte-Carlo dropout.
//
//	m, err := emcoder.Load("tests/fixtures/tiny-vocab-bf16", nil)
//	if err != nil { ... }
//	defer m.Close()
//	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
//	defer cancel()
//	preds, err := m.Predict(ctx, []string{"I am so happy you are here!"}, nil)
//	for _, l := range preds[0].Labels { fmt.Println(l.Label, l.Mean, l.Std) }
//
// Predict honours its context: the context's deadline becomes the call's timeout, and its
// cancellation sets the call's cancel flag, so a cancelled or expired call returns within about
// one layer's work with an error that matches both ErrCancelled and ctx.Err() (errors.Is).
// Texts are passed to the library in place (pointer and length, pinned for the call), not
// copied. A *Model is safe for concurrent use by any number of goroutines: the model is
// immutable and the calls share its pool of worker threads. Close waits for running predictions
// to finish. Results are copied into Go memory; nothing returned needs freeing.
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
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
	CodeOutOfMemory     Code = C.EMCODER_ERR_OUT_OF_MEMORY    // over the memory budget, or the system's memory
	CodeInternal        Code = C.EMCODER_ERR_INTERNAL         // a bug: a panic caught in the library
	CodeCancelled       Code = C.EMCODER_ERR_CANCELLED        // the context was cancelled or expired
	CodeDevice          Code = C.EMCODER_ERR_DEVICE           // the GPU cannot be used (no CUDA build, driver, NVRTC, cuBLAS or GPU; int8 on a GPU)
)

// String returns the C name of the code, e.g. "EMCODER_ERR_IO".
func (c Code) String() string { return C.GoString(C.emcoder_error_code_name(C.int32_t(c))) }

// Error is an error of libemcoder: its code and message. Compare with errors.Is against the
// Err* values, which match any error of the same code. A call stopped by its context also
// matches the context's error (context.Canceled or context.DeadlineExceeded).
type Error struct {
	Code    Code
	Message string
	cause   error // the context's error, for a cancelled call
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "emcoder: " + e.Code.String()
	}
	return "emcoder: " + e.Message
}

// Unwrap returns the context's error of a call the context stopped, else nil.
func (e *Error) Unwrap() error { return e.cause }

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
	ErrCancelled       = &Error{Code: CodeCancelled}
	ErrDevice          = &Error{Code: CodeDevice}
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

// headerABIVersion is EMCODER_ABI_VERSION of the emcoder.h this package is compiled with.
const headerABIVersion = C.EMCODER_ABI_VERSION

// libraryABIVersion is the ABI version of the loaded libemcoder.
func libraryABIVersion() uint32 { return uint32(C.emcoder_abi_version()) }

// checkABI fails when the loaded library is older than the header compiled in (a newer one
// serves it: the structs only grow).
func checkABI() error {
	if got := libraryABIVersion(); got < headerABIVersion {
		return &Error{Code: CodeInternal, Message: fmt.Sprintf(
			"libemcoder has ABI version %d but emcoder.h is version %d: install a newer libemcoder", got, headerABIVersion)}
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
	// MaxRows bounds the rows (tokens x samples) computed at once, and so one call's scratch
	// memory (Model.ScratchBound); 0: the library's default.
	MaxRows int
	// BF16 packs the weights to bfloat16 at load and runs the products in bf16: the same as
	// Precision "bf16" (kept for existing callers).
	BF16 bool
	// Precision of the weights and products: "" or "f32" (the default; "bf16" when BF16 is
	// set), "bf16" (bf16 products with f32 accumulation) or "int8" (ABI 5: int8 weights per
	// output channel, activations quantized per row, exact integer sums; CPU only: with a GPU
	// Load fails with ErrDevice; an int8 model directory of `emcoder quantize` loads with it
	// as it is, the other precisions widen it). Other names, or BF16 with another precision,
	// fail with ErrInvalidArgument.
	Precision string
	// MemoryBudget is the scratch memory, in bytes, that running calls may reserve together;
	// a call that needs more fails with ErrOutOfMemory, calls wait while it is taken (see
	// PredictOptions.FailFastOnMemory). 0: twice ScratchBound.
	MemoryBudget uint64
	// ISA names the kernels' instruction-set level ("generic", "avx2", ...); "": the
	// EMCODER_ISA environment variable, else the best this CPU runs.
	ISA string
	// CopyWeights reads model.safetensors into memory instead of mapping it (a mapped file
	// replaced in place crashes the process with SIGBUS: update models by atomic rename).
	CopyWeights bool
	// RefuseNonFinite fails the load (ErrBadModel) when a weight is NaN or infinite.
	RefuseNonFinite bool
	// Device is where the forward runs: "" or "cpu", "cuda" (GPU 0) or "cuda:N". A GPU needs
	// a libemcoder built with CUDA, the NVIDIA driver, NVRTC and cuBLAS; without them Load
	// fails with ErrDevice saying what is missing. Other names fail with ErrInvalidArgument.
	Device string
}

// parseDevice maps Options.Device to EmcoderModelParams's device and device_index.
func parseDevice(name string) (C.uint32_t, C.uint64_t, error) {
	switch {
	case name == "" || name == "cpu":
		return C.EMCODER_DEVICE_CPU, 0, nil
	case name == "cuda":
		return C.EMCODER_DEVICE_CUDA, 0, nil
	case strings.HasPrefix(name, "cuda:"):
		digits := name[len("cuda:"):]
		n, err := strconv.ParseUint(digits, 10, 64)
		if err == nil && digits != "" && strings.Trim(digits, "0123456789") == "" {
			return C.EMCODER_DEVICE_CUDA, C.uint64_t(n), nil
		}
	}
	return 0, 0, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf(
		"Options.Device %q: use \"cpu\", \"cuda\" (GPU 0) or \"cuda:N\"", name)}
}

// parsePrecision maps Options.Precision (and the older Options.BF16) to
// EmcoderModelParams's precision.
func parsePrecision(name string, bf16 bool) (C.uint32_t, error) {
	var precision C.uint32_t
	switch name {
	case "":
		if bf16 {
			return C.EMCODER_PRECISION_BF16, nil
		}
		return C.EMCODER_PRECISION_F32, nil
	case "f32":
		precision = C.EMCODER_PRECISION_F32
	case "bf16":
		precision = C.EMCODER_PRECISION_BF16
	case "int8":
		precision = C.EMCODER_PRECISION_INT8
	default:
		return 0, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf(
			"Options.Precision %q: use \"f32\", \"bf16\" or \"int8\"", name)}
	}
	if bf16 && precision != C.EMCODER_PRECISION_BF16 {
		return 0, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf(
			"Options.BF16 and Options.Precision %q disagree: set only Precision", name)}
	}
	return precision, nil
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
	// FailFastOnMemory fails with ErrOutOfMemory at once when the model's memory budget is
	// taken by running calls, instead of waiting for them (until the context ends).
	FailFastOnMemory bool
	// Tolerance turns on adaptive sampling: samples are drawn in blocks of 10 and a text
	// stops once every label's mean probability has a standard error (std / sqrt(n)) below
	// it, at most Samples; Prediction.Samples tells how many were drawn. 0: off. Negative or
	// non-finite values, or Tolerance and DecisionError both set, fail with
	// ErrInvalidArgument. EmcoderPredictOptions's tolerance in emcoder.h.
	Tolerance float32
	// DecisionError turns on sampling that stops on decisions (ABI 3): samples are drawn in
	// blocks of 10 and a text stops once every label's thresholded decision is settled at
	// this error rate (per label, a z-test of the mean against the threshold, and of the std
	// against the model's u bound where it has one, Bonferroni-corrected over the blocks), at
	// most Samples; Prediction.Samples tells how many were drawn. For each (text, label), the
	// probability that the decision differs from that of the label's true mean is at most
	// DecisionError (normal approximation). 0: off. Otherwise it must lie strictly between 0
	// and 1 (e.g. 0.01): other values fail with ErrInvalidArgument. EmcoderPredictOptions's
	// decision_error in emcoder.h.
	DecisionError float64
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
	Samples int          `json:"samples"`          // MC samples drawn (Tolerance, DecisionError: this text's); 0: deterministic pass
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
	if strings.IndexByte(dir, 0) >= 0 || strings.IndexByte(opts.TokenizerPath, 0) >= 0 ||
		strings.IndexByte(opts.ISA, 0) >= 0 {
		return nil, &Error{Code: CodeInvalidArgument, Message: "a path or name contains a NUL byte"}
	}
	device, deviceIndex, err := parseDevice(opts.Device)
	if err != nil {
		return nil, err
	}
	precision, err := parsePrecision(opts.Precision, opts.BF16)
	if err != nil {
		return nil, err
	}
	params := C.emcoder_model_default_params()
	params.device = device
	params.device_index = deviceIndex
	params.n_threads = C.uint32_t(opts.Threads)
	if opts.MaxTokens != 0 {
		params.max_tokens = C.uint32_t(opts.MaxTokens)
	}
	if opts.MaxRows != 0 {
		params.max_rows = C.uint32_t(opts.MaxRows)
	}
	params.precision = precision
	params.memory_budget = C.uint64_t(opts.MemoryBudget)
	params.copy_weights = boolByte(opts.CopyWeights)
	params.refuse_non_finite = boolByte(opts.RefuseNonFinite)
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	if opts.TokenizerPath != "" {
		ctok := C.CString(opts.TokenizerPath)
		defer C.free(unsafe.Pointer(ctok))
		params.tokenizer_path = ctok
	}
	if opts.ISA != "" {
		cisa := C.CString(opts.ISA)
		defer C.free(unsafe.Pointer(cisa))
		params.isa = cisa
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

func boolByte(b bool) C.uint8_t {
	if b {
		return 1
	}
	return 0
}

// Labels returns the label names in id order (the order of Prediction.Labels).
func (m *Model) Labels() []string { return append([]string(nil), m.labels...) }

// ScratchBound returns the most scratch memory, in bytes, one call can use whatever its texts
// (a linear function of max(MaxRows, MaxTokens) and the model's size); 0 once closed.
func (m *Model) ScratchBound() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return uint64(C.emcoder_model_scratch_bound(m.ptr))
}

// MemoryBudget returns the scratch memory budget of the running calls, in bytes; 0 once closed.
func (m *Model) MemoryBudget() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return uint64(C.emcoder_model_memory_budget(m.ptr))
}

// ISA returns the instruction-set level of the model's kernels, e.g. "avx2"; "" once closed.
func (m *Model) ISA() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if p := C.emcoder_model_isa(m.ptr); p != nil {
		return C.GoString(p)
	}
	return ""
}

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
// texts gives an empty result. ctx bounds the call: its deadline is the call's timeout and its
// cancellation stops the call within about one layer's work, with an error matching both
// ErrCancelled and ctx.Err(). Other errors are *Error (see the Err* sentinels) or ErrClosed.
func (m *Model) Predict(ctx context.Context, texts []string, opts *PredictOptions) ([]Prediction, error) {
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
	copts.truncate = boolByte(o.Truncate)
	copts.fail_fast_on_memory = boolByte(o.FailFastOnMemory)
	copts.tolerance = C.float(o.Tolerance)
	copts.decision_error = C.double(o.DecisionError)
	if len(texts) == 0 {
		return []Prediction{}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, cancelled(err)
	}
	if d, ok := ctx.Deadline(); ok {
		// Rounded up, so that the context has expired when the library stops the call.
		ms := uint64(1)
		if left := time.Until(d); left > time.Millisecond {
			ms = uint64(math.Ceil(float64(left) / float64(time.Millisecond)))
		}
		copts.timeout_ms = C.uint64_t(ms)
	}

	// The texts stay where they are: (pointer, length) pairs into the Go strings, pinned for
	// the call; so does the cancel flag the library reads.
	var pin runtime.Pinner
	defer pin.Unpin()
	ctexts := make([]C.EmcoderText, len(texts))
	for i, t := range texts {
		if len(t) > 0 {
			data := unsafe.StringData(t)
			pin.Pin(data)
			ctexts[i].data = (*C.char)(unsafe.Pointer(data))
			ctexts[i].len = C.size_t(len(t))
		}
	}
	flag := new(int32)
	pin.Pin(flag)
	copts.cancel = (*C.EmcoderCancelFlag)(unsafe.Pointer(flag))
	finished := make(chan struct{})
	watcher := make(chan struct{})
	go func() {
		defer close(watcher)
		select {
		case <-ctx.Done():
			atomic.StoreInt32(flag, 1)
		case <-finished:
		}
	}()

	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		close(finished)
		<-watcher
		return nil, ErrClosed
	}
	var p *C.EmcoderPrediction
	var cerr *C.EmcoderError
	code := C.emcoder_predict_texts(m.ptr, &ctexts[0], C.size_t(len(texts)), &copts, &p, &cerr)
	close(finished)
	<-watcher
	runtime.KeepAlive(texts)
	if code != C.EMCODER_OK {
		err := takeError(code, cerr)
		if e := err.(*Error); e.Code == CodeCancelled {
			e.cause = ctx.Err()
			if d, ok := ctx.Deadline(); ok && e.cause == nil && !time.Now().Before(d) {
				e.cause = context.DeadlineExceeded // its timer has not fired yet
			}
		}
		return nil, err
	}
	defer C.emcoder_prediction_free(p)
	return m.copyPrediction(p, len(texts)), nil
}

// cancelled is the error of a call whose context ended before it started.
func cancelled(cause error) error {
	return &Error{Code: CodeCancelled, Message: "cancelled before it started: " + cause.Error(), cause: cause}
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
