"""The one road to llama.cpp: a loaded model, its contexts, and their sequences.

Owns: ``LlamaModel`` (one loaded GGUF file: vocabulary, tokenizer, chat template, model card;
shared by every context made from it), ``LlamaContext`` (one llama.cpp context: a KV cache
holding up to ``n_seq`` sequences, the batch that feeds it, the logits of the last decode),
``Sequence`` (one sequence of a context, seen through the small "logits engine" surface that
``app.core.session.GenerationSession`` drives), ``EmbeddingContext`` (mean-pooled embeddings
from the same model) and ``THREADS`` (the process's thread budget). The sampler chain is not
here: the engine gives logits, ``app.core.sampling`` samples.

The local engine contract
-------------------------
This docstring is the contract every caller relies on (as httpx's ``BaseTransport`` docstring is
for its transports).

``LlamaModel(path, LoadSettings)`` loads the weights once (``ModelLoadError`` with a sentence
for the user when it cannot). ``model.context(n_ctx=, n_seq=, n_batch=, keep_cells=)`` makes a
context; ``model.embedding_context()`` an embedding one. Text: ``tokenize(text, add_special=,
parse_special=)`` (a ``ChatPrompt`` parses control tokens only in the template's parts),
``token_bytes``, ``piece``, ``is_eog``, ``format_chat``. The model is freed when it has been
``close``d and its last context is closed.

A ``LlamaContext`` holds sequences 0 .. n_seq - 1 in ONE unified KV cache (``kv_unified``):
``fork(src, dst)`` tags ``src``'s cells with ``dst`` (a prompt forked to N sequences is stored
and evaluated once), ``truncate(seq, n)`` cuts a sequence back to its first ``n`` tokens
(branching, beams), ``retire(seq)`` frees a sequence id but keeps its cells occupied (with
``keep_cells=True`` the last sequence id is reserved for them: llama.cpp sums attention in cell
order, and refilling freed cells out of order moved log-probabilities by up to 0.01 nats), and
``prefill(seq, tokens)`` makes a sequence hold exactly ``tokens`` (the prefix it already holds
is reused; the rest is evaluated in one batch). ``feed(seq, token)`` queues one token; queued
tokens are decoded when a logits view is asked for: in the default exact mode each sequence's
token alone (the same batch shapes as a plain single-sequence run, so the same logits bit for
bit), with ``batched=True`` every queued token of the context in ONE ``llama_decode`` (much
faster for N parallel sequences; llama.cpp's multi-row kernels then move log-probabilities by
a little: measured and written in docs/BENCHMARKS.md). ``logits(seq)`` is a read-only float32
view of that sequence's next-token logits, valid until the next decode of this context (a
sequence whose logits were not read before another decode keeps a copy; logits already read are
gone after the next decode, so read them once). Positions always follow ``len(tokens)``: a
sequence's cells are contiguous in position.

``Sequence(ctx, seq)`` is one sequence as a ``LogitsEngine``: ``tokenize, prepare, feed,
logits, piece, token_bytes, is_eog, n_ctx, cached_tokens, reset`` plus ``model`` and
``context``. ``grammar`` (a ``backends.grammar.Grammar`` or None) is the constraint a session
on this sequence applies as a stage of its chain.

Errors: ``ModelLoadError`` (loading), ``PromptTooLongError`` (no room in the context),
``GenerationError`` (llama.cpp failed to decode; the context is cleared). Never a llama.cpp
crash for bad input: tokens, positions and sequence ids are checked before they reach C.

Threads: a model may serve contexts on several threads at once (llama.cpp allows it; the piece
cache is locked). A context and its sequences belong to the thread that uses them (the model
worker, a lab worker). ``THREADS`` shares the cores among the contexts decoding at the same time.

Over 500 lines on purpose: the contract above and the three classes that share llama.cpp's
context, batch and KV-cache state (model, context, sequence); splitting them would expose that
private C state across modules.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any
from typing import Sequence as Seq

import numpy as np

from .base import (Capabilities, ChatPrompt, GenerationError, LoadSettings, ModelInfo, ModelLoadError,
                   PromptTooLongError)
from .chat import chat_prompt
from .llama_runtime import (clear_log, gpu_offload_supported, last_log_error, llama_cpp_version,
                            load_llama_cpp)
from .models import check_gguf
from .text import clean_text

__all__ = ["LlamaModel", "LlamaContext", "Sequence", "EmbeddingContext", "ThreadBudget", "THREADS",
           "default_threads", "LOCAL_CAPABILITIES", "local_capabilities"]


def default_threads() -> int:
    """min(4, CPUs): llama.cpp's decode gains little past 4 threads on a laptop."""
    return max(1, min(4, os.cpu_count() or 1))


