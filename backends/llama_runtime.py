"""llama.cpp in this process: loaded once, its log kept, its CPU kernels made safe.

Owns: ``load_llama_cpp`` (the ``llama_cpp`` module, initialised once: ``llama_backend_init``,
the log routed into a small buffer shown in error messages instead of the terminal, and the
CPU workaround below), ``last_log_error``, ``cpu_features``, ``gpu_offload_supported``,
``llama_cpp_version`` and ``extra_buffers_note``. Every road to llama.cpp in the project starts
here; only ``backends`` imports ``llama_cpp``. Qt-free; any thread (initialisation is locked).
"""

from __future__ import annotations

import collections
import ctypes
import os
import threading

__all__ = ["load_llama_cpp", "last_log_error", "clear_log", "cpu_features", "gpu_offload_supported",
           "llama_cpp_version", "extra_buffers_note"]

_init_lock = threading.Lock()
_initialised = False
_log_tail: collections.deque[str] = collections.deque(maxlen=40)
_log_callback = None  # keep the ctypes callback alive


def _llama():
    """Import llama_cpp, initialise the backend once, and route its log into a small buffer
    (shown in error messages) instead of the terminal."""
    global _initialised, _log_callback
    import llama_cpp

    with _init_lock:
        if not _initialised:
            llama_cpp.llama_backend_init()

            @llama_cpp.llama_log_callback
            def _cb(level, text, user_data):  # noqa: ARG001
                try:
                    msg = text.decode("utf-8", errors="replace").strip()
                except Exception:  # pragma: no cover
                    return
                if msg:
                    _log_tail.append(msg)

            if not os.environ.get("SAMPLESCOPE_LLAMA_VERBOSE"):
                _log_callback = _cb
                llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            _avoid_broken_cpu_kernels(llama_cpp)
            _initialised = True
    return llama_cpp


def load_llama_cpp():
    """The ``llama_cpp`` module, initialised once with Samplescope's log routing and CPU
    workarounds. Every road to llama.cpp in this project starts here."""
    return _llama()


def cpu_features() -> str:
    """llama.cpp's own line of the CPU features this build uses (``AVX2 = 1 | AMX_INT8 = 1 ...``)."""
    raw = _llama().llama_print_system_info()
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)


_extra_buffers_note = ""


def extra_buffers_note() -> str:
    """Why llama.cpp's extra buffer types are off on this machine ("" when they are on)."""
    _llama()
    return _extra_buffers_note


def _avoid_broken_cpu_kernels(llama_cpp) -> None:
    """Turn llama.cpp's "extra buffer types" (weight repacking) off on CPUs with AMX.

    On Sapphire-Rapids-class processors (``AMX_INT8 = 1``) a build compiled for the native CPU
    repacks Q4_K weights into an AMX buffer, and the first ``llama_decode`` then crashes the
    process inside ``ggml_backend_amx_mul_mat`` (llama.cpp issue 20824, closed unfixed; seen here
    with llama-cpp-python 0.3.36 on the embedded model). ``llama_model_params.use_extra_bufts``
    (checked against this libllama's ``llama.h``: the six booleans after ``kv_overrides``) keeps
    the weights in plain CPU buffers; the build is otherwise unchanged. Every model opened in this
    process goes through ``llama_model_default_params``, llama-cpp-python's ``Llama`` class
    included, so the default is patched there once. ``SAMPLESCOPE_EXTRA_BUFFERS=1`` keeps them.
    """
    global _extra_buffers_note
    if os.environ.get("SAMPLESCOPE_EXTRA_BUFFERS") == "1":
        return
    raw = llama_cpp.llama_print_system_info()
    info = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    if "AMX_INT8 = 1" not in info:
        return
    import llama_cpp.llama_cpp as low

    original = low.llama_model_default_params
    if getattr(original, "_samplescope_patched", False):
        return

    def default_params():
        params = original()
        params.use_extra_bufts = False
        return params

    default_params._samplescope_patched = True  # type: ignore[attr-defined]
    low.llama_model_default_params = default_params
    llama_cpp.llama_model_default_params = default_params
    _extra_buffers_note = ("AMX weight repacking is off: llama.cpp's AMX kernels crash on this CPU "
                          "(llama.cpp issue 20824)")


def gpu_offload_supported() -> bool:
    """Whether this llama-cpp-python build can offload layers to a GPU."""
    return bool(_llama().llama_supports_gpu_offload())


def llama_cpp_version() -> str:
    import llama_cpp

    return getattr(llama_cpp, "__version__", "unknown")


def last_log_error() -> str:
    """The last line of llama.cpp's log that reads like an error ("" when none)."""
    for line in reversed(_log_tail):
        low = line.lower()
        if "error" in low or "failed" in low or "invalid" in low:
            return line
    return ""


def clear_log() -> None:
    """Forget llama.cpp's log so far (before an operation whose errors we want to quote)."""
    _log_tail.clear()
