"""Typed records: the frozen dataclasses the labs yield, store and replay, and their dict form.

Owns:
- ``Record``, the base of every lab record, parameter set and summary: a frozen dataclass with
  ``to_dict`` (plain JSON-ready values, with ``schema``: the version of its shape, and ``kind``
  when the type has one) and ``from_dict`` (the reverse, checked field by field against the
  type hints, upgrading older shapes through ``UPGRADES``);
- ``RecordTypes``: one lab's types (its parameters, its summary, its records told apart by
  ``kind``) and ``read_experiment``, which turns a stored lab run into typed values and says
  which records it could not read instead of failing the whole run;
- ``RecordError``: a dict that does not fit its type, with the path of the bad field.

The rules of the dict form, the same for every record:
- a dict without ``schema`` was written before records were typed (2026-12-02 and earlier) and
  is schema 1, the shape that was written then; a new shape raises ``SCHEMA`` and adds an
  ``UPGRADES[old]`` function that rewrites an old dict into the next shape, so a store written
  by any earlier version still opens;
- a dict with a schema newer than this version knows is refused with a message saying so (its
  data stays in the store); keys the type does not have are ignored (``kind``, ``schema``, or a
  field a later version added);
- JSON has no NaN: the store and ``--json`` write a non-finite number as null, and ``from_dict``
  reads null back as NaN in a field typed ``float`` (``float | None`` keeps None);
- tuples are written as lists, enums as their values, numpy scalars and arrays as numbers and
  lists; fields typed ``dict`` or ``Any`` (a generation's trace) are kept as they are;
- a nested value type with a dict form of its own (``to_dict`` and ``from_dict``, as
  ``SamplerSettings``, whose banned tokens are written "-inf") is written and read by it.

Any thread: records are immutable values, made on a worker and read on the GUI thread.
No Qt.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, TypeVar

__all__ = ["Record", "RecordError", "RecordTypes", "plain"]

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A stored or given dict that does not fit its record type; the message names the field."""


def plain(value: Any) -> Any:
    """``value`` as JSON-ready builtins: records and dataclasses as dicts, tuples as lists,
    enums as their values, numpy scalars and arrays as numbers and lists."""
    if isinstance(value, Record):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        own = getattr(value, "to_dict", None)
        if callable(own) and callable(getattr(type(value), "from_dict", None)):
            return plain(own())  # a value type with a dict form of its own (SamplerSettings)
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or type(value) in (str, bool, int, float):
        return value
    if isinstance(value, float):  # numpy.float64 is a float; written as a plain one
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return plain(value.tolist())
    return value


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _convert(value: Any, tp: Any, path: str) -> Any:
    """``value`` (plain JSON data) as type ``tp``; RecordError names ``path`` when it does not fit."""
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        last: RecordError | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except RecordError as exc:
                last = exc
        raise last or RecordError(f"{path}: {value!r} does not fit {tp}")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise RecordError(f"{path}: {value!r} is not one of {typing.get_args(tp)}")
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise RecordError(f"{path}: expected a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise RecordError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise RecordError(f"{path}: expected an object, got {type(value).__name__}")
        kt, vt = (typing.get_args(tp) or (Any, Any))
        return {_convert(k, kt, f"{path}.{k}") if kt is not str else str(k): _convert(v, vt, f"{path}.{k}")
                for k, v in value.items()}
    if isinstance(tp, type):
        if issubclass(tp, Record):
            if isinstance(value, tp):
                return value
            if not isinstance(value, Mapping):
                raise RecordError(f"{path}: expected an object, got {type(value).__name__}")
            return tp._from_dict(value, path)
        if dataclasses.is_dataclass(tp):
            if isinstance(value, tp):
                return value
            if not isinstance(value, Mapping):
                raise RecordError(f"{path}: expected an object, got {type(value).__name__}")
            own = getattr(tp, "from_dict", None)
            if callable(own):  # a value type with a dict form of its own (SamplerSettings: "-inf" bans)
                try:
                    return own(dict(value))
                except (TypeError, ValueError, KeyError) as exc:
                    raise RecordError(f"{path}: {exc}") from None
            return _build(tp, value, path)
        if issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                raise RecordError(f"{path}: {value!r} is not a {tp.__name__}") from None
        if tp is float:
            if value is None:
                return math.nan
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            raise RecordError(f"{path}: expected a number, got {value!r}")
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecordError(f"{path}: expected a whole number, got {value!r}")
            if isinstance(value, float) and not value.is_integer():
                raise RecordError(f"{path}: expected a whole number, got {value!r}")
            return int(value)
        if tp is bool:
            if not isinstance(value, bool):
                raise RecordError(f"{path}: expected true or false, got {value!r}")
            return value
        if tp is str:
            if not isinstance(value, str):
                raise RecordError(f"{path}: expected text, got {value!r}")
            return value
        if tp in (dict, list, tuple):
            if tp is tuple and isinstance(value, list):
                return tuple(value)
            if not isinstance(value, tp):
                raise RecordError(f"{path}: expected {tp.__name__}, got {type(value).__name__}")
            return value
        if not isinstance(value, tp):
            raise RecordError(f"{path}: expected {tp.__name__}, got {type(value).__name__}")
        return value
    return value


def _build(cls: type, data: Mapping[str, Any], path: str) -> Any:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], f"{path}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(f"{path}: the field {f.name!r} is missing")
    return cls(**kwargs)


