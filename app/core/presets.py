"""Sampler presets: our own JSON files, the presets of other tools, and a model's own.

Owns:
- ``preset_json`` / ``read_preset``: a preset as a JSON file (``{"samplescope_preset": 1,
  "name", "settings"}``, the settings' ``to_dict``), and reading any preset file into a
  ``PresetImport``: its name, the ``SamplerSettings`` it gives (over a base), and, in words,
  what each field mapped to and which fields were ignored (nothing is dropped silently);
- the foreign formats ``read_preset`` knows: SillyTavern's text-completion presets (JSON),
  KoboldCpp's presets / generate payloads (JSON), text-generation-webui's presets (its flat
  YAML, or the same keys as JSON);
- ``model_preset``: the settings a GGUF recommends in its ``general.sampling.*`` keys (read as
  llama.cpp's ``common_params`` does), as a preset named after the model.

Each foreign field maps to the llama.cpp knob of the same meaning; a sampler llama.cpp does not
have (top-a, TFS, smoothing, epsilon / eta cutoff, ...) is listed as ignored. Dynamic
temperature given as a low / high pair becomes llama.cpp's centre +/- range.

Any thread (pure functions on values); no Qt.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from backends.base import SAMPLER_ORDER, ModelInfo, SamplerSettings, samplers_from_string

__all__ = ["PresetError", "PresetImport", "model_preset", "preset_json", "read_preset"]

FORMAT_VERSION = 1


class PresetError(ValueError):
    """A preset file that cannot be read; the message says why."""


@dataclass(frozen=True)
class PresetImport:
    """What a preset file gave: ``name``, ``source`` (the format, in words), ``settings``, and
    ``mapped`` ("field -> knob" lines) and ``ignored`` ("field: why" lines) to show the user."""

    name: str
    source: str
    settings: SamplerSettings
    mapped: tuple[str, ...]
    ignored: tuple[str, ...]

    def report(self) -> str:
        """What the import did, in words (for a message box or the status line)."""
        lines = [f"{self.name} ({self.source}): {len(self.mapped)} setting(s) taken, {len(self.ignored)} ignored."]
        if self.mapped:
            lines.append("Taken: " + "; ".join(self.mapped))
        if self.ignored:
            lines.append("Ignored: " + "; ".join(self.ignored))
        return "\n".join(lines)


def preset_json(name: str, settings: SamplerSettings) -> str:
    """The preset file's text (JSON) for ``settings`` under ``name``."""
    return json.dumps({"samplescope_preset": FORMAT_VERSION, "name": name, "settings": settings.to_dict()},
                      indent=2, ensure_ascii=False)


# ----------------------------------------------------------------------------- foreign formats

def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"{v!r} is not a number")
    x = float(v)
    if math.isnan(x):
        raise ValueError("not a number")
    return x


def _int(v: Any) -> int:
    x = _num(v)
    if x != int(x):
        raise ValueError(f"{v!r} is not a whole number")
    return int(x)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    if isinstance(v, (int, float)):
        return bool(v)
    raise ValueError(f"{v!r} is not true or false")


def _breakers(v: Any) -> tuple[str, ...]:
    """DRY breakers as a list, a JSON list in a string, or text-generation-webui's
    comma-separated quoted strings ('"\\n", ":", "\\"", "*"')."""
    if isinstance(v, (list, tuple)):
        return tuple(str(x) for x in v)
    if isinstance(v, str):
        text = v.strip()
        try:
            parsed = json.loads(text if text.startswith("[") else f"[{text}]")
        except json.JSONDecodeError:
            raise ValueError(f"{v!r} is not a list of texts") from None
        return tuple(str(x) for x in parsed)
    raise ValueError(f"{v!r} is not a list of texts")


