"""pyqtgraph plots whose titles, axis labels and legend entries are plain text.

Owns: ``PlainPlotItem`` (a ``PlotItem`` whose ``setTitle``/``setLabel`` escape the text),
``PlainLegendItem`` (legend names escaped) and ``plain_plot_widget`` (a ``PlotWidget`` built
on them). Every plot of Samplescope is made here.

Why: pyqtgraph draws titles, axis labels and legend names with ``QGraphicsTextItem.setHtml``,
so a concept named ``<img src=...>`` (or a model called ``<u>x</u>``) would be read as HTML,
and an ``<img>`` tag even made Qt try to load a local file. Text passed to these methods is
escaped; markup of our own (a coloured axis label) goes through ``setHtmlTitle`` /
``setHtmlLabel``, whose callers escape any text they embed. GUI thread only.

Every ``PlainPlotItem`` leaves room above its view for the top tick label (pyqtgraph centres it
on the view's top edge). ``PlainPlotItem.set_text_scale(factor)`` scales every text of a plot
(tick labels, axis labels, title, legend entries; the room above grows with them) and
``set_text_color(rgb)`` colours it and the axes, for presentation mode;
``set_text_scale(1.0)`` and ``set_text_color(None)`` give back exactly what it had before. A plot
whose owner sets its axes' tick fonts and pens itself (the distribution plot, from its widget's
font and palette) sets ``owner_axes`` and keeps them.
"""

from __future__ import annotations

import html
import math
from typing import Any

from PySide6.QtGui import QFont, QFontMetricsF
from PySide6.QtWidgets import QApplication

import pyqtgraph as pg

__all__ = ["PlainPlotItem", "PlainLegendItem", "plain_plot_widget", "escape", "scaled_font"]

_AXES = ("left", "bottom", "right", "top")
_TITLE_ROW = 30  # pyqtgraph's fixed height of the title row, in pixels


def escape(text) -> str:
    """Plain text as HTML that shows exactly that text (line breaks kept)."""
    return html.escape("" if text is None else str(text), quote=False).replace("\n", "<br>")


def scaled_font(font: QFont, factor: float) -> QFont:
    """A copy of ``font`` ``factor`` times as large (in points, or in pixels for a pixel-sized font)."""
    out = QFont(font)
    if font.pointSizeF() > 0:
        out.setPointSizeF(font.pointSizeF() * factor)
    elif font.pixelSize() > 0:
        out.setPixelSize(max(1, round(font.pixelSize() * factor)))
    return out


def _scaled_css_size(size: Any, factor: float) -> Any:
    """'11pt' -> '16.5pt' (a size pyqtgraph writes into its labels' HTML); other forms as they are."""
    if isinstance(size, str) and size.endswith(("pt", "px")):
        try:
            return f"{float(size[:-2]) * factor:g}{size[-2:]}"
        except ValueError:
            return size
    return size


class PlainLegendItem(pg.LegendItem):
    def addItem(self, item, name):  # noqa: N802 - pyqtgraph's name
        super().addItem(item, escape(name))


