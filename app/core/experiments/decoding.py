"""Decoding strategies and branching lab, headless: strategies side by side, beam search, the
road not taken at any token, and A/B comparison of two runs.

Owns:

- ``Strategy`` / ``parse_strategy`` / ``parse_strategies``: the spec strings ``greedy``,
  ``beam:W[:lp=ALPHA]``, ``top-k:K``, ``top-p:P``, ``min-p:P``, ``temp:T``, ``typical:P`` and the
  ``SamplerSettings`` of each sampled one. Every sampled strategy starts from the neutral chain
  (``NEUTRAL``: temperature 1, top-k/top-p/min-p/typical and penalties off) and changes only the
  knob it names, so ``top-k:40`` is top-k at temperature 1 and ``temp:0.7`` is plain sampling at
  temperature 0.7: the columns differ by exactly one sampler.
- ``beam_search`` -> ``BeamResult`` (local models): beams ranked by their summed natural-log
  raw probabilities (softmax of the logits at temperature 1, whatever a sampler would do),
  optionally length-normalised. Two ways to get the beams' logits (``method``):
  ``"sequences"`` (the default for ``LlamaCppBackend``): a second llama.cpp context on the
  backend's already loaded model (weights shared, not loaded again; ``_SeqContext``) with
  W + 1 sequences in one unified KV cache (``kv_unified``). The prompt is evaluated once into
  sequence 0; a beam that forks is given a free sequence id with ``llama_memory_seq_cp`` (in a
  unified cache that only tags the parent's cells with the new id: the prompt and every shared
  prefix are stored once); a beam that dies gives its id back (its cells are moved to the spare
  sequence W instead of being freed, so a beam's cells always follow each other in position
  order: llama.cpp's attention sums cells in cell order, and reusing freed cells out of order
  moved log-probabilities by up to 0.01 nats). Each step evaluates one token per live beam:
  by default each in its own ``llama_decode`` call (exact: equal bit for bit to a plain session
  on the same text), or with ``batched=True`` all in ONE batch read row by row with
  ``llama_get_logits_ith`` (faster; llama.cpp's multi-row kernels then move a row by up to about
  0.15 nats). ``"prefix"`` (the fallback, and what any other logits engine gets): the backend's
  own single sequence, moved from beam to beam with ``goto_prefix`` (prefix reuse; beams
  visited in sorted order). Costs at the end of this docstring.
- ``brute_force_best``: every continuation over the top-V tokens at each position up to a short
  horizon, scored independently with the backend's single sequence; the check of beam search.
- ``lockstep``: several strategies on one prompt, step k of every column before step k+1 of any;
  one JSON-safe record per (step, column), a fork record where the columns first part, and a
  summary with each column's total log-probability, perplexity, mean entropy and length. On a
  ``LlamaCppBackend`` the sampled columns are sequences of one extra context too (the prompt
  shared), each a ``GenerationSession`` drawing exactly what a plain session draws.
- ``BranchTree`` (plain data, ``to_dict``/``from_dict``), ``iter_branch``/``branch`` and
  ``children``: continue a run from any node with another token (or the sampler's own), the KV
  cache reused up to that node; every branch is kept in the tree with the probability of each
  edge; cumulative probabilities along a path.
- ``ab_compare``/``step_distance`` (from two recorded runs: lists of ``Step`` or their dicts, so
  local and remote runs alike) and ``ab_run`` (make the two runs, then compare).
- ``remote_column``, ``remote_support``, ``REMOTE_LIMITS``, ``RemoteUnsupported``: what an
  OpenAI-compatible server can take part in (sampled columns, branches as new requests) and
  why the rest cannot (beam search, exact distributions).
- ``goto_prefix``: the KV-cache move every local part uses (below).

Threads: everything runs on the thread that calls it (the lab's worker thread in the window,
the main thread in ``samplescope compare``), which must be the thread that owns the backend; the
extra contexts of "sequences" are created and freed inside ``beam_search`` and ``lockstep`` on
that thread (a lockstep generator frees its context when it ends or is closed). ``cancel`` (a
``threading.Event``) is checked before every token (lockstep, branches), between beam-search
steps, or handed to the server's stream (remote: ends within about 20 ms); what was produced
before is kept and marked cancelled. No Qt.

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

Costs (embedded Gemma 3 270M Q4_K_M, 1 thread, on a shared 2-core machine, prompt of 6
tokens, 16 tokens, per step including the analysis of every beam's 262k logits):

==========================  ==========  ==========
beam search                 width 4     width 8
==========================  ==========  ==========
sequences (exact, default)  78 ms       151 ms
sequences, batched=True     64 ms       98 ms
prefix (fallback)           203 ms      489 ms
==========================  ==========  ==========

"prefix" evaluates 11.5 tokens per step at width 4 (26.6 at width 8) against 3.8 (7.5): each
visit re-evaluates a beam's tokens after the last one it shares with the beam visited before.
Lockstep, 4 sampled columns parting at step 0, 24 tokens each: "sequences" 1.9 s (98 token
evaluations: the prompt once, one per column per step), the same as 4 plain sessions (2.1 s);
the "prefix" fallback 20.7 s (1,110 evaluations: every turn re-evaluates the column's tokens
since it parted from the column before it, quadratic in the length after the fork).
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable, Iterator, Sequence

import numpy as np

from app.core.sampling import apply_chain, softmax_stats
from app.core.export import generation_record
from app.core.jsonsafe import json_safe
from app.core.streams import drain
from backends.base import (BackendError, Finished, GenerationError, PromptTooLongError, SamplerSettings, Step,
                           TokenAlt)

__all__ = [
    "NEUTRAL", "STRATEGY_FORMS", "Strategy", "parse_strategy", "parse_strategies",
    "BeamStep", "Beam", "BeamResult", "beam_search", "BruteForceResult", "brute_force_best",
    "goto_prefix", "first_fork", "column_totals", "lockstep", "run_lockstep",
    "BranchNode", "BranchTree", "iter_branch", "branch", "children",
    "step_distance", "ab_compare", "ab_run",
    "REMOTE_LIMITS", "RemoteUnsupported", "remote_support", "remote_column", "is_remote",
]

#: The chain with every stage off at temperature 1: the model's own distribution.
NEUTRAL = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0,
                          frequency_penalty=0.0, presence_penalty=0.0, min_keep=1)

#: The accepted spec forms, as shown in error messages and in ``--help``.
STRATEGY_FORMS = ("greedy", "beam:W", "beam:W:lp=ALPHA", "top-k:K", "top-p:P", "min-p:P", "temp:T", "typical:P")

_MAX_WIDTH = 64


# ============================================================================ strategies


@dataclass(frozen=True)
class Strategy:
    """One decoding strategy. ``kind``: "greedy", "beam", "top-k", "top-p", "min-p", "temp" or
    "typical"; ``value``: W, K, P or T (None for greedy); ``length_penalty``: beam only (alpha
    of score = sum / length**alpha; 0 = the plain sum). ``spec`` is the canonical spec string."""

    kind: str
    value: float | None = None
    length_penalty: float = 0.0

    @property
    def spec(self) -> str:
        if self.kind == "greedy":
            return "greedy"
        if self.kind == "beam":
            lp = f":lp={self.length_penalty:g}" if self.length_penalty else ""
            return f"beam:{self.width}{lp}"
        if self.kind == "top-k":
            return f"top-k:{int(self.value)}"
        return f"{self.kind}:{self.value:g}"

    def __str__(self) -> str:
        return self.spec

    @property
    def is_beam(self) -> bool:
        return self.kind == "beam"

    @property
    def width(self) -> int:
        if self.kind != "beam":
            raise ValueError(f"{self.spec} is not a beam search")
        return int(self.value)

    @property
    def label(self) -> str:
        """A short human label ("top-p 0.9", "beam 4, lp 0.6")."""
        if self.kind == "greedy":
            return "greedy"
        if self.kind == "beam":
            return f"beam {self.width}" + (f", lp {self.length_penalty:g}" if self.length_penalty else "")
        if self.kind == "temp":
            return f"T {self.value:g}"
        if self.kind == "top-k":
            return f"top-k {int(self.value)}"
        return f"{self.kind} {self.value:g}"

    def settings(self, *, seed: int = 42, max_tokens: int = 128, top_n: int = 20,
                 stop: Sequence[str] = ()) -> SamplerSettings:
        """The sampler chain of a sampled (or greedy) strategy: ``NEUTRAL`` with the one knob
        changed. ValueError for a beam search (it has no sampler chain)."""
        base = NEUTRAL.replace(seed=int(seed), max_tokens=int(max_tokens), top_n=int(top_n), stop=tuple(stop))
        if self.kind == "greedy":
            return base.replace(temperature=0.0)
        if self.kind == "temp":
            return base.replace(temperature=float(self.value))
        if self.kind == "top-k":
            return base.replace(top_k=int(self.value))
        if self.kind == "top-p":
            return base.replace(top_p=float(self.value))
        if self.kind == "min-p":
            return base.replace(min_p=float(self.value))
        if self.kind == "typical":
            return base.replace(typical_p=float(self.value))
        raise ValueError(f"{self.spec} is a beam search: it has no sampler settings")

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "value": self.value, "length_penalty": self.length_penalty,
                "label": self.label}


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"bad strategy {spec!r}: {why}. Accepted forms: {', '.join(STRATEGY_FORMS)} "
                      "(e.g. greedy,beam:4,top-k:40,top-p:0.9,min-p:0.05,temp:0.7,typical:0.9)")


def _number(spec: str, text: str, what: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise _bad(spec, f"{what} {text!r} is not a number") from None
    if not math.isfinite(x):
        raise _bad(spec, f"{what} must be finite")
    return x


_ALIASES = {"top_k": "top-k", "topk": "top-k", "top_p": "top-p", "topp": "top-p", "min_p": "min-p",
            "minp": "min-p", "temperature": "temp", "typical_p": "typical", "typical-p": "typical"}


def parse_strategy(text: str) -> Strategy:
    """One spec string -> ``Strategy``; ValueError naming the accepted forms for anything else.

    Ranges: beam width 1..64 (a whole number), length penalty -5..5, top-k K >= 1 (whole),
    top-p, min-p and typical P in (0, 1], temperature T in [0, 5] (0 = greedy)."""
    spec = str(text).strip()
    parts = [p.strip() for p in spec.lower().split(":")]
    kind = _ALIASES.get(parts[0], parts[0])
    if kind == "greedy":
        if len(parts) != 1:
            raise _bad(spec, "greedy takes no value")
        return Strategy("greedy")
    if kind == "beam":
        if len(parts) not in (2, 3):
            raise _bad(spec, "beam needs a width: beam:W or beam:W:lp=ALPHA")
        if not parts[1].isdigit():
            raise _bad(spec, f"the beam width {parts[1]!r} is not a whole number")
        w = int(parts[1])
        if not 1 <= w <= _MAX_WIDTH:
            raise _bad(spec, f"the beam width must be 1..{_MAX_WIDTH}")
        alpha = 0.0
        if len(parts) == 3:
            key, _, val = parts[2].partition("=")
            if key.strip() not in ("lp", "length_penalty", "alpha") or not val:
                raise _bad(spec, "the beam option is lp=ALPHA")
            alpha = _number(spec, val.strip(), "the length penalty")
            if not -5.0 <= alpha <= 5.0:
                raise _bad(spec, "the length penalty must be in -5..5")
        return Strategy("beam", float(w), alpha)
    if kind in ("top-k", "top-p", "min-p", "temp", "typical"):
        if len(parts) != 2 or not parts[1]:
            raise _bad(spec, f"{kind} needs one value")
        x = _number(spec, parts[1], "the value")
        if kind == "top-k":
            if x != int(x) or x < 1 or x > SamplerSettings.LIMITS["top_k"][1]:
                raise _bad(spec, "K must be a whole number of at least 1")
            return Strategy("top-k", float(int(x)))
        if kind == "temp":
            if not 0.0 <= x <= SamplerSettings.LIMITS["temperature"][1]:
                raise _bad(spec, "T must be in 0..5")
            return Strategy("temp", x)
        if not 0.0 < x <= 1.0:
            raise _bad(spec, "P must be in (0, 1]")
        return Strategy(kind, x)
    raise _bad(spec, f"unknown strategy {parts[0]!r}")


def parse_strategies(text: str | Iterable[str | Strategy]) -> list[Strategy]:
    """A comma-separated list (or a sequence of specs / ``Strategy``) -> strategies, in order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [s if isinstance(s, Strategy) else parse_strategy(s) for s in items
           if isinstance(s, Strategy) or str(s).strip()]
    if not out:
        raise ValueError(f"no strategy given. Accepted forms: {', '.join(STRATEGY_FORMS)}")
    return out


