"""The typed records of the decoding strategies and branching lab: what a run was asked, yields and found.

Owns, for the lab's four modes (all stored under the run kind "decoding"; the params' ``mode``
and the summary's shape tell them apart):
- side by side (``lockstep``): ``RunParams`` (the panel's knobs, ``mode`` "columns"); one
  ``ColumnRecord`` per column, then a ``StepRecord`` per (step, column) with its alternatives
  (``TopEntry``), a ``ForkRecord`` where the columns first part; the ``LockstepSummary`` with a
  ``ColumnSummary`` per column (its figures, its generation ``trace``, and for a beam column
  ``BeamSearchSummary`` with each ``BeamSummary``);
- a tree from the Workbench run (``branches.iter_tree``): ``TreeParams``, one ``TreeRecord``, a
  ``TreeSummary``;
- a branch or N children (``branches.iter_grow``, over ``iter_branch`` / ``children``):
  ``BranchParams``, a ``NodeRecord`` per node reached, a ``TreeSummary`` (the grown tree,
  ``BranchTreeData`` with its ``TreeNode``s, and the node to open);
- A/B (``ab.iter_ab`` over ``ab_run`` / ``ab_compare``): ``RunParams`` (``mode`` "ab"), an
  ``ABStep`` per compared step, the ``ABSummary``;
- ``DecodingParams`` / ``DecodingSummary``: the bases whose ``from_dict`` reads a dict of any
  mode into its type; ``RECORDS`` (the registry names it);
- ``defined`` / ``or_nan``: a number as a ``float | None`` / a ``float`` field keeps it.

The dict forms (``to_dict``) are the shapes the lab wrote before records were typed
(2026-12-02), key for key, plus ``schema`` (at the top only: the summary's schema covers its A/B
steps and its tree): a stored run of that time reads as schema 1. As then, a column summary has
``beam`` only for a beam column, and ``trace`` only when it has one (``samplescope compare
--json`` leaves traces out without ``--traces``). Conventions: a number
that is not defined is None in a ``float | None`` field (a beam's p_final, the log-probability
of a token of probability 0, the figures of a column whose server sent no log-probabilities, an
infinite KL divergence, a mean over no step); a ``float`` field may be NaN (an edge
probability a server did not list, a server's entropy), read back as NaN from a stored null;
the jobs write ``math.nan`` itself there (``or_nan``), so a record equals its copy read back
from JSON that has null for it. Generation traces,
sampler settings and the A/B runs' steps stay the dicts their owners write
(``generation_record``, ``SamplerSettings.to_dict``, ``Step.to_dict``), as do the tree's runs.

Any thread may use the values: every record here is frozen, made on the lab's worker (or the
CLI's main thread) and read on the GUI thread. No Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar, cast

from app.core.records import Record, RecordTypes

__all__ = ["defined", "or_nan", "TopEntry", "ABParams", "DecodingParams", "RunParams", "TreeParams", "BranchParams",
           "ColumnRecord", "StepRecord", "ForkRecord", "TreeRecord", "NodeRecord", "ABStep",
           "BeamSummary", "BeamSearchSummary", "ColumnSummary", "TreeNode", "BranchTreeData",
           "DecodingSummary", "LockstepSummary", "TreeSummary", "ABSummary", "RECORDS"]


_R = TypeVar("_R", bound=Record)


def defined(x: float | None) -> float | None:
    """``x`` as a float, or None when it is not a finite number: a ``float | None`` field's "not
    defined" (what the store's null reads back as there)."""
    return float(x) if x is not None and math.isfinite(x) else None


def or_nan(x: float | None) -> float:
    """``x`` as a float, or ``math.nan`` itself when it is not a finite number: a ``float``
    field's "not defined", the very object a stored null reads back as (so a record equals its
    copy read back from the store)."""
    return float(x) if x is not None and math.isfinite(x) else math.nan


