"""pytest tests of the ctypes binding (scripts/test-bindings.sh runs them).

EMCODER_EXPECTED, set by the script, names the values of the Rust API
(ffi/examples/expected_values.rs) that test_matches_rust_api compares against."""
import ctypes
import os
import threading
import time
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
    assert emcoder._lib.emcoder_abi_version() >= emcoder.ABI_VERSION == 5
    # libemcoder.so (checkout, system) or the copy inside an installed wheel
    assert Path(emcoder.library_path()).name.startswith(("libemcoder.so", "_libemcoder"))


def test_struct_layouts_match_the_header():
    # The sizes ffi/src/lib.rs and tests/c/test_emcoder.c assert for the C structs.
    assert ctypes.sizeof(emcoder._ModelParams) == 72
    assert ctypes.sizeof(emcoder._PredictOptions) == 56
    assert ctypes.sizeof(emcoder._LabelStats) == 24
    assert ctypes.sizeof(emcoder._Text) == 16
    assert emcoder._ModelParams.device.offset == 24 and emcoder._ModelParams.max_rows.offset == 28
    assert emcoder._ModelParams.memory_budget.offset == 40
    # ABI 4's device_index starts after the whole ABI 2 struct (64 bytes).
    assert emcoder._ModelParams.device_index.offset == 64
    assert emcoder._PredictOptions.cancel.offset == 24
    # ABI 3's field starts after the whole ABI 2 struct (48 bytes), not in its tail padding.
    assert emcoder._PredictOptions.decision_error.offset == 48
    # The init functions fill what this module knows, struct_size included.
    p, o = emcoder._model_params(), emcoder._predict_options()
    assert p.struct_size == 72 and p.max_tokens == 4096 and p.memory_budget == 0
    assert p.device == 0 and p.device_index == 0
    assert o.struct_size == 56 and o.n_samples == 50 and o.seed == 42 and not o.cancel
    assert o.tolerance == 0 and o.decision_error == 0
    # Initialized as an ABI 2 caller's 48 bytes: nothing written past them.
    old = emcoder._PredictOptions(decision_error=0.5)
    emcoder._lib.emcoder_predict_options_init(ctypes.byref(old), 48)
    assert old.struct_size == 48 and old.n_samples == 50 and old.decision_error == 0.5


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
            # case <n_samples> <seed> <n_texts> <decision_error (0: off)>
            cases.append({"samples": int(f[0]), "seed": int(f[1]),
                          "decision_error": float(f[3]) or None, "texts": [], "preds": []})
        elif tag == "text":
            # text <n_tokens> <samples drawn> <hex>
            cases[-1]["texts"].append(bytes.fromhex(f[2]).decode("utf-8"))
            cases[-1]["preds"].append({"n_tokens": int(f[0]), "drawn": int(f[1]), "stats": [],
                                       "logits": None})
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
    # The decision case has texts that stop early: a dropped option would fail below.
    assert any(c["decision_error"] and any(p["drawn"] < c["samples"] for p in c["preds"])
               for c in cases)
    for c in cases:
        preds = model.predict(c["texts"], samples=max(c["samples"], 1), seed=c["seed"],
                              deterministic=c["samples"] == 0,
                              decision_error=c["decision_error"])
        for got, want in zip(preds, c["preds"], strict=True):
            assert got.n_tokens == want["n_tokens"]
            assert got.samples == want["drawn"] <= c["samples"]
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


def test_int8_precision(model):
    """precision="int8" (ABI 5): its own numbers, within 0.02 of f32's on the same texts and
    seed (the quantization error of this tiny random fixture); CPU only."""
    with emcoder.Model(FIXTURE, threads=2, precision="int8") as q:
        got = q.predict(TEXTS, samples=20, seed=7)
        assert q.predict(TEXTS, samples=20, seed=7) == got  # deterministic, as f32
    want = model.predict(TEXTS, samples=20, seed=7)
    diffs = [abs(s.mean - t.mean) for g, w in zip(got, want, strict=True)
             for s, t in zip(g.labels, w.labels, strict=True)]
    assert max(diffs) <= 0.02
    assert max(diffs) > 0, "int8 gave f32's numbers bit for bit: the int8 path was not taken"
    assert [g.n_tokens for g in got] == [w.n_tokens for w in want]
    # A GPU with int8: a DeviceError (int8 is CPU only, or this build has no CUDA).
    with pytest.raises(emcoder.DeviceError, match="int8|CUDA"):
        emcoder.Model(FIXTURE, precision="int8", device="cuda")
    # Unknown names, and a bf16 flag that disagrees with the precision, are refused.
    with pytest.raises(emcoder.InvalidArgumentError, match="'f32', 'bf16' or 'int8'"):
        emcoder.Model(FIXTURE, precision="i8")
    with pytest.raises(emcoder.InvalidArgumentError, match="disagree"):
        emcoder.Model(FIXTURE, precision="int8", bf16=True)
    # The C value, and what a raw out-of-range value gets from the library.
    assert emcoder._PRECISIONS == {"f32": 0, "bf16": 1, "int8": 2}
    params, handle, err = emcoder._model_params(), ctypes.c_void_p(), ctypes.c_void_p()
    params.precision = 3
    code = emcoder._lib.emcoder_model_load(os.fsencode(FIXTURE), ctypes.byref(params),
                                           ctypes.byref(handle), ctypes.byref(err))
    assert code == emcoder.InvalidArgumentError.code and not handle
    assert b"EMCODER_PRECISION_INT8 (2)" in emcoder._lib.emcoder_error_message(err)
    emcoder._lib.emcoder_error_free(err)


