"""The Pythonic API (Model.load, NumPy results) and, with EMCODER_TEST_INSTALLED=1, the
installed package itself: its own libemcoder and bundled model, not the checkout's
(scripts/test-python-package.sh runs these against a wheel in a fresh virtual environment)."""

import os
import sys
import threading
import time
from pathlib import Path

import pytest

import emcoder

INSTALLED = os.environ.get("EMCODER_TEST_INSTALLED") == "1"
CHECKOUT = Path(__file__).resolve().parents[3]
TEXTS = ["I am so happy you are here!", "This is the worst day ever.", "ok",
         "Thank you so much, that was really kind of you."]


@pytest.fixture(scope="module")
def model():
    with emcoder.Model.load(threads=2) as m:
        yield m


def test_the_installed_package_is_self_contained():
    if not INSTALLED:
        pytest.skip("EMCODER_TEST_INSTALLED=1 tests the installed wheel")
    pkg = Path(emcoder.__file__).resolve().parent
    assert pkg != CHECKOUT / "bindings" / "python" / "emcoder", "imported from the source tree"
    assert "site-packages" in pkg.parts, pkg
    assert "EMCODER_LIB" not in os.environ and "EMCODER_MODEL" not in os.environ
    lib = Path(emcoder.library_path()).resolve()
    assert lib.parent == pkg and lib.name.startswith("_libemcoder"), lib
    model = Path(emcoder.default_model_path()).resolve()
    assert model == pkg / "models" / "emcoder-mini"
    assert (model / "model.safetensors").stat().st_size > 1_000_000
    assert (pkg / "py.typed").exists()


def test_versions_agree():
    assert emcoder.__version__ == emcoder.version()


def test_default_model_is_the_shipped_one(model):
    assert len(model.labels) == 28
    assert model.labels[0] == "admiration" and model.labels[-1] == "neutral"
    [p] = model.predict(["I am so happy you are here!"], samples=20, seed=1)
    # The shipped model reads this text as joy with high confidence (its README's example).
    assert "joy" in p.predicted


def test_numpy_arrays_equal_the_per_text_view(model):
    np = pytest.importorskip("numpy")
    preds = model.predict(TEXTS, samples=12, seed=7)
    assert isinstance(preds, emcoder.Predictions) and isinstance(preds, list)
    assert preds.labels == model.labels and len(preds) == len(TEXTS)
    fields = ("mean", "std", "total_entropy", "aleatoric", "epistemic")
    for f in fields:
        a = getattr(preds, f)
        assert a.shape == (len(TEXTS), 28) and a.dtype == np.float32, f
        want = np.array([[getattr(s, f) for s in p.labels] for p in preds], dtype=np.float64)
        # float32 holds the library's numbers exactly: no rounding on the way.
        assert (a.astype(np.float64) == want).all(), f
    assert preds.predicted.dtype == np.bool_
    assert (preds.predicted == np.array([[s.predicted for s in p.labels] for p in preds])).all()
    assert preds.n_tokens.tolist() == [p.n_tokens for p in preds]
    assert preds.samples.tolist() == [12] * len(TEXTS)
    assert ((preds.mean > 0) & (preds.mean < 1)).all() and (preds.std >= 0).all()
    # Per-text results do not depend on the batch: the second text alone, same seed.
    alone = model.predict([TEXTS[1]], samples=12, seed=7)
    assert (alone.mean[0] == preds.mean[1]).all() and (alone.std[0] == preds.std[1]).all()
    empty = model.predict([])
    assert empty == [] and empty.mean.shape == (0, 28)


