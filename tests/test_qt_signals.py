"""Guard against the Qt binding bug that crashed the app: PySide6 6.12.0 on Python < 3.12
dropped a reference on every signal emission ("Fatal Python error: bool_dealloc"), which
killed the window after a few hundred tokens. pyproject.toml excludes that release; this
test fails (in a subprocess, so the suite survives) if a broken binding is installed."""

import subprocess
import sys

CODE = """
import sys
from PySide6.QtCore import QCoreApplication, QObject, Signal
app = QCoreApplication([])
class A(QObject):
    s = Signal(object)
    t = Signal(int, object)
a = A()
a.s.connect(lambda x: None)
a.t.connect(lambda i, x: None)
o = object()
before = sys.getrefcount(o)
for _ in range(20000):
    a.s.emit(o); a.t.emit(1, o); a.s.emit(None)
print(sys.getrefcount(o) - before)
"""


def test_signal_emission_keeps_reference_counts():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "0"
