"""The typed records of the sampled-vs-ideal shift lab: what a run was asked, yields and found.

Owns, for the lab's two run kinds (the run store's kind of the run tells them apart):
- a concept-set run (kind "shift"): ``ShiftParams`` (the panel's knobs, ``RunKnobs``, plus the
  concepts and the sampler settings), one ``ConceptRecord`` per concept (A, I and S measured
  the same way, exact or sampled, with alpha, alpha_hat and whether it is kept) and the
  ``ShiftRunSummary`` (``app.labs.shift.stats.summarise`` over the kept concepts, with what was
  run);
- a glubbing sweep (kind "glub"): ``GlubParams`` (the knobs plus the sweep, ``GlubSweep``), one
  ``GlubRecord`` per synthetic concept (the shown average and ideal, the model's sample S) and
  the ``GlubSummary`` (the mean shift of S from the shown average per valence);
- the nested parts: ``Prompts`` (the three questions asked), ``ExactResult`` (an exact
  numeric-answer distribution as stored), ``SampledAnswer`` (one sampled answer, its number and
  its generation), ``Dropped`` (a concept left out of the statistics and why);
- ``RECORDS`` (``ShiftRecordTypes``; the registry names it): it reads a stored run with the
  types of the run's kind (``for_kind``). The kind is what the store keeps beside every run, so
  the dict forms need no ``kind`` key of their own and stay the shapes of before.

The dict forms (``to_dict``) are the shapes the lab wrote before records were typed
(2026-12-02), key for key, plus ``schema``: a stored run of that time reads as schema 1. As
then, a field only one mode has is written only in that mode (``A_exact`` ... in exact mode,
``A_answers`` / ``A_parsed`` ... in sampled mode), ``interrupted`` only when a Stop cut the
concept, and an answer's ``trace`` only when it has one (a server's answers have none).
Conventions: a number that was not measured or has no value is None in a ``float | None``
field (A, I or S that could not be parsed, alpha / alpha_hat of a dropped concept, the mean of
an exact distribution without numeric answers, the ideal of a control glub); the summary's
statistics that are undefined (a fraction over no concept, r over fewer than three) are NaN in
their ``float`` fields (stored as null, read back as NaN).

Any thread may use the values: every record here is frozen, made on the lab's worker (or the
CLI's main thread) and read on the GUI thread. No Qt.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from app.core.records import Record, RecordTypes
from app.labs.shift.concepts import Concept
from app.labs.shift.stats import ConceptResult, ShiftSummary
from backends.base import SamplerSettings

__all__ = ["QUESTIONS", "Prompts", "ExactResult", "SampledAnswer", "Dropped", "RunKnobs", "GlubSweep",
           "ShiftParams", "GlubParams", "ConceptRecord", "GlubRecord", "ShiftRunSummary", "GlubSummary",
           "ShiftRecordTypes", "GLUB_RECORDS", "RECORDS"]

#: The three questions asked about every concept: (key of the value, the template kind it is asked with).
QUESTIONS = (("A", "average"), ("I", "ideal"), ("S", "sample"))


def _values(obj: Any) -> dict[str, Any]:
    """The fields of a dataclass, not copied (``dataclasses.asdict`` would turn nested ones into dicts)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


# ============================================================================ nested parts

@dataclass(frozen=True)
class Prompts:
    """The three questions as asked (the rendered templates)."""

    average: str
    ideal: str
    sample: str


@dataclass(frozen=True)
class ExactResult:
    """An exact numeric-answer distribution as stored (``ExactDistribution.record``): ``values``
    ascending with their probabilities ``probs`` (summing to ``covered``), the mass that is
    ``not_number`` and the ``pruned`` mass, the tree ``nodes`` evaluated, ``seconds`` (rounded to
    ms), the run's ``min_mass``, ``mean`` over the numeric answers (None when there are none) and
    ``cancelled`` (a Stop cut the enumeration)."""

    values: tuple[float, ...]
    probs: tuple[float, ...]
    covered: float
    not_number: float
    pruned: float
    nodes: int
    seconds: float
    min_mass: float
    mean: float | None
    cancelled: bool = False


@dataclass(frozen=True)
class SampledAnswer:
    """One sampled answer: ``raw`` as the model wrote it, ``value`` the number read from it
    (``extract_number``; None with ``error`` saying why), ``bare`` the number under the exact
    method's rule (``bare_number``; comparable with the exact distribution) and ``trace``, the
    generation (``app.core.export.generation_record``, openable in the Workbench), None from a
    server."""

    raw: str
    value: float | None
    error: str | None
    bare: float | None
    trace: dict[str, Any] | None = None


@dataclass(frozen=True)
class Dropped:
    """A concept left out of the statistics, and why (``ConceptResult.reason``)."""

    concept_id: str
    reason: str