# ============================================================================ the KV cache


def _has_logits(backend) -> bool:
    try:
        backend.logits()
    except GenerationError:
        return False
    return True


def goto_prefix(backend, prompt_tokens: Sequence[int], tokens: Sequence[int]) -> int:
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


def _top_ids(x: np.ndarray, k: int) -> np.ndarray:
    """Ids of the ``k`` largest values, descending (ties by id)."""
    n = x.shape[0]
    k = max(1, min(int(k), n))
    if k >= n:
        cand = np.arange(n)
    else:
        cand = np.argpartition(x, n - k)[n - k:]
    order = np.lexsort((cand, -x[cand].astype(np.float64)))
    return cand[order][:k].astype(np.int64)


def _log_softmax64(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    m = float(x.max())
    return x - (m + math.log(float(np.exp(x - m).sum())))


# ============================================================================ beam search


@dataclass(frozen=True)
class BeamStep:
    """One token of a beam: ``logprob`` = ln p_raw (raw softmax, temperature 1) given the beam
    so far; ``entropy_raw`` of that position's distribution (nats); ``rank`` of the token in it
    (1 = most likely); ``top``: the top-N raw alternatives there as ``(id, piece, p_raw)``."""

    token_id: int
    piece: str
    logprob: float
    entropy_raw: float
    rank: int
    top: tuple[tuple[int, str, float], ...] = ()

    @property
    def p_raw(self) -> float:
        return math.exp(self.logprob)


@dataclass(frozen=True)
class Beam:
    """One beam. ``logprob``: the sum of its tokens' ln p_raw; ``score``: ``logprob /
    length**alpha`` (the plain sum when alpha = 0); ``length`` counts every generated token,
    an end-of-generation token included. ``finished``: it ended by itself ("eos" or "stop" in
    ``finish_reason``); unfinished beams were cut ("length": max_tokens, or "cancelled").
    ``text``: the visible text (an end token shows nothing; cut at a stop string)."""

    tokens: tuple[int, ...]
    steps: tuple[BeamStep, ...]
    logprob: float
    score: float
    text: str
    finished: bool
    finish_reason: str

    @property
    def length(self) -> int:
        return len(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens), "pieces": [s.piece for s in self.steps], "text": self.text,
                "logprob": self.logprob, "score": self.score, "length": self.length,
                "logprobs": [s.logprob for s in self.steps], "finished": self.finished,
                "finish_reason": self.finish_reason}

    def as_steps(self, n_prompt: int = 0) -> list[Step]:
        """The beam as Workbench steps: each token's raw probability, rank, entropy and top-N
        (a beam has no sampler chain: final = raw)."""
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out = []
        for i, st in enumerate(self.steps):
            text = dec.decode(st.piece.encode("utf-8", "surrogatepass")) if not st.piece.startswith("<0x") else ""
            top = tuple(TokenAlt(int(t), str(piece), float(q), float(q)) for t, piece, q in st.top)
            out.append(Step(index=i, position=n_prompt + i, token_id=st.token_id, token=text, piece=st.piece,
                            p_raw=st.p_raw, p_final=st.p_raw, rank=st.rank, entropy_raw=st.entropy_raw,
                            entropy_final=st.entropy_raw, kl_final_raw=0.0, top=top))
        return out


@dataclass(frozen=True)
class BeamResult:
    """The beams, best score first (at most ``width``). ``method``: "sequences" or "prefix";
    ``steps``: expansion steps done; ``evaluations``: tokens the model evaluated after the prompt;
    ``seconds`` in all and ``step_seconds`` of the steps alone (prompt excluded);
    ``cancelled``: stopped by ``cancel``; ``batched``: one decode per step (sequences)."""

    beams: tuple[Beam, ...]
    width: int
    length_penalty: float
    method: str
    prompt_tokens: int
    steps: int
    evaluations: int
    seconds: float
    step_seconds: float
    cancelled: bool = False
    batched: bool = False

    @property
    def best(self) -> Beam:
        return self.beams[0]

    @property
    def ms_per_step(self) -> float:
        return 1e3 * self.step_seconds / self.steps if self.steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "length_penalty": self.length_penalty, "method": self.method,
                "prompt_tokens": self.prompt_tokens, "steps": self.steps, "evaluations": self.evaluations,
                "seconds": round(self.seconds, 4), "ms_per_step": round(self.ms_per_step, 3),
                "batched": self.batched, "cancelled": self.cancelled, "beams": [b.to_dict() for b in self.beams]}


class _Analysis:
    """What a beam needs from one position's logits (nothing vocabulary-sized is kept)."""

    __slots__ = ("ids", "logprobs", "entropy")

    def __init__(self, logits: np.ndarray, k: int) -> None:
        x = np.asarray(logits)
        lse, self.entropy = softmax_stats(x)
        self.ids = _top_ids(x, k)
        self.logprobs = x[self.ids].astype(np.float64) - lse


@dataclass
class _Hyp:
    tokens: tuple[int, ...] = ()
    steps: tuple[BeamStep, ...] = ()
    logprob: float = 0.0
    data: bytes = b""
    reason: str = ""  # "" = live
    seq: int = -1
    analysis: _Analysis | None = None


class _SeqContext:
    """Sequences for beams and lockstep columns: a second context on the backend's loaded model
    (``backend.model.context``: the weights are shared, not loaded again) with ``n_seq``
    sequences in ONE unified KV cache (and one more reserved for retired cells with
    ``keep_cells``: beams), every position kept. Default attention settings, like the backend's own context, so its
    logits equal the backend's. Positions are tracked here by the callers (raw ``decode``)."""

    def __init__(self, backend, n_seq: int, n_cells: int, *, keep_cells: bool = False) -> None:
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


def _has_sequences(backend) -> bool:
    """Whether ``backend`` can hold several sequences in one KV cache (its ``capabilities``)."""
    return backend.capabilities.sequences


def _tokenize(backend, prompt: str, parse_special: bool) -> list[int]:
    if parse_special:
        return backend.tokenize(prompt, add_special=True, parse_special=True)
    return backend.tokenize(prompt, add_special=True)


