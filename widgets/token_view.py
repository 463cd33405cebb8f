"""The output of a run drawn as tokens coloured by probability.

Owns: ``TokenView`` (a read-only text view plus a colour legend) and its private legend strip.
Runs on the GUI thread only.

Model output is plain text: every token goes into the document through
``QTextCursor.insertText(text, format)``, which never parses markup, and every tooltip is HTML
built here with ``html.escape`` applied to each model string. The view keeps a map from
document character ranges to step indices for hovering and clicking.

Appending is incremental: ``refresh()`` (called by the controller's ~30 Hz timer) inserts only the
steps added to the trace since the previous call, so thousands of tokens stay cheap. A reveal
limit (``set_reveal_limit``, presentation mode's pace) shows only the first steps of the trace.

Every coloured cell's text colour comes from ``widgets.palettes.text_color_for`` (the partial
character placeholder's too); the prompt's muted grey is chosen against the view's own base colour
for the same 4.5:1 (``muted_color``), so it stays readable in any theme.

Over 500 lines on purpose: one widget whose painting, hit-testing, selection and tooltips all
read the same laid-out cells.
"""

from __future__ import annotations

import html
from bisect import bisect_right
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFontMetrics,
    QPalette,
    QLinearGradient,
    QPainter,
    QPen,
    QTextCharFormat,
    QTextCursor,
)
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QTextEdit,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from widgets.palettes import (
    DEFAULT_PALETTE,
    MIN_CONTRAST,
    PALETTES,
    RGB,
    blend,
    color_for,
    contrast_ratio,
    gradient_stops,
    text_color_for,
)
from widgets.formatting import logprob as _logprob, pct as _pct

if TYPE_CHECKING:  # pragma: no cover
    from app.core.trace import Trace
    from backends.base import Step

__all__ = ["TokenView", "PARTIAL_PLACEHOLDER", "visible_text", "muted_color"]

#: Shown for a step whose ``token`` is "" (it carries part of a UTF-8 character).
PARTIAL_PLACEHOLDER = "\u25af"  # ▯

_HIGHLIGHT = QColor(230, 0, 126)
_TOOLTIP_ALTS = 12
#: the dashed underline of a token the grammar forced (Okabe-Ito vermillion: visible on every palette)
_GRAMMAR_MARK = (213, 94, 0)


def muted_color(text: RGB, base: RGB) -> RGB:
    """A grey for text that should recede (the prompt): ``text`` blended towards ``base`` as far as
    it can go (at most 55%) while keeping ``MIN_CONTRAST`` against ``base``."""
    for t in (0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05):
        c = blend(text, base, t)
        if contrast_ratio(c, base) >= MIN_CONTRAST:
            return c
    return text


def _rgb(c: QColor) -> RGB:
    return (c.red(), c.green(), c.blue())


def _control_picture(ch: str) -> str:
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return ch


def visible_text(text: str, show_whitespace: bool) -> str:
    """The text to insert for ``text``: whitespace marks when asked, control characters as
    their Unicode pictures (a token may hold any byte), never anything that is markup."""
    out: list[str] = []
    for ch in text:
        if ch == "\n":
            out.append("\u21b5\n" if show_whitespace else "\n")
        elif ch == "\t":
            out.append("\u2192" if show_whitespace else "\t")
        elif ch == " ":
            out.append("\u00b7" if show_whitespace else " ")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(_control_picture(ch))
        elif ch in "\u2028\u2029":  # Qt would turn these into line/paragraph breaks
            out.append("\u21b5\n" if show_whitespace else "\n")
        else:
            out.append(ch)
    return "".join(out)


