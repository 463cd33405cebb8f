"""Helpers for the generators the labs and sessions are written as (records out, summary returned).

Owns: ``drain`` (run a generator to its end, handing each item to a callback, and return what
it returns) and ``mapped`` (a generator that yields ``fn(item)`` for each item and returns the
same value). Pure Python, no Qt; they run on the caller's thread.
"""

from __future__ import annotations

from typing import Any, Callable, Generator, Iterator, TypeVar

__all__ = ["drain", "mapped"]

T = TypeVar("T")
R = TypeVar("R")


def drain(gen: Iterator[T], on_item: Callable[[T], Any] | None = None) -> Any:
    """Run ``gen`` to its end, calling ``on_item`` with each yielded item; its return value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_item is not None:
            on_item(item)


def mapped(gen: Iterator[T], fn: Callable[[T], R]) -> Generator[R, None, Any]:
    """Yield ``fn(item)`` for each item of ``gen``; return what ``gen`` returns (use with
    ``yield from``)."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        yield fn(item)
