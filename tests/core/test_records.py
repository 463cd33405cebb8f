"""Typed records (``app.core.records``): the dict form round-trips, old shapes upgrade, bad
dicts are refused with the field named, a stored run is read with its unreadable records said."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from app.core.records import Record, RecordError, RecordTypes
from app.core.store import Experiment
from backends.base import SamplerSettings


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Point:
    x: float
    label: str | None = None


@dataclass(frozen=True)
class Row(Record):
    KIND = "row"

    run: int
    value: float
    points: tuple[Point, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    colour: Colour = Colour.RED
    trace: dict[str, Any] | None = None
    note: str | None = None


@dataclass(frozen=True)
class Total(Record):
    KIND = "total"

    n: int


@dataclass(frozen=True)
class Renamed(Record):
    """Schema 2 renamed ``old_name`` to ``name``."""

    SCHEMA = 2
    UPGRADES = {1: lambda d: {**{k: v for k, v in d.items() if k != "old_name"}, "name": d["old_name"]}}

    name: str


def test_round_trip_keeps_every_field_and_writes_kind_and_schema() -> None:
    row = Row(3, 0.25, (Point(1.0, "a"), Point(2.5)), {"kl": 0.1}, Colour.BLUE, {"steps": [{"id": 1}]}, "hi")
    d = row.to_dict()
    assert d["kind"] == "row" and d["schema"] == 1
    assert d["points"] == [{"x": 1.0, "label": "a"}, {"x": 2.5, "label": None}] and d["colour"] == "blue"
    assert Row.from_dict(d) == row


def test_numpy_values_become_plain_numbers() -> None:
    d = Row(np.int64(2), np.float32(0.5), scores={"a": np.float64(1.5)}).to_dict()  # type: ignore[arg-type]
    assert type(d["run"]) is int and type(d["value"]) is float and type(d["scores"]["a"]) is float


def test_null_reads_back_as_nan_in_a_float_field_and_none_where_none_is_allowed() -> None:
    back = Row.from_dict({"run": 1, "value": None, "points": [{"x": None}]})
    assert math.isnan(back.value) and math.isnan(back.points[0].x) and back.points[0].label is None


def test_a_dict_written_before_records_were_typed_is_schema_one() -> None:
    assert Row.from_dict({"kind": "row", "run": 1, "value": 2}) == Row(1, 2.0)


def test_an_old_shape_is_upgraded() -> None:
    assert Renamed.from_dict({"old_name": "x"}) == Renamed("x")
    assert Renamed.from_dict({"name": "y", "schema": 2}) == Renamed("y")
    assert Renamed("z").to_dict() == {"name": "z", "schema": 2}


def test_a_newer_schema_is_refused_with_a_message_that_says_so() -> None:
    with pytest.raises(RecordError, match="newer version of Samplescope"):
        Row.from_dict({"run": 1, "value": 2, "schema": 9})


@pytest.mark.parametrize("data, where", [
    ({"value": 1.0}, "'run' is missing"),
    ({"run": "one", "value": 1.0}, "Row.run"),
    ({"run": 1.5, "value": 1.0}, "Row.run"),
    ({"run": True, "value": 1.0}, "Row.run"),
    ({"run": 1, "value": "x"}, "Row.value"),
    ({"run": 1, "value": 1, "points": [{"x": "far"}]}, r"Row.points\[0\].x"),
    ({"run": 1, "value": 1, "colour": "green"}, "Row.colour"),
    ({"run": 1, "value": 1, "points": "none"}, "Row.points"),
])
def test_a_dict_that_does_not_fit_names_the_field(data: dict, where: str) -> None:
    with pytest.raises(RecordError, match=where):
        Row.from_dict(data)


def test_unknown_keys_are_ignored() -> None:
    assert Row.from_dict({"run": 1, "value": 2, "added_later": [1, 2]}) == Row(1, 2.0)


def test_record_types_read_by_kind_and_a_stored_run_keeps_what_it_can_read() -> None:
    types = RecordTypes(params=Renamed, records=(Row, Total), summary=Total)
    exp = Experiment(1, "2026-12-02T00:00:00", "toy", "t", "m", None, None, "done", {"name": "p", "schema": 2},
                     ({"kind": "row", "run": 0, "value": 1}, {"kind": "total", "n": 1},
                      {"kind": "row", "run": "bad", "value": 1}, {"kind": "mystery"}),
                     {"kind": "total", "n": 2})
    typed = types.read_experiment(exp)
    assert typed.params == Renamed("p") and typed.summary == Total(2)
    assert typed.records == (Row(0, 1.0), Total(1))
    assert len(typed.problems) == 2 and "record 3" in typed.problems[0] and "mystery" in typed.problems[1]


@dataclass(frozen=True)
class _WithSettings(Record):
    pair: tuple[int, str]
    settings: SamplerSettings


def test_fixed_tuples_and_settings_with_a_ban_survive_the_store() -> None:
    """A ``tuple[int, str]`` reads back as its values (not as its types), and nested sampler
    settings keep a banned token's -inf through JSON (written "-inf" by their own dict form)."""
    import json

    rec = _WithSettings((3, "x"), SamplerSettings(logit_bias=((5, float("-inf")), ("hi", 1.5)), stop=("\n",)))
    stored = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    assert stored["settings"]["logit_bias"] == [[5, "-inf"], ["hi", 1.5]]
    back = _WithSettings.from_dict(stored)
    assert back == rec and back.pair == (3, "x") and back.settings.logit_bias[0][1] == float("-inf")
    with pytest.raises(RecordError, match="pair"):
        _WithSettings.from_dict({**stored, "pair": [3]})
