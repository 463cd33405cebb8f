"""The typed records of the Verbalized Sampling lab: what a run was asked, yields and found.

Owns:
- ``VSKnobs``: the panel's knobs (the prompt, the method, k, t, tau, the style, N, the answer
  budgets, the reference and the request template); ``VSParams``: what a lab run was asked to
  do, as the window stores it (the knobs plus ``mode``, "once" or "compare", and the sampler
  ``settings``);
- ``VSRunRecord``: one run of one arm (a Direct answer, or one answer of the VS method), yielded
  as it arrives, by a single run ("Run once", with "what the model does") and by a comparison
  alike; the lab has this one record type, so its dict form has no ``kind``;
- ``VSSummary``: what a comparison found (both arms' metrics and the VS / Direct ratios, with
  what was asked); a single run has no summary (None);
- the nested parts: ``StatedCandidate`` (one candidate as read, its stated and normalised
  probability), ``ModelDistribution`` ("what the model does": each candidate's probability as
  a continuation, with the KL from the stated one) and ``RunCounts`` (the runs counted per arm);
- ``RECORDS``, the lab's ``RecordTypes`` (the registry names it; a reopened run is read by it).

The dict forms (``to_dict``) are the shapes the lab wrote before records were typed
(2026-12-02), key for key, plus ``schema``: a stored run of that time reads as schema 1. As
then, ``interrupted`` is written only for a run a Stop cut, ``model`` only for a single run on
a local model with a readable answer (and its ``kl_stated_to_model`` only with stated
probabilities); the sampler settings are written as ``SamplerSettings.to_dict`` writes them.
Conventions: a metric or ratio that is undefined (NaN: the semantic diversity of fewer than two
samples, a ratio over a zero) is None in the summary, as the lab stored it; the metrics are
mappings from the metric's name (``app.labs.vs.engine.arm_metrics``: the reference metrics are
there only for a comparison against a reference).

Any thread may use the values: every record here is frozen, made on the lab's worker (or the
CLI's main thread) and read on the GUI thread. No Qt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from app.core.records import Record, RecordError, RecordTypes
from backends.base import SamplerSettings

__all__ = ["Arm", "Mode", "Metrics", "StatedCandidate", "ModelDistribution", "RunCounts", "VSKnobs", "VSParams",
           "VSRunRecord", "VSSummary", "RECORDS"]

#: the arm of a run: the Direct baseline or the VS method
Arm = Literal["direct", "vs"]
#: what a lab run did: one answer ("Run once") or a Direct-vs-method comparison
Mode = Literal["once", "compare"]
#: one arm's metrics (or the VS / Direct ratios) by the metric's name; None where undefined
Metrics = dict[str, float | None]

P = TypeVar("P", bound="VSParams")


# ============================================================================ nested parts

@dataclass(frozen=True)
class StatedCandidate:
    """One candidate of a readable answer: its ``text``, the probability ``stated`` in the answer
    (0..1 as read; None when it gave none or an unusable one) and ``probability``, the normalised
    one the draw and the charts use (the candidates' sum to 1)."""

    text: str
    stated: float | None
    probability: float


@dataclass(frozen=True)
class ModelDistribution:
    """"What the model does" (``app.labs.vs.engine.model_distribution``): each candidate's
    ``logprobs`` (nats) as a continuation of the Direct prompt, those renormalised over the
    candidates (``probabilities``) and, when the stated probabilities were given,
    ``kl_stated_to_model`` = KL(stated || model) in nats (None: not measured)."""

    logprobs: tuple[float, ...]
    probabilities: tuple[float, ...]
    kl_stated_to_model: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The dict form of before: without ``kl_stated_to_model`` when it was not measured."""
        out: dict[str, Any] = {"logprobs": list(self.logprobs), "probabilities": list(self.probabilities)}
        if self.kl_stated_to_model is not None:
            out["kl_stated_to_model"] = self.kl_stated_to_model
        return out


@dataclass(frozen=True)
class RunCounts:
    """The runs of each arm a comparison counted (a run cut by a Stop is not counted)."""

    direct: int
    vs: int


# ============================================================================ parameters

@dataclass(frozen=True, kw_only=True)
class VSKnobs(Record):
    """The panel's knobs: the ``prompt``, the ``method`` (``app.labs.vs.prompts.METHODS``), ``k``
    candidates, the tails ``t`` (None: off) and the post-filter ``tau`` (None: off), the prompt
    ``style`` ("completion" or "chat"), ``n`` runs per arm, ``max_tokens`` of a method's answer
    and ``direct_max_tokens`` of a Direct answer in a comparison, the ``reference`` ("us-states"
    or None), the request ``template`` (with ``{prompt}``), the multi-turn ``follow_up`` and
    whether the template was edited (``template_edited``)."""

    prompt: str
    method: str
    k: int
    t: float | None
    tau: float | None
    style: str
    n: int
    max_tokens: int
    direct_max_tokens: int
    reference: str | None
    template: str
    follow_up: str
    template_edited: bool


@dataclass(frozen=True, kw_only=True)
class VSParams(VSKnobs):
    """What a lab run was asked to do: the knobs, the ``mode`` ("once" or "compare") and the
    sampler ``settings`` (the Sampling panel's, with the method's ``max_tokens``; their seed is
    the base seed). ``settings`` is written and read as ``SamplerSettings.to_dict`` /
    ``from_dict`` do (a banned token's bias is written "-inf", which JSON can hold)."""

    mode: Mode
    settings: SamplerSettings

    @classmethod
    def of(cls, knobs: VSKnobs, mode: Mode, settings: SamplerSettings) -> VSParams:
        values = {f.name: getattr(knobs, f.name) for f in dataclasses.fields(knobs)}
        return cls(**values, mode=mode, settings=settings)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["settings"] = self.settings.to_dict()
        return out

    @classmethod
    def _from_dict(cls: type[P], data: Mapping[str, Any], path: str) -> P:
        d = dict(data)
        if isinstance(d.get("settings"), Mapping):
            try:
                d["settings"] = SamplerSettings.from_dict(dict(d["settings"]))
            except (TypeError, ValueError) as exc:
                raise RecordError(f"{path}.settings: {exc}") from None
        return super()._from_dict(d, path)


# ============================================================================ records

@dataclass(frozen=True, kw_only=True)
class VSRunRecord(Record):
    """One run of one arm (``VSOutcome.record``): ``arm`` ("direct" or "vs") and ``run`` (its
    number in the arm, from 0; always 0 for a single run), the ``method`` and the ``raw`` answer
    (every turn's), ``error`` when nothing could be read (a counted parse failure; None when
    read), the ``samples`` that count for the metrics (all candidates of a VS answer, the one
    answer of Direct), the ``candidates`` read with their probabilities, the parser's
    ``repairs`` and ``problems``, the answer's ``source_format`` (None when not parsed), the
    ``drawn`` candidate and its ``drawn_index`` (None: nothing to draw from), the indices tau
    ``kept``, ``notes`` (what tau removed, a cut answer), ``seconds`` (rounded to ms), the
    ``seed``, ``cut`` (a turn ended at the token limit), ``traces`` (each turn's generation,
    ``app.core.export.generation_record``, openable in the Workbench; none from a server),
    ``interrupted`` (a Stop cut it: reported, not counted) and ``model`` ("what the model does";
    a single run on a local model with a readable answer, else None)."""

    arm: Arm
    run: int
    method: str
    raw: str
    error: str | None
    samples: tuple[str, ...]
    candidates: tuple[StatedCandidate, ...]
    repairs: tuple[str, ...]
    problems: tuple[str, ...]
    source_format: str | None
    drawn: str | None
    drawn_index: int | None
    kept: tuple[int, ...]
    notes: tuple[str, ...]
    seconds: float
    seed: int
    cut: bool = False
    traces: tuple[dict[str, Any], ...] = ()
    interrupted: bool = False
    model: ModelDistribution | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.interrupted:
            del out["interrupted"]
        if self.model is None:
            del out["model"]
        else:
            out["model"] = self.model.to_dict()
        return out

    @property
    def counted(self) -> bool:
        """Not cut by a Stop: the run counts in the metrics and the progress."""
        return not self.interrupted

    @property
    def texts(self) -> tuple[str, ...]:
        """The candidates' texts, in the answer's order."""
        return tuple(c.text for c in self.candidates)

    @property
    def probabilities(self) -> tuple[float, ...]:
        """The candidates' normalised probabilities, in the answer's order."""
        return tuple(c.probability for c in self.candidates)


# ============================================================================ summary

@dataclass(frozen=True, kw_only=True)
class VSSummary(Record):
    """What a comparison found (``Comparison.summary``): what was asked (``prompt``, ``method``,
    ``k``, ``n``, ``t``, ``tau``, the ``reference``'s name or None), ``runs`` counted per arm,
    each arm's metrics (``direct``, ``vs``) and the VS / Direct ``ratios`` (every metric but the
    sample count and the parse-failure rate), ``cancelled`` (a Stop cut it), ``notes`` (a metric
    not measured, where it stopped) and the ``model``'s name."""

    prompt: str
    method: str
    k: int
    n: int
    t: float | None
    tau: float | None
    runs: RunCounts
    direct: Metrics
    vs: Metrics
    ratios: Metrics
    cancelled: bool
    notes: tuple[str, ...]
    reference: str | None
    model: str


RECORDS = RecordTypes(params=VSParams, records=(VSRunRecord,), summary=VSSummary)
