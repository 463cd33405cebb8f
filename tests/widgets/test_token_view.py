"""TokenView: text and mapping, whitespace marks, colours, hover text, clicks, incremental refresh."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from tests.widgets.factory import make_step, make_trace
from widgets.palettes import color_for
from widgets.token_view import PARTIAL_PLACEHOLDER, TokenView


@pytest.fixture
def view(qtbot):
    w = TokenView()
    qtbot.addWidget(w)
    w.resize(600, 300)
    return w


def _bg_at(view: TokenView, pos: int):
    cur = QTextCursor(view.text_edit().document())
    cur.setPosition(pos + 1)  # charFormat() is the format of the character before the cursor
    c = cur.charFormat().background().color()
    return (c.red(), c.green(), c.blue())


def test_text_and_mapping(view):
    trace = make_trace(["Hello", ",", " world", "!"])
    view.set_trace(trace)
    assert view.document_text() == "Hello, world!"
    assert view.rendered_count() == 4
    assert view.char_range(0) == (0, 5)
    assert view.char_range(2) == (6, 12)
    assert view.step_at_position(0) == 0
    assert view.step_at_position(4) == 0
    assert view.step_at_position(5) == 1
    assert view.step_at_position(12) == 3
    assert view.step_at_position(13) == -1


def test_prompt_is_shown_first_and_not_mapped(view):
    trace = make_trace(["a", "b"], prompt="Q: ")
    view.set_trace(trace)
    assert view.document_text() == "Q: ab"
    assert view.step_at_position(1) == -1
    assert view.char_range(0) == (3, 4)
    view.set_prompt("")
    assert view.document_text() == "ab"


def test_whitespace_marks(view):
    trace = make_trace(["a b", "\t", "\n", "c"])
    view.set_trace(trace)
    assert view.document_text() == "a b\t\nc"
    view.set_show_whitespace(True)
    assert view.document_text() == "a\u00b7b\u2192\u21b5\nc"
    # the newline token owns both the mark and the real line break
    assert view.char_range(2) == (4, 6)
    assert view.step_at_position(5) == 2
    assert view.step_at_position(6) == 3
    view.set_show_whitespace(False)
    assert view.document_text() == "a b\t\nc"


def test_markup_is_plain_text(view):
    trace = make_trace(["<b>x</b>", "&amp;", "<img src=x>"])
    view.set_trace(trace)
    assert view.document_text() == "<b>x</b>&amp;<img src=x>"


def test_partial_token_placeholder(view):
    trace = make_trace(["a"])
    trace.append(make_step(1, "", piece="<0xE2>"))
    trace.append(make_step(2, "\u2019"))
    view.set_trace(trace)
    assert view.document_text() == "a" + PARTIAL_PLACEHOLDER + "\u2019"
    assert view.step_at_position(1) == 1
    assert "part of a character" in view.tooltip_html(1)
    assert "&lt;0xE2&gt;" in view.tooltip_html(1)


def test_colours_follow_palette_and_colour_source(view):
    trace = make_trace(["x", "y"], p=[0.1, 0.9])
    view.set_trace(trace)
    s0 = trace.steps[0]
    assert _bg_at(view, 0) == color_for(s0.p_final, "Viridis")
    view.set_palette("Heat")
    assert _bg_at(view, 0) == color_for(s0.p_final, "Heat")
    view.set_color_by("raw")
    assert _bg_at(view, 0) == color_for(s0.p_raw, "Heat")
    assert _bg_at(view, 1) == color_for(trace.steps[1].p_raw, "Heat")
    with pytest.raises(ValueError):
        view.set_palette("Rainbow")
    with pytest.raises(ValueError):
        view.set_color_by("stage")


def test_tooltip_escapes_model_strings(view):
    trace = make_trace([])
    trace.append(make_step(0, "<b>x</b>", p_raw=0.4, alts=[("<i>y</i>", 0.3), ("&", 0.2)]))
    view.set_trace(trace)
    tip = view.tooltip_html(0)
    assert "<b>x</b>" not in tip and "<i>y</i>" not in tip
    assert "&lt;b&gt;x&lt;/b&gt;" in tip
    assert "&lt;i&gt;y&lt;/i&gt;" in tip
    assert "&amp;" in tip
    assert "40.00%" in tip  # p_raw in percent
    assert "rank 1" in tip
    assert "-0.916" in tip  # log(0.4)
    assert view.tooltip_html(5) == ""


def test_refresh_appends_incrementally(view):
    trace = make_trace(["a", "b"])
    view.set_trace(trace)
    doc = view.text_edit().document()
    trace.append(make_step(2, "c"))
    trace.append(make_step(3, "d"))
    assert view.document_text() == "ab"  # nothing drawn until refresh
    view.refresh()
    assert view.document_text() == "abcd"
    assert view.text_edit().document() is doc
    assert view.char_range(3) == (3, 4)
    view.refresh()  # nothing new: no change
    assert view.rendered_count() == 4


def test_refresh_many_tokens(view):
    trace = make_trace([])
    view.set_trace(trace)
    for i in range(2500):
        trace.append(make_step(i, f"w{i % 10} "))
        if i % 100 == 99:
            view.refresh()
    view.refresh()
    assert view.rendered_count() == 2500
    assert view.step_at_position(view.char_range(2499)[0]) == 2499


def test_clear(view):
    view.set_trace(make_trace(["a"], prompt="p"))
    view.clear()
    assert view.document_text() == ""
    assert view.rendered_count() == 0
    view.refresh()  # no trace: no error


def test_click_emits_step_clicked(view, qtbot):
    view.set_trace(make_trace(["alpha ", "beta ", "gamma"]))
    view.show()
    qtbot.waitExposed(view)
    point = view.point_for_step(1)
    assert view.step_at(point) == 1
    with qtbot.waitSignal(view.stepClicked, timeout=1000) as blocker:
        qtbot.mouseClick(view.text_edit().viewport(), Qt.MouseButton.LeftButton, pos=point)
    assert blocker.args == [1]
    assert view.selected() == 1


def test_select_highlights_and_clears(view):
    view.set_trace(make_trace(["a", "b", "c"]))
    view.select(1)
    sels = view.text_edit().extraSelections()
    assert len(sels) == 1
    assert (sels[0].cursor.selectionStart(), sels[0].cursor.selectionEnd()) == (1, 2)
    view.select(None)
    assert view.text_edit().extraSelections() == []


def test_select_before_render_applies_on_refresh(view):
    trace = make_trace(["a"])
    view.set_trace(trace)
    view.select(2)
    assert view.text_edit().extraSelections() == []
    trace.append(make_step(1, "b"))
    trace.append(make_step(2, "c"))
    view.refresh()
    sels = view.text_edit().extraSelections()
    assert (sels[0].cursor.selectionStart(), sels[0].cursor.selectionEnd()) == (2, 3)


def test_tooltip_event_shows_escaped_html(view, qtbot):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QHelpEvent
    from PySide6.QtWidgets import QApplication, QToolTip

    trace = make_trace([])
    trace.append(make_step(0, "<b>x</b> ", p_raw=0.4))
    trace.append(make_step(1, "next", p_raw=0.4))
    view.set_trace(trace)
    view.show()
    qtbot.waitExposed(view)
    viewport = view.text_edit().viewport()
    point = view.point_for_step(0)
    event = QHelpEvent(QEvent.Type.ToolTip, point, viewport.mapToGlobal(point))
    QApplication.sendEvent(viewport, event)
    qtbot.waitUntil(QToolTip.isVisible, timeout=2000)
    assert "&lt;b&gt;x&lt;/b&gt;" in QToolTip.text()
    QToolTip.hideText()


def test_reselecting_does_not_scroll_back(view, qtbot):
    view.set_trace(make_trace([f"line {i}\n" for i in range(200)]))
    view.show()
    qtbot.waitExposed(view)
    bar = view.text_edit().verticalScrollBar()
    view.select(5)
    bar.setValue(bar.maximum())  # the user scrolls away
    view.select(5)  # the controller's redraw selects the same step again
    assert bar.value() == bar.maximum()
    view.select(150)
    assert bar.value() < bar.maximum()


def test_a_token_the_grammar_forced_is_marked(qtbot):
    import dataclasses

    from app.core.trace import Trace
    from tests.widgets.factory import make_step
    from widgets.token_view import TokenView

    view = TokenView()
    qtbot.addWidget(view)
    trace = Trace()
    free = dataclasses.replace(make_step(0, "a"), grammar_p_before=0.6, grammar_p_after=0.9)
    held = dataclasses.replace(make_step(1, "{"), grammar_p_before=0.004, grammar_p_after=0.8)
    trace.extend([free, held])
    view.set_trace(trace)
    view.refresh()
    assert held.grammar_forced and not free.grammar_forced
    assert "held by the grammar" in view.tooltip_html(1) and "0.40%" in view.tooltip_html(1)
    assert "held by the grammar" not in view.tooltip_html(0)
    from PySide6.QtGui import QTextCharFormat, QTextCursor

    cursor = QTextCursor(view.text_edit().document())
    cursor.setPosition(view.char_range(1)[1])  # the format of the character before the position
    assert cursor.charFormat().underlineStyle() == QTextCharFormat.DashUnderline
