"""Python binding (ctypes) of libemcoder, the native runtime of EmCoder: a 28-label emotion
classifier whose uncertainty comes from Monte-Carlo dropout.

    import emcoder
    with emcoder.Model.load() as model:              # the bundled default model
        preds = model.predict(["I am so happy you are here!", "This is awful."], samples=50)
        preds.mean.shape                              # (2, 28) NumPy array, label-id order
        preds.predicted                               # (2, 28) bool array
        preds[0].predicted                            # ['joy', ...]: the per-text view
        for s in preds[0].labels:
            print(s.label, s.mean, s.std, s.epistemic)

``pip install ./bindings/python`` (or a wheel from ``pip wheel``) bundles libemcoder and the
default model (EmCoder-mini); ``Model.load("path/to/model")`` loads any other model folder.
The shared library is found through, in order: the EMCODER_LIB environment variable (a path to
libemcoder.so), the copy inside the installed package, the checkout this package sits in
(target/release/libemcoder.so, after `make lib`), then the system's library path.

Threads: a Model is safe to use from many threads at once, and ctypes releases the GIL while
the library predicts, so Python threads really run in parallel (each call also uses the
model's own worker threads), and another thread can cancel a running prediction. Fork: a model
loaded before ``os.fork()`` (``multiprocessing``'s "fork" start method) cannot predict in the
child (fork copies no worker threads; the call raises InvalidArgumentError saying so): load
models in the child, or use the "spawn" or "forkserver" start methods. Failures raise
EmcoderError (a subclass per code); results are copied out of the library.

Stopping a prediction: ``predict(..., timeout=0.5)`` (seconds) and/or
``predict(..., cancel=flag)`` with a ``CancelFlag`` that any thread may ``set()``; a stopped call
raises CancelledError within about one layer's work and the model stays usable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

__all__ = [
    "ABI_VERSION", "DEFAULT_SAMPLES", "DEFAULT_SEED", "EmcoderError", "InvalidArgumentError",
    "InvalidUtf8Error", "EmcoderIOError", "BadModelError", "EmcoderMemoryError", "InternalError",
    "CancelledError", "DeviceError", "CancelFlag", "LabelStats", "Prediction", "Model", "version",
    "library_path", "set_log_callback", "LOG_DEBUG", "LOG_INFO", "LOG_WARN", "Predictions",
    "default_model_path", "__version__",
]

#: Version of this package; the library it loads reports its own through version().
__version__ = "0.1.0"

#: The C ABI version this module was written for (EMCODER_ABI_VERSION in emcoder.h): the
#: library must be at least this version (newer ones serve it: the structs only grow).
ABI_VERSION = 5
#: Log levels of set_log_callback (EMCODER_LOG_* in emcoder.h).
LOG_DEBUG, LOG_INFO, LOG_WARN = 0, 1, 2
#: Defaults of the C API (EMCODER_DEFAULT_SAMPLES, EMCODER_DEFAULT_SEED).
DEFAULT_SAMPLES = 50
DEFAULT_SEED = 42

# ---- Errors -------------------------------------------------------------------------------


class EmcoderError(Exception):
    """An error of libemcoder: ``code`` (negative EMCODER_ERR_* value), ``code_name`` and the
    library's message as the exception text."""

    code = 0

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def code_name(self) -> str:
        return _CODE_NAMES.get(self.code, "EMCODER_ERR_UNKNOWN")


class InvalidArgumentError(EmcoderError, ValueError):
    """EMCODER_ERR_INVALID_ARGUMENT: bad option, empty/NUL input, text over max_tokens."""
    code = -1


class InvalidUtf8Error(EmcoderError, ValueError):
    """EMCODER_ERR_INVALID_UTF8: a text is not valid UTF-8."""
    code = -2


class EmcoderIOError(EmcoderError, OSError):
    """EMCODER_ERR_IO: a file or directory is missing or unreadable."""
    code = -3


class BadModelError(EmcoderError):
    """EMCODER_ERR_BAD_MODEL: a file of the model directory is invalid."""
    code = -4


