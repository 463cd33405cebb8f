"""Presentation mode's high-contrast theme: ``high_contrast_palette`` (a ``QPalette``: black on
white, a dark blue selection, greys that keep 7:1) and ``PLOT_TEXT`` (the plots' axes and
labels). GUI thread only (it builds Qt objects).

Black on white rather than white on black: a projector washes out dark backgrounds, and every
colour of the plots and the token palettes was chosen for a light page. Each pair of roles used
for text on a background keeps at least 7:1 (WCAG AAA); ``tests/widgets/test_presentation.py``
checks them with ``widgets.palettes.contrast_ratio``.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette

__all__ = ["high_contrast_palette", "PLOT_TEXT", "TEXT_ROLE_PAIRS"]

#: the plots' axes, tick labels, axis labels, titles and legend entries
PLOT_TEXT = (0, 0, 0)

_R = QPalette.ColorRole
_G = QPalette.ColorGroup

#: (text role, background role) pairs the widgets draw text with
TEXT_ROLE_PAIRS = (
    (_R.WindowText, _R.Window),
    (_R.Text, _R.Base),
    (_R.Text, _R.AlternateBase),
    (_R.ButtonText, _R.Button),
    (_R.HighlightedText, _R.Highlight),
    (_R.ToolTipText, _R.ToolTipBase),
    (_R.PlaceholderText, _R.Base),
    (_R.Link, _R.Base),
)

_ACTIVE = {
    _R.Window: (255, 255, 255),
    _R.WindowText: (0, 0, 0),
    _R.Base: (255, 255, 255),
    _R.AlternateBase: (236, 236, 236),
    _R.Text: (0, 0, 0),
    _R.Button: (232, 232, 232),
    _R.ButtonText: (0, 0, 0),
    _R.BrightText: (255, 255, 255),
    _R.Highlight: (0, 51, 170),
    _R.HighlightedText: (255, 255, 255),
    _R.ToolTipBase: (255, 255, 255),
    _R.ToolTipText: (0, 0, 0),
    _R.PlaceholderText: (72, 72, 72),
    _R.Link: (0, 0, 190),
    _R.LinkVisited: (85, 0, 140),
    _R.Light: (255, 255, 255),
    _R.Midlight: (220, 220, 220),
    _R.Mid: (120, 120, 120),
    _R.Dark: (60, 60, 60),
    _R.Shadow: (0, 0, 0),
}
# disabled controls: still readable from the back of a room (7:1 on white), only greyer
_DISABLED = {
    _R.WindowText: (72, 72, 72),
    _R.Text: (72, 72, 72),
    _R.ButtonText: (72, 72, 72),
    _R.Button: (245, 245, 245),
    _R.Highlight: (80, 80, 80),
}


def high_contrast_palette() -> QPalette:
    """The presentation palette, every role set for the active, inactive and disabled groups."""
    pal = QPalette()
    for group in (_G.Active, _G.Inactive, _G.Disabled):
        for role, rgb in _ACTIVE.items():
            pal.setColor(group, role, QColor(*rgb))
    for role, rgb in _DISABLED.items():
        pal.setColor(_G.Disabled, role, QColor(*rgb))
    return pal
