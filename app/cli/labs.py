"""The labs' headless commands: ``samplescope vs``, ``align`` and ``shift``.

Owns: ``cmd_vs`` (Direct against a Verbalized Sampling method), ``cmd_align`` (P_token against
P_task at every decision step) and ``cmd_shift`` (sampled against ideal), each printing one
record per result as it arrives (JSON lines with ``--json``) and then the summary; the labs'
engines are built on the backend that ``scaffold.open_model`` opened. Main thread; no Qt.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Sequence

from app.core.jsonsafe import json_safe

from .args import settings_from_args
from .scaffold import (UsageError, checking_input, fmt as _fmt, is_remote, load_backend, open_model, print_record,
                       print_records, print_summary, remote_backend)

__all__ = ["cmd_vs", "cmd_align", "cmd_shift"]


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

    def record(r: dict) -> None:
        if a.json:
            print_record(r, a)
        else:
            shown = r["drawn"] if r["drawn"] is not None else f"[{r['error']}]"
            print(f"{r['arm']:>6} #{r['run'] + 1}: {shown}", flush=True)

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
    summary = {**result.summary(), "model": engine.name, "settings": settings.to_dict()}
    if a.json:
        print_summary(summary, a)
    else:
        print(json.dumps(json_safe(summary), indent=2, ensure_ascii=False))
    return 0


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


def _print_align_record(r: dict, outcomes: Sequence[str]) -> None:
    if r["kind"] == "step":
        p = "  ".join(f"{o}:{_fmt(v, '.2f')}" for o, v in zip(outcomes, r["p_token"]))
        print(f"run {r['run'] + 1} step {r['step']:>3}  {p}  | outside {_fmt(r['mass_outside'], '.2f')}"
              f"  TV {_fmt(r['tv'])}  " + (f"drew {r['drawn']}" if r["drawn"] is not None else f"wrote {r['item']!r}"),
              flush=True)
    else:
        print(f"run {r['run'] + 1}: {r['n_draws']} draws in {r['n_steps']} steps ({r['finish_reason']}); "
              f"mean TV {_fmt(r['mean_tv'])}, variability {_fmt(r['mean_variability'])}, "
              f"P_result TV {_fmt(r['result_tv'])} -> {r['verdict']['label']}", flush=True)
        for problem in r["problems"]:
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
    result = {**result, "model": model_name}
    if a.json:
        print_summary(result, a)
    else:
        v = result["verdict"]
        print(f"\n{model_name} on {task.name!r}: {v['label']}")
        for reason in v["reasons"]:
            print(f"  {reason}")
        th = result["thresholds"]
        print(f"  thresholds: mean TV <= {th['max_mean_tv']:g}, variability <= {th['max_variability']:g}, "
              f"mass-outside warning above {th['warn_mass_outside']:g}")
        if result["diversity_across_runs"] is not None:
            print(f"  diversity across runs (Hamming): {result['diversity_across_runs']:.3f}")
    return 0


def _print_shift_record(rec: dict) -> None:
    f = lambda x: "-" if x is None else f"{x:9.3g}"  # noqa: E731
    why = "kept" if rec["kept"] else rec["reason"]
    print(f"{rec['name'][:44]:<44} {f(rec['A'])} {f(rec['I'])} {f(rec['S'])} {f(rec['alpha_hat'])}  {why}",
          flush=True)


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
        summary = print_records(gen, a, _print_shift_record)
    finally:
        if engine is not None:
            engine.close()
    if a.json:
        print_summary(summary, a)
    else:
        frac = summary["fraction"]
        print(f"\n{summary['n_used']} of {summary['n_total']} concepts used; alpha_hat > 0 for "
              f"{summary['n_positive']}" + (f" ({100 * frac:.1f}%)" if frac is not None else "")
              + f"; p = {summary['p_one_sided']} one-sided, {summary['p_two_sided']} two-sided; r = {summary['r']}")
        for d in summary["dropped"]:
            print(f"  dropped {d['concept_id']}: {d['reason']}")
    return 0