def _text_of(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _stop_at(text: str, stop: Sequence[str]) -> int:
    at = -1
    for s in stop:
        if s:
            i = text.find(s)
            if i >= 0 and (at < 0 or i < at):
                at = i
    return at


def beam_search(backend, prompt: str, width: int, max_tokens: int, length_penalty: float = 0.0,
                eos_stops: bool = True, stop: Sequence[str] = (), cancel: threading.Event | None = None, *,
                restrict_to_top: int | None = None, top_n: int = 5, method: str = "auto", batched: bool = False,
                parse_special: bool = False) -> BeamResult:
    """Beam search of ``width`` beams for up to ``max_tokens`` tokens on a local model.

    Ranking: a beam's score is its summed ln p_raw (raw softmax at temperature 1) divided by
    length**``length_penalty`` (alpha; 0 = the plain sum). Every step, each live beam is
    expanded with its ``width`` most likely tokens (only the top ``restrict_to_top`` raw tokens
    when given: the vocabulary-limited toy case of the tests); those candidates and the beams
    already finished compete for the ``width`` places, best score first. A beam finishes at an
    end-of-generation token (when ``eos_stops``; the token is counted) or when its text contains
    a ``stop`` string; the search ends when no live beam is left among the places, at
    ``max_tokens`` (the live beams end unfinished, "length"), or at ``cancel`` (checked between
    steps; unfinished, "cancelled"). With alpha = 0 a finished beam is never overtaken (scores
    only fall as beams grow), so the result is the best ``width`` sequences this search saw.

    ``method``: "sequences" (llama.cpp sequences sharing the prompt in one KV cache; needs a
    ``LlamaCppBackend``), "prefix" (the backend's own cache with prefix reuse; any logits
    engine), or "auto" (sequences when possible). The backend's cache is untouched by
    "sequences" and left on some beam by "prefix". ``batched`` (sequences only): False (the
    default) gives each live beam's token its own ``llama_decode`` call in the shared cache, and
    every log-probability equals, bit for bit, the one a plain session computes for the same text
    (the greedy column, a branch, ``brute_force_best``); True decodes the live beams' tokens as
    ONE batch per step (one row each, read with ``llama_get_logits_ith``): 20-40 % faster at
    width 4, 1.7x at width 8, but llama.cpp's multi-row kernels move a row's log-probabilities
    by up to about 0.15 nats (the batch-shape effect of the module docstring). "prefix" is
    always exact. ``top_n``: raw alternatives kept per token (``BeamStep.top``). ValueError for
    bad arguments."""
    t0 = time.perf_counter()
    width = int(width)
    if not 1 <= width <= _MAX_WIDTH:
        raise ValueError(f"the beam width must be 1..{_MAX_WIDTH}, got {width}")
    if int(max_tokens) < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if restrict_to_top is not None and int(restrict_to_top) < 1:
        raise ValueError("restrict_to_top must be at least 1")
    if not math.isfinite(float(length_penalty)):
        raise ValueError("the length penalty must be finite")
    if is_remote(backend):
        raise RemoteUnsupported(REMOTE_LIMITS["beam"])
    if method == "auto":
        method = "sequences" if _has_sequences(backend) else "prefix"
    if method not in ("sequences", "prefix"):
        raise ValueError(f"unknown beam-search method {method!r}: 'sequences', 'prefix' or 'auto'")
    if method == "sequences" and not _has_sequences(backend):
        raise ValueError("the 'sequences' method needs a LlamaCppBackend")
    max_tokens = int(max_tokens)
    alpha = float(length_penalty)
    k_expand = width if restrict_to_top is None else min(width, int(restrict_to_top))
    k_an = max(k_expand, int(top_n))
    stop = tuple(s for s in stop if s)
    prompt_tokens = _tokenize(backend, prompt, parse_special)
    if not prompt_tokens:
        raise GenerationError("The prompt is empty: type something to continue from.")
    n_prompt = len(prompt_tokens)

    def score(logprob: float, length: int) -> float:
        return logprob / (length ** alpha) if alpha and length > 0 else logprob

    seqctx: _SeqContext | None = None
    evaluations = 0
    root = _Hyp()
    try:
        if method == "sequences":
            seqctx = _SeqContext(backend, width, n_prompt + width * max_tokens + width + 64, keep_cells=True)
            seqctx.decode([(t, i, 0, i == n_prompt - 1) for i, t in enumerate(prompt_tokens)])
            root.seq = 0
            root.analysis = _Analysis(seqctx.row(-1), k_an)  # the prompt's last token
            free = list(range(width - 1, 0, -1))
        else:
            if n_prompt + max_tokens >= backend.n_ctx:
                raise PromptTooLongError(f"The prompt ({n_prompt:,} tokens) plus {max_tokens} new tokens do not fit "
                                         f"in the context ({backend.n_ctx:,}).")
            goto_prefix(backend, prompt_tokens, [])
            root.analysis = _Analysis(backend.logits(), k_an)
            free = []
        t_steps = time.perf_counter()
        live: list[_Hyp] = [root]
        done: list[_Hyp] = []
        cancelled = False
        n_steps = 0
        while live:
            if cancel is not None and cancel.is_set():
                cancelled = True
                for h in live:
                    h.reason = "cancelled"
                break
            # candidates: every live beam's top tokens, and the finished beams
            pool: list[tuple[float, int, int, int]] = []  # (-score, group, parent, rank)
            for f_i, f in enumerate(done):
                pool.append((-score(f.logprob, len(f.tokens)), 0, f_i, 0))
            for h_i, h in enumerate(live):
                a = h.analysis
                for r in range(min(k_expand, a.ids.shape[0])):
                    pool.append((-score(h.logprob + float(a.logprobs[r]), len(h.tokens) + 1), 1, h_i, r))
            pool.sort()
            chosen = pool[:width]
            n_steps += 1
            new_done = [done[p] for _, g, p, _ in chosen if g == 0]
            kids: dict[int, list[_Hyp]] = {}
            new_live: list[_Hyp] = []
            for _, g, p, r in chosen:
                if g == 0:
                    continue
                h = live[p]
                a = h.analysis
                tok = int(a.ids[r])
                lp = float(a.logprobs[r])
                top = tuple((int(i), backend.piece(int(i)), math.exp(float(v)))
                            for i, v in zip(a.ids[:top_n], a.logprobs[:top_n]))
                st = BeamStep(tok, backend.piece(tok), lp, float(a.entropy), r + 1, top)
                eog = backend.is_eog(tok)
                data = h.data + (b"" if eog else backend.token_bytes(tok))
                c = _Hyp(h.tokens + (tok,), h.steps + (st,), h.logprob + lp, data)
                if eog and eos_stops:
                    c.reason = "eos"
                elif stop and _stop_at(data.decode("utf-8", errors="ignore"), stop) >= 0:
                    c.reason = "stop"
                elif len(c.tokens) >= max_tokens:
                    c.reason = "length"
                if c.reason in ("eos", "stop"):
                    new_done.append(c)
                elif c.reason == "length":
                    new_live.append(c)  # ends unfinished; not evaluated
                else:
                    new_live.append(c)
                    kids.setdefault(p, []).append(c)
            # give the children of the surviving parents their logits
            if method == "sequences":
                for p, h in enumerate(live):
                    if p not in kids:
                        seqctx.retire(h.seq)
                        free.append(h.seq)
                for p, cs in kids.items():
                    cs[0].seq = live[p].seq
                    for c in cs[1:]:
                        c.seq = free.pop()
                        seqctx.seq_cp(live[p].seq, c.seq)
                todo = [c for cs in kids.values() for c in cs]
                if todo and batched:
                    seqctx.decode([(c.tokens[-1], n_prompt + len(c.tokens) - 1, c.seq, True) for c in todo])
                    for i, c in enumerate(todo):
                        c.analysis = _Analysis(seqctx.row(i), k_an)
                else:
                    for c in todo:
                        seqctx.decode([(c.tokens[-1], n_prompt + len(c.tokens) - 1, c.seq, True)])
                        c.analysis = _Analysis(seqctx.row(0), k_an)
                evaluations += len(todo)
            else:
                todo = sorted((c for cs in kids.values() for c in cs), key=lambda c: c.tokens)
                for c in todo:
                    evaluations += goto_prefix(backend, prompt_tokens, c.tokens)
                    c.analysis = _Analysis(backend.logits(), k_an)
            done = new_done
            live = [c for c in new_live if not c.reason]
            ended = [c for c in new_live if c.reason]  # reached max_tokens
            done.extend(ended)
            for c in live + done:
                if c.reason:
                    c.analysis = None
        t_end = time.perf_counter()
    finally:
        if seqctx is not None:
            seqctx.close()
    beams = []
    for h in done + live:
        text = _text_of(h.data)
        if h.reason == "stop":
            at = _stop_at(text, stop)
            text = text[:at] if at >= 0 else text
        beams.append(Beam(h.tokens, h.steps, h.logprob, score(h.logprob, len(h.tokens)), text,
                          h.reason in ("eos", "stop"), h.reason or "cancelled"))
    beams.sort(key=lambda b: -b.score)
    return BeamResult(tuple(beams[:width]), width, alpha, method, n_prompt, n_steps, evaluations,
                      t_end - t0, t_end - t_steps, cancelled, method == "sequences" and batched)


@dataclass(frozen=True)
class BruteForceResult:
    """Every enumerated sequence as ``(tokens, summed ln p_raw)``, best first, and the best."""

    sequences: tuple[tuple[tuple[int, ...], float], ...]
    evaluations: int

    @property
    def best(self) -> tuple[tuple[int, ...], float]:
        return self.sequences[0]


def brute_force_best(backend, prompt: str, horizon: int, candidates_per_step: int, *, eos_stops: bool = True,
                     parse_special: bool = False) -> BruteForceResult:
    """Enumerate every continuation of up to ``horizon`` tokens whose token at each position is
    among the ``candidates_per_step`` most likely raw tokens there (a sequence ends early at an
    end-of-generation token when ``eos_stops``), score each by its summed ln p_raw (float64
    log-softmax of the backend's own single-sequence logits, the prefix reached with
    ``goto_prefix``), and return them best first. V**horizon leaves: keep both small."""
    horizon, v = int(horizon), int(candidates_per_step)
    if horizon < 1 or v < 1:
        raise ValueError("horizon and candidates_per_step must be at least 1")
    prompt_tokens = _tokenize(backend, prompt, parse_special)
    leaves: list[tuple[tuple[int, ...], float]] = []
    n_eval = 0

    def walk(tokens: tuple[int, ...], logprob: float) -> None:
        nonlocal n_eval
        n_eval += goto_prefix(backend, prompt_tokens, tokens)
        lp = _log_softmax64(backend.logits())
        ids = _top_ids(np.asarray(backend.logits()), v)
        for t in ids:
            t = int(t)
            seq, total = tokens + (t,), logprob + float(lp[t])
            if len(seq) >= horizon or (eos_stops and backend.is_eog(t)):
                leaves.append((seq, total))
            else:
                walk(seq, total)

    walk((), 0.0)
    leaves.sort(key=lambda x: -x[1])
    return BruteForceResult(tuple(leaves), n_eval)


# ============================================================================ lockstep


def first_fork(columns: Sequence[Sequence[Any]]) -> int | None:
    """The first index where the columns' tokens are not all the same (a column that has no
    token there while another has counts as different); None when they never part."""
    cols = [list(c) for c in columns]
    if len(cols) < 2:
        return None
    for k in range(max((len(c) for c in cols), default=0)):
        vals = {("t", c[k]) if k < len(c) else ("end",) for c in cols}
        if len(vals) > 1:
            return k
    return None


def column_totals(logprobs: Sequence[float | None], entropies: Sequence[float]) -> dict[str, Any]:
    """A column's figures: ``total_logprob`` (sum of ln p_raw of the chosen tokens),
    ``perplexity`` exp(-mean), ``mean_entropy`` (raw, nats) and ``length``. A missing
    log-probability (a server that sent none) makes the first two None."""
    n = len(logprobs)
    if n == 0:
        return {"total_logprob": 0.0, "perplexity": None, "mean_entropy": None, "length": 0}
    known = [x for x in logprobs if x is not None and math.isfinite(x)]
    total = math.fsum(known) if len(known) == n else None
    ents = [e for e in entropies if e is not None and math.isfinite(e)]
    perplexity = None
    if total is not None and -total / n < 709.0:  # past that exp overflows: no meaningful figure
        perplexity = math.exp(-total / n)
    return {"total_logprob": total, "perplexity": perplexity,
            "mean_entropy": math.fsum(ents) / len(ents) if ents else None, "length": n}


class _Shared:
    """What the columns of one lockstep run share: the prompt tokens, a copy of the logits after
    them (every column's step 0), the token-evaluation count, and for "sequences" the context
    holding one sequence per column."""

    def __init__(self, seqctx: "_SeqContext | None" = None) -> None:
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

    def __init__(self, backend, shared: _Shared) -> None:
        self.backend = backend
        self.shared = shared
        self.session = None
        self.n_ctx = backend.n_ctx
        self.seq = -1
        self.pending: int | None = None

    def tokenize(self, text, *, add_special=True, parse_special=False):
        if parse_special:
            return self.backend.tokenize(text, add_special=add_special, parse_special=True)
        return self.backend.tokenize(text, add_special=add_special)

    def prepare(self, tokens) -> int:
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

    def feed(self, token) -> None:
        self.pending = int(token)

    def logits(self) -> np.ndarray:
        s = self.session
        sh = self.shared
        if not s.generated:
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

    def piece(self, token):
        return self.backend.piece(token)

    def token_bytes(self, token, *, special=False):
        return self.backend.token_bytes(token, special=special)

    def is_eog(self, token):
        return self.backend.is_eog(token)


def is_remote(backend) -> bool:
    """A backend without the model's logits (an OpenAI-compatible server), by its ``capabilities``."""
    return not backend.capabilities.full_logits


def _alts(top, n: int, with_final: bool = True) -> list[dict[str, Any]]:
    return [{"id": a.id, "token": a.token, "p_raw": a.p_raw, "p_final": a.p_final if with_final else None}
            for a in list(top)[:n]]


def _step_record(col: int, strategy: Strategy, k: int, step: Step, top_n: int, reason: str | None) -> dict:
    lp = math.log(step.p_raw) if step.p_raw > 0 else None
    top = list(step.top[:top_n])
    if step.token_id is not None and all(a.id != step.token_id for a in top):
        top += [a for a in step.top[top_n:] if a.id == step.token_id]
    return {"kind": "step", "column": col, "strategy": strategy.spec, "step": k, "token": step.token,
            "piece": step.piece, "token_id": step.token_id, "p_raw": step.p_raw, "p_final": step.p_final,
            "logprob": lp, "entropy_raw": step.entropy_raw, "rank": step.rank, "estimated": step.estimated,
            "top": _alts(top, len(top)), "finish_reason": reason}


def _beam_record(col: int, strategy: Strategy, k: int, beam: Beam, text: str, reason: str | None) -> dict:
    st = beam.steps[k]
    return {"kind": "step", "column": col, "strategy": strategy.spec, "step": k, "token": text,
            "piece": st.piece, "token_id": st.token_id, "p_raw": st.p_raw, "p_final": None,
            "logprob": st.logprob, "entropy_raw": st.entropy_raw, "rank": st.rank, "estimated": False,
            "top": [{"id": i, "token": p, "p_raw": q, "p_final": None} for i, p, q in st.top],
            "finish_reason": reason}


class _Column:
    def __init__(self, index: int, strategy: Strategy) -> None:
        self.index = index
        self.strategy = strategy
        self.settings: SamplerSettings | None = None
        self.session = None
        self.beam: BeamResult | None = None
        self.remote_steps: list[Step] = []
        self.remote_fin: Finished | None = None
        self.records: list[dict] = []
        self.beam_texts: list[str] = []
        self.done = False
        self.reason = ""
        self.text = ""



def lockstep(backend, prompt: str, strategies, max_tokens: int = 32, seed: int = 42,
             cancel: threading.Event | None = None, *, top_n: int = 5, stop: Sequence[str] = (),
             beam_method: str = "auto", beam_batched: bool = False, column_method: str = "auto",
             parse_special: bool = False, messages: list[dict] | None = None) -> Generator[dict, None, dict]:
    """Run ``strategies`` (specs, a comma string or ``Strategy``) on ``prompt`` side by side.
    Returns a generator of JSON-safe records; its return value (``StopIteration.value``, or use
    ``run_lockstep``) is the summary. Arguments are checked here, before any record (ValueError,
    ``RemoteUnsupported``).

    Local model (``backend`` a ``LlamaCppBackend``): every sampled or greedy column is a
    ``GenerationSession`` with its strategy's settings, the same ``seed`` and ``max_tokens``, on
    one shared model. ``column_method`` "sequences" (the default there): one extra llama.cpp
    context on the backend's loaded model holds every column as its own sequence, the prompt
    evaluated once and shared (``seq_cp``), each column's token decoded alone at its position:
    a step costs one token per column, as separate sessions would, and the backend's own cache
    is not touched. "prefix" (any other logits engine): the columns take turns on the backend's
    single cache (``goto_prefix``; it is cleared first), each turn re-evaluating the column's
    tokens since it parted from the column before it (quadratic after an early fork; module
    docstring). Either way each column draws exactly what a plain session with its settings
    draws on an empty cache, so a seed repeats a run. Beam columns are computed whole first
    (``beam_search`` with ``beam_method`` and ``beam_batched``; not token-lockstep) and emitted
    step by step for their best beam.

    Remote (``backend`` an ``OpenAICompatBackend``): sampled columns only, each one request
    (``remote_column``) made one after the other; their records are then emitted in the same
    lockstep order (the server draws; the records arrive once every column is in). A beam
    column raises ``RemoteUnsupported`` (see ``REMOTE_LIMITS``). ``messages`` uses the chat
    endpoint instead of ``prompt``.

    Records, in this order: one ``{"kind": "column", "column", "strategy", "label", "beam",
    "settings" (None for beams)}`` per column; then for step k = 0, 1, ... one ``{"kind":
    "step", "column", "strategy", "step": k, "token" (visible text), "piece", "token_id" (None
    remotely), "p_raw", "p_final" (None for beams), "logprob" (ln p_raw), "entropy_raw" (a lower
    bound remotely), "rank", "estimated", "top": [{"id", "token", "p_raw", "p_final"}],
    "finish_reason" (None, or why the column ended at this token)}`` for every column still
    running, in column order, all of step k before any of step k+1; after the records of the
    first step where the columns' tokens differ, ``{"kind": "fork", "step": k, "tokens": [per
    column, None when ended], "groups": [[columns with the same token], ...]}``.

    Summary: ``prompt``, ``prompt_tokens``, ``seed``, ``max_tokens``, ``backend``
    ("local"/"remote"), ``cancelled``, ``steps``, ``fork_step``, ``pairwise_fork`` (matrix),
    ``seconds``, ``column_method``, ``token_evaluations`` (tokens the sampled columns made the
    model evaluate, prompt included) and ``independent_evaluations`` (what separate sessions
    would have cost: the prompt per column plus every drawn token but the last), and
    ``columns``: per column ``column``, ``strategy``, ``label``, ``text``, ``tokens``,
    ``finish_reason``, ``total_logprob``, ``perplexity``, ``mean_entropy``, ``length`` (and
    ``beam``: the ``BeamResult`` dict for beam columns).

    ``cancel`` is checked before every column's token: the records so far stand, the summary has
    ``cancelled`` True and every column's figures so far."""
    strats = parse_strategies(strategies)
    if isinstance(max_tokens, bool) or int(max_tokens) < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    max_tokens = int(max_tokens)
    remote = is_remote(backend)
    if column_method == "auto":
        column_method = "sequences" if _has_sequences(backend) else "prefix"
    if column_method not in ("sequences", "prefix"):
        raise ValueError(f"unknown column method {column_method!r}: 'sequences', 'prefix' or 'auto'")
    if column_method == "sequences" and not remote and not _has_sequences(backend):
        raise ValueError("the 'sequences' column method needs a LlamaCppBackend")
    columns = []
    for i, s in enumerate(strats):
        c = _Column(i, s)
        if not s.is_beam:
            c.settings = s.settings(seed=seed, max_tokens=max_tokens, top_n=max(1, int(top_n)), stop=stop)
            c.settings.validate()
        columns.append(c)
    if remote:
        caps = backend.server_capabilities()
        for s in strats:
            why = remote_support(s, caps)
            if why:
                raise RemoteUnsupported(f"{s.spec}: {why}")
    elif messages is not None:
        raise ValueError("messages are for remote backends; format a chat prompt with backend.format_chat")
    return _lockstep(backend, prompt, columns, max_tokens, int(seed), cancel, max(1, int(top_n)), tuple(stop),
                     (beam_method, beam_batched), column_method, parse_special, messages, remote)


def _lockstep(backend, prompt, columns: list[_Column], max_tokens, seed, cancel, top_n, stop, beam_opts,
              column_method, parse_special, messages, remote) -> Generator[dict, None, dict]:
    shared = _Shared()
    try:
        return (yield from _lockstep_body(backend, prompt, columns, max_tokens, seed, cancel, top_n, stop,
                                          beam_opts, column_method, parse_special, messages, remote, shared))
    finally:
        if shared.seqctx is not None:
            shared.seqctx.close()


def _lockstep_body(backend, prompt, columns: list[_Column], max_tokens, seed, cancel, top_n, stop, beam_opts,
                   column_method, parse_special, messages, remote, shared: _Shared) -> Generator[dict, None, dict]:
    from app.core.session import GenerationSession

    t0 = time.perf_counter()
    cancelled = False
    prompt_len = 0
    model_name = (backend.model or "") if remote else backend.info.name
    for c in columns:
        yield {"kind": "column", "column": c.index, "strategy": c.strategy.spec, "label": c.strategy.label,
               "beam": c.strategy.is_beam, "settings": c.settings.to_dict() if c.settings else None}
    # beams first, whole
    for c in columns:
        if c.strategy.is_beam and not cancelled:
            c.beam = beam_search(backend, prompt, c.strategy.width, max_tokens, c.strategy.length_penalty, True, stop,
                                 cancel, top_n=top_n, method=beam_opts[0], batched=beam_opts[1],
                                 parse_special=parse_special)
            cancelled = c.beam.cancelled
            best = c.beam.best
            # the visible text per step, decoded incrementally like a session does
            dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
            for st in best.steps:
                eog = backend.is_eog(st.token_id) if not remote else False
                c.beam_texts.append("" if eog else dec.decode(backend.token_bytes(st.token_id)))
            prompt_len = c.beam.prompt_tokens
    if remote:
        for c in columns:
            if cancelled or (cancel is not None and cancel.is_set()):
                cancelled = True
                break
            for item in remote_column(backend, prompt, c.strategy, max_tokens, seed, cancel, top_n=top_n, stop=stop,
                                      messages=messages):
                if isinstance(item, Finished):
                    c.remote_fin = item
                else:
                    c.remote_steps.append(item)
            if c.remote_fin is not None and c.remote_fin.reason == "cancelled":
                cancelled = True
    else:
        sampled = [c for c in columns if not c.strategy.is_beam]
        if sampled and not cancelled:
            n_prompt = len(_tokenize(backend, prompt, parse_special))
            if column_method == "sequences":
                shared.seqctx = _SeqContext(backend, len(sampled), n_prompt + len(sampled) * max_tokens + 64)
            else:
                backend.reset()  # from an empty cache: a seed repeats a run
        for c in sampled:
            eng = _ColumnEngine(backend, shared)
            c.session = GenerationSession(eng, prompt, c.settings, parse_special=parse_special)
            eng.session = c.session
        if not cancelled:
            for c in sampled:  # every column takes its sequence before any token is drawn
                c.session.start()
                prompt_len = len(c.session.prompt_tokens)
    k = 0
    fork_step: int | None = None
    while not cancelled:
        active = [c for c in columns if not c.done]
        if not active or k >= max_tokens:
            break
        for c in active:
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            rec = None
            if c.beam is not None:
                best = c.beam.best
                if k < best.length:
                    last = k == best.length - 1
                    reason = best.finish_reason if last else None
                    rec = _beam_record(c.index, c.strategy, k, best, c.beam_texts[k], reason)
                    c.done = last
                    c.reason = best.finish_reason
                else:
                    c.done = True
            elif remote:
                if k < len(c.remote_steps):
                    last = k == len(c.remote_steps) - 1
                    reason = (c.remote_fin.reason if c.remote_fin else "incomplete") if last else None
                    rec = _step_record(c.index, c.strategy, k, c.remote_steps[k], top_n, reason)
                    c.done = last
                    if last:
                        c.reason = reason
                        c.text = c.remote_fin.text if c.remote_fin else ""
                else:
                    c.done = True
                    c.reason = c.remote_fin.reason if c.remote_fin else "incomplete"
            else:
                s = c.session
                if s.finished is None:
                    step = s.commit()
                    fin = s.finished
                    rec = _step_record(c.index, c.strategy, k, step, top_n, fin.reason if fin else None)
                    if fin is not None:
                        c.done = True
                        c.reason = fin.reason
                else:
                    c.done = True
            if rec is not None:
                c.records.append(rec)
                yield json_safe(rec)
        if cancelled:
            break
        if fork_step is None:
            toks = [_tok_key(c.records[k]) if k < len(c.records) else None for c in columns]
            if len(set(toks)) > 1:
                fork_step = k
                groups: dict[Any, list[int]] = {}
                for i, t in enumerate(toks):
                    groups.setdefault(t, []).append(i)
                yield json_safe({"kind": "fork", "step": k,
                                  "tokens": [c.records[k]["token"] if k < len(c.records) else None for c in columns],
                                  "token_ids": [c.records[k]["token_id"] if k < len(c.records) else None
                                                for c in columns],
                                  "groups": list(groups.values())})
        k += 1
    # summary
    out_cols = []
    keys = []
    for c in columns:
        recs = c.records
        keys.append([_tok_key(r) for r in recs])
        if c.beam is not None:
            best = c.beam.best
            lps = [s.logprob for s in best.steps]
            ents = [s.entropy_raw for s in best.steps]
            tokens = list(best.tokens)
            text = best.text
            reason = best.finish_reason
        elif remote:
            lps = [r["logprob"] for r in recs]
            ents = [r["entropy_raw"] for r in recs]
            tokens = [r["token_id"] for r in recs]
            text = c.text or "".join(r["token"] for r in recs)
            reason = c.reason or ("cancelled" if cancelled else "")
        else:
            s = c.session
            if s is not None and s.finished is None:
                s.cancel()
            lps = [math.log(st.p_raw) if st.p_raw > 0 else None for st in (s.steps if s else [])]
            ents = [st.entropy_raw for st in (s.steps if s else [])]
            tokens = list(s.generated) if s else []
            text = s.text if s else ""
            reason = s.finished.reason if s and s.finished else "cancelled"
        entry = {"column": c.index, "strategy": c.strategy.spec, "label": c.strategy.label, "text": text,
                 "tokens": tokens, "finish_reason": reason, "estimated": remote, **column_totals(lps, ents)}
        entry["trace"] = _column_generation(c, prompt, prompt_len, text, reason, model_name)
        if c.beam is not None:
            entry["beam"] = c.beam.to_dict()
            for b, beam in zip(entry["beam"]["beams"], c.beam.beams):  # every beam opens in the Workbench
                b["trace"] = generation_record(prompt, NEUTRAL.replace(temperature=0.0), beam.as_steps(prompt_len),
                                               Finished(beam.finish_reason, beam.text, beam.length, 0.0), model_name)
        out_cols.append(entry)
    n = len(columns)
    pairwise = [[None if i == j else first_fork([keys[i], keys[j]]) for j in range(n)] for i in range(n)]
    sampled_lengths = [len(c.session.generated) for c in columns if c.session is not None]
    evals = shared.evaluations
    independent = sum(prompt_len + max(0, m - 1) for m in sampled_lengths)
    return json_safe({
        "prompt": prompt, "prompt_tokens": prompt_len, "seed": seed, "max_tokens": max_tokens,
        "backend": "remote" if remote else "local", "cancelled": cancelled, "steps": k,
        "fork_step": fork_step if fork_step is not None else first_fork(keys), "pairwise_fork": pairwise,
        "seconds": round(time.perf_counter() - t0, 4), "column_method": None if remote else column_method,
        "token_evaluations": evals,
        "independent_evaluations": independent, "columns": out_cols,
    })


def _column_generation(c: "_Column", prompt: str, n_prompt: int, text: str, reason: str, model: str) -> dict:
    """A column's generation record (``generation_record``): a sampled column's session steps,
    a beam column's best beam, a remote column's streamed steps."""
    if c.beam is not None:
        best = c.beam.best
        steps = best.as_steps(n_prompt)
        for st, shown in zip(range(len(steps)), c.beam_texts):  # the visible text, decoded as a session does
            steps[st] = dataclasses.replace(steps[st], token=shown)
        return generation_record(prompt, NEUTRAL.replace(temperature=0.0), steps,
                                 Finished(reason, text, len(steps), 0.0), model)
    if c.session is not None:
        return generation_record(prompt, c.settings, c.session.steps, c.session.finished, model)
    return generation_record(prompt, c.settings or NEUTRAL, c.remote_steps,
                             c.remote_fin or Finished(reason or "cancelled", text, len(c.remote_steps), 0.0), model)


def _tok_key(rec: dict) -> Any:
    return ("id", rec["token_id"]) if rec.get("token_id") is not None else ("text", rec.get("piece"))


def run_lockstep(*args, **kwargs) -> tuple[list[dict], dict]:
    """``lockstep`` drained: (records, summary)."""
    records: list[dict] = []
    summary = drain(lockstep(*args, **kwargs), records.append)
    return records, summary


# ============================================================================ branching tree


@dataclass
class BranchNode:
    """One node of a ``BranchTree``: the token on the edge from its parent (node 0, the root,
    stands for the prompt: no token, probability 1). ``p_raw`` is the model's probability of
    the token at that point (raw softmax), ``p_final`` its probability under the sampler chain
    of the run that added the node (``run``: index into ``BranchTree.runs``); ``forced``: the
    user chose it; ``top``: the alternatives at that position (``{"id", "token", "p_raw",
    "p_final"}``, top-N by raw probability), what a right-click offers; ``data``: the token's
    bytes (``path_text`` decodes them); ``estimated``: values from a server's top-N;
    ``finish_reason``: set on the node where a run ended."""

    id: int
    parent: int | None
    token_id: int | None
    piece: str
    data: bytes
    p_raw: float
    p_final: float
    entropy_raw: float = math.nan
    rank: int = 0
    forced: bool = False
    run: int = -1
    estimated: bool = False
    top: list[dict] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["data"] = self.data.hex()
        return json_safe(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BranchNode":
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        kw["data"] = bytes.fromhex(d.get("data", ""))
        for name in ("p_raw", "p_final", "entropy_raw"):
            if kw.get(name) is None:
                kw[name] = math.nan
        kw["top"] = list(kw.get("top", []))
        kw["children"] = list(kw.get("children", []))
        return cls(**kw)


class BranchTree:
    """Every branch of one prompt, as plain data (``to_dict``/``from_dict`` round-trip through
    JSON). ``prompt_tokens`` is None for a tree grown on a server (its edges then have no token
    ids). ``runs``: one dict per ``branch`` call (``kind``, ``from``, ``token_id``/``token_text``,
    ``settings``, ``seed``, ``leaf``, ``finish_reason``, ``new_nodes``). A path that comes back to
    an existing (parent, token) reuses that node: its probabilities stay those of the run that
    made it."""

    def __init__(self, prompt: str, prompt_tokens: Sequence[int] | None = None, model: str = "") -> None:
        self.prompt = prompt
        self.prompt_tokens = [int(t) for t in prompt_tokens] if prompt_tokens is not None else None
        self.model = model
        self.nodes: list[BranchNode] = [BranchNode(0, None, None, "", b"", 1.0, 1.0)]
        self.runs: list[dict[str, Any]] = []

    @classmethod
    def for_backend(cls, backend, prompt: str, *, parse_special: bool = False) -> "BranchTree":
        """An empty tree for ``prompt`` on ``backend`` (tokenized for a local model)."""
        name = getattr(getattr(backend, "info", None), "name", "") or getattr(backend, "model", "") or ""
        if is_remote(backend):
            return cls(prompt, None, name)
        return cls(prompt, _tokenize(backend, prompt, parse_special), name)

    @classmethod
    def from_steps(cls, prompt: str, prompt_tokens: Sequence[int] | None, steps: Sequence[Step | dict],
                   settings: SamplerSettings | None = None, model: str = "") -> "BranchTree":
        """A tree holding one recorded run (e.g. the window's last generation) as its first path."""
        tree = cls(prompt, prompt_tokens, model)
        tree.runs.append({"kind": "recorded", "from": 0, "settings": settings.to_dict() if settings else None,
                          "seed": settings.seed if settings else None, "leaf": 0, "finish_reason": None,
                          "new_nodes": 0})
        node = 0
        for st in steps:
            st = st if isinstance(st, Step) else Step.from_dict(st)
            node = tree.add(node, st.token_id, st.piece, st.token.encode("utf-8"), st, run=0)
        tree.runs[0]["leaf"] = node
        tree.runs[0]["new_nodes"] = len(tree.nodes) - 1
        return tree

    # ---------------------------------------------------------------- building
    def add(self, parent: int, token_id: int | None, piece: str, data: bytes | None, step: Step | None = None, *,
            p_raw: float = math.nan, p_final: float = math.nan, run: int = -1, forced: bool = False,
            top: list[dict] | None = None, entropy_raw: float = math.nan, rank: int = 0,
            estimated: bool = False) -> int:
        """Add the edge ``parent`` -> token (or find it: same token id, or same piece for id-less
        edges) and return the child's id. ``step`` fills the probabilities, ``top`` and flags."""
        if step is not None:
            p_raw, p_final, entropy_raw, rank = step.p_raw, step.p_final, step.entropy_raw, step.rank
            estimated = step.estimated
            forced = forced or step.forced
            top = _alts(step.top, len(step.top))
        if data is None:
            data = piece.encode("utf-8")
        for cid in self.nodes[parent].children:
            ch = self.nodes[cid]
            if (token_id is not None and ch.token_id == token_id) or (
                    token_id is None and ch.token_id is None and ch.piece == piece):
                return cid
        nid = len(self.nodes)
        self.nodes.append(BranchNode(nid, parent, None if token_id is None else int(token_id), piece, data,
                                     float(p_raw), float(p_final), float(entropy_raw), int(rank), bool(forced),
                                     int(run), bool(estimated), list(top or []), []))
        self.nodes[parent].children.append(nid)
        return nid

    # ---------------------------------------------------------------- reading
    def node(self, node_id: int) -> BranchNode:
        return self.nodes[node_id]

    @property
    def root(self) -> BranchNode:
        return self.nodes[0]

    def path(self, node_id: int) -> list[int]:
        """Node ids from the first token to ``node_id`` (the root excluded)."""
        out = []
        n = self.nodes[node_id]
        while n.parent is not None:
            out.append(n.id)
            n = self.nodes[n.parent]
        return out[::-1]

    def path_tokens(self, node_id: int) -> list[int | None]:
        return [self.nodes[i].token_id for i in self.path(node_id)]

    def path_generation(self, node_id: int, settings: SamplerSettings | None = None) -> dict[str, Any]:
        """The path from the root to ``node_id`` as a generation record (``generation_record``)
        that opens in the Workbench: each edge's probabilities, entropy, rank and alternatives."""
        from app.core.export import generation_record

        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        steps = []
        n_prompt = len(self.prompt_tokens or ())
        for i, nid in enumerate(self.path(node_id)):
            n = self.nodes[nid]
            top = tuple(TokenAlt(a.get("id"), str(a.get("token", "")), float(a.get("p_raw") or 0.0),
                                 float(a.get("p_final") or 0.0)) for a in n.top)
            p_raw = n.p_raw if n.p_raw is not None and math.isfinite(n.p_raw) else 0.0
            p_fin = n.p_final if n.p_final is not None and math.isfinite(n.p_final) else p_raw
            ent = n.entropy_raw if math.isfinite(n.entropy_raw) else 0.0
            steps.append(Step(index=i, position=n_prompt + i, token_id=n.token_id, token=dec.decode(n.data),
                              piece=n.piece, p_raw=p_raw, p_final=p_fin, rank=n.rank, entropy_raw=ent,
                              entropy_final=ent, kl_final_raw=0.0, top=top, forced=n.forced,
                              estimated=n.estimated))
        text = self.path_text(node_id)
        fin = Finished(self.nodes[node_id].finish_reason or "length", text, len(steps), 0.0)
        return generation_record(self.prompt, settings or NEUTRAL, steps, fin, self.model)

    def path_text(self, node_id: int) -> str:
        return b"".join(self.nodes[i].data for i in self.path(node_id)).decode("utf-8", errors="replace")

    def path_probability(self, node_id: int, *, final: bool = False) -> float:
        """The product of the edge probabilities from the root (p_raw, or p_final)."""
        return math.prod(self.nodes[i].p_final if final else self.nodes[i].p_raw for i in self.path(node_id))

    def path_logprob(self, node_id: int) -> float:
        ps = [self.nodes[i].p_raw for i in self.path(node_id)]
        return math.fsum(math.log(p) if p > 0 else -math.inf for p in ps)

    def depth(self, node_id: int) -> int:
        return len(self.path(node_id))

    def leaves(self) -> list[int]:
        return [n.id for n in self.nodes if not n.children and n.id != 0]

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"prompt": self.prompt, "prompt_tokens": self.prompt_tokens, "model": self.model,
                           "nodes": [n.to_dict() for n in self.nodes], "runs": self.runs})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BranchTree":
        tree = cls(d["prompt"], d.get("prompt_tokens"), d.get("model", ""))
        tree.nodes = [BranchNode.from_dict(n) for n in d["nodes"]]
        tree.runs = [dict(r) for r in d.get("runs", [])]
        return tree


