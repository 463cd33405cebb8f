"""Palettes: endpoints, clipping, contrast of the text colour."""

import math

import pytest

from widgets.palettes import DEFAULT_PALETTE, PALETTES, color_for, colors_for, gradient_stops, text_color_for


def test_names_and_default():
    assert {"Heat", "Viridis", "Greys"} <= set(PALETTES)
    assert DEFAULT_PALETTE == "Viridis" == PALETTES[0]


def test_heat_runs_red_to_green():
    r0, g0, _ = color_for(0.0, "Heat")
    r1, g1, _ = color_for(1.0, "Heat")
    assert r0 > g0 and g1 > r1


def test_viridis_endpoints_and_greys_monotonic():
    assert color_for(0.0, "Viridis") == (68, 1, 84)
    assert color_for(1.0, "Viridis") == (253, 231, 37)
    greys = [color_for(p / 10, "Greys")[0] for p in range(11)]
    assert greys == sorted(greys)


@pytest.mark.parametrize("p", [-1.0, 2.0, math.nan, float("inf")])
def test_out_of_range_is_clipped(p):
    c = color_for(p, "Heat")
    assert all(0 <= v <= 255 for v in c)


def test_unknown_palette_falls_back():
    assert color_for(0.3, "Nope") == color_for(0.3, DEFAULT_PALETTE)


def test_text_colour_contrasts():
    assert text_color_for((0, 0, 0)) == (255, 255, 255)
    assert text_color_for((255, 255, 255)) == (0, 0, 0)
    assert colors_for(0.0, "Viridis")[1] == (255, 255, 255)  # dark purple
    assert colors_for(1.0, "Viridis")[1] == (0, 0, 0)  # yellow


def test_gradient_stops():
    stops = gradient_stops("Heat", 5)
    assert [s[0] for s in stops] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert stops[0][1] == color_for(0.0, "Heat")
