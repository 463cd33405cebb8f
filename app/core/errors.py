"""Unexpected exceptions in words a user can act on, with the technical report kept aside.

Owns: ``describe_unexpected`` (an exception that is not one of the documented error types, a
bug, as a short message plus the traceback as "details"). The window shows the message and
keeps the details behind a button; the command line prints the message. Pure stdlib; any thread.
"""

from __future__ import annotations

__all__ = ["describe_unexpected"]

_MAX_TEXT = 200


def describe_unexpected(exc: BaseException, what: str = "The operation") -> str:
    """One or two sentences for the user: what stopped, the exception's type and (short) text,
    that the app goes on and keeps what was produced, and where the technical report is."""
    text = " ".join(str(exc).split())
    if len(text) > _MAX_TEXT:
        text = text[: _MAX_TEXT - 1] + "\u2026"
    name = type(exc).__name__
    return (f"{what} stopped because of an unexpected error inside Samplescope ({name}"
            + (f": {text}" if text else "") + "). The app keeps running and keeps what was already produced; "
            "Details has the technical report for a bug report.")
