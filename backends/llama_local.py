"""A local GGUF model through llama.cpp's low-level C API (llama-cpp-python bindings).

Owns: ``LlamaCppBackend``: loading a model (n_gpu_layers, n_ctx, n_threads) with checks that
turn llama.cpp failures into ``ModelLoadError`` messages; the model card; tokenizing; the KV
cache of one sequence with prefix reuse (``prepare``); evaluating one token at a time
(``feed``) and exposing that position's logits as a numpy view (``logits``). It never
samples: the sampler chain lives in ``app.core.sampling``.

Qt-free. Not thread-safe: exactly one thread (the model worker) may use an instance.
``llama_cpp`` is imported lazily so that importing this module is cheap.
"""

from __future__ import annotations

import collections
import ctypes
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import (Capabilities, ChatPrompt, GenerationError, LoadSettings, ModelInfo, ModelLoadError,
                   PromptTooLongError)
from .models import check_gguf
from .text import clean_text

__all__ = ["LlamaCppBackend", "gpu_offload_supported", "llama_cpp_version", "apply_chat_template", "chat_prompt",
           "load_llama_cpp", "cpu_features"]

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


#: Why extra buffer types are off on this machine ("" when they are on); shown on the model card.
EXTRA_BUFFERS_NOTE = ""


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
    global EXTRA_BUFFERS_NOTE
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

    default_params._samplescope_patched = True
    low.llama_model_default_params = default_params
    llama_cpp.llama_model_default_params = default_params
    EXTRA_BUFFERS_NOTE = ("AMX weight repacking is off: llama.cpp's AMX kernels crash on this CPU "
                          "(llama.cpp issue 20824)")


def gpu_offload_supported() -> bool:
    """Whether this llama-cpp-python build can offload layers to a GPU."""
    return bool(_llama().llama_supports_gpu_offload())


def llama_cpp_version() -> str:
    import llama_cpp

    return getattr(llama_cpp, "__version__", "unknown")


def apply_chat_template(template: str | bytes, messages: Sequence[dict]) -> str:
    """Format ``messages`` ({"role", "content"} dicts) with a chat template through llama.cpp's
    ``llama_chat_apply_template`` (which recognises the common template families), adding the
    opening of the assistant's turn. GenerationError when llama.cpp does not know the template."""
    ll = _llama()
    tmpl = template.encode("utf-8") if isinstance(template, str) else template
    keep = [(str(m["role"]).encode("utf-8"), str(m["content"]).encode("utf-8")) for m in messages]
    arr = (ll.llama_chat_message * len(keep))()
    for i, (role, content) in enumerate(keep):
        arr[i].role = role
        arr[i].content = content
    size = 1024
    while True:
        buf = ctypes.create_string_buffer(size)
        n = ll.llama_chat_apply_template(tmpl, arr, len(keep), True, buf, size)
        if n < 0:
            raise GenerationError("llama.cpp does not recognise this model's chat template; use the "
                                  "completion style.")
        if n < size:
            return buf.raw[:n].decode("utf-8", errors="replace")
        size = n + 1


def chat_prompt(template: str | bytes, messages: Sequence[dict]) -> ChatPrompt:
    """``apply_chat_template`` as a ``ChatPrompt`` that knows which parts are the template's.

    The template is applied twice: to the real messages (the text) and to messages whose
    contents are unique placeholders (the template's own parts are what lies between them).
    The text is then cut into template parts and contents by walking both in order, each
    content matched by its known length (templates may trim it), never by searching for the
    next marker: a content that contains ``<end_of_turn>`` cannot end its own turn early."""
    messages = [{"role": str(m["role"]), "content": clean_text(m["content"])} for m in messages]
    text = apply_chat_template(template, messages)
    marks = [f"\x1fsamplescope-content-{i}\x1f" for i in range(len(messages))]
    skeleton = apply_chat_template(template, [{"role": m["role"], "content": k} for m, k in zip(messages, marks)])
    parts: list[tuple[str, bool]] = []
    pos = 0
    rest = skeleton
    for m, k in zip(messages, marks):
        head, sep, rest = rest.partition(k)
        if not sep or not text.startswith(head, pos):
            raise GenerationError("This model's chat template changes message texts in a way Samplescope "
                                  "cannot follow; use the completion style.")
        parts.append((head, True))
        pos += len(head)
        content = m["content"]
        for variant in (content, content.strip(), content.lstrip(), content.rstrip(), ""):
            if text.startswith(variant, pos):
                break
        parts.append((variant, False))
        pos += len(variant)
    if text[pos:] != rest:
        raise GenerationError("This model's chat template changes message texts in a way Samplescope "
                              "cannot follow; use the completion style.")
    parts.append((rest, True))
    return ChatPrompt(tuple(p for p in parts if p[0]))


def _last_log_error() -> str:
    for line in reversed(_log_tail):
        low = line.lower()
        if "error" in low or "failed" in low or "invalid" in low:
            return line
    return ""


