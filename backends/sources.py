"""Where a model comes from: a local GGUF file (or the embedded one) or a remote server.

Owns: ``LocalSource`` (a GGUF path, None for the embedded model, and its ``LoadSettings``) and
``RemoteConfig`` (an OpenAI-compatible server: where, which model, where the key comes from —
never the key itself — timeouts, mode). Frozen values: built on the GUI thread or the command
line, read on the workers. ``backends.open.open_backend`` turns either into a backend. Qt-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .base import LoadSettings

__all__ = ["LocalSource", "RemoteConfig", "Source"]


@dataclass(frozen=True, slots=True)
class LocalSource:
    """A local model: ``path`` (None: the embedded Gemma 3 270M, assembled on first use) loaded
    with ``load`` (context size, GPU layers, threads)."""

    path: str | None = None
    load: LoadSettings = field(default_factory=LoadSettings)


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """Connection settings. The API key is NOT here: only where to find it (an environment
    variable's name or a system-keyring entry's name)."""

    base_url: str
    model: str = ""
    api_key_env: str = ""
    keyring_entry: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    chat: bool = False
    preset: str = "Custom"

    def validate(self) -> None:
        url = self.base_url.strip()
        if not url:
            raise ValueError("Enter the server's base URL, for example http://127.0.0.1:8080/v1.")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"The base URL must start with http:// or https:// (got {url!r}).")
        if "@" in url.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError("Do not put credentials in the URL; name an environment variable or use the keyring.")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("Timeouts must be positive.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RemoteConfig":
        """The known fields of ``d`` with the right types; a field of the wrong type keeps its
        default (``parse`` also says which)."""
        return cls.parse(d)[0]

    @classmethod
    def parse(cls, d: dict[str, Any]) -> tuple["RemoteConfig", list[str]]:
        """(the config, the names of the fields of ``d`` that were unusable and reset to their
        defaults). Unknown keys are dropped silently (older or newer versions)."""
        kwargs: dict[str, Any] = {}
        bad: list[str] = []
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if f.name in ("connect_timeout", "read_timeout"):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e6
                v = float(v) if ok else v
            elif f.name == "chat":
                ok = isinstance(v, bool)
            else:
                ok = isinstance(v, str)
            if ok:
                kwargs[f.name] = v
            else:
                bad.append(f.name)
        kwargs.setdefault("base_url", "")
        return cls(**kwargs), bad


Source = LocalSource | RemoteConfig
