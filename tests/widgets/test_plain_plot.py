"""Every plot leaves room above its view for the top tick label, which pyqtgraph centres on the
view's top edge: a range that ends on a tick (0 to 1 on an empty plot, a whole number of nats
while a run streams) showed only its lower half."""

from __future__ import annotations

from PySide6.QtGui import QFontMetricsF
from PySide6.QtWidgets import QApplication

from widgets.entropy_plot import EntropyPlot
from widgets.plain_plot import plain_plot_widget


def _room_above_view(pw) -> float:
    item = pw.getPlotItem()
    return item.vb.mapRectToScene(item.vb.boundingRect()).top() - pw.sceneRect().top()


def test_the_top_tick_label_fits_above_the_view(qtbot):
    half = QFontMetricsF(QApplication.font()).height() / 2
    pw = plain_plot_widget()
    qtbot.addWidget(pw)
    pw.resize(400, 300)
    pw.getPlotItem().setYRange(0, 1, padding=0)
    pw.show()
    qtbot.waitExposed(pw)
    assert _room_above_view(pw) >= half - 0.5
    timeline = EntropyPlot()  # the Workbench's timeline, empty as at start-up
    qtbot.addWidget(timeline)
    timeline.resize(500, 300)
    timeline.show()
    qtbot.waitExposed(timeline)
    assert _room_above_view(timeline.plot_widget()) >= half - 0.5
