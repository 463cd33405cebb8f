"""Sampled-vs-ideal shift lab, headless: ask for A, I and S per concept, sampled or exact.

Owns:
- ``LocalShiftEngine``: a ``LlamaCppBackend`` (our sampler chain). ``answers`` runs the N
  sampled answers of a question at once as parallel sequences of one context (each with its own
  seed, each from an empty cache, each with its trace); ``exact`` enumerates the numeric
  answers token by token from the token tree (see below).
- ``RemoteShiftEngine``: a model on an OpenAI-compatible server (sampled answers only, as
  concurrent requests).
- ``exact_distribution`` -> ``ExactDistribution``; ``concept_record`` -> a ``ConceptRecord`` (one
  concept: A, I and S each measured the same way, alpha_hat, kept or dropped and why);
  ``iter_shift`` (a concept set, one ``ConceptRecord`` per concept as it arrives; returns the
  ``ShiftRunSummary``: ``app.labs.shift.stats.summarise`` with what was run); ``glub_record`` ->
  a ``GlubRecord`` / ``iter_glub`` (synthetic "glubbing" concepts: the sample against the shown
  average; returns the ``GlubSummary``). The records are the typed, frozen values of
  ``app.labs.shift.records``.

The exact method. After the prompt, the answer is read as a bare numeral: an optional single
leading space, digits, optionally "." and more digits, ended by any other token (a piece that
starts with digits and goes on with other characters, like "7%", ends the number inside that
token). At every node of that token tree the next-token distribution is the sampler chain's
(``apply_chain`` with the run's settings, exactly what sampled mode draws from), so the exact
distribution and a large sampled run agree within sampling error. XTC, which acts at a step with
probability ``xtc_probability``, makes each step the mixture of the chain with and without its
cut; Mirostat's mu and adaptive-p's average are carried along each path of the tree (with XTC
as well, a path's state follows the chain without XTC's cut: an approximation). Branches whose probability is
below ``min_mass`` are not expanded (their mass is reported as ``pruned``), numbers longer than
``max_tokens`` tokens likewise; mass that does not start a numeral is ``not_number``. The KV
cache is reused along the tree (depth-first order, ``prepare`` keeps the common prefix), so each
node costs one token evaluation.

Threads: everything runs on the calling thread (the lab worker in the window, the main thread
in ``samplescope shift``). Engines are used by one thread at a time. ``cancel`` is checked
between nodes and between answers. No Qt.

Just over 500 lines: the exact tree walk, the sampled answers and the concept and glubbing runs
share the engine's helpers and record builders; splitting them would spread one lab's engine.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generator, Mapping, Sequence, TypeAlias

import numpy as np

from app.core.records import plain
from app.core.sampling import SamplerState, apply_chain, history_needed, resolve_inputs, stage_names
from app.labs.shift.concepts import Concept, render
from app.labs.shift.glubbing import GlubSpec, make_glub
from app.labs.shift.numbers import extract_number
from app.labs.shift.records import (QUESTIONS, ConceptRecord, ExactResult, GlubRecord, GlubSummary, Prompts,
                                    SampledAnswer, ShiftRunSummary)
from app.labs.shift.stats import concept_result, distribution_mean, summarise
from backends.base import GenerationError, SamplerSettings
from backends.chat import conversation

if TYPE_CHECKING:
    from backends.llama_local import LlamaCppBackend
    from backends.openai_compat import OpenAICompatBackend

__all__ = ["LocalShiftEngine", "RemoteShiftEngine", "ExactDistribution", "exact_distribution",
           "bare_number", "concept_record", "iter_shift", "glub_record", "iter_glub", "SAMPLE_SETTINGS",
           "ANSWER_TOKENS", "MODES"]

ShiftEngine: TypeAlias = "LocalShiftEngine | RemoteShiftEngine"

MODES = ("sampled", "exact")
#: the paper's sampling temperature for S; top-k / top-p / min-p off
SAMPLE_SETTINGS = SamplerSettings(temperature=0.8, top_k=0, top_p=1.0, min_p=0.0, max_tokens=12,
                                  stop=("\n",), top_n=5)
ANSWER_TOKENS = 12
_BARE = re.compile(r"^ ?(\d+(?:\.\d+)?)(?!\d)")
_PIECE = re.compile(r"^(\d*)(\.?)(\d*)(.*)$", re.S)


def bare_number(text: str) -> float | None:
    """The numeral an answer starts with under the exact method's rule (an optional single
    space, digits, optionally "." and digits), or None. Sampled answers read with this rule
    are directly comparable with the exact distribution."""
    m = _BARE.match(text)
    return float(m.group(1)) if m else None


# ============================================================================ engines

def _answers(vs, prompt: str, settings: SamplerSettings, seeds: Sequence[int], style: str,
             cancel: threading.Event | None) -> list:
    """One answer per seed (``Answer``s: text, cut, trace), run at once as parallel sequences
    or concurrent requests (``vs.run``), in seed order; answers a Stop kept from starting are
    left out."""
    from app.core.parallel import JobResult

    kw = {"messages": conversation(prompt)} if style == "chat" else {"text": prompt}
    jobs = [(lambda where, seed=int(seed) & 0xFFFFFFFF: vs.answer(where, settings=settings, seed=seed,
                                                                  cancel=cancel, **kw)) for seed in seeds]
    out: list = [None] * len(jobs)
    for i, item in vs.run(jobs, cancel):
        if isinstance(item, JobResult):
            if item.error is not None:
                raise item.error
            out[i] = item.value
    return [a for a in out if a is not None]


class LocalShiftEngine:
    """A local GGUF model for the shift lab (see the module docstring): ``backend`` (a
    ``LlamaCppBackend``) walks the exact token tree; sampled answers run as parallel sequences
    of a second context on the same loaded model (``LocalVSEngine``)."""

    def __init__(self, backend: LlamaCppBackend, *, max_parallel: int | None = None) -> None:
        self.backend = backend
        self.name = backend.info.name
        self._vocab: tuple[np.ndarray, list[str]] | None = None
        self._max_parallel = max_parallel
        self._vs_engine = None
        self.capabilities = backend.capabilities

    @property
    def _vs(self):
        """The parallel answer engine, made on first use (a second context on the same model)."""
        if self._vs_engine is None:
            from app.labs.vs.engine import LocalVSEngine

            self._vs_engine = LocalVSEngine(self.backend.model, n_ctx=min(self.backend.n_ctx, 512),
                                            max_parallel=self._max_parallel)
        return self._vs_engine

    @classmethod
    def open(cls, model_path, n_ctx: int = 1024, n_threads: int | None = None) -> "LocalShiftEngine":
        from backends.open import local_source, open_backend

        return cls(open_backend(local_source(str(model_path), n_ctx=n_ctx, n_threads=n_threads or 0)))

    def close(self) -> None:
        if self._vs_engine is not None:
            self._vs_engine.close()
        self.backend.close()

    def _prompt(self, prompt: str, style: str) -> tuple[str, bool]:
        if style == "chat":
            return self.backend.format_chat(conversation(prompt)), True
        return prompt, False

    def answer(self, prompt: str, settings: SamplerSettings, seed: int, *, style: str = "completion",
               cancel: threading.Event | None = None) -> str:
        """One answer from an empty cache (so a seed repeats it)."""
        return self.answers(prompt, settings, [seed], style=style, cancel=cancel)[0]

    def answers(self, prompt: str, settings: SamplerSettings, seeds: Sequence[int], *, style: str = "completion",
                cancel: threading.Event | None = None) -> list:
        return _answers(self._vs, prompt, settings, seeds, style, cancel)

    def numeric_vocab(self) -> tuple[np.ndarray, list[str]]:
        """(ids of tokens whose piece starts with a digit or ".", optionally after one space;
        their pieces). Built once per engine (about a second for a 262k vocabulary)."""
        if self._vocab is None:
            b = self.backend
            ids, pieces = [], []
            for t in range(b.n_vocab):
                raw = b.token_bytes(t)
                if raw[:1].isdigit() or raw[:1] == b"." or (raw[:1] == b" " and raw[1:2].isdigit()) or raw == b" ":
                    ids.append(t)
                    pieces.append(raw.decode("utf-8", errors="replace"))
            self._vocab = (np.asarray(ids, dtype=np.int64), pieces)
        return self._vocab

    def exact(self, prompt: str, settings: SamplerSettings, *, style: str = "completion", min_mass: float = 1e-3,
              max_tokens: int = 6, cancel: threading.Event | None = None) -> "ExactDistribution":
        text, special = self._prompt(prompt, style)
        return exact_distribution(self, text, settings, min_mass=min_mass, max_tokens=max_tokens, cancel=cancel,
                                  parse_special=special)


class RemoteShiftEngine:
    """A model on an OpenAI-compatible server: sampled answers only (no logits for the exact
    method), as concurrent requests. Chat style sends the prompt as the user message."""

    def __init__(self, backend: OpenAICompatBackend, *, max_parallel: int = 4) -> None:
        from app.labs.vs.engine import RemoteVSEngine

        self._vs = RemoteVSEngine(backend, None, max_parallel=max_parallel)
        self.backend = backend
        self.name = self._vs.name

    @property
    def capabilities(self):
        return self.backend.capabilities

    def close(self) -> None:
        self.backend.close()

    def answer(self, prompt: str, settings: SamplerSettings, seed: int, *, style: str = "completion",
               cancel: threading.Event | None = None) -> str:
        return self.answers(prompt, settings, [seed], style=style, cancel=cancel)[0]

    def answers(self, prompt: str, settings: SamplerSettings, seeds: Sequence[int], *, style: str = "completion",
                cancel: threading.Event | None = None) -> list:
        return _answers(self._vs, prompt, settings, seeds, style, cancel)

    def exact(self, *args, **kwargs):
        raise GenerationError("The exact method needs the model's next-token probabilities at every digit: "
                              "only for local models. Use the sampled method with a server.")


# ============================================================================ exact enumeration

@dataclass(frozen=True)
class ExactDistribution:
    """The probability of every bare numeric answer, from the token tree.

    ``values`` ascending with their probabilities ``probs`` (not renormalised: they sum to
    ``covered``). ``not_number``: mass of answers that do not start with a numeral;
    ``pruned``: mass of branches not expanded (below ``min_mass`` or longer than the token
    limit). covered + not_number + pruned = 1 up to rounding. ``mean`` is the mean over the
    numeric answers (renormalised over ``covered``)."""

    values: tuple[float, ...]
    probs: tuple[float, ...]
    covered: float
    not_number: float
    pruned: float
    nodes: int
    seconds: float
    min_mass: float
    cancelled: bool = False

    @property
    def mean(self) -> float:
        if not self.values or self.covered <= 0:
            return math.nan
        return distribution_mean(self.values, self.probs).mean

    def probability(self, value: float) -> float:
        for v, p in zip(self.values, self.probs):
            if v == value:
                return p
        return 0.0

    def record(self) -> ExactResult:
        """The distribution as a record stores it (seconds rounded to ms; the mean None without numeric answers)."""
        return ExactResult(self.values, self.probs, self.covered, self.not_number, self.pruned, self.nodes,
                           round(self.seconds, 3), self.min_mass, _finite(self.mean), self.cancelled)

    def to_dict(self) -> dict[str, Any]:
        return plain(self.record())


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class _Node:
    tokens: tuple[int, ...]  # generated so far
    prob: float
    state: str  # "start", "space", "int", "dot", "dec"
    text: str  # the numeral so far (without the leading space)
    chain_state: SamplerState | None = None  # Mirostat's mu and adaptive-p's average along this path


def _value(text: str) -> float:
    return float(text.rstrip("."))


def exact_distribution(engine: LocalShiftEngine, prompt: str, settings: SamplerSettings, *, min_mass: float = 1e-3,
                       max_tokens: int = 6, cancel: threading.Event | None = None,
                       parse_special: bool = False) -> ExactDistribution:
    """Enumerate the numeric answers to ``prompt`` (see the module docstring)."""
    t0 = time.perf_counter()
    b = engine.backend
    settings.validate()
    if parse_special:
        prompt_tokens = b.tokenize(prompt, add_special=True, parse_special=True)
    else:
        prompt_tokens = b.tokenize(prompt, add_special=True)
    num_ids, pieces = engine.numeric_vocab()
    piece_of = dict(zip(num_ids.tolist(), pieces))
    p_full = np.zeros(b.n_vocab, dtype=np.float64)
    masses: dict[float, float] = {}
    not_number = pruned = 0.0
    nodes = 0
    stack = [_Node((), 1.0, "start", "", SamplerState.initial(settings))]
    bias, breakers = resolve_inputs(settings, b)
    need = history_needed(settings)
    # XTC acts at a step with probability xtc_probability: the step's distribution is the mixture
    xtc_q = min(1.0, settings.xtc_probability) if "xtc" in stage_names(settings) else 0.0
    cancelled = False
    while stack:
        if cancel is not None and cancel.is_set():
            cancelled = True
            pruned += sum(n.prob for n in stack)
            break
        node = stack.pop()
        if node.prob < min_mass or len(node.tokens) >= max_tokens:
            pruned += node.prob
            continue
        b.prepare(prompt_tokens + list(node.tokens))
        nodes += 1
        history = (prompt_tokens + list(node.tokens))[-need:] if need > 0 else ()
        logits = b.logits()
        chain = apply_chain(logits, settings, history, top_n=0, logit_bias=bias, dry_breakers=breakers,
                            state=node.chain_state, xtc_draw=2.0)  # XTC does not act (draw above any probability)
        p_full[:] = 0.0
        p_full[chain.ids] = chain.probs * (1.0 - xtc_q)
        if xtc_q > 0:
            acting = apply_chain(logits, settings, history, top_n=0, logit_bias=bias, dry_breakers=breakers,
                                 state=node.chain_state, xtc_draw=0.0)
            p_full[acting.ids] += acting.probs * xtc_q
        p_num = p_full[num_ids]
        # mass of tokens that cannot continue a numeral: they end it here (or, at the start,
        # the answer is not a number)
        ending = max(0.0, 1.0 - float(p_num.sum()))
        children: list[_Node] = []
        for j in np.flatnonzero(p_num > 0):
            tok, q = int(num_ids[j]), float(p_num[j]) * node.prob
            piece = piece_of[tok]
            kind, child = _step(node, piece)
            if kind == "end":  # the token does not continue a numeral
                ending += float(p_num[j])
            elif kind == "leaf":  # the numeral ends inside this token ("7%", "5 ")
                masses[child] = masses.get(child, 0.0) + q
            else:
                children.append(_Node(node.tokens + (tok,), q, kind, child, chain.next_state(tok)))
        end_mass = ending * node.prob
        if end_mass <= 0.0:
            pass
        elif node.state in ("int", "dot", "dec"):
            v = _value(node.text)
            masses[v] = masses.get(v, 0.0) + end_mass
        else:
            not_number += end_mass
        # most probable child last, so it is expanded next (keeps the KV cache path hot)
        stack.extend(sorted(children, key=lambda n: n.prob))
    values = tuple(sorted(masses))
    probs = tuple(masses[v] for v in values)
    covered = float(sum(probs))
    return ExactDistribution(values, probs, covered, float(not_number), float(pruned), nodes,
                             time.perf_counter() - t0, float(min_mass), cancelled)


def _step(node: _Node, piece: str) -> tuple[str, Any]:
    """How ``piece`` continues the numeral of ``node``: ("end", None) if it does not,
    ("leaf", value) if the numeral ends inside it, or (state, text) to go on."""
    state, text = node.state, node.text
    if state in ("start", "space"):
        if piece.startswith(" "):
            if state == "space":
                return "end", None  # a second space: not a bare numeral
            if piece == " ":
                return "space", ""
            piece = piece[1:]
        if not piece[:1].isdigit():
            return "end", None  # "." or ".5" cannot start a numeral
    match = _PIECE.match(piece)
    assert match is not None  # the pattern matches any string (every group may be empty)
    digits, dot, decimals, rest = match.groups()
    if state in ("dot", "dec"):
        if not digits:
            return "end", None  # "7." then anything but digits: the number was 7
        text += digits
        return ("dec", text) if not (dot or rest) else ("leaf", _value(text))
    if state == "int" and not digits and not dot:
        return "end", None
    text += digits
    if not dot:
        return ("int", text) if not rest else ("leaf", _value(text))
    if decimals:
        text = f"{text}.{decimals}"
        return ("dec", text) if not rest else ("leaf", _value(text))
    return ("dot", text + ".") if not rest else ("leaf", _value(text))


# ============================================================================ one concept

def _answer_record(answer) -> SampledAnswer:
    raw = str(answer)
    parsed = extract_number(raw)
    return SampledAnswer(raw, parsed.value, parsed.error, bare_number(raw), getattr(answer, "trace", None))


def _ask_many(engine: ShiftEngine, prompt: str, settings: SamplerSettings, seeds: Sequence[int], style: str,
              cancel) -> tuple[SampledAnswer, ...]:
    return tuple(map(_answer_record, engine.answers(prompt, settings, list(seeds), style=style, cancel=cancel)))


@dataclass(frozen=True)
class _Measured:
    """One question: ``exact`` (exact mode) or ``answers`` (sampled), the value, why there is none."""

    exact: ExactResult | None
    answers: tuple[SampledAnswer, ...] | None
    value: float | None
    error: str | None

    @property
    def parsed(self) -> int | None:
        return None if self.answers is None else sum(a.value is not None for a in self.answers)


def _measure(engine: ShiftEngine, prompt: str, mode: str, samples: int, settings: SamplerSettings, seed: int, style: str,
             min_mass: float, cancel) -> _Measured:
    if mode == "exact":
        dist = engine.exact(prompt, settings, style=style, min_mass=min_mass, cancel=cancel)
        value = _finite(dist.mean)
        return _Measured(dist.record(), None, value,
                         None if value is not None else "no numeric answer in the exact distribution")
    answers = () if cancel is not None and cancel.is_set() else _ask_many(
        engine, prompt, settings, [seed + i for i in range(samples)], style, cancel)
    nums = [a.value for a in answers if a.value is not None]
    return _Measured(None, answers, float(np.mean(nums)) if nums else None,
                     None if nums else f"none of the {len(answers)} sampled answers held a number")


def concept_record(engine: ShiftEngine, concept: Concept, *, mode: str = "sampled", samples: int = 10,
                   settings: SamplerSettings = SAMPLE_SETTINGS, seed: int = 0, style: str = "completion",
                   templates: Mapping | None = None, min_mass: float = 1e-3,
                   cancel: threading.Event | None = None, index: int = 0) -> ConceptRecord:
    """A, I and S for one concept, with alpha_hat and whether it is kept (and why not).

    All three questions are measured the same way, in fresh contexts: sampled, the mean of
    ``samples`` answers (seeds seed.. for A, seed+N.. for I, seed+2N.. for S); exact, the mean
    of the numeric-answer distribution (recorded in full). One greedy answer is not used for A
    and I: small base models' greedy answers degenerate ("10000000000"), and measuring A, I and
    S alike keeps them comparable. Raw answers are kept beside their numbers. ``index``: the
    concept's place in its run."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    t0 = time.perf_counter()
    prompts = Prompts(*(render(concept, kind, style, templates) for _key, kind in QUESTIONS))
    got = {key: _measure(engine, getattr(prompts, kind), mode, samples, settings, seed + j * samples, style,
                         min_mass, cancel)
           for j, (key, kind) in enumerate(QUESTIONS)}
    a, i, s = got["A"], got["I"], got["S"]
    res = concept_result(concept.id, concept.name, concept.domain, a.value, i.value, s.value,
                         a_error=a.error, i_error=i.error, s_error=s.error)
    return ConceptRecord(
        concept_id=concept.id, name=concept.name, domain=concept.domain, unit=concept.unit, mode=mode,
        prompts=prompts, A_exact=a.exact, I_exact=i.exact, S_exact=s.exact,
        A_answers=a.answers, A_parsed=a.parsed, I_answers=i.answers, I_parsed=i.parsed,
        S_answers=s.answers, S_parsed=s.parsed,
        A=_finite(res.A), I=_finite(res.I), S=_finite(res.S), alpha=_finite(res.alpha),
        alpha_hat=_finite(res.alpha_hat), kept=res.kept, reason=res.reason,
        seconds=round(time.perf_counter() - t0, 3), interrupted=cancel is not None and cancel.is_set(),
        index=index)