class EmcoderMemoryError(EmcoderError, MemoryError):
    """EMCODER_ERR_OUT_OF_MEMORY: over the model's memory budget, or the system's memory."""
    code = -5


class InternalError(EmcoderError):
    """EMCODER_ERR_INTERNAL: a bug in libemcoder (a panic caught at the boundary)."""
    code = -6


class CancelledError(EmcoderError):
    """EMCODER_ERR_CANCELLED: the prediction's CancelFlag was set or its timeout passed."""
    code = -7


class DeviceError(EmcoderError):
    """EMCODER_ERR_DEVICE: the GPU cannot be used (a libemcoder without CUDA, or no NVIDIA
    driver, NVRTC, cuBLAS or such GPU); the message says what is missing."""
    code = -8


_ERRORS = {c.code: c for c in (InvalidArgumentError, InvalidUtf8Error, EmcoderIOError,
                                BadModelError, EmcoderMemoryError, InternalError, CancelledError,
                                DeviceError)}
_CODE_NAMES = {0: "EMCODER_OK", -1: "EMCODER_ERR_INVALID_ARGUMENT", -2: "EMCODER_ERR_INVALID_UTF8",
               -3: "EMCODER_ERR_IO", -4: "EMCODER_ERR_BAD_MODEL", -5: "EMCODER_ERR_OUT_OF_MEMORY",
               -6: "EMCODER_ERR_INTERNAL", -7: "EMCODER_ERR_CANCELLED", -8: "EMCODER_ERR_DEVICE"}

# ---- The C API ----------------------------------------------------------------------------


# The structs as this module knows them (ABI 5, whose layouts are those of ABI 4); each starts
# with struct_size, so a newer library reads only these fields.
class _ModelParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("tokenizer_path", ctypes.c_char_p),
                ("n_threads", ctypes.c_uint32), ("max_tokens", ctypes.c_uint32),
                ("device", ctypes.c_uint32), ("max_rows", ctypes.c_uint32),
                ("precision", ctypes.c_uint32), ("memory_budget", ctypes.c_uint64),
                ("isa", ctypes.c_char_p), ("copy_weights", ctypes.c_uint8),
                ("refuse_non_finite", ctypes.c_uint8), ("device_index", ctypes.c_uint64)]


class _PredictOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("n_samples", ctypes.c_uint32),
                ("seed", ctypes.c_uint64), ("truncate", ctypes.c_uint8),
                ("tolerance", ctypes.c_float), ("cancel", ctypes.POINTER(ctypes.c_int32)),
                ("timeout_ms", ctypes.c_uint64), ("fail_fast_on_memory", ctypes.c_uint8),
                # ABI 3: a double, so at offset 48, after the whole ABI 2 struct.
                ("decision_error", ctypes.c_double)]


class _Text(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_LogCallback = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_char_p, ctypes.c_void_p)


class _LabelStats(ctypes.Structure):
    _fields_ = [("mean", ctypes.c_float), ("std", ctypes.c_float),
                ("total_entropy", ctypes.c_float), ("aleatoric", ctypes.c_float),
                ("epistemic", ctypes.c_float), ("predicted", ctypes.c_uint8)]


_HERE = Path(__file__).resolve().parent


def _checkout() -> Path:
    """The checkout this module sits in, when it runs from one (bindings/python/emcoder)."""
    parents = _HERE.parents
    return parents[2] if len(parents) > 2 else _HERE


def _packaged(pattern: str) -> Optional[Path]:
    found = sorted(_HERE.glob(pattern))
    return found[0] if found else None


def library_path() -> str:
    """The path of the libemcoder.so this module loads (see the module doc)."""
    env = os.environ.get("EMCODER_LIB")
    if env:
        return env
    packaged = _packaged("_libemcoder*.so") or _packaged("_libemcoder*.dylib")
    if packaged is not None:
        return str(packaged)
    repo = _checkout() / "target" / "release" / "libemcoder.so"
    if repo.exists():
        return str(repo)
    found = ctypes.util.find_library("emcoder")
    if found:
        return found
    raise ImportError("libemcoder.so not found: install the package (pip install "
                      "./bindings/python in the emcoder checkout), run `make lib` in the "
                      "checkout, or set EMCODER_LIB=/path/to/libemcoder.so")