#: What a local model reveals: everything (``chat`` depends on the model: see ``local_capabilities``).
LOCAL_CAPABILITIES = Capabilities(full_logits=True, sampler_stages=True, step_mode=True, top_n_max=200, seed=True,
                                  kind="local", sequences=True, grammar=True, embeddings=True, token_ids=True,
                                  max_parallel=8, prompt_logprobs=True, layer_lens=True)


def local_capabilities(model) -> Capabilities:
    """A local model's capabilities: everything, chat when it has a chat template."""
    return dataclasses.replace(LOCAL_CAPABILITIES, chat=bool(model.chat_template))


class ThreadBudget:
    """The CPU threads llama.cpp may use, shared by the contexts of this process.

    llama.cpp's threads spin while they wait for each other: two contexts that each take every
    core collapse when they decode at the same time (seen: the Workbench at about 1 token/s beside
    a lab run). A context asks for its share before each decode: the budget divided by the
    contexts that decoded within the last ``window`` seconds (itself included), at least 1, at
    most what the context was created with. Contexts that work at the same time decode far more
    often than that (a step takes 25 ms, a batched round of 8 about 100 ms on 2 cores); one that
    stopped counts for another ``window`` at most (closing it forgets it at once). ``reserve`` cores are kept free for the window's
    drawing when several contexts are busy (the app sets 1 on machines with more than 2 cores;
    on 2, two busy contexts already get one core each, and the window's redraw pacer,
    ``app.redraw_pacer``, keeps its own drawing small; headless it is 0)."""

    def __init__(self, total: int | None = None, window: float = 0.25) -> None:
        self.total = int(total or (os.cpu_count() or 1))
        self.window = float(window)
        self.reserve = 0
        self._lock = threading.Lock()
        self._last: dict[int, float] = {}

    def share(self, ctx_id: int, wanted: int) -> int:
        now = time.monotonic()
        with self._lock:
            self._last[ctx_id] = now
            busy = sum(1 for t in self._last.values() if now - t <= self.window)
            room = self.total - (self.reserve if busy > 1 else 0)
            return max(1, min(int(wanted), room // max(1, busy)))

    def forget(self, ctx_id: int) -> None:
        with self._lock:
            self._last.pop(ctx_id, None)


THREADS = ThreadBudget()


class LlamaModel:
    """One loaded GGUF model (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, settings: LoadSettings = LoadSettings()) -> None:
        path = Path(path)
        try:
            settings.validate()
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path.name} was not loaded: {exc}.") from None
        check_gguf(path)
        ll = load_llama_cpp()
        self._ll = ll
        self.path = path
        self.settings = settings
        self.n_threads = int(settings.n_threads or default_threads())
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = int(settings.n_gpu_layers)
        clear_log()
        model = ll.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not model:
            detail = last_log_error()
            raise ModelLoadError(
                f"llama.cpp could not load {path.name}"
                + (f": {detail}" if detail else "")
                + ". The file may be damaged or use an architecture this llama-cpp-python "
                f"build ({llama_cpp_version()}) does not support."
            )
        self._model = model
        self._vocab = ll.llama_model_get_vocab(model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        self.n_ctx_train = int(ll.llama_model_n_ctx_train(model))
        self.n_embd = int(ll.llama_model_n_embd(model))
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._piece_text: dict[int, str] = {}  # token -> piece(token): every step shows its top-N
        self._vocab_bytes: tuple[bytes, ...] | None = None
        self._lock = threading.Lock()
        self._contexts: set[int] = set()
        self._closed = False
        self.metadata = self._meta()
        self.info = self._read_info()
        self.eos_token = self.info.eos_token

    # ----------------------------------------------------------------- model card
    def _meta(self) -> dict[str, str]:
        ll = self._ll
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(4096)
        for i in range(int(ll.llama_model_meta_count(self._model))):
            if ll.llama_model_meta_key_by_index(self._model, i, buf, len(buf)) < 0:
                continue
            key = buf.value.decode("utf-8", errors="replace")
            if ll.llama_model_meta_val_str_by_index(self._model, i, buf, len(buf)) < 0:
                continue
            out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    def _read_info(self) -> ModelInfo:
        ll = self._ll
        meta = self.metadata
        buf = ctypes.create_string_buffer(256)
        ll.llama_model_desc(self._model, buf, len(buf))
        desc = buf.value.decode("utf-8", errors="replace")  # e.g. "gemma3 270M Q4_K - Medium"
        arch = meta.get("general.architecture", desc.split(" ")[0] if desc else "unknown")
        parts = desc.split(" ", 2)
        size_label = meta.get("general.size_label") or (parts[1] if len(parts) > 1 else "")
        quant = parts[2] if len(parts) > 2 else ""
        try:
            tmpl = ll.llama_model_chat_template(self._model, None)
        except Exception:  # noqa: BLE001 - older bindings
            tmpl = meta.get("tokenizer.chat_template")
        if isinstance(tmpl, bytes):
            tmpl = tmpl.decode("utf-8", errors="replace")
        self.chat_template = tmpl or None
        bos = int(ll.llama_vocab_bos(self._vocab))
        eos = int(ll.llama_vocab_eos(self._vocab))
        n_layers = int(ll.llama_model_n_layer(self._model))
        n_gpu = self.settings.n_gpu_layers
        n_gpu = n_layers + 1 if n_gpu < 0 else min(n_gpu, n_layers + 1)
        offload = gpu_offload_supported()
        return ModelInfo(
            path=str(self.path),
            name=meta.get("general.name") or self.path.stem,
            architecture=arch,
            size_label=size_label,
            quantization=quant,
            n_vocab=self.n_vocab,
            n_ctx_train=self.n_ctx_train,
            n_layers=n_layers,
            file_size=self.path.stat().st_size,
            has_chat_template=bool(tmpl),
            n_ctx=0,
            n_gpu_layers=n_gpu if offload else 0,
            n_threads=self.n_threads,
            gpu_offload_supported=offload,
            bos_token=bos if bos >= 0 else None,
            eos_token=eos if eos >= 0 else None,
            sampling=tuple(sorted((k, v) for k, v in meta.items() if k.startswith("general.sampling."))),
        )

    # ----------------------------------------------------------------- text
    def format_chat(self, messages: Seq[dict]) -> ChatPrompt:
        """``messages`` in the model's own chat template, ending where the assistant's answer
        begins, as a ``ChatPrompt`` (tokenize it with ``parse_special=True``: only the
        template's markers become control tokens). GenerationError for a model without a
        chat template (a base model such as the embedded Gemma 3 270M)."""
        if not self.chat_template:
            raise GenerationError(
                f"{self.info.name} has no chat template (it is a base model): use the completion style, "
                "or load an instruct model."
            )
        return chat_prompt(self.chat_template, messages)

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds the model's BOS; ``parse_special`` reads
        control-token names as those tokens: for a ``ChatPrompt`` only in the template's own
        parts, for a plain string everywhere. Text that is not valid Unicode is cleaned first."""
        if parse_special and isinstance(text, ChatPrompt):
            out: list[int] = []
            for part, is_template in text.parts:
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
        key = (int(token), bool(special))
        b = self._pieces.get(key)
        if b is None:
            if not 0 <= key[0] < self.n_vocab:
                raise GenerationError(f"token id {token} is not in the vocabulary (0 .. {self.n_vocab - 1})")
            buf = ctypes.create_string_buffer(64)
            n = self._ll.llama_token_to_piece(self._vocab, key[0], buf, 64, 0, key[1])
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._ll.llama_token_to_piece(self._vocab, key[0], buf, -n, 0, key[1])
            b = buf.raw[: max(n, 0)]
            with self._lock:
                self._pieces[key] = b
        return b

    def vocab_bytes(self) -> tuple[bytes, ...]:
        """Every token's bytes in id order, control tokens by their names (what llama.cpp's
        DRY sampler searches for its sequence breakers). Built on first use (about 0.3 s for
        262,144 tokens), then kept."""
        if self._vocab_bytes is None:
            ll, vocab = self._ll, self._vocab
            buf = ctypes.create_string_buffer(256)
            out = []
            for tok in range(self.n_vocab):
                n = ll.llama_token_to_piece(vocab, tok, buf, 256, 0, True)
                if n < 0:
                    big = ctypes.create_string_buffer(-n)
                    n = ll.llama_token_to_piece(vocab, tok, big, -n, 0, True)
                    out.append(big.raw[: max(n, 0)])
                else:
                    out.append(buf.raw[:n])
            self._vocab_bytes = tuple(out)
        return self._vocab_bytes

    def piece(self, token: int) -> str:
        """Display text of one token: its text, or ``<0xE2>``-style escapes for bytes that are
        not a whole UTF-8 character (never a replacement character)."""
        text = self._piece_text.get(token)
        if text is None:
            b = self.token_bytes(token, special=True)
            try:
                text = b.decode("utf-8")
            except UnicodeDecodeError:
                text = "".join(f"<0x{x:02X}>" for x in b)
            self._piece_text[int(token)] = text
        return text

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self._vocab, int(token)))

    # ----------------------------------------------------------------- contexts
    def context(self, *, n_ctx: int = 2048, n_seq: int = 1, n_batch: int = 512, n_threads: int | None = None,
                keep_cells: bool = False, eval_callback=None) -> "LlamaContext":
        """A new context of ``n_ctx`` cells (0: the training context) for ``n_seq`` sequences
        (plus one reserved for retired cells with ``keep_cells``). ``eval_callback`` (a ctypes
        ``ggml_backend_sched_eval_callback``, kept alive by the context) is installed as the
        context's ``cb_eval``: only the layer lens (``backends.layer_capture``) passes one; every
        other context has none, so its graph is computed in one piece as usual."""
        return LlamaContext(self, n_ctx=n_ctx, n_seq=n_seq, n_batch=n_batch,
                            n_threads=n_threads or self.n_threads, keep_cells=keep_cells,
                            eval_callback=eval_callback)

    def embedding_context(self, n_ctx: int = 1024) -> "EmbeddingContext":
        return EmbeddingContext(self, n_ctx=min(int(n_ctx), self.n_ctx_train or int(n_ctx)))

    def _attach(self, ctx_id: int) -> None:
        if self._closed or self._model is None:
            raise GenerationError("The model was closed; load it again.")
        self._contexts.add(ctx_id)

    def _detach(self, ctx_id: int) -> None:
        self._contexts.discard(ctx_id)
        if self._closed and not self._contexts:
            self._free()

    def close(self) -> None:
        """Free the weights now, or as soon as the last of its contexts is closed."""
        self._closed = True
        if not self._contexts:
            self._free()

    def _free(self) -> None:
        if getattr(self, "_model", None):
            self._ll.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _common(a: Seq[int], b: Seq[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class LlamaContext:
    """One llama.cpp context on a ``LlamaModel`` (see the module docstring). ``share_prefixes``
    (off by default): ``prefill`` first takes another sequence's cells when it holds more of the
    prompt (N samples of one prompt evaluate it once); when that sequence holds exactly the
    prompt and was fed its next token, not decoded yet, its logits after the prompt are copied
    too and nothing is evaluated (the first round of N samples is then ONE decode)."""

    def __init__(self, model: LlamaModel, *, n_ctx: int, n_seq: int, n_batch: int, n_threads: int,
                 keep_cells: bool = False, eval_callback=None) -> None:
        ll = model._ll
        self._ll = ll
        self.model = model
        n_seq = int(n_seq)
        if not 1 <= n_seq <= 256:
            raise GenerationError(f"a context holds 1 to 256 sequences, not {n_seq}")
        self.keep_cells = bool(keep_cells)
        total_seq = n_seq + (1 if keep_cells else 0)
        n_ctx = int(n_ctx) or model.n_ctx_train
        cp = ll.llama_context_default_params()
        cp.n_ctx = n_ctx
        nb = int(min(max(n_batch, total_seq), n_ctx))
        cp.n_batch = nb
        cp.n_ubatch = nb
        cp.n_seq_max = total_seq
        self.wanted_threads = max(1, int(n_threads))
        cp.n_threads = self.wanted_threads
        cp.n_threads_batch = self.wanted_threads
        cp.swa_full = True  # keep every position so prefix reuse and branching can cut anywhere
        if total_seq > 1:
            cp.kv_unified = True  # a forked prefix is stored once, its cells tagged with every sequence
        self._eval_callback = eval_callback  # C keeps only the pointer: the ctypes object must live
        if eval_callback is not None:  # cb_eval / cb_eval_user_data: checked against llama.h
            cp.cb_eval = eval_callback
            cp.cb_eval_user_data = None
        model._attach(id(self))
        clear_log()
        ctx = ll.llama_init_from_model(model._model, cp)
        if not ctx:
            model._detach(id(self))
            detail = last_log_error()
            raise ModelLoadError(
                f"llama.cpp could not create a context of {n_ctx:,} tokens for {model.path.name}"
                + (f": {detail}" if detail else "") + ". Try a smaller context size."
            )
        self._ctx = ctx
        self.n_ctx = int(ll.llama_n_ctx(ctx))
        self.n_batch = nb
        self.n_seq = n_seq
        self.grave = n_seq if keep_cells else None
        self.n_vocab = model.n_vocab
        self._threads = self.wanted_threads
        self._batch = ll.llama_batch_init(nb, 0, total_seq)
        self._mem = ll.llama_get_memory(ctx)
        self.tokens: list[list[int]] = [[] for _ in range(n_seq)]
        self._pending: dict[int, int] = {}
        self._rows: dict[int, int] = {}  # sequence -> its row in the last decode's output, unread
        self._read: dict[int, int] = {}  # sequence -> its row in the last decode's output, read
        self._saved: dict[int, np.ndarray] = {}  # logits kept across a later decode
        # sequence -> (tokens it held, its logits after them: ("row", i) of the last decode or
        # ("saved", array)) when it was fed its next token, not decoded yet (a sibling's prefill
        # of the same prompt takes them instead of evaluating the prompt's last token again)
        self._fed_from: dict[int, tuple[int, str, Any]] = {}
        self._epoch = 0
        self._views: dict[int | None, np.ndarray] = {}  # address -> a read-only view of a logits row
        self.batched = False
        self.share_prefixes = False
        self.evaluations = 0  # tokens evaluated so far (prompt tokens included)

    # ----------------------------------------------------------------- low level
    def _check_seq(self, seq: int) -> int:
        seq = int(seq)
        if not 0 <= seq < self.n_seq:
            raise GenerationError(f"sequence {seq} does not exist (0 .. {self.n_seq - 1})")
        return seq

    def decode(self, entries: Seq[tuple[int, int, int, bool]]) -> list[int]:
        """Evaluate ``(token, position, seq, want_logits)`` entries (in batches of ``n_batch``)
        and return, for the entries of the last batch that want logits, their rows for ``row(i)``
        (their indices in that batch).
        Logits of sequences not read yet are kept (copied) before the decode overwrites them."""
        ll, b = self._ll, self._batch
        if not entries:
            return []
        for seq, row in list(self._rows.items()):  # unread logits: keep them
            self._saved[seq] = np.array(self.row(row), copy=True)
        self._rows.clear()
        self._read.clear()
        for seq, (_n, kind, _v) in list(self._fed_from.items()):
            if kind == "row":  # the rows are overwritten now
                del self._fed_from[seq]
        n = THREADS.share(id(self), self.wanted_threads)
        if n != self._threads:
            ll.llama_set_n_threads(self._ctx, n, n)
            self._threads = n
        rows: list[int] = []
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start:start + self.n_batch]
            b.n_tokens = len(chunk)
            rows = []
            for i, (tok, pos, seq, want) in enumerate(chunk):
                tok = int(tok)
                if not 0 <= tok < self.n_vocab:
                    raise GenerationError(f"token id {tok} is not in the vocabulary")
                if not 0 <= int(pos) < self.n_ctx:
                    raise PromptTooLongError(f"The context window ({self.n_ctx:,} tokens) is full.")
                b.token[i] = tok
                b.pos[i] = int(pos)
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = int(seq)
                b.logits[i] = bool(want)
                if want:
                    rows.append(i)
            rc = ll.llama_decode(self._ctx, b)
            if rc != 0:
                self.reset()  # the cache state after a failed decode is unknown: start over
                if rc == 1:
                    raise PromptTooLongError(
                        f"llama.cpp found no room in the context ({self.n_ctx:,} tokens). Load the model "
                        "with a larger context, shorten the prompt, or run fewer sequences at once.")
                raise GenerationError(f"llama.cpp failed to evaluate tokens (llama_decode returned {rc}).")
            self.evaluations += len(chunk)
        self._epoch += 1
        return rows

    def row(self, i: int) -> np.ndarray:
        """The logits of output row ``i`` of the last decode (-1: the last row), a read-only view."""
        ptr = self._ll.llama_get_logits_ith(self._ctx, int(i))
        if not ptr:
            raise GenerationError("No logits available for that row.")
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        arr = self._views.get(addr)
        if arr is None:  # a view per address (llama.cpp keeps its output buffer between decodes)
            if len(self._views) >= 256:
                self._views.clear()
            arr = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
            arr.flags.writeable = False
            self._views[addr] = arr
        return arr

    # ----------------------------------------------------------------- sequences
    def prefill(self, seq: int, tokens: Seq[int]) -> int:
        """Make ``seq`` hold exactly ``tokens`` with the logits after the last one. The prefix it
        already holds is kept (never less than one token is evaluated, for the logits); the rest
        is evaluated in one batch. Returns the number of reused tokens."""
        seq = self._check_seq(seq)
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise GenerationError("The prompt is empty: type something to continue from.")
        if len(tokens) >= self.n_ctx:
            raise PromptTooLongError(
                f"The prompt is {len(tokens):,} tokens but the context holds {self.n_ctx:,}. "
                "Shorten the prompt or load the model with a larger context.")
        self._pending.pop(seq, None)
        n_common = _common(self.tokens[seq], tokens)
        if self.share_prefixes:  # another sequence holds more of it: take its cells instead
            best, best_n = None, n_common
            for other in range(self.n_seq):
                if other != seq:
                    n = _common(self.tokens[other], tokens)
                    if n > best_n:
                        best, best_n = other, n
            if best is not None:
                fed = self._fed_from.get(best)
                if fed is not None and best_n == len(tokens) == len(self.tokens[best]) == fed[0]:
                    # the sibling holds exactly this prompt and was fed its next token, not yet
                    # evaluated: take its cells and its logits after the prompt, evaluate nothing
                    self._copy_cells(best, seq)
                    self._saved[seq] = np.array(self._logits_at(fed[1], fed[2]), copy=True)
                    return len(tokens)
                same = best_n == len(tokens) == len(self.tokens[best]) and best not in self._pending
                self.fork(best, seq)
                if same and self.has_logits(seq):
                    return len(tokens)  # the sibling's next-token logits are this prompt's
                n_common = best_n
        held = self.tokens[seq]
        if n_common == len(tokens):
            n_common -= 1  # the last token is evaluated again for its logits
        if n_common < len(held):
            self.truncate(seq, n_common)
        rest = tokens[n_common:]
        entries = [(t, n_common + i, seq, i == len(rest) - 1) for i, t in enumerate(rest)]
        self._invalidate(seq)
        rows = self.decode(entries)
        held.extend(rest)
        self._rows[seq] = rows[-1]  # the one row that wants logits: the last token's
        return n_common

    def feed(self, seq: int, token: int) -> None:
        """Queue ``token`` as the next one of ``seq``; it is decoded when logits are asked for."""
        seq = self._check_seq(seq)
        if seq in self._pending:
            self._flush([seq])
        if len(self.tokens[seq]) >= self.n_ctx:
            raise PromptTooLongError(f"The context window ({self.n_ctx:,} tokens) is full.")
        before = self._logits_ref(seq) if self.share_prefixes else None
        self._invalidate(seq)
        self._pending[seq] = int(token)
        if before is not None:
            self._fed_from[seq] = (len(self.tokens[seq]), *before)

    def flush(self) -> None:
        """Decode every queued token now: one ``llama_decode`` with ``batched``, else one per
        sequence (exact)."""
        if self._pending:
            self._flush(sorted(self._pending) if self.batched else None)

    def _flush(self, seqs: list[int] | None) -> None:
        """Decode the queued tokens of ``seqs`` together (None: every queued one, each alone)."""
        if seqs is None:
            for s in sorted(self._pending):
                self._flush([s])
            return
        entries = []
        for s in seqs:
            tok = self._pending.pop(s)
            entries.append((tok, len(self.tokens[s]), s, True))
        rows = self.decode(entries)
        for (tok, _pos, s, _w), r in zip(entries, rows):
            self.tokens[s].append(tok)
            self._rows[s] = r

    def logits(self, seq: int) -> np.ndarray:
        """``seq``'s next-token logits (decoding its queued token first: alone, or with every
        queued token of the context when ``batched``). A read-only view, valid until the next
        decode of this context."""
        seq = self._check_seq(seq)
        if seq in self._pending:
            self._flush(sorted(self._pending) if self.batched else [seq])
        if seq in self._rows:
            row = self._rows.pop(seq)
            self._read[seq] = row
            return self.row(row)
        if seq in self._read:
            return self.row(self._read[seq])
        if seq in self._saved:
            arr = self._saved[seq]
            arr.flags.writeable = False
            return arr
        raise GenerationError("No logits available: evaluate a prompt first.")

    def held(self, seq: int) -> tuple[int, ...]:
        """The tokens ``seq`` holds, a queued (not yet decoded) one included."""
        seq = self._check_seq(seq)
        queued = self._pending.get(seq)
        return tuple(self.tokens[seq]) + (() if queued is None else (queued,))

    def _peek(self, seq: int) -> np.ndarray:
        """``seq``'s current logits without marking them read (nothing is decoded)."""
        ref = self._logits_ref(seq)
        if ref is None:
            raise KeyError(seq)
        return self._logits_at(*ref)

    def _logits_ref(self, seq: int) -> tuple[str, Any] | None:
        """Where ``seq``'s current logits are: ("row", i) of the last decode, ("saved", array), or None."""
        if seq in self._rows:
            return ("row", self._rows[seq])
        if seq in self._read:
            return ("row", self._read[seq])
        if seq in self._saved:
            return ("saved", self._saved[seq])
        return None

    def _logits_at(self, kind: str, value: Any) -> np.ndarray:
        return self.row(value) if kind == "row" else value

    def has_logits(self, seq: int) -> bool:
        """Whether ``seq`` has next-token logits now (a queued token does not count)."""
        return seq in self._rows or seq in self._read or seq in self._saved

    def _invalidate(self, seq: int) -> None:
        self._rows.pop(seq, None)
        self._read.pop(seq, None)
        self._saved.pop(seq, None)
        self._fed_from.pop(seq, None)

    def fork(self, src: int, dst: int) -> None:
        """Make ``dst`` hold what ``src`` holds (its cells tagged with ``dst`` too, nothing
        evaluated) with the same next-token logits."""
        src, dst = self._check_seq(src), self._check_seq(dst)
        if src == dst:
            return
        if src in self._pending:
            self._flush([src])
        self._copy_cells(src, dst)
        if self.has_logits(src):
            self._saved[dst] = np.array(self._peek(src), copy=True)  # src's own logits stay unread

    def _copy_cells(self, src: int, dst: int) -> None:
        """Make ``dst`` hold the cells ``src`` holds (its queued token, if any, is not one)."""
        self.drop(dst)
        self._ll.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        self.tokens[dst] = list(self.tokens[src])

    def truncate(self, seq: int, n: int) -> None:
        """Cut ``seq`` back to its first ``n`` tokens (its logits are gone until it is fed)."""
        seq = self._check_seq(seq)
        n = max(0, int(n))
        self._pending.pop(seq, None)
        self._invalidate(seq)
        if n >= len(self.tokens[seq]):
            return
        if not self._ll.llama_memory_seq_rm(self._mem, seq, n, -1):
            self._ll.llama_memory_seq_rm(self._mem, seq, -1, -1)
            n = 0
        del self.tokens[seq][n:]

    def drop(self, seq: int) -> None:
        """Empty ``seq`` (every cell tagged with it, also those written by raw ``decode``)."""
        seq = self._check_seq(seq)
        self._ll.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self.tokens[seq] = []
        self._pending.pop(seq, None)
        self._invalidate(seq)

    def retire(self, seq: int) -> None:
        """Free the id ``seq`` but keep its cells occupied (moved to the reserved sequence; see the
        module docstring), so later tokens never land in earlier cells. Needs ``keep_cells``."""
        seq = self._check_seq(seq)
        if self.grave is not None:
            self._ll.llama_memory_seq_cp(self._mem, seq, self.grave, -1, -1)
        self._ll.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self.tokens[seq] = []
        self._pending.pop(seq, None)
        self._invalidate(seq)

    def reset(self) -> None:
        """Empty every sequence."""
        self._ll.llama_memory_clear(self._mem, True)
        for t in self.tokens:
            t.clear()
        self._pending.clear()
        self._rows.clear()
        self._read.clear()
        self._saved.clear()
        self._fed_from.clear()

    def sequence(self, seq: int = 0) -> "Sequence":
        return Sequence(self, self._check_seq(seq))

    # ----------------------------------------------------------------- lifetime
    def close(self) -> None:
        ll = getattr(self, "_ll", None)
        if ll is None:
            return
        if getattr(self, "_batch", None) is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            self._views.clear()
            ll.llama_free(self._ctx)
            self._ctx = None
            THREADS.forget(id(self))
            self.model._detach(id(self))

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "LlamaContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Sequence:
    """One sequence of a ``LlamaContext`` as a logits engine (see the module docstring)."""

    def __init__(self, context: LlamaContext, seq: int = 0) -> None:
        self.context = context
        self.model = context.model
        self.seq = int(seq)
        self.grammar = None

    # the model's text surface
    @property
    def capabilities(self):
        """What a local sequence can do: everything (``local_capabilities``)."""
        return local_capabilities(self.model)

    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    @property
    def n_vocab(self) -> int:
        return self.model.n_vocab

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        return self.model.token_bytes(token, special=special)

    def piece(self, token: int) -> str:
        return self.model.piece(token)

    def vocab_bytes(self) -> tuple[bytes, ...]:
        return self.model.vocab_bytes()

    def is_eog(self, token: int) -> bool:
        return self.model.is_eog(token)

    def format_chat(self, messages: Seq[dict]) -> ChatPrompt:
        return self.model.format_chat(messages)

    # the sequence
    @property
    def cached_tokens(self) -> tuple[int, ...]:
        """What the sequence holds, its queued token included."""
        return self.context.held(self.seq)

    def prepare(self, tokens: Seq[int]) -> int:
        return self.context.prefill(self.seq, tokens)

    def feed(self, token: int) -> None:
        self.context.feed(self.seq, token)

    def logits(self) -> np.ndarray:
        return self.context.logits(self.seq)

    def reset(self) -> None:
        self.context.drop(self.seq)


class EmbeddingContext:
    """Mean-pooled embeddings of texts from a ``LlamaModel`` (a context in llama.cpp's embedding
    mode: ``embeddings=True``, mean pooling). One text at a time, each from an empty cache."""

    def __init__(self, model: LlamaModel, n_ctx: int = 1024) -> None:
        ll = model._ll
        self._ll = ll
        self.model = model
        cp = ll.llama_context_default_params()
        cp.n_ctx = int(n_ctx)
        cp.n_batch = int(n_ctx)
        cp.n_ubatch = int(n_ctx)
        cp.n_seq_max = 1
        cp.n_threads = model.n_threads
        cp.n_threads_batch = model.n_threads
        cp.embeddings = True
        cp.pooling_type = ll.LLAMA_POOLING_TYPE_MEAN
        model._attach(id(self))
        ctx = ll.llama_init_from_model(model._model, cp)
        if not ctx:
            model._detach(id(self))
            raise ModelLoadError(f"llama.cpp could not create an embedding context for {model.path.name}.")
        self._ctx = ctx
        self.n_ctx = int(ll.llama_n_ctx(ctx))
        self._batch = ll.llama_batch_init(self.n_ctx, 0, 1)
        self._mem = ll.llama_get_memory(ctx)

    def embed(self, texts: Seq[str]) -> np.ndarray:
        """One row per text: the mean of its tokens' final hidden states (texts longer than the
        context are cut to it)."""
        ll, b = self._ll, self._batch
        rows = []
        for text in texts:
            tokens = self.model.tokenize(str(text) if str(text).strip() else " ", add_special=True)[: self.n_ctx]
            ll.llama_memory_clear(self._mem, True)
            b.n_tokens = len(tokens)
            for i, t in enumerate(tokens):
                b.token[i] = t
                b.pos[i] = i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = True
            rc = ll.llama_decode(self._ctx, b)
            if rc != 0:
                raise GenerationError(f"llama.cpp failed to embed a text (llama_decode returned {rc}).")
            ptr = ll.llama_get_embeddings_seq(self._ctx, 0)
            if not ptr:
                raise GenerationError("llama.cpp gave no embedding for a text.")
            rows.append(np.array(np.ctypeslib.as_array(ptr, shape=(self.model.n_embd,)), dtype=np.float64))
        return np.vstack(rows) if rows else np.zeros((0, self.model.n_embd))

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            self._ll.llama_free(self._ctx)
            self._ctx = None
            self.model._detach(id(self))

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
