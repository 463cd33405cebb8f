"""What an OpenAI-compatible server can take part in, and why the rest cannot.

Owns: ``REMOTE_LIMITS`` (each thing a server cannot do in this lab, with the reason the window
shows), ``RemoteUnsupported``, ``is_remote``, ``remote_support`` (can a server run this strategy
as a sampled column) and ``remote_column`` (one sampled column as one streamed request). A
server takes part with sampled columns and with branches as new requests; beam search and
exact distributions need the model's logits and stay local.

Threads: ``remote_column`` streams on the thread that iterates it (the lab's worker, the main
thread in ``samplescope compare``); ``cancel`` is handed to the server's stream (it ends within
about 20 ms). The rest is plain data, safe on any thread. No Qt.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterator, Sequence

from backends.base import Finished, Step

from .strategies import Strategy, parse_strategy

if TYPE_CHECKING:
    from typing_extensions import TypeIs

    from backends.kinds import Backend
    from backends.openai_compat import OpenAICompatBackend, ServerCapabilities

__all__ = ["REMOTE_LIMITS", "RemoteUnsupported", "remote_support", "remote_column", "is_remote"]


#: What a server cannot do in this lab, and why (the window greys these out with the reason).
REMOTE_LIMITS = {
    "beam": "beam search needs the model's logits for every beam: only for local models",
    "exact": "exact distributions need the model's whole next-token distribution; a server shows only "
             "its top-N log-probabilities: only for local models",
    "typical": "typical-p is not among the sampler fields sent to servers",
    "top-k": "the server did not accept top_k in the capability probe",
    "min-p": "the server did not accept min_p in the capability probe",
    "branch-logits": "a server branch is a new request continuing the text: the KV cache and the exact "
                     "token boundaries are the server's",
}


class RemoteUnsupported(ValueError):
    """A strategy or feature a remote backend cannot take part in (the message says why)."""


def is_remote(backend: Backend) -> TypeIs[OpenAICompatBackend]:
    """A backend without the model's logits (an OpenAI-compatible server), by its ``capabilities``.
    A plain bool at run time; for mypy it tells the two kinds of ``Backend`` apart (True: the
    server, False: the local ``Sequence``)."""
    return not backend.capabilities.full_logits


def remote_support(strategy: Strategy | str, caps: ServerCapabilities | None = None) -> str | None:
    """None when a server can run ``strategy`` as a sampled column, else the reason. ``caps``: the
    backend's ``ServerCapabilities`` (None = not probed: top-k and min-p then need a probe)."""
    s = strategy if isinstance(strategy, Strategy) else parse_strategy(strategy)
    if s.kind == "beam":
        return REMOTE_LIMITS["beam"]
    if s.kind == "typical":
        return REMOTE_LIMITS["typical"]
    if s.kind in ("top-k", "min-p"):
        field_name = s.kind.replace("-", "_")
        if caps is None:
            return f"{s.kind} is sent only to servers probed to accept it: probe the server first"
        if field_name not in caps.accepted:
            return REMOTE_LIMITS[s.kind]
    return None


def remote_column(backend: OpenAICompatBackend, prompt: str | None, strategy: Strategy | str, max_tokens: int = 32,
                  seed: int = 42, cancel: threading.Event | None = None, *, top_n: int = 5, stop: Sequence[str] = (),
                  messages: list[dict] | None = None) -> Iterator[Step | Finished]:
    """A sampled column on an OpenAI-compatible server: the strategy's settings (seed sent when
    the server accepts one) streamed as ``Step``s (``token_id`` None, top-N alternatives,
    ``estimated``) and a ``Finished``. ``RemoteUnsupported`` (before any request) for beam
    search, typical-p, and top-k/min-p on a server that did not accept them (an unprobed backend
    is probed first for those two)."""
    s = strategy if isinstance(strategy, Strategy) else parse_strategy(strategy)
    if not is_remote(backend):
        raise ValueError("remote_column needs an OpenAI-compatible backend; use lockstep for a local model")
    caps = backend.server_capabilities()
    if caps is None and s.kind in ("top-k", "min-p"):
        caps = backend.probe()
    why = remote_support(s, caps)
    if why:
        raise RemoteUnsupported(f"{s.spec}: {why}")
    st = s.settings(seed=seed, max_tokens=max_tokens, top_n=top_n, stop=stop)
    st.validate()
    return backend.stream(None if messages else prompt, st, messages=messages, cancel=cancel)
