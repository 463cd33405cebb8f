"""``samplescope shift``: sampled against ideal, headless.

Owns: ``cmd_shift``, printing A, I and S per concept as they arrive (JSON lines with ``--json``:
each ``ConceptRecord``'s dict form, then ``{"summary": ...}`` with the ``ShiftRunSummary``'s)
and then the set's statistics. Main thread; no Qt.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from .args import settings_from_args
from .scaffold import UsageError, checking_input, is_remote, load_backend, print_records, print_summary, remote_backend

if TYPE_CHECKING:
    from app.labs.shift.records import ConceptRecord, ShiftRunSummary

__all__ = ["cmd_shift"]


def _print_shift_record(rec: ConceptRecord) -> None:
    f = lambda x: "-" if x is None else f"{x:9.3g}"  # noqa: E731
    why = "kept" if rec.kept else rec.reason
    print(f"{rec.name[:44]:<44} {f(rec.A)} {f(rec.I)} {f(rec.S)} {f(rec.alpha_hat)}  {why}", flush=True)


def cmd_shift(a: argparse.Namespace) -> int:
    """``samplescope shift``: A, I and S per concept as they arrive, then the set's statistics."""
    from app.labs.shift.engine import LocalShiftEngine, RemoteShiftEngine, iter_shift
    from app.labs.shift.concepts import BUILTIN_CONCEPTS, concepts_from_csv

    remote = is_remote(a)
    mode = a.mode or ("sampled" if remote else "exact")
    style = a.style or ("chat" if a.chat else "completion")
    with checking_input():
        settings = settings_from_args(a)
        if not settings.stop:
            settings = replace(settings, stop=("\n",))
        settings.validate()
        if remote and mode == "exact":
            raise UsageError("--mode exact needs a local model (the next-token probabilities of every digit); "
                             "use --mode sampled with --base-url")
        if a.samples < 1 or a.limit < 0 or not 0 < a.min_mass < 1:
            raise UsageError("--samples must be at least 1, --limit at least 0 and --min-mass in (0, 1)")
        if a.concepts == "builtin":
            concepts = list(BUILTIN_CONCEPTS)
        else:
            try:
                concepts, problems = concepts_from_csv(a.concepts)
            except OSError as exc:
                raise UsageError(str(exc)) from None
            for problem in problems:
                print(f"samplescope: {a.concepts}: {problem}", file=sys.stderr)
        concepts = concepts[: a.limit] if a.limit else concepts
        if not concepts:
            raise UsageError("no concept to run")
    cancel = a.cancel
    engine = None
    try:
        if remote:
            engine = RemoteShiftEngine(remote_backend(a), max_parallel=a.parallel or 4)
        else:
            engine = LocalShiftEngine(load_backend(a), max_parallel=a.parallel or None)
        gen = iter_shift(engine, concepts, mode=mode, samples=a.samples, settings=settings, seed=a.seed,
                         style=style, min_mass=a.min_mass, cancel=cancel)
        if not a.json:
            print(f"{'concept':<44} {'A':>9} {'I':>9} {'S':>9} {'alpha_hat':>9}  kept / why dropped")
        summary = cast("ShiftRunSummary", print_records(gen, a, _print_shift_record))
    finally:
        if engine is not None:
            engine.close()
    if a.json:
        print_summary(summary, a)
    else:
        s, none = summary, lambda x: None if math.isnan(x) else x  # noqa: E731 - undefined printed as None
        print(f"\n{s.n_used} of {s.n_total} concepts used; alpha_hat > 0 for {s.n_positive}"
              + (f" ({100 * s.fraction:.1f}%)" if not math.isnan(s.fraction) else "")
              + f"; p = {none(s.p_one_sided)} one-sided, {none(s.p_two_sided)} two-sided; r = {none(s.r)}")
        for d in s.dropped:
            print(f"  dropped {d.concept_id}: {d.reason}")
    return 0