#: field -> (our knob, converter), per format; the same meaning as llama.cpp's knob
_COMMON: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "top_p": ("top_p", _num), "top_k": ("top_k", _int), "min_p": ("min_p", _num),
    "typical_p": ("typical_p", _num), "typical": ("typical_p", _num),
    "presence_penalty": ("presence_penalty", _num), "frequency_penalty": ("frequency_penalty", _num),
    "seed": ("seed", _int),
    "xtc_threshold": ("xtc_threshold", _num), "xtc_probability": ("xtc_probability", _num),
    "dry_multiplier": ("dry_multiplier", _num), "dry_base": ("dry_base", _num),
    "dry_allowed_length": ("dry_allowed_length", _int), "dry_penalty_last_n": ("dry_penalty_last_n", _int),
    "dry_sequence_breakers": ("dry_sequence_breakers", _breakers),
    "mirostat_tau": ("mirostat_tau", _num), "mirostat_eta": ("mirostat_eta", _num),
    "dynatemp_exponent": ("dynatemp_exponent", _num),
    "top_n_sigma": ("top_n_sigma", _num), "nsigma": ("top_n_sigma", _num),
    "adaptive_target": ("adaptive_target", _num), "adaptive_decay": ("adaptive_decay", _num),
}
_SILLYTAVERN = {**_COMMON, "temp": ("temperature", _num), "temperature": ("temperature", _num),
                "rep_pen": ("repeat_penalty", _num), "rep_pen_range": ("penalty_last_n", _int),
                "freq_pen": ("frequency_penalty", _num), "presence_pen": ("presence_penalty", _num),
                "mirostat_mode": ("mirostat", _int), "genamt": ("max_tokens", _int),
                "dry_penalty_last_n": ("dry_penalty_last_n", _int)}
_KOBOLD = {**_COMMON, "temperature": ("temperature", _num), "rep_pen": ("repeat_penalty", _num),
           "rep_pen_range": ("penalty_last_n", _int), "mirostat": ("mirostat", _int),
           "max_length": ("max_tokens", _int), "dynatemp_range": ("dynatemp_range", _num),
           "dry_penalty_last_n": ("dry_penalty_last_n", _int)}
_TEXTGEN = {**_COMMON, "temperature": ("temperature", _num), "repetition_penalty": ("repeat_penalty", _num),
            "repetition_penalty_range": ("penalty_last_n", _int), "mirostat_mode": ("mirostat", _int),
            "max_new_tokens": ("max_tokens", _int)}

#: fields that are handled apart from the table (order, dynamic temperature), per format
_SPECIAL = {"sampler_order", "samplers", "sampler_priority", "temperature_last", "dynatemp", "dynamic_temperature",
            "min_temp", "max_temp", "dynatemp_low", "dynatemp_high", "dynatemp_mode"}

#: KoboldCpp's sampler ids (its ``sampler_order``)
_KOBOLD_IDS = {0: "top_k", 1: None, 2: None, 3: "typical", 4: "top_p", 5: "temperature", 6: "penalties"}
_KOBOLD_NAMES = {1: "top-a", 2: "tail-free sampling"}
#: text-generation-webui's and SillyTavern's sampler names -> our stages (None: not in llama.cpp)
_NAMED = {"repetition_penalty": "penalties", "presence_penalty": "penalties", "frequency_penalty": "penalties",
          "penalties": "penalties", "dry": "dry", "top_n_sigma": "top_n_sigma", "temperature": "temperature",
          "dynamic_temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "typical_p": "typical",
          "typ_p": "typical", "min_p": "min_p", "xtc": "xtc", "mirostat": None, "quadratic_sampling": None,
          "epsilon_cutoff": None, "eta_cutoff": None, "tfs": None, "tfs_z": None, "top_a": None,
          "encoder_repetition_penalty": None, "no_repeat_ngram": None, "adaptive_p": "adaptive_p"}


def _complete_order(named: list[str]) -> tuple[str, ...]:
    """``named`` stages in their order, the stages it does not name at llama.cpp's default places."""
    out: list[str] = []
    for st in named:
        if st not in out:
            out.append(st)
    for i, st in enumerate(SAMPLER_ORDER):
        if st in out:
            continue
        before = [p for p in SAMPLER_ORDER[:i] if p in out]
        out.insert(out.index(before[-1]) + 1 if before else 0, st)
    return tuple(out)


def _map_fields(data: Mapping[str, Any], table: Mapping[str, tuple[str, Callable[[Any], Any]]],
                changes: dict[str, Any], mapped: list[str], ignored: list[str]) -> None:
    for key, value in data.items():
        if key in _SPECIAL:
            continue
        if key in table:
            knob, conv = table[key]
            try:
                changes[knob] = conv(value)
            except ValueError as exc:
                ignored.append(f"{key}: {exc}")
                continue
            mapped.append(f"{key} -> {knob}" if key != knob else key)
        else:
            ignored.append(f"{key}: no llama.cpp sampler of that meaning")


