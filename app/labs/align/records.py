"""The typed records of the "P_token vs P_task" lab: what a run was asked, yields and found.

Owns:
- ``AlignParams``: a lab run's parameters as the window stores them (the panel's knobs,
  ``AlignKnobs``, plus the task and the sampler settings);
- ``AlignStepRecord`` (kind "step"): P_token at one decision step and its distances to P_task;
- ``AlignRunRecord`` (kind "run"): one list of draws with its measures, verdict and generation;
- ``AlignSummary``: the runs together (``RunSummary`` each, the pooled verdict, what was asked);
- the nested parts they share: ``TaskSpec`` / ``SummaryTask`` (the task as stored), and from
  ``app.labs.align.measures`` the ``Thresholds``, the ``Verdict`` and the ``StepMeasure``;
- ``RECORDS``, the lab's ``RecordTypes`` (the registry names it; a reopened run is read by it).

The dict forms (``to_dict``) are the shapes the lab wrote before records were typed
(2026-12-02), key for key, plus ``schema``: a stored run of that time reads as schema 1.
Conventions: arrays over outcomes are in the task's order; a number that has no value is NaN
in a ``float`` field (stored as null, read back as NaN: P_token of an undefined step, a mean
over no steps) and None in a ``float | None`` field, where None means "not defined" (``tv_prev``
at step 0 or next to an undefined step, ``result_tv`` / ``result_kl`` without draws, the
diversity of a single run).

Any thread may use the values: every record here is frozen, made on the lab's worker (or the
CLI's main thread) and read on the GUI thread. No Qt.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from app.core.records import Record, RecordTypes
from app.labs.align.measures import RunMeasures, StepMeasure, Thresholds, Verdict
from app.labs.align.task import TaskDistribution, make_task
from backends.base import SamplerSettings

__all__ = ["AlignKnobs", "AlignParams", "AlignRunRecord", "AlignStepRecord", "AlignSummary", "RECORDS",
           "RunSummary", "SummaryTask", "TaskSpec", "defined"]


def defined(x: float | None) -> float | None:
    """``x``, or None when it has no value (None or NaN): the value of a ``float | None`` field."""
    return None if x is None or math.isnan(x) else float(x)


@dataclass(frozen=True)
class TaskSpec:
    """A task as the lab stores it: the ``--task FILE.json`` form (``TaskDistribution.to_dict``)."""

    name: str
    outcomes: dict[str, float]

    @classmethod
    def of(cls, task: TaskDistribution) -> TaskSpec:
        return cls(task.name, dict(zip(task.outcomes, task.probabilities)))

    def distribution(self) -> TaskDistribution:
        """The task again (``make_task``'s checks; TaskError if it no longer passes them)."""
        return make_task(self.name, self.outcomes)


@dataclass(frozen=True)
class SummaryTask(TaskSpec):
    """The task in a summary: ``TaskSpec`` plus the notes ``make_task`` wrote."""

    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, task: TaskDistribution) -> SummaryTask:
        return cls(task.name, dict(zip(task.outcomes, task.probabilities)), tuple(task.notes))


@dataclass(frozen=True)
class AlignKnobs:
    """The panel's knobs: draws N, runs R (run r uses seed + r), the prompt style ("completion"
    or "chat"), the sampler's temperature, the base seed, the prompt template and the verdict's
    thresholds."""

    draws: int
    runs: int
    style: str
    temperature: float
    seed: int
    template: str
    thresholds: Thresholds


@dataclass(frozen=True)
class AlignParams(Record):
    """What a lab run was asked to do: the knobs (``AlignKnobs``), the task and the sampler
    settings of the runs (their ``seed`` and ``max_tokens`` are replaced per run)."""

    draws: int
    runs: int
    style: str
    temperature: float
    seed: int
    template: str
    thresholds: Thresholds
    task: TaskSpec
    settings: SamplerSettings

    @classmethod
    def of(cls, knobs: AlignKnobs, task: TaskDistribution, settings: SamplerSettings) -> AlignParams:
        values = {f.name: getattr(knobs, f.name) for f in dataclasses.fields(knobs)}
        return cls(**values, task=TaskSpec.of(task), settings=settings)


@dataclass(frozen=True)
class AlignStepRecord(Record):
    """One decision step of run ``run`` (``step`` counts from 0), yielded once its item is written.

    ``position``: generated tokens before the step. ``p_token``: P_token over the outcomes (all
    NaN when undefined); ``p_outcomes``: the same before renormalising; ``mass_outside`` = 1 -
    sum(p_outcomes), ``unseen_mass`` the part a server did not show (0 locally); ``estimated``:
    from a server's top-N. ``item``: what the model wrote from here to the next delimiter;
    ``drawn``: that item as one outcome, else None. ``kl``, ``js``, ``tv``: distances of P_token
    to P_task (NaN when undefined); ``tv_prev``: TV to the previous step's P_token (None at step
    0 or next to an undefined step); ``max_prob``, ``entropy`` (nats) of P_token.
    """

    KIND = "step"

    run: int
    step: int
    position: int
    p_token: tuple[float, ...]
    p_outcomes: tuple[float, ...]
    mass_outside: float
    unseen_mass: float
    estimated: bool
    drawn: str | None
    item: str
    kl: float
    js: float
    tv: float
    tv_prev: float | None
    max_prob: float
    entropy: float

    @property
    def defined(self) -> bool:
        """Whether P_token is defined at this step (some probability fell on the outcomes)."""
        return bool(self.p_token) and not math.isnan(self.p_token[0])


