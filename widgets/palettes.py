"""Probability-to-colour palettes for the token view, its legend and the plots.

Owns: ``PALETTES`` (the palette names, default first), ``DEFAULT_PALETTE``, ``color_for``
(probability -> background RGB), ``text_color_for`` (readable text colour on a background),
``colors_for`` (both at once), ``gradient_stops`` (for a legend) and ``blend``.

Qt-free (pure Python), so it may be called from anywhere; in this application it is used by
widgets on the GUI thread.
"""

from __future__ import annotations

import math
from functools import lru_cache

__all__ = [
    "PALETTES",
    "DEFAULT_PALETTE",
    "RGB",
    "color_for",
    "text_color_for",
    "colors_for",
    "gradient_stops",
    "blend",
]

RGB = tuple[int, int, int]

# Control points (position in 0..1, colour), linearly interpolated in RGB.
_STOPS: dict[str, tuple[tuple[float, RGB], ...]] = {
    # matplotlib's viridis sampled at 9 points: perceptually uniform and colour-blind safe.
    "Viridis": (
        (0.000, (68, 1, 84)),
        (0.125, (71, 44, 122)),
        (0.250, (59, 82, 139)),
        (0.375, (44, 114, 142)),
        (0.500, (33, 145, 140)),
        (0.625, (39, 173, 129)),
        (0.750, (92, 200, 99)),
        (0.875, (170, 220, 50)),
        (1.000, (253, 231, 37)),
    ),
    # Red (unlikely) through yellow to green (likely), after ColorBrewer's RdYlGn.
    "Heat": (
        (0.00, (215, 48, 39)),
        (0.25, (244, 109, 67)),
        (0.50, (254, 224, 139)),
        (0.75, (166, 217, 106)),
        (1.00, (26, 152, 80)),
    ),
    # Dark (unlikely) to white (likely): surprising tokens stand out.
    "Greys": (
        (0.0, (64, 64, 64)),
        (1.0, (255, 255, 255)),
    ),
}

#: Palette names, the default first.
PALETTES: tuple[str, ...] = ("Viridis", "Heat", "Greys")
DEFAULT_PALETTE = "Viridis"

_LUT_SIZE = 256


def _interpolate(stops: tuple[tuple[float, RGB], ...], t: float) -> RGB:
    if t <= stops[0][0]:
        return stops[0][1]
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
            return tuple(int(round(a + (b - a) * f)) for a, b in zip(c0, c1))  # type: ignore[return-value]
    return stops[-1][1]


@lru_cache(maxsize=None)
def _lut(palette: str) -> tuple[RGB, ...]:
    stops = _STOPS.get(palette, _STOPS[DEFAULT_PALETTE])
    return tuple(_interpolate(stops, i / (_LUT_SIZE - 1)) for i in range(_LUT_SIZE))


def color_for(p: float, palette: str = DEFAULT_PALETTE) -> RGB:
    """The background colour for probability ``p`` (clipped to 0..1; NaN counts as 0).

    An unknown palette name falls back to the default palette.
    """
    if p is None or p != p:  # None or NaN
        p = 0.0
    p = 0.0 if p < 0.0 else 1.0 if p > 1.0 else float(p)
    return _lut(palette)[int(round(p * (_LUT_SIZE - 1)))]


def _linear(c: int) -> float:
    s = c / 255.0
    return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4


def _luminance(rgb: RGB) -> float:
    r, g, b = (_linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@lru_cache(maxsize=4096)
def text_color_for(background: RGB) -> RGB:
    """Black or white, whichever has the higher WCAG contrast ratio on ``background``."""
    lum = _luminance(tuple(background))  # type: ignore[arg-type]
    contrast_black = (lum + 0.05) / 0.05
    contrast_white = 1.05 / (lum + 0.05)
    return (0, 0, 0) if contrast_black >= contrast_white else (255, 255, 255)


def colors_for(p: float, palette: str = DEFAULT_PALETTE) -> tuple[RGB, RGB]:
    """(background, text) colours for probability ``p``."""
    bg = color_for(p, palette)
    return bg, text_color_for(bg)


def gradient_stops(palette: str = DEFAULT_PALETTE, n: int = 11) -> list[tuple[float, RGB]]:
    """``n`` evenly spaced (position, colour) pairs from p=0 to p=1, for a legend gradient."""
    n = max(2, int(n))
    return [(i / (n - 1), color_for(i / (n - 1), palette)) for i in range(n)]


def blend(a: RGB, b: RGB, t: float) -> RGB:
    """Mix ``a`` towards ``b`` by ``t`` in 0..1 (used for muted variants)."""
    t = 0.0 if not math.isfinite(t) else min(1.0, max(0.0, t))
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]
