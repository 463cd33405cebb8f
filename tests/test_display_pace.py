"""Presentation mode's display queue (app.display_pace) on a fake clock, and its two settings."""

from __future__ import annotations

import math

import pytest

from app.core.settings import AppSettings
from app.display_pace import ONE_PER_CLICK, PACE_STEPS, DisplayPace


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_inactive_shows_everything():
    pace = DisplayPace(1.0, clock=Clock())
    assert pace.advance(7) == 7 and pace.held == 0


def test_a_rate_lets_tokens_out_one_interval_apart():
    clock = Clock()
    pace = DisplayPace(2.0, clock=clock)
    pace.start()
    assert pace.advance(0) == 0
    assert pace.advance(10) == 1  # the first shows at once
    assert pace.advance(10) == 1  # the next is due in 0.5 s
    clock.t += 0.49
    assert pace.advance(10) == 1
    clock.t += 0.02
    assert pace.advance(10) == 2
    clock.t += 1.5  # a late tick: what fell due comes out together, the average pace holds
    assert pace.advance(10) == 5
    assert pace.held == 5
    clock.t += 100
    assert pace.advance(10) == 10 and pace.held == 0


def test_after_an_idle_spell_the_next_token_shows_at_once():
    clock = Clock()
    pace = DisplayPace(1.0, clock=clock)
    pace.start()
    assert pace.advance(1) == 1
    clock.t += 30  # the engine was slower than the pace: nothing held meanwhile
    assert pace.advance(1) == 1
    assert pace.advance(3) == 2  # shows at once, not 30 tokens' worth of catch-up
    assert pace.advance(3) == 2


def test_a_token_arriving_within_the_interval_waits_for_it():
    clock = Clock()
    pace = DisplayPace(1.0, clock=clock)
    pace.start()
    assert pace.advance(1) == 1
    clock.t += 0.3
    assert pace.advance(1) == 1  # idle for a moment
    assert pace.advance(2) == 1  # the second arrived 0.3 s after the first was shown
    clock.t += 0.69
    assert pace.advance(2) == 1
    clock.t += 0.02
    assert pace.advance(2) == 2


def test_one_per_click():
    clock = Clock()
    pace = DisplayPace(ONE_PER_CLICK, clock=clock)
    pace.start()
    assert pace.per_click
    clock.t += 1000
    assert pace.advance(4) == 0  # time alone reveals nothing
    for n in (1, 2, 3, 4):
        assert pace.click()
        assert pace.advance(4) == n
    assert not pace.click()  # nothing held
    assert pace.advance(6) == 4 and pace.held == 2


def test_flush_stop_reset_and_start_from_what_is_shown():
    pace = DisplayPace(ONE_PER_CLICK, clock=Clock())
    pace.start(3)  # entering presentation mode with 3 steps already on screen
    assert pace.advance(8) == 3 and pace.held == 5
    assert pace.flush() == 8 and pace.held == 0
    pace.reset()  # a new run
    assert pace.shown == 0 and pace.advance(2) == 0
    pace.stop()  # leaving the mode: everything, from now on as it comes
    assert not pace.active and pace.advance(5) == 5
    pace.start(5)
    assert pace.advance(2) == 2  # a shorter trace replaced the old one


def test_rates_are_checked():
    pace = DisplayPace(3.0)
    with pytest.raises(ValueError):
        pace.set_rate(-1)
    with pytest.raises(ValueError):
        pace.set_rate(math.nan)
    assert PACE_STEPS[0] == ONE_PER_CLICK and list(PACE_STEPS) == sorted(PACE_STEPS)


def test_presentation_settings_default_round_trip_and_refuse_bad_values(tmp_path):
    s = AppSettings()
    assert s.presentation_scale == 1.5 and s.presentation_pace == 2.0
    s.presentation_scale, s.presentation_pace = 2, 0.0
    path = tmp_path / "settings.json"
    s.save(path)
    back = AppSettings.load(path)
    assert back.presentation_scale == 2.0 and isinstance(back.presentation_scale, float)
    assert back.presentation_pace == 0.0 and back.warning == ""
    bad = AppSettings.from_dict({"presentation_scale": 0.2, "presentation_pace": -1})
    assert bad.presentation_scale == 1.5 and bad.presentation_pace == 2.0
    assert "presentation_scale" in bad.warning and "presentation_pace" in bad.warning
    assert AppSettings.from_dict({"presentation_scale": True}).presentation_scale == 1.5
    assert AppSettings.from_dict({"presentation_scale": "2"}).presentation_scale == 1.5
