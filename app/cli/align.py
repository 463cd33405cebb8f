"""``samplescope align``: P_token against P_task at every decision step, headless.

Owns: ``cmd_align`` and its inputs (task, template, thresholds, settings), printing the lab's
typed records (``app.labs.align.records``) one per step and per run as they arrive (with
``--json`` as JSON lines of their dict forms) and then the verdict (with ``--json`` the
summary's dict form plus ``model``). Main thread; no Qt.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Sequence

from app.core.records import plain

from .args import settings_from_args
from .scaffold import checking_input, fmt, open_model, print_records, print_summary

if TYPE_CHECKING:
    from app.labs.align.records import AlignRunRecord, AlignStepRecord

__all__ = ["cmd_align"]


def _align_inputs(a: argparse.Namespace):
    """The task, template, thresholds and settings of ``align``; ValueError says what is wrong."""
    from app.labs.align.measures import Thresholds
    from app.labs.align.task import PRESETS, render_prompt, task_from_json

    task = task_from_json(a.task) if a.task else PRESETS[a.preset or "extreme"]
    template = None
    if a.template_file:
        try:
            with open(a.template_file, encoding="utf-8") as f:
                template = f.read()
        except OSError as exc:
            raise ValueError(f"cannot read the template file {a.template_file!r}: {exc.strerror or exc}") from exc
    elif a.template is not None:
        template = a.template
    style = a.style or ("chat" if a.chat else "completion")
    if isinstance(a.runs, bool) or a.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {a.runs}")
    if a.max_tokens < 0:
        raise ValueError(f"--max-tokens must be at least 1 (0 = automatic), got {a.max_tokens}")
    render_prompt(task, a.draws, style, template)  # checks --draws and the template
    d = Thresholds()
    thresholds = Thresholds(
        max_mean_tv=d.max_mean_tv if a.threshold_tv is None else a.threshold_tv,
        max_variability=d.max_variability if a.threshold_variability is None else a.threshold_variability,
        warn_mass_outside=d.warn_mass_outside if a.threshold_mass is None else a.threshold_mass)
    settings = settings_from_args(a).replace(max_tokens=a.max_tokens or 128)
    settings.validate()
    if a.seed + a.runs - 1 > 2**32 - 1:
        raise ValueError("--seed plus --runs goes past the largest seed (2**32 - 1)")
    return task, template, style, thresholds, settings


def _fmt(x: float | None, spec: str = ".3f") -> str:
    """A number for the table, "-" for none (None or NaN)."""
    return fmt(None if x is None or math.isnan(x) else x, spec)


def _print_align_record(r: AlignStepRecord | AlignRunRecord, outcomes: Sequence[str]) -> None:
    from app.labs.align.records import AlignStepRecord

    if isinstance(r, AlignStepRecord):
        p = "  ".join(f"{o}:{_fmt(v, '.2f')}" for o, v in zip(outcomes, r.p_token))
        print(f"run {r.run + 1} step {r.step:>3}  {p}  | outside {_fmt(r.mass_outside, '.2f')}"
              f"  TV {_fmt(r.tv)}  " + (f"drew {r.drawn}" if r.drawn is not None else f"wrote {r.item!r}"),
              flush=True)
    else:
        print(f"run {r.run + 1}: {r.n_draws} draws in {r.n_steps} steps ({r.finish_reason}); "
              f"mean TV {_fmt(r.mean_tv)}, variability {_fmt(r.mean_variability)}, "
              f"P_result TV {_fmt(r.result_tv)} -> {r.verdict.label}", flush=True)
        for problem in r.problems:
            print(f"  note: {problem}", flush=True)


def cmd_align(a: argparse.Namespace) -> int:
    """``samplescope align``: P_token at every decision step of R lists of N draws, then the verdict."""
    from app.labs.align.engine import iter_align

    with checking_input():
        task, template, style, thresholds, settings = _align_inputs(a)
    cancel = a.cancel
    backend, model_name = open_model(a, probe=True)
    try:
        gen = iter_align(backend, task, a.draws, a.runs, settings, a.seed, style=style, template=template,
                         max_parallel=a.parallel or 8,
                         cancel=cancel, max_tokens=a.max_tokens or None, thresholds=thresholds, system=a.system)
        result = print_records(gen, a, lambda rec: _print_align_record(rec, task.outcomes))
    finally:
        backend.close()
    if a.json:
        print_summary({**plain(result), "model": model_name}, a)
    else:
        v = result.verdict
        print(f"\n{model_name} on {task.name!r}: {v.label}")
        for reason in v.reasons:
            print(f"  {reason}")
        th = result.thresholds
        print(f"  thresholds: mean TV <= {th.max_mean_tv:g}, variability <= {th.max_variability:g}, "
              f"mass-outside warning above {th.warn_mass_outside:g}")
        if result.diversity_across_runs is not None:
            print(f"  diversity across runs (Hamming): {result.diversity_across_runs:.3f}")
    return 0
