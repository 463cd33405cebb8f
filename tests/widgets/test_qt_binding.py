"""The Qt binding keeps None's reference count: a guard for a crash found while building the widgets.

PySide6 6.12.0 on CPython 3.11 drops a reference to None on every call of a void method (and to
True/False on ``Signal.emit``). On 3.12+ None is immortal and nothing happens; on 3.11 the count
reaches zero after some 17,000 calls and the process aborts with "Fatal Python error:
none_dealloc" (streaming a few thousand tokens into the plots is enough). PySide6 6.11.3 is fine.
"""

import sys

import pytest
from PySide6.QtGui import QColor, QTextCharFormat


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 on")
def test_void_calls_keep_none_alive():
    import PySide6

    fmt = QTextCharFormat()
    color = QColor(1, 2, 3)
    fmt.setBackground(color)
    before = sys.getrefcount(None)
    for _ in range(200):
        fmt.setBackground(color)
    lost = before - sys.getrefcount(None)
    assert lost < 50, (
        f"PySide6 {PySide6.__version__} loses a reference to None per void call ({lost} in 200): "
        "the app will abort with 'none_dealloc'; use a PySide6 without this bug (6.11.3 works)"
    )
