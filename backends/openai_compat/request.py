"""Request building: the JSON body of a generation request, and how much of an answer to read.

Owns: ``build_body`` (a ``/v1/completions`` or ``/v1/chat/completions`` body from the sampler
settings: the standard fields always, ``seed`` unless the probe saw it refused, ``top_k``,
``min_p`` and ``repeat_penalty`` only where the probe saw them accepted or the user forced
them), ``sends`` (that decision, field by field), ``top_n`` (how many alternatives per token to
ask for) and ``answer_cap`` (the largest answer read for a request).

Pure functions; no I/O, no Qt, any thread (the thread that runs ``OpenAICompatBackend.stream``).
"""

from __future__ import annotations

from typing import Any, Collection

from ..base import SamplerSettings
from .capabilities import ServerCapabilities

__all__ = ["build_body", "sends", "top_n", "answer_cap"]


def answer_cap(body: Any, max_body_bytes: int) -> int:
    """The largest answer read for ``body``: ``max_body_bytes``, or more for a request whose
    own size asks for it (many tokens with many alternatives each, about 256 bytes per
    alternative), so that a server cannot make us hold more than the request could need."""
    cap = max_body_bytes
    if isinstance(body, dict):
        tokens = body.get("max_tokens")
        top = body.get("top_logprobs", body.get("logprobs"))
        top = top if isinstance(top, int) and not isinstance(top, bool) else 0
        if isinstance(tokens, int) and tokens > 0:
            cap = max(cap, tokens * (top + 1) * 256)
    return cap


def sends(name: str, caps: ServerCapabilities | None, send_sampler_fields: bool | None) -> bool:
    """Whether the non-standard field ``name`` goes into a request: ``seed`` unless the probe
    saw it refused; the others as ``send_sampler_fields`` forces, else where the probe saw them
    accepted."""
    if name == "seed":
        return caps is None or "seed" in caps.accepted
    if send_sampler_fields is not None:
        return send_sampler_fields
    return caps is not None and name in caps.accepted


def top_n(settings: SamplerSettings, caps: ServerCapabilities | None, chat: bool, model: str | None,
          no_logprobs: Collection[tuple[str | None, bool]]) -> int:
    """Alternatives per token to ask for: 0 where the server sends no log-probabilities (the
    probe, or ``no_logprobs``: the (model, chat) pairs that ignored the request), else
    ``settings.top_n`` within what the probe measured (20 unprobed)."""
    if (model, chat) in no_logprobs:
        return 0
    if caps is None:
        return min(settings.top_n, 20)
    ok, cap = (caps.chat_logprobs, caps.top_n_chat) if chat else (caps.completions_logprobs, caps.top_n_completions)
    if not ok:
        return 0
    return max(1, min(settings.top_n, cap)) if cap > 0 else 1


def build_body(prompt: str | None, messages: list[dict] | None, s: SamplerSettings, model: str | None,
               n: int, stream: bool, caps: ServerCapabilities | None, *,
               send_sampler_fields: bool | None) -> dict[str, Any]:
    """The body of a generation request: chat when ``messages`` is given, else completion of
    ``prompt``; ``n`` alternatives per token (0: no log-probabilities asked for)."""
    body: dict[str, Any] = {}
    if model:
        body["model"] = model
    if messages is not None:
        body["messages"] = messages
        if n > 0:
            body["logprobs"] = True
            body["top_logprobs"] = n
    else:
        body["prompt"] = prompt
        if n > 0:
            body["logprobs"] = n
    body["max_tokens"] = s.max_tokens
    body["temperature"] = s.temperature
    body["top_p"] = s.top_p
    if s.stop:
        body["stop"] = list(s.stop)
    if s.frequency_penalty:
        body["frequency_penalty"] = s.frequency_penalty
    if s.presence_penalty:
        body["presence_penalty"] = s.presence_penalty
    if sends("seed", caps, send_sampler_fields):
        body["seed"] = s.seed
    if sends("top_k", caps, send_sampler_fields):
        # "off" is 0 for llama.cpp, llama-cpp-python (which refuses -1) and recent vLLM; older
        # vLLM wants -1 (the probe finds out which)
        body["top_k"] = s.top_k if s.top_k > 0 else (caps.top_k_off if caps is not None else 0)
    if sends("min_p", caps, send_sampler_fields):
        body["min_p"] = s.min_p
    if sends("repeat_penalty", caps, send_sampler_fields):
        body["repeat_penalty"] = s.repeat_penalty
    body["stream"] = stream
    return body