def _branch_settings(settings: SamplerSettings | None, max_tokens: int, seed: int) -> SamplerSettings:
    st = (settings or SamplerSettings()).replace(max_tokens=int(max_tokens), seed=int(seed))
    st.validate()
    return st


def iter_branch(backend, tree: BranchTree, node_id: int, token_id: int | None = None,
                settings: SamplerSettings | None = None, max_tokens: int = 16, seed: int = 42,
                cancel: threading.Event | None = None, *, token_text: str | None = None, kind: str = "branch"
                ) -> Generator[BranchNode, None, int]:
    """Continue from ``node_id``: first with ``token_id`` when given (the road not taken;
    ``token_text`` on a server), then with tokens drawn by ``settings``' chain (a numpy
    generator seeded with ``seed``), for ``max_tokens`` tokens in all, ending early at an end
    token, a stop string of ``settings``, a full context or ``cancel``. Yields each node as it
    is added; returns the leaf's id. Every edge records p_raw and p_final under ``settings``.

    Local: the KV cache is reused up to the node (``goto_prefix``: nothing is evaluated when the
    cache is already there, the node's tokens after the last shared one otherwise); the logits
    of every step are exactly those of a plain session that had generated the same path.
    Remote: a new request continuing the text of the path (the server tokenizes it again, so its
    first tokens may be cut differently than the tree's); a forced ``token_text`` is appended to
    that text, its edge probability taken from the alternatives recorded at that position when
    they list it (NaN otherwise)."""
    st = _branch_settings(settings, max_tokens, seed)
    if node_id < 0 or node_id >= len(tree.nodes):
        raise ValueError(f"no node {node_id} in the tree")
    run = len(tree.runs)
    info: dict[str, Any] = {"kind": kind, "from": node_id, "token_id": token_id, "token_text": token_text,
                            "settings": st.to_dict(), "seed": int(seed), "leaf": node_id, "finish_reason": None,
                            "new_nodes": 0}
    tree.runs.append(info)
    n0 = len(tree.nodes)
    if is_remote(backend):
        leaf, reason = yield from _branch_remote(backend, tree, node_id, token_text, st, cancel, run)
    else:
        if token_text is not None and token_id is None:
            raise ValueError("a local branch takes a token id (token_text is for servers)")
        leaf, reason = yield from _branch_local(backend, tree, node_id, token_id, st, cancel, run)
    info["leaf"] = leaf
    info["finish_reason"] = reason
    info["new_nodes"] = len(tree.nodes) - n0
    if leaf != node_id:
        tree.nodes[leaf].finish_reason = reason
    return leaf


