"""The Workbench's "what if the knobs were different": the live what-if on the shown step, "Apply
to this run" (a whole run re-scored) and the prompt X-ray.

Owns ``WhatIfMixin``, a part of ``MainWindow``: it reads the shown trace, the controller's logit
memory and the sampling panel, computes with ``app.core.whatif`` (the what-if and the re-score,
on the GUI thread: a few milliseconds a step, the model worker being idle) and hands the results
to the distribution and entropy plots; the X-ray runs as a job of the controller. A run whose
logits are not kept (a stored run, a lab generation, one the memory bound pushed out) is first
evaluated again through the local model (``controller.recompute_logits``, teacher-forced on its
tokens), then the what-if or the re-score asked for goes on. GUI thread.
"""

from __future__ import annotations

import time

from app.core.whatif import rescore, what_if
from backends.base import GenerationError, SamplerSettings, Step

__all__ = ["WhatIfMixin"]


class WhatIfMixin:
    """The what-if part of ``MainWindow`` (see the module docstring)."""

    #: what goes on once the controller has recomputed the shown run's logits ("what-if", "rescore")
    _after_recompute: str | None = None

    def xray_prompt(self):
        """The prompt X-ray (``controller.xray``): the prompt scored token by token and shown as
        a trace; the perplexity goes to the status bar when it arrives."""
        return self.controller.xray(self.prompt_edit.toPlainText(), self.sampling_panel.settings())

    def _on_xray(self, result) -> None:
        self.statusBar().showMessage(
            f"Prompt X-ray: {len(result.tokens)} tokens, perplexity {result.perplexity:.2f} "
            f"(total log-probability {result.total_logprob:.2f} nats); hover a token for its alternatives", 30000)

    def rescore_run(self):
        """"Apply to this run": every step of the shown (finished, local, in-memory) run again
        under the current knobs, overlaid on the timeline. Returns the ``Rescored`` (None, with
        the reason in the banner, when it cannot be done)."""
        c = self.controller
        trace, engine = c.trace, c.local_engine
        if trace is None or not trace.steps or trace.finished is None or c.busy:
            self.show_banner("Apply to this run: first generate a run (and let it finish).")
            return None
        if engine is None:
            self.show_banner("Apply to this run needs the run's full logits: load a local model (a server gives only "
                             "its top-N).")
            return None
        if c.trace_memory_key is None or not c.logit_memory.holds(c.trace_memory_key):
            if c.recompute_logits() is not None:  # the run again through the model, then the re-score
                self._after_recompute = "rescore"
                self.statusBar().showMessage("Recomputing the run's logits through the model (teacher-forced on "
                                             "its tokens) to re-score it…", 15000)
            return None
        try:
            res = rescore(c.logit_memory, c.trace_memory_key, self.sampling_panel.settings(), trace.steps, engine,
                          engine.piece)
        except (GenerationError, ValueError) as exc:
            self.show_banner(f"The run was not re-scored: {exc}")
            return None
        self.entropy_plot.set_overlay(res.entropy_final, res.p_final, res.cut)
        missing = f"; {res.n_missing} step(s) without kept logits skipped" if res.n_missing else ""
        self.statusBar().showMessage(
            f"Re-scored {len(trace.steps) - res.n_missing} steps with the current knobs: {res.n_cut} chosen token(s) "
            f"would have been cut (marked x){missing}", 15000)
        self.last_rescore = res
        return res

    def _what_if(self, settings: SamplerSettings) -> Step | None:
        """Live what-if: with a finished local run shown and the knobs moved away from its
        settings, the shown step again under the new ones (``app.core.whatif``), from the logits
        kept in memory; the chosen token stays marked, p_final 0 means the new settings cut it.
        Returns the what-if step (None when none is shown)."""
        c = self.controller
        trace, engine = c.trace, c.local_engine
        self.last_what_if_ms = None
        if (trace is None or not trace.steps or trace.finished is None or c.busy or engine is None
                or settings == trace.settings):
            return None
        idx = self._selected if self._selected is not None else len(trace.steps) - 1
        orig = trace.steps[idx]
        key = c.trace_memory_key
        kept = c.logit_memory.get(key, idx) if key is not None else None
        if kept is None or orig.token_id is None:
            self.distribution_plot.show_step(orig, note=self._recompute_for_what_if(key, orig))
            return None
        t0 = time.perf_counter()
        try:
            step = what_if(kept[1], settings, kept[0], trace.steps, idx, engine, engine.piece)
        except (GenerationError, ValueError) as exc:
            self.distribution_plot.show_step(orig, note=f"What-if not computed: {exc}")
            return None
        self.last_what_if_ms = (time.perf_counter() - t0) * 1e3
        note = (f"What-if with the knobs as set now (the run used others): p_final {orig.p_final:.1%} → "
                f"{step.p_final:.1%}, kept {orig.kept:,} → {step.kept:,}, final entropy "
                f"{orig.entropy_final:.3f} → {step.entropy_final:.3f} nats")
        if step.p_final <= 0:
            note += "; the new settings would have CUT the chosen token"
        note += f"  ({c.logit_memory.used_bytes >> 20} of {c.logit_memory.max_bytes >> 20} MB of logits kept)"
        self.distribution_plot.show_step(step, note=note)
        return step


    def _recompute_for_what_if(self, key: int | None, orig: Step) -> str:
        """The what-if's note for a step whose logits are not kept: a recomputation of the run
        started (when the memory does not hold the run at all), or why none will help."""
        c = self.controller
        memory_mb = c.logit_memory.max_bytes >> 20
        if orig.token_id is None:
            return "What-if needs the step's token id and full logits: a server's run has neither."
        if memory_mb <= 0:
            return "What-if needs this step's logits, and the what-if memory is set to 0 MB (Model panel): raise it."
        if key is not None and c.logit_memory.holds(key):  # recomputed, but this step did not fit
            return (f"This step's logits did not fit in the what-if memory ({memory_mb} MB, Model panel); raise it "
                    "to try other settings on every step of this run.")
        if c.recompute_logits() is None:
            return "What-if needs this step's logits, and the run cannot be recomputed now (see the message above)."
        self._after_recompute = "what-if"
        return ("Recomputing this run's logits through the model (teacher-forced on its tokens, "
                f"kept in at most {memory_mb} MB) to try other settings on it…")

    def _on_logits_recomputed(self, n: int) -> None:
        """The shown run's logits are kept again: the what-if or re-score asked for goes on."""
        then, self._after_recompute = self._after_recompute, None
        self.statusBar().showMessage(f"Recomputed {n} steps' logits through the model: move any knob to see "
                                     "what it would have done", 10000)
        if then == "rescore":
            self.rescore_run()
        elif then == "what-if":
            self._what_if(self.sampling_panel.settings())
