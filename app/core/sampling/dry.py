"""DRY ("don't repeat yourself"): the penalty on tokens that would extend a repeat.

Owns ``DryBreakers`` (the sequence breakers as token sequences, ``resolve_dry_breakers``),
``dry_penalties`` (which token gets which penalty, from the recent tokens) and the stage
``_stage_dry`` that subtracts them. A port of llama.cpp's ``llama_sampler_dry`` of the pinned
version (itself KoboldCpp's, by pi6am): the same restart-sequence scan, the same reverse
Z-algorithm over the last ``dry_penalty_last_n`` tokens, the same penalty
``multiplier * base ** (length - allowed_length)`` (exponent clamped so it stays finite),
with llama.cpp's float32 / double mix, so the penalised logits match llama.cpp's bit for bit.

A breaker text stops repeats at the places it occurs: each token whose text contains it, or
ends with its beginning (then the rest of the breaker, tokenized, must follow), is a "head";
llama.cpp finds them by detokenizing the whole vocabulary once, as ``resolve_dry_breakers``
does from the engine's token texts (about 0.3 s for 262,144 tokens, cached per vocabulary).

Any thread (pure Python and numpy); no Qt.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .numeric import _F32
from .stages import _Cands

__all__ = ["DryBreakers", "NO_BREAKERS", "dry_active", "dry_penalties", "resolve_dry_breakers"]

#: llama.cpp's limits: a breaker longer than this many bytes is cut, a tail is at most this many tokens
MAX_CHAR_LEN = 40
MAX_SEQ_LEN = 20


@dataclass(frozen=True)
class DryBreakers:
    """Sequence breakers as tokens: ``heads`` maps a head token to the tails (token tuples,
    the empty tuple for a breaker the head holds whole) that complete a breaker after it."""

    heads: Mapping[int, tuple[tuple[int, ...], ...]]


NO_BREAKERS = DryBreakers({})

_CACHE: dict[tuple[int, tuple[str, ...]], tuple[object, DryBreakers]] = {}
_CACHE_LOCK = threading.Lock()


def resolve_dry_breakers(breakers: Sequence[str], vocab: Sequence[bytes],
                         tokenize: Callable[[str], Sequence[int]]) -> DryBreakers:
    """The breakers as token sequences over ``vocab`` (each token's bytes, control tokens by
    their names, as llama.cpp's ``detokenize(token, special=true)``); ``tokenize`` turns a
    breaker's remainder into tokens (no special tokens). Cached per (vocab object, breakers)."""
    key = (id(vocab), tuple(breakers))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] is vocab:
            return hit[1]
    heads: dict[int, list[tuple[int, ...]]] = {}

    def add(tok: int, tail: tuple[int, ...]) -> None:
        tails = heads.setdefault(tok, [])
        if tail not in tails:
            tails.append(tail)

    for text in breakers:
        b = text.encode("utf-8")[:MAX_CHAR_LEN]
        if not b:
            continue
        first = b[:1]
        for tok, word in enumerate(vocab):
            if b in word:
                add(tok, ())
                continue
            if len(b) == 1:
                continue  # a one-byte breaker is inside the word or nowhere
            pos = word.find(first)
            while pos >= 0:
                rest = word[pos:]  # shorter than b (else b would be in the word): is it b's beginning?
                if b.startswith(rest):
                    tail = b[len(rest):].decode("utf-8", "ignore")
                    add(tok, tuple(int(t) for t in tokenize(tail))[:MAX_SEQ_LEN])
                pos = word.find(first, pos + 1)
    out = DryBreakers({k: tuple(v) for k, v in heads.items()})
    with _CACHE_LOCK:
        if len(_CACHE) >= 8:
            _CACHE.clear()
        _CACHE[key] = (vocab, out)
    return out


def dry_active(multiplier: float, base: float, last_n: int) -> bool:
    """llama.cpp's rule: DRY acts with a multiplier other than 0, a base of at least 1 and a window."""
    return bool(_F32(multiplier) != 0 and _F32(base) >= 1 and last_n > 0)