def _branch_local(backend, tree, node_id, token_id, st: SamplerSettings, cancel, run):
    if tree.prompt_tokens is None:
        raise ValueError("this tree was grown on a server (no prompt tokens): continue it there")
    path = tree.path_tokens(node_id)
    if any(t is None for t in path):
        raise ValueError("the path to this node has no token ids (it came from a server)")
    if token_id is not None and not 0 <= int(token_id) < backend.n_vocab:
        raise ValueError(f"token id {token_id} is outside the vocabulary (0..{backend.n_vocab - 1})")
    history = tree.prompt_tokens + [int(t) for t in path]
    goto_prefix(backend, tree.prompt_tokens, path)
    rng = np.random.Generator(np.random.PCG64(st.seed))
    node, data, reason = node_id, b"", "length"
    for i in range(st.max_tokens):
        if cancel is not None and cancel.is_set():
            reason = "cancelled"
            break
        if len(history) >= backend.n_ctx:
            reason = "context"
            break
        window = history[-st.penalty_last_n:] if st.penalty_last_n > 0 else ()
        res = apply_chain(backend.logits(), st, window, top_n=st.top_n)
        forced = i == 0 and token_id is not None
        tok = int(token_id) if forced else int(res.draw(rng))
        step = res.to_step(tok, index=len(history) - len(tree.prompt_tokens), position=len(history), text="",
                           piece=backend.piece(tok), piece_of=backend.piece, forced=forced)
        eog = backend.is_eog(tok)
        raw = b"" if eog else backend.token_bytes(tok)
        node = tree.add(node, tok, step.piece, raw, step, run=run, forced=forced)
        history.append(tok)
        data += raw
        if eog:
            reason = "eos"
        elif st.stop and _stop_at(data.decode("utf-8", errors="ignore"), st.stop) >= 0:
            reason = "stop"
        elif i + 1 < st.max_tokens:
            # fed before the node is yielded: run as one of parallel sequences, every job's token
            # is queued when the round's first logits are asked for, so a round is ONE decode
            backend.feed(tok)
        yield tree.nodes[node]
        if reason in ("eos", "stop"):
            break
    return node, reason


