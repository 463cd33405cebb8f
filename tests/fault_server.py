"""A hostile OpenAI-compatible server on 127.0.0.1, one fault per path, for the fault suite.

``fault_server`` (session fixture) starts one real HTTP server (stdlib ``ThreadingHTTPServer``
on a free port of 127.0.0.1, daemon threads) and gives ``url(mode)``: the base URL
``http://127.0.0.1:PORT/<mode>/v1`` of a server that misbehaves in that one way. ``/models``
answers on every mode. The modes (the paths of the fault suite):

- ``ok``: a well-behaved streaming server (a few tokens with logprobs), the control case;
- ``pings``: a completion stream that sends only ``: ping`` keep-alive comments, forever;
- ``pings-after-2``: two tokens, then only pings;
- ``no-limit``: ignores ``max_tokens`` and streams 3,000 tokens;
- ``huge-body``: a 50 MB JSON body (``stream`` is ignored);
- ``huge-line``: an event stream whose one ``data:`` line is 50 MB long;
- ``overflow``: logprobs of ``1e308`` (the chosen token and its alternatives);
- ``split-emoji``: an emoji sent as two tokens, each half of its surrogate pair (``\\ud83d``, ``\\ude00``);
- ``deep-json``: a body of arrays nested 100,000 deep;
- ``markup``: ``/models`` lists names with HTML in them, tokens carry HTML;
- ``slow``: a token every 50 ms, 2,000 tokens (for Stop and Ctrl+C);
- ``cut``: three tokens, then the connection closes without the final event.

The server writes until the client goes away; a write to a closed socket ends the handler.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass

import pytest

MARKUP = '<u>mk1</u><b>mk2</b><img src="/nonexistent/samplescope-probe.png">'
MODES = ("ok", "pings", "pings-after-2", "no-limit", "huge-body", "huge-line", "overflow", "split-emoji",
         "deep-json", "markup", "slow", "cut")
_BIG = 50 * 1024 * 1024
_SPACES = b" " * (1 << 20)
_XS = b"x" * (1 << 20)


def _end_chunk(finish: str) -> dict:
    return {"id": "x", "object": "text_completion", "model": "fault",
            "choices": [{"index": 0, "text": "", "finish_reason": finish, "logprobs": None}]}


def _token_chunk(text: str, logprob: float = -0.5, alts: list[tuple[str, float]] | None = None,
                 finish: str | None = None) -> dict:
    alts = alts if alts is not None else [(text, logprob), (" other", -2.0)]
    return {"id": "x", "object": "text_completion", "model": "fault",
            "choices": [{"index": 0, "text": text, "finish_reason": finish,
                         "logprobs": {"tokens": [text], "token_logprobs": [logprob],
                                      "top_logprobs": [{t: lp for t, lp in alts}], "text_offset": [0]}}]}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output clean
        pass

    # ------------------------------------------------------------------ plumbing
    def _mode(self) -> tuple[str, str]:
        parts = self.path.strip("/").split("/")
        mode = parts[0] if parts else ""
        rest = "/" + "/".join(parts[2:]) if len(parts) > 2 else "/"
        return mode, rest

    def _json(self, obj, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self._raw(data, "application/json", status)

    def _raw(self, data: bytes, ctype: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse_head(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _event(self, obj) -> None:
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        self.wfile.flush()

    def _done(self) -> None:
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    # ------------------------------------------------------------------ endpoints
    def do_GET(self):  # noqa: N802
        mode, rest = self._mode()
        if rest == "/models":
            name = f"{MARKUP} model" if mode == "markup" else f"fault-{mode}"
            self._json({"object": "list", "data": [{"id": name, "object": "model"}]})
        else:
            self._json({"error": {"message": "not found"}}, 404)

    def do_POST(self):  # noqa: N802
        mode, rest = self._mode()
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        try:
            self._answer(mode, rest, body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            pass  # the client went away: that is how most of these modes end

    def _answer(self, mode: str, rest: str, body: dict) -> None:
        if rest not in ("/completions", "/chat/completions"):
            self._json({"error": {"message": "not found"}}, 404)
            return
        if mode == "huge-body":  # written in 1 MiB pieces of one block, so the server holds little itself
            head = json.dumps(_token_chunk("a")).encode()[:-1]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(head) + _BIG + 1))
            self.end_headers()
            self.wfile.write(head)
            for _ in range(_BIG // len(_SPACES)):
                self.wfile.write(_SPACES)
            self.wfile.write(b"}")
            return
        if mode == "deep-json":
            self._raw(b"[" * 100_000 + b"]" * 100_000, "application/json")
            return
        self._sse_head()
        if mode == "ok":
            for t in ("Hello", ",", " world"):
                self._event(_token_chunk(t))
            self._event(_end_chunk("stop"))
            self._done()
        elif mode == "pings":
            while True:
                self.wfile.write(b": ping\n\n")
                self.wfile.flush()
                time.sleep(0.05)
        elif mode == "pings-after-2":
            for t in ("A", "B"):
                self._event(_token_chunk(t))
            while True:
                self.wfile.write(b": ping\n\n")
                self.wfile.flush()
                time.sleep(0.05)
        elif mode == "no-limit":
            for i in range(3000):
                self._event(_token_chunk(f" t{i}"))
            self._event(_end_chunk("stop"))
            self._done()
        elif mode == "huge-line":
            self.wfile.write(b"data: ")
            for _ in range(_BIG // len(_XS)):
                self.wfile.write(_XS)
            self.wfile.write(b"\n\n")
            self.wfile.flush()
        elif mode == "overflow":
            for t in ("big", " bigger"):
                self._event(_token_chunk(t, 1e308, [(t, 1e308), (" x", 5e307)]))
            self._event(_end_chunk("length"))
            self._done()
        elif mode == "split-emoji":
            # json.dumps writes each half of the pair as its own \\uXXXX escape
            for t in ("smile ", "\ud83d", "\ude00", "!"):
                self._event(_token_chunk(t))
            self._event(_end_chunk("stop"))
            self._done()
        elif mode == "markup":
            for t in (MARKUP, " and", " more"):
                self._event(_token_chunk(t, alts=[(t, -0.5), (MARKUP + "2", -1.5)]))
            self._event(_end_chunk("stop"))
            self._done()
        elif mode == "slow":
            for i in range(2000):
                self._event(_token_chunk(f" w{i}"))
                time.sleep(0.05)
            self._done()
        elif mode == "cut":
            for t in ("one", " two", " three"):
                self._event(_token_chunk(t))
            # no final event: the handler returns and the connection closes
        else:
            self._event({"error": {"message": f"unknown fault mode {mode!r}"}})


@dataclass(frozen=True)
class FaultServer:
    port: int

    def url(self, mode: str) -> str:
        assert mode in MODES, mode
        return f"http://127.0.0.1:{self.port}/{mode}/v1"


@pytest.fixture(scope="session")
def fault_server():
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="fault-server", daemon=True)
    thread.start()
    try:
        yield FaultServer(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
