"""What every headless command shares: opening the model, printing records, exit codes, Ctrl+C.

Owns: ``UsageError`` and ``checking_input`` (bad input: exit code 2, said before any model is
opened), ``run_command`` (one place that turns a command's failures into a sentence on stderr
and its exit code: 2 bad input, 1 the model or server failed, 130 stopped by Ctrl+C),
``load_backend`` / ``remote_backend`` / ``open_model`` (through ``backends.open``, the one place
backends are built), ``chat_messages``, ``interruptible`` and the printers (``dumps``,
``print_record``, ``print_records``, ``print_summary``).

Runs on the main thread of the ``samplescope`` process; no Qt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading
from dataclasses import replace
from typing import Any, Callable, Iterator

from app.core.records import plain
from app.core.jsonsafe import json_safe
from app.core.streams import drain
from backends.base import BackendError, Finished, Step

from .args import load_settings_from_args

__all__ = ["UsageError", "checking_input", "run_command", "say", "load_backend", "remote_backend", "open_model",
           "chat_messages", "interruptible", "dumps", "print_record", "print_records", "print_summary", "traced",
           "print_items", "fmt", "is_remote", "safe_stdout"]


class UsageError(ValueError):
    """Bad command-line input: exit code 2."""


@contextlib.contextmanager
def checking_input() -> Iterator[None]:
    """Inside, a ``ValueError`` is the user's input at fault: it becomes a ``UsageError``."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def say(message: object) -> None:
    print(f"samplescope: {message}", file=sys.stderr)


def run_command(command: Callable[[argparse.Namespace], int], a: argparse.Namespace, *,
                value_error_exit: int = 1) -> int:
    """``command(a)`` with the exit codes every command shares: a second Ctrl+C 130 (the
    command's ``finally`` blocks close its backend on the way), ``UsageError`` 2, a
    ``BackendError`` 1, another ``ValueError`` ``value_error_exit`` (what the model or the
    backend refused: 1 for most commands, 2 where it means a flag the backend cannot take);
    each said in one line on stderr, never a traceback."""
    try:
        return command(a)
    except KeyboardInterrupt:  # a second Ctrl+C: what was printed stays printed
        cancel = getattr(a, "cancel", None)
        if cancel is not None:
            cancel.set()
        return 130
    except UsageError as exc:
        say(exc)
        return 2
    except BackendError as exc:
        say(exc)
        return 1
    except ValueError as exc:
        say(exc)
        return value_error_exit


def load_backend(a: argparse.Namespace, *, n_ctx: int | None = None):
    """The local backend of ``--model`` (default: the embedded model) and the load flags."""
    from backends.open import open_backend
    from backends.sources import LocalSource

    ls = load_settings_from_args(a)
    return open_backend(LocalSource(a.model or None, replace(ls, n_ctx=n_ctx or ls.n_ctx)))


def remote_backend(a: argparse.Namespace):
    """The OpenAI-compatible backend of ``--base-url`` (key from ``--api-key-env`` or the
    keyring entry ``--keyring-entry``; ``--connect-timeout``, ``--read-timeout``)."""
    from backends.open import open_backend
    from backends.sources import RemoteConfig

    config = RemoteConfig(a.base_url, a.model or "", api_key_env=a.api_key_env or "",
                          keyring_entry=getattr(a, "keyring_entry", None) or "",
                          connect_timeout=getattr(a, "connect_timeout", 5.0), read_timeout=a.read_timeout,
                          chat=bool(getattr(a, "chat", False)))
    with checking_input():
        config.validate()
    if a.api_key_env:
        from backends.secrets import resolve_api_key

        if not resolve_api_key(a.api_key_env, None):
            raise UsageError(f"the environment variable {a.api_key_env} is not set.")
    return open_backend(config)


def is_remote(a: argparse.Namespace) -> bool:
    return bool(getattr(a, "base_url", None))


def open_model(a: argparse.Namespace, *, probe: bool = False) -> tuple[Any, str]:
    """The backend the flags name (a server with ``--base-url``, else the local model) and the
    model's name for the summary; ``probe`` asks a server what it can do first."""
    if is_remote(a):
        backend = remote_backend(a)
        try:
            if probe:
                backend.probe()
        except BaseException:
            backend.close()
            raise
        return backend, backend.model or a.base_url
    backend = load_backend(a)
    return backend, backend.info.name


def chat_messages(a: argparse.Namespace) -> list[dict]:
    """The conversation of ``--system`` (if given) and ``--prompt`` as the user's message."""
    from backends.chat import conversation

    return conversation(a.prompt, getattr(a, "system", None))


@contextlib.contextmanager
def interruptible(enabled: bool = True) -> Iterator[threading.Event]:
    """A cancel event that the first Ctrl+C sets: the run stops at the next token, keeps what
    it produced and its summary is still printed (the command then exits with 130). A second
    Ctrl+C raises ``KeyboardInterrupt`` at once. Off the main thread (tests), or not
    ``enabled`` (a command that cannot stop early), it is a plain event and Ctrl+C stays
    Python's ``KeyboardInterrupt``."""
    cancel = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def on_sigint(signum, frame):  # noqa: ARG001
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nsamplescope: stopping after the current token (Ctrl+C again to quit at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(type(x))


def dumps(obj) -> str:
    """One JSON line; non-ASCII text is written as is when the terminal takes UTF-8, else escaped."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return json.dumps(obj, ensure_ascii=encoding != "utf8", allow_nan=False, default=_json_default)


def traced(obj, keep: bool):
    """``obj`` without its generations' step records (the keys ``trace`` and ``traces``, at any
    depth) unless ``keep`` (``--traces``)."""
    if keep:
        return obj
    if isinstance(obj, dict):
        return {k: traced(v, False) for k, v in obj.items() if k not in ("trace", "traces")}
    if isinstance(obj, list):
        return [traced(v, False) for v in obj]
    return obj


def print_record(record, a: argparse.Namespace) -> None:
    """One JSON line of a lab record (a typed ``Record`` as its ``to_dict``; non-finite numbers
    as null; step records with ``--traces``)."""
    print(dumps(json_safe(traced(plain(record), getattr(a, "traces", False)))), flush=True)


def print_summary(summary, a: argparse.Namespace) -> None:
    """The last JSON line, ``{"summary": ...}``."""
    print_record({"summary": plain(summary)}, a)


def print_records(gen, a: argparse.Namespace, print_row: Callable[[dict], None]) -> object:
    """Run a lab generator to its end, printing each record as a JSON line (``--json``) or with
    ``print_row``; return its summary."""
    return drain(gen, (lambda rec: print_record(rec, a)) if a.json else print_row)


def print_items(items, as_json: bool) -> Finished | None:
    """Print each ``Step`` (a JSON line, or its text) as it arrives; return the ``Finished``."""
    fin: Finished | None = None
    for item in items:
        if isinstance(item, Step):
            if as_json:
                print(dumps(json_safe(item.to_dict())), flush=True)
            else:
                print(item.token, end="", flush=True)
        else:
            fin = item
    return fin


def fmt(x, spec: str = ".3f") -> str:
    """A number for a table, "-" for none."""
    return "-" if x is None else format(x, spec)


def safe_stdout() -> None:
    """A terminal that cannot show a character gets a replacement instead of a traceback."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")
        except (AttributeError, ValueError):  # a captured stream (tests) or not a text stream
            pass
