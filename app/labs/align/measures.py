"""The measures of the "P_token vs P_task" lab and its D-model / E-model verdict.

Owns: P_token at one decision step from the engine's sequence probabilities
(``p_token_over_outcomes``), the per-step and per-run measures (``StepMeasure``, ``RunMeasures``,
``measure_run``), the diversity of draws across runs (``diversity_across_runs``), the editable
``Thresholds`` and the ``verdict`` they give, and a JSON-safe ``summary`` dict of runs (the
shape of the first keys of the lab's ``AlignSummary`` in ``app.labs.align.records``, which the
engine builds from the same parts). The distances are ``app.core.metrics``' (natural logs, nats).
numpy + stdlib, no Qt; every function is pure and every result is frozen, so any thread may
call it (the lab's worker, the CLI, tests).

Conventions an engine or a GUI relies on:

- Arrays over outcomes are in the task's order (``TaskDistribution.outcomes``).
- P_token at a step is the probability of each outcome's token sequences, summed per outcome
  and renormalised over the outcomes; ``mass_outside`` is the next-token probability that went
  to anything else (other words, other casings, junk) and is reported, never hidden.
- A step whose outcomes got no probability at all has an *undefined* P_token: all NaN and
  ``mass_outside`` 1.0. It is not replaced by a uniform distribution (that would invent a
  P_token, and one that looks close to a flat task); its distances are NaN, it is left out of
  the means over steps and counted in ``RunMeasures.n_undefined_steps``.
- KL direction: ``kl_to_task`` = KL(P_token || P_task), with ``metrics.kl``'s smoothing of
  P_task only (eps = 1e-10). P_token is the first argument because renormalised next-token
  probabilities are often exactly 0 for some outcome (float underflow, truncated logits), which
  makes KL(P_task || P_token) infinite; P_task is stated by the user and rarely has zeros. The
  same direction is used for P_result. This direction is lenient with collapse onto a likely
  outcome (all mass on "2" of the extreme preset gives ln(1/0.7) = 0.357), so JS and TV are
  reported next to it and the verdict uses TV (bounded in [0, 1], symmetric).
- Variability is the TV distance between the P_token of consecutive steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any

import numpy as np

from app.labs.align.task import TaskDistribution
from app.core.jsonsafe import json_safe
from app.core.metrics import entropy, js, kl, total_variation

__all__ = [
    "p_token_over_outcomes",
    "StepMeasure",
    "RunMeasures",
    "measure_run",
    "verdict_from",
    "diversity_across_runs",
    "Thresholds",
    "Verdict",
    "VERDICT_LABELS",
    "verdict",
    "summary",
]

#: Tolerance on a step's total probability above 1 (float error of products and sums).
TOTAL_TOLERANCE = 1e-6

VERDICT_LABELS = ("E-model", "D-model", "between", "undetermined")


# --------------------------------------------------------------------------- one step


def p_token_over_outcomes(sequence_probs: Mapping[str, Sequence[float] | float],
                          outcomes: Sequence[str] | None = None) -> tuple[np.ndarray, float]:
    """P_token over the outcomes at one decision step, and the probability mass outside them.

    ``sequence_probs[outcome]`` holds the probabilities of that outcome's token sequences at this
    step (each already a product over its tokens, times P(end) for ``needs_end`` sequences); a
    bare number is one sequence. With s_o = sum of outcome o's values and total = sum_o s_o:
    p_o = s_o / total and ``mass_outside`` = 1 - total clamped to [0, 1]. The array follows
    ``outcomes`` (normally ``task.outcomes``; its keys must be exactly the mapping's) or else the
    mapping's order.

    If total is 0 the result is ``(all-NaN array, 1.0)``: P_token is undefined at this step (see
    the module docstring). ValueError for a negative, non-finite or > 1 value, for a total above
    1 + 1e-6 (the sequences overlap: some prefix was not scored with its end), or for keys that
    do not match ``outcomes``.
    """
    keys = list(sequence_probs.keys())
    if outcomes is not None:
        order = [str(o) for o in outcomes]
        missing = [o for o in order if o not in sequence_probs]
        extra = [k for k in keys if k not in order]
        if missing or extra:
            raise ValueError(f"the step's outcomes do not match the task: missing {missing}, unexpected {extra}")
        keys = order
    if not keys:
        raise ValueError("no outcomes at this step")
    sums: list[float] = []
    for key in keys:
        values = sequence_probs[key]
        vals = [float(values)] if isinstance(values, Real) else list(values)  # type: ignore[arg-type]
        for v in vals:
            x = float(v)
            if not math.isfinite(x) or x < 0 or x > 1 + TOTAL_TOLERANCE:
                raise ValueError(f"sequence probability {v!r} of {key!r} is not a probability")
        sums.append(math.fsum(float(v) for v in vals))
    total = math.fsum(sums)
    if total > 1 + TOTAL_TOLERANCE:
        raise ValueError(f"the outcomes' sequences have total probability {total:.6g} > 1: they overlap "
                         "(a sequence that is a prefix of another must be scored with its end)")
    if total <= 0:
        return np.full(len(keys), np.nan), 1.0
    return np.asarray(sums, dtype=np.float64) / total, min(max(1.0 - total, 0.0), 1.0)


@dataclass(frozen=True)
class StepMeasure:
    """The measures of one decision step (``index`` counts from 0).

    ``p_token`` is over the task's outcomes (all NaN when undefined, and then every distance,
    ``max_prob`` and ``entropy`` is NaN too). ``kl_to_task`` = KL(P_token || P_task),
    ``js_to_task`` and ``tv_to_task`` are the other distances to P_task; ``entropy`` is H(P_token)
    in nats; ``tv_to_previous`` is TV(P_token of the previous step, this one): None at step 0, NaN
    if either step is undefined. ``drawn`` is the outcome the model wrote here, if known.
    """

    index: int
    p_token: tuple[float, ...]
    mass_outside: float
    kl_to_task: float
    js_to_task: float
    tv_to_task: float
    max_prob: float
    entropy: float
    tv_to_previous: float | None
    drawn: str | None = None

    @property
    def defined(self) -> bool:
        return not math.isnan(self.p_token[0])

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class RunMeasures:
    """Everything measured on one run (one prompt, one list of draws).

    Means over steps (``mean_kl``, ``mean_js``, ``mean_tv``, ``mean_max_prob``,
    ``mean_entropy``) use the defined steps only; ``mean_variability`` is the mean of the defined
    ``tv_to_previous`` values; ``mean_mass_outside`` covers every step. A mean with nothing to
    average is NaN. ``p_result`` is the count of each outcome among ``draws`` / ``n_draws`` (task
    order; NaN when there are no draws), ``result_tv`` = TV(P_result, P_task) and ``result_kl`` =
    KL(P_result || P_task). ``problems`` are the parse problems passed in plus what
    ``measure_run`` noticed.
    """

    task: TaskDistribution
    steps: tuple[StepMeasure, ...]
    draws: tuple[str, ...]
    n_draws: int
    mean_kl: float
    mean_js: float
    mean_tv: float
    mean_variability: float
    mean_max_prob: float
    mean_entropy: float
    mean_mass_outside: float
    p_result: tuple[float, ...]
    result_tv: float
    result_kl: float
    problems: tuple[str, ...] = ()

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def n_undefined_steps(self) -> int:
        return sum(not s.defined for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN -> None); the task is given by name only (``summary`` holds it whole)."""
        return json_safe({
            "task": self.task.name, "n_steps": self.n_steps, "n_undefined_steps": self.n_undefined_steps,
            "n_draws": self.n_draws, "draws": list(self.draws),
            "mean_kl": self.mean_kl, "mean_js": self.mean_js, "mean_tv": self.mean_tv,
            "mean_variability": self.mean_variability, "mean_max_prob": self.mean_max_prob,
            "mean_entropy": self.mean_entropy, "mean_mass_outside": self.mean_mass_outside,
            "p_result": dict(zip(self.task.outcomes, self.p_result)),
            "result_tv": self.result_tv, "result_kl": self.result_kl,
            "problems": list(self.problems), "steps": [asdict(s) for s in self.steps],
        })


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return math.fsum(vals) / len(vals) if vals else math.nan