def test_load_options_and_their_errors():
    with emcoder.Model.load(precision="bf16", threads=1) as bf, \
            emcoder.Model.load(precision="f32", threads=1) as f32:
        a = bf.predict(TEXTS, deterministic=True)
        b = f32.predict(TEXTS, deterministic=True)
        assert bf.threads == 1
        for x, y in zip(a, b):
            for s, t in zip(x.labels, y.labels):
                assert abs(s.mean - t.mean) < 0.01  # the documented bf16 bound
        # int8 (ABI 5) on the shipped model: its own numbers, close to f32's.
        with emcoder.Model.load(precision="int8", threads=1) as q:
            c = q.predict(TEXTS, deterministic=True)
        deltas = [abs(s.mean - t.mean) for x, y in zip(c, b) for s, t in zip(x.labels, y.labels)]
        assert 0 < max(deltas) < 0.02
    # A GPU this libemcoder cannot use (the wheel is built without CUDA; or no driver): a
    # DeviceError saying so. Malformed device names are invalid arguments.
    try:
        emcoder.Model.load(device="cuda").close()
    except emcoder.DeviceError as e:
        assert "CUDA" in str(e) and e.code == -8
    for bad in ("gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:\u0663"):
        with pytest.raises(emcoder.InvalidArgumentError, match="use 'cpu', 'cuda'"):
            emcoder.Model.load(device=bad)
    with pytest.raises(emcoder.InvalidArgumentError, match="precision 'f16'.*'int8'"):
        emcoder.Model.load(precision="f16")
    with pytest.raises(TypeError, match="precision='bf16'"):
        emcoder.Model.load(bf16=True)
    with pytest.raises(emcoder.EmcoderIOError, match="/no/such/model"):
        emcoder.Model.load("/no/such/model")


def test_default_model_can_be_redirected_and_is_explained_when_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("EMCODER_MODEL", str(tmp_path / "elsewhere"))
    assert emcoder.default_model_path() == str(tmp_path / "elsewhere")
    with pytest.raises(emcoder.EmcoderIOError, match="elsewhere"):
        emcoder.Model.load()
    monkeypatch.delenv("EMCODER_MODEL")
    monkeypatch.setattr(emcoder, "_HERE", tmp_path / "a" / "b" / "c" / "emcoder")
    with pytest.raises(emcoder.EmcoderIOError, match="Model.load\\('path/to/model'\\)"):
        emcoder.default_model_path()


def test_adaptive_sampling(model):
    preds = model.predict(TEXTS, samples=200, seed=3, tolerance=0.05)
    assert all(10 <= p.samples <= 200 and p.samples % 10 == 0 for p in preds)
    assert any(p.samples < 200 for p in preds)  # 0.05 is loose: some text stops early
    for bad in (0, -1, float("nan"), float("inf"), "0.1"):
        with pytest.raises(emcoder.InvalidArgumentError, match="tolerance"):
            model.predict(["ok"], tolerance=bad)


def test_stopping_on_decisions(model):
    np = pytest.importorskip("numpy")
    preds = model.predict(TEXTS, samples=50, seed=3, decision_error=0.01)
    assert preds.samples.dtype == np.int64
    assert preds.samples.tolist() == [p.samples for p in preds]
    assert all(10 <= p.samples <= 50 and p.samples % 10 == 0 for p in preds)
    # The shipped model is confident on these texts: their decisions settle before 50.
    assert any(p.samples < 50 for p in preds)
    fixed = model.predict(TEXTS, samples=50, seed=3)
    for d, f in zip(preds, fixed):
        if d.samples == 50:  # never settled: the fixed-N samples and numbers
            assert d == f
    for bad in (0, -0.01, 1, float("nan"), "0.01"):
        with pytest.raises(emcoder.InvalidArgumentError, match="decision_error"):
            model.predict(["ok"], decision_error=bad)
    with pytest.raises(emcoder.InvalidArgumentError, match="set one of them"):
        model.predict(["ok"], tolerance=0.05, decision_error=0.01)


def test_threads_predict_in_parallel_with_the_gil_released(model):
    """While one thread predicts, Python code in another thread keeps running: ctypes drops
    the GIL for the call."""
    ticks, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        start = time.perf_counter()
        model.predict(TEXTS * 8, samples=100, seed=1)
        busy = time.perf_counter() - start
    finally:
        stop.set()
        t.join()
    # A held GIL would let the spinner run only in the interpreter's 5 ms switch slots
    # before and after the call; it ran through the whole call instead.
    assert busy > 0.02 and ticks[0] > 10_000, (busy, ticks[0])


def test_fork_child_gets_an_error_not_a_hang(model):
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the model's worker threads did not survive the fork
        try:
            model.predict(["ok"], samples=2)
            msg = b"no error"
        except emcoder.InvalidArgumentError as e:
            msg = str(e).encode()[:200]
        except BaseException as e:  # noqa: BLE001
            msg = repr(e).encode()[:200]
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    got = os.read(r, 400).decode()
    os.close(r)
    assert "load the model again in the child" in got, got
    assert len(model.predict(["ok"], samples=2)) == 1  # the parent's model still works


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
