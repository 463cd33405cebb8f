"""Beam search and its brute-force check, on local models.

Owns: ``beam_search`` -> ``BeamResult`` (``Beam``, ``BeamStep``): beams ranked by their summed
natural-log raw probabilities (softmax of the logits at temperature 1, whatever a sampler would
do), optionally length-normalised. Two ways to get the beams' logits (``method``):
``"sequences"`` (the default for ``LlamaCppBackend``): a second llama.cpp context on the
backend's already loaded model (weights shared, not loaded again; ``kv._SeqContext``) with
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
visited in sorted order). Costs: docs/BENCHMARKS.md ("Decoding lab").

``brute_force_best`` -> ``BruteForceResult``: every continuation over the top-V tokens at each
position up to a short horizon, scored independently with the backend's single sequence; the
check of beam search.

Threads: runs on the thread that calls it, which must own the backend (the lab's worker, the
main thread in ``samplescope compare``); the "sequences" context is created and freed inside
``beam_search`` on that thread. ``cancel`` (a ``threading.Event``) is checked between steps;
the beams so far are kept and marked cancelled. No Qt.
"""

from __future__ import annotations

import codecs
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from app.core.sampling import softmax_stats
from backends.base import GenerationError, PromptTooLongError, Step, TokenAlt

from .kv import _has_sequences, _SeqContext, _stop_at, _tokenize, goto_prefix
from .remote import REMOTE_LIMITS, RemoteUnsupported, is_remote
from .strategies import _MAX_WIDTH

if TYPE_CHECKING:
    from backends.kinds import Backend, LocalEngine

__all__ = ["BeamStep", "Beam", "BeamResult", "beam_search", "BruteForceResult", "brute_force_best"]


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


def _text_of(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def beam_search(backend: Backend, prompt: str, width: int, max_tokens: int, length_penalty: float = 0.0,
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
    by up to about 0.15 nats (the batch-shape effect of the ``kv`` module docstring). "prefix" is
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
                assert a is not None, "every live beam was given its logits' analysis"
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
                assert a is not None, "every live beam was given its logits' analysis"
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
                assert seqctx is not None, "the 'sequences' method opened its context before the first step"
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


def brute_force_best(backend: LocalEngine, prompt: str, horizon: int, candidates_per_step: int, *,
                     eos_stops: bool = True, parse_special: bool = False) -> BruteForceResult:
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
