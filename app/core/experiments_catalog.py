"""Ready-made experiments: short, named demonstrations stored as JSON files.

Owns: ``Experiment`` and ``Variant`` (frozen values), ``ExperimentError``, ``parse_experiment``,
``load_experiment`` and ``load_catalog`` (the shipped files in ``assets/experiments/`` and the
user's in ``user_dir()`` = ``config_dir()/experiments``), ``Catalog`` and ``Problem`` (a file
that could not be used, with a one-line reason). Qt-free; any thread (the window reads the
catalog on the GUI thread each time its Experiments menu opens: a few small files).

Each file holds one JSON object, schema 1 (``docs`` in the README, "Ready-made experiments"):

=================  ========  ==============================================================
field              required  meaning
=================  ========  ==============================================================
``schema``         no        1 (the version of this shape)
``title``          yes       the menu entry, one line
``explanation``    yes       two sentences shown beside the Workbench while it is open
``try``            no        one line: what to look at or do next
``prompt``         yes       the text the model continues
``sampler``        no        ``SamplerSettings`` fields (llama.cpp's names and ranges);
                             missing ones take the defaults (llama.cpp's, "Balanced")
``step_mode``      no        true: step mode (one token at a time); default false
``run``            no        false: only load it; default true (generate, or take the first
                             step in step mode, at once)
``stage``          no        the distribution view: ``"final"`` (raw vs final, the default)
                             or a stage of the chain these settings run (``"top_p"``, ...)
``select_step``    no        the step shown once the run has finished (0 = the first token)
``fresh_seed``     no        true: every run of it draws a new random seed
``order``          no        where it goes in the menu (smaller first; then the title)
``variants``       no        up to 6 buttons beside the explanation, each an object with a
                             ``label`` and any of ``sampler`` (merged over the experiment's),
                             ``prompt``, ``try``, ``stage``, ``select_step``, ``step_mode``,
                             ``run``
=================  ========  ==============================================================

Unknown fields are refused (a typo would otherwise be silently ignored), and so are values of
the wrong type or out of range; the reason names the field. A bad file never stops the others
from loading.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from app.core.paths import config_dir
from app.core.sampling import stage_names
from backends.base import SamplerSettings
from backends.text import clean_text, loads_json

__all__ = ["Experiment", "Variant", "ExperimentError", "Problem", "Catalog", "parse_experiment", "load_experiment",
           "load_catalog", "builtin_dir", "user_dir", "SCHEMA", "USER_FOLDER", "MAX_FILE_BYTES", "MAX_VARIANTS"]

SCHEMA = 1
#: the user's experiments: this folder of ``config_dir()``
USER_FOLDER = "experiments"
#: a file larger than this is refused (an experiment is a few hundred bytes)
MAX_FILE_BYTES = 256 * 1024
MAX_VARIANTS = 6
_TITLE_MAX = 80
_TEXT_MAX = 800
_PROMPT_MAX = 8000

_TOP = {"schema", "title", "explanation", "try", "prompt", "sampler", "step_mode", "run", "stage", "select_step",
        "fresh_seed", "order", "variants"}
_VARIANT = {"label", "sampler", "prompt", "try", "stage", "select_step", "step_mode", "run"}
_SAMPLER_DEFAULTS = SamplerSettings()
_SAMPLER_FIELDS = {f.name: getattr(_SAMPLER_DEFAULTS, f.name) for f in fields(SamplerSettings)}
_TEXT_LISTS = ("stop", "dry_sequence_breakers")


class ExperimentError(ValueError):
    """An experiment file that cannot be used; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One button beside the explanation: the experiment again with some of its values changed
    (``settings`` is the whole sampler, the experiment's with this variant's fields over it)."""

    label: str
    prompt: str
    settings: SamplerSettings
    try_text: str
    stage: str
    select_step: int | None
    step_mode: bool
    run: bool


@dataclass(frozen=True, slots=True)
class Experiment:
    """One ready-made experiment (see the module docstring for the file's fields). ``key`` is
    the file's name without ``.json``; ``source`` is ``"built-in"`` or ``"user"``."""

    key: str
    title: str
    explanation: str
    try_text: str
    prompt: str
    settings: SamplerSettings
    step_mode: bool
    run: bool
    stage: str
    select_step: int | None
    fresh_seed: bool
    order: int
    variants: tuple[Variant, ...]
    source: str
    path: str


@dataclass(frozen=True, slots=True)
class Problem:
    """A file that was skipped: its name, where it lives, and why (one line)."""

    name: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


@dataclass(frozen=True, slots=True)
class Catalog:
    """What ``load_catalog`` found: the usable experiments (built-in first, each group by
    ``order`` then title) and the files it skipped."""

    experiments: tuple[Experiment, ...]
    problems: tuple[Problem, ...]

    def get(self, key: str, source: str | None = None) -> Experiment | None:
        """The experiment of file ``key`` (from ``source`` when given; else the first found)."""
        return next((e for e in self.experiments if e.key == key and (source is None or e.source == source)), None)

    def of(self, source: str) -> list[Experiment]:
        return [e for e in self.experiments if e.source == source]


def builtin_dir() -> Traversable:
    """The shipped experiments (``assets/experiments``, from a checkout or an installed wheel)."""
    return resources.files("assets").joinpath("experiments")


def user_dir() -> Path:
    """``config_dir()/experiments``, where a teacher adds experiments (not created here)."""
    return config_dir() / USER_FOLDER


# ---------------------------------------------------------------------------- checking
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _text(d: dict[str, Any], name: str, *, where: str, required: bool, limit: int, one_line: bool = False) -> str:
    if name not in d:
        if required:
            raise ExperimentError(f"{where}{name} is missing")
        return ""
    v = d[name]
    if not isinstance(v, str):
        raise ExperimentError(f"{where}{name} must be a text, not {_kind(v)}")
    v = clean_text(v)
    if required and not v.strip():
        raise ExperimentError(f"{where}{name} is empty")
    if len(v) > limit:
        raise ExperimentError(f"{where}{name} is longer than {limit:,} characters")
    return _one_line(v) if one_line else v


def _bool(d: dict[str, Any], name: str, default: bool, *, where: str) -> bool:
    v = d.get(name, default)
    if not isinstance(v, bool):
        raise ExperimentError(f"{where}{name} must be true or false, not {_kind(v)}")
    return v


def _int(d: dict[str, Any], name: str, *, where: str, lo: int, hi: int) -> int | None:
    if name not in d or d[name] is None:
        return None
    v = d[name]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ExperimentError(f"{where}{name} must be a whole number, not {_kind(v)}")
    if not lo <= v <= hi:
        raise ExperimentError(f"{where}{name} = {v} is outside {lo} .. {hi:,}")
    return v


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return f"the number {v!r}"
    if isinstance(v, str):
        return "a text"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _unknown(d: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(k for k in d if k not in known)
    if extra:
        raise ExperimentError(f"unknown field {where + extra[0]!r} (the fields are: {', '.join(sorted(known))})")


def _sampler_fields(raw: Any, where: str) -> dict[str, Any]:
    """The sampler object's fields, each checked for its type (ranges: ``SamplerSettings.validate``)."""
    if not isinstance(raw, dict):
        raise ExperimentError(f"{where}sampler must be an object of sampler settings, not {_kind(raw)}")
    out: dict[str, Any] = {}
    for name, v in raw.items():
        if name not in _SAMPLER_FIELDS:
            raise ExperimentError(f"{where}sampler has no setting {name!r} (llama.cpp's names: temperature, top_k, "
                                  "top_p, min_p, repeat_penalty, seed, max_tokens, ...)")
        default = _SAMPLER_FIELDS[name]
        key = f"{where}sampler.{name}"
        if isinstance(default, bool):  # (none today; kept for a future switch)
            if not isinstance(v, bool):
                raise ExperimentError(f"{key} must be true or false, not {_kind(v)}")
        elif isinstance(default, int):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ExperimentError(f"{key} must be a whole number, not {_kind(v)}")
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ExperimentError(f"{key} must be a number, not {_kind(v)}")
            v = float(v)
        elif name in _TEXT_LISTS:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ExperimentError(f"{key} must be a list of texts")
        elif name == "samplers":
            if not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))):
                raise ExperimentError(f"{key} must be llama.cpp's --samplers text or a list of stage names")
        elif name == "logit_bias":
            if not isinstance(v, list) or not all(
                    isinstance(e, list) and len(e) == 2 and isinstance(e[0], (int, str)) and not isinstance(e[0], bool)
                    and (e[1] == "-inf" or (isinstance(e[1], (int, float)) and not isinstance(e[1], bool)))
                    for e in v):
                raise ExperimentError(f'{key} must be a list of [token id or text, bias] pairs (bias a number or "-inf")')
        out[name] = v
    return out


