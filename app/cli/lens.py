"""``samplescope lens``: the layer lens of a generation, headless, one record per step.

Owns ``cmd_lens``: the run is generated with our own chain (``app.core.session.GenerationSession``
on the local model, the sampler flags of ``generate``), so it is exactly the run the Workbench
would make; then each step's lens is computed by teacher-forcing the run's tokens on a lens
context of its own (``app.core.lens.lens_run``) and printed as it is made: ``index``,
``token_id``, ``token``, ``commitment_layer`` (the first layer from which the chosen token stays
the top-1, null when the last layer's top-1 is another token) and ``layers`` (first to last:
``layer``, ``top`` [{id, token, p}], ``p_chosen``, ``rank_chosen``, ``entropy`` in nats), then
``{"summary": ...}`` with the run's text, the self-check's measured difference, the output
head and the times. Without ``--json``: one line per step (the chosen token, its commitment
layer and a bar of its probability at each layer). A server (``--base-url``) is refused with
the reason: it gives no layer outputs. Main thread; no Qt.
"""

from __future__ import annotations

import argparse
import sys
import time

from backends.base import Step

from .args import settings_from_args
from .scaffold import UsageError, checking_input, dumps, is_remote, load_backend

__all__ = ["cmd_lens"]

_BARS = " .:-=+*#%@"


def _bar(ps) -> str:
    """One character per layer for probabilities 0..1."""
    return "".join(_BARS[min(len(_BARS) - 1, int(p * (len(_BARS) - 1) + 0.5))] for p in ps)


def cmd_lens(a: argparse.Namespace) -> int:
    from app.core.jsonsafe import json_safe
    from app.core.lens import lens_run
    from app.core.session import GenerationSession
    from backends.base import Capabilities
    from backends.output_head import format_bytes, head_spec

    if not 1 <= a.top <= 50:
        raise UsageError(f"--top {a.top} is outside 1 .. 50")
    if is_remote(a):
        raise UsageError(f"the layer lens {Capabilities().why_not('layer_lens')} (leave out --base-url).")
    settings = settings_from_args(a)
    with checking_input():
        settings.validate()
    backend = load_backend(a)
    try:
        spec = head_spec(backend.model.path)
        print(f"samplescope: the lens loads {backend.info.name}'s output head once: {spec.describe()}",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        session = GenerationSession(backend, a.prompt, settings)
        steps = [x for x in session.run(a.cancel) if isinstance(x, Step)]
        gen_s = time.perf_counter() - t0
        checks = []
        t1 = time.perf_counter()
        n = 0
        for rec in lens_run(backend, session.prompt_tokens, [int(s.token_id) for s in steps if s.token_id is not None],
                            top_n=a.top, cancel=a.cancel, on_check=checks.append):
            n += 1
            if a.json:
                print(dumps(json_safe(rec.to_dict())), flush=True)
            else:
                c = "-" if rec.commitment_layer is None else str(rec.commitment_layer)
                last = rec.layers[-1]
                print(f"{rec.index:>4} {rec.token!r:<16} commits at layer {c:>3}  p by layer [{_bar(rec.p_chosen)}] "
                      f"last {last.p_chosen:.2f}", flush=True)
        lens_s = time.perf_counter() - t1
    finally:
        backend.close()
    fin = session.finished
    summary = {
        "text": fin.text if fin else session.text, "n_tokens": len(steps), "n_lens": n,
        "n_layers": backend.info.n_layers, "finish_reason": fin.reason if fin else "cancelled",
        "model": backend.info.name, "model_path": backend.info.path, "settings": settings.to_dict(),
        "head": spec.describe(), "head_memory_bytes": spec.memory_bytes,
        "check": checks[0].to_dict() if checks else None,
        "generation_seconds": round(gen_s, 3), "lens_seconds": round(lens_s, 3),
    }
    if a.json:
        print(dumps(json_safe({"summary": summary})))
    else:
        check = checks[0].describe() if checks else "no step"
        print(f"\n[{n} steps, {backend.info.n_layers} layers; lens {lens_s:.1f} s; {check}; output head "
              f"{format_bytes(spec.memory_bytes)}]", file=sys.stderr)
    return 130 if a.cancel is not None and a.cancel.is_set() else 0
