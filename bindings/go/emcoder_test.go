package emcoder

import (
	"bufio"
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
)

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

func TestLabelsAndVersion(t *testing.T) {
	m := load(t)
	labels := m.Labels()
	if len(labels) != 28 || labels[0] != "admiration" || labels[27] != "neutral" {
		t.Fatalf("labels: %v", labels)
	}
	if Version() == "" {
		t.Fatal("empty version")
	}
}

func TestPredictErrors(t *testing.T) {
	m := load(t)
	if _, err := m.Predict([]string{"ok", "bad \x80 byte"}, nil); !errors.Is(err, ErrInvalidUTF8) {
		t.Fatalf("invalid UTF-8: got %v", err)
	}
	if _, err := m.Predict([]string{"a\x00b"}, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("NUL byte: got %v", err)
	}
	if _, err := m.Predict([]string{"ok"}, &PredictOptions{Samples: -3}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("negative samples: got %v", err)
	}
	long := strings.Repeat("a ", 5000)
	if _, err := m.Predict([]string{long}, &PredictOptions{Deterministic: true}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("too long: got %v", err)
	}
	p, err := m.Predict([]string{long}, &PredictOptions{Deterministic: true, Truncate: true})
	if err != nil || p[0].Tokens != 4096 || p[0].Samples != 0 || len(p[0].Logits) != 28 {
		t.Fatalf("truncate: %v %+v", err, p)
	}
	if p, err := m.Predict(nil, nil); err != nil || len(p) != 0 {
		t.Fatalf("empty: %v %v", p, err)
	}
}

func TestDefaults(t *testing.T) {
	m := load(t)
	a, err := m.Predict([]string{"ok"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Predict([]string{"ok"}, &PredictOptions{Samples: 50, Seed: 42})
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
	if _, err := m.Predict([]string{"ok"}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: got %v", err)
	}
}

// 8 goroutines predict on one model at once; every result equals the serial run bit for bit.
func TestConcurrentPredictEqualsSerial(t *testing.T) {
	m := load(t)
	opts := &PredictOptions{Samples: 6, Seed: 7}
	serial := make([][]Prediction, len(texts))
	for i := range texts {
		p, err := m.Predict(texts[i:i+1], opts)
		if err != nil {
			t.Fatal(err)
		}
		serial[i] = p
	}
	batch, err := m.Predict(texts, opts)
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
				p, err := m.Predict(texts[i:i+1], opts)
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
	for _, c := range cases {
		opts := &PredictOptions{Samples: c.samples, Seed: c.seed, Deterministic: c.samples == 0}
		got, err := m.Predict(c.texts, opts)
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
		}
	}
}

type expectedCase struct {
	samples int
	seed    uint64
	texts   []string
	preds   []Prediction
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
			s, _ := strconv.Atoi(fields[1])
			seed, _ := strconv.ParseUint(fields[2], 10, 64)
			cases = append(cases, expectedCase{samples: s, seed: seed})
		case "text":
			c := &cases[len(cases)-1]
			n, _ := strconv.Atoi(fields[1])
			b, err := hex.DecodeString(fields[2])
			if err != nil {
				t.Fatal(err)
			}
			c.texts = append(c.texts, string(b))
			c.preds = append(c.preds, Prediction{Tokens: n, Samples: c.samples})
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