def default_model_path() -> str:
    """The folder of the default model: $EMCODER_MODEL, else the copy of EmCoder-mini bundled
    in the installed package, else the checkout's models/emcoder-mini. Raises EmcoderIOError
    when there is none."""
    env = os.environ.get("EMCODER_MODEL")
    if env:
        return env
    for p in (_HERE / "models" / "emcoder-mini", _checkout() / "models" / "emcoder-mini"):
        if (p / "model.safetensors").is_file():
            return str(p)
    raise EmcoderIOError(
        "no default model: this installation bundles none. Pass a model folder "
        "(Model.load('path/to/model'): config.json, model.safetensors, thresholds.json), set "
        "EMCODER_MODEL, or install the package from a wheel built by `pip wheel "
        "./bindings/python` in the emcoder checkout (it bundles models/emcoder-mini)", -3)


def _load_library() -> ctypes.CDLL:
    lib = ctypes.CDLL(library_path())
    P, c = ctypes.POINTER, ctypes
    sigs = {
        "emcoder_version": ([], c.c_char_p),
        "emcoder_abi_version": ([], c.c_uint32),
        "emcoder_error_code": ([c.c_void_p], c.c_int32),
        "emcoder_error_message": ([c.c_void_p], c.c_char_p),
        "emcoder_error_free": ([c.c_void_p], None),
        "emcoder_model_params_init": ([P(_ModelParams), c.c_uint32], None),
        "emcoder_predict_options_init": ([P(_PredictOptions), c.c_uint32], None),
        "emcoder_model_load": ([c.c_char_p, P(_ModelParams), P(c.c_void_p), P(c.c_void_p)], c.c_int32),
        "emcoder_model_free": ([c.c_void_p], None),
        "emcoder_model_num_labels": ([c.c_void_p], c.c_size_t),
        "emcoder_model_label": ([c.c_void_p, c.c_size_t], c.c_char_p),
        "emcoder_model_n_threads": ([c.c_void_p], c.c_uint32),
        "emcoder_model_scratch_bound": ([c.c_void_p], c.c_uint64),
        "emcoder_model_memory_budget": ([c.c_void_p], c.c_uint64),
        "emcoder_model_isa": ([c.c_void_p], c.c_char_p),
        "emcoder_predict": ([c.c_void_p, P(c.c_char_p), c.c_size_t, P(_PredictOptions),
                             P(c.c_void_p), P(c.c_void_p)], c.c_int32),
        "emcoder_predict_texts": ([c.c_void_p, P(_Text), c.c_size_t, P(_PredictOptions),
                                   P(c.c_void_p), P(c.c_void_p)], c.c_int32),
        "emcoder_set_log_callback": ([_LogCallback, c.c_void_p, c.c_int32], c.c_int32),
        "emcoder_prediction_free": ([c.c_void_p], None),
        "emcoder_prediction_num_texts": ([c.c_void_p], c.c_size_t),
        "emcoder_prediction_num_labels": ([c.c_void_p], c.c_size_t),
        "emcoder_prediction_n_samples": ([c.c_void_p, c.c_size_t], c.c_uint32),
        "emcoder_prediction_n_tokens": ([c.c_void_p, c.c_size_t], c.c_size_t),
        "emcoder_prediction_labels": ([c.c_void_p, c.c_size_t], P(_LabelStats)),
        "emcoder_prediction_logits": ([c.c_void_p, c.c_size_t], P(c.c_float)),
        "emcoder_debug_panic": ([P(c.c_void_p)], c.c_int32),
    }
    for name, (args, res) in sigs.items():
        f = getattr(lib, name)
        f.argtypes, f.restype = args, res
    abi = lib.emcoder_abi_version()
    if abi < ABI_VERSION:
        raise ImportError(f"{library_path()} has ABI version {abi}, this module needs at least "
                          f"{ABI_VERSION}: install a newer libemcoder")
    return lib