def _branch_remote(backend, tree, node_id, token_text, st: SamplerSettings, cancel, run):
    node = node_id
    text = tree.prompt + tree.path_text(node_id)
    budget = st.max_tokens
    if token_text:
        p = math.nan
        for cid in tree.nodes[node_id].children:  # the alternatives recorded at this position
            for a in tree.nodes[cid].top:
                if a.get("token") == token_text:
                    p = a.get("p_raw", math.nan)
                    break
            if not math.isnan(p):
                break
        node = tree.add(node, None, token_text, token_text.encode("utf-8"), p_raw=p, p_final=math.nan, run=run,
                        forced=True, estimated=True)
        text += token_text
        budget -= 1
        yield tree.nodes[node]
        if budget <= 0:
            return node, "length"
    reason = "length"
    for item in backend.stream(text, st.replace(max_tokens=budget), cancel=cancel):
        if isinstance(item, Finished):
            reason = item.reason
            break
        node = tree.add(node, None, item.piece, item.token.encode("utf-8"), item, run=run)
        yield tree.nodes[node]
    return node, reason


def branch(backend, tree: BranchTree, node_id: int, token_id: int | None = None,
           settings: SamplerSettings | None = None, max_tokens: int = 16, seed: int = 42,
           cancel: threading.Event | None = None, *, token_text: str | None = None) -> int:
    """``iter_branch`` drained: the id of the new path's last node."""
    return drain(iter_branch(backend, tree, node_id, token_id, settings, max_tokens, seed, cancel,
                             token_text=token_text))