@dataclass(frozen=True)
class Record:
    """The base of a lab's typed values. A subclass is a ``@dataclass(frozen=True)`` and may set:

    - ``SCHEMA``: the version of its dict shape (1 = the shape written before records were
      typed); raise it when a field is renamed or changes meaning, and add
    - ``UPGRADES``: ``{old_version: function(dict) -> dict in the next version's shape}``;
    - ``KIND``: the value of the ``kind`` key that tells this type apart from the lab's other
      record types in one run (``to_dict`` writes it; ``RecordTypes`` reads by it).
    """

    SCHEMA: ClassVar[int] = 1
    UPGRADES: ClassVar[Mapping[int, Callable[[dict], dict]]] = {}
    KIND: ClassVar[str | None] = None

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values, with ``schema`` (and ``kind``, if it has one)."""
        out: dict[str, Any] = {}
        if self.KIND is not None:
            out["kind"] = self.KIND
        for f in dataclasses.fields(self):
            out[f.name] = plain(getattr(self, f.name))
        out["schema"] = self.SCHEMA
        return out

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record a dict of ``to_dict``'s shape (of this or any earlier schema) describes;
        RecordError (naming the field) when it does not fit."""
        if not isinstance(data, Mapping):
            raise RecordError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        return cls._from_dict(data, cls.__name__)

    @classmethod
    def _from_dict(cls: type[R], data: Mapping[str, Any], path: str) -> R:
        version = data.get("schema", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RecordError(f"{path}: the schema version {version!r} is not a positive whole number")
        if version > cls.SCHEMA:
            raise RecordError(f"{path} was written by a newer version of Samplescope (schema {version}; this "
                              f"version reads up to {cls.SCHEMA}): open it with that version")
        d = dict(data)
        while version < cls.SCHEMA:
            try:
                d = dict(cls.UPGRADES[version](d))
            except KeyError as exc:
                raise RecordError(f"{path}: cannot upgrade schema {version} (missing {exc})") from None
            version += 1
        return _build(cls, d, path)

    def replace(self: R, **changes: Any) -> R:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class RecordTypes:
    """One lab's record types: ``params`` (what a run was asked to do), ``summary`` (what it
    found; None for a lab without one) and ``records`` (what it yields, told apart by their
    ``KIND``; a type without one reads every record whose ``kind`` no other type claims)."""

    params: type[Record]
    records: tuple[type[Record], ...]
    summary: type[Record] | None = None

    def record_type(self, data: Mapping[str, Any]) -> type[Record]:
        kind = data.get("kind") if isinstance(data, Mapping) else None
        fallback = None
        for tp in self.records:
            if tp.KIND is None:
                fallback = tp
            elif tp.KIND == kind:
                return tp
        if fallback is None:
            raise RecordError(f"a record of kind {kind!r}, which this version of the lab does not know")
        return fallback

    def read_record(self, data: Mapping[str, Any]) -> Record:
        return self.record_type(data).from_dict(data)

    def read_params(self, data: Mapping[str, Any]) -> Record:
        return self.params.from_dict(data)

    def read_summary(self, data: Mapping[str, Any] | None) -> Record | None:
        if data is None or self.summary is None:
            return None
        return self.summary.from_dict(data)

    def read_experiment(self, exp: Any) -> Any:
        """A stored lab run (``RunStore.load_experiment``) with typed ``params``, ``records`` and
        ``summary``. Records that cannot be read are left out and said in ``problems``; params
        or a summary that cannot be read raise RecordError (the run cannot be shown without them)."""
        problems: list[str] = []
        records: list[Record] = []
        for i, data in enumerate(exp.records):
            try:
                records.append(self.read_record(data))
            except RecordError as exc:
                problems.append(f"record {i + 1}: {exc}")
        return dataclasses.replace(exp, params=self.read_params(exp.params), records=tuple(records),
                                   summary=self.read_summary(exp.summary), problems=tuple(problems))
