"""For tests that compare a typed record's dict form with the dict an earlier version stored:
``as_stored`` drops from the new form what was added since (sampler knobs of newer versions,
each still at its default, and ``schema``), so the rest can be compared key for key."""

from __future__ import annotations

from typing import Any

from backends.base import SamplerSettings

_DEFAULTS = SamplerSettings().to_dict()


def as_stored(new: Any, old: Any) -> Any:
    """``new`` (a dict form of today's code) shaped like ``old`` (the stored dict): ``schema``
    left out at the top, and in every ``settings`` dict the knobs ``old`` does not have left
    out, after checking each is at its default (a stored run knew no other value)."""
    if isinstance(new, dict) and isinstance(old, dict):
        out = {}
        for k, v in new.items():
            if k == "schema" and k not in old:
                continue
            if k == "settings" and isinstance(v, dict) and isinstance(old.get(k), dict):
                added = set(v) - set(old[k])
                assert all(k2 in _DEFAULTS and v[k2] == _DEFAULTS[k2] for k2 in added), added
                out[k] = {k2: v2 for k2, v2 in v.items() if k2 not in added}
                continue
            out[k] = as_stored(v, old[k]) if k in old else v
        return out
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [as_stored(a, b) for a, b in zip(new, old)]
    return new