def _order_and_dynatemp(data: Mapping[str, Any], changes: dict[str, Any], mapped: list[str],
                        ignored: list[str]) -> None:
    order: list[str] | None = None
    if "sampler_order" in data:  # KoboldCpp's ids
        named = []
        try:
            ids = [_int(x) for x in data["sampler_order"]]
        except (TypeError, ValueError):
            ids = []
            ignored.append("sampler_order: not a list of sampler ids")
        for i in ids:
            st = _KOBOLD_IDS.get(i)
            if st is None:
                ignored.append(f"sampler_order {i} ({_KOBOLD_NAMES.get(i, 'unknown')}): not a llama.cpp sampler")
            else:
                named.append(st)
        if named:
            order = named
            mapped.append("sampler_order -> order")
    for key in ("samplers", "sampler_priority"):
        if key not in data or order is not None and key == "sampler_priority":
            continue
        raw = data[key]
        names = raw.split("\n") if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else []
        named = []
        for nm in (str(n).strip() for n in names):
            if not nm:
                continue
            low = nm.lower()
            if low in _NAMED:
                stage = _NAMED[low]
                if stage is None:
                    ignored.append(f"{key} {nm}: not a llama.cpp sampler")
                else:
                    named.append(stage)
                continue
            try:
                named += list(samplers_from_string(nm))
            except ValueError:
                ignored.append(f"{key} {nm}: unknown sampler")
        if named:
            order = named
            mapped.append(f"{key} -> order")
    if order is not None:
        adaptive = "adaptive_p" in order
        full = _complete_order([st for st in order if st != "adaptive_p"])
        changes["samplers"] = full + (("adaptive_p",) if adaptive else ())
    if "temperature_last" in data:
        try:
            if _bool(data["temperature_last"]):
                base = list(changes.get("samplers", SAMPLER_ORDER))
                if "temperature" in base:
                    base.remove("temperature")
                changes["samplers"] = tuple(base) + ("temperature",)
            mapped.append("temperature_last -> order")
        except ValueError as exc:
            ignored.append(f"temperature_last: {exc}")
    on_key = "dynatemp" if "dynatemp" in data else "dynamic_temperature" if "dynamic_temperature" in data else None
    lo_key = "min_temp" if "min_temp" in data else "dynatemp_low" if "dynatemp_low" in data else None
    hi_key = "max_temp" if "max_temp" in data else "dynatemp_high" if "dynatemp_high" in data else None
    if on_key is not None:
        try:
            on = _bool(data[on_key])
        except ValueError as exc:
            ignored.append(f"{on_key}: {exc}")
            on = False
        if on and lo_key and hi_key:
            try:
                lo, hi = _num(data[lo_key]), _num(data[hi_key])
            except ValueError as exc:
                ignored.append(f"{lo_key}/{hi_key}: {exc}")
            else:
                changes["temperature"] = (lo + hi) / 2
                changes["dynatemp_range"] = abs(hi - lo) / 2
                mapped.append(f"{on_key}, {lo_key}, {hi_key} -> temperature {changes['temperature']:g} "
                              f"± dynatemp_range {changes['dynatemp_range']:g}")
        elif on:
            ignored.append(f"{on_key}: on, but without its low and high temperatures")
        else:
            changes.setdefault("dynatemp_range", 0.0)
            mapped.append(f"{on_key} (off) -> dynatemp_range 0")
            for k in (lo_key, hi_key):
                if k:
                    ignored.append(f"{k}: dynamic temperature is off")
    if "dynatemp_mode" in data:
        ignored.append("dynatemp_mode: llama.cpp has one dynamic temperature (entropy-based)")


