"""One conversion of lab records and summaries into plain JSON values.

Owns ``json_safe``: dicts (keys as strings), lists and tuples, numpy arrays and scalars become
plain Python values; non-finite floats (NaN, infinities) become None, which JSON can hold.
Pure function, no Qt; any thread.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["json_safe"]


def json_safe(value: Any) -> Any:
    """``value`` with every container and number made JSON-serialisable (see the module docstring)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, str, np.bool_)) or value is None:
        return bool(value) if isinstance(value, np.bool_) else value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return x if math.isfinite(x) else None
    return value