def test_bulk_takes_every_precision():
    from emcoder import bulk

    [choices] = [a.choices for a in bulk.parser()._actions if a.dest == "precision"]
    assert tuple(choices) == tuple(emcoder._PRECISIONS)
    args = bulk.parser().parse_args(["--input", "in", "--output", "out", "--precision", "int8"])
    assert args.precision == "int8"


def test_predict_errors(model):
    with pytest.raises(emcoder.InvalidUtf8Error) as e:
        model.predict(["fine", b"bad \x80 byte"])
    assert "texts[1]" in str(e.value) and isinstance(e.value, ValueError)
    with pytest.raises(emcoder.InvalidArgumentError, match=r"texts\[1\]"):
        model.predict(["ok", "a\0b"])
    with pytest.raises(emcoder.InvalidUtf8Error):
        model.predict(["lone surrogate \udc80"])
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


def test_decision_error(model):
    """Sampling that stops on decisions: at most ``samples`` in blocks of 10, texts that never
    settle equal the fixed-N run; invalid values raise InvalidArgumentError."""
    got = model.predict(TEXTS, samples=50, seed=42, decision_error=0.01)
    fixed = model.predict(TEXTS, samples=50, seed=42)
    for g, f in zip(got, fixed, strict=True):
        assert 10 <= g.samples <= 50 and g.samples % 10 == 0
        if g.samples == 50:
            assert g == f
    for bad in (-0.01, 0, 1, 1.5, float("nan"), float("inf"), True, "0.01"):
        with pytest.raises(emcoder.InvalidArgumentError, match="decision_error"):
            model.predict(["ok"], decision_error=bad)
    with pytest.raises(emcoder.InvalidArgumentError, match="set one of them"):
        model.predict(["ok"], decision_error=0.01, tolerance=0.05)
    # In (0, 1), but 0 in the single precision the library uses: refused by the library.
    with pytest.raises(emcoder.InvalidArgumentError, match="single precision"):
        model.predict(["ok"], decision_error=1e-50)
    assert model.predict(["ok"], decision_error=None)[0].samples == 50


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


def heavy_texts():
    """16 texts of 402 tokens: with 2000 samples, seconds of work."""
    return ["a b " * 200] * 16


def test_cancel_flag_and_timeout(model):
    before = model.predict(TEXTS, deterministic=True)
    flag = emcoder.CancelFlag()
    flag.set()
    with pytest.raises(emcoder.CancelledError) as e:
        model.predict(["ok"], cancel=flag)
    assert e.value.code == -7 and e.value.code_name == "EMCODER_ERR_CANCELLED"
    flag.clear()
    assert len(model.predict(["ok"], cancel=flag)) == 1

    # Set by another Python thread while the call runs: only possible because ctypes released
    # the GIL for the call.
    timer = threading.Timer(0.05, flag.set)
    timer.start()
    start = time.monotonic()
    with pytest.raises(emcoder.CancelledError, match="cancelled"):
        model.predict(heavy_texts(), samples=2000, cancel=flag)
    assert time.monotonic() - start < 5
    timer.join()

    start = time.monotonic()
    with pytest.raises(emcoder.CancelledError, match="deadline"):
        model.predict(heavy_texts(), samples=2000, timeout=0.02)
    assert time.monotonic() - start < 5
    with pytest.raises(emcoder.InvalidArgumentError):
        model.predict(["ok"], timeout=float("nan"))
    with pytest.raises(TypeError):
        model.predict(["ok"], cancel=threading.Event())
    assert model.predict(TEXTS, deterministic=True) == before


def test_gil_is_released_during_predict(model):
    """Another Python thread keeps running while predict works."""
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    flag = emcoder.CancelFlag()
    t = threading.Thread(target=tick)
    t.start()
    time.sleep(0.01)
    threading.Timer(0.3, flag.set).start()
    n0 = len(ticks)
    with pytest.raises(emcoder.CancelledError):
        model.predict(heavy_texts(), samples=2000, cancel=flag)
    grew = len(ticks) - n0
    stop.set()
    t.join()
    assert grew >= 20, f"the other thread ran {grew} times in 0.3 s"