def dry_penalties(history: Sequence[int], multiplier: float, base: float, allowed_length: int, last_n: int,
                  breakers: DryBreakers = NO_BREAKERS) -> dict[int, np.float32]:
    """Token id -> the penalty DRY subtracts from its logit, given the tokens so far
    (``history``, oldest first; llama.cpp keeps the last ``last_n`` it accepted)."""
    if not dry_active(multiplier, base, last_n):
        return {}
    n = min(len(history), last_n)
    if n <= allowed_length:
        return {}
    rat = [int(t) for t in history[len(history) - n:]][::-1]  # rat[i]: the i-th token from the end
    heads = breakers.heads

    # 1. the nearest breaker limits how far back a repeat may reach
    rep_limit = n
    for i in range(n):
        tails = heads.get(rat[i])
        if not tails:
            continue
        longest = -1
        for tail in tails:
            length = len(tail)
            if longest < length <= i and all(tail[o] == rat[i - o - 1] for o in range(length)):
                longest = length
        if longest >= 0:
            rep_limit = i - longest
            break
    if rep_limit < allowed_length:
        return {}

    # 2. reverse Z-algorithm: count[last - k] = length of the suffix repeated ending k tokens back
    count = [0] * n
    last = n - 1
    lt = rt = 0
    for k in range(1, n):
        if k > rt:
            m = 0
            while m + k < n and rat[m] == rat[m + k]:
                m += 1
            count[last - k] = min(m, rep_limit)
            if m > 0:
                lt, rt = k, k + m - 1
        else:
            p = k - lt
            right = rt - k + 1
            if count[last - p] < right:
                count[last - k] = min(count[last - p], rep_limit)
            else:
                j = rt + 1
                while j < n and rat[j] == rat[j - k]:
                    j += 1
                count[last - k] = min(j - k, rep_limit)
                lt, rt = k, j - 1

    # 3. the token after each repeat would extend it: its longest such repeat
    longest_for: dict[int, int] = {}
    for i in range(n - 1):
        length = count[i]
        if length >= allowed_length:
            tok = rat[n - 2 - i]
            if longest_for.get(tok, -1) < length:
                longest_for[tok] = length

    # 4. the penalties, in llama.cpp's precision (float base, double pow, float result)
    base32, mult32 = _F32(base), _F32(multiplier)
    max_exponent = int(_F32(88.7228391) / _F32(math.log(base32))) if base32 > _F32(1.000001) else 0
    out: dict[int, np.float32] = {}
    for tok, length in longest_for.items():
        if () in heads.get(tok, ()):
            continue  # a single-token breaker is never penalised
        exp = length - allowed_length
        if max_exponent > 0 and exp > max_exponent:
            exp = max_exponent
        out[tok] = _F32(float(mult32) * math.pow(float(base32), exp))
    return out


def _stage_dry(c: _Cands, penalties: Mapping[int, np.float32]) -> _Cands:
    """Subtract each penalty from its token's logit, where the token is still a candidate."""
    if not penalties:
        return c
    toks = np.fromiter(penalties.keys(), dtype=np.int64, count=len(penalties))
    pen = np.fromiter(penalties.values(), dtype=_F32, count=len(penalties))
    if c.ids is None:
        ok = (toks >= 0) & (toks < len(c))
        pos, pen = toks[ok], pen[ok]
    else:
        order = np.argsort(c.ids, kind="stable")
        j = np.searchsorted(c.ids[order], toks)
        jc = np.minimum(j, c.ids.shape[0] - 1)
        hit = c.ids[order][jc] == toks
        pos, pen = order[jc[hit]], pen[hit]
    if pos.shape[0] == 0:
        return c
    lg = c.lg.copy()
    lg[pos] = (lg[pos] - pen).astype(_F32)
    return _Cands(c.ids, lg, False)