def children(backend, tree: BranchTree, node_id: int, n: int, settings: SamplerSettings | None = None,
             max_tokens: int = 16, seed: int = 42, cancel: threading.Event | None = None, *,
             max_parallel: int = 1) -> list[int]:
    """Sample ``n`` continuations from one node (child i with seed ``seed + i``); their leaf ids
    (a continuation identical to an earlier one ends on the same leaf). Stops early at ``cancel``.

    ``max_parallel`` > 1 (local models): up to that many children at once as parallel sequences
    of one batched context on the backend's model (each from the node's path, with its own seed;
    llama.cpp's batch noise can move a draw now and then against one at a time); the backend's own
    cache is not touched then."""
    if int(n) < 1:
        raise ValueError("n must be at least 1")
    n = int(n)
    if int(max_parallel) > 1 and n > 1 and not is_remote(backend) and _has_sequences(backend):
        return _parallel_children(backend, tree, node_id, n, settings, max_tokens, seed, cancel,
                                  min(int(max_parallel), n))
    leaves = []
    for i in range(n):
        if cancel is not None and cancel.is_set():
            break
        leaves.append(drain(iter_branch(backend, tree, node_id, None, settings, max_tokens, int(seed) + i, cancel,
                                        kind="child")))
    return leaves


def _parallel_children(backend, tree, node_id, n, settings, max_tokens, seed, cancel, width) -> list[int]:
    from app.core.parallel import JobResult, run_jobs

    depth = len(tree.prompt_tokens or ()) + len(tree.path_tokens(node_id)) + int(max_tokens) + 8
    ctx = backend.model.context(n_ctx=min(max(256, depth * width), max(backend.n_ctx, 32768)), n_seq=width,
                                n_threads=getattr(getattr(backend, "info", None), "n_threads", None))
    jobs = [(lambda seq, i=i: iter_branch(seq, tree, node_id, None, settings, max_tokens, int(seed) + i, cancel,
                                          kind="child")) for i in range(n)]
    leaves: list[int | None] = [None] * n
    try:
        for idx, item in run_jobs(jobs, context=ctx, max_parallel=width, cancel=cancel):
            if isinstance(item, JobResult):
                if item.error is not None:
                    raise item.error
                leaves[idx] = item.value
    finally:
        ctx.close()
    return [x for x in leaves if x is not None]


# ============================================================================ A/B comparison


def _as_step(s: Step | dict) -> Step:
    return s if isinstance(s, Step) else Step.from_dict(s)


