"""Teacher forcing: a fixed token sequence evaluated once, and the logits read at chosen positions.

Owns ``forced_logits``: the next-token logits after each position from ``first`` on of a token
sequence, from one evaluation in a context of its own, in chunks of ``chunk`` positions (a
262,144-token vocabulary costs 1 MB of logits per position, so the chunk bounds the memory;
positions before ``first`` are evaluated without logits). The prompt X-ray
(``app.core.scoring``) reads every position; the what-if (``app.core.whatif``) recomputes a
run's steps with it when their logits are no longer kept. The logits equal one-at-a-time
decoding's within llama.cpp's batch noise (docs/ARCHITECTURE.md, "Batching noise").

``forced_layers`` is the same evaluation for the layer lens (``app.core.lens``): on a lens
context (``backends.layer_capture.LensContext``, the only kind with llama.cpp's ``cb_eval``
installed), each chosen position's every layer output beside its logits.

Runs on the calling thread (the CLI's main thread; the model worker in the window); no Qt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    import threading

    from backends.kinds import LocalEngine

__all__ = ["forced_logits", "forced_layers"]


def forced_logits(backend: LocalEngine, tokens: Sequence[int], first: int = 0, *, chunk: int = 32,
                  cancel: threading.Event | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(position, logits) for each position ``first`` .. len(tokens) - 2 of ``tokens`` on
    ``backend``'s model: the logits predict the token at position + 1. Each array is a view
    valid until the next one is yielded (copy it to keep it). Stops early when ``cancel`` is set."""
    toks = [int(t) for t in tokens]
    n = len(toks)
    if n < 2 or first > n - 2:
        return
    first = max(0, int(first))
    model = backend.model
    ctx = model.context(n_ctx=max(16, n + 1), n_batch=max(1, chunk), n_threads=backend.info.n_threads or None)
    try:
        if first > 0:  # what precedes the first wanted position, without logits
            ctx.decode([(toks[i], i, 0, False) for i in range(first)])
        for start in range(first, n - 1, chunk):
            if cancel is not None and cancel.is_set():
                return
            stop = min(n - 1, start + chunk)
            rows = ctx.decode([(toks[i], i, 0, True) for i in range(start, stop)])
            for j, i in enumerate(range(start, stop)):
                yield i, np.asarray(ctx.row(rows[j]))
    finally:
        ctx.close()


def forced_layers(backend: LocalEngine, tokens: Sequence[int], first: int = 0, *, prompt_len: int | None = None,
                  chunk: int = 1, cancel: threading.Event | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(position, layers, logits) for each position ``first`` .. len(tokens) - 2 of ``tokens``:
    ``layers`` (n_layers, n_embd) every layer's output at the position, ``logits`` the model's own
    there (predicting the token at position + 1); both views valid until the next item. One
    evaluation on a lens context of its own (closed at the end), scheduled as a generation is:
    the first ``prompt_len`` tokens in one batch, then ``chunk`` tokens per decode (1: exactly
    the run's batch shapes; see ``LensContext.evaluate``)."""
    from backends.layer_capture import LensContext

    toks = [int(t) for t in tokens]
    if len(toks) < 2 or first > len(toks) - 2:
        return
    lens = LensContext(backend.model, n_ctx=len(toks) + 1, n_threads=backend.info.n_threads or None)
    try:
        yield from lens.evaluate(toks, first, prompt_len=prompt_len, chunk=chunk, cancel=cancel)
    finally:
        lens.close()
