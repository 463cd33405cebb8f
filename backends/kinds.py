"""The names a caller gives the two kinds of backend in its annotations.

Owns: ``LocalEngine`` (one sequence of a local llama.cpp context: ``backends.llama_engine.Sequence``,
of which the Workbench's ``LlamaCppBackend`` is one) and ``Backend`` (a local sequence or an
OpenAI-compatible server, ``backends.openai_compat.OpenAICompatBackend``, also named
``RemoteEngine`` where only a server will do). Aliases for type
checking only: importing this module imports neither llama.cpp nor httpx. Any thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from .llama_engine import Sequence
    from .openai_compat import OpenAICompatBackend

__all__ = ["LocalEngine", "RemoteEngine", "Backend"]

LocalEngine: TypeAlias = "Sequence"
RemoteEngine: TypeAlias = "OpenAICompatBackend"
Backend: TypeAlias = "Sequence | OpenAICompatBackend"
