"""A remote model behind an OpenAI-compatible HTTP API (vLLM, llama.cpp's server,
llama-cpp-python's server, Ollama's ``/v1``, LM Studio, hosted APIs).

Owns: ``OpenAICompatBackend`` (model listing, the capability probe, streamed generation with
log-probabilities, every fault turned into a ``BackendError`` subclass), ``ServerCapabilities``
(what the probe found), and the log-probability readers (``parse_logprobs``, ``TokenLogprob``,
``entropy_lower_bound``) for every shape these servers send.

Threads: an instance is used by one thread at a time, the model worker (the same worker that runs
local jobs). ``stream`` is a generator run on that thread. Each HTTP request is carried out by a
short-lived daemon helper thread that only moves response lines into a queue; the worker waits on
that queue in 20 ms slices and checks ``cancel`` between them, so Stop ends a run within about
20 ms even while the server is silent (a server computing one token per second, or a
non-streaming request still waiting for its answer). On Stop the helper's socket is shut down so
the server sees the disconnect (a Stop before the server has sent its response headers leaves
the helper waiting for them in the background; what it then receives is dropped). Uses sync
httpx; no Qt.

Streaming: requests stream over server-sent events. When the probe found that log-probabilities
do not stream, or a stream's first text arrives without the log-probabilities asked for, the
request is made again without streaming (remembered for the model) and its tokens arrive all at
once at the end; ``Finished.message`` says so. A server that ignores the request altogether gives
a text-only run (below), and is not asked for log-probabilities again. Only the fields a server
accepted in the probe are sent besides the standard ones (``temperature``, ``top_p``,
``max_tokens``, ``stop``, ``seed``, non-zero ``frequency_penalty``/``presence_penalty``):
``top_k``, ``min_p`` and ``repeat_penalty``.

What a remote Step means (the server samples; we only see what it reports):

- ``p_raw = p_final = exp(logprob)`` of the chosen token as the server reports it. For
  llama.cpp, llama-cpp-python and vLLM (by default) that is the model's raw softmax, before the
  server's sampler chain; OpenAI does not say. ``kl_final_raw`` is 0.0 and ``stages`` is empty.
- ``top`` is the server's top-N, most likely first; ``TokenAlt.id`` is None unless the server
  sends token ids (llama.cpp's C++ server does). ``rank`` is the chosen token's 1-based place in
  that list, ``len(top) + 1`` when it is not in it.
- ``unseen_mass = 1 - sum(p of top)``; ``estimated`` is always True.
- ``entropy_raw = entropy_final`` is a LOWER BOUND on the entropy of the full distribution,
  estimated from the top-N: ``H_top = sum(-p log p)`` over the shown tokens, plus the unseen mass
  ``m`` times ``-log(c)``, where ``c`` bounds every unseen probability from above: the smallest
  shown p among the N requested (an unseen token cannot be more likely than a shown top-N one),
  or ``m`` itself when that is smaller. The true entropy is at least this value.
- ``position`` equals ``index`` (a count of generated tokens: the server does not tell us how
  many tokens the prompt became until the end, if at all).
- Text-only runs: a server that ignores the logprobs request still streams text. Each piece of
  text then becomes a Step with ``top == ()``, ``p_raw == p_final == 0.0`` (never NaN),
  ``rank == 0``, entropy 0.0 and ``unseen_mass == 1.0`` (nothing was seen); ``is_text_only(step)``
  tells such a step apart, and ``Finished.message`` contains ``TEXT_ONLY_NOTE``.
- Tokens split inside a UTF-8 character: when the server sends each token's ``bytes``, partial
  bytes wait for the rest (the step that completes the character shows all of it, like the local
  backend); ``piece`` shows a partial token as ``<0xE2>`` escapes. Without bytes the server's
  token text is used as it is.
- ``Finished.reason``: "length", "eos" (the server's "stop" when no stop strings were asked for),
  "stop" (its "stop" when stop strings were given: the API does not say which of the two
  happened), "cancelled", or "incomplete" (the stream was cut before the server said it was done:
  the tokens that arrived are kept and ``message`` says what happened). ``Finished.text`` is the
  text the server sent (it already leaves out a matched stop string). ``seconds`` is wall time
  from the request to the end, prompt processing and network included.

Faults: before anything was yielded, 429 (honouring ``Retry-After`` in seconds or as an HTTP
date, else exponential backoff with jitter) and 5xx (not 501/505) are retried up to
``max_retries`` times, with ``on_wait(seconds_left, reason)`` called about once a second during
each wait. Everything else raises at once, with a message for the user:
``ConnectionRefused``, ``HostNotFound``, ``TLSFailed``, ``ConnectTimeout``, ``ReadTimeout``,
``AuthenticationFailed`` (401/403), ``ModelNotFound`` / ``EndpointNotFound`` (404),
``RateLimited``, ``ServerFailed``, ``RequestRejected`` (other 4xx), ``BadResponse`` (not JSON, a
malformed chunk). A fault after some Steps were yielded raises too (those Steps stay with the
consumer); only a stream that is cut (connection closed or reset, or the body ends without the
final event) ends with ``Finished(reason="incomplete")`` instead.

The API key is sent only in the ``Authorization`` header. It is never logged, never in a repr,
an exception, a message or a returned value: server messages are scrubbed of it, 401/403 answers
are not quoted at all, and errors are raised without the httpx exception (whose request carries
the headers) chained to them.

The package, one job per module:

- ``backend``: ``OpenAICompatBackend`` (settings, listing, ``probe`` and ``stream``, the
  fallbacks between requests);
- ``probe``: the capability probe; ``capabilities``: what it found (``ServerCapabilities``);
- ``request``: the request body (which fields are sent) and how much of an answer is read;
- ``retry``: ``Sender``, sending with the 429/5xx retries, ``Retry-After`` and the shared
  back-off;
- ``exchange``: the HTTP helper thread and the typed messages (``Kind``) it hands over;
- ``streaming``: reading an event stream or a JSON answer into a run, cut or complete;
- ``steps``: turning chunks into ``Step`` records and a ``Finished``;
- ``logprobs``: every log-probability shape, and the entropy bound;
- ``faults``: transport and HTTP faults as ``BackendError`` subclasses, the API key kept out.
"""

from __future__ import annotations

# REMOTE_PARALLEL and parse_retry_after were public names of the module before the split; they
# stay importable from here (the "as" form re-exports them) but are not in __all__, as before
from .backend import OpenAICompatBackend
from .capabilities import REMOTE_PARALLEL as REMOTE_PARALLEL
from .capabilities import ServerCapabilities
from .logprobs import AltLogprob, TokenLogprob, entropy_lower_bound, parse_logprobs
from .probe import PROBE_PROMPT
from .retry import parse_retry_after as parse_retry_after
from .steps import TEXT_ONLY_NOTE, is_text_only

__all__ = [
    "OpenAICompatBackend",
    "ServerCapabilities",
    "TokenLogprob",
    "AltLogprob",
    "parse_logprobs",
    "entropy_lower_bound",
    "is_text_only",
    "TEXT_ONLY_NOTE",
    "PROBE_PROMPT",
]