def test_texts_in_place_str_and_bytes(model):
    s = model.predict(TEXTS, samples=4, seed=5)
    b = model.predict([t.encode() for t in TEXTS], samples=4, seed=5)
    g = model.predict(t for t in TEXTS)  # any iterable
    assert s == b and len(g) == len(TEXTS)
    [empty] = model.predict([""], deterministic=True)
    assert empty.n_tokens == 2


def test_load_options_and_memory_budget():
    with pytest.raises(emcoder.InvalidArgumentError, match="sse9"):
        emcoder.Model(FIXTURE, isa="sse9")
    with emcoder.Model(FIXTURE, threads=2, isa="generic", memory_budget=4 << 20,
                       copy_weights=True, refuse_non_finite=True) as m:
        assert m.isa == "generic" and m.memory_budget == 4 << 20
        assert m.scratch_bound > m.memory_budget
        assert m.predict(["ok"], samples=3)[0].samples == 3
        with pytest.raises(emcoder.EmcoderMemoryError, match="memory_budget") as e:
            m.predict(["a b " * 50] * 32)  # a whole chunk of scratch: over 4 MiB
        assert isinstance(e.value, MemoryError)
        assert m.predict(["ok"], fail_fast_on_memory=True)[0].samples == 50


def test_log_callback():
    seen = []
    lock = threading.Lock()

    def log(level, message):
        with lock:
            seen.append((level, message))

    with pytest.raises(emcoder.InvalidArgumentError):
        emcoder.set_log_callback(log, 9)
    emcoder.set_log_callback(log, emcoder.LOG_DEBUG)
    try:
        with emcoder.Model(FIXTURE, threads=1) as m:
            m.predict(["hello there"])
    finally:
        emcoder.set_log_callback(None)
    assert any(level == emcoder.LOG_INFO and "budget" in msg for level, msg in seen), seen
    assert any(level == emcoder.LOG_DEBUG and "arena" in msg for level, msg in seen), seen
    n = len(seen)
    emcoder.Model(FIXTURE, threads=1).close()
    assert len(seen) == n


def test_stress_like_a_service(model):
    """The soak pattern of tests/c/soak.c through the binding: 8 Python threads, for
    EMCODER_STRESS_SECONDS (default 3), share one model and predict random (text, options)
    pairs, some under a timeout or a set CancelFlag, some with invalid UTF-8, and now and then
    load, use and close a model of their own. Every result equals the serial one, every
    failure is the expected one, and no thread hangs."""
    import random
    secs = float(os.environ.get("EMCODER_STRESS_SECONDS", "3"))
    assert secs > 0, "EMCODER_STRESS_SECONDS must be a positive number of seconds"
    configs = [dict(deterministic=True), dict(samples=1, seed=9), dict(samples=5, seed=7),
               dict(samples=20, seed=42)]
    pool = [""] + TEXTS
    serial = {(c, i): model.predict([pool[i]], **configs[c])
              for c in range(len(configs)) for i in range(len(pool))}
    end = time.monotonic() + secs
    calls = [0] * 8
    failures = []

    def worker(g):
        rng = random.Random(g)
        while time.monotonic() < end:
            calls[g] += 1
            c, i = rng.randrange(len(configs)), rng.randrange(len(pool))
            want, opts, text = serial[(c, i)], configs[c], [pool[i]]
            op = rng.randrange(20)
            try:
                if op < 12:
                    got = model.predict(text, **opts)
                    if got != want:
                        failures.append(f"thread {g}: config {c} text {i} differs from serial")
                elif op < 15:
                    try:
                        got = model.predict(text, timeout=rng.uniform(0, 0.003), **opts)
                        if got != want:
                            failures.append(f"thread {g}: config {c} text {i} under a timeout")
                    except emcoder.CancelledError:
                        pass
                elif op < 16:
                    flag = emcoder.CancelFlag()
                    flag.set()
                    try:
                        model.predict(text, cancel=flag, **opts)
                        failures.append(f"thread {g}: a set CancelFlag did not stop the call")
                    except emcoder.CancelledError:
                        pass
                elif op < 18:
                    try:
                        model.predict([pool[i], b"bad \xff\xfe byte", ""], **opts)
                        failures.append(f"thread {g}: invalid UTF-8 was accepted")
                    except emcoder.InvalidUtf8Error as e:
                        if not str(e):
                            failures.append(f"thread {g}: InvalidUtf8Error without a message")
                else:
                    with emcoder.Model(FIXTURE, threads=1 + rng.randrange(2)) as own:
                        if own.predict(text, **opts) != want:
                            failures.append(f"thread {g}: own model, config {c} text {i}")
            except Exception as e:  # anything else is a failure, reported with the op
                failures.append(f"thread {g} op {op}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(g,), daemon=True) for g in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, end - time.monotonic()) + 120)
    assert not any(t.is_alive() for t in threads), "a thread still runs 120 s after the end"
    assert not failures, failures[:20]
    assert all(calls), f"a thread finished no call: {calls}"