def _flat_yaml(text: str) -> dict[str, Any]:
    """text-generation-webui's preset YAML: ``key: value`` lines, values JSON-like (numbers,
    true/false, quoted strings), and ``key:`` followed by ``- item`` lines or a ``|`` block."""
    out: dict[str, Any] = {}
    key: str | None = None
    block: list[str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if block is not None and key is not None and (raw[:1] in (" ", "\t")):
            item = line.strip()
            block.append(item[2:].strip() if item.startswith("- ") else item)
            out[key] = list(block)
            continue
        m = re.fullmatch(r"([A-Za-z_][\w.-]*)\s*:\s*(.*)", line)
        if m is None:
            raise PresetError(f"line {raw!r} is not 'key: value'")
        key, value = m.group(1), m.group(2).strip()
        if value in ("", "|", "|-", ">", ">-"):
            block = []
            out[key] = []
            continue
        block = None
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            low = value.lower()
            out[key] = True if low == "true" else False if low == "false" else value.strip("'")
    return out


def read_preset(text: str, *, file_name: str = "preset", base: SamplerSettings | None = None) -> PresetImport:
    """Read a preset file's text: ours, SillyTavern's, KoboldCpp's or text-generation-webui's
    (told apart by their keys). The result's settings are ``base`` (the defaults if None) with
    the file's values; PresetError says why a file cannot be read or gives an invalid value."""
    base = base or SamplerSettings()
    stem = re.sub(r"\.(json|ya?ml|settings)$", "", file_name.rsplit("/", 1)[-1], flags=re.I) or "preset"
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = _flat_yaml(text)
        fmt = "text-generation-webui preset"
    else:
        fmt = ""
    if not isinstance(data, dict) or not data:
        raise PresetError("the file holds no preset (expected an object of settings)")
    changes: dict[str, Any] = {}
    mapped: list[str] = []
    ignored: list[str] = []
    if "samplescope_preset" in data:
        version = data["samplescope_preset"]
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise PresetError(f"this preset was written by a newer Samplescope (format {version!r})")
        settings = data.get("settings")
        if not isinstance(settings, dict):
            raise PresetError("the preset has no settings")
        try:
            s = base.replace(**{f: getattr(SamplerSettings.from_dict(settings), f) for f in settings
                                if f in SamplerSettings.__dataclass_fields__})
            s.validate()
        except (TypeError, ValueError) as exc:
            raise PresetError(f"the preset's settings are not valid: {exc}") from None
        unknown = [k for k in settings if k not in SamplerSettings.__dataclass_fields__]
        return PresetImport(str(data.get("name") or stem), "Samplescope preset", s,
                            tuple(k for k in settings if k not in unknown),
                            tuple(f"{k}: not a setting of this version" for k in unknown))
    if not fmt:
        if "rep_pen" in data and ("genamt" in data or "temp" in data or "freq_pen" in data):
            fmt = "SillyTavern preset"
        elif "rep_pen" in data or "sampler_order" in data:
            fmt = "KoboldCpp preset"
        elif "repetition_penalty" in data or "sampler_priority" in data or "temperature_last" in data:
            fmt = "text-generation-webui preset"
        else:
            fmt = "sampler settings"
    table = {"SillyTavern preset": _SILLYTAVERN, "KoboldCpp preset": _KOBOLD}.get(fmt, _TEXTGEN)
    _map_fields(data, table, changes, mapped, ignored)
    _order_and_dynatemp(data, changes, mapped, ignored)
    if not mapped:
        raise PresetError(f"no field of this {fmt} means anything to llama.cpp's samplers")
    try:
        s = base.replace(**changes)
        s.validate()
    except (TypeError, ValueError) as exc:
        raise PresetError(f"the preset gives a value out of range: {exc}") from None
    return PresetImport(str(data.get("name") or data.get("preset") or stem), fmt, s, tuple(mapped), tuple(ignored))


# ----------------------------------------------------------------------------- a model's own

_GGUF_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "general.sampling.top_k": ("top_k", _int), "general.sampling.top_p": ("top_p", _num),
    "general.sampling.min_p": ("min_p", _num), "general.sampling.xtc_probability": ("xtc_probability", _num),
    "general.sampling.xtc_threshold": ("xtc_threshold", _num), "general.sampling.temp": ("temperature", _num),
    "general.sampling.penalty_last_n": ("penalty_last_n", _int),
    "general.sampling.penalty_repeat": ("repeat_penalty", _num), "general.sampling.mirostat": ("mirostat", _int),
    "general.sampling.mirostat_tau": ("mirostat_tau", _num), "general.sampling.mirostat_eta": ("mirostat_eta", _num),
}


def model_preset(info: ModelInfo, base: SamplerSettings | None = None) -> PresetImport | None:
    """The settings the model's GGUF recommends (its ``general.sampling.*`` keys, as llama.cpp
    reads them), as a preset named after the model; None when it has none."""
    if not info.sampling:
        return None
    base = base or SamplerSettings()
    changes: dict[str, Any] = {}
    mapped: list[str] = []
    ignored: list[str] = []
    for key, value in info.sampling:
        if key == "general.sampling.sequence":
            try:
                changes["samplers"] = samplers_from_string(str(value))
                mapped.append(f"{key} -> order")
            except ValueError as exc:
                ignored.append(f"{key}: {exc}")
        elif key in _GGUF_KEYS:
            knob, conv = _GGUF_KEYS[key]
            try:
                changes[knob] = conv(value)
                mapped.append(f"{key} -> {knob}")
            except ValueError as exc:
                ignored.append(f"{key}: {exc}")
        else:
            ignored.append(f"{key}: not a key llama.cpp reads")
    if not changes:
        return None
    try:
        s = base.replace(**changes)
        s.validate()
    except ValueError as exc:
        ignored.append(f"the recommended values are out of range: {exc}")
        return None
    return PresetImport(f"{info.name} (model's own)", "the model's GGUF metadata", s, tuple(mapped), tuple(ignored))