_lib = _load_library()


def _model_params() -> _ModelParams:
    p = _ModelParams()
    _lib.emcoder_model_params_init(ctypes.byref(p), ctypes.sizeof(p))
    return p


def _predict_options() -> _PredictOptions:
    o = _PredictOptions()
    _lib.emcoder_predict_options_init(ctypes.byref(o), ctypes.sizeof(o))
    return o


# Where CPython's str keeps its UTF-8 (no copy for ASCII; cached on the str otherwise).
try:
    _utf8_of = ctypes.pythonapi.PyUnicode_AsUTF8AndSize
    _utf8_of.argtypes = [ctypes.py_object, ctypes.POINTER(ctypes.c_ssize_t)]
    _utf8_of.restype = ctypes.c_void_p
except AttributeError:  # not CPython: encode instead
    _utf8_of = None


def _texts_array(texts: List[object]):
    """The texts as an array of (pointer, length) pointing into the Python objects themselves
    (str: its UTF-8 form, kept by the str; bytes: its buffer). The caller keeps `texts` alive
    for the call; objects that had to be encoded are returned with the array."""
    arr = (_Text * len(texts))()
    keep = []
    size = ctypes.c_ssize_t()
    for i, t in enumerate(texts):
        if isinstance(t, str):
            if _utf8_of is not None:
                try:
                    arr[i].data = _utf8_of(t, ctypes.byref(size))
                except UnicodeEncodeError as e:
                    raise InvalidUtf8Error(f"texts[{i}] cannot be UTF-8: {e}", -2) from None
                arr[i].len = size.value
                continue
            try:
                t = t.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidUtf8Error(f"texts[{i}] cannot be UTF-8: {e}", -2) from None
            keep.append(t)
        elif not isinstance(t, bytes):
            t = bytes(t)
            keep.append(t)
        arr[i].data = ctypes.cast(t, ctypes.c_void_p).value if t else None
        arr[i].len = len(t)
    return arr, keep


class CancelFlag:
    """A cancellation flag for ``Model.predict(..., cancel=flag)``: ``set()`` from any thread
    stops the predictions given it (they raise CancelledError within about one layer's work).
    The library only reads it: ``clear()`` it before reusing it. (An aligned 32-bit store,
    which is atomic on every platform the library runs on.)"""

    def __init__(self):
        self._value = ctypes.c_int32(0)

    def set(self) -> None:
        self._value.value = 1

    def clear(self) -> None:
        self._value.value = 0

    def is_set(self) -> bool:
        return self._value.value != 0


_log_state = {"callback": None}
_log_lock = threading.Lock()


def set_log_callback(fn, min_level: int = LOG_INFO) -> None:
    """Sends the library's log messages of ``min_level`` (LOG_DEBUG, LOG_INFO, LOG_WARN) and
    above to ``fn(level, message)``, or stops with ``fn=None``. Process-wide; off by default.
    ``fn`` runs on the library's threads (with the GIL taken for it), possibly on several at
    once; exceptions it raises are printed and dropped. It must not call into the model."""
    if min_level not in (LOG_DEBUG, LOG_INFO, LOG_WARN):
        raise InvalidArgumentError(f"min_level {min_level}: use LOG_DEBUG, LOG_INFO or LOG_WARN")
    with _log_lock:
        if fn is None:
            cb = _LogCallback()
        else:
            def trampoline(level, message, _user):
                try:
                    fn(level, message.decode("utf-8", "replace"))
                except Exception:  # nothing may unwind into the library
                    import traceback
                    traceback.print_exc()
            cb = _LogCallback(trampoline)
        code = _lib.emcoder_set_log_callback(cb, None, min_level)
        if code != 0:
            raise _ERRORS.get(code, EmcoderError)("emcoder_set_log_callback failed", code)
        # The library no longer calls the previous one: it may be collected.
        _log_state["callback"] = cb