def iter_shift(engine: ShiftEngine, concepts: Sequence[Concept], *, mode: str = "sampled", samples: int = 10,
               settings: SamplerSettings = SAMPLE_SETTINGS, seed: int = 0, style: str = "completion",
               templates: Mapping | None = None, min_mass: float = 1e-3,
               cancel: threading.Event | None = None) -> Generator[ConceptRecord, None, ShiftRunSummary]:
    """One ``ConceptRecord`` per concept as it arrives; returns the set's ``ShiftRunSummary``
    (``summarise`` with ``cancelled``). A concept cut by Stop is reported (``interrupted``) but
    not counted."""
    results = []
    cancelled = False
    for i, concept in enumerate(concepts):
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        rec = concept_record(engine, concept, mode=mode, samples=samples, settings=settings, seed=seed + 1000 * i,
                             style=style, templates=templates, min_mass=min_mass, cancel=cancel, index=i)
        yield rec
        if rec.interrupted:
            cancelled = True
            break
        results.append(rec.result())
    return ShiftRunSummary.of(summarise(results), cancelled=cancelled, mode=mode, model=engine.name,
                              n_concepts=len(concepts))


# ============================================================================ glubbing

def glub_record(engine: ShiftEngine, spec: GlubSpec, *, mode: str = "exact", samples: int = 10,
                settings: SamplerSettings = SAMPLE_SETTINGS, seed: int = 0, style: str = "completion",
                min_mass: float = 1e-3, cancel: threading.Event | None = None, index: int = 0) -> GlubRecord:
    """One synthetic concept: the shown average and ideal (``ideal`` is what the grades imply: the
    mean of the values graded A or A+; ``ideal_setting`` the swept peak, if any), and the model's
    sample S (exact mean or sampled mean of the first number that comes to mind). ``index``: its
    place in the sweep."""
    g = make_glub(spec)
    prompt = g.prompt_chat if style == "chat" else g.prompt_completion
    exact: ExactResult | None = None
    answers: tuple[SampledAnswer, ...] | None = None
    if mode == "exact":
        dist = engine.exact(prompt, settings, style=style, min_mass=min_mass, max_tokens=5, cancel=cancel)
        exact = dist.record()
        S = _finite(dist.mean)
    else:
        answers = () if cancel is not None and cancel.is_set() else _ask_many(
            engine, prompt, settings, [seed + i for i in range(samples)], style, cancel)
        nums = [a.value for a in answers if a.value is not None]
        S = float(np.mean(nums)) if nums else None
    return GlubRecord(id=g.id, valence=spec.valence, mean=float(spec.mean), spread=float(spec.spread),
                      shape=spec.shape, n_examples=int(spec.n_examples), seed=spec.seed, average=g.average,
                      ideal=g.ideal, ideal_setting=None if spec.ideal is None else float(spec.ideal), mode=mode, S_exact=exact, S_answers=answers, S=S,
                      shift=None if S is None else S - g.average, index=index)


def iter_glub(engine: ShiftEngine, specs: Sequence[GlubSpec], **kwargs) -> Generator[GlubRecord, None, GlubSummary]:
    """One ``GlubRecord`` per synthetic concept; returns the per-valence mean shifts (S - average)."""
    cancel = kwargs.get("cancel")
    by_valence: dict[str, list[float]] = {}
    for i, spec in enumerate(specs):
        if cancel is not None and cancel.is_set():
            break
        rec = glub_record(engine, spec, index=i, **kwargs)
        yield rec
        if rec.shift is not None:
            by_valence.setdefault(spec.valence, []).append(rec.shift)
    return GlubSummary(mean_shift={v: float(np.mean(s)) for v, s in by_valence.items()},
                       n={v: len(s) for v, s in by_valence.items()},
                       cancelled=bool(cancel is not None and cancel.is_set()))