class PlainPlotItem(pg.PlotItem):
    #: True when the plot's owner sets the axes' tick fonts and pens itself: they are left alone
    owner_axes = False
    _text_scale = 1.0
    _text_originals: dict[str, Any] | None = None
    _color_originals: dict[str, Any] | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # room above the top tick label, which is centred on the view's top edge: a range that
        # ends on a tick (0 to 1 on an empty plot, a whole number while a run streams) cut it in half
        left, top, right, bottom = self.getContentsMargins()
        room = math.ceil(QFontMetricsF(QApplication.font()).height() / 2)
        self.setContentsMargins(left, max(top, room), right, bottom)

    def setTitle(self, title=None, **args):  # noqa: N802
        super().setTitle(None if title is None else escape(title), **args)
        self._fit_title_row()

    def _fit_title_row(self) -> None:
        if self.titleLabel.isVisible() and self._text_scale != 1.0:
            h = math.ceil(_TITLE_ROW * self._text_scale)
            self.titleLabel.setMaximumHeight(h)
            self.layout.setRowFixedHeight(0, h)

    # ------------------------------------------------------------------ text scale
    def text_scale(self) -> float:
        return self._text_scale

    def set_text_scale(self, factor: float) -> None:
        """Draw every text of the plot ``factor`` times as large: the tick labels and label of each
        axis, the title and the legend entries (ones added later too). 1.0 restores exactly what
        the plot had before the first scaling. Call it before the application's font changes (a
        tick font left to the default is scaled from the application's font as it is then)."""
        factor = float(factor)
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"a text scale must be a positive number, not {factor!r}")
        if self._text_originals is None:
            if factor == 1.0:
                return
            self._text_originals = self._capture_texts()
        orig = self._text_originals
        restore = factor == 1.0
        for name, (tick, label) in orig["axes"].items():
            axis = self.getAxis(name)
            if not self.owner_axes:
                axis.setTickFont(tick if restore else scaled_font(tick or orig["app_font"], factor))
            axis.label.setFont(label if restore else scaled_font(label, factor))
            axis._adjustSize()  # pyqtgraph's own: room for the label in its new font
        title = self.titleLabel
        if orig["title_size"] is None:
            if restore:
                title.opts.pop("size", None)
            else:
                title.setAttr("size", _scaled_css_size(f"{orig['app_font'].pointSizeF():g}pt", factor))
        else:
            title.setAttr("size", orig["title_size"] if restore else _scaled_css_size(orig["title_size"], factor))
        title.setText(title.text)
        if self.legend is not None and orig["legend_size"] is not None:
            self.legend.setLabelTextSize(orig["legend_size"] if restore
                                         else _scaled_css_size(orig["legend_size"], factor))
            self._redo_legend()
        # room above the top tick label, which is centred on the view's top edge
        left, top, right, bottom = orig["margins"]
        if not restore:
            top = max(top, math.ceil(QFontMetricsF(scaled_font(orig["app_font"], factor)).height() / 2))
        self.setContentsMargins(left, top, right, bottom)
        self._text_scale = factor
        if title.isVisible():
            h = _TITLE_ROW if restore else math.ceil(_TITLE_ROW * factor)
            title.setMaximumHeight(h)
            self.layout.setRowFixedHeight(0, h)
        if restore:
            self._text_originals = None

    def set_text_color(self, rgb: tuple[int, int, int] | None) -> None:
        """Draw the axes, tick labels, axis labels, title and legend entries in ``rgb`` (None:
        back to exactly what they were)."""
        if rgb is None:
            orig = self._color_originals
            if orig is None:
                return
            for name, (pen, text_pen, style) in orig["axes"].items():
                axis = self.getAxis(name)
                # pyqtgraph's own fields: a pen left to the default must stay "default", not a copy
                axis._pen, axis._textPen, axis.labelStyle = pen, text_pen, style
                axis._updateLabel()
            self.titleLabel.setAttr("color", orig["title"])
            self.titleLabel.setText(self.titleLabel.text)
            if self.legend is not None and orig["legend"] is not None:
                self.legend.setLabelTextColor(orig["legend"])
                self._redo_legend()
            self._color_originals = None
            return
        if self._color_originals is None:
            self._color_originals = {
                "axes": {name: (self.getAxis(name)._pen, self.getAxis(name)._textPen, dict(self.getAxis(name).labelStyle))
                         for name in _AXES if not self.owner_axes},
                "title": self.titleLabel.opts.get("color"),
                "legend": self.legend.opts["labelTextColor"] if self.legend is not None else None,
            }
        for name in self._color_originals["axes"]:
            axis = self.getAxis(name)
            axis.setPen(pg.mkPen(rgb))
            axis.setTextPen(pg.mkPen(rgb))
        self.titleLabel.setAttr("color", rgb)
        self.titleLabel.setText(self.titleLabel.text)
        if self.legend is not None:
            self.legend.setLabelTextColor(rgb)
            self._redo_legend()

    def _redo_legend(self) -> None:
        """pyqtgraph's legend only notes a new label size or colour: draw its labels again."""
        for _sample, label in self.legend.items:
            label.setText(label.text)
        self.legend.updateSize()

    def _capture_texts(self) -> dict[str, Any]:
        axes = {}
        for name in _AXES:
            axis = self.getAxis(name)
            tick = axis.style["tickFont"]
            axes[name] = (QFont(tick) if tick is not None else None, QFont(axis.label.font()))
        return {
            "axes": axes,
            "app_font": QFont(QApplication.font()),
            "margins": self.getContentsMargins(),
            "title_size": self.titleLabel.opts.get("size"),
            "legend_size": self.legend.opts["labelTextSize"] if self.legend is not None else None,
        }

    def setHtmlTitle(self, html_text: str, **args) -> None:  # noqa: N802
        """A title that is markup of our own (escape any text you put in it)."""
        super().setTitle(html_text, **args)

    def setLabel(self, axis, text=None, units=None, unitPrefix=None, **args):  # noqa: N802
        super().setLabel(axis, None if text is None else escape(text),
                         None if units is None else escape(units), unitPrefix, **args)

    def setHtmlLabel(self, axis, html_text: str, **args) -> None:  # noqa: N802
        super().setLabel(axis, html_text, **args)

    def addLegend(self, offset=(30, 30), **kwargs):  # noqa: N802
        if self.legend is None:
            self.legend = PlainLegendItem(offset=offset, **kwargs)
            self.legend.setParentItem(self.vb)
        return self.legend


def plain_plot_widget(parent=None, **kwargs) -> pg.PlotWidget:
    """A ``pg.PlotWidget`` whose plot item is a ``PlainPlotItem`` (``kwargs`` as PlotWidget's:
    ``background``, ``axisItems``, ...)."""
    axis_items = kwargs.pop("axisItems", None)
    background = kwargs.pop("background", "default")
    item = PlainPlotItem(axisItems=axis_items, **kwargs)
    return pg.PlotWidget(parent, background=background, plotItem=item)