def _without_none(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``d`` without those of ``keys`` whose value is None (keys written only when they hold something)."""
    return {k: v for k, v in d.items() if not (k in keys and v is None)}


# ============================================================================ nested parts

@dataclass(frozen=True)
class TopEntry:
    """One alternative at a position (top-N by raw probability): ``id`` (None from a server),
    ``token`` (its text), ``p_raw`` and ``p_final`` (None where there is no sampler chain: a beam)."""

    id: int | None
    token: str
    p_raw: float
    p_final: float | None = None


@dataclass(frozen=True)
class ABParams:
    """The A/B knobs: strategies ``a`` and ``b`` (spec strings), ``model_b`` (a GGUF path; None: the same model)."""

    a: str = ""
    b: str = ""
    model_b: str | None = None


# ============================================================================ params

@dataclass(frozen=True)
class DecodingParams(Record):
    """What a run of this lab was asked; ``from_dict`` reads a dict of any mode into its type
    (``mode``: "columns" and "ab": ``RunParams``; "tree-from-workbench": ``TreeParams``;
    "branch": ``BranchParams``)."""

    @classmethod
    def _from_dict(cls: type[_R], data: Mapping[str, Any], path: str) -> _R:
        if cls is DecodingParams:
            mode = data.get("mode")
            sub: type[Record] = {"tree-from-workbench": TreeParams, "branch": BranchParams}.get(
                mode if isinstance(mode, str) else "", RunParams)
            return cast(_R, sub._from_dict(data, path))
        return cast(_R, super()._from_dict(data, path))


@dataclass(frozen=True)
class RunParams(DecodingParams):
    """The panel's knobs, for a side-by-side run (``mode`` "columns") or A/B ("ab"): the prompt,
    the strategies (the comma-separated spec string as typed), ``max_tokens``, ``seed``, the
    ``stop`` strings, the A/B knobs and the N of "Generate N children"."""

    prompt: str
    strategies: str
    max_tokens: int
    seed: int
    stop: tuple[str, ...] = ()
    ab: ABParams = ABParams()
    children_n: int = 3
    mode: str = "columns"


@dataclass(frozen=True)
class TreeParams(DecodingParams):
    """A new tree whose first path is the Workbench run of ``prompt``."""

    mode: str = "tree-from-workbench"
    prompt: str = ""


@dataclass(frozen=True)
class BranchParams(DecodingParams):
    """A branch from ``node`` (with ``token_id``, or the first token of ``text``; both None: the
    sampler's own) or, ``children`` > 0, that many sampled children; ``settings`` the sampler
    chain (``SamplerSettings.to_dict``)."""

    node: int
    token_id: int | None = None
    text: str | None = None
    children: int = 0
    settings: dict[str, Any] | None = None
    mode: str = "branch"


# ============================================================================ records

@dataclass(frozen=True)
class ColumnRecord(Record):
    """A column of a side-by-side run: its index, strategy spec and label, whether it is a beam
    search, and its sampler ``settings`` (``SamplerSettings.to_dict``; None for a beam)."""

    KIND = "column"

    column: int
    strategy: str
    label: str
    beam: bool = False
    settings: dict[str, Any] | None = None


@dataclass(frozen=True)
class StepRecord(Record):
    """Step ``step`` of column ``column``: ``token`` (the visible text), ``piece``, ``token_id``
    (None from a server), ``p_raw``, ``p_final`` (None for a beam), ``logprob`` (ln p_raw; None
    for p_raw 0), ``entropy_raw`` (nats; a lower bound from a server), ``rank``, ``estimated``
    (from a server's top-N), ``top`` and ``finish_reason`` (why the column ended here; None)."""

    KIND = "step"

    column: int
    strategy: str
    step: int
    token: str
    piece: str = ""
    token_id: int | None = None
    p_raw: float = math.nan
    p_final: float | None = None
    logprob: float | None = None
    entropy_raw: float = math.nan
    rank: int = 0
    estimated: bool = False
    top: tuple[TopEntry, ...] = ()
    finish_reason: str | None = None

    @property
    def key(self) -> tuple[str, Any]:
        """What the token is compared by: its id, or its piece when there is none (a server)."""
        return ("id", self.token_id) if self.token_id is not None else ("text", self.piece)


@dataclass(frozen=True)
class ForkRecord(Record):
    """The first step where the columns' tokens differ: per column its ``tokens`` and
    ``token_ids`` there (None: the column had ended), and the ``groups`` of columns that agree."""

    KIND = "fork"

    step: int
    tokens: tuple[str | None, ...] = ()
    token_ids: tuple[int | None, ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class TreeRecord(Record):
    """A tree was made from the Workbench run: it has ``nodes`` nodes (the root included)."""

    KIND = "tree"

    nodes: int


@dataclass(frozen=True)
class NodeRecord(Record):
    """A node a branch added: its ``id``, ``parent``, ``piece`` and edge probability ``p_raw``."""

    KIND = "node"

    id: int
    parent: int | None
    piece: str
    p_raw: float


@dataclass(frozen=True)
class ABStep(Record):
    """Step ``step`` of an A/B comparison (``step_distance``): ``kl_ab`` / ``kl_ba`` (nats; None:
    infinite), ``tv``, ``js``, each side's mass outside its top-N, ``n_union``, ``agree`` (the
    same token), the chosen tokens, and ``after_fork`` (the runs had parted before)."""

    KIND = "ab_step"

    step: int
    after_fork: bool
    kl_ab: float | None
    kl_ba: float | None
    tv: float
    js: float
    mass_outside_a: float
    mass_outside_b: float
    n_union: int
    agree: bool
    token_a: str
    token_b: str
    token_id_a: int | None = None
    token_id_b: int | None = None


# ============================================================================ summaries

@dataclass(frozen=True)
class BeamSummary:
    """One beam (``Beam.to_dict``): its tokens and pieces, visible text, summed ln p_raw
    ``logprob``, ``score`` (length-normalised), ``length``, per-token ``logprobs``, whether it
    ``finished`` by itself and why it ended, and its generation ``trace`` (None: left out)."""

    tokens: tuple[int, ...]
    pieces: tuple[str, ...]
    text: str
    logprob: float
    score: float
    length: int
    logprobs: tuple[float, ...]
    finished: bool
    finish_reason: str
    trace: dict[str, Any] | None = None


@dataclass(frozen=True)
class BeamSearchSummary:
    """A beam column's search (``BeamResult.to_dict``): width, length penalty, method, prompt
    tokens, expansion steps, evaluations, seconds, ms per step, batched, cancelled, the beams."""

    width: int
    length_penalty: float
    method: str
    prompt_tokens: int
    steps: int
    evaluations: int
    seconds: float
    ms_per_step: float
    batched: bool
    cancelled: bool
    beams: tuple[BeamSummary, ...] = ()


@dataclass(frozen=True)
class ColumnSummary:
    """A column's result: its text and tokens (ids; None from a server), why it ended, whether
    its values are ``estimated``, ``total_logprob``, ``perplexity``, ``mean_entropy`` (None when
    not defined), ``length``, its generation ``trace`` and, for a beam column, ``beam``."""

    column: int
    strategy: str
    label: str
    text: str
    tokens: tuple[int | None, ...]
    finish_reason: str
    estimated: bool = False
    total_logprob: float | None = None
    perplexity: float | None = None
    mean_entropy: float | None = None
    length: int = 0
    trace: dict[str, Any] | None = None
    beam: BeamSearchSummary | None = None


@dataclass(frozen=True)
class TreeNode:
    """A node of the branch tree as ``BranchNode.to_dict`` writes it (``data``: the token's bytes
    as hex; see ``BranchNode`` for the rest)."""

    id: int
    parent: int | None
    token_id: int | None
    piece: str
    data: str = ""
    p_raw: float = math.nan
    p_final: float = math.nan
    entropy_raw: float = math.nan
    rank: int = 0
    forced: bool = False
    run: int = -1
    estimated: bool = False
    top: tuple[TopEntry, ...] = ()
    children: tuple[int, ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True)
class BranchTreeData:
    """The branch tree as a value, its dict form ``BranchTree.to_dict``'s (``BranchTree.data`` /
    ``BranchTree.from_data`` convert): ``nodes`` indexed by id (node 0 the root), ``runs`` one
    dict per branch call as ``BranchTree.runs`` keeps them (JSON-ready). A part of
    ``TreeSummary``, not a record of its own: it has no ``schema`` of its own."""

    prompt: str
    prompt_tokens: tuple[int, ...] | None = None
    model: str = ""
    nodes: tuple[TreeNode, ...] = ()
    runs: tuple[dict[str, Any], ...] = ()

    def node(self, node_id: int) -> TreeNode:
        return self.nodes[node_id]

    def path(self, node_id: int) -> list[int]:
        """Node ids from the first token to ``node_id`` (the root excluded)."""
        out = []
        n = self.nodes[node_id]
        while n.parent is not None:
            out.append(n.id)
            n = self.nodes[n.parent]
        return out[::-1]


@dataclass(frozen=True)
class DecodingSummary(Record):
    """What a run of this lab found; ``from_dict`` reads a summary of any mode into its type (a
    ``tree``: ``TreeSummary``; ``which``: ``ABSummary``; else ``LockstepSummary``)."""

    @classmethod
    def _from_dict(cls: type[_R], data: Mapping[str, Any], path: str) -> _R:
        if cls is DecodingSummary:
            sub: type[Record] = (TreeSummary if "tree" in data else
                                 ABSummary if "which" in data or data.get("mode") == "ab" else LockstepSummary)
            return cast(_R, sub._from_dict(data, path))
        return cast(_R, super()._from_dict(data, path))


@dataclass(frozen=True)
class LockstepSummary(DecodingSummary):
    """A side-by-side run: the prompt and its token count, seed, max tokens, ``backend``
    ("local"/"remote"), ``cancelled``, ``steps`` done, ``fork_step`` (None: never parted),
    ``pairwise_fork`` (matrix; None on the diagonal and where two never part), ``seconds``,
    ``column_method`` (None remotely), ``token_evaluations`` and ``independent_evaluations``
    (see ``lockstep``), and ``columns``."""

    prompt: str
    prompt_tokens: int
    seed: int
    max_tokens: int
    backend: str = "local"
    cancelled: bool = False
    steps: int = 0
    fork_step: int | None = None
    pairwise_fork: tuple[tuple[int | None, ...], ...] = ()
    seconds: float = math.nan
    column_method: str | None = None
    token_evaluations: int = 0
    independent_evaluations: int = 0
    columns: tuple[ColumnSummary, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        columns = []
        for c in d["columns"]:
            c = _without_none(c, ("trace", "beam"))
            if "beam" in c:
                c["beam"] = {**c["beam"], "beams": [_without_none(b, ("trace",)) for b in c["beam"]["beams"]]}
            columns.append(c)
        d["columns"] = columns
        return d


@dataclass(frozen=True)
class TreeSummary(DecodingSummary):
    """A tree made or grown: the whole ``tree`` and the node whose path to ``open``."""

    tree: BranchTreeData
    open: int = 0


@dataclass(frozen=True)
class ABSummary(DecodingSummary):
    """An A/B comparison (``ab_compare``): ``which`` distributions ("final" or "raw"), the
    compared ``steps``, ``first_fork`` (None: never), ``n_compared``, ``len_a``, ``len_b``,
    ``agreement``, the means of the distances over all compared steps and up to the fork
    (``*_same_context``; None over no step, or infinite), and the runs ``a`` and ``b``
    (``Step.to_dict`` each; empty from ``ab_compare`` alone)."""

    which: str
    steps: tuple[ABStep, ...]
    first_fork: int | None
    n_compared: int
    len_a: int
    len_b: int
    agreement: float | None = None
    mean_kl_ab: float | None = None
    mean_kl_ab_same_context: float | None = None
    mean_kl_ba: float | None = None
    mean_kl_ba_same_context: float | None = None
    mean_tv: float | None = None
    mean_tv_same_context: float | None = None
    mean_js: float | None = None
    mean_js_same_context: float | None = None
    a: tuple[dict[str, Any], ...] = ()
    b: tuple[dict[str, Any], ...] = ()
    mode: str = "ab"

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        # the steps as they were stored (with their "kind"): the summary's schema covers them
        d["steps"] = [{k: v for k, v in step.items() if k != "schema"} for step in d["steps"]]
        return d


RECORDS = RecordTypes(params=DecodingParams,
                      records=(ColumnRecord, StepRecord, ForkRecord, TreeRecord, NodeRecord, ABStep),
                      summary=DecodingSummary)
