"""RedrawPacer: while streaming, redraws at most every min_s, wait while the GUI thread is over
its budget, and never wait longer than max_s; idle, everything is due at once."""

from __future__ import annotations

from app.redraw_pacer import RedrawPacer


class _Clock:
    def __init__(self):
        self.t = 100.0
        self.cpu = 0.0

    def advance(self, dt: float, cpu_share: float) -> None:
        self.t += dt
        self.cpu += dt * cpu_share


def _pacer(clock):
    return RedrawPacer({"plots": (0.2, 2.0)}, budget=0.06, window_s=1.0, clock=lambda: clock.t,
                       cpu=lambda: clock.cpu)


def _run(share: float, seconds: float = 10.0, streaming: bool = True) -> int:
    clock = _Clock()
    pacer = _pacer(clock)
    draws = 0
    for _ in range(int(seconds / 0.033)):
        clock.advance(0.033, share)
        pacer.tick()
        if pacer.due("plots", streaming):
            pacer.drawn("plots")
            draws += 1
    return draws


def test_under_budget_draws_at_the_capped_rate():
    assert 40 <= _run(0.01) <= 51  # about 5 per second over 10 s


def test_over_budget_draws_at_the_floor_rate():
    assert 4 <= _run(0.5) <= 6  # every 2 s


def test_idle_everything_is_due():
    assert _run(0.5, streaming=False) == int(10.0 / 0.033)


def test_share_is_measured_over_the_window():
    clock = _Clock()
    pacer = _pacer(clock)
    for _ in range(60):
        clock.advance(0.033, 0.25)
        pacer.tick()
    assert abs(pacer.share() - 0.25) < 1e-6
    for _ in range(60):
        clock.advance(0.033, 0.0)
        pacer.tick()
    assert pacer.share() < 0.05  # the busy second has left the window