@dataclass(frozen=True)
class AlignRunRecord(Record):
    """One run (run ``run``, seeded ``seed``), yielded after its steps.

    ``text`` is what the model wrote after ``prompt``; ``draws`` the outcomes parsed from it and
    ``problems`` everything noticed on the way. ``p_result``: each outcome's share of the draws
    (task order; NaN without draws), ``result_tv`` / ``result_kl`` its distances to P_task (None
    without draws). The means are over the run's defined steps (``mean_variability`` over its
    defined consecutive pairs, ``mean_mass_outside`` and ``mean_unseen_mass`` over all; NaN with
    nothing to average). ``finish_reason``: "draws", "eos", "stop", "length", "context",
    "cancelled" or "incomplete"; ``verdict``: this run's alone. ``trace``: the run's generation
    (``app.core.export.generation_record``) for the Workbench, None for a remote run (its dict
    form then has no ``trace`` key, as before).
    """

    KIND = "run"

    run: int
    seed: int
    style: str
    prompt: str
    text: str
    draws: tuple[str, ...]
    problems: tuple[str, ...]
    p_result: tuple[float, ...]
    result_tv: float | None
    result_kl: float | None
    n_steps: int
    n_undefined_steps: int
    n_draws: int
    mean_kl: float
    mean_js: float
    mean_tv: float
    mean_variability: float
    mean_max_prob: float
    mean_entropy: float
    mean_mass_outside: float
    mean_unseen_mass: float
    finish_reason: str
    cancelled: bool
    estimated: bool
    n_tokens: int
    seconds: float
    verdict: Verdict
    trace: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.trace is None:
            del out["trace"]
        return out


@dataclass(frozen=True)
class RunSummary:
    """One run in the summary (``RunMeasures.to_dict`` with the run's verdict): ``task`` is the
    task's name, ``p_result`` maps each outcome to its share of the draws, ``steps`` are the
    step measures (``tv_to_previous`` None where not defined)."""

    task: str
    n_steps: int
    n_undefined_steps: int
    n_draws: int
    draws: tuple[str, ...]
    mean_kl: float
    mean_js: float
    mean_tv: float
    mean_variability: float
    mean_max_prob: float
    mean_entropy: float
    mean_mass_outside: float
    p_result: dict[str, float]
    result_tv: float | None
    result_kl: float | None
    problems: tuple[str, ...]
    steps: tuple[StepMeasure, ...]
    verdict: Verdict

    @classmethod
    def of(cls, m: RunMeasures, verdict: Verdict) -> RunSummary:
        steps = tuple(dataclasses.replace(s, tv_to_previous=defined(s.tv_to_previous)) for s in m.steps)
        return cls(m.task.name, m.n_steps, m.n_undefined_steps, m.n_draws, tuple(m.draws), m.mean_kl, m.mean_js,
                   m.mean_tv, m.mean_variability, m.mean_max_prob, m.mean_entropy, m.mean_mass_outside,
                   dict(zip(m.task.outcomes, m.p_result)), defined(m.result_tv), defined(m.result_kl),
                   tuple(m.problems), steps, verdict)


@dataclass(frozen=True)
class AlignSummary(Record):
    """What the runs found: ``runs`` (each one's ``RunSummary``), ``diversity_across_runs`` (the
    mean pairwise Hamming distance of the runs' draws; None for fewer than two runs) and
    ``verdict`` (every run pooled), with what was asked: ``thresholds``, the task, ``n_draws``,
    ``style``, the base ``seed``, ``settings`` (the base seed and each run's token budget),
    ``runs_requested`` / ``runs_done``, ``cancelled`` (a Stop cut the set), ``estimated`` and
    ``backend`` ("local" or "remote")."""

    task: SummaryTask
    thresholds: Thresholds
    runs: tuple[RunSummary, ...]
    diversity_across_runs: float | None
    verdict: Verdict
    cancelled: bool
    runs_requested: int
    runs_done: int
    n_draws: int
    style: str
    seed: int
    estimated: bool
    backend: str
    settings: SamplerSettings


RECORDS = RecordTypes(params=AlignParams, records=(AlignStepRecord, AlignRunRecord), summary=AlignSummary)
