"""Presentation mode's pace: ``DisplayPace``, a display queue of the tokens already generated
(GUI thread, Qt-free).

The engine is never slowed. It generates as fast as it can and every step goes into the trace
as usual (saved, exportable, ready for the what-if); the window only *shows* the first
``shown`` steps and lets the rest out at the chosen pace: ``rate`` tokens per second, or one
per ``click()`` (``rate == 0``). ``flush()`` shows everything at once (leaving presentation
mode does it); Stop stops the engine and discards nothing: what was generated stays queued
and keeps coming out at the pace.

``advance(available)`` is called on each tick of the window's redraw timer with the number of
steps in the trace and returns how many to show. Tokens come out at least one interval apart;
after an idle spell (nothing held) longer than that, the next one shows as soon as it arrives. If
ticks come late while tokens are held, the ones that fell due in between come out together, so
the average pace holds.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["DisplayPace", "PACE_STEPS", "ONE_PER_CLICK"]

#: ``rate`` of "one token per click"
ONE_PER_CLICK = 0.0
#: The pace slider's positions (tokens per second; 0: one token per click).
PACE_STEPS: tuple[float, ...] = (ONE_PER_CLICK, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0)


class DisplayPace:
    def __init__(self, rate: float = 2.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.active = False  # inactive: everything shows at once
        self.rate = ONE_PER_CLICK
        self.set_rate(rate)
        self.shown = 0
        self.available = 0
        self._due: float | None = None  # when the next token may show (None: at once)
        self._idle = True  # nothing was held at the last advance

    def set_rate(self, rate: float) -> None:
        """Tokens per second (> 0) or ``ONE_PER_CLICK`` (0). A new rate applies from now on."""
        rate = float(rate)
        if not rate >= 0.0:
            raise ValueError(f"a pace is a number of tokens per second >= 0, not {rate!r}")
        self.rate = rate
        self._due = None

    @property
    def per_click(self) -> bool:
        return self.active and self.rate == ONE_PER_CLICK

    @property
    def held(self) -> int:
        """How many generated steps are waiting to be shown."""
        return max(0, self.available - self.shown)

    def start(self, shown: int = 0) -> None:
        """Hold what arrives from now on (the steps up to ``shown`` are already on screen)."""
        self.active = True
        self.shown = self.available = max(0, int(shown))
        self._due = None

    def stop(self) -> None:
        """Leave pacing: the queue is flushed and later steps show as they come."""
        self.flush()
        self.active = False

    def reset(self) -> None:
        """A new run starts (the trace was replaced): nothing shown, nothing held."""
        self.shown = self.available = 0
        self._due = None

    def flush(self) -> int:
        """Show every step that is held; returns how many are shown."""
        self.shown = self.available
        self._due = None
        return self.shown

    def click(self) -> bool:
        """One step more (whatever the rate); False when none is held."""
        if self.shown >= self.available:
            return False
        self.shown += 1
        if self.rate > 0:
            self._due = self._clock() + 1.0 / self.rate
        return True

    def advance(self, available: int) -> int:
        """The trace now holds ``available`` steps: how many to show now."""
        self.available = max(0, int(available))
        if not self.active:
            self.shown = self.available
            return self.shown
        if self.shown > self.available:  # the trace was replaced by a shorter one
            self.shown = self.available
        if self.rate <= 0:  # one per click: only click() reveals
            return self.shown
        if self.shown >= self.available:
            self._idle = True
            return self.shown
        now = self._clock()
        if self._due is None or (self._idle and self._due < now):
            self._due = now  # nothing was held: no catching up for the idle time
        self._idle = False
        interval = 1.0 / self.rate
        while self.shown < self.available and self._due <= now:
            self.shown += 1
            self._due += interval
        return self.shown
