"""Decoding strategies as spec strings: what each column of the lab runs.

Owns: ``Strategy`` / ``parse_strategy`` / ``parse_strategies``: the spec strings ``greedy``,
``beam:W[:lp=ALPHA]``, ``top-k:K``, ``top-p:P``, ``min-p:P``, ``temp:T``, ``typical:P`` and the
``SamplerSettings`` of each sampled one; ``STRATEGY_FORMS`` (the accepted forms, for error
messages and ``--help``) and ``NEUTRAL``. Every sampled strategy starts from the neutral chain
(``NEUTRAL``: temperature 1, top-k/top-p/min-p/typical and penalties off) and changes only the
knob it names, so ``top-k:40`` is top-k at temperature 1 and ``temp:0.7`` is plain sampling at
temperature 0.7: the columns differ by exactly one sampler.

Threads: plain values and pure functions, safe on any thread (the window parses specs on the GUI
thread, the lab worker and ``samplescope compare`` on theirs). No Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from backends.base import SamplerSettings

__all__ = ["NEUTRAL", "STRATEGY_FORMS", "Strategy", "parse_strategy", "parse_strategies"]


#: The chain with every stage off at temperature 1: the model's own distribution.
NEUTRAL = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0,
                          frequency_penalty=0.0, presence_penalty=0.0, min_keep=1)

#: The accepted spec forms, as shown in error messages and in ``--help``.
STRATEGY_FORMS = ("greedy", "beam:W", "beam:W:lp=ALPHA", "top-k:K", "top-p:P", "min-p:P", "temp:T", "typical:P")

_MAX_WIDTH = 64


@dataclass(frozen=True)
class Strategy:
    """One decoding strategy. ``kind``: "greedy", "beam", "top-k", "top-p", "min-p", "temp" or
    "typical"; ``value``: W, K, P or T (None for greedy); ``length_penalty``: beam only (alpha
    of score = sum / length**alpha; 0 = the plain sum). ``spec`` is the canonical spec string."""

    kind: str
    value: float | None = None
    length_penalty: float = 0.0

    @property
    def _knob(self) -> float:
        """``value``, which every kind but greedy has (``parse_strategy`` always sets it); a
        TypeError without one, as ``int(None)`` / ``float(None)`` would raise."""
        if self.value is None:
            raise TypeError(f"a {self.kind} strategy needs a value")
        return self.value

    @property
    def spec(self) -> str:
        if self.kind == "greedy":
            return "greedy"
        if self.kind == "beam":
            lp = f":lp={self.length_penalty:g}" if self.length_penalty else ""
            return f"beam:{self.width}{lp}"
        if self.kind == "top-k":
            return f"top-k:{int(self._knob)}"
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
        return int(self._knob)

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
            return f"top-k {int(self._knob)}"
        return f"{self.kind} {self.value:g}"

    def settings(self, *, seed: int = 42, max_tokens: int = 128, top_n: int = 20,
                 stop: Sequence[str] = ()) -> SamplerSettings:
        """The sampler chain of a sampled (or greedy) strategy: ``NEUTRAL`` with the one knob
        changed. ValueError for a beam search (it has no sampler chain)."""
        base = NEUTRAL.replace(seed=int(seed), max_tokens=int(max_tokens), top_n=int(top_n), stop=tuple(stop))
        if self.kind == "greedy":
            return base.replace(temperature=0.0)
        if self.kind == "temp":
            return base.replace(temperature=float(self._knob))
        if self.kind == "top-k":
            return base.replace(top_k=int(self._knob))
        if self.kind == "top-p":
            return base.replace(top_p=float(self._knob))
        if self.kind == "min-p":
            return base.replace(min_p=float(self._knob))
        if self.kind == "typical":
            return base.replace(typical_p=float(self._knob))
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
