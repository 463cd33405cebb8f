"""The user's application settings, kept as JSON in ``config_dir()/settings.json``.

Owns: ``AppSettings`` (load, validate, save) and ``settings_path``. Used on the GUI thread
(read at start-up, saved when a setting changes or the window closes). Qt-free; window
geometry and other Qt state belong in ``QSettings``, not here.

SECRETS NEVER GO HERE. API keys and tokens come from the environment or the system keyring;
this file is plain text in the user's config directory and may be copied around. There is
no field for them, unknown keys found in the file are dropped, and ``save`` writes only the
fields below.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.paths import atomic_write_text, config_dir
from backends.base import LoadSettings, SamplerSettings
from backends.text import loads_json

__all__ = ["AppSettings", "settings_path", "MAX_RECENT", "SETTINGS_FILE", "default_threads", "PRESENTATION_SCALES",
           "PRESENTATION_PACES"]

SETTINGS_FILE = "settings.json"
#: How many entries ``recent_models`` keeps.
MAX_RECENT = 10
#: How many folders ``model_folders`` keeps.
MAX_MODEL_FOLDERS = 64
_FORMAT_VERSION = 1
_TRANSIENT = {"persist": False}
#: the range of ``presentation_scale``
PRESENTATION_SCALES = (1.0, 3.0)
#: the range of ``presentation_pace`` (tokens per second; 0 = one per click)
PRESENTATION_PACES = (0.0, 1000.0)


def settings_path() -> Path:
    """``config_dir()/settings.json`` (the directory is created if needed)."""
    return config_dir() / SETTINGS_FILE


def default_threads() -> int:
    """min(4, number of CPUs): a good default for llama.cpp on a laptop."""
    return max(1, min(4, os.cpu_count() or 1))


def _default_sampler() -> dict[str, Any]:
    return SamplerSettings().to_dict()


@dataclass
class AppSettings:
    """Everything the app remembers between sessions. Secrets never go here (see module doc).

    ``n_gpu_layers`` defaults to 0 (CPU only); the caller decides whether to use -1 (offload
    every layer) once it knows the build supports GPU offload. ``sampler`` is a
    ``SamplerSettings.to_dict()`` dict; use the ``sampler_settings`` property for the value type.
    ``warning`` is not saved: ``load`` sets it to a sentence for the user when the file
    could not be used as it was (empty when all went well or the file did not exist yet).
    """

    last_model_path: str | None = None
    recent_models: list[str] = field(default_factory=list)
    #: folders the user added to the model picker (searched for GGUF files beside the usual places)
    model_folders: list[str] = field(default_factory=list)
    n_ctx: int = 2048
    n_gpu_layers: int = 0
    n_threads: int = field(default_factory=default_threads)
    #: the most generations the labs run at once (0 = automatic)
    max_parallel: int = 0
    #: the memory bound of the live what-if's kept logits, in MiB (0 = none kept)
    whatif_memory_mb: int = 256
    sampler: dict[str, Any] = field(default_factory=_default_sampler)
    preset_name: str = ""
    top_n: int = 20
    palette: str = "default"
    show_whitespace: bool = False
    step_mode: bool = False
    #: the first-run hint above the tabs (what to try first) until the user dismisses it
    show_first_run_hint: bool = True
    #: presentation mode (View > Presentation, F11): every font and plot label this many times as large
    presentation_scale: float = 1.5
    #: presentation mode's pace: tokens shown per second (0 = one token per click)
    presentation_pace: float = 2.0
    #: the remote server's connection settings (RemoteConfig.to_dict(): URL, model, the NAME of
    #: the key's environment variable or keyring entry, timeouts, mode)
    remote: dict = field(default_factory=dict)
    # NOTE: no API keys, tokens or passwords: secrets never go in this file.

    warning: str = field(default="", compare=False, metadata=_TRANSIENT)

    # -- the sampler as a value ---------------------------------------------------------

    @property
    def sampler_settings(self) -> SamplerSettings:
        """The sampler settings as a ``SamplerSettings`` (defaults if the dict is unusable)."""
        try:
            return SamplerSettings.from_dict(self.sampler)
        except (TypeError, ValueError):
            return SamplerSettings()

    @sampler_settings.setter
    def sampler_settings(self, value: SamplerSettings) -> None:
        self.sampler = value.to_dict()

    # -- recent models --------------------------------------------------------------------

    def add_recent(self, path: str | os.PathLike[str]) -> None:
        """Put ``path`` first in ``recent_models``, removing an older copy of it and keeping
        at most ``MAX_RECENT`` entries."""
        p = os.fspath(path)
        if not p:
            return
        self.recent_models = [p] + [r for r in self.recent_models if r != p]
        del self.recent_models[MAX_RECENT:]

    def remove_recent(self, path: str | os.PathLike[str]) -> None:
        """Forget ``path`` (e.g. the file no longer exists)."""
        p = os.fspath(path)
        self.recent_models = [r for r in self.recent_models if r != p]

    # -- the model picker's folders -------------------------------------------------------

    def add_model_folder(self, path: str | os.PathLike[str]) -> bool:
        """Add ``path`` to ``model_folders`` (last); False when it was there already or the list
        holds ``MAX_MODEL_FOLDERS``."""
        p = os.fspath(path)
        if not p or p in self.model_folders or len(self.model_folders) >= MAX_MODEL_FOLDERS:
            return False
        self.model_folders.append(p)
        return True

    def remove_model_folder(self, path: str | os.PathLike[str]) -> None:
        p = os.fspath(path)
        self.model_folders = [f for f in self.model_folders if f != p]

    # -- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The saved fields (no ``warning``), as JSON-ready values."""
        d: dict[str, Any] = {"version": _FORMAT_VERSION}
        for f in dataclasses.fields(self):
            if f.metadata.get("persist", True):
                value = getattr(self, f.name)
                d[f.name] = list(value) if isinstance(value, list) else (dict(value) if isinstance(value, dict) else value)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AppSettings":
        """Build settings from a parsed file. Unknown keys are dropped; a value of the wrong
        type or out of range falls back to its default and is named in ``warning``."""
        s = cls()
        bad: list[str] = []
        for f in dataclasses.fields(cls):
            if not f.metadata.get("persist", True) or f.name not in d:
                continue
            if f.name == "remote" and isinstance(d[f.name], dict):  # name the bad fields inside it
                from backends.sources import RemoteConfig

                config, bad_fields = RemoteConfig.parse(d[f.name])
                s.remote = config.to_dict() if d[f.name] else {}
                bad += [f"remote.{name}" for name in bad_fields]
                continue
            value = _checked(f.name, d[f.name])
            if value is _BAD:
                bad.append(f.name)
            else:
                setattr(s, f.name, value)
        if bad:
            s.warning = "Some settings were invalid and were reset to their defaults: " + ", ".join(bad) + "."
        return s

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> "AppSettings":
        """Read settings from ``path`` (default ``settings_path()``). Never raises for a bad
        file: a missing file gives defaults with no warning; an unreadable or corrupt file
        gives defaults, is renamed to ``settings.json.corrupt`` so it is not lost, and
        ``warning`` says so."""
        p = Path(path) if path is not None else settings_path()
        try:
            raw = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as exc:
            s = cls()
            s.warning = f"Could not read the settings file {p} ({exc}); default settings are used."
            return s
        try:
            data = loads_json(raw)
            if not isinstance(data, dict):
                raise ValueError("the file does not hold a JSON object")
        except ValueError as exc:
            s = cls()
            s.warning = f"The settings file {p} is damaged ({exc}); default settings are used. " + _keep_aside(p)
            return s
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the settings to ``path`` (default ``settings_path()``) atomically: a
        temporary file is written and then renamed over the old one. Raises ``OSError``."""
        p = Path(path) if path is not None else settings_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


def _keep_aside(p: Path) -> str:
    backup = p.with_name(p.name + ".corrupt")
    try:
        os.replace(p, backup)
    except OSError:
        return "The damaged file was left in place and will be overwritten on the next save."
    return f"The damaged file was kept as {backup}."


_BAD = object()


def _checked(name: str, v: Any) -> Any:
    """``v`` if it is a valid value for field ``name`` (normalised), else ``_BAD``."""
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if name == "last_model_path":
        return v if v is None or isinstance(v, str) else _BAD
    if name == "recent_models":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return _BAD
        out: list[str] = []
        for x in v:
            if x and x not in out:
                out.append(x)
        return out[:MAX_RECENT]
    if name == "model_folders":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return _BAD
        return list(dict.fromkeys(x for x in v if x))[:MAX_MODEL_FOLDERS]
    if name in ("n_ctx", "n_gpu_layers", "n_threads"):  # the ranges of LoadSettings, shared with the CLI
        if not is_int(v):
            return _BAD
        try:
            LoadSettings(**{name: v}).validate()
        except ValueError:
            return _BAD
        return v
    if name == "max_parallel":
        return v if is_int(v) and 0 <= v <= 64 else _BAD
    if name == "whatif_memory_mb":
        return v if is_int(v) and 0 <= v <= 65536 else _BAD
    if name == "top_n":
        lo, hi = SamplerSettings.LIMITS["top_n"]
        return v if is_int(v) and lo <= v <= hi else _BAD
    if name == "sampler":
        if not isinstance(v, dict):
            return _BAD
        try:
            sampler = SamplerSettings.from_dict(v)
            sampler.validate()
        except (TypeError, ValueError):
            return _BAD
        return sampler.to_dict()
    if name in ("presentation_scale", "presentation_pace"):
        lo, hi = PRESENTATION_SCALES if name == "presentation_scale" else PRESENTATION_PACES
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
            return _BAD
        return float(v)
    if name in ("preset_name", "palette"):
        return v if isinstance(v, str) else _BAD
    if name in ("show_whitespace", "step_mode", "show_first_run_hint"):
        return v if isinstance(v, bool) else _BAD
    if name == "remote":
        if not isinstance(v, dict):
            return _BAD
        if not v:
            return {}
        from backends.sources import RemoteConfig

        try:
            return RemoteConfig.from_dict(v).to_dict()  # only the known, key-free fields
        except TypeError:
            return _BAD
    return _BAD
