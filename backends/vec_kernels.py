"""llama.cpp's own vector kernels for the sampler chain's one pass over the whole vocabulary.

Owns ``exp_sums``: for float32 ``y`` (the raw logits minus their maximum) the sums
``s = sum(exp(y))`` and ``d = sum(exp(y) * y)`` that give the log-sum-exp and the entropy of a
262,144-token distribution, computed by ggml-cpu's ``ggml_vec_soft_max_f32`` (SIMD ``expf``,
the sum accumulated in double) and ``ggml_vec_dot_f32``: the kernels llama.cpp's own softmax
runs on, from the ``libggml-cpu`` that the llama-cpp-python wheel ships and every local model
already loads. numpy needs three passes and a temporary for the same two numbers (0.25 against
0.11 ms a step here, for 262,144 logits).

These two functions are exported by ``libggml-cpu`` but declared in its internal ``vec.h``, not
in a public header, so nothing here trusts a prototype: the library is checked once, on first
use, against numpy on a fixed vector (a length that is not a multiple of any SIMD width, an
entry at -1e30), and when a symbol is missing, a check fails, or
``SAMPLESCOPE_NUMPY_KERNELS=1`` is set, ``exp_sums`` returns None and the caller computes the
sums with numpy (``kernel_note`` says which and why). The values agree with numpy's float32
arithmetic to about 1e-6 relative (measured: entropy within 1e-7 nats on a 262,144-logit test
vector, both 5e-6 from float64); the chain never uses them where llama.cpp's rounding decides which tokens are kept.

Qt-free; any thread (the scratch buffer is per thread; loading is locked).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from pathlib import Path

import numpy as np

__all__ = ["exp_sums", "kernel_note"]

_F32 = np.float32
_lock = threading.Lock()
_loaded = False
_kernels: tuple | None = None  # (soft_max, dot) once checked
_note = ""
_local = threading.local()


def _library_names() -> list[str]:
    if sys.platform == "win32":
        return ["ggml-cpu.dll"]
    if sys.platform == "darwin":
        return ["libggml-cpu.dylib"]
    return ["libggml-cpu.so"]


def _library_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("LLAMA_CPP_LIB_PATH")  # llama-cpp-python's own override
    if env:
        dirs.append(Path(env))
    spec = importlib.util.find_spec("llama_cpp")  # found, not imported
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(Path(p) / "lib" for p in spec.submodule_search_locations)
    return dirs


def _open() -> tuple | None:
    global _note
    for d in _library_dirs():
        for name in _library_names():
            path = d / name
            if not path.is_file():
                continue
            try:
                lib = ctypes.CDLL(str(path))
                sm, dot = lib.ggml_vec_soft_max_f32, lib.ggml_vec_dot_f32
            except (OSError, AttributeError) as exc:
                _note = f"numpy: {path.name} has no usable vector kernels ({exc})"
                return None
            sm.restype = ctypes.c_double
            sm.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float]
            dot.restype = None
            dot.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            return sm, dot
    _note = "numpy: llama.cpp's libggml-cpu was not found (a build with CPU variants, or none)"
    return None


def _numpy_sums(y: np.ndarray) -> tuple[float, float]:
    e = np.exp(y.astype(np.float64))
    return float(e.sum()), float(np.dot(e, np.where(e > 0, y.astype(np.float64), 0.0)))


def _check(kernels: tuple) -> str:
    """"" when the kernels give numpy's sums on a fixed vector, else what differed."""
    rng = np.random.default_rng(12345)
    y = rng.normal(-6.0, 3.0, 4099).astype(_F32)  # not a multiple of 4, 8 or 16
    y[:4] = (0.0, -0.5, -1e30, -1.0)
    y = np.minimum(y, _F32(0.0))
    got = _run(kernels, y)
    want = _numpy_sums(y)
    for g, w, what in zip(got, want, ("sum of exp", "sum of exp * y")):
        if not (abs(g - w) <= 1e-5 * abs(w)):
            return f"its {what} was {g!r}, numpy's {w!r}"
    return ""


def _run(kernels: tuple, y: np.ndarray) -> tuple[float, float]:
    sm, dot = kernels
    n = y.shape[0]
    buf = getattr(_local, "buf", None)
    if buf is None or buf.shape[0] < n:
        buf = _local.buf = np.empty(max(n, 1024), dtype=_F32)
        _local.out = ctypes.c_float()
    out = _local.out
    s = sm(n, buf.ctypes.data, y.ctypes.data, 0.0)
    # exp(-inf) is 0 but 0 * -inf is NaN: -inf entries give a NaN d (the caller's sign to clean them)
    dot(n, ctypes.addressof(out), 0, buf.ctypes.data, 0, y.ctypes.data, 0, 1)
    return float(s), float(out.value)


def _load() -> tuple | None:
    global _loaded, _kernels, _note
    with _lock:
        if not _loaded:
            if os.environ.get("SAMPLESCOPE_NUMPY_KERNELS") == "1":
                _note = "numpy: SAMPLESCOPE_NUMPY_KERNELS=1"
            else:
                k = _open()
                if k is not None:
                    why = _check(k)
                    if why:
                        _note = f"numpy: llama.cpp's vector kernels failed their check ({why})"
                    else:
                        _kernels, _note = k, "llama.cpp's ggml-cpu vector kernels"
            _loaded = True
    return _kernels


def exp_sums(y: np.ndarray) -> tuple[float, float] | None:
    """``(sum(exp(y)), sum(exp(y) * y))`` for a contiguous float32 1-D ``y`` with no value above
    0, or None when llama.cpp's kernels are not available (compute them with numpy then). As in
    numpy, a NaN in ``y`` makes both sums NaN and a -inf makes the second NaN (0 * -inf)."""
    k = _kernels if _loaded else _load()
    if k is None or y.dtype != _F32 or y.ndim != 1 or not y.flags.c_contiguous or y.shape[0] >= 2**31:
        return None
    return _run(k, y)


def kernel_note() -> str:
    """Which arithmetic ``exp_sums`` uses, and why when it is numpy's."""
    _load()
    return _note