class LlamaCppBackend:
    """One loaded GGUF model and one llama.cpp context with a single sequence."""

    capabilities = Capabilities(
        full_logits=True, sampler_stages=True, step_mode=True, top_n_max=200, seed=True
    )

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_ctx: int = 2048,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        n_batch: int = 512,
    ) -> None:
        path = Path(path)
        try:
            LoadSettings(int(n_ctx), int(n_gpu_layers), int(n_threads or 0)).validate()
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path.name} was not loaded: {exc}.") from None
        check_gguf(path)
        ll = _llama()
        self._ll = ll
        self.path = path
        n_threads = n_threads or min(4, os.cpu_count() or 1)
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = int(n_gpu_layers)
        _log_tail.clear()
        model = ll.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not model:
            detail = _last_log_error()
            raise ModelLoadError(
                f"llama.cpp could not load {path.name}"
                + (f": {detail}" if detail else "")
                + ". The file may be damaged or use an architecture this llama-cpp-python "
                f"build ({llama_cpp_version()}) does not support."
            )
        self._model = model
        self._vocab = ll.llama_model_get_vocab(model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        n_ctx_train = int(ll.llama_model_n_ctx_train(model))
        if n_ctx <= 0:
            n_ctx = n_ctx_train
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = int(n_ctx)
        cparams.n_batch = int(min(n_batch, n_ctx))
        cparams.n_ubatch = int(min(n_batch, n_ctx))
        cparams.n_seq_max = 1
        cparams.n_threads = int(n_threads)
        cparams.n_threads_batch = int(n_threads)
        if hasattr(cparams, "swa_full"):
            cparams.swa_full = True  # keep every position so prefix reuse can cut anywhere
        ctx = ll.llama_init_from_model(model, cparams)
        if not ctx:
            ll.llama_model_free(model)
            self._model = None
            detail = _last_log_error()
            raise ModelLoadError(
                f"llama.cpp could not create a context of {n_ctx} tokens for {path.name}"
                + (f": {detail}" if detail else "")
                + ". Try a smaller context size."
            )
        self._ctx = ctx
        self.n_ctx = int(ll.llama_n_ctx(ctx))
        self.n_batch = int(cparams.n_batch)
        self._batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self._mem = ll.llama_get_memory(ctx)
        self._tokens: list[int] = []  # what the KV cache holds, in order
        self._has_logits = False
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self.info = self._read_info(n_gpu_layers, n_threads, n_ctx_train)
        self.eos_token = self.info.eos_token

    # ----------------------------------------------------------------- model card
    def _meta(self) -> dict[str, str]:
        ll = self._ll
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(4096)
        for i in range(int(ll.llama_model_meta_count(self._model))):
            n = ll.llama_model_meta_key_by_index(self._model, i, buf, len(buf))
            if n < 0:
                continue
            key = buf.value.decode("utf-8", errors="replace")
            n = ll.llama_model_meta_val_str_by_index(self._model, i, buf, len(buf))
            if n < 0:
                continue
            out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    def _read_info(self, n_gpu_layers: int, n_threads: int, n_ctx_train: int) -> ModelInfo:
        ll = self._ll
        meta = self._meta()
        self.metadata = meta
        buf = ctypes.create_string_buffer(256)
        ll.llama_model_desc(self._model, buf, len(buf))
        desc = buf.value.decode("utf-8", errors="replace")  # e.g. "gemma3 270M Q4_K - Medium"
        arch = meta.get("general.architecture", desc.split(" ")[0] if desc else "unknown")
        parts = desc.split(" ", 2)
        size_label = meta.get("general.size_label") or (parts[1] if len(parts) > 1 else "")
        quant = parts[2] if len(parts) > 2 else ""
        tmpl = None
        try:
            tmpl = ll.llama_model_chat_template(self._model, None)
        except Exception:  # older bindings
            tmpl = meta.get("tokenizer.chat_template")
        self._chat_template = tmpl or None
        bos = int(ll.llama_vocab_bos(self._vocab))
        eos = int(ll.llama_vocab_eos(self._vocab))
        n_layers = int(ll.llama_model_n_layer(self._model))
        n_gpu = n_layers + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layers + 1)
        return ModelInfo(
            path=str(self.path),
            name=meta.get("general.name") or self.path.stem,
            architecture=arch,
            size_label=size_label,
            quantization=quant,
            n_vocab=self.n_vocab,
            n_ctx_train=n_ctx_train,
            n_layers=n_layers,
            file_size=self.path.stat().st_size,
            has_chat_template=bool(tmpl),
            n_ctx=self.n_ctx,
            n_gpu_layers=n_gpu if gpu_offload_supported() else 0,
            n_threads=n_threads,
            gpu_offload_supported=gpu_offload_supported(),
            bos_token=bos if bos >= 0 else None,
            eos_token=eos if eos >= 0 else None,
        )

    def format_chat(self, messages: Sequence[dict]) -> ChatPrompt:
        """``messages`` in the model's own chat template, ending where the assistant's answer
        begins, as a ``ChatPrompt``: tokenize it with ``parse_special=True`` and only the
        template's own markers become control tokens (a message that contains
        ``<end_of_turn>`` stays text). GenerationError for a model without a chat template (a
        base model such as the embedded Gemma 3 270M: use completion-style prompts)."""
        tmpl = getattr(self, "_chat_template", None)
        if not tmpl:
            raise GenerationError(
                f"{self.info.name} has no chat template (it is a base model): use the completion style, "
                "or load an instruct model."
            )
        return chat_prompt(tmpl, messages)

    # ----------------------------------------------------------------- tokens
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds the model's BOS; ``parse_special`` reads
        control-token names as those tokens: for a ``ChatPrompt`` only in the template's own
        parts (message contents stay text), for a plain string everywhere. Without it they are
        plain text. Text that is not valid Unicode (lone surrogates) is cleaned first."""
        if parse_special and isinstance(text, ChatPrompt):
            out: list[int] = []
            for i, (part, is_template) in enumerate(text.parts):
                if part:
                    out += self._tokenize(part, add_special and not out, is_template)
            return out if out or not add_special else self._tokenize("", True, False)
        return self._tokenize(text, add_special, parse_special)

    def _tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = clean_text(text).encode("utf-8")
        n_max = len(data) + 8
        buf = (self._ll.llama_token * n_max)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (self._ll.llama_token * n_max)()
            n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        return list(buf[:n])

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        """The bytes a token stands for (may be part of a UTF-8 character). With ``special``
        control tokens render as their name (``<eos>``), otherwise as nothing."""
        key = (token, special)
        b = self._pieces.get(key)
        if b is None:
            buf = ctypes.create_string_buffer(64)
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._ll.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
            b = buf.raw[: max(n, 0)]
            self._pieces[key] = b
        return b

    def piece(self, token: int) -> str:
        """Display text of one token: its text, or ``<0xE2>``-style escapes for bytes that are
        not a whole UTF-8 character (never a replacement character)."""
        b = self.token_bytes(token, special=True)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<0x{x:02X}>" for x in b)

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self._vocab, token))

    # ----------------------------------------------------------------- evaluation
    @property
    def cached_tokens(self) -> tuple[int, ...]:
        return tuple(self._tokens)

    def prepare(self, tokens: Sequence[int]) -> int:
        """Make the KV cache hold exactly ``tokens`` and the logits be those after the last
        one. Tokens already in the cache as a common prefix are not evaluated again. Returns
        the number of reused tokens."""
        tokens = list(tokens)
        if not tokens:
            raise GenerationError("The prompt is empty: type something to continue from.")
        if len(tokens) >= self.n_ctx:
            raise PromptTooLongError(
                f"The prompt is {len(tokens):,} tokens but the context holds {self.n_ctx:,}. "
                "Shorten the prompt or load the model with a larger context."
            )
        n_common = 0
        for a, b in zip(self._tokens, tokens):
            if a != b:
                break
            n_common += 1
        if n_common == len(tokens):
            n_common -= 1  # the last token must be evaluated again to get its logits
        if n_common < len(self._tokens):
            ok = self._ll.llama_memory_seq_rm(self._mem, 0, n_common, -1)
            if not ok:
                self._ll.llama_memory_clear(self._mem, True)
                n_common = 0
            del self._tokens[n_common:]
        self._eval(tokens[n_common:])
        return n_common

    def feed(self, token: int) -> None:
        """Evaluate one more token at the next position; ``logits()`` then holds the next
        step's logits."""
        if len(self._tokens) >= self.n_ctx:
            raise PromptTooLongError(f"The context window ({self.n_ctx:,} tokens) is full.")
        self._eval([token])

    def _eval(self, tokens: list[int]) -> None:
        ll = self._ll
        batch = self._batch
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            last_chunk = start + self.n_batch >= len(tokens)
            pos0 = len(self._tokens)
            batch.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                batch.token[i] = t
                batch.pos[i] = pos0 + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = last_chunk and i == len(chunk) - 1
            rc = ll.llama_decode(self._ctx, batch)
            if rc != 0:
                self._has_logits = False
                # the cache state after a failed decode is unknown: start over next time
                ll.llama_memory_clear(self._mem, True)
                self._tokens.clear()
                if rc == 1:
                    raise PromptTooLongError(
                        f"llama.cpp found no room in the context ({self.n_ctx:,} tokens). "
                        "Load the model with a larger context or shorten the prompt."
                    )
                raise GenerationError(f"llama.cpp failed to evaluate tokens (llama_decode returned {rc}).")
            self._tokens.extend(chunk)
        self._has_logits = True

    def logits(self) -> np.ndarray:
        """The logits after the last evaluated token, as a read-only float32 view into
        llama.cpp's buffer. Valid until the next ``feed``/``prepare``; copy what you keep."""
        if not self._has_logits:
            raise GenerationError("No logits available: evaluate a prompt first.")
        ptr = self._ll.llama_get_logits_ith(self._ctx, -1)
        arr = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        arr.flags.writeable = False
        return arr

    def reset(self) -> None:
        self._ll.llama_memory_clear(self._mem, True)
        self._tokens.clear()
        self._has_logits = False

    # ----------------------------------------------------------------- lifetime
    def close(self) -> None:
        ll = getattr(self, "_ll", None)
        if ll is None:
            return
        if getattr(self, "_batch", None) is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            ll.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            ll.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "LlamaCppBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
