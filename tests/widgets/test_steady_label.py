"""SteadyLabel: text that changes often repaints the label only, never re-lays out the window;
plain text always."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QVBoxLayout, QWidget

from widgets.steady_label import SteadyLabel


class _Count(QObject):
    def __init__(self):
        super().__init__()
        self.layouts = 0

    def eventFilter(self, obj, event):  # noqa: N802
        if event.type() == QEvent.Type.LayoutRequest:
            self.layouts += 1
        return False


def _host(qtbot, wrap=False):
    host = QWidget()
    qtbot.addWidget(host)
    lay = QVBoxLayout(host)
    label = SteadyLabel("")
    label.setWordWrap(wrap)
    lay.addWidget(label)
    host.resize(300, 120)
    host.show()
    qtbot.waitExposed(host)
    counter = _Count()
    host.installEventFilter(counter)
    return host, label, counter


def test_a_text_of_the_same_size_asks_for_no_layout(qtbot):
    host, label, counter = _host(qtbot)
    label.setText("12.3 tokens/s")
    qtbot.wait(1)
    width = label.sizeHint().width()
    counter.layouts = 0
    for i in range(40):  # "9.9", "10.0" ...: never wider than the widest so far
        label.setText(f"{10 + i % 9}.{i % 10} tokens/s")
    qtbot.wait(20)
    assert counter.layouts == 0
    assert label.sizeHint().width() == width
    label.setText("123456789.0 tokens per second")  # more room: one layout
    qtbot.waitUntil(lambda: counter.layouts >= 1, timeout=2000)
    assert label.sizeHint().width() > width
    label.setText("1")
    assert label.sizeHint().width() > width  # it does not shrink back while streaming
    label.settle()
    assert label.sizeHint().width() < width


def test_word_wrapped_height_only_grows(qtbot):
    host, label, counter = _host(qtbot, wrap=True)
    long = "Step 12: ' the'  ·  p_raw 41.20%  ·  p_final 63.00%  ·  rank 1  ·  entropy 2.113 → 1.050 nats"
    label.setText(long)
    h = label.heightForWidth(200)
    assert h > label.heightForWidth(2000)  # wraps at 200 pixels
    label.setText("short")
    assert label.heightForWidth(200) == h


def test_markup_is_shown_as_written(qtbot):
    host, label, _ = _host(qtbot)
    label.setText("<b>bold</b> &amp;")
    assert label.text() == "<b>bold</b> &amp;"
    assert label.sizeHint().width() > SteadyLabel("bold &").sizeHint().width()  # the tags take room