def _settings(d: dict[str, Any], where: str) -> SamplerSettings:
    try:
        s = SamplerSettings.from_dict(d)
        s.validate()
    except (TypeError, ValueError) as exc:
        raise ExperimentError(f"{where}sampler: {_one_line(str(exc))}") from None
    return s


def _stage(d: dict[str, Any], settings: SamplerSettings, default: str, where: str) -> str:
    if "stage" not in d:
        return default if default == "final" or default in _stages_of(settings) else "final"
    v = d["stage"]
    if not isinstance(v, str) or not v:
        raise ExperimentError(f"{where}stage must be \"final\" or the name of a stage, not {_kind(v)}")
    if v == "final":
        return v
    names = _stages_of(settings)
    if v not in names:
        runs = ", ".join(names) if names else "none"
        raise ExperimentError(f"{where}stage {v!r} does not run with these settings (the stages that run: {runs})")
    return v


def _stages_of(settings: SamplerSettings) -> list[str]:
    return (["logit_bias"] if settings.logit_bias else []) + stage_names(settings)


def parse_experiment(data: Any, key: str, *, source: str = "user", path: str = "") -> Experiment:
    """The ``Experiment`` that ``data`` (a parsed file) describes; ``ExperimentError`` (one
    line, naming the field) if it is not one."""
    if not isinstance(data, dict):
        raise ExperimentError(f"the file must hold one JSON object, not {_kind(data)}")
    _unknown(data, _TOP, "")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA or isinstance(schema, bool):
        raise ExperimentError(f"schema {schema!r} is not one this version reads (it reads {SCHEMA})")
    title = _text(data, "title", where="", required=True, limit=_TITLE_MAX, one_line=True)
    explanation = _text(data, "explanation", where="", required=True, limit=_TEXT_MAX, one_line=True)
    try_text = _text(data, "try", where="", required=False, limit=_TEXT_MAX, one_line=True)
    prompt = _text(data, "prompt", where="", required=True, limit=_PROMPT_MAX)
    sampler = _sampler_fields(data.get("sampler", {}), "")
    settings = _settings(sampler, "")
    step_mode = _bool(data, "step_mode", False, where="")
    run = _bool(data, "run", True, where="")
    stage = _stage(data, settings, "final", "")
    select_step = _int(data, "select_step", where="", lo=0, hi=32768)
    fresh_seed = _bool(data, "fresh_seed", False, where="")
    order = _int(data, "order", where="", lo=-10**6, hi=10**6)
    raw_variants = data.get("variants", [])
    if not isinstance(raw_variants, list):
        raise ExperimentError(f"variants must be a list of objects, not {_kind(raw_variants)}")
    if len(raw_variants) > MAX_VARIANTS:
        raise ExperimentError(f"at most {MAX_VARIANTS} variants, not {len(raw_variants)}")
    variants = []
    for i, rv in enumerate(raw_variants, 1):
        where = f"variants[{i}]."
        if not isinstance(rv, dict):
            raise ExperimentError(f"variants[{i}] must be an object, not {_kind(rv)}")
        _unknown(rv, _VARIANT, where)
        v_sampler = {**sampler, **_sampler_fields(rv.get("sampler", {}), where)}
        v_settings = _settings(v_sampler, where)
        variants.append(Variant(
            label=_text(rv, "label", where=where, required=True, limit=_TITLE_MAX, one_line=True),
            prompt=_text(rv, "prompt", where=where, required=False, limit=_PROMPT_MAX) or prompt,
            settings=v_settings,
            try_text=_text(rv, "try", where=where, required=False, limit=_TEXT_MAX, one_line=True) or try_text,
            stage=_stage(rv, v_settings, stage, where),
            select_step=_int(rv, "select_step", where=where, lo=0, hi=32768) if "select_step" in rv else select_step,
            step_mode=_bool(rv, "step_mode", step_mode, where=where),
            run=_bool(rv, "run", run, where=where),
        ))
    return Experiment(key=key, title=title, explanation=explanation, try_text=try_text, prompt=prompt,
                      settings=settings, step_mode=step_mode, run=run, stage=stage, select_step=select_step,
                      fresh_seed=fresh_seed, order=1000 if order is None else order, variants=tuple(variants),
                      source=source, path=path)


