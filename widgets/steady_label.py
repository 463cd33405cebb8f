"""``SteadyLabel``: a line of plain text that changes often without moving anything (GUI thread).

A label whose text changes many times a second while tokens stream (the token count and the
rate in the status bar, the step summary over the distribution plot) must not re-lay out the
window. A ``QLabel`` asks its parents for a new layout on every ``setText``, even when its size
stays the same; the request climbs through the splitters to the main window, and each level
repaints what it holds: measured, a summary line re-laid out the whole central area (both plots,
the token view, the tab bar) about ten times a second while streaming, which took CPU from
llama.cpp's threads (``samplescope bench``, key ``gui_vs_headless``).

A ``SteadyLabel`` paints its text itself. Its size hint is the largest its texts have needed so
far (for a word-wrapped one: the largest height at each width), and a new text asks for a new
layout only when it needs more room than that; otherwise it just repaints itself. ``settle()``
lets it shrink to its current text (a font change does it too: the sizes seen were in the old
font). The text is always plain text (never rich text or HTML).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QRect, QSize, Qt
from PySide6.QtGui import QFontMetrics, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

__all__ = ["SteadyLabel"]

_MARGIN = 2  # pixels left and right of the text


class SteadyLabel(QWidget):
    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = ""
        self._wrap = False
        self._hint = QSize(0, 0)
        self._heights: dict[int, int] = {}
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setText(text)

    # ------------------------------------------------------------------ QLabel's API
    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        text = "" if text is None else str(text)
        if text == self._text:
            return
        self._text = text
        if self._needs_more_room():
            self.updateGeometry()
        self.update()

    def setWordWrap(self, on: bool) -> None:  # noqa: N802
        self._wrap = bool(on)
        sp = self.sizePolicy()
        sp.setHeightForWidth(self._wrap)
        self.setSizePolicy(sp)
        self.settle()

    def wordWrap(self) -> bool:  # noqa: N802
        return self._wrap

    def settle(self) -> None:
        """Forget the sizes needed so far: the label fits its current text again."""
        self._hint = QSize(0, 0)
        self._heights.clear()
        self.updateGeometry()
        self.update()

    # ------------------------------------------------------------------ sizes
    def _flags(self) -> int:
        if self._wrap:
            return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap)
        return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

    def _text_size(self, width: int | None = None) -> QSize:
        fm = QFontMetrics(self.font())
        if self._wrap and width is not None:
            r = fm.boundingRect(QRect(0, 0, max(1, width - 2 * _MARGIN), 1 << 20), self._flags(), self._text or " ")
        else:
            r = fm.boundingRect(QRect(0, 0, 1 << 20, 1 << 20), self._flags(), self._text or " ")
        return QSize(r.width() + 2 * _MARGIN, max(r.height(), fm.height()) + 2)

    def _needs_more_room(self) -> bool:
        if self._wrap:
            w = self.width()
            return self._text_size(w).height() > self._heights.get(w, 0)
        s = self._text_size()
        return s.width() > self._hint.width() or s.height() > self._hint.height()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        if self._wrap:  # as QLabel: a wrapped label prefers about 80 characters a line
            fm = QFontMetrics(self.font())
            w = min(self._text_size().width(), fm.averageCharWidth() * 80)
            return QSize(w, self.heightForWidth(w))
        self._hint = self._hint.expandedTo(self._text_size())
        return QSize(self._hint)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        if self._wrap:
            fm = QFontMetrics(self.font())
            return QSize(fm.averageCharWidth() * 4, fm.height() + 2)
        return self.sizeHint()

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return self._wrap

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        if not self._wrap:
            return -1
        h = max(self._text_size(width).height(), self._heights.get(width, 0))
        if len(self._heights) > 256:  # widths seen while the window was resized
            self._heights.clear()
        self._heights[width] = h
        return h

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.FontChange:  # the sizes seen so far were in the old font
            self.settle()
        super().changeEvent(event)

    # ------------------------------------------------------------------ painting
    def paintEvent(self, _event) -> None:  # noqa: N802
        p = QPainter(self)
        group = QPalette.ColorGroup.Active if self.isEnabled() else QPalette.ColorGroup.Disabled
        p.setPen(self.palette().color(group, QPalette.ColorRole.WindowText))
        p.drawText(self.rect().adjusted(_MARGIN, 0, -_MARGIN, 0), self._flags(), self._text)
        p.end()
