"""Python binding (ctypes) of libemcoder, the native runtime of EmCoder: a 28-label emotion
classifier whose uncertainty comes from Monte-Carlo dropout.

    import emcoder
    with emcoder.Model("tests/fixtures/tiny-vocab-bf16") as model:
        [pred] = model.predict(["I am so happy you are here!"], samples=20)
        for label, s in zip(model.labels, pred.labels):
            print(label, s.mean, s.std)

The shared library is found through, in order: the EMCODER_LIB environment variable (a path to
libemcoder.so), the checkout this package sits in (target/release/libemcoder.so, after
`make lib`), then the system's library path. A Model is safe to use from many threads at once
(ctypes releases the GIL during predictions, so threads really run in parallel). Failures raise
EmcoderError (a subclass per code); results are plain Python objects copied out of the library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

__all__ = [
    "ABI_VERSION", "DEFAULT_SAMPLES", "DEFAULT_SEED", "EmcoderError", "InvalidArgumentError",
    "InvalidUtf8Error", "EmcoderIOError", "BadModelError", "EmcoderMemoryError", "InternalError",
    "LabelStats", "Prediction", "Model", "version", "library_path",
]

#: The C ABI version this module was written for (EMCODER_ABI_VERSION in emcoder.h).
ABI_VERSION = 1
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
    """EMCODER_ERR_OUT_OF_MEMORY: the request's buffers cannot be allocated."""
    code = -5


class InternalError(EmcoderError):
    """EMCODER_ERR_INTERNAL: a bug in libemcoder (a panic caught at the boundary)."""
    code = -6


_ERRORS = {c.code: c for c in (InvalidArgumentError, InvalidUtf8Error, EmcoderIOError,
                                BadModelError, EmcoderMemoryError, InternalError)}
_CODE_NAMES = {0: "EMCODER_OK", -1: "EMCODER_ERR_INVALID_ARGUMENT", -2: "EMCODER_ERR_INVALID_UTF8",
               -3: "EMCODER_ERR_IO", -4: "EMCODER_ERR_BAD_MODEL", -5: "EMCODER_ERR_OUT_OF_MEMORY",
               -6: "EMCODER_ERR_INTERNAL"}

# ---- The C API ----------------------------------------------------------------------------


class _ModelParams(ctypes.Structure):
    _fields_ = [("tokenizer_path", ctypes.c_char_p), ("n_threads", ctypes.c_uint32),
                ("max_tokens", ctypes.c_uint32), ("device", ctypes.c_uint32),
                ("max_rows", ctypes.c_uint32), ("precision", ctypes.c_uint32)]


class _PredictOptions(ctypes.Structure):
    _fields_ = [("n_samples", ctypes.c_uint32), ("seed", ctypes.c_uint64),
                ("truncate", ctypes.c_uint8), ("tolerance", ctypes.c_float)]


class _LabelStats(ctypes.Structure):
    _fields_ = [("mean", ctypes.c_float), ("std", ctypes.c_float),
                ("total_entropy", ctypes.c_float), ("aleatoric", ctypes.c_float),
                ("epistemic", ctypes.c_float), ("predicted", ctypes.c_uint8)]


def library_path() -> str:
    """The path of the libemcoder.so this module loads (see the module doc)."""
    env = os.environ.get("EMCODER_LIB")
    if env:
        return env
    repo = Path(__file__).resolve().parents[3] / "target" / "release" / "libemcoder.so"
    if repo.exists():
        return str(repo)
    found = ctypes.util.find_library("emcoder")
    if found:
        return found
    raise ImportError("libemcoder.so not found: run `make lib` in the emcoder checkout, "
                      "or set EMCODER_LIB=/path/to/libemcoder.so")