def _step_array(p: Any, n: int, index: int) -> np.ndarray | None:
    """The step's P_token normalised, or None when undefined (all NaN or all zero)."""
    a = np.asarray(p, dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"step {index}: P_token has shape {a.shape}, the task has {n} outcomes")
    if np.all(np.isnan(a)):
        return None
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"step {index}: P_token must be finite and >= 0 (or all NaN when undefined)")
    total = a.sum()
    return None if total <= 0 else a / total


def measure_run(task: TaskDistribution, steps: Sequence[tuple[Any, float]],
                draws: Sequence[str] | None = None, problems: Sequence[str] = ()) -> RunMeasures:
    """Measure one run: ``steps[i]`` is ``(P_token, mass_outside)`` of step i, as returned by
    ``p_token_over_outcomes`` (task order), and ``draws`` the parsed draws (``parse_draws``).

    ``draws[i]`` is taken as the outcome written at step i (matched by position; a problem is
    noted when the counts differ). A P_token that is all zero is treated like an all-NaN one
    (undefined). ValueError for a wrong shape, negative or partly-NaN P_token, a mass_outside
    outside [0, 1], or a draw that is not one of the task's outcomes.
    """
    n = len(task.outcomes)
    p_task = np.asarray(task.probabilities, dtype=np.float64)
    draws_t = tuple(draws) if draws is not None else ()
    for d in draws_t:
        if d not in task.outcomes:
            raise ValueError(f"draw {d!r} is not an outcome of the task (parse the output with parse_draws)")
    nan_p = (math.nan,) * n
    measures: list[StepMeasure] = []
    previous: np.ndarray | None = None
    for i, (p, mass) in enumerate(steps):
        mass = float(mass)
        if not 0.0 <= mass <= 1.0:
            raise ValueError(f"step {i}: mass_outside = {mass!r} is not in [0, 1]")
        a = _step_array(p, n, i)
        if i == 0:
            tv_prev: float | None = None
        elif a is None or previous is None:
            tv_prev = math.nan
        else:
            tv_prev = total_variation(previous, a)
        drawn = draws_t[i] if i < len(draws_t) else None
        if a is None:
            measures.append(StepMeasure(i, nan_p, mass, math.nan, math.nan, math.nan, math.nan, math.nan,
                                        tv_prev, drawn))
        else:
            measures.append(StepMeasure(i, tuple(float(x) for x in a), mass, kl(a, p_task), js(a, p_task),
                                        total_variation(a, p_task), float(a.max()), entropy(a), tv_prev, drawn))
        previous = a
    notes = list(problems)
    undefined = sum(not m.defined for m in measures)
    if undefined:
        notes.append(f"{undefined} of {len(measures)} steps put no probability on any outcome: P_token is "
                     "undefined there and left out of the means")
    if draws is not None and len(draws_t) != len(measures):
        notes.append(f"{len(draws_t)} draws parsed for {len(measures)} scored steps: draws are matched to "
                     "steps by position")
    if draws is not None and not draws_t:
        notes.append("no draws parsed: P_result is undefined")
    if draws_t:
        counts = np.array([draws_t.count(o) for o in task.outcomes], dtype=np.float64)
        p_result = counts / len(draws_t)
        result_tv, result_kl = total_variation(p_result, p_task), kl(p_result, p_task)
        p_result_t = tuple(float(x) for x in p_result)
    else:
        p_result_t, result_tv, result_kl = nan_p, math.nan, math.nan
    return RunMeasures(
        task=task, steps=tuple(measures), draws=draws_t, n_draws=len(draws_t),
        mean_kl=_mean([m.kl_to_task for m in measures]),
        mean_js=_mean([m.js_to_task for m in measures]),
        mean_tv=_mean([m.tv_to_task for m in measures]),
        mean_variability=_mean([m.tv_to_previous for m in measures if m.tv_to_previous is not None]),
        mean_max_prob=_mean([m.max_prob for m in measures]),
        mean_entropy=_mean([m.entropy for m in measures]),
        mean_mass_outside=_mean([m.mass_outside for m in measures]),
        p_result=p_result_t, result_tv=result_tv, result_kl=result_kl, problems=tuple(notes),
    )


