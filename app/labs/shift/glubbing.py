"""Synthetic concepts for the shift lab: "glubbing", a made-up hobby with a made-up ideal.

Owns ``GlubSpec`` (what to generate), ``make_glub`` (spec -> a frozen ``GlubConcept`` with the
shown values, their grades, both prompts, the average and the ideal) and ``sweep`` (one spec per
value of one parameter). Because the hobby is invented, the model knows nothing about it except the
prompt: the prompt states a valence, lists ``n_examples`` people with their weekly hours and a grade
from D- to A+, then asks for the first number of hours that comes to mind. If the theory holds, a
positive valence pulls the sample above the shown average, a negative one below it, and the
control leaves it at the average.

Definitions (each tested in ``tests/core/test_glubbing.py``):

- Values: ``n_examples`` draws from the stated distribution, rounded to the nearest whole number
  (rounding, not flooring, so the mean is not biased down by 0.5) and kept only when >= 0 (a
  negative draw is drawn again, i.e. the normal is truncated at zero; with the default mean 45 and
  spread 15 that is 0.1% of draws). "unimodal": Normal(mean, spread). "bimodal": an equal mixture
  of Normal(mean - 1.5 spread, spread / 2) and Normal(mean + 1.5 spread, spread / 2), so the two
  modes are 3 spreads apart, the dip sits at ``mean`` and the overall mean is still ``mean``.
  The same seed gives the same values whatever the valence, so valences differ only in grading.
- Grades (``GRADES``, 12 of them): the range [min, max] of the shown values is cut into 12 equal
  bins (bin = floor(12 (v - min) / (max - min)), the maximum goes into the top bin).
  positive: grade index = bin (more is better); negative: 11 - bin (less is better); control: the
  positive grades shuffled across people with a seeded generator (same grade counts, no relation
  to the value); peaked: the same 12-bin cut applied to the distance |v - ideal| between its min
  and max, grade index = 11 - bin, so the values nearest ``ideal`` get A+. When every value is the
  same there is nothing to grade and every value gets "C".
- ``average``: the mean of the shown values. ``ideal``: the mean of the shown values graded A or
  A+ (grade index >= 10); None for the control (no ideal). For positive that is the top of the
  shown range, for negative the bottom, for peaked the values around ``GlubSpec.ideal``.
- Sweeping "mean" moves the whole value distribution (e.g. 45, 145, 345: does the shift scale
  with the numbers?). Sweeping "ideal" uses the fourth valence, "peaked": the grading peak is moved
  to each given value while the values stay the same (does the sample follow the ideal?). The
  peaked valence sentence says only that there is a healthiest amount, never the number.

Pure numpy + stdlib, no Qt; pure functions of frozen specs, so any thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

__all__ = ["GRADES", "VALENCES", "SHAPES", "GlubSpec", "GlubConcept", "make_glub", "sweep", "grade_values"]

GRADES = ("D-", "D", "D+", "C-", "C", "C+", "B-", "B", "B+", "A-", "A", "A+")
VALENCES = ("positive", "negative", "control", "peaked")
SHAPES = ("unimodal", "bimodal")
#: Grade index from which a value counts towards ``GlubConcept.ideal`` ("A" and "A+").
IDEAL_FROM_GRADE = GRADES.index("A")
#: Bimodal: the modes sit at mean -/+ BIMODAL_OFFSET * spread, each with sd BIMODAL_SD * spread.
BIMODAL_OFFSET = 1.5
BIMODAL_SD = 0.5

_VALENCE_SENTENCES = {
    "positive": ("{Activity} is a hobby that is good for your health: the more hours people spend {activity}, "
                 "the healthier they tend to be."),
    "negative": ("{Activity} is a hobby that is bad for your health: the more hours people spend {activity}, "
                 "the less healthy they tend to be."),
    "control": "{Activity} is a hobby that some people take up in their free time.",
    "peaked": ("{Activity} affects your health, and there is a healthiest amount of it: doing much less or much "
               "more than that amount is worse for you."),
}


@dataclass(frozen=True)
class GlubSpec:
    """What ``make_glub`` generates (see the module docstring for every definition).

    ``valence``: "positive" | "negative" | "control" | "peaked" (grading peak at ``ideal``; the
    other valences need ``ideal`` None). ``mean`` and ``spread`` (sd, >= 0) of the value
    distribution, ``shape`` "unimodal" | "bimodal", ``n_examples`` people shown, ``seed`` of the
    generator, ``activity`` the hobby's name, ``unit`` and ``period`` of the amounts.
    """

    valence: str = "positive"
    mean: float = 45.0
    spread: float = 15.0
    shape: str = "unimodal"
    n_examples: int = 100
    seed: int = 0
    activity: str = "glubbing"
    unit: str = "hours"
    period: str = "per week"
    ideal: float | None = None

    def __post_init__(self) -> None:
        if self.valence not in VALENCES:
            raise ValueError(f"unknown valence {self.valence!r}; expected one of {', '.join(VALENCES)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {', '.join(SHAPES)}")
        if not (math.isfinite(self.mean) and self.mean >= 0):
            raise ValueError(f"mean must be a finite number >= 0, got {self.mean}")
        if not (math.isfinite(self.spread) and self.spread >= 0):
            raise ValueError(f"spread must be a finite number >= 0, got {self.spread}")
        if int(self.n_examples) != self.n_examples or self.n_examples < 1:
            raise ValueError(f"n_examples must be a whole number >= 1, got {self.n_examples}")
        if (self.valence == "peaked") != (self.ideal is not None):
            raise ValueError("the 'peaked' valence needs an ideal value, and only it takes one")
        if self.ideal is not None and not math.isfinite(self.ideal):
            raise ValueError(f"ideal must be a finite number, got {self.ideal}")
        if not self.activity.strip() or not self.unit.strip():
            raise ValueError("activity and unit must not be empty")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class GlubConcept:
    """One generated synthetic concept.

    ``values`` (whole numbers >= 0) and ``grades`` (one of ``GRADES`` per value) in the order shown;
    ``prompt_completion`` ends where the number should begin; ``prompt_chat`` is one user message
    (``messages`` wraps it); ``average`` is the mean of ``values``; ``ideal`` the mean of the values
    graded A or A+ (None for the control). ``id`` and ``name`` identify it in a ``ConceptResult``.
    """

    spec: GlubSpec
    values: tuple[int, ...]
    grades: tuple[str, ...]
    prompt_completion: str
    prompt_chat: str
    average: float
    ideal: float | None

    @property
    def id(self) -> str:
        s = self.spec
        peak = f"-i{s.ideal:g}" if s.ideal is not None else ""
        return f"glub-{s.valence}{peak}-{s.shape}-m{s.mean:g}-s{s.spread:g}-n{s.n_examples}-seed{s.seed}"

    @property
    def name(self) -> str:
        s = self.spec
        return f"{s.unit} of {s.activity} {s.period} ({s.valence}, {s.shape}, mean {s.mean:g})"

    @property
    def messages(self) -> tuple[dict[str, str], ...]:
        return ({"role": "user", "content": self.prompt_chat},)

    @property
    def grade_indices(self) -> tuple[int, ...]:
        return tuple(GRADES.index(g) for g in self.grades)


def _draw_values(spec: GlubSpec) -> np.ndarray:
    rng = np.random.default_rng([spec.seed, 0])
    n = int(spec.n_examples)
    out = np.empty(0, dtype=np.int64)
    while out.size < n:
        need = n - out.size
        m = max(need, 16)
        if spec.shape == "unimodal":
            x = rng.normal(spec.mean, spec.spread, m)
        else:
            side = rng.integers(0, 2, m) * 2 - 1
            x = rng.normal(spec.mean + side * BIMODAL_OFFSET * spec.spread, BIMODAL_SD * spec.spread)
        r = np.rint(x).astype(np.int64)
        out = np.concatenate([out, r[r >= 0][:need]])
    return out


def _bins(x: np.ndarray) -> np.ndarray | None:
    """12 equal bins between min(x) and max(x) (max in the top bin); None when x is constant."""
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return None
    return np.minimum((12 * (x - lo) / (hi - lo)).astype(np.int64), 11)


def grade_values(values: Iterable[int], valence: str, *, ideal: float | None = None, seed: int = 0) -> list[int]:
    """Grade index (0 = D- .. 11 = A+) of every value under ``valence`` (module docstring)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return []
    if valence == "peaked":
        if ideal is None:
            raise ValueError("the 'peaked' valence needs an ideal value")
        b = _bins(np.abs(v - ideal))
        return [4] * v.size if b is None else (11 - b).tolist()
    b = _bins(v)
    if b is None:
        return [4] * v.size
    if valence == "positive":
        return b.tolist()
    if valence == "negative":
        return (11 - b).tolist()
    if valence == "control":
        return np.random.default_rng([seed, 1]).permutation(b).tolist()
    raise ValueError(f"unknown valence {valence!r}; expected one of {', '.join(VALENCES)}")


