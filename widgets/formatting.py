"""Formatting shared by the views: numbers (percentages, log-probabilities) and text that
reaches Qt from outside (model names, paths, server text). Qt-free helpers used on the GUI
thread.

Qt reads any tooltip that looks like rich text (``Qt::mightBeRichText``) as HTML, and a
menu or tab text's ``&`` as a shortcut marker. ``plain_tip`` and ``menu_text`` make such text
show as written; every tooltip or menu entry holding text we did not write goes through them.
"""

from __future__ import annotations

import html
import math

__all__ = ["pct", "logprob", "plain_tip", "menu_text", "PLAIN_TIP_PREFIX"]

#: How a ``plain_tip`` starts: explicit rich text (so Qt never guesses) holding escaped text.
PLAIN_TIP_PREFIX = "<p style='white-space:pre-wrap'>"


def plain_tip(text) -> str:
    """A tooltip that shows ``text`` exactly, markup included, line breaks kept."""
    return PLAIN_TIP_PREFIX + html.escape("" if text is None else str(text), quote=False) + "</p>"


def menu_text(text) -> str:
    """``text`` for a menu entry, tab or button: ``&`` doubled, so it is not a shortcut marker."""
    return ("" if text is None else str(text)).replace("&", "&&")


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
