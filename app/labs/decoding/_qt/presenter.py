"""The decoding strategies and branching lab in the window: joins ``DecodingLabPanel`` to the
lab runner.

Owns: ``DecodingLab`` — the side-by-side run (``lockstep``), the branch tree (kept here on the
GUI thread as a ``BranchTreeData``, an immutable value; a branch job grows a tree made from it
on the lab worker and returns the grown one: ``iter_tree`` / ``iter_grow``), and the A/B
comparison (``iter_ab``: two strategies on the loaded model, or a second GGUF model for B). What
a server cannot do (beam search, a second local model) is refused with the reason before
anything runs. Params, records and summaries are the lab's typed values
(``app.labs.decoding.records``): ``RunParams`` / ``TreeParams`` / ``BranchParams`` go to the
runner, the jobs' records and summaries come back to the panel as they are, and a stored run is
read through ``RECORDS`` (the window does that; ``replay`` also reads a run straight from the
store). GUI thread; job bodies run on the lab worker and touch only the lab's own backend.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from app.core.jsonsafe import json_safe
from app.labs.decoding import (REMOTE_LIMITS, iter_ab, iter_grow, iter_tree, lockstep, parse_strategies,
                               parse_strategy)
from app.labs.decoding.records import (RECORDS, ABSummary, BranchParams, BranchTreeData, LockstepSummary, RunParams,
                                       TreeParams, TreeSummary)
from app.lab_presenter import LabPresenter
from app.labs.decoding._qt.panel import DecodingLabPanel

__all__ = ["DecodingLab", "KIND"]

KIND = "decoding"
BRANCH_TOKENS = 16  # tokens per branch or child
TOP_N = 10  # alternatives kept per step (the right-click menu, the A/B union)


class DecodingLab(LabPresenter):
    KIND = KIND

    def __init__(self, panel: DecodingLabPanel, controller, settings_provider) -> None:
        super().__init__(panel, controller)
        self._settings = settings_provider
        self.tree: BranchTreeData | None = None  # the branch tree
        panel.runRequested.connect(self.run_columns)
        panel.stopRequested.connect(self.stop)
        panel.branchFromWorkbenchRequested.connect(self.tree_from_workbench)
        panel.branchRequested.connect(lambda node, tok: self.branch(node, tok if tok >= 0 else None))
        panel.branchTextRequested.connect(lambda node, text: self.branch(node, None, text=text))
        panel.childrenRequested.connect(self.children)
        panel.abRequested.connect(self.run_ab)
        controller.remoteConnected.connect(lambda _caps: self._update_remote())
        controller.modelLoaded.connect(lambda _info: self._update_remote())
        self._update_remote()  # the tab may be built after the server was connected

    def _update_remote(self) -> None:
        self.panel.set_remote(REMOTE_LIMITS if self.controller.remote is not None else None)

    # ------------------------------------------------------------------ side by side
    def run_columns(self) -> None:
        source = self.source()
        if source is None:
            return
        p = self.panel.params()
        try:
            strategies = parse_strategies(p.strategies)
            if not p.prompt.strip():
                raise ValueError("The prompt is empty.")
        except ValueError as exc:
            self.panel.show_status(str(exc))
            return
        if not source.capabilities.sequences and any(s.is_beam for s in strategies):
            self.panel.show_status(f"Beam columns are not available: {source.capabilities.why_not('sequences')}.")
            return
        labs = self.labs

        def body(cancel: threading.Event):
            backend = labs.engine(source)
            return (yield from lockstep(backend, p.prompt, strategies, p.max_tokens, p.seed, cancel,
                                        top_n=TOP_N, stop=p.stop))

        self.panel.start_columns()
        self.start("columns", f"Side by side: {p.strategies}", p.replace(mode="columns"), body, source,
                   p.max_tokens)

    # ------------------------------------------------------------------ branches
    def _branch_settings(self):
        s = self._settings()
        return s.replace(max_tokens=BRANCH_TOKENS, top_n=TOP_N)

    def tree_from_workbench(self) -> None:
        """A new tree whose first path is the Workbench tab's last run."""
        source = self.source()
        trace = self.controller.trace
        if source is None:
            return
        if trace is None or not trace.steps:
            self.panel.show_status("Generate on the Workbench tab first: its run becomes the tree's first path.")
            return
        steps = [s.to_dict() for s in trace.steps]
        prompt, settings, model = trace.prompt, trace.settings, trace.model_name
        labs = self.labs

        def body(cancel: threading.Event):
            backend = labs.engine(source)
            tokens = None if not source.capabilities.token_ids else backend.tokenize(prompt, add_special=True)
            return (yield from iter_tree(prompt, tokens, steps, settings, model))

        self.start("branch", f"Branches of: {prompt[:60]}", TreeParams(prompt=prompt), body, source, 1)

    def branch(self, node_id: int, token_id: int | None, *, text: str | None = None) -> None:
        """Continue the tree from ``node_id`` with ``token_id`` (or the first token of ``text``),
        then sample ``BRANCH_TOKENS`` tokens with the Sampling tab's chain."""
        self._grow(node_id, token_id, text, n_children=0)

    def children(self, node_id: int, n: int) -> None:
        """Sample ``n`` continuations from ``node_id`` (seeds seed..seed+n-1)."""
        self._grow(node_id, None, None, n_children=n)

    def _grow(self, node_id: int, token_id: int | None, text: str | None, *, n_children: int) -> None:
        source = self.source()
        if source is None or self.tree is None:
            if self.tree is None:
                self.panel.show_status("Start a tree first (Start from the workbench run).")
            return
        tree = self.tree
        settings = self._branch_settings()
        labs = self.labs
        parallel = source.max_parallel if source.capabilities.sequences else 1

        def body(cancel: threading.Event):
            backend = labs.engine(source)
            tok, token_text = token_id, None
            if text is not None:
                if source.capabilities.full_logits:
                    ids = backend.tokenize(text, add_special=False)
                    if not ids:
                        raise ValueError("The typed text has no token.")
                    tok = ids[0]
                else:
                    token_text = text
            # N children at once (parallel sequences of one batch on the shared model) where it can
            return (yield from iter_grow(backend, tree, node_id, tok, settings, BRANCH_TOKENS, settings.seed, cancel,
                                         token_text=token_text, n_children=n_children, max_parallel=parallel))

        what = f"{n_children} children" if n_children else "branch"
        self.start("branch", f"Branch ({what}) from node {node_id}",
                   BranchParams(node=node_id, token_id=token_id, text=text, children=n_children,
                                settings=json_safe(settings.to_dict())), body, source,
                   BRANCH_TOKENS * max(1, n_children))

    # ------------------------------------------------------------------ A/B
    def run_ab(self) -> None:
        source = self.source()
        if source is None:
            return
        p = self.panel.params()
        ab = p.ab
        try:
            sa, sb = parse_strategy(ab.a), parse_strategy(ab.b)
            if sa.is_beam or sb.is_beam:
                raise ValueError("A/B compares sampled or greedy runs step by step; a beam search has no "
                                 "per-step distribution of its own. Use greedy, top-k, top-p, min-p or temp.")
            if not p.prompt.strip():
                raise ValueError("The prompt is empty.")
            if ab.model_b and not source.capabilities.local:
                raise ValueError("Model B is a local GGUF file: disconnect the server to compare two local models.")
            if ab.model_b and not Path(ab.model_b).is_file():
                raise ValueError(f"Model B: no file at {ab.model_b}")
        except ValueError as exc:
            self.panel.show_status(str(exc))
            return
        labs = self.labs
        settings_a = sa.settings(seed=p.seed, max_tokens=p.max_tokens, top_n=TOP_N * 2)
        settings_b = sb.settings(seed=p.seed, max_tokens=p.max_tokens, top_n=TOP_N * 2)

        def body(cancel: threading.Event):
            backend_a = labs.engine(source)
            backend_b = backend_a
            if ab.model_b:
                from backends.base import LoadSettings
                from backends.open import open_backend
                from backends.sources import LocalSource

                backend_b = open_backend(LocalSource(ab.model_b, LoadSettings(source.n_ctx, 0, source.n_threads or 0)))
            try:
                return (yield from iter_ab(backend_a, backend_b, p.prompt, settings_a, settings_b, cancel))
            finally:
                if backend_b is not backend_a:
                    backend_b.close()

        self.start("ab", f"A/B: {ab.a} vs {ab.b}" + (f" ({Path(ab.model_b).name})" if ab.model_b else ""),
                   p.replace(mode="ab"), body, source, p.max_tokens)

    def replay(self, exp) -> None:
        """A stored run, typed (the window reads it through ``RECORDS``; a run straight from the
        store, with dicts, is read here the same way), into the tab of its mode: the side-by-side
        grid (its records, then its summary), the branch tree or the A/B plot (their summaries)."""
        if isinstance(exp.params, Mapping):
            exp = RECORDS.read_experiment(exp)
        params = exp.params
        what = (params.mode if isinstance(params, RunParams) and params.mode in ("columns", "ab") else "branch")
        if what == "columns":
            self.panel.start_columns()
            for record in exp.records:
                self.on_record(what, record)
        if exp.summary is not None:
            self.on_finished(what, exp.summary, exp.status)
        elif what == "columns":
            self.panel.show_summary(None, exp.status)

    # ------------------------------------------------------------------ results
    def on_record(self, what: str, record) -> None:
        """A record of the running (or replayed) job: a column's into the grid; a tree job's
        (``TreeRecord``, ``NodeRecord``) one more step of the progress."""
        if what == "columns":
            self.panel.add_record(record)
        else:
            self.panel.advance()

    def on_finished(self, what: str, summary, status: str) -> None:
        if what == "columns":
            self.panel.show_summary(summary if isinstance(summary, LockstepSummary) else None, status)
            return
        self.panel.set_running(False)
        if what == "branch" and isinstance(summary, TreeSummary):
            self.tree = summary.tree
            self.panel.set_tree(self.tree, open_node=summary.open)
            self.panel.show_branches()
            self.panel.show_status(f"The tree has {len(self.tree.nodes) - 1} tokens in "
                                   f"{len(self.tree.runs)} run(s)." + (" Stopped." if status == "stopped" else ""))
        elif what == "ab" and isinstance(summary, ABSummary):
            self.panel.show_ab(summary)
            self.panel.show_status("A/B done." if status == "done" else "A/B stopped.")
