"""P_token vs P_task lab, headless: one list of draws on a model, step by step, and repeated runs.

Over 500 lines because it is the lab's whole engine in one place: local and remote decision
steps, their scoring (the two sections below) and the repeated runs share the run's helpers and
the record builders; splitting them would spread one algorithm over several files.

Owns:
- ``local_run`` -> ``AlignRun``: a GGUF model through ``LlamaCppBackend``. The model writes its
  list of draws token by token with our own sampler chain (``GenerationSession``: ``apply_chain``
  and a seeded numpy generator, exactly as ``samplescope generate`` draws), and at every decision
  step, before the next token is drawn, P_token over the outcomes is computed from the model's
  logits (below).
- ``remote_run`` -> ``AlignRun``: a model on an OpenAI-compatible server; P_token is estimated
  from the top-N log-probabilities the server streams back (below: what that cannot see).
- ``iter_align``: R runs (run r uses seed + r), one typed record per decision step
  (``AlignStepRecord``) and one per run (``AlignRunRecord``) as they arrive; returns the typed
  ``AlignSummary`` with the D/E verdict (``app.labs.align.records``).

Threads: everything runs on the thread that calls it (the lab's worker thread in the window, the
main thread in ``samplescope align``); a backend is used by one thread at a time. ``cancel`` is
checked before every token (local) or handed to the backend's stream (remote: it ends within
about 20 ms); what was produced before is kept and the run is marked cancelled. No Qt.

P_token at a local decision step
--------------------------------
Decision steps are ``align_task``'s: step 0 at the end of the prompt (completion style) or at the
start of the reply (chat style), then the position after every generated token whose text ends
on an item delimiter (``opens_decision``). The candidate token sequences are
``decision_sequences(task, in_context_tokenizer(tokenize without BOS))``, computed once per run.

P_token is the model's own next-token distribution: the softmax of the raw logits at
temperature 1, in float64, whatever the sampler settings. The sampler knobs (temperature, top-k,
top-p, min-p, penalties) only decide which token is drawn, and so which path the list takes; they
do not change what the model's distribution over the outcomes is at a step. (The paper measures
the model, not a sampler; a truncating sampler would make most outcomes exactly 0.)

A sequence's probability is the product of its tokens' conditional probabilities, each read from
the logits after the prefix plus the sequence's earlier tokens, times P(end) for ``needs_end``
sequences: the next-token probability of every token whose text starts an item delimiter
(``ends_item``) or ends generation (``is_eog``); that boolean mask over the vocabulary is built
once per backend (a scan of the vocabulary, about a second for 262k tokens) and only when a task
needs it. The sequences are scored along their token tree: every distinct non-empty prefix that
needs logits is evaluated once with ``prepare(prefix + node)``, in sorted order, so the KV cache
keeps the common prefix and each node costs one token evaluation; the step's own logits (the
root) are read before the cache moves. Afterwards ``prepare(prefix)`` puts the cache back at the
generation position (one more token evaluation: llama.cpp re-evaluates the last token to get its
logits). Gemma writes " 3" as " " then "3", so the presets cost 2 evaluations per step; a task
whose outcomes are single tokens costs 1. Scoring never changes the generation: the draw's
distribution is taken before the cache moves, and the restored cache is the one the generation
left. Each run starts from an empty cache (``local_run``), so a seed repeats a run exactly.

P_token at a remote decision step
---------------------------------
A server reports, for each generated token, the top-N alternatives at that position with their
probabilities (``Step.top``; llama.cpp and vLLM report the raw softmax). The first token after a
decision step carries the step's distribution. An outcome gets the probability of every
alternative whose text equals one of its spellings (``outcome_spellings``: " 3" and "3").
When the token the model actually drew is a proper prefix of spellings but no spelling itself
(Gemma's lone " " before a digit), the next token's alternatives are conditioned on it, so the
scoring follows it: P(" " then "3") = P(" ") * P("3" | " "). Only the path the model took can be
followed. Limits, all reported: mass outside the top-N is unseen (``unseen_mass`` per step: the
unseen mass of the first token plus, along a followed path, the unseen mass of each later token
times the path's probability; it is part of ``mass_outside``); an outcome written in several
tokens along a path the model did not take cannot be scored (it counts as outside, and an
outcome that never appeared among the alternatives is named in ``problems``); an outcome that
is a prefix of another ("1" of "10") cannot be scored with its end, so it also takes the
probability of the longer one where that begins with the same token (noted in ``problems``).
Every remote step and run is marked ``estimated``.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Generator, Sequence, cast

import numpy as np

from app.labs.align.measures import RunMeasures, StepMeasure, Thresholds, diversity_across_runs, measure_run, \
    p_token_over_outcomes, verdict
from app.labs.align.records import AlignRunRecord, AlignStepRecord, AlignSummary, RunSummary, SummaryTask, defined
from app.labs.align.task import (STYLES, CandidateSequence, TaskDistribution, TaskError, decision_sequences,
                                 ends_item, in_context_tokenizer, opens_decision, outcome_spellings, parse_draws,
                                 render_prompt)
from app.core.jsonsafe import json_safe
from app.core.parallel import TICK
from app.core.streams import drain
from backends.base import Finished, GenerationError, SamplerSettings, Step
from backends.chat import conversation
from backends.kinds import Backend, LocalEngine

if TYPE_CHECKING:
    from backends.openai_compat import OpenAICompatBackend

__all__ = ["DEFAULT_SETTINGS", "AlignStep", "AlignRun", "default_max_tokens", "local_run", "remote_run",
           "iter_align", "step_record"]

#: Sampling from the model's own distribution (temperature 1, nothing truncated): the draws then
#: follow P_token, so P_result shows what the model does. Any other settings may be passed.
DEFAULT_SETTINGS = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0,
                                   repeat_penalty=1.0, max_tokens=128)


def default_max_tokens(n_draws: int) -> int:
    """The token budget of a run when none is given: 6 per draw plus 16."""
    return 6 * int(n_draws) + 16


@dataclass(frozen=True)
class AlignStep:
    """One decision step of a run (``index`` counts from 0).

    ``position``: generated tokens before the step (0 = right after the prompt). ``p_token``:
    P_token over the task's outcomes (task order; all NaN when undefined); ``p_outcomes``: the
    same before renormalising (each outcome's probability as a next item); ``mass_outside`` =
    1 - sum(p_outcomes) (includes ``unseen_mass``); ``unseen_mass``: probability the backend did
    not show (0.0 locally). ``item``: the text the model wrote from this step to the next
    delimiter, delimiter included (what it wrote so far if the run ended inside the item);
    ``drawn``: that item parsed, when it is exactly one outcome, else None.
    """

    index: int
    position: int
    p_token: tuple[float, ...]
    p_outcomes: tuple[float, ...]
    mass_outside: float
    unseen_mass: float = 0.0
    item: str = ""
    drawn: str | None = None

    @property
    def defined(self) -> bool:
        return not math.isnan(self.p_token[0])


@dataclass(frozen=True)
class AlignRun:
    """One run: the prompt, what the model wrote, P_token at every decision step, the measures.

    ``finish_reason``: "draws" (N items written), "eos", "stop" (a stop string), "length" (the
    token budget), "context" (the context window is full), "cancelled", or remote "incomplete".
    ``draws``/``problems`` come from ``parse_draws`` of ``text`` plus what the engine noticed;
    ``measures`` is ``measure_run`` of the steps and the draws (its ``problems`` hold all of
    them). ``estimated``: P_token comes from a server's top-N (see the module docstring).
    """

    task: TaskDistribution
    n_draws: int
    style: str
    prompt: str
    seed: int
    steps: tuple[AlignStep, ...]
    text: str
    draws: tuple[str, ...]
    problems: tuple[str, ...]
    measures: RunMeasures
    finish_reason: str
    cancelled: bool
    estimated: bool
    n_tokens: int
    seconds: float
    #: the run's generation (``app.core.export.generation_record``), to open in the Workbench
    trace: dict | None = None

    def record(self, run: int = 0, thresholds: Thresholds | None = None) -> AlignRunRecord:
        """The run record of ``iter_align``: this run as run number ``run``, with its verdict
        under ``thresholds`` (the trace JSON-safe, as the store keeps it)."""
        m = self.measures
        return AlignRunRecord(
            run=run, seed=self.seed, style=self.style, prompt=self.prompt, text=self.text, draws=tuple(self.draws),
            problems=tuple(self.problems), p_result=tuple(float(x) for x in m.p_result),
            result_tv=defined(m.result_tv), result_kl=defined(m.result_kl), n_steps=m.n_steps,
            n_undefined_steps=m.n_undefined_steps, n_draws=m.n_draws, mean_kl=m.mean_kl, mean_js=m.mean_js,
            mean_tv=m.mean_tv, mean_variability=m.mean_variability, mean_max_prob=m.mean_max_prob,
            mean_entropy=m.mean_entropy, mean_mass_outside=m.mean_mass_outside,
            mean_unseen_mass=_mean([s.unseen_mass for s in self.steps]), finish_reason=self.finish_reason,
            cancelled=self.cancelled, estimated=self.estimated, n_tokens=self.n_tokens,
            seconds=round(self.seconds, 3), verdict=verdict(m, thresholds),
            trace=json_safe(self.trace) if self.trace is not None else None)


def step_record(run: int, step: AlignStep, measure: StepMeasure, estimated: bool) -> AlignStepRecord:
    """The step record of ``iter_align``: ``step`` of run ``run`` with its measures."""
    return AlignStepRecord(
        run=run, step=step.index, position=step.position, p_token=tuple(float(x) for x in step.p_token),
        p_outcomes=tuple(float(x) for x in step.p_outcomes), mass_outside=float(step.mass_outside),
        unseen_mass=float(step.unseen_mass), estimated=estimated, drawn=step.drawn, item=step.item,
        kl=measure.kl_to_task, js=measure.js_to_task, tv=measure.tv_to_task, tv_prev=defined(measure.tv_to_previous),
        max_prob=measure.max_prob, entropy=measure.entropy)


# ============================================================================ shared helpers

def _mean(values: Sequence[float]) -> float:
    vals = [float(v) for v in values if not math.isnan(v)]
    return math.fsum(vals) / len(vals) if vals else math.nan



def _check(task: TaskDistribution, n_draws: int, settings: SamplerSettings, seed: int, style: str,
           template: str | None, max_tokens: int | None) -> tuple[str, SamplerSettings]:
    """The rendered prompt and the run's settings (seed and token budget replaced); ValueError
    (TaskError for the task side) for anything that cannot run."""
    if not isinstance(task, TaskDistribution):
        raise TaskError("the task must be a TaskDistribution (make_task, a preset or task_from_json)")
    if style not in STYLES:
        raise TaskError(f"unknown style {style!r}: 'completion' or 'chat'")
    prompt = render_prompt(task, n_draws, style, template)
    budget = default_max_tokens(n_draws) if max_tokens is None else max_tokens
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"the seed must be a whole number, got {seed!r}")
    st = replace(settings, seed=int(seed), max_tokens=int(budget))
    st.validate()
    return prompt, st


def _measure_step(task: TaskDistribution, step: AlignStep, previous: AlignStep | None) -> StepMeasure:
    """The step's measures, from the same ``measure_run`` as the run's (with its predecessor,
    for the variability)."""
    pair = ([(previous.p_token, previous.mass_outside)] if previous is not None else []) + [
        (step.p_token, step.mass_outside)]
    return measure_run(task, pair).steps[-1]


def _drawn(item: str, task: TaskDistribution) -> str | None:
    draws, problems = parse_draws(item, task)
    return draws[0] if len(draws) == 1 and not problems else None


def _finish_run(task, n_draws, style, prompt, seed, steps, text, problems, reason, n_tokens, t0,
                estimated, trace: dict | None = None) -> AlignRun:
    draws, parse_problems = parse_draws(text, task)
    measures = measure_run(task, [(s.p_token, s.mass_outside) for s in steps], draws,
                           list(parse_problems) + list(problems))
    return AlignRun(task, n_draws, style, prompt, int(seed), tuple(steps), text, tuple(draws), measures.problems,
                    measures, reason, reason == "cancelled", estimated, n_tokens, time.perf_counter() - t0, trace)


# ============================================================================ local


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    m = float(x.max())
    return x - (m + math.log(float(np.exp(x - m).sum())))


_END_MASKS: "weakref.WeakKeyDictionary[Any, np.ndarray]" = weakref.WeakKeyDictionary()


def _end_mask(backend: LocalEngine) -> np.ndarray:
    """Tokens that end an item: text starting with a delimiter (``ends_item``) or end of generation."""
    mask = _END_MASKS.get(backend)
    if mask is None:
        mask = np.fromiter(
            (backend.is_eog(t) or ends_item(backend.token_bytes(t).decode("utf-8", errors="replace"))
             for t in range(backend.n_vocab)), dtype=bool, count=backend.n_vocab)
        _END_MASKS[backend] = mask
    return mask


def _score_sequences(backend: LocalEngine, prefix: list[int], root: np.ndarray,
                     seqs: Sequence[CandidateSequence]) -> list[float]:
    """P(sequence | prefix) for every candidate (times P(end) where needed), with ``root`` the
    log-softmax at ``prefix``. Moves the KV cache; the caller puts it back."""
    needed: set[tuple[int, ...]] = set()
    for s in seqs:
        needed.update(s.tokens[:j] for j in range(1, len(s.tokens)))
        if s.needs_end:
            needed.add(s.tokens)
    want_end = {s.tokens for s in seqs if s.needs_end}
    logp: dict[tuple[int, ...], dict[int, float]] = {(): {int(t): float(root[t]) for t in
                                                          {s.tokens[0] for s in seqs}}}
    end_logp: dict[tuple[int, ...], float] = {}
    mask = _end_mask(backend) if want_end else None
    children: dict[tuple[int, ...], set[int]] = {}
    for s in seqs:
        for j in range(1, len(s.tokens)):
            children.setdefault(s.tokens[:j], set()).add(int(s.tokens[j]))
    for node in sorted(needed):  # sorted: siblings follow their common prefix in the cache
        backend.prepare(prefix + list(node))
        lp = _log_softmax(backend.logits())
        logp[node] = {t: float(lp[t]) for t in children.get(node, ())}
        if node in want_end:
            end_logp[node] = math.log(max(float(np.exp(lp[mask]).sum()), 1e-300))
    out: list[float] = []
    for s in seqs:
        total = math.fsum(logp[s.tokens[:j]][int(s.tokens[j])] for j in range(len(s.tokens)))
        if s.needs_end:
            total += end_logp[s.tokens]
        out.append(min(1.0, math.exp(total)))
    return out


def _chat_text(backend: LocalEngine, prompt: str, system: str | None) -> str:
    messages = conversation(prompt, system)
    try:
        return backend.format_chat(messages)
    except GenerationError as exc:
        # the model cannot be asked in chat style: a choice the user has to change, not a fault
        raise ValueError(f"chat style is not possible with this model: {exc}") from exc


def _iter_local(backend: LocalEngine, task: TaskDistribution, n_draws: int, settings: SamplerSettings, seed: int, style: str,
                template: str | None, cancel: threading.Event | None, max_tokens: int | None, run: int,
                system: str | None, tick: bool = False) -> Generator[Any, None, AlignRun]:
    from app.core.session import GenerationSession

    t0 = time.perf_counter()
    prompt, st = _check(task, n_draws, settings, seed, style, template, max_tokens)
    text = _chat_text(backend, prompt, system) if style == "chat" else prompt
    seqs = decision_sequences(task, in_context_tokenizer(lambda s: backend.tokenize(s, add_special=False)))
    longest = max(len(s.tokens) for s in seqs)
    session = GenerationSession(backend, text, st, parse_special=(style == "chat"))
    backend.reset()  # every run starts from an empty cache: see local_run
    session.start()
    steps: list[AlignStep] = []
    problems: list[str] = []
    pending: dict[str, Any] | None = None  # the open step: its numbers and where its item starts
    reason = ""
    need_decision = True

    def close(pending: dict[str, Any]) -> AlignStepRecord:
        item = session.text[pending["start"]:]
        step = AlignStep(len(steps), pending["position"], pending["p"], pending["raw"], pending["mass"], 0.0,
                         item, _drawn(item, task))
        record = step_record(run, step, _measure_step(task, step, steps[-1] if steps else None), False)
        steps.append(step)
        return record

    while True:
        if cancel is not None and cancel.is_set():
            session.cancel()
            reason = "cancelled"
            break
        if need_decision:
            need_decision = False
            prefix = session.prompt_tokens + session.generated
            if len(prefix) + longest + 1 >= backend.n_ctx:
                reason = "context"
                problems.append(f"the context window ({backend.n_ctx} tokens) is full: the run ended after "
                                f"{len(steps)} steps")
                break
            session.analyze()  # the draw's distribution, read before the cache moves
            root = _log_softmax(backend.logits())
            probs = _score_sequences(backend, prefix, root, seqs)
            if tuple(backend.cached_tokens) != tuple(prefix):
                backend.prepare(prefix)  # back to the generation position
            by_outcome: dict[str, list[float]] = {o: [] for o in task.outcomes}
            for s, p in zip(seqs, probs):
                by_outcome[s.outcome].append(p)
            p_token, mass = p_token_over_outcomes(by_outcome, task.outcomes)
            raw = tuple(math.fsum(by_outcome[o]) for o in task.outcomes)
            pending = {"position": len(session.generated), "p": tuple(float(x) for x in p_token), "raw": raw,
                       "mass": float(mass), "start": len(session.text)}
        step = session.commit()
        if tick:  # the round-robin's beat: one token taken (app.core.parallel)
            yield TICK
        if session.finished is not None:
            reason = session.finished.reason
            break
        if opens_decision(step.piece):
            if pending is not None:
                yield close(pending)
                pending = None
            if len(steps) >= n_draws or len(parse_draws(session.text, task)[0]) >= n_draws:
                reason = "draws"
                break
            need_decision = True
    if pending is not None:
        yield close(pending)
    if session.finished is None:
        session.cancel() if reason == "cancelled" else session.end(reason or "stop")
    from app.core.export import generation_record

    trace = generation_record(text, st, session.steps, session.finished, backend.info.name)
    return _finish_run(task, n_draws, style, prompt, seed, steps, session.text, problems, reason,
                       len(session.generated), t0, False, trace)


def local_run(backend: LocalEngine, task: TaskDistribution, n_draws: int, settings: SamplerSettings = DEFAULT_SETTINGS,
              seed: int = 0, style: str = "completion", template: str | None = None,
              cancel: threading.Event | None = None, max_tokens: int | None = None, *,
              system: str | None = None) -> AlignRun:
    """One run on a local model (``LlamaCppBackend``): the model writes ``n_draws`` draws and
    P_token is computed at every decision step (module docstring).

    ``settings`` are the sampler's (default ``DEFAULT_SETTINGS``); their ``seed`` and
    ``max_tokens`` are replaced by ``seed`` and ``max_tokens`` (default
    ``default_max_tokens(n_draws)``); their stop strings apply. ``template``: see
    ``render_prompt``. Chat style formats the prompt (after an optional ``system`` message) with
    the model's own chat template; a model without one (a base model such as the embedded Gemma
    3 270M) gives a ValueError saying so: a hand-made chat turn would be a guess at a format the
    model was never tuned on, so it is not invented. The run ends when N items are written (N
    steps done, or the parsed draws reach N), at end of generation, a stop string, the token
    budget, a full context, or ``cancel`` (checked before every token; the steps so far are kept
    and ``cancelled`` is set). ValueError/TaskError for bad input, BackendError from llama.cpp.

    Every run starts from an empty KV cache (the prompt is evaluated in one batch), so a run does
    not depend on what the backend evaluated before: llama.cpp's logits for a token evaluated
    alone and inside a batch differ slightly (around 1e-3 in a probability), enough to change a
    draw now and then. With that, a seed gives the same text every time, step 0 has the same
    P_token in every run, and the text is the one a plain ``GenerationSession`` with the same
    settings writes (scoring never changes the generation). The backend's cache is left holding
    the prompt and the output (still usable)."""
    gen = _iter_local(backend, task, n_draws, settings, seed, style, template, cancel, max_tokens, 0, system)
    return drain(gen)


# ============================================================================ remote


class _RemoteDecision:
    """P_token of one remote decision step, fed the streamed Steps that follow it (module docstring)."""

    def __init__(self, task: TaskDistribution, position: int, start: int) -> None:
        self.task = task
        self.position = position
        self.start = start  # where the step's item begins in the run's text
        self.spelled = {sp: o for o in task.outcomes for sp in outcome_spellings(o)}
        self.prefixes = {sp[:i] for sp in self.spelled for i in range(1, len(sp))}
        self.sums = {o: 0.0 for o in task.outcomes}
        self.seen: set[str] = set()
        self.context = ""
        self.weight = 1.0
        self.unseen = 0.0
        self.no_logprobs = False

    def feed(self, step: Step) -> bool:
        """Take the next streamed token; True when the step is complete."""
        if not step.top:
            self.no_logprobs = True
            self.unseen += self.weight
            return True
        shown = math.fsum(min(max(a.p_raw, 0.0), 1.0) for a in step.top)
        self.unseen += self.weight * max(0.0, 1.0 - shown)
        for a in step.top:
            o = self.spelled.get(self.context + a.token)
            if o is not None:
                self.sums[o] += self.weight * min(max(a.p_raw, 0.0), 1.0)
                self.seen.add(o)
        following = self.context + step.piece
        if following in self.prefixes and following not in self.spelled and step.piece:
            p = next((a.p_raw for a in step.top if a.token == step.piece), step.p_raw)
            self.weight *= min(max(p, 0.0), 1.0)
            self.context = following
            return self.weight <= 0.0
        return True

    def result(self) -> tuple[tuple[float, ...], tuple[float, ...], float, float]:
        total = math.fsum(self.sums.values())
        sums = {o: v / total for o, v in self.sums.items()} if total > 1.0 else self.sums  # rounding
        p, mass = p_token_over_outcomes(sums, self.task.outcomes)
        raw = tuple(float(sums[o]) for o in self.task.outcomes)
        return tuple(float(x) for x in p), raw, float(mass), min(1.0, self.unseen)


def _iter_remote(backend: OpenAICompatBackend, task: TaskDistribution, n_draws: int, settings: SamplerSettings, seed: int, style: str,
                 template: str | None, cancel: threading.Event | None, max_tokens: int | None, run: int,
                 system: str | None, tick: bool = False) -> Generator[Any, None, AlignRun]:
    t0 = time.perf_counter()
    prompt, st = _check(task, n_draws, settings, seed, style, template, max_tokens)
    messages = None
    if style == "chat":
        messages = conversation(prompt, system)
    items = backend.stream(None if messages else prompt, st, messages=messages, cancel=cancel)
    steps: list[AlignStep] = []
    problems: list[str] = []
    seen: set[str] = set()
    no_logprobs = 0
    text = ""
    n_tokens = 0
    decision: _RemoteDecision | None = _RemoteDecision(task, 0, 0)
    pending: dict[str, Any] | None = None
    reason = ""
    fin: Finished | None = None

    def settle(d: _RemoteDecision) -> dict[str, Any]:
        nonlocal no_logprobs
        p, raw, mass, unseen = d.result()
        seen.update(d.seen)
        no_logprobs += d.no_logprobs
        return {"position": d.position, "p": p, "raw": raw, "mass": mass, "unseen": unseen, "start": d.start}

    def close(pending: dict[str, Any]) -> AlignStepRecord:
        item = text[pending["start"]:]
        step = AlignStep(len(steps), pending["position"], pending["p"], pending["raw"], pending["mass"],
                         pending["unseen"], item, _drawn(item, task))
        record = step_record(run, step, _measure_step(task, step, steps[-1] if steps else None), True)
        steps.append(step)
        return record

    try:
        for it in items:
            if isinstance(it, Finished):
                fin = it
                break
            n_tokens += 1
            if decision is not None and decision.feed(it):
                pending = settle(decision)
                decision = None
            text += it.token
            if opens_decision(it.piece):
                if decision is not None:  # a delimiter inside a followed path
                    pending = settle(decision)
                    decision = None
                if pending is not None:
                    yield close(pending)
                    pending = None
                if len(steps) >= n_draws or len(parse_draws(text, task)[0]) >= n_draws:
                    reason = "draws"
                    break
                decision = _RemoteDecision(task, n_tokens, len(text))
    finally:
        cast(Generator, items).close()  # stops the request when the draws are complete
    if decision is not None and decision.context:  # ended inside a followed path
        pending = settle(decision)
    if pending is not None:
        yield close(pending)
    if fin is not None and not reason:
        reason = fin.reason
        if fin.text.startswith(text):  # the server's text may hold a last partial character
            text = fin.text
        if fin.message and fin.reason != "cancelled":
            problems.append(f"server: {fin.message}")
    reason = reason or "incomplete"
    if no_logprobs:
        problems.append(f"the server sent no log-probabilities at {no_logprobs} step(s): P_token is undefined there")
    prefixed = sorted({o for o in task.outcomes for other in task.outcomes
                       if other != o and other.startswith(o)})
    if prefixed:
        problems.append("outcome(s) " + ", ".join(map(repr, prefixed)) + " begin other outcomes: from top-N "
                        "alternatives their end cannot be scored, so on a remote backend they also take the "
                        "probability of the longer outcomes written with the same first token")
    unseen_outcomes = [o for o in task.outcomes if o not in seen]
    if steps and unseen_outcomes and len(steps) > no_logprobs:
        problems.append("outcome(s) " + ", ".join(map(repr, unseen_outcomes)) + " never appeared among the "
                        "server's top-N alternatives at a decision step: either the model gave them little "
                        "probability or they are written in several tokens along a path the model did not take, "
                        "which top-N log-probabilities cannot score (counted as outside)")
    return _finish_run(task, n_draws, style, prompt, seed, steps, text, problems, reason, n_tokens, t0, True)


def remote_run(backend: OpenAICompatBackend, task: TaskDistribution, n_draws: int, settings: SamplerSettings = DEFAULT_SETTINGS,
               seed: int = 0, style: str = "completion", template: str | None = None,
               cancel: threading.Event | None = None, max_tokens: int | None = None, *,
               system: str | None = None) -> AlignRun:
    """One run on an OpenAI-compatible server (``OpenAICompatBackend``): a streamed completion
    (chat style: the prompt as the user message, after an optional ``system`` message) with
    top-N log-probabilities (``settings.top_n``, capped by what the server allows); P_token is
    estimated from them at every decision step (module docstring: what it cannot see). The seed
    is sent when the server accepts one (reproducibility is the server's). Ends like
    ``local_run``; once N items are written the request is closed. Every step and the run are
    ``estimated``. BackendError subclasses from the backend."""
    gen = _iter_remote(backend, task, n_draws, settings, seed, style, template, cancel, max_tokens, 0, system)
    return drain(gen)


# ============================================================================ repeated runs


def _is_local(backend: Backend) -> bool:
    """Local (P_token from the full distribution) or remote (estimated from the top-N), as the
    backend's ``capabilities`` say."""
    return backend.capabilities.full_logits


def _parallel_runs(backend: Backend, task, n_draws, runs, settings, seed, style, template, cancel, max_tokens, system, th,
                   width: int, done: list, local: bool) -> Generator[AlignStepRecord | AlignRunRecord, None, bool]:
    """The runs at once (``run_jobs``): parallel sequences of one context on the backend's model,
    or concurrent requests to the server. Their records are given in run order (the first
    unfinished run's as they arrive, a later run's once the runs before it have ended). Returns
    whether a Stop cut the set."""
    from app.core.parallel import JobResult, run_jobs

    width = min(width, runs)
    ctx = None
    if local:
        lb = cast("LocalEngine", backend)
        cells = min(lb.n_ctx * width, max(lb.n_ctx, 32768))
        ctx = lb.model.context(n_ctx=cells, n_seq=width, n_threads=lb.info.n_threads or None)
    body: Callable[..., Generator[Any, None, AlignRun]] = _iter_local if local else _iter_remote
    jobs = [(lambda b, r=r: body(b, task, n_draws, settings, seed + r, style, template, cancel,
                                 max_tokens, r, system, tick=True)) for r in range(runs)]
    waiting: dict[int, list] = {r: [] for r in range(runs)}
    ended: dict[int, JobResult] = {}
    head = 0
    cancelled = False
    try:
        for idx, item in run_jobs(jobs, max_parallel=width, cancel=cancel, context=ctx,
                                  backend=None if local else backend):
            if isinstance(item, JobResult):
                ended[idx] = item
            elif idx == head:
                yield item
                continue
            else:
                waiting[idx].append(item)
            while head in ended:
                res = ended.pop(head)
                if res.error is not None:
                    raise res.error
                if res.value is None:  # a Stop came before it started
                    cancelled = True
                else:
                    done.append(res.value)
                    yield res.value.record(head, th)
                    cancelled = cancelled or res.value.cancelled
                head += 1
                if head < runs:
                    for rec in waiting.pop(head):
                        yield rec
    finally:
        if ctx is not None:
            ctx.close()
    return cancelled or bool(cancel is not None and cancel.is_set())


def iter_align(backend: Backend, task: TaskDistribution, n_draws: int, runs: int = 1,
               settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0, *, style: str = "completion",
               template: str | None = None, cancel: threading.Event | None = None, max_tokens: int | None = None,
               thresholds: Thresholds | None = None, system: str | None = None, max_parallel: int = 1
               ) -> Generator[AlignStepRecord | AlignRunRecord, None, AlignSummary]:
    """``runs`` runs of ``task`` on ``backend`` (local when it has ``prepare``/``logits``/``feed``,
    remote when it has ``stream``); run r uses seed ``seed + r``. A generator of typed records
    (``app.labs.align.records``) in arrival order; its return value (``StopIteration.value``) is
    the summary.

    ``AlignStepRecord`` (kind "step"), yielded when the step's item is complete (so ``drawn`` is
    known): P_token in task order (NaN when undefined), its distances to P_task, ``tv_prev``
    (None at step 0). ``AlignRunRecord`` (kind "run"), after the run's steps: the text, the
    draws, P_result, the run's means, its verdict and its generation (local runs).

    ``AlignSummary``: every run's ``RunSummary``, ``diversity_across_runs``, the pooled
    ``verdict`` and the ``thresholds``, plus ``cancelled``, ``runs_requested``, ``runs_done``,
    ``n_draws``, ``style``, ``seed``, ``estimated``, ``backend`` ("local"/"remote") and
    ``settings`` (with the base seed and the token budget of each run).

    ``cancel`` is checked before every token and between runs; a run cut by it is kept (its steps
    are valid measurements), counted in the summary and marked ``cancelled``, and no further run
    starts. Bad arguments raise ValueError at the first ``next()``, before any record.

    ``max_parallel`` > 1: up to that many runs at once, as parallel sequences of one batched
    context on a local model (each run still from an empty cache with its own seed; llama.cpp's
    batch noise can move a draw now and then against a lone run) or as concurrent requests to a
    server. Records still come in run order; a
    Stop cuts every run in flight, each kept and marked ``cancelled``."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"the number of runs ({runs!r}) must be a whole number of at least 1")
    th = thresholds if thresholds is not None else Thresholds()
    local = _is_local(backend)
    _check(task, n_draws, settings, seed + runs - 1, style, template, max_tokens)
    done: list[AlignRun] = []
    cancelled = False
    if max_parallel > 1 and runs > 1 and (not local or backend.capabilities.sequences):
        cancelled = yield from _parallel_runs(backend, task, n_draws, runs, settings, seed, style, template, cancel,
                                              max_tokens, system, th, int(max_parallel), done, local)
    else:
        for r in range(runs):
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            body: Callable[..., Generator[Any, None, AlignRun]] = _iter_local if local else _iter_remote
            result = yield from body(backend, task, n_draws, settings, seed + r, style, template, cancel, max_tokens,
                                     r, system)
            done.append(result)
            yield result.record(r, th)
            if result.cancelled:
                cancelled = True
                break
    measures = [d.measures for d in done]
    return AlignSummary(
        task=SummaryTask.of(task), thresholds=th, runs=tuple(RunSummary.of(m, verdict(m, th)) for m in measures),
        diversity_across_runs=defined(diversity_across_runs([m.draws for m in measures])),
        verdict=verdict(measures or measure_run(task, []), th), cancelled=cancelled, runs_requested=runs,
        runs_done=len(done), n_draws=n_draws, style=style, seed=seed, estimated=not local,
        backend="local" if local else "remote",
        settings=_check(task, n_draws, settings, seed, style, template, max_tokens)[1])
