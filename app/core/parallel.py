"""N-sample work at once: parallel sequences of one batch locally, concurrent requests remotely.

Owns: ``TICK`` (what a job yields after each token when it has nothing else to say),
``run_jobs`` (many jobs, at most ``max_parallel`` at a time, their items as they arrive, tagged
with the job's index) and ``default_parallel``.

A job is a function ``job(engine) -> generator``: it generates with the engine it is given (a
local ``Sequence`` of a shared context, or the remote backend), yields records (and ``TICK``
after each token it takes), and returns its result. The same job code runs alone, in
parallel on a local model, or as concurrent requests:

- local (``context`` given, a ``backends.llama_engine.LlamaContext`` with ``n_seq`` sequences):
  jobs run round-robin, one token each per round, each on its own sequence; the context decodes
  in batched mode and shares a common prompt (``share_prefixes``), so one round is ONE
  ``llama_decode`` for every live sequence and a prompt is evaluated once. The context is
  emptied first, so the same jobs always meet the same batches: their output is reproducible. When a job ends its
  sequence takes the next job. Each job carries its own seed, so which answers come out does
  not depend on how many run at once beyond llama.cpp's batch float noise (docs/BENCHMARKS.md);
  ``max_parallel=1`` is the exact single-sequence path.
- remote (``backend`` given): each job runs on a worker thread against the backend (whose HTTP
  client is shared and whose 429 back-off pauses every request), at most ``max_parallel`` in
  flight, so a vLLM or llama.cpp server batches them.

Threads: ``run_jobs`` runs on the caller's thread (a lab worker, the CLI's main thread); remote
jobs on its short-lived helper threads. ``cancel`` is honoured between tokens. No Qt.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Generator, Iterable, Iterator, TYPE_CHECKING

from backends.kinds import Backend

if TYPE_CHECKING:
    from backends.llama_engine import LlamaContext

__all__ = ["TICK", "run_jobs", "default_parallel", "JobResult"]

#: Yielded by a job after a token when it has no record to give (the round-robin's beat).
TICK = object()

Job = Callable[[Any], Iterator[Any]]


class JobResult:
    """The end of job ``index``: its return ``value``, or the ``error`` it raised."""

    __slots__ = ("index", "value", "error")

    def __init__(self, index: int, value: Any = None, error: BaseException | None = None) -> None:
        self.index = index
        self.value = value
        self.error = error



def _generator(items: Iterable) -> Generator:
    """``items`` as a generator (it can be closed): a job's generator as it is, any other
    iterable wrapped."""
    if isinstance(items, Generator):
        return items
    return (x for x in items)

def default_parallel(n_ctx: int = 2048, tokens_per_job: int = 512, threads: int | None = None) -> int:
    """A sensible number of sequences at once: 8 (llama.cpp's batched decode gains little past
    that on a few cores: 2.3x at 8, 2.5x at 16 on 2 cores), fewer when the context cannot hold
    that many jobs' tokens, at least 1."""
    cores = threads or (os.cpu_count() or 1)
    base = 8 if cores <= 8 else 16
    return max(1, min(base, int(n_ctx) // max(1, int(tokens_per_job))))


def run_jobs(jobs: Iterable[Job], *, context: LlamaContext | None = None, backend: Backend | None = None,
             max_parallel: int = 8,
             cancel: threading.Event | None = None) -> Iterator[tuple[int, Any]]:
    """Run ``jobs`` and yield ``(job index, item)`` for every item a job yields (``TICK`` is
    not passed on) and ``(job index, JobResult)`` when a job ends. Exactly one of ``context``
    (local) or ``backend`` (remote) is given. A job's exception ends that job only (its
    ``JobResult.error``); the others go on."""
    if (context is None) == (backend is None):
        raise ValueError("give run_jobs a local context or a remote backend")
    jobs = list(jobs)
    if context is not None:
        yield from _local(jobs, context, max(1, min(int(max_parallel), context.n_seq)), cancel)
    elif backend is not None:
        yield from _remote(jobs, backend, max(1, int(max_parallel)), cancel)


def _local(jobs: list[Job], context: LlamaContext, width: int, cancel: threading.Event | None) -> Iterator[tuple[int, Any]]:
    # from an empty cache: the same jobs then meet the same batches, so a seed repeats a run
    context.reset()
    batched, shared = context.batched, context.share_prefixes
    context.batched = width > 1
    context.share_prefixes = True
    free = list(range(width - 1, -1, -1))
    live: list[tuple[int, int, Generator]] = []  # (job index, sequence, generator)
    todo = list(enumerate(jobs))
    try:
        while todo or live:
            while todo and free:
                i, job = todo.pop(0)
                seq = free.pop()
                live.append((i, seq, _generator(job(context.sequence(seq)))))
            if cancel is not None and cancel.is_set():
                for i, seq, gen in live:  # each job keeps its partial result: let it see the cancel
                    yield from _finish(i, gen)
                    context.drop(seq)
                live.clear()
                for i, _job in todo:
                    yield i, JobResult(i, None, None)
                return
            still = []
            for i, seq, gen in live:
                try:
                    item = next(gen)
                except StopIteration as stop:
                    yield i, JobResult(i, stop.value)
                    context.drop(seq)
                    free.append(seq)
                    continue
                except Exception as exc:  # noqa: BLE001 - one failed job does not end the others
                    yield i, JobResult(i, None, exc)
                    context.drop(seq)
                    free.append(seq)
                    continue
                if item is not TICK:
                    yield i, item
                still.append((i, seq, gen))
            live = still
    finally:
        for _i, _seq, gen in live:
            gen.close()
        context.batched, context.share_prefixes = batched, shared


def _finish(i: int, gen: Iterator) -> Iterator[tuple[int, Any]]:
    """Run a job whose cancel is set to its end (its session ends at the next token)."""
    try:
        while True:
            item = next(gen)
            if item is not TICK:
                yield i, item
    except StopIteration as stop:
        yield i, JobResult(i, stop.value)
    except Exception as exc:  # noqa: BLE001
        yield i, JobResult(i, None, exc)


def _remote(jobs: list[Job], backend: Backend, width: int, cancel: threading.Event | None) -> Iterator[tuple[int, Any]]:
    out: queue.Queue = queue.Queue()
    done = object()

    def work(i: int, job: Job) -> None:
        try:
            if cancel is not None and cancel.is_set():
                out.put((i, JobResult(i, None, None)))
                return
            gen = iter(job(backend))
            while True:
                try:
                    item = next(gen)
                except StopIteration as stop:
                    out.put((i, JobResult(i, stop.value)))
                    return
                if item is not TICK:
                    out.put((i, item))
        except Exception as exc:  # noqa: BLE001
            out.put((i, JobResult(i, None, exc)))
        finally:
            out.put((i, done))

    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="samplescope-job") as pool:
        for i, job in enumerate(jobs):
            pool.submit(work, i, job)
        left = len(jobs)
        while left:
            i, item = out.get()
            if item is done:
                left -= 1
                continue
            yield i, item
