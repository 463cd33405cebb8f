"""Decoding strategies and branching lab, headless: strategies side by side, beam search, the
road not taken at any token, and A/B comparison of two runs.

Modules (each docstring says what it owns and which thread it runs on):

- ``strategies``: ``Strategy`` and the spec strings (``greedy``, ``beam:W``, ``top-k:K``, ...),
  ``NEUTRAL``.
- ``kv``: ``goto_prefix`` and the sequence contexts every local part uses (reproducibility and
  the KV cache).
- ``beams``: ``beam_search`` and ``brute_force_best`` (local models).
- ``lockstep``: several strategies on one prompt, token by token.
- ``branches``: ``BranchTree``, ``iter_branch``/``branch``, ``children``, and the tree jobs
  ``iter_tree`` / ``iter_grow``.
- ``ab``: ``step_distance``, ``ab_compare``, ``ab_run``, and the A/B job ``iter_ab``.
- ``remote``: what an OpenAI-compatible server can take part in (``REMOTE_LIMITS``).
- ``records``: the typed records every job yields and returns (params, records, summaries;
  ``RECORDS``, which reads a stored run of the lab).

Everything runs on the thread that owns the backend (the lab's worker thread in the window, the
main thread in ``samplescope compare``). No Qt. Costs: docs/BENCHMARKS.md ("Decoding lab").
"""

from __future__ import annotations

from .ab import ab_compare, ab_run, iter_ab, step_distance
from .beams import Beam, BeamResult, BeamStep, BruteForceResult, beam_search, brute_force_best
from .branches import BranchNode, BranchTree, branch, children, iter_branch, iter_grow, iter_tree
from .kv import goto_prefix
from .lockstep import column_totals, first_fork, lockstep, run_lockstep
from .remote import REMOTE_LIMITS, RemoteUnsupported, is_remote, remote_column, remote_support
from .strategies import NEUTRAL, STRATEGY_FORMS, Strategy, parse_strategies, parse_strategy

__all__ = [
    "NEUTRAL", "STRATEGY_FORMS", "Strategy", "parse_strategy", "parse_strategies",
    "BeamStep", "Beam", "BeamResult", "beam_search", "BruteForceResult", "brute_force_best",
    "goto_prefix", "first_fork", "column_totals", "lockstep", "run_lockstep",
    "BranchNode", "BranchTree", "iter_branch", "branch", "children", "iter_tree", "iter_grow",
    "step_distance", "ab_compare", "ab_run", "iter_ab",
    "REMOTE_LIMITS", "RemoteUnsupported", "remote_support", "remote_column", "is_remote",
]
