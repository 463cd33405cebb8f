"""Number formatting shared by the views (percentages, log-probabilities). Qt-free helpers
used on the GUI thread."""

from __future__ import annotations

import math

__all__ = ["pct", "logprob"]


def pct(p: float | None) -> str:
    """A probability as a percentage with two decimals; tiny values as "<0.01%"."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if 0 < p < 0.0001:
        return "<0.01%"
    return f"{p * 100:.2f}%"


def logprob(p: float | None) -> str:
    """The natural log of a probability, three decimals; "-inf" for zero."""
    return f"{math.log(p):.3f}" if p and p > 0 else "-inf"