def _prompts(spec: GlubSpec, values: np.ndarray, grades: list[str]) -> tuple[str, str]:
    activity = spec.activity.strip()
    fill = {"activity": activity, "Activity": activity[:1].upper() + activity[1:]}
    valence = _VALENCE_SENTENCES[spec.valence].format(**fill)
    intro = (f"A health survey asked {len(values)} people how many {spec.unit} they spend {activity} "
             f"{spec.period}. Each amount got a health grade from D- (worst) to A+ (best).")
    lines = [f"Person {i}: {v} {spec.unit} of {activity} {spec.period}, grade {g}"
             for i, (v, g) in enumerate(zip(values.tolist(), grades), start=1)]
    question = (f"Think of the number of {spec.unit} a person spends {activity} {spec.period}. "
                f"What is the first number of {spec.unit} that comes to mind?")
    body = "\n".join([valence, "", intro, *lines, ""])
    completion = f"{body}\nQ: {question}\nA: The first number that comes to mind is"
    chat = f"{body}\n{question} Answer with a number only."
    return completion, chat


def make_glub(spec: GlubSpec) -> GlubConcept:
    """Generate the synthetic concept described by ``spec`` (deterministic for a given spec)."""
    values = _draw_values(spec)
    idx = grade_values(values, spec.valence, ideal=spec.ideal, seed=spec.seed)
    grades = [GRADES[i] for i in idx]
    completion, chat = _prompts(spec, values, grades)
    top = [int(v) for v, i in zip(values.tolist(), idx) if i >= IDEAL_FROM_GRADE]
    ideal = None if spec.valence == "control" or not top else float(np.mean(top))
    return GlubConcept(
        spec=spec,
        values=tuple(int(v) for v in values.tolist()),
        grades=tuple(grades),
        prompt_completion=completion,
        prompt_chat=chat,
        average=float(values.mean()),
        ideal=ideal,
    )


def sweep(param: str, values: Iterable[Any], base: GlubSpec | None = None) -> list[GlubSpec]:
    """One spec per value of ``param``, everything else from ``base`` (default ``GlubSpec()``).

    ``param`` is any ``GlubSpec`` field, typically "mean" (e.g. 45, 145, 345) or "ideal" (moves the
    grading peak; the specs get valence "peaked"). ValueError for an unknown field or a value the
    spec rejects.
    """
    base = base or GlubSpec()
    names = [f.name for f in fields(GlubSpec)]
    if param not in names:
        raise ValueError(f"cannot sweep {param!r}; the parameters are {', '.join(names)}")
    if param == "ideal":
        return [replace(base, valence="peaked", ideal=v) for v in values]
    return [replace(base, **{param: v}) for v in values]
