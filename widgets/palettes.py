"""Probability-to-colour palettes for the token view, its legend and the plots.

Owns: ``PALETTES`` (the palette names, default first), ``DEFAULT_PALETTE``,
``HIGH_CONTRAST_PALETTE`` (the one presentation mode switches to), ``PALETTE_TIPS`` (their menu
tips), ``color_for`` (probability -> background RGB), ``text_color_for`` (the text colour of every
coloured token cell in the app), ``contrast_ratio`` (WCAG 2), ``colors_for`` (both at once),
``palette_lut`` (a palette's whole range), ``gradient_stops`` (for a legend) and ``blend``.

The rule for coloured cells: the text is black or white, whichever contrasts more with the cell
(``text_color_for``). The better of the two always reaches at least 4.58:1 (the worst background
is the one whose luminance sits where both ratios are equal), so every cell of every palette
passes WCAG AA (4.5:1); ``tests/widgets/test_contrast.py`` checks each palette's whole range and
the cells the token view and the decoding grid actually show.

Qt-free (pure Python), so it may be called from anywhere; in this application it is used by
widgets on the GUI thread.
"""

from __future__ import annotations

import math
from functools import lru_cache

__all__ = [
    "PALETTES",
    "PALETTE_TIPS",
    "DEFAULT_PALETTE",
    "HIGH_CONTRAST_PALETTE",
    "MIN_CONTRAST",
    "RGB",
    "color_for",
    "text_color_for",
    "contrast_ratio",
    "colors_for",
    "palette_lut",
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
    # For a projector (presentation mode): saturated and dark where the model was unsure, pale
    # where it was sure, so a surprising token stands out from across a room on a white page.
    # Ordered by luminance (dark red, red, orange, yellow, ivory), so it reads without colour vision.
    "High contrast": (
        (0.00, (110, 0, 0)),
        (0.25, (200, 20, 20)),
        (0.50, (255, 130, 0)),
        (0.75, (255, 215, 60)),
        (1.00, (255, 255, 230)),
    ),
}

#: Palette names, the default first.
PALETTES: tuple[str, ...] = ("Viridis", "Heat", "Greys", "High contrast")
DEFAULT_PALETTE = "Viridis"
#: What each palette looks like, for its menu entry (View > Token colours).
PALETTE_TIPS: dict[str, str] = {
    "Viridis": "Colour tokens dark purple (unlikely) through teal to yellow (likely); colour-blind safe",
    "Heat": "Colour tokens red (unlikely) through yellow to green (likely)",
    "Greys": "Colour tokens dark (unlikely) to white (likely), so surprising tokens stand out",
    "High contrast": "For a projector: dark red where the model was unsure, pale where it was sure; "
                     "reads without colour vision",
}
#: The token view's palette in presentation mode.
HIGH_CONTRAST_PALETTE = "High contrast"
#: WCAG 2 level AA for normal text: the least contrast a token cell's text may have.
MIN_CONTRAST = 4.5

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


def palette_lut(palette: str) -> tuple[RGB, ...]:
    """Every colour ``color_for`` can give for ``palette`` (its 256-entry lookup table, p=0 first)."""
    if palette not in _STOPS:
        raise ValueError(f"unknown palette {palette!r}; choose one of {', '.join(PALETTES)}")
    return _lut(palette)


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


def contrast_ratio(fg: RGB, bg: RGB) -> float:
    """The WCAG 2 contrast ratio of two sRGB colours: (L1 + 0.05) / (L2 + 0.05), the lighter's
    relative luminance over the darker's; 1.0 (none) to 21.0 (black on white). Symmetric."""
    a, b = _luminance(tuple(fg)), _luminance(tuple(bg))  # type: ignore[arg-type]
    hi, lo = (a, b) if a >= b else (b, a)
    return (hi + 0.05) / (lo + 0.05)


_BLACK: RGB = (0, 0, 0)
_WHITE: RGB = (255, 255, 255)


@lru_cache(maxsize=4096)
def text_color_for(background: RGB) -> RGB:
    """Black or white, whichever has the higher WCAG contrast ratio on ``background`` (at least
    4.58:1 on any background). Every coloured token cell takes its text colour from here."""
    bg = tuple(background)
    return _BLACK if contrast_ratio(_BLACK, bg) >= contrast_ratio(_WHITE, bg) else _WHITE  # type: ignore[arg-type]


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
