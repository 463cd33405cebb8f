"""Command line: ``samplescope`` (the window), ``samplescope generate``, ``vs``, ``align``, ``shift``,
``compare``, ``lens`` and ``bench``.

The package: ``args`` (the parser and what the flags mean), ``scaffold`` (what every command
shares: opening the model, printing records, exit codes, Ctrl+C), one module per kind of command
(``generate``, ``vs``, ``align``, ``shift``, ``compare``, ``lens``) and ``main`` (dispatch, the checks
every command shares, ``bench``, the window). Runs on the main thread; Qt is imported only when
the window is launched.
"""

from __future__ import annotations

from .args import build_parser
from .main import main

__all__ = ["main", "build_parser"]
