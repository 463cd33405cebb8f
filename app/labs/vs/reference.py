"""Reference distributions shipped in ``assets/`` (for the enumerable-question metrics).

Owns ``load_us_state_reference()``: the RedPajama frequencies of the 50 US states' names used
by the Verbalized Sampling paper (``assets/us_state_reference.json``; attribution and licence
in ``assets/us_state_reference.md``). Files are read through ``importlib.resources`` from the
``assets`` package, so they work from a source checkout and from an installed wheel.

Pure stdlib, no Qt; any thread (each call reads the file and returns a fresh dict).
"""

from __future__ import annotations

import json
import math
from importlib import resources

US_STATE_REFERENCE = "us_state_reference.json"


def _load_distribution(name: str) -> dict[str, float]:
    text = resources.files("assets").joinpath(name).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{name}: expected a non-empty JSON object of name -> probability")
    out: dict[str, float] = {}
    for key, value in data.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: entry {key!r}: {value!r} is not a number")
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: entry {key!r} has invalid probability {v!r}")
        out[key] = v
    return out


def load_us_state_reference() -> dict[str, float]:
    """The 50 US states -> relative frequency in RedPajama (sums to 1 within float rounding).

    Keys are the states' usual English names ("New York", "North Carolina"), in the file's
    order (most frequent first). Raises ValueError if the shipped file is malformed.
    """
    return _load_distribution(US_STATE_REFERENCE)