def _raise(code: int, err: ctypes.c_void_p) -> None:
    """Raises the error of a failed call, freeing the C error object."""
    message = (_lib.emcoder_error_message(err) or b"").decode("utf-8", "replace")
    _lib.emcoder_error_free(err)
    raise _ERRORS.get(code, EmcoderError)(message, code)


def version() -> str:
    """The version of the loaded libemcoder, e.g. "0.1.0"."""
    return _lib.emcoder_version().decode()


# ---- Results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelStats:
    """Statistics of one label of one text over the MC samples."""
    label: str
    mean: float           #: mean sigmoid probability
    std: float            #: its standard deviation (N-1)
    total_entropy: float  #: H(mean), nats
    aleatoric: float      #: mean of H(p_s)
    epistemic: float      #: total - aleatoric
    predicted: bool       #: above the model's threshold


@dataclass(frozen=True)
class Prediction:
    """The result for one text."""
    n_tokens: int                   #: tokens, [CLS] and [SEP] included
    samples: int                    #: MC samples drawn; 0: deterministic pass
    labels: List[LabelStats]        #: one per label, in label-id order
    logits: Optional[List[float]]   #: deterministic predictions only

    @property
    def predicted(self) -> List[str]:
        """Names of the predicted labels."""
        return [s.label for s in self.labels if s.predicted]


class _StatArray:
    """A (texts, labels) NumPy array of one LabelStats field, as a property of Predictions."""

    def __init__(self, dtype: str, doc: str):
        self.dtype, self.__doc__ = dtype, doc

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, preds, owner=None):
        return self if preds is None else preds._stat(self.name, self.dtype)


class Predictions(list):
    """What ``Model.predict`` returns: a list of Prediction (the per-text view, in input
    order) that also gives every statistic as a NumPy array of shape (texts, labels), labels in
    ``labels`` order: ``mean``, ``std``, ``total_entropy``, ``aleatoric``, ``epistemic``
    (float32) and ``predicted`` (bool); ``n_tokens`` and ``samples`` are (texts,) int arrays.
    The arrays hold exactly the per-text view's numbers (float32, as the library computes
    them) and are built on first use (NumPy is needed only for them)."""

    def __init__(self, items=(), labels: Iterable[str] = ()):
        super().__init__(items)
        self.labels: List[str] = list(labels)
        self._arrays: dict = {}

    def _stat(self, field: str, dtype: str):
        if field not in self._arrays:
            import numpy as np
            a = np.array([[getattr(s, field) for s in p.labels] for p in self], dtype=dtype)
            self._arrays[field] = a.reshape(len(self), len(self.labels))
        return self._arrays[field]

    mean = _StatArray("float32", "Mean sigmoid probability, (texts, labels) float32.")
    std = _StatArray("float32", "Standard deviation over the samples, (texts, labels) float32.")
    total_entropy = _StatArray("float32", "Entropy of the mean (nats), (texts, labels) float32.")
    aleatoric = _StatArray("float32", "Mean per-sample entropy (nats), (texts, labels) float32.")
    epistemic = _StatArray("float32", "total_entropy - aleatoric (nats), (texts, labels) float32.")
    predicted = _StatArray("bool", "Above the model's threshold, (texts, labels) bool.")

    @property
    def n_tokens(self):
        """Tokens per text ([CLS] and [SEP] included), (texts,) int64."""
        import numpy as np
        return np.array([p.n_tokens for p in self], dtype="int64")

    @property
    def samples(self):
        """MC samples drawn per text (0: deterministic), (texts,) int64."""
        import numpy as np
        return np.array([p.samples for p in self], dtype="int64")


# ---- The model ----------------------------------------------------------------------------

#: Names of Model.load's precision and device arguments and their C ABI values.
_PRECISIONS = {"f32": 0, "bf16": 1, "int8": 2}
_DEVICE_CPU, _DEVICE_CUDA = 0, 1