# --------------------------------------------------------------------------- across runs


def diversity_across_runs(runs_draws: Sequence[Sequence[str]]) -> float:
    """Mean pairwise normalised Hamming distance between the runs' draw lists, in [0, 1].

    For runs a and b with L = min(len(a), len(b)): d(a, b) = #{i < L : a[i] != b[i]} / L, i.e.
    position by position over the shorter length (extra draws of the longer run are ignored).
    The result is the mean of d over all unordered pairs of runs; pairs with L = 0 (an empty
    run) are skipped. NaN for fewer than 2 runs or when no pair has a draw in common position.
    0 means every run wrote the same list; 1 means no two runs agree at any position.
    """
    runs = [list(r) for r in runs_draws]
    dists: list[float] = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            length = min(len(runs[i]), len(runs[j]))
            if length:
                dists.append(sum(runs[i][k] != runs[j][k] for k in range(length)) / length)
    return math.fsum(dists) / len(dists) if dists else math.nan


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class Thresholds:
    """Where the verdict puts its lines. Editable heuristics of Samplescope, not values from the paper.

    ``max_mean_tv``: the mean TV(P_token, P_task) at or below which a model counts as close. 0.25
    sits under what collapsing onto the mode scores on the extreme preset (TV 0.3; on the flat
    preset collapse onto 4 scores 0.8). ``max_variability``: the mean TV between consecutive
    steps at or below which it counts as steady (a model alternating between two certain
    outcomes scores 1). ``warn_mass_outside``: a mean mass outside the outcomes above this adds
    a warning to the reasons (P_token then rests on little probability); it does not change the
    label.
    """

    max_mean_tv: float = 0.25
    max_variability: float = 0.15
    warn_mass_outside: float = 0.5

    def __post_init__(self) -> None:
        for name in ("max_mean_tv", "max_variability", "warn_mass_outside"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"threshold {name} = {v!r} must be a number in [0, 1]")


