"""The KV-cache plumbing every local part of the decoding lab uses.

Owns: ``goto_prefix`` (move a backend's single sequence to a prompt plus a path, with the batch
shapes of a plain session), ``_SeqContext`` (a second llama.cpp context on the backend's already
loaded model, several sequences in one unified KV cache: beams and lockstep columns),
``_Shared`` / ``_ColumnEngine`` (a lockstep column's logits engine, on a sequence of that
context or on the backend's own cache through ``goto_prefix``), and the small helpers the local
parts share (``_has_sequences``, ``_tokenize``, ``_stop_at``).

Threads: everything runs on the thread that calls it, which must own the backend (the lab's
worker thread in the window, the main thread in ``samplescope compare``); a ``_SeqContext`` is
created, used and closed on that thread. No Qt.

Reproducibility and the KV cache
--------------------------------
llama.cpp's logits depend slightly on the batch shape a token was evaluated in (a token
evaluated alone versus inside a batch differs by about 1e-3 in a probability, enough to flip a
draw now and then). ``goto_prefix(backend, prompt_tokens, tokens)`` therefore reproduces the
shapes of a plain ``GenerationSession`` started on an empty cache: the prompt is evaluated in
one batch, every generated token alone. It keeps what the cache already holds of the target
(when the prompt is intact), removes the rest, re-evaluates only the first differing token and
feeds the remaining ones one by one; when the cache already holds the target it evaluates
nothing. The sequence contexts follow the same shapes. So a lockstep column, a branch, an exact
beam or a brute-force score sees exactly the logits a plain session would (the tests check
this bit for bit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from backends.base import BackendError, GenerationError, PromptTooLongError

if TYPE_CHECKING:
    from app.core.session import GenerationSession
    from backends.kinds import Backend, LocalEngine

__all__ = ["goto_prefix"]


def _has_logits(backend: LocalEngine) -> bool:
    try:
        backend.logits()
    except GenerationError:
        return False
    return True


def goto_prefix(backend: LocalEngine, prompt_tokens: Sequence[int], tokens: Sequence[int]) -> int:
    """Make ``backend``'s KV cache hold ``prompt_tokens + tokens`` with the logits after the last
    one, with the batch shapes of a plain ``GenerationSession`` from an empty cache: the prompt
    in one batch, every later token alone. What the cache already holds of the target is kept
    when the prompt is intact (nothing is evaluated when it holds exactly the target); otherwise
    the cache is cleared and the prompt evaluated afresh. Returns the number of tokens
    evaluated."""
    prompt_tokens = [int(t) for t in prompt_tokens]
    tokens = [int(t) for t in tokens]
    if not prompt_tokens:
        raise GenerationError("The prompt is empty: type something to continue from.")
    target = prompt_tokens + tokens
    if len(target) >= backend.n_ctx:
        raise PromptTooLongError(f"The prompt and the path are {len(target):,} tokens but the context holds "
                                 f"{backend.n_ctx:,}. Load the model with a larger context.")
    cached = list(backend.cached_tokens)
    if cached == target and _has_logits(backend):
        return 0
    p = 0
    for a, b in zip(cached, target):
        if a != b:
            break
        p += 1
    if p < len(prompt_tokens) or (p == len(target) and not tokens):
        backend.reset()
        backend.prepare(prompt_tokens)
        n_eval, start = len(prompt_tokens), 0
    else:
        if p == len(target):
            p -= 1  # a generated token: evaluated alone, as it was the first time
        backend.prepare(target[: p + 1])  # keeps target[:p], evaluates target[p] alone
        n_eval, start = 1, p + 1 - len(prompt_tokens)
    for t in tokens[start:]:
        backend.feed(t)
        n_eval += 1
    return n_eval


class _SeqContext:
    """Sequences for beams and lockstep columns: a second context on the backend's loaded model
    (``backend.model.context``: the weights are shared, not loaded again) with ``n_seq``
    sequences in ONE unified KV cache (and one more reserved for retired cells with
    ``keep_cells``: beams), every position kept. Default attention settings, like the backend's own context, so its
    logits equal the backend's. Positions are tracked here by the callers (raw ``decode``)."""

    def __init__(self, backend: LocalEngine, n_seq: int, n_cells: int, *, keep_cells: bool = False) -> None:
        n_cells = int(-(-n_cells // 256) * 256)
        nb = int(min(n_cells, max(512, n_seq)))
        threads = int(getattr(getattr(backend, "info", None), "n_threads", 0) or 1)
        try:
            self._c = backend.model.context(n_ctx=n_cells, n_seq=int(n_seq), n_batch=nb, n_threads=threads,
                                            keep_cells=keep_cells)
        except BackendError as exc:
            raise GenerationError(f"llama.cpp could not create a beam-search context ({n_seq} sequences, "
                                  f"{n_cells} cells); try a smaller width or fewer tokens. ({exc})") from None
        self.n_batch = self._c.n_batch

    def decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """Decode ``(token, position, seq_id, want_logits)`` entries (one llama_batch per
        ``n_batch`` entries; the rows with logits are numbered within the last batch)."""
        self._c.decode(entries)

    def row(self, i: int) -> np.ndarray:
        return self._c.row(i)

    def seq_cp(self, src: int, dst: int) -> None:
        self._c.fork(src, dst)

    def retire(self, seq: int) -> None:
        """Free the sequence id ``seq`` but keep its cells occupied (they move to the reserved
        sequence), so later tokens never land in earlier cells."""
        self._c.retire(seq)

    def close(self) -> None:
        self._c.close()


def _has_sequences(backend: Backend) -> bool:
    """Whether ``backend`` can hold several sequences in one KV cache (its ``capabilities``)."""
    return backend.capabilities.sequences


def _tokenize(backend: LocalEngine, prompt: str, parse_special: bool) -> list[int]:
    if parse_special:
        return backend.tokenize(prompt, add_special=True, parse_special=True)
    return backend.tokenize(prompt, add_special=True)


def _stop_at(text: str, stop: Sequence[str]) -> int:
    at = -1
    for s in stop:
        if s:
            i = text.find(s)
            if i >= 0 and (at < 0 or i < at):
                at = i
    return at


class _Shared:
    """What the columns of one lockstep run share: the prompt tokens, a copy of the logits after
    them (every column's step 0), the token-evaluation count, and for "sequences" the context
    holding one sequence per column."""

    def __init__(self, seqctx: _SeqContext | None = None) -> None:
        self.prompt_tokens: list[int] | None = None
        self.prompt_logits: np.ndarray | None = None
        self.evaluations = 0
        self.seqctx = seqctx
        self.next_seq = 0
        self.last_seq = -1


class _ColumnEngine:
    """A column's logits engine for its ``GenerationSession`` (the ``LogitsEngine`` surface).
    ``feed`` is deferred to the next ``logits`` call; step 0 reads the prompt's logits kept in
    ``_Shared``.

    With a ``_SeqContext`` ("sequences"): the column owns one sequence of it; the first column
    evaluates the prompt into sequence 0 and every other column tags those cells with its own id
    (``seq_cp``) before any token is drawn; ``logits`` decodes the pending token alone at the
    column's next position and returns that row. Without ("prefix"): ``logits`` moves the
    backend's own cache to the column's tokens with ``goto_prefix``."""

    def __init__(self, backend: LocalEngine, shared: _Shared) -> None:
        self.backend = backend
        self.shared = shared
        self.session: GenerationSession | None = None
        self.n_ctx = backend.n_ctx
        self.seq = -1
        self.pending: int | None = None

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        if parse_special:
            return self.backend.tokenize(text, add_special=add_special, parse_special=True)
        return self.backend.tokenize(text, add_special=add_special)

    def prepare(self, tokens: Sequence[int]) -> int:
        tokens = [int(t) for t in tokens]
        sh = self.shared
        sc = sh.seqctx
        reused = 0
        if sh.prompt_tokens is not None and sh.prompt_tokens != tokens:
            raise GenerationError("the columns of a lockstep run must share one prompt")
        if sc is None:
            if sh.prompt_tokens is None:
                sh.evaluations += goto_prefix(self.backend, tokens, [])
                sh.prompt_logits = np.array(self.backend.logits(), copy=True)
            else:
                reused = len(tokens)
        else:
            self.seq = sh.next_seq
            sh.next_seq += 1
            if sh.prompt_tokens is None:
                sc.decode([(t, i, self.seq, i == len(tokens) - 1) for i, t in enumerate(tokens)])
                sh.evaluations += len(tokens)
                sh.prompt_logits = np.array(sc.row(-1), copy=True)
                sh.last_seq = self.seq
            else:
                sc.seq_cp(0, self.seq)
                reused = len(tokens)
        sh.prompt_tokens = tokens
        return reused

    def feed(self, token: int) -> None:
        self.pending = int(token)

    def logits(self) -> np.ndarray:
        s = self.session
        sh = self.shared
        assert s is not None, "lockstep hands the column its session before the session starts"
        if not s.generated:
            assert sh.prompt_logits is not None, "prepare (the session's start) keeps the prompt's logits"
            return sh.prompt_logits
        sc = sh.seqctx
        if sc is None:
            self.pending = None
            sh.evaluations += goto_prefix(self.backend, s.prompt_tokens, s.generated)
            return self.backend.logits()
        if self.pending is not None:
            pos = len(s.prompt_tokens) + len(s.generated) - 1
            sc.decode([(self.pending, pos, self.seq, True)])
            sh.evaluations += 1
            sh.last_seq = self.seq
            self.pending = None
        elif sh.last_seq != self.seq:
            raise GenerationError("lockstep: a column's logits were asked for after another column's decode")
        return sc.row(0)

    def piece(self, token: int) -> str:
        return self.backend.piece(token)

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        return self.backend.token_bytes(token, special=special)

    def vocab_bytes(self) -> tuple[bytes, ...]:
        return self.backend.vocab_bytes()

    def is_eog(self, token: int) -> bool:
        return self.backend.is_eog(token)
