"""Export a ``Trace`` to JSON or CSV, and read an exported JSON back.

Owns: the export file formats (``write_lab_json`` / ``write_lab_csv`` for the labs' results,
``trace_to_json``, ``trace_from_dict``, ``write_json``,
``read_json``, ``write_csv``) and the ``Finished`` <-> dict helpers the run store shares.
Called on the GUI thread (File > Export); pure functions, safe on any thread. Qt-free.

Exports hold the prompt, the model's name, the sampler settings, how the run ended and every
step. They never hold a model path, an API key or any other secret.

The JSON is Python's ``json`` (UTF-8, not ASCII-escaped). A non-finite float, which the
backends do not produce in practice, would be written as ``NaN``/``Infinity`` so that a
file still reads back to the same values.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Iterable, Sequence

from app.core.paths import atomic_write_text
from app.core.trace import Trace
from app.core.jsonsafe import json_safe
from app.core.records import plain
from backends.base import Finished, SamplerSettings, Step
from backends.text import clean_json, clean_text, loads_json

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CSV_COLUMNS",
    "CSV_TOP_K",
    "TraceFormatError",
    "trace_to_dict",
    "trace_to_json",
    "trace_from_dict",
    "write_json",
    "read_json",
    "write_csv",
    "finished_to_dict",
    "finished_from_dict",
    "generation_record",
    "trace_from_generation",
]

FORMAT_NAME = "samplescope-trace"
FORMAT_VERSION = 1
#: How many alternatives ``write_csv`` spreads into columns.
CSV_TOP_K = 5
_STEP_COLUMNS = (
    "index", "position", "token_id", "token", "p_raw", "p_final", "rank",
    "entropy_raw", "entropy_final", "surprisal", "kl_final_raw",
    "kept", "forced", "estimated", "unseen_mass",
)
#: The CSV header: the step columns, then top1_token, top1_p_raw, top1_p_final ... top5_*.
CSV_COLUMNS: tuple[str, ...] = _STEP_COLUMNS + tuple(
    f"top{k}_{what}" for k in range(1, CSV_TOP_K + 1) for what in ("token", "p_raw", "p_final")
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class TraceFormatError(ValueError):
    """A file is not a Samplescope trace export (or is damaged). The message names the file
    and what is wrong with it."""


# -- Finished <-> dict (shared with the run store) ------------------------------------------

def finished_to_dict(f: Finished | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {
        "reason": f.reason,
        "text": f.text,
        "n_tokens": f.n_tokens,
        "seconds": f.seconds,
        "prompt_tokens": f.prompt_tokens,
        "reused_tokens": f.reused_tokens,
        "message": f.message,
        "tokens_per_s": f.tokens_per_s,
    }


def finished_from_dict(d: dict[str, Any] | None) -> Finished | None:
    if d is None:
        return None
    return Finished(
        reason=str(d["reason"]),
        text=d.get("text", ""),
        n_tokens=int(d.get("n_tokens", 0)),
        seconds=float(d.get("seconds", 0.0)),
        prompt_tokens=int(d.get("prompt_tokens", 0)),
        reused_tokens=int(d.get("reused_tokens", 0)),
        message=d.get("message", ""),
    )


# -- one generation inside a lab record --------------------------------------------------------

def generation_record(prompt: str, settings: SamplerSettings, steps, finished: Finished | None,
                      model_name: str = "") -> dict[str, Any]:
    """A generation made inside a lab (a VS answer, a shift-lab sample, an align run, a decoding
    column, a branch) as a JSON-ready record that reopens in the Workbench (``trace_from_generation``):
    ``prompt``, ``settings``, ``model``, ``finished`` and ``steps`` (``Step.to_dict()`` each, as in
    ``samplescope generate --json``)."""
    return {
        "prompt": str(prompt),
        "settings": settings.to_dict(),
        "model": model_name,
        "finished": finished_to_dict(finished),
        "steps": [s.to_dict() for s in steps],
    }


def trace_from_generation(d: Any) -> Trace:
    """The ``Trace`` of a ``generation_record`` (or of a full export); ``TraceFormatError`` if it
    is not one."""
    if isinstance(d, dict) and d.get("format") == FORMAT_NAME:
        return trace_from_dict(d)
    if not isinstance(d, dict) or not isinstance(d.get("steps"), list):
        raise TraceFormatError("this record holds no generation to open")
    try:
        trace = Trace(prompt=str(d.get("prompt", "")), settings=SamplerSettings.from_dict(d.get("settings") or {}),
                      model_name=str(d.get("model", "")), finished=finished_from_dict(d.get("finished")))
        trace.extend(Step.from_dict(x) for x in d["steps"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TraceFormatError(f"the generation record is damaged: {type(exc).__name__}: {exc}") from exc
    return trace


# -- JSON -----------------------------------------------------------------------------------

def trace_to_dict(trace: Trace) -> dict[str, Any]:
    """The export as a JSON-ready dict (see ``trace_to_json``)."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "prompt": trace.prompt,
        "model": {"name": trace.model_name},
        "settings": trace.settings.to_dict(),
        "finished": finished_to_dict(trace.finished),
        "summary": {
            "n_steps": len(trace.steps),
            "text": trace.text,
            "estimated": trace.estimated,
        },
        "steps": [s.to_dict() for s in trace.steps],
    }


