"""Prompt X-ray, headless: every token of a text scored by the model given everything before it.

Owns ``score_text`` -> ``ScoreResult``: the text's tokens (a prompt, and optionally a
continuation tokenized after it), each with its log-probability in nats under the raw
distribution (no sampler: the model's own belief), its rank and the top alternatives; the first
token (the BOS, which nothing precedes) has none. The perplexity is exp of minus the mean
log-probability over the scored tokens (the continuation's alone when one is given). One
evaluation of the whole text in a context of its own, with logits at every position, in chunks
of ``chunk`` positions (a 262,144-token vocabulary costs 1 MB of logits per position, so the
chunk bounds the memory).

Runs on the calling thread (the CLI's main thread; a worker in the window) with a local model;
no Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.base import GenerationError, Step, TokenAlt
from backends.text import Utf8Stream

if TYPE_CHECKING:
    import threading

    from backends.kinds import LocalEngine

__all__ = ["ScoredToken", "ScoreResult", "score_text"]


@dataclass(frozen=True)
class ScoredToken:
    """One token of the text: ``position``, ``token_id``, ``token`` (its text), ``logprob``
    (nats, None for the first), ``rank`` (1 = the model's favourite there; None for the first),
    ``top`` ((token id, text, probability) of the most likely tokens there), ``continuation``
    (part of the continuation rather than the prompt)."""

    position: int
    token_id: int
    token: str
    logprob: float | None
    rank: int | None
    top: tuple[tuple[int, str, float], ...]
    continuation: bool
    #: the entropy (nats) of the distribution the token was drawn from (NaN for the first)
    entropy: float = math.nan
    #: the text the token adds (a token holding part of a UTF-8 character adds "" and the next the whole)
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "token_id": self.token_id, "token": self.token, "logprob": self.logprob,
                "rank": self.rank, "top": [{"id": i, "token": t, "p": p} for i, t, p in self.top],
                "continuation": self.continuation}


@dataclass(frozen=True)
class ScoreResult:
    tokens: tuple[ScoredToken, ...]
    n_scored: int
    total_logprob: float
    perplexity: float
    model: str

    def steps(self) -> list[Step]:
        """The scored tokens after the first as ``Step`` records (raw = final: no sampler), so
        the Workbench views show the prompt like a generation: coloured by probability, the
        alternatives on hover, the surprisal curve."""
        out = []
        for t in self.tokens[1:]:
            assert t.logprob is not None and t.rank is not None
            p = math.exp(t.logprob)
            top = tuple(TokenAlt(i, tok, q, q) for i, tok, q in t.top)
            if all(a.id != t.token_id for a in top):
                top += (TokenAlt(t.token_id, t.token, p, p),)
            out.append(Step(index=t.position - 1, position=t.position, token_id=t.token_id, token=t.text,
                            piece=t.token, p_raw=p, p_final=p, rank=t.rank, entropy_raw=t.entropy,
                            entropy_final=t.entropy, kl_final_raw=0.0, top=top, kept=0, forced=True))
        return out

    def summary(self) -> dict[str, Any]:
        return {"n_tokens": len(self.tokens), "n_scored": self.n_scored, "total_logprob": self.total_logprob,
                "perplexity": self.perplexity, "model": self.model}


def score_text(backend: LocalEngine, prompt: str, continuation: str = "", *, top_n: int = 5, chunk: int = 32,
               cancel: threading.Event | None = None) -> ScoreResult:
    """Score ``prompt`` (+ ``continuation``) on ``backend``'s model (a local
    ``LlamaCppBackend`` or engine ``Sequence``: its ``model`` makes a context of its own)."""
    if not prompt:
        raise GenerationError("The prompt is empty: type something to score.")
    model = backend.model
    toks = [int(t) for t in model.tokenize(prompt, add_special=True)]
    n_prompt = len(toks)
    if continuation:
        toks += [int(t) for t in model.tokenize(continuation, add_special=False)]
    n = len(toks)
    if n < 2:
        raise GenerationError("The text is a single token: nothing precedes it to score it by.")
    ctx = model.context(n_ctx=max(16, n + 1), n_batch=max(1, chunk), n_threads=backend.info.n_threads or None)
    out: list[ScoredToken] = [ScoredToken(0, toks[0], model.piece(toks[0]), None, None, (), n_prompt == 0)]
    utf8 = Utf8Stream()
    try:
        for start in range(0, n - 1, chunk):  # positions start .. end-1 predict tokens start+1 .. end
            if cancel is not None and cancel.is_set():
                break
            stop = min(n - 1, start + chunk)
            rows = ctx.decode([(toks[i], i, 0, True) for i in range(start, stop)])
            for j, i in enumerate(range(start, stop)):
                lg = np.asarray(ctx.row(rows[j]), dtype=np.float64)
                nxt = toks[i + 1]
                m = float(lg.max())
                lse = m + math.log(float(np.exp(lg - m).sum()))
                top_ids = np.argpartition(-lg, min(top_n, lg.shape[0] - 1))[:top_n]
                top_ids = top_ids[np.argsort(-lg[top_ids], kind="stable")]
                top = tuple((int(t), model.piece(int(t)), math.exp(float(lg[t]) - lse)) for t in top_ids)
                w = np.exp(lg - lse)
                entropy = max(0.0, float(lse - np.dot(w, lg)))
                text = "" if model.is_eog(nxt) else utf8.push(model.token_bytes(nxt))
                out.append(ScoredToken(i + 1, nxt, model.piece(nxt), float(lg[nxt]) - lse,
                                       int(np.count_nonzero(lg > lg[nxt])) + 1, top, i + 1 >= n_prompt,
                                       entropy, text))
    finally:
        ctx.close()
    scored = [t for t in out if t.logprob is not None and (t.continuation or not continuation)]
    total = float(sum(t.logprob for t in scored if t.logprob is not None))
    ppl = math.exp(-total / len(scored)) if scored else math.nan
    return ScoreResult(tuple(out), len(scored), total, ppl, backend.info.name)
