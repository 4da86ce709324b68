"""pytest tests of the ctypes binding (scripts/test-bindings.sh runs them).

EMCODER_EXPECTED, set by the script, names the values of the Rust API
(ffi/examples/expected_values.rs) that test_matches_rust_api compares against."""
import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import emcoder

FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "tiny-vocab-bf16"
TEXTS = ["I am so happy you are here!", "This is the worst day ever.",
         "Merci beaucoup 🙏 ça me touche énormément", "ok"]


@pytest.fixture(scope="module")
def model():
    with emcoder.Model(FIXTURE, threads=2) as m:
        yield m


def test_version_and_abi():
    assert emcoder.version()
    assert emcoder._lib.emcoder_abi_version() == emcoder.ABI_VERSION
    assert Path(emcoder.library_path()).name == "libemcoder.so"


def test_struct_layouts_match_the_header():
    # The sizes ffi/src/lib.rs and tests/c/test_emcoder.c assert for the C structs.
    assert ctypes.sizeof(emcoder._ModelParams) == 32
    assert ctypes.sizeof(emcoder._PredictOptions) == 24
    assert ctypes.sizeof(emcoder._LabelStats) == 24
    assert emcoder._ModelParams.device.offset == 16 and emcoder._ModelParams.max_rows.offset == 20


def test_labels(model):
    assert len(model.labels) == 28
    assert model.labels[0] == "admiration" and model.labels[-1] == "neutral"
    assert model.threads == 2


def read_expected(path):
    cases, labels = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        tag, _, rest = line.partition(" ")
        f = rest.split(" ")
        if tag == "label":
            labels.append(rest)
        elif tag == "case":
            cases.append({"samples": int(f[0]), "seed": int(f[1]), "texts": [], "preds": []})
        elif tag == "text":
            cases[-1]["texts"].append(bytes.fromhex(f[1]).decode("utf-8"))
            cases[-1]["preds"].append({"n_tokens": int(f[0]), "stats": [], "logits": None})
        elif tag == "stat":
            cases[-1]["preds"][-1]["stats"].append([float(x) for x in f[:5]] + [f[5] == "1"])
        elif tag == "logits":
            cases[-1]["preds"][-1]["logits"] = [float(x) for x in f]
    return cases, labels


def test_matches_rust_api(model):
    path = os.environ.get("EMCODER_EXPECTED")
    if not path:
        pytest.skip("EMCODER_EXPECTED not set (scripts/test-bindings.sh sets it)")
    cases, labels = read_expected(path)
    assert model.labels == labels
    for c in cases:
        preds = model.predict(c["texts"], samples=max(c["samples"], 1), seed=c["seed"],
                              deterministic=c["samples"] == 0)
        for got, want in zip(preds, c["preds"], strict=True):
            assert got.n_tokens == want["n_tokens"]
            assert got.samples == c["samples"]
            for s, w in zip(got.labels, want["stats"], strict=True):
                values = [s.mean, s.std, s.total_entropy, s.aleatoric, s.epistemic]
                assert values == pytest.approx(w[:5], abs=1e-6)
                assert s.predicted == w[5]
            if want["logits"] is None:
                assert got.logits is None
            else:
                assert got.logits == pytest.approx(want["logits"], abs=1e-6)


def test_load_errors():
    with pytest.raises(emcoder.EmcoderIOError) as e:
        emcoder.Model("/nonexistent/emcoder-model")
    assert isinstance(e.value, OSError) and e.value.code == -3
    assert e.value.code_name == "EMCODER_ERR_IO" and "/nonexistent/emcoder-model" in str(e.value)
    with pytest.raises(emcoder.InvalidArgumentError):
        emcoder.Model(FIXTURE, max_tokens=1)
    with pytest.raises(emcoder.InvalidArgumentError):
        emcoder.Model(FIXTURE, threads=-1)
    with pytest.raises(emcoder.EmcoderIOError):
        emcoder.Model(FIXTURE, tokenizer="/nonexistent/tokenizer.json")


def test_predict_errors(model):
    with pytest.raises(emcoder.InvalidUtf8Error) as e:
        model.predict(["fine", b"bad \x80 byte"])
    assert "texts[1]" in str(e.value) and isinstance(e.value, ValueError)
    with pytest.raises(emcoder.InvalidArgumentError):
        model.predict(["a\0b"])
    with pytest.raises(emcoder.InvalidArgumentError):
        model.predict(["ok"], samples=0)
    with pytest.raises(TypeError):
        model.predict("one text, not a list")
    long = "a " * 5000
    with pytest.raises(emcoder.InvalidArgumentError, match="4096"):
        model.predict([long], deterministic=True)
    [p] = model.predict([long], deterministic=True, truncate=True)
    assert p.n_tokens == 4096 and p.samples == 0 and len(p.logits) == 28
    assert model.predict([]) == []


def test_defaults_and_determinism(model):
    a = model.predict(["ok"])
    assert a[0].samples == emcoder.DEFAULT_SAMPLES and a[0].logits is None
    assert model.predict(["ok"], samples=50, seed=42) == a
    assert model.predict(["ok"], seed=43) != a
    assert all(isinstance(name, str) for name in a[0].predicted)


def test_threads_share_one_model(model):
    serial = [model.predict([t], samples=6, seed=9) for t in TEXTS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: model.predict([TEXTS[i % 4]], samples=6, seed=9),
                                range(32)))
    for i, r in enumerate(results):
        assert r == serial[i % 4]


def test_close():
    m = emcoder.Model(FIXTURE, threads=1)
    m.close()
    m.close()
    with pytest.raises(emcoder.InvalidArgumentError, match="closed"):
        m.predict(["ok"])


def test_panic_does_not_cross_the_boundary():
    err = ctypes.c_void_p()
    assert emcoder._lib.emcoder_debug_panic(ctypes.byref(err)) == emcoder.InternalError.code
    assert b"deliberate panic" in emcoder._lib.emcoder_error_message(err)
    emcoder._lib.emcoder_error_free(err)
