"""``samplescope vs``: Direct against a Verbalized Sampling method, headless.

Owns: ``cmd_vs``, printing one record per run as it arrives (JSON lines with ``--json``: each
``VSRunRecord``'s dict form, then ``{"summary": ...}`` with the ``VSSummary``'s and the sampler
settings) and then the comparison's summary; the lab's engine is built on the backend the
scaffold opened.
Main thread; no Qt.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from app.core.jsonsafe import json_safe
from app.core.records import plain

from .args import settings_from_args
from .scaffold import checking_input, is_remote, load_backend, print_record, print_summary, remote_backend

if TYPE_CHECKING:
    from app.labs.vs.records import VSRunRecord

__all__ = ["cmd_vs"]


def cmd_vs(a: argparse.Namespace) -> int:
    """``samplescope vs``: Direct against a VS method, one record per run as it arrives."""
    from app.labs.vs.engine import LocalVSEngine, RemoteVSEngine, compare

    settings = settings_from_args(a)
    with checking_input():
        settings.validate()
        if a.k < 1 or a.n < 1:
            raise ValueError("--k and --n must be at least 1")
    reference = None
    if a.reference == "us-states":
        from app.labs.vs.reference import load_us_state_reference

        reference = load_us_state_reference()
    cancel = a.cancel

    def record(r: VSRunRecord) -> None:
        if a.json:
            print_record(r, a)
        else:
            shown = r.drawn if r.drawn is not None else f"[{r.error}]"
            print(f"{r.arm:>6} #{r.run + 1}: {shown}", flush=True)

    engine = local = None
    try:
        if is_remote(a):
            backend = remote_backend(a)
            engine = RemoteVSEngine(backend, backend.probe(), max_parallel=a.parallel or 4)
        else:
            local = load_backend(a)
            engine = LocalVSEngine(local.model, n_ctx=a.n_ctx, n_threads=a.threads or None,
                                   max_parallel=a.parallel or None)
        result = compare(engine, a.prompt, a.method, k=a.k, n=a.n, t=a.t, tau=a.tau, settings=settings,
                         seed=a.seed, cancel=cancel, on_record=record, reference=reference,
                         reference_name=a.reference, style="chat" if a.chat_style else "completion",
                         direct_max_tokens=a.direct_max_tokens)
    finally:
        if engine is not None:
            engine.close()
        if local is not None:
            local.close()
    summary = {**plain(result.summary(engine.name)), "settings": settings.to_dict()}
    if a.json:
        print_summary(summary, a)
    else:
        print(json.dumps(json_safe(summary), indent=2, ensure_ascii=False))
    return 0