def _without_absent(out: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    """``out`` without the ``optional`` keys that are None and without the None ``trace`` of any
    answer: the keys the lab did not write before records were typed."""
    for key in optional:
        if out.get(key) is None:
            out.pop(key, None)
    for key in ("A_answers", "I_answers", "S_answers"):
        for answer in out.get(key) or ():
            if answer.get("trace") is None:
                answer.pop("trace", None)
    return out


# ============================================================================ parameters

@dataclass(frozen=True, kw_only=True)
class RunKnobs(Record):
    """The panel's knobs, shared by both run kinds: ``mode`` ("exact" or "sampled"), ``samples``
    N per question (sampled), the answers' ``temperature``, the exact method's ``min_mass``, the
    prompt ``style`` ("completion" or "chat"), the base ``seed``, ``limit`` (the first N concepts
    of the table; 0 = all) and the question ``templates`` ("kind/style" -> template)."""

    mode: str
    samples: int
    temperature: float
    min_mass: float
    style: str
    seed: int
    limit: int
    templates: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class GlubSweep:
    """The glubbing sweep's knobs: ``sweep`` "mean" (the shown values' mean takes each of
    ``means``, for each of ``valences``) or "ideal" (the grades peak at each of ``means``, the
    values' mean stays ``base_mean``; ``valences`` is then ("peaked",)), ``n_examples`` shown,
    ``shape`` "unimodal" or "bimodal"."""

    sweep: str
    means: tuple[float, ...]
    valences: tuple[str, ...]
    base_mean: float
    n_examples: int
    shape: str


@dataclass(frozen=True, kw_only=True)
class ShiftParams(RunKnobs):
    """What a concept-set run was asked to do: the knobs, the ``concepts`` run (in order) and the
    sampler ``settings`` of the answers (``SAMPLE_SETTINGS`` at the knobs' temperature)."""

    concepts: tuple[Concept, ...]
    settings: SamplerSettings

    @classmethod
    def of(cls, knobs: RunKnobs, concepts: tuple[Concept, ...] | list[Concept],
           settings: SamplerSettings) -> ShiftParams:
        return cls(**_values(knobs), concepts=tuple(concepts), settings=settings)


@dataclass(frozen=True, kw_only=True)
class GlubParams(RunKnobs):
    """What a glubbing sweep was asked to do: the knobs and the sweep (``GlubSweep``'s fields)."""

    sweep: str
    means: tuple[float, ...]
    valences: tuple[str, ...]
    base_mean: float
    n_examples: int
    shape: str

    @classmethod
    def of(cls, knobs: RunKnobs, sweep: GlubSweep) -> GlubParams:
        return cls(**_values(knobs), **_values(sweep))


# ============================================================================ records

@dataclass(frozen=True, kw_only=True)
class ConceptRecord(Record):
    """One concept of a concept-set run (``concept_record``), yielded as it is measured.

    The concept (``concept_id``, ``name``, ``domain``, ``unit``), the ``mode`` and the
    ``prompts``; per question (A average, I ideal, S sample) either ``*_exact`` (exact mode) or
    ``*_answers`` with ``*_parsed``, how many held a number (sampled mode). ``A``, ``I``, ``S``:
    the measured values (None: not parsed); ``alpha`` (None unless all three are known),
    ``alpha_hat`` (None unless kept), ``kept`` and ``reason`` (why not; None when kept), as
    ``app.labs.shift.stats.concept_result`` decides. ``seconds`` the concept took, ``index`` in
    the run, ``interrupted`` when a Stop cut it (it is then not counted).
    """

    concept_id: str
    name: str
    domain: str
    unit: str
    mode: str
    prompts: Prompts
    A_exact: ExactResult | None = None
    I_exact: ExactResult | None = None
    S_exact: ExactResult | None = None
    A_answers: tuple[SampledAnswer, ...] | None = None
    A_parsed: int | None = None
    I_answers: tuple[SampledAnswer, ...] | None = None
    I_parsed: int | None = None
    S_answers: tuple[SampledAnswer, ...] | None = None
    S_parsed: int | None = None
    A: float | None
    I: float | None  # noqa: E741 - the paper's names
    S: float | None
    alpha: float | None
    alpha_hat: float | None
    kept: bool
    reason: str | None
    seconds: float
    interrupted: bool = False
    index: int = 0

    _OPTIONAL: ClassVar[tuple[str, ...]] = ("A_exact", "I_exact", "S_exact", "A_answers", "A_parsed", "I_answers", "I_parsed", "S_answers",
                 "S_parsed")

    def to_dict(self) -> dict[str, Any]:
        out = _without_absent(super().to_dict(), self._OPTIONAL)
        if not self.interrupted:
            del out["interrupted"]
        return out

    def value(self, q: str) -> float | None:
        """The value of question ``q`` ("A", "I" or "S")."""
        return {"A": self.A, "I": self.I, "S": self.S}[q]

    def exact(self, q: str) -> ExactResult | None:
        """The exact distribution of question ``q`` ("A", "I" or "S"); None in sampled mode."""
        return {"A": self.A_exact, "I": self.I_exact, "S": self.S_exact}[q]

    def answers(self, q: str) -> tuple[SampledAnswer, ...]:
        """The sampled answers of question ``q`` ("A", "I" or "S"); () in exact mode."""
        return {"A": self.A_answers, "I": self.I_answers, "S": self.S_answers}[q] or ()

    def all_answers(self) -> Iterator[tuple[str, int, SampledAnswer]]:
        """(question, number in its question from 0, answer) of every sampled answer, A, I then S."""
        for q, _kind in QUESTIONS:
            for i, a in enumerate(self.answers(q)):
                yield q, i, a

    @property
    def counted(self) -> bool:
        """Kept and not cut by a Stop: the concept counts in the statistics."""
        return self.kept and not self.interrupted

    @property
    def offsets(self) -> tuple[float, float] | None:
        """(I - A, S - A) of a counted concept (its point in the across-concept scatter), else None."""
        if not self.counted or self.A is None or self.I is None or self.S is None:
            return None
        return self.I - self.A, self.S - self.A

    def result(self) -> ConceptResult:
        """The concept's ``ConceptResult`` (what ``summarise`` reads)."""
        return ConceptResult(self.concept_id, self.name, self.domain, self.A, self.I, self.S, self.alpha,
                             self.alpha_hat, self.kept, self.reason)


@dataclass(frozen=True, kw_only=True)
class GlubRecord(Record):
    """One synthetic concept of a glubbing sweep (``glub_record``).

    Its ``id`` and spec (``valence``, ``mean``, ``spread``, ``shape``, ``n_examples``, ``seed``,
    ``ideal_setting``: where a peaked valence's grades peak, else None), the shown ``average``
    and ``ideal`` (the mean of the values graded A or A+; None for the control), the ``mode``,
    ``S_exact`` (exact) or ``S_answers`` (sampled), the sample ``S`` (None: no number) and
    ``shift`` = S - average (None without S), ``index`` in the sweep.
    """

    id: str
    valence: str
    mean: float
    spread: float
    shape: str
    n_examples: int
    seed: int
    average: float
    ideal: float | None
    ideal_setting: float | None = None
    mode: str
    S_exact: ExactResult | None = None
    S_answers: tuple[SampledAnswer, ...] | None = None
    S: float | None
    shift: float | None
    index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _without_absent(super().to_dict(), ("S_exact", "S_answers"))


# ============================================================================ summaries

@dataclass(frozen=True, kw_only=True)
class ShiftRunSummary(Record):
    """What a concept-set run found (``app.labs.shift.stats.ShiftSummary``, each field as
    defined there; undefined numbers NaN) and what was run: ``cancelled`` (a Stop cut the set),
    ``mode``, ``model`` (the engine's name) and ``n_concepts`` asked for."""

    n_total: int
    n_used: int
    n_dropped: int
    dropped: tuple[Dropped, ...]
    n_positive: int
    fraction: float
    p_one_sided: float
    p_two_sided: float
    r: float
    slope: float
    intercept: float
    mean_alpha_hat: float
    median_alpha_hat: float
    cancelled: bool
    mode: str
    model: str
    n_concepts: int

    @classmethod
    def of(cls, s: ShiftSummary, *, cancelled: bool, mode: str, model: str, n_concepts: int) -> ShiftRunSummary:
        values = _values(s)
        values["dropped"] = tuple(Dropped(cid, why) for cid, why in s.dropped)
        return cls(**values, cancelled=cancelled, mode=mode, model=model, n_concepts=n_concepts)


@dataclass(frozen=True)
class GlubSummary(Record):
    """What a glubbing sweep found: per valence, the ``mean_shift`` of S from the shown average
    and ``n``, the conditions it is over (those with a number); ``cancelled``: a Stop cut it."""

    mean_shift: dict[str, float]
    n: dict[str, int]
    cancelled: bool


# ============================================================================ the lab's types

@dataclass(frozen=True)
class ShiftRecordTypes(RecordTypes):
    """The lab's record types: those of a concept-set run ("shift": ``params``, ``records``,
    ``summary``, what ``RecordTypes`` reads) and ``glub``, those of a glubbing sweep. A stored
    run is read with the types of its kind."""

    glub: RecordTypes = field(kw_only=True)

    def for_kind(self, kind: str) -> RecordTypes:
        """The types of a run of the store's kind ``kind`` ("shift" or "glub")."""
        return self.glub if kind == "glub" else self

    def read_experiment(self, exp: Any) -> Any:
        types = self.for_kind(exp.kind)
        return super().read_experiment(exp) if types is self else types.read_experiment(exp)


GLUB_RECORDS = RecordTypes(params=GlubParams, records=(GlubRecord,), summary=GlubSummary)
RECORDS = ShiftRecordTypes(params=ShiftParams, records=(ConceptRecord,), summary=ShiftRunSummary,
                           glub=GLUB_RECORDS)