def trace_to_json(trace: Trace) -> str:
    """The trace as a JSON document: ``format``, ``version``, ``prompt``, ``model`` (name),
    ``settings`` (``SamplerSettings.to_dict()``), ``finished`` (reason, text, n_tokens,
    seconds, tokens_per_s, ... or null while running), ``summary`` and ``steps`` (a list of
    ``Step.to_dict()``)."""
    return json.dumps(clean_json(trace_to_dict(trace)), ensure_ascii=False, indent=1)


def trace_from_dict(d: Any, source: str = "the file") -> Trace:
    """Rebuild a ``Trace`` from ``trace_to_dict`` output; ``TraceFormatError`` if it is not one."""
    if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
        raise TraceFormatError(f"{source} is not a Samplescope trace export.")
    version = d.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise TraceFormatError(
            f"{source} was written by a newer Samplescope (format version {version!r}); update Samplescope to open it."
        )
    try:
        model = d.get("model") or {}
        trace = Trace(
            prompt=str(d.get("prompt", "")),
            settings=SamplerSettings.from_dict(d.get("settings") or {}),
            model_name=str(model.get("name", "")),
            finished=finished_from_dict(d.get("finished")),
        )
        trace.extend(Step.from_dict(s) for s in d.get("steps", ()))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TraceFormatError(f"{source} is damaged: {type(exc).__name__}: {exc}") from exc
    return trace


def write_json(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write ``trace_to_json(trace)`` to ``path`` (UTF-8, atomically). Raises ``OSError``."""
    atomic_write_text(path, trace_to_json(trace) + "\n")


def read_json(path: str | os.PathLike[str]) -> Trace:
    """Read a file written by ``write_json``. Raises ``OSError`` if it cannot be read and
    ``TraceFormatError`` if it is not a (readable) trace export."""
    name = os.fspath(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        data = loads_json(raw)
    except ValueError as exc:
        raise TraceFormatError(f"{name} is not valid JSON: {exc}") from exc
    return trace_from_dict(data, source=name)


# -- CSV ------------------------------------------------------------------------------------

def _cell(value: Any, excel_safe: bool) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if excel_safe and isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_row(step: Step, excel_safe: bool) -> list[Any]:
    d = step.to_dict()  # surprisal is None when infinite
    row = [_cell(d[c], excel_safe) for c in _STEP_COLUMNS]
    for k in range(CSV_TOP_K):
        if k < len(step.top):
            alt = step.top[k]
            row += [_cell(alt.token, excel_safe), alt.p_raw, alt.p_final]
        else:
            row += ["", "", ""]
    return row


def write_csv(trace: Trace, path: str | os.PathLike[str], *, excel_safe: bool = False) -> None:
    """One row per step with the columns ``CSV_COLUMNS``; UTF-8, written atomically.

    Quoting is the ``csv`` module's: tokens with commas, quotes or newlines come back intact.
    Booleans are 0/1, a missing value (no token id, infinite surprisal, fewer than five
    alternatives) is empty. Tokens are written as they are; ``excel_safe=True`` prefixes text
    that a spreadsheet would run as a formula (starting with = + - @) with an apostrophe.
    Raises ``OSError``.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for step in trace.steps:
        writer.writerow(_csv_row(step, excel_safe))
    atomic_write_text(path, buf.getvalue(), newline="")


# ----------------------------------------------------------------------------- lab results


def write_lab_json(data: dict, path: str | os.PathLike[str]) -> None:
    """A lab's export (knobs, records, summary) as UTF-8 JSON; typed records as their
    ``to_dict``, NaN as null. The whole document is made first and then written atomically: a
    failure (a value JSON cannot hold, a full disk) leaves an existing file as it was."""
    text = json.dumps(clean_json(json_safe(plain(data))), ensure_ascii=False, indent=1, allow_nan=False)
    atomic_write_text(path, text + "\n")


def write_lab_csv(header: Sequence[str], rows: Iterable[Sequence[Any]], path: str | os.PathLike[str]) -> None:
    """A lab's table as CSV (UTF-8 with a header row); None and NaN become empty cells. Written
    atomically, like ``write_lab_json``."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([clean_text(h) for h in header])
    for row in rows:
        w.writerow(["" if v is None or (isinstance(v, float) and not math.isfinite(v))
                    else clean_text(v) if isinstance(v, str) else v for v in row])
    atomic_write_text(path, buf.getvalue(), newline="")