def _load_library() -> ctypes.CDLL:
    lib = ctypes.CDLL(library_path())
    P, c = ctypes.POINTER, ctypes
    sigs = {
        "emcoder_version": ([], c.c_char_p),
        "emcoder_abi_version": ([], c.c_uint32),
        "emcoder_error_code": ([c.c_void_p], c.c_int32),
        "emcoder_error_message": ([c.c_void_p], c.c_char_p),
        "emcoder_error_free": ([c.c_void_p], None),
        "emcoder_model_default_params": ([], _ModelParams),
        "emcoder_predict_default_options": ([], _PredictOptions),
        "emcoder_model_load": ([c.c_char_p, P(_ModelParams), P(c.c_void_p), P(c.c_void_p)], c.c_int32),
        "emcoder_model_free": ([c.c_void_p], None),
        "emcoder_model_num_labels": ([c.c_void_p], c.c_size_t),
        "emcoder_model_label": ([c.c_void_p, c.c_size_t], c.c_char_p),
        "emcoder_model_n_threads": ([c.c_void_p], c.c_uint32),
        "emcoder_predict": ([c.c_void_p, P(c.c_char_p), c.c_size_t, P(_PredictOptions),
                             P(c.c_void_p), P(c.c_void_p)], c.c_int32),
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
    if abi != ABI_VERSION:
        raise ImportError(f"{library_path()} has ABI version {abi}, this module expects "
                          f"{ABI_VERSION}: rebuild the library or update the binding")
    return lib


_lib = _load_library()


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


# ---- The model ----------------------------------------------------------------------------


class Model:
    """A loaded model; use it from any number of threads, then ``close()`` it (or use ``with``).

    ``Model(path, threads=0, max_tokens=0, tokenizer=None, max_rows=0)``: 0 means the
    library's default (all cores, 4096 tokens); ``tokenizer`` None means
    ``<path>/tokenizer.json`` when present, else the built-in tokenizer.
    """

    def __init__(self, path, *, threads: int = 0, max_tokens: int = 0,
                 tokenizer=None, max_rows: int = 0):
        params = _lib.emcoder_model_default_params()
        for name, v in (("threads", threads), ("max_tokens", max_tokens), ("max_rows", max_rows)):
            if not 0 <= v < 2**32:
                raise InvalidArgumentError(f"{name} {v} is out of range")
        params.n_threads = threads
        if max_tokens:
            params.max_tokens = max_tokens
        if max_rows:
            params.max_rows = max_rows
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

    @property
    def labels(self) -> List[str]:
        """Label names in id order (the order of ``Prediction.labels``)."""
        return list(self._labels)

    @property
    def threads(self) -> int:
        """Worker threads of the model's pool."""
        return _lib.emcoder_model_n_threads(self._live())

    def _live(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise InvalidArgumentError("the model is closed")
        return self._handle

    def predict(self, texts: Iterable[str], *, samples: int = DEFAULT_SAMPLES,
                seed: int = DEFAULT_SEED, deterministic: bool = False,
                truncate: bool = False) -> List[Prediction]:
        """Predicts every text; ``samples`` MC-dropout samples each (or one deterministic pass).

        Texts are ``str`` (encoded as UTF-8) or ``bytes`` (passed as is, so invalid UTF-8
        raises InvalidUtf8Error). An empty input gives an empty list.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("predict() takes a list of texts, not one text")
        data = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts]
        if not data:
            return []
        for i, t in enumerate(data):
            if b"\0" in t:
                raise InvalidArgumentError(f"text {i} contains a NUL byte")
        if not deterministic and not 1 <= samples < 2**32:
            raise InvalidArgumentError(f"samples {samples}: use 1 .. 2^32-1 (or deterministic=True)")
        if not 0 <= seed < 2**64:
            raise InvalidArgumentError(f"seed {seed} is out of range")
        opts = _lib.emcoder_predict_default_options()
        opts.n_samples = 0 if deterministic else samples
        opts.seed = seed
        opts.truncate = 1 if truncate else 0
        arr = (ctypes.c_char_p * len(data))(*data)
        out, err = ctypes.c_void_p(), ctypes.c_void_p()
        with self._cond:
            handle = self._live()
            self._busy += 1
        try:
            code = _lib.emcoder_predict(handle, arr, len(data), ctypes.byref(opts),
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

    def _copy(self, p: ctypes.c_void_p, n: int) -> List[Prediction]:
        nl = _lib.emcoder_prediction_num_labels(p)
        preds = []
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