def _device(name: str):
    """'cpu', 'cuda' or 'cuda:N' -> (EmcoderModelParams.device, device_index)."""
    if name == "cpu":
        return _DEVICE_CPU, 0
    if name == "cuda":
        return _DEVICE_CUDA, 0
    n = name[len("cuda:"):] if isinstance(name, str) and name.startswith("cuda:") else ""
    if n.isdigit() and n.isascii():
        return _DEVICE_CUDA, int(n)
    raise InvalidArgumentError(f"device {name!r}: use 'cpu', 'cuda' (GPU 0) or 'cuda:N'")



class Model:
    """A loaded model; use it from any number of threads, then ``close()`` it (or use ``with``).

    ``Model.load(path=None, threads=0, precision="f32", device="cpu", ...)`` is the usual way
    to get one (None: the default model, see ``default_model_path``).
    ``Model(path, threads=0, max_tokens=0, tokenizer=None, max_rows=0, bf16=False,
    memory_budget=0, isa=None, copy_weights=False, refuse_non_finite=False, precision=None,
    device="cpu")``: ``precision`` is "f32", "bf16" or "int8" (None: "bf16" when ``bf16``,
    else "f32"; see ``Model.load``); 0 means the library's default (all cores, 4096 tokens,
    16384 rows, a budget of twice ``scratch_bound``); ``tokenizer`` None means
    ``<path>/tokenizer.json`` when present, else the built-in tokenizer; ``isa`` names the
    kernels' instruction-set level ("generic", "avx2", ...; None: $EMCODER_ISA or the best);
    ``copy_weights`` reads the weights into memory instead of mapping the file (a mapped file
    replaced in place crashes the process); ``refuse_non_finite`` refuses weights holding NaN
    or infinity.
    """

    def __init__(self, path, *, threads: int = 0, max_tokens: int = 0,
                 tokenizer=None, max_rows: int = 0, bf16: bool = False,
                 memory_budget: int = 0, isa: Optional[str] = None,
                 copy_weights: bool = False, refuse_non_finite: bool = False,
                 precision: Optional[str] = None, device: str = "cpu"):
        if precision is None:
            precision = "bf16" if bf16 else "f32"
        elif precision not in _PRECISIONS:
            raise InvalidArgumentError(
                f"precision {precision!r}: use 'f32', 'bf16' or 'int8'")
        elif bf16 and precision != "bf16":
            raise InvalidArgumentError(
                f"bf16=True and precision {precision!r} disagree: pass only precision")
        device_code, device_index = _device(device)
        params = _model_params()
        for name, v in (("threads", threads), ("max_tokens", max_tokens), ("max_rows", max_rows)):
            if not 0 <= v < 2**32:
                raise InvalidArgumentError(f"{name} {v} is out of range")
        if not 0 <= memory_budget < 2**64:
            raise InvalidArgumentError(f"memory_budget {memory_budget} is out of range")
        params.n_threads = threads
        if max_tokens:
            params.max_tokens = max_tokens
        if max_rows:
            params.max_rows = max_rows
        params.precision = _PRECISIONS[precision]
        params.device = device_code
        params.device_index = device_index
        params.memory_budget = memory_budget
        params.copy_weights = 1 if copy_weights else 0
        params.refuse_non_finite = 1 if refuse_non_finite else 0
        if isa:
            params.isa = isa.encode("utf-8")
        if tokenizer is not None:
            params.tokenizer_path = os.fsencode(tokenizer)
        handle, err = ctypes.c_void_p(), ctypes.c_void_p()
        self._cond = threading.Condition()
        self._busy = 0  # predictions running; close() waits for them
        self._handle = None
        code = _lib.emcoder_model_load(os.fsencode(path), ctypes.byref(params),
                                       ctypes.byref(handle), ctypes.byref(err))
        if code != 0:
            _raise(code, err)
        self._handle = handle
        n = _lib.emcoder_model_num_labels(handle)
        self._labels = [_lib.emcoder_model_label(handle, i).decode() for i in range(n)]

    @classmethod
    def load(cls, path=None, *, threads: int = 0, precision: str = "f32",
             device: str = "cpu", **options) -> "Model":
        """Loads the model folder ``path`` (None: ``default_model_path()``, the bundled
        EmCoder-mini). ``threads``: worker threads (0: all cores); ``precision``: "f32",
        "bf16" (bf16 products with f32 accumulation) or "int8" (int8 weights per output
        channel, activations quantized per row, exact integer sums; CPU only: with a GPU it
        is a DeviceError; an int8 model folder of ``emcoder quantize`` loads with it as it is,
        the other precisions widen it); ``device``: "cpu", "cuda" or "cuda:N" (a
        GPU needs a libemcoder built with CUDA; DeviceError says what is missing). ``options`` are the
        constructor's other keywords (max_tokens, tokenizer, max_rows, memory_budget, isa,
        copy_weights, refuse_non_finite)."""
        if "bf16" in options:
            raise TypeError("Model.load takes precision='bf16', not bf16=True")
        return cls(default_model_path() if path is None else path, threads=threads,
                   precision=precision, device=device, **options)

    @property
    def labels(self) -> List[str]:
        """Label names in id order (the order of ``Prediction.labels``)."""
        return list(self._labels)

    @property
    def threads(self) -> int:
        """Worker threads of the model's pool."""
        return _lib.emcoder_model_n_threads(self._live())

    @property
    def scratch_bound(self) -> int:
        """The most scratch memory one call can use, in bytes, whatever its texts."""
        return _lib.emcoder_model_scratch_bound(self._live())

    @property
    def memory_budget(self) -> int:
        """The scratch memory budget of all running calls, in bytes."""
        return _lib.emcoder_model_memory_budget(self._live())

    @property
    def isa(self) -> str:
        """The instruction-set level of the kernels, e.g. "avx2"."""
        return _lib.emcoder_model_isa(self._live()).decode()

    def _live(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise InvalidArgumentError("the model is closed")
        return self._handle

    def predict(self, texts: Iterable[str], *, samples: int = DEFAULT_SAMPLES,
                seed: int = DEFAULT_SEED, deterministic: bool = False,
                truncate: bool = False, timeout: Optional[float] = None,
                cancel: Optional[CancelFlag] = None,
                fail_fast_on_memory: bool = False,
                tolerance: Optional[float] = None,
                decision_error: Optional[float] = None) -> Predictions:
        """Predicts every text; ``samples`` MC-dropout samples each (or one deterministic pass).

        Returns a Predictions: a list with one Prediction per text, in order, whose
        ``mean``, ``std``, ``total_entropy``, ``aleatoric``, ``epistemic`` and ``predicted``
        are (texts, labels) NumPy arrays. Results depend only on (model, text, samples, seed):
        not on the batch, the threads or the call. ``tolerance`` turns on adaptive sampling:
        a text stops once every label's mean has a standard error below it (samples drawn in
        blocks of 10, at most ``samples``; ``Prediction.samples`` says how many).
        ``decision_error`` (strictly between 0 and 1, e.g. 0.01) stops sampling on decisions
        instead: a text stops once every label's thresholded decision is settled at that error
        rate (per label, a z-test of the mean against the threshold, and of the std against
        the model's ``u`` bound where it has one, Bonferroni-corrected over the blocks of 10;
        at most ``samples``; ``Prediction.samples`` and ``Predictions.samples`` say how many
        each text drew). For each (text, label), the probability that the reported decision
        differs from that of the label's true mean is at most ``decision_error`` (normal
        approximation); a text whose decisions never settle draws all ``samples``, so its
        numbers are the fixed-N ones. Set ``tolerance`` or ``decision_error``, not both.
        ``truncate`` cuts texts longer than the model's ``max_tokens`` instead of raising.
        Texts are ``str`` (UTF-8) or ``bytes`` (passed as is, so invalid UTF-8 raises
        InvalidUtf8Error); the library reads them in place, without copies. A text containing
        a NUL character raises InvalidArgumentError. An empty input gives an empty list.
        ``timeout`` (seconds) and ``cancel`` (a CancelFlag set from another thread) stop the
        call with CancelledError; ``fail_fast_on_memory`` raises EmcoderMemoryError at once
        instead of waiting while the model's memory budget is taken by other calls. The GIL is
        released while the library works.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("predict() takes a list of texts, not one text")
        data = texts if isinstance(texts, list) else list(texts)
        if not data:
            return Predictions([], self._labels)
        if not deterministic and not 1 <= samples < 2**32:
            raise InvalidArgumentError(f"samples {samples}: use 1 .. 2^32-1 (or deterministic=True)")
        if not 0 <= seed < 2**64:
            raise InvalidArgumentError(f"seed {seed} is out of range")
        if cancel is not None and not isinstance(cancel, CancelFlag):
            raise TypeError("cancel must be an emcoder.CancelFlag")
        opts = _predict_options()
        opts.n_samples = 0 if deterministic else samples
        opts.seed = seed
        opts.truncate = 1 if truncate else 0
        opts.fail_fast_on_memory = 1 if fail_fast_on_memory else 0
        if tolerance is not None:
            if not (isinstance(tolerance, (int, float)) and tolerance > 0
                    and math.isfinite(tolerance)):
                raise InvalidArgumentError(f"tolerance {tolerance!r}: use a number > 0 "
                                           "(a standard error, e.g. 0.01), or None")
            opts.tolerance = tolerance
        if decision_error is not None:
            if not (isinstance(decision_error, (int, float))
                    and not isinstance(decision_error, bool) and 0 < decision_error < 1):
                raise InvalidArgumentError(f"decision_error {decision_error!r}: use an error "
                                           "rate strictly between 0 and 1 (e.g. 0.01), or None")
            if tolerance is not None:
                raise InvalidArgumentError("tolerance and decision_error are two stopping "
                                           "rules: set one of them")
            opts.decision_error = decision_error
        if timeout is not None:
            if math.isnan(timeout):
                raise InvalidArgumentError("timeout is NaN")
            # Whole milliseconds, rounded up; 0 or less is already over (1 ms), not "none".
            ms = math.ceil(max(timeout, 0.0) * 1000) if timeout < 1e15 else 2**64 - 1
            opts.timeout_ms = min(max(ms, 1), 2**64 - 1)
        if cancel is not None:
            opts.cancel = ctypes.pointer(cancel._value)
        arr, _keep = _texts_array(data)
        out, err = ctypes.c_void_p(), ctypes.c_void_p()
        with self._cond:
            handle = self._live()
            self._busy += 1
        try:
            code = _lib.emcoder_predict_texts(handle, arr, len(data), ctypes.byref(opts),
                                              ctypes.byref(out), ctypes.byref(err))
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()
        if code != 0:
            _raise(code, err)
        try:
            return self._copy(out, len(data))
        finally:
            _lib.emcoder_prediction_free(out)

    def _copy(self, p: ctypes.c_void_p, n: int) -> Predictions:
        nl = _lib.emcoder_prediction_num_labels(p)
        preds = Predictions([], self._labels)
        for i in range(n):
            stats = _lib.emcoder_prediction_labels(p, i)
            z = _lib.emcoder_prediction_logits(p, i)
            preds.append(Prediction(
                n_tokens=_lib.emcoder_prediction_n_tokens(p, i),
                samples=_lib.emcoder_prediction_n_samples(p, i),
                labels=[LabelStats(self._labels[j], s.mean, s.std, s.total_entropy,
                                   s.aleatoric, s.epistemic, bool(s.predicted))
                        for j, s in enumerate(stats[:nl])],
                logits=list(z[:nl]) if z else None,
            ))
        return preds

    def close(self) -> None:
        """Frees the model once running predictions finish; later calls raise
        InvalidArgumentError. Closing twice is a no-op."""
        with self._cond:
            if self._handle is None:
                return
            handle, self._handle = self._handle, None
            self._cond.wait_for(lambda: self._busy == 0)
        _lib.emcoder_model_free(handle)

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_handle", None) is not None and not self._busy:
                _lib.emcoder_model_free(self._handle)
                self._handle = None
        except Exception:  # interpreter shutdown
            pass
