"""Prompt X-ray, headless: every token of a text scored by the model given everything before it.

Owns ``score_text`` -> ``ScoreResult``: the text's tokens (a prompt, and optionally a
continuation tokenized after it), each with its log-probability in nats under the raw
distribution (no sampler: the model's own belief), its rank and the top alternatives; the first
token (the BOS, which nothing precedes) has none. The perplexity is exp of minus the mean
log-probability over the scored tokens (the continuation's alone when one is given). One
evaluation of the whole text with logits at every position (``teacher_forcing.forced_logits``).

``score_remote``: the same from a server that echoes a prompt's log-probabilities (the
capability probe finds out: ``Capabilities.prompt_logprobs``). The server tokenizes the whole
text at once and reports only its top-N per token, so there a token's ``rank`` beyond the top-N
is ``len(top) + 1``, its entropy a lower bound (``estimated``), and its id unknown (None); the
first token the server echoes has no score (llama-cpp-python's server does not echo the BOS, so
the text's first word is the unscored one).

Runs on the calling thread (the CLI's main thread; the model worker in the window); no Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.base import GenerationError, Step, TokenAlt
from backends.openai_compat.logprobs import entropy_lower_bound, piece_text, probability
from backends.text import Utf8Stream

from .teacher_forcing import forced_logits

if TYPE_CHECKING:
    import threading

    from backends.kinds import LocalEngine, RemoteEngine

__all__ = ["ScoredToken", "ScoreResult", "score_text", "score_remote"]


@dataclass(frozen=True)
class ScoredToken:
    """One token of the text: ``position``, ``token_id``, ``token`` (its text), ``logprob``
    (nats, None for the first), ``rank`` (1 = the model's favourite there; None for the first),
    ``top`` ((token id, text, probability) of the most likely tokens there), ``continuation``
    (part of the continuation rather than the prompt)."""

    position: int
    token_id: int | None
    token: str
    logprob: float | None
    rank: int | None
    top: tuple[tuple[int | None, str, float], ...]
    continuation: bool
    #: the entropy (nats) of the distribution the token was drawn from (NaN for the first)
    entropy: float = math.nan
    #: the text the token adds (a token holding part of a UTF-8 character adds "" and the next the whole)
    text: str = ""
    #: from a server's top-N: the rank beyond it is len(top) + 1, the entropy a lower bound
    estimated: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {"position": self.position, "token_id": self.token_id, "token": self.token, "logprob": self.logprob,
             "rank": self.rank, "top": [{"id": i, "token": t, "p": p} for i, t, p in self.top],
             "continuation": self.continuation}
        if self.estimated:
            d["estimated"] = True
        return d


@dataclass(frozen=True)
class ScoreResult:
    tokens: tuple[ScoredToken, ...]
    n_scored: int  # the tokens the perplexity is over
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
            if all(a.id != t.token_id if t.token_id is not None else a.token != t.token for a in top):
                top += (TokenAlt(t.token_id, t.token, p, p),)
            unseen = max(0.0, 1.0 - math.fsum(a.p_raw for a in top)) if t.estimated else 0.0
            out.append(Step(index=t.position - 1, position=t.position, token_id=t.token_id, token=t.text,
                            piece=t.token, p_raw=p, p_final=p, rank=t.rank, entropy_raw=t.entropy,
                            entropy_final=t.entropy, kl_final_raw=0.0, top=top, kept=0, forced=True,
                            estimated=t.estimated, unseen_mass=unseen))
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
    out: list[ScoredToken] = [ScoredToken(0, toks[0], model.piece(toks[0]), None, None, (), n_prompt == 0)]
    utf8 = Utf8Stream()
    for i, row in forced_logits(backend, toks, chunk=chunk, cancel=cancel):  # position i predicts token i + 1
        lg = np.asarray(row, dtype=np.float64)
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
                               int(np.count_nonzero(lg > lg[nxt])) + 1, top, i + 1 >= n_prompt, entropy, text))
    scored = [t for t in out if t.logprob is not None and (t.continuation or not continuation)]
    total = float(sum(t.logprob for t in scored if t.logprob is not None))
    ppl = math.exp(-total / len(scored)) if scored else math.nan
    return ScoreResult(tuple(out), len(scored), total, ppl, backend.info.name)


def score_remote(backend: RemoteEngine, prompt: str, continuation: str = "", *, top_n: int = 5,
                 cancel: threading.Event | None = None) -> ScoreResult:
    """Score ``prompt`` (+ ``continuation``, sent as one text) on a server that echoes prompt
    log-probabilities (``OpenAICompatBackend.score_prompt``): the same records as
    ``score_text``, estimated from the server's top-N (see the module docstring). A token
    counts as the continuation's when it starts at or after the end of ``prompt``."""
    if not prompt:
        raise GenerationError("The prompt is empty: type something to score.")
    text = prompt + continuation
    echoed = backend.score_prompt(text, top_n=top_n, cancel=cancel)
    out: list[ScoredToken] = []
    utf8 = Utf8Stream()
    for pos, e in enumerate(echoed):
        t = e.token
        piece = piece_text(t.text, t.bytes)
        shown = utf8.push(t.bytes) if t.bytes is not None else utf8.push_text(t.text)
        is_cont = bool(continuation) and e.offset >= len(prompt)
        if pos == 0 or t.logprob is None:
            out.append(ScoredToken(pos, t.id, piece, None, None, (), is_cont, math.nan, shown, True))
            continue
        best: dict[tuple, tuple[int | None, str, float]] = {}
        for a in t.top:  # one entry per token, the most likely value kept
            key = (a.id, a.bytes, a.text)
            q = probability(a.logprob)
            if key not in best or q > best[key][2]:
                best[key] = (a.id, piece_text(a.text, a.bytes), q)
        alts = sorted(best.values(), key=lambda x: -x[2])
        rank = next((i + 1 for i, (aid, atext, _) in enumerate(alts)
                     if (aid == t.id if aid is not None and t.id is not None else atext == piece)), len(alts) + 1)
        top = tuple(alts[:top_n])
        out.append(ScoredToken(pos, t.id, piece, float(t.logprob), rank, top, is_cont,
                               entropy_lower_bound([x[2] for x in alts], top_n), shown, True))
    scored = [t for t in out if t.logprob is not None and (t.continuation or not continuation)]
    total = float(sum(t.logprob for t in scored if t.logprob is not None))
    ppl = math.exp(-total / len(scored)) if scored else math.nan
    return ScoreResult(tuple(out), len(scored), total, ppl, backend.model or "")
