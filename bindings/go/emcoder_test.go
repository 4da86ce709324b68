package emcoder

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The context of the calls that need no deadline.
var bg = context.Background()

// The fixture model of the repository (full vocabulary, BF16, built-in tokenizer).
var fixture = filepath.Join("..", "..", "tests", "fixtures", "tiny-vocab-bf16")

var texts = []string{
	"I am so happy you are here!",
	"This is the worst day ever.",
	"Merci beaucoup 🙏 ça me touche énormément",
	"ok",
	"Wow, I did not expect that at all... is it real?",
	"I miss them so much, it hurts.",
}

func load(t *testing.T) *Model {
	t.Helper()
	m, err := Load(fixture, &Options{Threads: 2})
	if err != nil {
		t.Fatalf("Load(%s): %v", fixture, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestLoadErrors(t *testing.T) {
	_, err := Load("/nonexistent/emcoder-model", nil)
	if !errors.Is(err, ErrIO) || !strings.Contains(err.Error(), "/nonexistent/emcoder-model") {
		t.Fatalf("missing dir: got %v, want ErrIO naming the path", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeIO || e.Code.String() != "EMCODER_ERR_IO" {
		t.Fatalf("errors.As: %#v", err)
	}
	if _, err := Load(fixture, &Options{TokenizerPath: "/nonexistent.json"}); !errors.Is(err, ErrIO) {
		t.Fatalf("missing tokenizer: got %v", err)
	}
	if _, err := Load(fixture, &Options{MaxTokens: 1}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("MaxTokens 1: got %v", err)
	}
	if _, err := Load(fixture, &Options{Threads: -1}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Threads -1: got %v", err)
	}
}

// Devices: malformed names are invalid arguments; a GPU this library cannot use (built
// without CUDA, or no driver here) is ErrDevice with a message saying so; "cpu" loads.
func TestDevices(t *testing.T) {
	for _, bad := range []string{"gpu", "cuda:", "cuda:-1", "cuda:x", "CPU"} {
		if _, err := Load(fixture, &Options{Device: bad}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Device %q: got %v, want ErrInvalidArgument", bad, err)
		}
	}
	m, err := Load(fixture, &Options{Device: "cpu"})
	if err != nil {
		t.Fatalf("Device cpu: %v", err)
	}
	m.Close()
	for _, gpu := range []string{"cuda", "cuda:0"} {
		m, err := Load(fixture, &Options{Device: gpu})
		if err == nil {
			t.Logf("%s is usable here", gpu)
			m.Close()
			continue
		}
		if !errors.Is(err, ErrDevice) || !strings.Contains(err.Error(), "CUDA") {
			t.Fatalf("Device %q: got %v, want ErrDevice saying what is missing", gpu, err)
		}
		var e *Error
		if !errors.As(err, &e) || e.Code.String() != "EMCODER_ERR_DEVICE" {
			t.Fatalf("Device %q: code %#v", gpu, err)
		}
	}
}

func TestLabelsAndVersion(t *testing.T) {
	m := load(t)
	labels := m.Labels()
	if len(labels) != 28 || labels[0] != "admiration" || labels[27] != "neutral" {
		t.Fatalf("labels: %v", labels)
	}
	if Version() == "" {
		t.Fatal("empty version")
	}
	if headerABIVersion != 5 || libraryABIVersion() < headerABIVersion {
		t.Fatalf("ABI: header %d, library %d, want header 5", headerABIVersion, libraryABIVersion())
	}
}

// Precisions (ABI 5 adds int8): int8 predicts its own numbers, within 0.02 of f32's on the
// same texts and seed (the quantization error of this tiny random fixture), deterministically;
// with a GPU it is ErrDevice (int8 is CPU only); unknown names, and BF16 with another
// precision, are invalid arguments.
func TestPrecisions(t *testing.T) {
	opts := &PredictOptions{Samples: 20, Seed: 7}
	f32 := load(t)
	want, err := f32.Predict(bg, texts, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{{Precision: "int8"}, {Precision: "bf16"}, {BF16: true, Precision: "bf16"}, {BF16: true}, {Precision: "f32"}} {
		o.Threads = 2
		m, err := Load(fixture, &o)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		got, err := m.Predict(bg, texts, opts)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		again, err := m.Predict(bg, texts, opts)
		m.Close()
		if err != nil || !reflect.DeepEqual(got, again) {
			t.Fatalf("%+v: a second run differs (%v)", o, err)
		}
		bound := 0.01 // the documented bf16 bound
		if o.Precision == "int8" {
			bound = 0.02
		}
		worst := 0.0
		for i := range texts {
			for j, l := range got[i].Labels {
				worst = math.Max(worst, math.Abs(float64(l.Mean-want[i].Labels[j].Mean)))
			}
		}
		switch {
		case worst > bound:
			t.Fatalf("%+v: mean probabilities differ from f32 by %g (> %g)", o, worst, bound)
		case o.Precision == "f32" && worst != 0:
			t.Fatalf("Precision f32: differs from the default by %g", worst)
		case o.Precision != "f32" && worst == 0:
			t.Fatalf("%+v: f32's numbers bit for bit: the precision was not applied", o)
		}
	}
	if _, err := Load(fixture, &Options{Precision: "int8", Device: "cuda"}); !errors.Is(err, ErrDevice) ||
		!(strings.Contains(err.Error(), "int8") || strings.Contains(err.Error(), "CUDA")) {
		t.Fatalf("int8 on a GPU: got %v, want ErrDevice", err)
	}
	for _, bad := range []Options{{Precision: "i8"}, {Precision: "INT8"}, {Precision: "f16"},
		{BF16: true, Precision: "int8"}, {BF16: true, Precision: "f32"}} {
		if _, err := Load(fixture, &bad); !errors.Is(err, ErrInvalidArgument) ||
			!strings.Contains(err.Error(), "Precision") {
			t.Fatalf("%+v: got %v, want ErrInvalidArgument naming Precision", bad, err)
		}
	}
}

func TestPredictErrors(t *testing.T) {
	m := load(t)
	if _, err := m.Predict(bg, []string{"ok", "bad \x80 byte"}, nil); !errors.Is(err, ErrInvalidUTF8) {
		t.Fatalf("invalid UTF-8: got %v", err)
	}
	if _, err := m.Predict(bg, []string{"ok", "a\x00b"}, nil); !errors.Is(err, ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "texts[1]") {
		t.Fatalf("NUL byte: got %v", err)
	}
	if _, err := m.Predict(bg, []string{"ok"}, &PredictOptions{Samples: -3}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("negative samples: got %v", err)
	}
	long := strings.Repeat("a ", 5000)
	if _, err := m.Predict(bg, []string{long}, &PredictOptions{Deterministic: true}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("too long: got %v", err)
	}
	p, err := m.Predict(bg, []string{long}, &PredictOptions{Deterministic: true, Truncate: true})
	if err != nil || p[0].Tokens != 4096 || p[0].Samples != 0 || len(p[0].Logits) != 28 {
		t.Fatalf("truncate: %v %+v", err, p)
	}
	if p, err := m.Predict(bg, nil, nil); err != nil || len(p) != 0 {
		t.Fatalf("empty: %v %v", p, err)
	}
}

func TestDefaults(t *testing.T) {
	m := load(t)
	a, err := m.Predict(bg, []string{"ok"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Predict(bg, []string{"ok"}, &PredictOptions{Samples: 50, Seed: 42})
	if err != nil || !reflect.DeepEqual(a, b) || a[0].Samples != 50 || a[0].Logits != nil {
		t.Fatalf("nil options must be 50 samples, seed 42: %v", err)
	}
}

func TestClose(t *testing.T) {
	m, err := Load(fixture, &Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := m.Predict(bg, []string{"ok"}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: got %v", err)
	}
}

// A context cancelled before, cancelled during, or expiring during a call stops it with an
// error matching ErrCancelled and the context's error; the model keeps its numbers.
func TestContextCancellation(t *testing.T) {
	m := load(t)
	det := &PredictOptions{Deterministic: true}
	before, err := m.Predict(bg, texts, det)
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(bg)
	cancel()
	if _, err := m.Predict(done, []string{"ok"}, nil); !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: got %v", err)
	}

	// 16 texts x 402 tokens x 2000 samples: seconds of work, stopped after 50 ms.
	heavy := make([]string, 16)
	for i := range heavy {
		heavy[i] = strings.Repeat("a b ", 200)
	}
	many := &PredictOptions{Samples: 2000, Seed: 1}
	ctx, cancel := context.WithCancel(bg)
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err = m.Predict(ctx, heavy, many)
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel during the call: got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the cancelled call took %v", d)
	}

	ctx, cancel = context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel()
	_, err = m.Predict(ctx, heavy, many)
	// The library's timeout or the context's own timer stops it, whichever comes first.
	var e *Error
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.DeadlineExceeded) ||
		!errors.As(err, &e) || e.Code != CodeCancelled {
		t.Fatalf("deadline: got %v", err)
	}

	after, err := m.Predict(bg, texts, det)
	if err != nil || !reflect.DeepEqual(before, after) {
		t.Fatalf("the model changed after cancellations: %v", err)
	}
}

// Texts are read in place: substrings of one string give the numbers of separate strings.
func TestTextsInPlace(t *testing.T) {
	m := load(t)
	joined := strings.Join(texts, "")
	parts := make([]string, len(texts))
	at := 0
	for i, s := range texts {
		parts[i] = joined[at : at+len(s)]
		at += len(s)
	}
	opts := &PredictOptions{Samples: 4, Seed: 3}
	a, err := m.Predict(bg, parts, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Predict(bg, texts, opts)
	if err != nil || !reflect.DeepEqual(a, b) {
		t.Fatalf("substrings differ from the strings: %v", err)
	}
	if p, err := m.Predict(bg, []string{"", "ok"}, opts); err != nil || p[0].Tokens != 2 {
		t.Fatalf("empty text: %v %+v", err, p)
	}
}

// The load options of the library: the kernel level, the memory budget, copied weights.
func TestLoadOptionsAndMemoryBudget(t *testing.T) {
	if _, err := Load(fixture, &Options{ISA: "sse9"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unknown ISA: got %v", err)
	}
	m, err := Load(fixture, &Options{Threads: 2, ISA: "generic", MemoryBudget: 4 << 20,
		CopyWeights: true, RefuseNonFinite: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.ISA() != "generic" || m.MemoryBudget() != 4<<20 || m.ScratchBound() <= 4<<20 {
		t.Fatalf("ISA %q, budget %d, bound %d", m.ISA(), m.MemoryBudget(), m.ScratchBound())
	}
	if _, err := m.Predict(bg, []string{"ok"}, nil); err != nil {
		t.Fatal(err)
	}
	// 32 texts x 102 tokens x 50 samples: a whole chunk of scratch, over the budget.
	big := make([]string, 32)
	for i := range big {
		big[i] = strings.Repeat("a b ", 50)
	}
	_, err = m.Predict(bg, big, nil)
	if !errors.Is(err, ErrOutOfMemory) || !strings.Contains(err.Error(), "memory_budget") {
		t.Fatalf("over the budget: got %v", err)
	}
	if _, err := m.Predict(bg, []string{"ok"}, &PredictOptions{FailFastOnMemory: true, Samples: 5}); err != nil {
		t.Fatalf("after: %v", err)
	}
}

// 8 goroutines predict on one model at once; every result equals the serial run bit for bit.
func TestConcurrentPredictEqualsSerial(t *testing.T) {
	m := load(t)
	opts := &PredictOptions{Samples: 6, Seed: 7}
	serial := make([][]Prediction, len(texts))
	for i := range texts {
		p, err := m.Predict(bg, texts[i:i+1], opts)
		if err != nil {
			t.Fatal(err)
		}
		serial[i] = p
	}
	batch, err := m.Predict(bg, texts, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Batching changes results by float rounding at most (the C test checks the same).
	for i := range texts {
		for j, l := range batch[i].Labels {
			if d := math.Abs(float64(l.Mean - serial[i][0].Labels[j].Mean)); d > 1e-6 {
				t.Fatalf("text %d label %d: batch vs alone differ by %g", i, j, d)
			}
		}
	}
	const goroutines, rounds = 8, 4
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*rounds)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				i := (g + r) % len(texts)
				p, err := m.Predict(bg, texts[i:i+1], opts)
				if err != nil {
					errs <- err
				} else if !reflect.DeepEqual(p, serial[i]) {
					errs <- fmt.Errorf("goroutine %d round %d: text %d differs from the serial run", g, r, i)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Compares with the values of the Rust API, when scripts/test-bindings.sh provides them.
func TestMatchesRustAPI(t *testing.T) {
	path := os.Getenv("EMCODER_EXPECTED")
	if path == "" {
		t.Skip("EMCODER_EXPECTED not set (scripts/test-bindings.sh sets it)")
	}
	cases, labels := readExpected(t, path)
	m := load(t)
	if !reflect.DeepEqual(m.Labels(), labels) {
		t.Fatalf("labels differ: %v vs %v", m.Labels(), labels)
	}
	decided := false
	for _, c := range cases {
		opts := &PredictOptions{Samples: c.samples, Seed: c.seed, Deterministic: c.samples == 0,
			DecisionError: c.decisionError}
		got, err := m.Predict(bg, c.texts, opts)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range c.preds {
			g := got[i]
			if g.Tokens != want.Tokens || g.Samples != want.Samples || len(g.Labels) != len(want.Labels) {
				t.Fatalf("case %d text %d: %+v vs %+v", c.samples, i, g, want)
			}
			for j, w := range want.Labels {
				l := g.Labels[j]
				for _, d := range [][2]float32{{l.Mean, w.Mean}, {l.Std, w.Std}, {l.TotalEntropy, w.TotalEntropy}, {l.Aleatoric, w.Aleatoric}, {l.Epistemic, w.Epistemic}} {
					if math.Abs(float64(d[0]-d[1])) > 1e-6 {
						t.Fatalf("samples %d text %d label %d: %v vs %v", c.samples, i, j, l, w)
					}
				}
				if l.Predicted != w.Predicted {
					t.Fatalf("samples %d text %d label %d: predicted differs", c.samples, i, j)
				}
			}
			// The expected decision case has texts that stop early: their Samples (checked
			// above) and numbers differ from a run without DecisionError.
			if c.decisionError != 0 && g.Samples < c.samples {
				decided = true
			}
		}
	}
	if !decided {
		t.Fatal("the expected values have no decision_error case with a text that stopped early")
	}
}

// Sampling that stops on decisions: at most Samples, in blocks of 10; a text that never
// settles draws every sample and equals the fixed-N run; invalid values are ErrInvalidArgument.
func TestDecisionError(t *testing.T) {
	m := load(t)
	decide := &PredictOptions{Samples: 50, Seed: 42, DecisionError: 0.01}
	got, err := m.Predict(bg, texts, decide)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := m.Predict(bg, texts, &PredictOptions{Samples: 50, Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range got {
		if p.Samples < 10 || p.Samples > 50 || p.Samples%10 != 0 {
			t.Fatalf("text %d drew %d samples: want 10..50 in blocks of 10", i, p.Samples)
		}
		if p.Samples == 50 && !reflect.DeepEqual(p, fixed[i]) {
			t.Fatalf("text %d drew all 50 samples but differs from the fixed-N run", i)
		}
	}
	for _, bad := range []float64{-0.01, 1, 1.5, math.NaN(), math.Inf(1)} {
		_, err := m.Predict(bg, []string{"ok"}, &PredictOptions{Samples: 50, Seed: 42, DecisionError: bad})
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "decision_error") {
			t.Fatalf("DecisionError %v: got %v, want ErrInvalidArgument naming decision_error", bad, err)
		}
	}
}

// Adaptive sampling by tolerance: a loose one stops every text after its first block with the
// numbers of a fixed run of 10 (N is a prefix); one nobody meets draws all, as the fixed run;
// invalid values, and both rules at once, are ErrInvalidArgument.
func TestTolerance(t *testing.T) {
	m := load(t)
	run := func(o PredictOptions) []Prediction {
		t.Helper()
		o.Seed = 42
		got, err := m.Predict(bg, texts, &o)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	loose, ten := run(PredictOptions{Samples: 50, Tolerance: 1}), run(PredictOptions{Samples: 10})
	tight, fifty := run(PredictOptions{Samples: 50, Tolerance: 1e-9}), run(PredictOptions{Samples: 50})
	for i := range texts {
		if loose[i].Samples != 10 || !reflect.DeepEqual(loose[i], ten[i]) {
			t.Fatalf("text %d, loose tolerance: %d samples, want the fixed run of 10", i, loose[i].Samples)
		}
		if tight[i].Samples != 50 || !reflect.DeepEqual(tight[i], fifty[i]) {
			t.Fatalf("text %d, tight tolerance: %d samples, want the fixed run of 50", i, tight[i].Samples)
		}
	}
	for _, bad := range []PredictOptions{
		{Tolerance: -0.01}, {Tolerance: float32(math.NaN())}, {Tolerance: float32(math.Inf(1))},
		{Tolerance: 0.01, DecisionError: 0.01},
	} {
		_, err := m.Predict(bg, []string{"ok"}, &bad)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "tolerance") {
			t.Fatalf("%+v: got %v, want ErrInvalidArgument naming tolerance", bad, err)
		}
	}
}

type expectedCase struct {
	samples       int
	seed          uint64
	decisionError float64 // 0: off
	texts         []string
	preds         []Prediction
}

// readExpected parses the file of ffi/examples/expected_values.rs.
func readExpected(t *testing.T, path string) ([]expectedCase, []string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []expectedCase
	var labels []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "label":
			labels = append(labels, strings.TrimPrefix(sc.Text(), "label "))
		case "case":
			if len(fields) != 5 {
				t.Fatalf("bad expected line %q", sc.Text())
			}
			s, _ := strconv.Atoi(fields[1])
			seed, _ := strconv.ParseUint(fields[2], 10, 64)
			de, err := strconv.ParseFloat(fields[4], 64)
			if err != nil {
				t.Fatal(err)
			}
			cases = append(cases, expectedCase{samples: s, seed: seed, decisionError: de})
		case "text":
			if len(fields) != 4 {
				t.Fatalf("bad expected line %q", sc.Text())
			}
			c := &cases[len(cases)-1]
			n, _ := strconv.Atoi(fields[1])
			drawn, _ := strconv.Atoi(fields[2])
			b, err := hex.DecodeString(fields[3])
			if err != nil {
				t.Fatal(err)
			}
			c.texts = append(c.texts, string(b))
			c.preds = append(c.preds, Prediction{Tokens: n, Samples: drawn})
		case "stat":
			p := &cases[len(cases)-1].preds[len(cases[len(cases)-1].preds)-1]
			v := make([]float32, 5)
			for i := range v {
				x, err := strconv.ParseFloat(fields[i+1], 32)
				if err != nil {
					t.Fatal(err)
				}
				v[i] = float32(x)
			}
			p.Labels = append(p.Labels, LabelStats{Mean: v[0], Std: v[1], TotalEntropy: v[2],
				Aleatoric: v[3], Epistemic: v[4], Predicted: fields[6] == "1"})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases, labels
}

// The soak pattern of tests/c/soak.c through the Go binding (run under -race by
// scripts/test-bindings.sh): 8 goroutines, for EMCODER_STRESS_SECONDS (default 3), share one
// model and predict random (text, options) pairs, some under a deadline or a cancelled
// context, some with invalid UTF-8, and now and then load, use and close a model of their own.
// Every result equals the serial one bit for bit, every failure is the expected one, and no
// goroutine hangs.
func TestStressLikeAService(t *testing.T) {
	secs := 3.0
	if s := os.Getenv("EMCODER_STRESS_SECONDS"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			t.Fatalf("EMCODER_STRESS_SECONDS=%q: want a positive number of seconds", s)
		}
		secs = v
	}
	m := load(t)
	configs := []PredictOptions{
		{Deterministic: true}, {Samples: 1, Seed: 9}, {Samples: 5, Seed: 7}, {Samples: 20, Seed: 42},
	}
	pool := append([]string{""}, texts...)
	serial := make([][][]Prediction, len(configs))
	for c := range configs {
		serial[c] = make([][]Prediction, len(pool))
		for i := range pool {
			p, err := m.Predict(bg, pool[i:i+1], &configs[c])
			if err != nil {
				t.Fatalf("serial config %d text %d: %v", c, i, err)
			}
			serial[c][i] = p
		}
	}

	const goroutines = 8
	var (
		wg       sync.WaitGroup
		calls    [goroutines]int
		mu       sync.Mutex
		failures []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := uint64(g)*0x9E3779B97F4A7C15 + 1
			next := func(n int) int {
				rng ^= rng << 13
				rng ^= rng >> 7
				rng ^= rng << 17
				return int(rng % uint64(n))
			}
			for ; time.Now().Before(end); calls[g]++ {
				c, i := next(len(configs)), next(len(pool))
				want := serial[c][i]
				switch op := next(20); {
				case op < 12: // shared model, no deadline
					p, err := m.Predict(bg, pool[i:i+1], &configs[c])
					if err != nil || !reflect.DeepEqual(p, want) {
						fail("goroutine %d: config %d text %d: differs from the serial run (err %v)", g, c, i, err)
					}
				case op < 15: // a deadline of 0-3 ms: finished equal to the serial run, or cancelled
					ctx, cancel := context.WithTimeout(bg, time.Duration(next(3000))*time.Microsecond)
					p, err := m.Predict(ctx, pool[i:i+1], &configs[c])
					cancel()
					if err != nil && !(errors.Is(err, ErrCancelled) && errors.Is(err, context.DeadlineExceeded)) {
						fail("goroutine %d: deadline: got %v, want ErrCancelled", g, err)
					} else if err == nil && !reflect.DeepEqual(p, want) {
						fail("goroutine %d: config %d text %d under a deadline: differs from the serial run", g, c, i)
					}
				case op < 16: // a context cancelled before the call
					ctx, cancel := context.WithCancel(bg)
					cancel()
					if _, err := m.Predict(ctx, pool[i:i+1], &configs[c]); !errors.Is(err, ErrCancelled) {
						fail("goroutine %d: cancelled context: got %v", g, err)
					}
				case op < 18: // invalid UTF-8 in the middle of a batch
					batch := []string{pool[i], "bad \xff\xfe byte", pool[0]}
					var e *Error
					if _, err := m.Predict(bg, batch, &configs[c]); !errors.As(err, &e) || e.Code != CodeInvalidUTF8 || e.Message == "" {
						fail("goroutine %d: invalid UTF-8: got %v", g, err)
					}
				default: // a model of its own: load, predict, close
					own, err := Load(fixture, &Options{Threads: 1 + next(2)})
					if err != nil {
						fail("goroutine %d: own model: %v", g, err)
						continue
					}
					p, err := own.Predict(bg, pool[i:i+1], &configs[c])
					if err != nil || !reflect.DeepEqual(p, want) {
						fail("goroutine %d: own model, config %d text %d: differs from the serial run (err %v)", g, c, i, err)
					}
					if err := own.Close(); err != nil {
						fail("goroutine %d: close: %v", g, err)
					}
				}
			}
		}(g)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Duration(secs*float64(time.Second)) + 120*time.Second):
		t.Fatalf("goroutines still running 120 s after the end of the run: a call hangs")
	}
	total := 0
	for g := range calls {
		if calls[g] == 0 {
			t.Errorf("goroutine %d finished no call", g)
		}
		total += calls[g]
	}
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d calls in %.0f s on %d goroutines", total, secs, goroutines)
}
