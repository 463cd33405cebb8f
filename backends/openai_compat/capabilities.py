"""What the capability probe found about one model on one server.

Owns: ``ServerCapabilities`` (the probe's findings, and the ``Capabilities`` the app is shown)
and ``REMOTE_PARALLEL`` (requests in flight at once for N-sample work). ``probe.py`` fills it
in; ``request.py`` and the backend read it to decide what a request asks for.

A frozen value: no I/O, no Qt, any thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base import Capabilities

__all__ = ["ServerCapabilities", "REMOTE_PARALLEL"]

#: requests in flight at once for N-sample work (a server batches concurrent requests)
REMOTE_PARALLEL = 4


@dataclass(frozen=True, slots=True)
class ServerCapabilities:
    """What the capability probe found out about one model on one server.

    ``top_n_max`` is the largest number of alternatives per token the server honours (the
    larger of ``top_n_completions`` and ``top_n_chat``; 0 = no logprobs at all).
    ``seed``, ``top_k`` and ``min_p`` are True only when the server accepted the field AND a
    behavioural check passed (same seed twice gives the same text; ``top_k=1`` or
    ``min_p=1`` at temperature 2 gives the greedy text). ``accepted`` lists the non-standard
    sampler fields the server did not refuse; only those are sent with a generation.
    ``json_schema_style`` is "json_schema" (OpenAI's ``response_format``) or "json_object"
    (a ``schema`` inside ``{"type": "json_object"}``, as llama-cpp-python reads it).
    ``top_k_off`` is the ``top_k`` value the server takes for "no top-k" (0, or -1 for older vLLM).
    ``echo_logprobs``: a completion request with ``echo`` returns the prompt's own tokens with
    their log-probabilities (``echo.py``: the prompt X-ray).
    """

    completions: bool = False
    completions_logprobs: bool = False
    chat: bool = False
    chat_logprobs: bool = False
    top_n_max: int = 0
    stream_logprobs: bool = False
    seed: bool = False
    top_k: bool = False
    min_p: bool = False
    json_schema: bool = False
    notes: tuple[str, ...] = ()
    top_n_completions: int = 0
    top_n_chat: int = 0
    repeat_penalty: bool = False
    accepted: frozenset[str] = frozenset()
    json_schema_style: str = ""
    top_k_off: int = 0
    echo_logprobs: bool = False

    def to_capabilities(self) -> Capabilities:
        return Capabilities(
            full_logits=False,
            sampler_stages=False,
            step_mode=False,
            top_n_max=self.top_n_max,
            seed=self.seed,
            notes=self.notes,
            kind="remote",
            json_schema=self.json_schema,
            chat=self.chat,
            max_parallel=REMOTE_PARALLEL,
            prompt_logprobs=self.echo_logprobs,
        )
