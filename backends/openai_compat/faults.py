"""Faults of a remote server as ``BackendError`` subclasses with a sentence for the user.

Owns: ``Faults`` (one server's error mapping: an httpx transport exception to
``ConnectionRefused``, ``HostNotFound``, ``TLSFailed``, ``ConnectTimeout``, ``ReadTimeout``, ...;
an HTTP status and body to ``AuthenticationFailed``, ``ModelNotFound``, ``EndpointNotFound``,
``RateLimited``, ``ServerFailed``, ``RequestRejected``; an answer that is not JSON, a stalled or
cut stream, an answer too large), ``Secret`` (the API key, never in a repr), ``scrub`` (server
text as we may show it: valid Unicode, the key masked), ``is_cut`` and ``StreamCut`` (a stream
that broke off, which ends a run as "incomplete" rather than raising).

The key rule: messages never hold the API key (server messages are scrubbed of it, 401/403
answers are not quoted at all), and these functions return errors without chaining the httpx
exception (whose request carries the headers) to them.

Pure: exceptions in, exceptions out; no I/O, no Qt, any thread (the thread that waits for the
server: the model worker or a concurrent job's helper).
"""

from __future__ import annotations

import json
import socket
import ssl
from typing import Any, Protocol

import httpx

from ..base import (
    AuthenticationFailed,
    BackendError,
    BadResponse,
    ConnectionFailed,
    ConnectionRefused,
    ConnectTimeout,
    EndpointNotFound,
    HostNotFound,
    ModelNotFound,
    RateLimited,
    ReadTimeout,
    RemoteError,
    RemoteTimeout,
    RequestRejected,
    ServerFailed,
    ServerUnreachable,
    TLSFailed,
)
from ..text import clean_text, loads_json
from .exchange import TooLarge

__all__ = ["Faults", "Timeouts", "Secret", "scrub", "is_cut", "StreamCut", "MASK"]

MASK = "\u2022\u2022\u2022\u2022"


class Secret:
    """Holds the API key; its repr never shows it."""

    __slots__ = ("value",)

    def __init__(self, value: str | None) -> None:
        self.value = value or None

    def __repr__(self) -> str:
        return "<hidden>" if self.value else "<none>"


class StreamCut(Exception):
    """The stream broke off (connection closed or reset, a partial last event)."""


class Timeouts(Protocol):
    """The timeouts the messages quote, read when a message is made (the backend's attributes)."""

    connect_timeout: float
    read_timeout: float
    progress_timeout: float


def scrub(text: str, secret: Secret) -> str:
    """Server or transport text as we may show it: valid Unicode, the API key masked."""
    text = clean_text(text)
    key = secret.value
    if key and text:
        text = text.replace(key, MASK)
    return text


def is_cut(exc: BaseException) -> bool:
    """A connection closed or reset in the middle of an answer (not a timeout)."""
    return isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.CloseError))


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


