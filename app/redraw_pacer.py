"""How often the window redraws while tokens stream: ``RedrawPacer`` (GUI thread, Qt-free).

On a machine with few cores llama.cpp's threads take every core, and its decode waits for the
slowest of them: every millisecond the GUI thread spends drawing is taken from a decode thread
and stalls the whole step. Measured on 2 cores (``samplescope bench``, key
``gui_vs_headless``): plots at 10 Hz and text at 30 Hz cost 35% of the token rate.

So while a run streams the window draws on a budget: each channel (the token text, the plots)
redraws at most every ``min_s`` and, while the GUI thread has used more than ``budget`` of a
core over the last ``window_s`` seconds, waits, but never longer than ``max_s`` (it keeps
moving, if slowly, however slow the machine). A fast machine reaches the ``min_s`` rates and
never feels the budget; a slow one draws as often as it can afford. Idle (nothing streaming)
every channel redraws at once.

``tick()`` is called on each redraw-timer tick, on the GUI thread: ``time.thread_time`` then
measures that thread's CPU (its drawing, and the steps it receives).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

__all__ = ["RedrawPacer", "Channel", "GUI_BUDGET"]

#: The share of one core the GUI thread may use while tokens stream (drawing and all).
GUI_BUDGET = 0.06


@dataclass
class Channel:
    min_s: float  # at most this often while streaming
    max_s: float  # and at least this often, whatever the budget
    last: float = float("-inf")


class RedrawPacer:
    def __init__(self, channels: dict[str, tuple[float, float]], *, budget: float = GUI_BUDGET,
                 window_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.thread_time) -> None:
        self.channels = {name: Channel(lo, hi) for name, (lo, hi) in channels.items()}
        self.budget = float(budget)
        self.window_s = float(window_s)
        self._clock = clock
        self._cpu = cpu
        self._samples: deque[tuple[float, float]] = deque()

    def tick(self) -> None:
        """Record the GUI thread's CPU time now (once per timer tick)."""
        now = self._clock()
        self._samples.append((now, self._cpu()))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def share(self) -> float:
        """The share of a core the GUI thread used over the last ``window_s`` (0 when unknown)."""
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def due(self, name: str, streaming: bool) -> bool:
        """Whether channel ``name`` may redraw now (call ``drawn`` when it does)."""
        if not streaming:
            return True
        ch = self.channels[name]
        waited = self._clock() - ch.last
        if waited < ch.min_s:
            return False
        return waited >= ch.max_s or self.share() <= self.budget

    def drawn(self, name: str) -> None:
        self.channels[name].last = self._clock()