# ---------------------------------------------------------------------------- files
def _read(entry: Traversable) -> str:
    try:
        size = os.path.getsize(entry) if isinstance(entry, (str, os.PathLike)) else None
    except OSError as exc:
        raise ExperimentError(f"cannot be read ({_one_line(exc.strerror or str(exc))})") from None
    if size is not None and size > MAX_FILE_BYTES:
        raise ExperimentError(f"is {size:,} bytes, more than an experiment can be ({MAX_FILE_BYTES:,})")
    try:
        raw = entry.read_bytes()
    except OSError as exc:
        raise ExperimentError(f"cannot be read ({_one_line(exc.strerror or str(exc))})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ExperimentError(f"is {len(raw):,} bytes, more than an experiment can be ({MAX_FILE_BYTES:,})")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExperimentError(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_experiment(entry: Traversable | str | os.PathLike[str], *, source: str = "user") -> Experiment:
    """Read and check one file; ``ExperimentError`` (one line) if it cannot be used."""
    entry = Path(entry) if isinstance(entry, (str, os.PathLike)) else entry
    name = entry.name
    text = _read(entry)
    try:
        data = loads_json(text)
    except ValueError as exc:
        raise ExperimentError(f"is not valid JSON ({_one_line(str(exc))})") from None
    key = name[:-5] if name.lower().endswith(".json") else name
    return parse_experiment(data, key, source=source, path=str(entry))


def _files(folder: Traversable | Path | None) -> list[Traversable]:
    if folder is None:
        return []
    try:
        if not folder.is_dir():
            return []
        entries = list(folder.iterdir())
    except OSError:
        return []
    return sorted((e for e in entries if e.name.lower().endswith(".json") and not e.name.startswith(".")
                   and e.is_file()), key=lambda e: e.name)


def load_catalog(builtin: Traversable | Path | None = None, user: Traversable | Path | None = None, *,
                 include_user: bool = True) -> Catalog:
    """Every experiment of the shipped folder (``builtin``, default ``builtin_dir()``) and the
    user's (``user``, default ``user_dir()``; a missing folder holds none). A file that cannot
    be used is skipped and listed in ``problems``; it never stops the others."""
    found: list[Experiment] = []
    problems: list[Problem] = []
    folders: list[tuple[str, Traversable | Path | None]] = [("built-in", builtin if builtin is not None else builtin_dir())]
    if include_user:
        folders.append(("user", user if user is not None else user_dir()))
    for source, folder in folders:
        group = []
        for entry in _files(folder):
            try:
                group.append(load_experiment(entry, source=source))
            except ExperimentError as exc:
                problems.append(Problem(entry.name, source, _one_line(str(exc))))
        found += sorted(group, key=lambda e: (e.order, e.title.casefold(), e.key))
    return Catalog(tuple(found), tuple(problems))