class _LegendStrip(QWidget):
    """A horizontal gradient of the current palette labelled 0% .. 100%."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._palette = DEFAULT_PALETTE
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_palette(self, name: str) -> None:
        self._palette = name
        self.update()

    def _label_font(self):
        font = self.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.85))
        return font

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name): tall enough for its labels in the current font
        fm = QFontMetrics(self._label_font())
        return QSize(max(120, fm.horizontalAdvance("0%  50%  100%") + 16), fm.height() + 5)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        return self.sizeHint()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        if event.type() == QEvent.Type.FontChange:
            self.updateGeometry()
        super().changeEvent(event)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        rect = self.rect().adjusted(0, 1, -1, -2)
        grad = QLinearGradient(rect.left(), 0, rect.right(), 0)
        for pos, rgb in gradient_stops(self._palette, 17):
            grad.setColorAt(pos, QColor(*rgb))
        painter.fillRect(rect, grad)
        painter.setPen(QColor(128, 128, 128))
        painter.drawRect(rect)
        painter.setFont(self._label_font())
        for frac, label, align in (
            (0.0, "0%", Qt.AlignmentFlag.AlignLeft),
            (0.5, "50%", Qt.AlignmentFlag.AlignHCenter),
            (1.0, "100%", Qt.AlignmentFlag.AlignRight),
        ):
            painter.setPen(QColor(*text_color_for(color_for(frac, self._palette))))
            box = QRect(rect.left() + 4, rect.top(), rect.width() - 8, rect.height())
            painter.drawText(box, align | Qt.AlignmentFlag.AlignVCenter, label)
        painter.end()


class _TokenEdit(QPlainTextEdit):
    """The text view; paints an outline box around the selected token after the text."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.outline: tuple[int, int] | None = None

    def outline_rects(self) -> list[QRect]:
        """One rectangle per visual line covered by the outlined range (viewport coordinates)."""
        if self.outline is None:
            return []
        start, end = self.outline
        doc = self.document()
        rects: list[QRect] = []
        cur = QTextCursor(doc)
        line_left = line_right = None
        line_rect: QRect | None = None
        for pos in range(start, end + 1):
            cur.setPosition(pos)
            r = self.cursorRect(cur)
            if line_rect is not None and r.top() != line_rect.top():
                rects.append(QRect(line_left, line_rect.top(), line_right - line_left, line_rect.height()))
                line_rect = None
            if line_rect is None:
                line_rect, line_left = r, r.x()
            line_right = r.x()
        if line_rect is not None:
            rects.append(QRect(line_left, line_rect.top(), line_right - line_left, line_rect.height()))
        wide = [r for r in rects if r.width() > 0]
        if wide:
            return wide
        # a token with no visible width (a bare newline): a thin mark where it starts
        return [QRect(rects[0].x(), rects[0].y(), 3, rects[0].height())] if rects else []

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        super().paintEvent(event)
        rects = self.outline_rects()
        if not rects:
            return
        painter = QPainter(self.viewport())
        painter.setPen(QPen(_HIGHLIGHT, 2))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for r in rects:
            painter.drawRect(r.adjusted(-1, 0, 1, -1))
        painter.end()


