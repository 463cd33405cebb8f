"""The remote backend itself: ``OpenAICompatBackend``, one model on one OpenAI-compatible server.

Owns: ``OpenAICompatBackend`` (the connection settings and the httpx client, model listing,
``probe`` (see ``probe.py``) and the ``ServerCapabilities`` it found, and ``stream``: one generation, with
the fallbacks a server's answers call for (no streamed log-probabilities, none at all, a smaller
top-N)), and ``score_prompt``: a text's own tokens with their log-probabilities (``echo.py``). The contract (what a remote Step holds, which faults raise what, the API key) is the
package docstring of ``backends.openai_compat``; the work is done by the package's other
modules: ``request`` builds the body, ``retry.Sender`` sends it, ``streaming`` reads the answer,
``steps.Run`` turns it into Steps, ``faults`` names what went wrong.

Threads: an instance is used by one thread at a time (the model worker), except for N-sample
work, where ``app.core.parallel`` runs several ``stream`` generators at once on its helper
threads (the client and the 429 back-off are shared; the rest of a run is per generator).
``stream`` runs on the thread that iterates it; each HTTP request on its own short-lived helper
thread (``exchange``). No Qt.
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import httpx

from ..base import (
    BadResponse,
    Capabilities,
    ConnectionFailed,
    EndpointNotFound,
    Finished,
    GenerationError,
    RequestRejected,
    SamplerSettings,
    Step,
    require_prompt,
)
from ..text import clean_text
from .capabilities import REMOTE_PARALLEL, ServerCapabilities
from .echo import EchoedToken, echo_request, echoes, read_echo
from .exchange import Cancelled
from .faults import Faults, Secret, scrub
from .probe import probe_server
from .request import build_body, top_n
from .retry import OnWait, Sender
from .logprobs import Malformed
from .steps import Fallback, Run
from .streaming import AnswerReader

__all__ = ["OpenAICompatBackend"]


class OpenAICompatBackend:
    """A model on an OpenAI-compatible server (see the package docstring for what a remote Step
    holds and how faults are reported).

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:8080/v1``; a bare ``http://host:port``
    gets ``/v1`` appended. ``transport`` replaces the network (tests: ``httpx.MockTransport``),
    ``sleep`` and ``rng`` the waiting and the jitter of retries (tests). ``send_sampler_fields``
    forces (True) or forbids (False) sending ``top_k``, ``min_p`` and ``repeat_penalty``; by
    default (None) they are sent only when ``probe`` found that the server accepts them.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        progress_timeout: float | None = None,
        max_body_bytes: int = 32 << 20,
        max_line_bytes: int = 4 << 20,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        rng: Callable[[], float] = random.random,
        send_sampler_fields: bool | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
    ) -> None:
        self._secret = Secret(api_key)
        url = (base_url or "").strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectionFailed(
                f"'{self._scrub(base_url)}' is not a server address: enter a base URL such as "
                "http://127.0.0.1:8080/v1."
            )
        if parts.path in ("", "/"):
            url += "/v1"
        self.base_url = url
        self.model = model or None
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        # a stream that sends only keep-alive pings ends after this long without a new token
        self.progress_timeout = float(progress_timeout) if progress_timeout else self.read_timeout
        self.max_body_bytes = int(max_body_bytes)
        self.max_line_bytes = int(max_line_bytes)
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_retry_after = float(max_retry_after)
        self.send_sampler_fields = send_sampler_fields
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host = parts.hostname
        self._where = f"{parts.hostname}:{port}"
        headers = {"Accept": "application/json"}
        if self._secret.value:
            headers["Authorization"] = f"Bearer {self._secret.value}"
        self._client = httpx.Client(
            base_url=url,
            headers=headers,
            timeout=httpx.Timeout(
                connect=self.connect_timeout, read=self.read_timeout, write=self.read_timeout,
                pool=self.connect_timeout,
            ),
            transport=transport,
        )
        # the timeouts and limits are read from this object's attributes when they are needed;
        # through a weak proxy, so that the helpers make no reference cycle with it
        limits = weakref.proxy(self)
        self._faults = Faults(base_url=url, host=self._host, where=self._where, secret=self._secret,
                              timeouts=limits)
        self._sender = Sender(self._client, self._faults, limits, sleep=sleep, rng=rng)
        self._caps: dict[str | None, ServerCapabilities] = {}
        self._no_stream_logprobs: set[tuple[str | None, bool]] = set()
        self._no_logprobs: set[tuple[str | None, bool]] = set()

    # ---------------------------------------------------------------- basics
    def __repr__(self) -> str:
        return (
            f"OpenAICompatBackend(base_url={self._scrub(self.base_url)!r}, model={self.model!r}, "
            f"api_key={'set' if self._secret.value else 'none'})"
        )

    __str__ = __repr__

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def capabilities(self) -> Capabilities:
        """What this backend reveals, from the last ``probe`` of the current model."""
        caps = self._caps.get(self.model)
        if caps is None:
            return Capabilities(notes=("The server has not been probed yet.",), kind="remote",
                                max_parallel=REMOTE_PARALLEL)
        return caps.to_capabilities()

    def server_capabilities(self, model: str | None = None) -> ServerCapabilities | None:
        return self._caps.get(model if model is not None else self.model)

    def _scrub(self, text: str) -> str:
        """Server or transport text as we may show it: valid Unicode, the API key masked."""
        return scrub(text, self._secret)

    def _request_json(self, method: str, path: str, body: Any, *, retry_5xx: bool = True,
                      model: str | None = None, cancel: threading.Event | None = None,
                      on_wait: OnWait | None = None) -> Any:
        """One request and its JSON answer, with this backend's retries and errors (also used by
        ``app.labs.vs.engine`` for its own requests)."""
        return self._sender.request_json(method, path, body, retry_5xx=retry_5xx, model=model, cancel=cancel,
                                         on_wait=on_wait)

    # ---------------------------------------------------------------- listing
    def list_models(self) -> list[str]:
        """The model names the server lists (``GET /v1/models``)."""
        obj = self._request_json("GET", "/models", None)
        data = obj.get("data") if isinstance(obj, dict) else None
        if data is None and isinstance(obj, dict):
            data = obj.get("models")
        if not isinstance(data, list):
            raise BadResponse(
                f"The server at {self._where} answered /models without a model list. Check that the "
                "base URL points at an OpenAI-compatible API (it usually ends in /v1)."
            )
        out = []
        for m in data:
            if isinstance(m, dict):
                name = m.get("id") or m.get("name") or m.get("model")
                if isinstance(name, str) and name:
                    out.append(clean_text(name))
            elif isinstance(m, str):
                out.append(clean_text(m))
        return out

    # ---------------------------------------------------------------- probe
    def probe(self, model: str | None = None) -> ServerCapabilities:
        """Find out what the server can do for ``model`` (default: the backend's model) with a
        dozen tiny requests (1 to 8 tokens each). Also makes ``model`` the current model."""
        model = model or self.model
        self.model = model or None
        caps = probe_server(self._sender, model, progress_timeout=self.progress_timeout)
        self._caps[self.model] = caps
        return caps

    # ---------------------------------------------------------------- prompt scoring
    def score_prompt(self, text: str, *, top_n: int = 5, cancel: threading.Event | None = None) -> list[EchoedToken]:
        """``text``'s own tokens as the server tokenizes it, each with its log-probability given
        what precedes it and ``top_n`` alternatives (the first token's log-probability is None),
        from one completion request with ``echo`` (see ``echo.py``); [] when ``cancel`` is set
        before the answer arrives. Raises
        ``GenerationError`` when the probe found no echoed log-probabilities, ``BadResponse``
        when the answer does not echo the text, and the usual faults."""
        require_prompt(text)
        model = self._resolve_model()
        caps = self._caps.get(model)
        if caps is None or not caps.echo_logprobs:
            raise GenerationError("This server " + Capabilities().why_not("prompt_logprobs") + ".")
        n = max(1, min(int(top_n), caps.top_n_completions or 1))
        try:
            obj = self._request_json("POST", "/completions", echo_request(text, model, n), model=model, cancel=cancel)
        except Cancelled:
            return []
        try:
            tokens = read_echo(obj, text)
        except Malformed as exc:
            raise BadResponse(f"The server at {self._where} sent malformed prompt log-probabilities: {exc}.") from None
        if tokens is None or not echoes(tokens, text):
            raise BadResponse(f"The server at {self._where} did not echo the prompt's tokens with their "
                              "log-probabilities this time, although the probe saw it do so.")
        return tokens

    # ---------------------------------------------------------------- generation
    def _resolve_model(self) -> str | None:
        if self.model:
            return self.model
        try:
            models = self.list_models()
        except (EndpointNotFound, BadResponse):
            return None
        if len(models) == 1:
            self.model = models[0]
            return self.model
        if not models:
            return None
        raise RequestRejected(
            f"The server at {self._where} offers {len(models)} models ({', '.join(models[:8])}"
            + (", ..." if len(models) > 8 else "") + "): choose one."
        )

    def stream(
        self,
        prompt: str | None,
        settings: SamplerSettings,
        *,
        messages: list[dict] | None = None,
        cancel: threading.Event | None = None,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> Iterator[Step | Finished]:
        """Generate on the server: yield one ``Step`` per token as it arrives, then one
        ``Finished``. Completion mode sends ``prompt`` raw to ``/v1/completions``; chat mode
        (``messages`` given: ``[{"role": ..., "content": ...}]``) uses ``/v1/chat/completions``.
        ``cancel`` stops the run within about 20 ms (``Finished(reason="cancelled")``, the
        partial output kept); ``on_wait(seconds_left, reason)`` is called about once a second
        while a 429/5xx retry waits. Raises ``BackendError`` subclasses (package docstring)."""
        settings.validate()
        chat = messages is not None
        if chat:
            if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            ):
                raise GenerationError("Chat mode needs at least one message with a role and a text.")
        else:
            require_prompt(prompt)
        t0 = time.perf_counter()
        model = self._resolve_model()
        caps = self._caps.get(model)
        key = (model, chat)
        n = top_n(settings, caps, chat, model, self._no_logprobs)
        # without logprobs to ask for, always stream; with them, stream unless they do not stream
        streaming = n == 0 or (key not in self._no_stream_logprobs and not (caps is not None and not caps.stream_logprobs))
        path = "/chat/completions" if chat else "/completions"
        reader = AnswerReader(self._sender, self.progress_timeout)
        run = Run(settings, n, chat=chat)
        try:
            while True:
                body = build_body(prompt, messages, settings, model, n, streaming, caps,
                                  send_sampler_fields=self.send_sampler_fields)
                run.n_top = n
                run.may_fall_back = n > 0 and streaming
                try:
                    outcome = yield from reader.consume(path, body, run, cancel, on_wait, model)
                except Fallback:
                    # text arrived without the logprobs we asked for: ask again without streaming
                    self._no_stream_logprobs.add(key)
                    streaming = False
                    run = Run(settings, n, chat=chat)
                    continue
                except RequestRejected as exc:
                    if run.index == 0 and caps is None and n > 1 and "logprob" in str(exc).lower():
                        n = 5 if n > 5 else 1  # an unprobed server with a smaller top-N cap
                        run = Run(settings, n, chat=chat)
                        continue
                    raise
                break
        except Cancelled:
            yield run.finished("cancelled", time.perf_counter() - t0, "Stopped by the user; the partial output is kept.")
            return
        if n > 0 and not run.saw_logprobs and run.index > 0:
            self._no_logprobs.add(key)  # do not ask (and fall back) again next time
        if not streaming and run.index:
            run.notes.append("the server does not stream log-probabilities here, so the tokens arrived "
                             "all at once at the end")
        if outcome is not None:  # the stream was cut
            yield run.finished("incomplete", time.perf_counter() - t0, outcome)
            return
        reason = run.end_reason()
        yield run.finished(reason, time.perf_counter() - t0)
