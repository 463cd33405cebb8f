"""Server-sent events (SSE): turn the lines of a streamed HTTP body into events.

Owns: ``LineSplitter`` (bytes as they arrive to text lines, each at most a given size) and
``SSEEvent`` and ``iter_sse``, a small parser of the ``text/event-stream`` format as
OpenAI-compatible servers use it (``data:`` lines, an event per blank line, ``:`` comments used
as keep-alive pings, the ``data: [DONE]`` sentinel). It reads any iterable of lines, typically
``httpx.Response.iter_lines()`` (which already splits on CRLF, LF and CR and drops the line
endings). Pure Python, no Qt, no I/O of its own: it runs on whatever thread iterates it (the
model worker, for a remote generation).

Rules followed (WHATWG HTML, "Parsing an event stream"):

- a line starting with ``:`` is a comment and is ignored;
- ``field: value`` (one space after the colon is dropped), or ``field`` alone (empty value);
- ``data`` lines accumulate, joined with ``\\n``; ``event``, ``id`` and ``retry`` are kept;
  other fields are ignored;
- a blank line dispatches the event, unless no ``data`` line came (then nothing happens);
- at the end of the stream an event without its closing blank line is, by the standard,
  discarded. ``iter_sse(..., flush_incomplete=True)`` yields it anyway (marked
  ``complete=False``) for servers that close the connection right after their last line.
- a UTF-8 byte-order mark at the very start is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

__all__ = ["SSEEvent", "iter_sse", "DONE", "LineSplitter", "LineTooLong"]

#: The sentinel OpenAI-compatible servers send as the last event's data.
DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event. ``data`` is the joined ``data:`` lines (without the final
    newline). ``complete`` is False only for an event cut off by the end of the stream
    (see ``flush_incomplete``)."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None
    complete: bool = True

    @property
    def is_done(self) -> bool:
        """True for the ``[DONE]`` sentinel that ends an OpenAI-style stream."""
        return self.data.strip() == DONE


def iter_sse(lines: Iterable[str], *, flush_incomplete: bool = False) -> Iterator[SSEEvent]:
    """Yield the events found in ``lines`` (strings without line endings)."""
    data: list[str] = []
    event = ""
    last_id: str | None = None
    retry: int | None = None
    first = True
    for line in lines:
        if first:
            first = False
            if line.startswith("\ufeff"):
                line = line[1:]
        # tolerate a transport that leaves line endings on
        line = line.rstrip("\r\n")
        if line == "":
            if data:
                yield SSEEvent("\n".join(data), event or "message", last_id, retry)
            data = []
            event = ""
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id":
            if "\0" not in value:
                last_id = value
        elif field == "retry":
            if value.isdigit():
                retry = int(value)
        # any other field is ignored, as the standard says
    if data and flush_incomplete:
        yield SSEEvent("\n".join(data), event or "message", last_id, retry, complete=False)


class LineTooLong(ValueError):
    """A line of the stream is longer than the splitter's limit."""


class LineSplitter:
    """Turn the chunks of a byte stream into lines (split at LF, CR or CRLF, endings dropped,
    decoded as UTF-8 with U+FFFD for invalid bytes), as ``httpx.Response.iter_lines`` does, but
    with a limit: a line longer than ``max_line`` bytes raises ``LineTooLong`` as soon as that
    many bytes arrived without a line ending, so a hostile server cannot make us hold a 50 MB
    line in memory."""

    def __init__(self, max_line: int) -> None:
        self.max_line = int(max_line)
        self._buf = bytearray()
        self._cr = False  # the last chunk ended with CR: a LF at the start of the next belongs to it

    def feed(self, chunk: bytes) -> list[str]:
        data = bytes(chunk)
        if self._cr and data[:1] == b"\n":
            data = data[1:]
        self._cr = False
        lines: list[str] = []
        start = 0
        n = len(data)
        while start < n:
            lf = data.find(b"\n", start)
            cr = data.find(b"\r", start)
            ends = [i for i in (lf, cr) if i >= 0]
            if not ends:
                break
            end = min(ends)
            self._take(data[start:end])
            lines.append(self._line())
            if data[end:end + 1] == b"\r":
                if end + 1 < n and data[end + 1:end + 2] == b"\n":
                    end += 1
                elif end + 1 == n:
                    self._cr = True
            start = end + 1
        self._take(data[start:])
        return lines

    def flush(self) -> list[str]:
        """The last line when the stream ended without a line ending."""
        return [self._line()] if self._buf else []

    def _take(self, part: bytes) -> None:
        if len(self._buf) + len(part) > self.max_line:
            self._buf.clear()
            raise LineTooLong(f"a line of the stream is longer than {self.max_line:,} bytes")
        self._buf += part

    def _line(self) -> str:
        line = self._buf.decode("utf-8", errors="replace")
        self._buf.clear()
        return line