def _dist(step: Step, keyed: Callable[[TokenAlt], Any], which: str) -> tuple[dict[Any, float], float, float]:
    """(probabilities of the shown tokens, mass outside them, the smallest shown probability)."""
    ps: dict[Any, float] = {}
    for a in step.top:
        p = a.p_final if which == "final" else a.p_raw
        p = min(max(float(p), 0.0), 1.0) if p is not None and math.isfinite(p) else 0.0
        ps.setdefault(keyed(a), p)
    outside = max(0.0, 1.0 - math.fsum(ps.values()))
    return ps, outside, min(ps.values()) if ps else 0.0


def step_distance(a: Step | dict, b: Step | dict, which: str = "final") -> dict[str, Any]:
    """Distance between two steps' next-token distributions over the union U of their top-N.

    ``which``: "final" (what each run sampled from; equals raw for a server) or "raw". A token
    of U missing from one side's top-N gets, on that side, an equal share of that side's mass
    outside its top-N, capped at its smallest shown probability (an unseen token is no more
    likely than a shown one); then each side is renormalised over U. Returned: ``kl_ab`` =
    KL(A || B) and ``kl_ba`` (nats; inf when one side gives 0 where the other does not),
    ``tv`` (total variation), ``js`` (Jensen-Shannon, nats), ``mass_outside_a``/``_b`` (each
    side's mass outside its own top-N), ``n_union``, ``agree`` (same chosen token) and the two
    chosen tokens. Tokens are matched by id when every alternative has one, else by text."""
    a, b = _as_step(a), _as_step(b)
    if which not in ("final", "raw"):
        raise ValueError("which must be 'final' or 'raw'")
    by_id = all(x.id is not None for x in a.top + b.top) and a.token_id is not None and b.token_id is not None
    keyed = (lambda x: x.id) if by_id else (lambda x: x.token)
    pa, oa, ma = _dist(a, keyed, which)
    pb, ob, mb = _dist(b, keyed, which)
    union = list(dict.fromkeys(list(pa) + list(pb)))

    def filled(p: dict, outside: float, smallest: float) -> np.ndarray:
        missing = [k for k in union if k not in p]
        share = min(smallest, outside / len(missing)) if missing else 0.0
        v = np.array([p.get(k, share) for k in union], dtype=np.float64)
        s = v.sum()
        return v / s if s > 0 else v

    va, vb = filled(pa, oa, ma), filled(pb, ob, mb)

    def kl(p: np.ndarray, q: np.ndarray) -> float:
        m = p > 0
        if np.any(q[m] <= 0):
            return math.inf
        return float(np.sum(p[m] * np.log(p[m] / q[m])))

    mid = 0.5 * (va + vb)
    key_a = a.token_id if by_id else a.token
    key_b = b.token_id if by_id else b.token
    return {"kl_ab": kl(va, vb), "kl_ba": kl(vb, va), "tv": 0.5 * float(np.abs(va - vb).sum()),
            "js": 0.5 * kl(va, mid) + 0.5 * kl(vb, mid), "mass_outside_a": oa, "mass_outside_b": ob,
            "n_union": len(union), "agree": key_a == key_b, "token_a": a.token, "token_b": b.token,
            "token_id_a": a.token_id, "token_id_b": b.token_id}


def ab_compare(steps_a: Sequence[Step | dict], steps_b: Sequence[Step | dict], which: str = "final") -> dict:
    """Compare two recorded runs step by step (``Step`` lists or their ``to_dict``; local or
    remote). Per step k < min(len): ``step_distance`` plus ``step`` and ``after_fork`` (the
    runs had already parted before k, so the two distributions follow different texts).
    Summary: ``steps``, ``first_fork`` (first k whose chosen tokens differ; None), ``agreement``
    (fraction of compared steps with the same token), ``n_compared``, ``len_a``, ``len_b``,
    means of ``kl_ab``/``tv``/``js`` over the steps up to and including the fork (same text
    before them: ``mean_*_same_context``) and over all compared steps (``mean_*``; KL means
    are inf when any term is), ``which``. JSON-safe (inf -> None)."""
    sa, sb = [_as_step(s) for s in steps_a], [_as_step(s) for s in steps_b]
    n = min(len(sa), len(sb))
    rows = []
    fork = None
    for k in range(n):
        d = step_distance(sa[k], sb[k], which)
        d = {"kind": "ab_step", "step": k, "after_fork": fork is not None and k > fork, **d}
        if fork is None and not d["agree"]:
            fork = k
        rows.append(d)
    if fork is None and len(sa) != len(sb):
        fork = n

    def mean(key: str, rs: list[dict]) -> float | None:
        vals = [r[key] for r in rs]
        return math.fsum(vals) / len(vals) if vals else None

    same = [r for r in rows if not r["after_fork"]]
    out = {"which": which, "steps": rows, "first_fork": fork, "n_compared": n, "len_a": len(sa), "len_b": len(sb),
           "agreement": (sum(r["agree"] for r in rows) / n) if n else None}
    for key in ("kl_ab", "kl_ba", "tv", "js"):
        out[f"mean_{key}"] = mean(key, rows)
        out[f"mean_{key}_same_context"] = mean(key, same)
    return json_safe(out)


def _run_steps(backend, prompt: str, settings: SamplerSettings, cancel, parse_special: bool,
               messages: list[dict] | None) -> list[Step]:
    if is_remote(backend):
        items = backend.stream(None if messages else prompt, settings, messages=messages, cancel=cancel)
        return [it for it in items if isinstance(it, Step)]
    from app.core.session import GenerationSession

    backend.reset()
    session = GenerationSession(backend, prompt, settings, parse_special=parse_special)
    return [it for it in session.run(cancel) if isinstance(it, Step)]


def ab_run(backend_a, backend_b, prompt: str, settings_a: SamplerSettings, settings_b: SamplerSettings,
           cancel: threading.Event | None = None, *, which: str = "final", parse_special: bool = False,
           messages: list[dict] | None = None) -> dict:
    """Make run A then run B of ``prompt`` (two models, or one model with two settings; local
    runs start from an empty cache, remote ones are one request each) and ``ab_compare`` them.
    The result also holds the runs as ``a`` and ``b`` (lists of ``Step.to_dict``). Use
    ``top_n`` of 10-20 in the settings: the distances only see the union of the top-N."""
    steps_a = _run_steps(backend_a, prompt, settings_a, cancel, parse_special, messages)
    steps_b = _run_steps(backend_b, prompt, settings_b, cancel, parse_special, messages)
    out = ab_compare(steps_a, steps_b, which)
    out["a"] = [json_safe(s.to_dict()) for s in steps_a]
    out["b"] = [json_safe(s.to_dict()) for s in steps_b]
    return out


# ============================================================================ remote


#: What a server cannot do in this lab, and why (the window greys these out with the reason).
REMOTE_LIMITS = {
    "beam": "beam search needs the model's logits for every beam: only for local models",
    "exact": "exact distributions need the model's whole next-token distribution; a server shows only "
             "its top-N log-probabilities: only for local models",
    "typical": "typical-p is not among the sampler fields sent to servers",
    "top-k": "the server did not accept top_k in the capability probe",
    "min-p": "the server did not accept min_p in the capability probe",
    "branch-logits": "a server branch is a new request continuing the text: the KV cache and the exact "
                     "token boundaries are the server's",
}


class RemoteUnsupported(ValueError):
    """A strategy or feature a remote backend cannot take part in (the message says why)."""


def remote_support(strategy: Strategy | str, caps=None) -> str | None:
    """None when a server can run ``strategy`` as a sampled column, else the reason. ``caps``: the
    backend's ``ServerCapabilities`` (None = not probed: top-k and min-p then need a probe)."""
    s = strategy if isinstance(strategy, Strategy) else parse_strategy(strategy)
    if s.kind == "beam":
        return REMOTE_LIMITS["beam"]
    if s.kind == "typical":
        return REMOTE_LIMITS["typical"]
    if s.kind in ("top-k", "min-p"):
        field_name = s.kind.replace("-", "_")
        if caps is None:
            return f"{s.kind} is sent only to servers probed to accept it: probe the server first"
        if field_name not in caps.accepted:
            return REMOTE_LIMITS[s.kind]
    return None


def remote_column(backend, prompt: str | None, strategy: Strategy | str, max_tokens: int = 32, seed: int = 42,
                  cancel: threading.Event | None = None, *, top_n: int = 5, stop: Sequence[str] = (),
                  messages: list[dict] | None = None) -> Iterator[Step | Finished]:
    """A sampled column on an OpenAI-compatible server: the strategy's settings (seed sent when
    the server accepts one) streamed as ``Step``s (``token_id`` None, top-N alternatives,
    ``estimated``) and a ``Finished``. ``RemoteUnsupported`` (before any request) for beam
    search, typical-p, and top-k/min-p on a server that did not accept them (an unprobed backend
    is probed first for those two)."""
    s = strategy if isinstance(strategy, Strategy) else parse_strategy(strategy)
    if not is_remote(backend):
        raise ValueError("remote_column needs an OpenAI-compatible backend; use lockstep for a local model")
    caps = backend.server_capabilities()
    if caps is None and s.kind in ("top-k", "min-p"):
        caps = backend.probe()
    why = remote_support(s, caps)
    if why:
        raise RemoteUnsupported(f"{s.spec}: {why}")
    st = s.settings(seed=seed, max_tokens=max_tokens, top_n=top_n, stop=stop)
    st.validate()
    return backend.stream(None if messages else prompt, st, messages=messages, cancel=cancel)
