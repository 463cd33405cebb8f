"""The local backend: one GGUF model with one context and one sequence, the Workbench's.

Owns: ``LlamaCppBackend`` — a ``LlamaModel`` (``backends.llama_engine``) loaded with the
user's ``LoadSettings``, the context the Workbench generates in (one sequence) and that
sequence's logits-engine surface (``tokenize, prepare, feed, logits, piece, token_bytes,
is_eog, n_ctx``, with prefix reuse). Labs make their own contexts on the same model with
``backend.model.context(...)``: the weights are loaded once. It never samples: the sampler
chain lives in ``app.core.sampling``.

Qt-free. Not thread-safe: one thread (the model worker) uses an instance; other threads use
their own contexts of ``backend.model``. ``llama_cpp`` is imported lazily (cheap to import).
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import LoadSettings
from .chat import apply_chat_template, chat_prompt
from .llama_engine import LOCAL_CAPABILITIES, LlamaModel, Sequence, local_capabilities
from .llama_runtime import cpu_features, gpu_offload_supported, llama_cpp_version, load_llama_cpp

__all__ = ["LlamaCppBackend", "gpu_offload_supported", "llama_cpp_version", "apply_chat_template", "chat_prompt",
           "load_llama_cpp", "cpu_features", "LOCAL_CAPABILITIES", "local_capabilities"]

class LlamaCppBackend(Sequence):
    """A loaded model and the Workbench's single-sequence context (see the module docstring)."""

    def __init__(self, path: str | os.PathLike | None = None, *, n_ctx: int = 2048, n_gpu_layers: int = 0,
                 n_threads: int | None = None, n_batch: int = 512, model: LlamaModel | None = None) -> None:
        owns = model is None
        if model is None:
            if path is None:
                raise ValueError("LlamaCppBackend needs a model file or a loaded model")
            model = LlamaModel(Path(path), LoadSettings(int(n_ctx), int(n_gpu_layers), int(n_threads or 0)))
        try:
            ctx = model.context(n_ctx=n_ctx, n_seq=1, n_batch=n_batch, n_threads=n_threads or None)
        except BaseException:
            if owns:
                model.close()
            raise
        super().__init__(ctx, 0)
        self._owns_model = owns
        self.path = model.path
        self.n_batch = ctx.n_batch
        self.metadata = model.metadata
        self.eos_token = model.eos_token
        from dataclasses import replace

        self._info = replace(model.info, n_ctx=ctx.n_ctx, n_threads=ctx.wanted_threads)

    @property
    def info(self):
        return self._info

    def close(self) -> None:
        ctx = getattr(self, "context", None)
        if ctx is not None:
            ctx.close()
        if getattr(self, "_owns_model", False):
            self.model.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "LlamaCppBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
