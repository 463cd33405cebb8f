"""Readable token cells (issue 15): the WCAG contrast rule over every palette's whole range, and
the colours the token view and the decoding lab's grid actually give their cells (read back from
the widgets, not from the palette functions)."""

from __future__ import annotations

import math

import pytest
from PySide6.QtGui import QColor, QPalette, QTextCursor

from app.labs.decoding._qt.panel import DecodingLabPanel
from app.labs.decoding.records import ColumnRecord, StepRecord
from tests.widgets.factory import make_step, make_trace
from widgets.palettes import (
    HIGH_CONTRAST_PALETTE,
    MIN_CONTRAST,
    PALETTES,
    color_for,
    contrast_ratio,
    palette_lut,
    text_color_for,
)
from widgets.presentation_theme import high_contrast_palette
from widgets.token_view import PARTIAL_PLACEHOLDER, TokenView, muted_color


def _rgb(c: QColor) -> tuple[int, int, int]:
    return (c.red(), c.green(), c.blue())


# ---------------------------------------------------------------------- the rule


def test_contrast_ratio_is_wcag_2():
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast_ratio((255, 255, 255), (0, 0, 0)) == pytest.approx(21.0)  # symmetric
    assert contrast_ratio((120, 30, 200), (120, 30, 200)) == pytest.approx(1.0)
    # WCAG's own examples: #767676 on white is the lightest grey that passes AA, #777777 fails
    assert contrast_ratio((0x76, 0x76, 0x76), (255, 255, 255)) == pytest.approx(4.54, abs=0.01)
    assert contrast_ratio((0x77, 0x77, 0x77), (255, 255, 255)) < MIN_CONTRAST
    assert MIN_CONTRAST == 4.5


def test_text_colour_is_black_or_white_whichever_contrasts_more():
    for bg in [(0, 0, 0), (255, 255, 255), (118, 118, 118), (119, 119, 119), (255, 0, 0), (0, 0, 255), (0, 200, 0)]:
        fg = text_color_for(bg)
        assert fg in ((0, 0, 0), (255, 255, 255))
        other = (255, 255, 255) if fg == (0, 0, 0) else (0, 0, 0)
        assert contrast_ratio(fg, bg) >= contrast_ratio(other, bg)


def test_a_high_contrast_palette_is_one_of_the_palettes():
    assert HIGH_CONTRAST_PALETTE in PALETTES
    lut = palette_lut(HIGH_CONTRAST_PALETTE)
    lum = [contrast_ratio(c, (0, 0, 0)) for c in lut]  # ordered by luminance: readable without colour vision
    assert lum == sorted(lum) and lum[-1] / lum[0] > 10
    with pytest.raises(ValueError):
        palette_lut("Rainbow")


@pytest.mark.parametrize("palette", PALETTES)
def test_every_colour_of_every_palette_has_readable_text(palette):
    lut = palette_lut(palette)
    assert len(lut) == 256
    assert lut[0] == color_for(0.0, palette) and lut[-1] == color_for(1.0, palette)
    worst = min(lut, key=lambda bg: contrast_ratio(text_color_for(bg), bg))
    assert contrast_ratio(text_color_for(worst), worst) >= MIN_CONTRAST, (palette, worst)
    # and every probability lands on a LUT entry
    assert {color_for(i / 1000, palette) for i in range(1001)} <= set(lut)


# ---------------------------------------------------------------------- what the widgets show


def _cells(view: TokenView) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """(foreground, background) of every rendered step, read from the document."""
    doc = view.text_edit().document()
    out = []
    for i in range(view.rendered_count()):
        start, _ = view.char_range(i)
        cur = QTextCursor(doc)
        cur.setPosition(start + 1)  # the format of the character before the cursor
        fmt = cur.charFormat()
        out.append((_rgb(fmt.foreground().color()), _rgb(fmt.background().color())))
    return out


@pytest.mark.parametrize("palette", PALETTES)
def test_token_view_cells_use_the_readable_text_colour(qtbot, palette):
    view = TokenView()
    qtbot.addWidget(view)
    view.resize(900, 400)
    # one step per LUT entry, plus a piece of a character (a muted placeholder cell)
    trace = make_trace(["w"] * 256, prompt="The prompt ", p=[i / 255 for i in range(256)])
    trace.append(make_step(256, "", piece="<0xE2>", p_raw=0.05))
    view.set_palette(palette)
    view.set_color_by("raw")  # the factory's p_final is derived; p_raw is the sweep
    view.set_trace(trace)
    cells = _cells(view)
    assert len(cells) == 257
    assert view.document_text().endswith(PARTIAL_PLACEHOLDER)
    backgrounds = {bg for _, bg in cells[:256]}
    assert backgrounds == set(palette_lut(palette))  # the whole range is on screen
    for i, (fg, bg) in enumerate(cells):
        assert fg == text_color_for(bg), (palette, i, fg, bg)
        assert contrast_ratio(fg, bg) >= MIN_CONTRAST, (palette, i, fg, bg)


def test_the_prompt_stays_readable_in_both_themes(qtbot):
    view = TokenView()
    qtbot.addWidget(view)
    view.set_trace(make_trace(["a"], prompt="Once upon a time"))
    for pal in (QPalette(view.palette()), high_contrast_palette()):
        view.setPalette(pal)
        cur = QTextCursor(view.text_edit().document())
        cur.setPosition(1)
        fg = _rgb(cur.charFormat().foreground().color())
        base = _rgb(pal.color(QPalette.ColorRole.Base))
        assert fg != _rgb(pal.color(QPalette.ColorRole.Text))  # still muted, not the body text colour
        assert contrast_ratio(fg, base) >= MIN_CONTRAST
    # the helper: the old grey (128) on white failed AA; the muted colour never does
    assert contrast_ratio((128, 128, 128), (255, 255, 255)) < MIN_CONTRAST
    for text, base in (((0, 0, 0), (255, 255, 255)), ((255, 255, 255), (30, 30, 30)), ((20, 20, 20), (239, 239, 239))):
        assert contrast_ratio(muted_color(text, base), base) >= MIN_CONTRAST


def test_decoding_grid_cells_use_the_readable_text_colour(qtbot):
    panel = DecodingLabPanel()
    qtbot.addWidget(panel)
    panel.start_columns()
    panel.add_record(ColumnRecord(column=0, strategy="greedy", label="greedy"))
    panel.add_record(ColumnRecord(column=1, strategy="temp:1.3", label="temp:1.3"))
    ps = [i / 127 for i in range(128)]
    for k, p in enumerate(ps):
        panel.add_record(StepRecord(column=0, strategy="greedy", step=k, token=" tok", p_raw=p))
        panel.add_record(StepRecord(column=1, strategy="temp:1.3", step=k, token="x", p_raw=1 - p))
    table = panel.columns_table
    assert table.rowCount() == len(ps) and table.columnCount() == 2
    seen = set()
    for row in range(table.rowCount()):
        for col in range(2):
            item = table.item(row, col)
            fg, bg = _rgb(item.foreground().color()), _rgb(item.background().color())
            seen.add(bg)
            assert fg == text_color_for(bg), (row, col, fg, bg)
            assert contrast_ratio(fg, bg) >= MIN_CONTRAST, (row, col, fg, bg)
    assert len(seen) > 100  # the cells really are coloured across the range
    # a step with no probability (NaN) is not a coloured cell: the table's own colours
    panel.add_record(StepRecord(column=0, strategy="greedy", step=len(ps), token="?", p_raw=math.nan))
    assert table.item(len(ps), 0).background().style().name == "NoBrush"