@dataclass(frozen=True)
class Verdict:
    """``label``: "E-model" (close and steady), "D-model" (far and swinging), "between" (one of
    the two) or "undetermined" (a number is missing). ``reasons`` cite the numbers against the
    thresholds; ``mean_tv`` and ``variability`` are the numbers used (NaN when missing)."""

    label: str
    reasons: tuple[str, ...]
    mean_tv: float
    variability: float
    mean_mass_outside: float
    thresholds: Thresholds

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"label": self.label, "reasons": list(self.reasons), "mean_tv": self.mean_tv,
                           "variability": self.variability, "mean_mass_outside": self.mean_mass_outside,
                           "thresholds": asdict(self.thresholds)})


def _runs(measures: RunMeasures | Sequence[RunMeasures]) -> list[RunMeasures]:
    runs = [measures] if isinstance(measures, RunMeasures) else list(measures)
    if not runs:
        raise ValueError("no runs to judge")
    if any(r.task != runs[0].task for r in runs):
        raise ValueError("the runs do not share one task")
    return runs


def verdict(measures: RunMeasures | Sequence[RunMeasures], thresholds: Thresholds | None = None) -> Verdict:
    """The D/E label of one run, or of several runs pooled.

    Pooling: the mean TV is over every defined step of every run, the variability over every
    defined pair of consecutive steps (pairs never cross runs), the mass outside over all steps.
    E-model if mean TV <= ``max_mean_tv`` and variability <= ``max_variability``; D-model if both
    are above; "between" otherwise; "undetermined" if either is NaN (no defined step, or no two
    consecutive defined steps).
    """
    runs = _runs(measures)
    steps = [s for r in runs for s in r.steps]
    mean_tv = _mean([s.tv_to_task for s in steps])
    variability = _mean([s.tv_to_previous for s in steps if s.tv_to_previous is not None])
    mass = _mean([s.mass_outside for s in steps])
    return verdict_from(mean_tv, variability, mass, thresholds)


def verdict_from(mean_tv: float, variability: float, mass: float, thresholds: Thresholds | None = None) -> Verdict:
    """The D/E label from the pooled figures (``verdict`` computes them; the window recomputes
    the label from them when the user edits a threshold). NaN figures give "undetermined"."""
    th = thresholds if thresholds is not None else Thresholds()
    reasons: list[str] = []
    close = steady = None
    if math.isnan(mean_tv):
        reasons.append("no step put probability on the outcomes: the distance to P_task is unknown")
    else:
        close = mean_tv <= th.max_mean_tv
        reasons.append(f"mean TV(P_token, P_task) = {mean_tv:.3f} "
                       + (f"<= {th.max_mean_tv:g}: close to the task" if close
                          else f"> {th.max_mean_tv:g}: far from the task"))
    if math.isnan(variability):
        reasons.append("fewer than two consecutive defined steps: the variability is unknown")
    else:
        steady = variability <= th.max_variability
        reasons.append(f"variability (mean TV between consecutive steps) = {variability:.3f} "
                       + (f"<= {th.max_variability:g}: steady" if steady
                          else f"> {th.max_variability:g}: swinging"))
    if close is None or steady is None:
        label = "undetermined"
    elif close and steady:
        label = "E-model"
    elif not close and not steady:
        label = "D-model"
    else:
        label = "between"
    if not math.isnan(mass) and mass > th.warn_mass_outside:
        reasons.append(f"warning: on average {mass:.0%} of the next-token probability fell outside the "
                       f"outcomes' spellings (> {th.warn_mass_outside:.0%}); P_token is renormalised "
                       "from the rest")
    return Verdict(label, tuple(reasons), mean_tv, variability, mass, th)


def summary(measures: RunMeasures | Sequence[RunMeasures], thresholds: Thresholds | None = None) -> dict[str, Any]:
    """A JSON-safe dict (NaN and infinities -> None) of one or more runs of one task.

    Keys: ``task`` (``to_dict`` plus ``notes``), ``thresholds``, ``runs`` (each run's
    ``to_dict`` with its own ``verdict``), ``diversity_across_runs`` (None for one run) and
    ``verdict`` (all runs pooled, see ``verdict``).
    """
    th = thresholds if thresholds is not None else Thresholds()
    runs = _runs(measures)
    task = runs[0].task
    return json_safe({
        "task": {**task.to_dict(), "notes": list(task.notes)},
        "thresholds": asdict(th),
        "runs": [{**r.to_dict(), "verdict": verdict(r, th).to_dict()} for r in runs],
        "diversity_across_runs": diversity_across_runs([r.draws for r in runs]),
        "verdict": verdict(runs, th).to_dict(),
    })

