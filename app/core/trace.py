"""The trace of one generation: the list of ``Step`` records plus growable numpy columns.

Owns: ``Trace``. Lives on the GUI thread (the controller appends steps it receives from
the worker); plots read the columns without copying. Qt-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from backends.base import Finished, SamplerSettings, Step

__all__ = ["Trace", "GrowableArray"]


class GrowableArray:
    """A float64 column that grows by doubling; ``view()`` returns the filled part."""

    __slots__ = ("_data", "_n")

    def __init__(self, capacity: int = 256) -> None:
        self._data = np.empty(max(1, capacity), dtype=np.float64)
        self._n = 0

    def append(self, value: float) -> None:
        if self._n == self._data.shape[0]:
            grown = np.empty(self._data.shape[0] * 2, dtype=np.float64)
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n] = value
        self._n += 1

    def view(self) -> np.ndarray:
        return self._data[: self._n]

    def __len__(self) -> int:
        return self._n


@dataclass
class Trace:
    """One run: prompt, settings, the steps so far, and how it ended (``finished``)."""

    prompt: str = ""
    settings: SamplerSettings = field(default_factory=SamplerSettings)
    model_name: str = ""
    steps: list[Step] = field(default_factory=list)
    finished: Finished | None = None
    run_id: int | None = None
    entropy_raw: GrowableArray = field(default_factory=GrowableArray)
    entropy_final: GrowableArray = field(default_factory=GrowableArray)
    surprisal: GrowableArray = field(default_factory=GrowableArray)
    p_final: GrowableArray = field(default_factory=GrowableArray)

    def append(self, step: Step) -> None:
        self.steps.append(step)
        self.entropy_raw.append(step.entropy_raw)
        self.entropy_final.append(step.entropy_final)
        s = step.surprisal
        self.surprisal.append(s if math.isfinite(s) else np.nan)
        self.p_final.append(step.p_final)

    def extend(self, steps: Iterable[Step]) -> None:
        for s in steps:
            self.append(s)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def text(self) -> str:
        return "".join(s.token for s in self.steps)

    @property
    def perplexity(self) -> float:
        s = self.surprisal.view()
        s = s[np.isfinite(s)]
        return float(math.exp(s.mean())) if s.size else float("nan")

    @property
    def estimated(self) -> bool:
        return any(s.estimated for s in self.steps)