class Faults:
    """The error mapping of one server: ``base_url`` (the API root), ``host`` and ``where``
    (``host:port``, as messages name the server), the API key (to scrub it out of every
    message) and ``timeouts`` (to quote them)."""

    def __init__(self, *, base_url: str, host: str, where: str, secret: Secret, timeouts: Timeouts) -> None:
        self.base_url = base_url
        self.host = host
        self.where = where
        self._secret = secret
        self._timeouts = timeouts

    def scrub(self, text: str) -> str:
        """``scrub`` with this server's key."""
        return scrub(text, self._secret)

    # ---------------------------------------------------------------- the transport
    def transport_error(self, exc: BaseException) -> BackendError:
        """An httpx transport exception as one of our errors (never chained to it)."""
        if isinstance(exc, TooLarge):
            return self.too_large(str(exc))
        chain = _chain(exc)
        text = self.scrub(" / ".join(str(e) for e in chain if str(e)))[:300]
        low = text.lower()
        where = self.where
        if isinstance(exc, httpx.ConnectTimeout):
            return ConnectTimeout(
                f"Could not connect to {where} within {self._timeouts.connect_timeout:g} s. Check that the "
                "server is running and reachable from this machine, or raise the connect timeout."
            )
        if isinstance(exc, httpx.ReadTimeout):
            return ReadTimeout(
                f"The server at {where} sent nothing for {self._timeouts.read_timeout:g} s. It may be "
                "overloaded or still loading the model; try again or raise the read timeout in the "
                "connection settings."
            )
        if isinstance(exc, httpx.TimeoutException):
            return RemoteTimeout(f"The request to {where} timed out ({type(exc).__name__}).")
        if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in low or "certificate" in low or "tls" in low:
            return TLSFailed(
                f"The secure (https) connection to {where} failed: {text}. If the server speaks "
                "plain HTTP, use an http:// URL; if it uses a self-signed certificate, put it behind "
                "a proxy with a trusted one."
            )
        if any(isinstance(e, socket.gaierror) for e in chain) or any(
            s in low for s in ("name or service not known", "nodename nor servname", "getaddrinfo",
                               "name resolution", "no address associated", "host not found")
        ):
            return HostNotFound(
                f"The host name '{self.host}' could not be found. Check the spelling of the base URL "
                "and this machine's network connection."
            )
        if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in low:
            return ConnectionRefused(
                f"Nothing is listening at {where} (connection refused). Start the server, or "
                "check the host and port in the base URL."
            )
        if isinstance(exc, httpx.ConnectError):
            return ServerUnreachable(f"Could not connect to {where}: {text}.")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return ServerUnreachable(
                f"The connection to {where} broke before the server answered: {text}."
            )
        if isinstance(exc, httpx.UnsupportedProtocol):
            return ConnectionFailed(f"Unsupported URL for {where}: {text}.")
        if isinstance(exc, httpx.HTTPError):
            return RemoteError(f"The request to {where} failed: {type(exc).__name__}: {text}.")
        return RemoteError(f"The request to {where} failed: {type(exc).__name__}: {text}.")

    # ---------------------------------------------------------------- HTTP status
    def detail(self, body: bytes) -> tuple[str, Any]:
        """(the server's error message, scrubbed and short; the parsed body or None)."""
        try:
            obj = loads_json(body.decode("utf-8", errors="replace")) if body else None
        except ValueError:
            obj = None
        msg: Any = ""
        if isinstance(obj, dict):
            err = obj.get("error", obj)
            if isinstance(err, dict):
                msg = err.get("message") or err.get("detail") or err.get("msg") or ""
            elif isinstance(err, str):
                msg = err
            if not msg and isinstance(obj.get("detail"), (str, list)):
                msg = obj["detail"] if isinstance(obj["detail"], str) else json.dumps(obj["detail"])[:300]
            if not msg and isinstance(obj.get("message"), str):
                msg = obj["message"]
        elif body:
            msg = body[:200].decode("utf-8", errors="replace")
        msg = " ".join(str(msg).split())
        if len(msg) > 300:
            msg = msg[:297] + "..."
        return self.scrub(msg), obj

    def status_error(self, status: int, body: bytes, path: str, model: str | None, attempts: int) -> BackendError:
        """The error for an HTTP ``status`` >= 300 answered with ``body`` after ``attempts``."""
        msg, obj = self.detail(body)
        where = self.where
        if status in (401, 403):
            if not self._secret.value:
                return AuthenticationFailed(
                    f"The server at {where} needs an API key (HTTP {status}) and none was sent. "
                    "Name the environment variable that holds it, or store it in the system keyring, "
                    "in the connection settings.", status=status,
                )
            return AuthenticationFailed(
                f"The server at {where} refused the API key (HTTP {status}). Check that the key "
                "is right, has not expired, and may use "
                + (f"the model '{model}'." if model else "this server."), status=status,
            )
        if status == 404:
            code = obj.get("error", {}).get("code") if isinstance(obj, dict) and isinstance(obj.get("error"), dict) else None
            if model and (code == "model_not_found" or "model" in msg.lower()):
                return ModelNotFound(
                    f"The server at {where} does not know the model '{model}'"
                    + (f" ({msg})" if msg else "")
                    + ". Choose one of the models it lists (Test connection shows them).", status=404,
                )
            return EndpointNotFound(
                f"The server at {where} has no endpoint {self.base_url}{path} (HTTP 404). Check "
                "the base URL: OpenAI-compatible servers usually answer under /v1, e.g. "
                "http://127.0.0.1:8080/v1"
                + ("; this server may not offer chat completions" if path == "/chat/completions" else "")
                + ("; this server may offer only chat completions: switch to chat mode" if path == "/completions" else "")
                + ".", status=404,
            )
        if status == 429:
            return RateLimited(
                f"The server at {where} is rate-limiting requests (HTTP 429) and still was after "
                f"{attempts} attempt(s)" + (f": {msg}" if msg else "") + ". Wait a little and try again.",
                status=429,
            )
        if status >= 500:
            return ServerFailed(
                f"The server at {where} failed (HTTP {status}"
                + (f": {msg}" if msg else "")
                + f") on {attempts} attempt(s). Check the server's log; it may be overloaded or "
                "out of memory.", status=status,
            )
        return RequestRejected(
            f"The server at {where} rejected the request (HTTP {status})"
            + (f": {msg}" if msg else "") + ".", status=status,
        )

    # ---------------------------------------------------------------- answers
    def not_json(self, body: bytes, ctype: str, path: str) -> BadResponse:
        """An answer to ``path`` that is not JSON."""
        snippet = " ".join(body[:120].decode("utf-8", errors="replace").split())
        return BadResponse(
            f"The server at {self.where} answered {path} with something that is not JSON "
            f"({ctype or 'no content type'}: '{self.scrub(snippet)}'). Check that the base URL points "
            "at an OpenAI-compatible API (it usually ends in /v1)."
        )

    def stalled(self) -> ReadTimeout:
        """A stream that sent only keep-alive messages for ``progress_timeout`` seconds."""
        return ReadTimeout(
            f"The server at {self.where} kept the connection open but sent no token for "
            f"{self._timeouts.progress_timeout:g} s (only keep-alive messages). It may be stuck or overloaded; "
            "try again, or raise the read timeout in the connection settings."
        )

    def too_large(self, detail: str) -> BadResponse:
        """An answer (or a stream line) larger than we read."""
        return BadResponse(
            f"The server at {self.where} sent more than Samplescope reads ({detail}). It may not be "
            "an OpenAI-compatible server, or it ignored the request's limits."
        )

    @staticmethod
    def mid_stream(err: BackendError, tokens: int) -> BackendError:
        """``err`` raised after ``tokens`` Steps were yielded: its message says they are kept."""
        if tokens:
            err.args = (f"{err.args[0]} ({tokens} token(s) had arrived and are kept.)",)
        return err

    def cut_message(self, tokens: int, detail: str) -> str:
        """``Finished.message`` of a run whose stream was cut after ``tokens`` tokens."""
        return (
            f"The connection to {self.where} was cut after {tokens} token(s) ({detail}); "
            "the tokens that arrived are kept and the run is marked incomplete."
        )