class TokenView(QWidget):
    """A run's output, one coloured span per step; hover for details, click to select.

    Colour is the step's ``p_final`` (or ``p_raw`` after ``set_color_by("raw")``) through the
    chosen palette. The prompt, when set, is shown first in muted grey and maps to no step.
    """

    #: The index of the step the user clicked.
    stepClicked = Signal(int)
    #: A left click on the view that hit no token (presentation mode reveals the next token).
    backgroundClicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._trace: Trace | None = None
        self._prompt = ""
        self._palette = DEFAULT_PALETTE
        self._color_by = "final"
        self._show_ws = False
        self._selected: int | None = None
        self._limit: int | None = None  # show at most this many steps (None: all)
        # Document character ranges [start, end) of each rendered step, in step order.
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._press_index = -1

        self._edit = _TokenEdit(self)
        self._edit.setReadOnly(True)
        self._edit.setUndoRedoEnabled(False)
        self._edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self._edit.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self._edit.viewport().installEventFilter(self)
        self._edit.viewport().setMouseTracking(True)
        self._edit.setPlaceholderText("The generated tokens appear here.")

        self._legend_caption = QLabel(self)
        self._legend_caption.setTextFormat(Qt.TextFormat.PlainText)
        self._legend = _LegendStrip(self)

        legend_row = QHBoxLayout()
        legend_row.setContentsMargins(0, 0, 0, 0)
        legend_row.addWidget(self._legend_caption)
        legend_row.addWidget(self._legend, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self._edit, 1)
        layout.addLayout(legend_row)
        self._update_caption()

    # ------------------------------------------------------------------ public API

    def set_trace(self, trace: Trace | None) -> None:
        """Show ``trace`` (rebuilding the view); its prompt becomes the shown prompt."""
        self._trace = trace
        self._prompt = trace.prompt if trace is not None else ""
        self._selected = None
        self._rebuild()

    def trace(self) -> Trace | None:
        return self._trace

    def set_prompt(self, text: str) -> None:
        """Show ``text`` (muted, not clickable) before the output; "" hides it."""
        self._prompt = text or ""
        self._rebuild()

    def refresh(self) -> None:
        """Append the steps added to the trace since the last call (cheap when none)."""
        trace = self._trace
        if trace is None:
            return
        n_done = len(self._starts)
        n = self._shown_count()
        if n < n_done:  # the trace was truncated or replaced in place
            self._rebuild()
            return
        if n == n_done:
            return
        bar = self._edit.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 1
        cursor = QTextCursor(self._edit.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        for step in trace.steps[n_done:n]:
            self._insert_step(cursor, step)
        cursor.endEditBlock()
        if self._selected is not None and n_done <= self._selected < n:
            self._apply_selection(scroll=False)
        if follow:
            bar.setValue(bar.maximum())

    def set_reveal_limit(self, n: int | None) -> None:
        """Show only the first ``n`` steps of the trace (None: every step). A higher limit appends
        the steps it uncovers (as ``refresh``); a lower one rebuilds the view."""
        n = None if n is None else max(0, int(n))
        if n == self._limit:
            return
        lower = n is not None and n < len(self._starts)
        self._limit = n
        if lower:
            self._rebuild()
        else:
            self.refresh()

    def reveal_limit(self) -> int | None:
        return self._limit

    def _shown_count(self) -> int:
        n = len(self._trace.steps) if self._trace is not None else 0
        return n if self._limit is None else min(n, self._limit)

    def clear(self) -> None:
        """Forget the trace and the prompt."""
        self._trace = None
        self._prompt = ""
        self._selected = None
        self._rebuild()

    def select(self, index: int | None) -> None:
        """Outline step ``index`` and scroll to it; ``None`` or a negative index clears.

        Selecting the step that is already selected (and drawn) does nothing, so a controller may
        call this on every redraw without undoing the user's scrolling."""
        new = index if index is not None and index >= 0 else None
        if new is not None and new == self._selected and new < len(self._starts):
            return
        self._selected = new
        self._apply_selection(scroll=True)

    def selected(self) -> int | None:
        return self._selected

    def set_palette(self, name: str) -> None:
        if name not in PALETTES:
            raise ValueError(f"unknown palette {name!r}; choose one of {', '.join(PALETTES)}")
        if name != self._palette:
            self._palette = name
            self._legend.set_palette(name)
            self._rebuild()

    def palette_name(self) -> str:
        return self._palette

    def set_color_by(self, which: str) -> None:
        """Colour by ``"final"`` (after the sampler chain, default) or ``"raw"`` probability."""
        if which not in ("final", "raw"):
            raise ValueError(f"color_by must be 'final' or 'raw', not {which!r}")
        if which != self._color_by:
            self._color_by = which
            self._update_caption()
            self._rebuild()

    def color_by(self) -> str:
        return self._color_by

    def set_show_whitespace(self, show: bool) -> None:
        """Draw spaces as '·', tabs as '→' and newlines as '↵' plus a real line break."""
        show = bool(show)
        if show != self._show_ws:
            self._show_ws = show
            self._rebuild()

    def show_whitespace(self) -> bool:
        return self._show_ws

    # ------------------------------------------------------------------ introspection (tests, integrator)

    def text_edit(self) -> QPlainTextEdit:
        return self._edit

    def document_text(self) -> str:
        """What the view shows, as plain text (prompt included, marks included)."""
        return self._edit.toPlainText()

    def char_range(self, index: int) -> tuple[int, int]:
        """The document range [start, end) of step ``index`` (IndexError if not rendered)."""
        return self._starts[index], self._ends[index]

    def rendered_count(self) -> int:
        return len(self._starts)

    def step_at_position(self, pos: int) -> int:
        """The step whose characters include document position ``pos``, or -1."""
        i = bisect_right(self._starts, pos) - 1
        if i >= 0 and pos < self._ends[i]:
            return i
        return -1

    def step_at(self, point: QPoint) -> int:
        """The step under ``point`` (viewport coordinates), or -1."""
        edit = self._edit
        cur = edit.cursorForPosition(point)
        pos = cur.position()
        doc_len = edit.document().characterCount() - 1
        for c in (pos - 1, pos):
            if c < 0 or c >= doc_len:
                continue
            a = QTextCursor(edit.document())
            a.setPosition(c)
            r0 = edit.cursorRect(a)
            b = QTextCursor(edit.document())
            b.setPosition(c + 1)
            r1 = edit.cursorRect(b)
            if r1.top() == r0.top() and r1.x() > r0.x():
                right = r1.x()
            else:  # last character of a visual line
                ch = edit.document().characterAt(c)
                right = r0.x() + max(4, edit.fontMetrics().horizontalAdvance(ch))
            if r0.x() <= point.x() < right and r0.top() <= point.y() <= r0.bottom():
                return self.step_at_position(c)
        return -1

    def point_for_step(self, index: int) -> QPoint:
        """A viewport point inside step ``index``'s first character (for tests and tours)."""
        start, _ = self.char_range(index)
        a = QTextCursor(self._edit.document())
        a.setPosition(start)
        b = QTextCursor(self._edit.document())
        b.setPosition(start + 1)
        r0, r1 = self._edit.cursorRect(a), self._edit.cursorRect(b)
        right = r1.x() if r1.top() == r0.top() and r1.x() > r0.x() else r0.x() + 4
        return QPoint((r0.x() + right) // 2, r0.center().y())

    def tooltip_html(self, index: int) -> str:
        """The hover text for step ``index``: HTML we build, every model string escaped."""
        trace = self._trace
        if trace is None or not 0 <= index < len(trace.steps):
            return ""
        s: Step = trace.steps[index]
        esc = html.escape
        pre = '<span style="white-space:pre">{}</span>'
        parts = ["<html><body>"]
        if s.token:
            parts.append(f"<b>Step {s.index}</b> &nbsp;{pre.format(esc(repr(s.token)))}")
        else:
            parts.append(
                f"<b>Step {s.index}</b> &nbsp;<i>part of a character</i> "
                f"(piece {pre.format(esc(repr(s.piece)))})"
            )
        parts.append("<br>")
        parts.append(
            f"p_final {_pct(s.p_final)} &nbsp;·&nbsp; p_raw {_pct(s.p_raw)} &nbsp;·&nbsp; "
            f"logprob {_logprob(s.p_raw)} &nbsp;·&nbsp; rank {s.rank}"
        )
        if s.token_id is not None:
            parts.append(f" &nbsp;·&nbsp; id {int(s.token_id)}")
        if s.forced:
            parts.append("<br><i>forced: picked by the user</i>")
        if s.grammar_p_before is not None:
            held = (f"<br><b>held by the grammar</b>: the model gave it {_pct(s.grammar_p_before)} before the "
                    "constraint") if s.grammar_forced else (
                f"<br><i>grammar: {_pct(s.grammar_p_before)} before the constraint")
            parts.append(held + f", {_pct(s.grammar_p_after)} after" + ("" if s.grammar_forced else "</i>"))
        if s.estimated:
            parts.append(
                f"<br><i>estimated from top-{len(s.top)}, {_pct(s.unseen_mass)} mass unseen</i>"
            )
        if s.top:
            parts.append(
                '<table cellspacing="0" cellpadding="2" style="margin-top:4px">'
                "<tr><th align=left>token</th><th align=right>raw</th>"
                "<th align=right>final</th><th align=right>logprob</th></tr>"
            )
            for alt in s.top[:_TOOLTIP_ALTS]:
                chosen = alt.id is not None and alt.id == s.token_id
                text = pre.format(esc(repr(alt.token)))
                if chosen:
                    text = f"<b>{text}</b>"
                parts.append(
                    f"<tr><td>{text}</td><td align=right>{_pct(alt.p_raw)}</td>"
                    f"<td align=right>{_pct(alt.p_final)}</td>"
                    f"<td align=right>{_logprob(alt.p_raw)}</td></tr>"
                )
            if len(s.top) > _TOOLTIP_ALTS:
                parts.append(f"<tr><td colspan=4><i>… {len(s.top) - _TOOLTIP_ALTS} more</i></td></tr>")
            parts.append("</table>")
        parts.append("</body></html>")
        return "".join(parts)

    # ------------------------------------------------------------------ internals

    def _muted(self) -> RGB:
        pal = self.palette()  # the edit's colours unless it was given a palette of its own (it is not)
        return muted_color(_rgb(pal.color(QPalette.ColorRole.Text)), _rgb(pal.color(QPalette.ColorRole.Base)))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        if event.type() == QEvent.Type.PaletteChange:
            self._rebuild()  # the prompt's grey is chosen against the base colour
        super().changeEvent(event)

    def _update_caption(self) -> None:
        self._legend_caption.setText("colour = p_final" if self._color_by == "final" else "colour = p_raw")

    def _step_format(self, step: Step) -> QTextCharFormat:
        p = step.p_final if self._color_by == "final" else step.p_raw
        bg = color_for(p, self._palette)
        fmt = QTextCharFormat()
        if step.token:
            fmt.setBackground(QColor(*bg))
            fmt.setForeground(QColor(*text_color_for(bg)))
        else:  # partial character: a muted placeholder, still hoverable and clickable
            muted = blend(bg, (255, 255, 255), 0.6)
            fmt.setBackground(QColor(*muted))
            fmt.setForeground(QColor(*text_color_for(muted)))
        if step.forced:
            fmt.setFontItalic(True)
        if step.grammar_forced:  # the grammar held the model to a token it did not want
            fmt.setUnderlineStyle(QTextCharFormat.DashUnderline)
            fmt.setUnderlineColor(QColor(*_GRAMMAR_MARK))
        return fmt

    def _insert_step(self, cursor: QTextCursor, step: Step) -> None:
        text = visible_text(step.token, self._show_ws) if step.token else PARTIAL_PLACEHOLDER
        start = cursor.position()
        cursor.insertText(text, self._step_format(step))
        self._starts.append(start)
        self._ends.append(cursor.position())

    def _rebuild(self) -> None:
        edit = self._edit
        bar = edit.verticalScrollBar()
        old_value = bar.value()
        edit.setUpdatesEnabled(False)
        try:
            edit.setExtraSelections([])
            edit.document().clear()
            self._starts.clear()
            self._ends.clear()
            cursor = QTextCursor(edit.document())
            cursor.beginEditBlock()
            if self._prompt:
                fmt = QTextCharFormat()
                fmt.setForeground(QColor(*self._muted()))
                cursor.insertText(visible_text(self._prompt, self._show_ws), fmt)
            if self._trace is not None:
                for step in self._trace.steps[: self._shown_count()]:
                    self._insert_step(cursor, step)
            cursor.endEditBlock()
        finally:
            edit.setUpdatesEnabled(True)
        self._apply_selection(scroll=False)
        bar.setValue(min(old_value, bar.maximum()))

    def _apply_selection(self, scroll: bool) -> None:
        edit = self._edit
        idx = self._selected
        if idx is None or idx >= len(self._starts):
            edit.outline = None
            edit.setExtraSelections([])
            edit.viewport().update()
            return
        start, end = self._starts[idx], self._ends[idx]
        sel = QTextEdit.ExtraSelection()
        cur = QTextCursor(edit.document())
        cur.setPosition(start)
        cur.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        sel.cursor = cur
        fmt = QTextCharFormat()
        fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.SingleUnderline)
        fmt.setUnderlineColor(_HIGHLIGHT)
        sel.format = fmt
        edit.outline = (start, end)
        edit.setExtraSelections([sel])
        edit.viewport().update()
        if scroll:
            caret = QTextCursor(edit.document())
            caret.setPosition(start)
            edit.setTextCursor(caret)
            edit.ensureCursorVisible()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if obj is self._edit.viewport():
            etype = event.type()
            if etype == QEvent.Type.ToolTip:
                index = self.step_at(event.pos())
                if index >= 0:
                    QToolTip.showText(event.globalPos(), self.tooltip_html(index), self._edit.viewport())
                else:
                    QToolTip.hideText()
                    event.ignore()
                return True
            if etype == QEvent.Type.MouseButtonPress and event.button() == Qt.MouseButton.LeftButton:
                self._press_index = self.step_at(event.position().toPoint())
            elif etype == QEvent.Type.MouseButtonRelease and event.button() == Qt.MouseButton.LeftButton:
                index = self.step_at(event.position().toPoint())
                pressed, self._press_index = self._press_index, -1
                if index >= 0 and index == pressed:
                    self._selected = index
                    self._apply_selection(scroll=False)
                    self.stepClicked.emit(index)
                elif index < 0 and pressed < 0 and not self._edit.textCursor().hasSelection():
                    self.backgroundClicked.emit()
        return super().eventFilter(obj, event)
