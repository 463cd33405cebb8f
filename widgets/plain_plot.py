"""pyqtgraph plots whose titles, axis labels and legend entries are plain text.

Owns: ``PlainPlotItem`` (a ``PlotItem`` whose ``setTitle``/``setLabel`` escape the text),
``PlainLegendItem`` (legend names escaped) and ``plain_plot_widget`` (a ``PlotWidget`` built
on them). Every plot of Samplescope is made here.

Why: pyqtgraph draws titles, axis labels and legend names with ``QGraphicsTextItem.setHtml``,
so a concept named ``<img src=...>`` (or a model called ``<u>x</u>``) would be read as HTML,
and an ``<img>`` tag even made Qt try to load a local file. Text passed to these methods is
escaped; markup of our own (a coloured axis label) goes through ``setHtmlTitle`` /
``setHtmlLabel``, whose callers escape any text they embed. GUI thread only.
"""

from __future__ import annotations

import html

import pyqtgraph as pg

__all__ = ["PlainPlotItem", "PlainLegendItem", "plain_plot_widget", "escape"]


def escape(text) -> str:
    """Plain text as HTML that shows exactly that text (line breaks kept)."""
    return html.escape("" if text is None else str(text), quote=False).replace("\n", "<br>")


class PlainLegendItem(pg.LegendItem):
    def addItem(self, item, name):  # noqa: N802 - pyqtgraph's name
        super().addItem(item, escape(name))


class PlainPlotItem(pg.PlotItem):
    def setTitle(self, title=None, **args):  # noqa: N802
        super().setTitle(None if title is None else escape(title), **args)

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
