"""Verbalized Sampling lab, headless: engines, one VS run, and Direct-vs-VS comparisons.

Owns:
- ``LocalVSEngine``: a GGUF model on the one engine (``backends.llama_engine``: a loaded
  ``LlamaModel``, shared with the Workbench, or a path opened here); answers run through
  ``GenerationSession`` with the sampler chain, as parallel sequences of one context, a VS
  answer held to its JSON schema by the grammar stage (``backends.grammar``; so even the 270M
  model returns valid JSON), each answer with its trace; embeddings from the model's embedding
  context (mean pooling); ``continuation_logprob`` for "what the model says vs what it does".
- ``RemoteVSEngine``: an ``OpenAICompatBackend``; the server's JSON-schema response format when
  the probe found one, otherwise a plain request read by the lenient parser; ``/v1/embeddings``.
- ``run_vs_once`` -> ``VSOutcome``; ``single_run_record`` -> ``VSRunRecord`` (with "what the
  model does", ``model_distribution``); ``compare`` / ``iter_compare`` -> a ``VSRunRecord`` per
  run as it arrives, then the ``Comparison`` (metrics of both arms and the VS/Direct ratios;
  precision, coverage-N and KL to a reference for enumerable questions), whose ``summary`` is
  the ``VSSummary`` the lab stores. The records, params and summary are the lab's typed values
  (``app.labs.vs.records``).

Threads: everything runs on the thread that calls it (the lab's worker thread in the window,
the main thread in ``samplescope vs``). An engine holds a llama.cpp context or an HTTP client
and must be used by one thread at a time. ``compare`` checks its ``cancel`` event between runs.
No Qt.

Over 500 lines: the VS lab's two engines, its runs and its comparisons, which share the
outcome of a run.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Generator, Mapping, Sequence, TypeAlias, cast

import numpy as np

from app.core import metrics
from app.core.streams import drain
from app.labs.vs.parse import ParsedAnswer, ParseStats, VSParseError, parse_vs_answer
from app.labs.vs.prompts import MULTI_TURN_METHODS, VSRequest, build_request
from app.labs.vs.records import Arm, Metrics, ModelDistribution, RunCounts, StatedCandidate, VSRunRecord, VSSummary
from backends.base import BackendError, GenerationError, SamplerSettings
from backends.chat import conversation
from backends.kinds import Backend, LocalEngine

if TYPE_CHECKING:
    from backends.llama_engine import EmbeddingContext
    from backends.openai_compat import OpenAICompatBackend

__all__ = ["LocalVSEngine", "RemoteVSEngine", "VSOutcome", "Comparison", "run_vs_once", "draw",
           "compare", "iter_compare", "single_run_record", "arm_metrics", "model_distribution", "DEFAULT_SETTINGS"]

VSEngine: TypeAlias = "LocalVSEngine | RemoteVSEngine"

#: the paper's sampling settings (temperature 0.7, top-p 1.0), with room for k JSON candidates
DEFAULT_SETTINGS = SamplerSettings(temperature=0.7, top_p=1.0, top_k=0, min_p=0.0, max_tokens=256)


# ============================================================================ engines

#: GBNF for a probability: 0, 1, 0.x .. 0.xxxx, 1.0
_PROB_RULE = 'number ::= ("0" ("." [0-9] ([0-9] ([0-9] ([0-9])?)?)?)? | "1" ("." "0")?) space'

class Answer(str):
    """An engine's answer: its text, ``cut`` (True when the token limit ended it before the
    model did: a grammar-held JSON answer is then incomplete, and that is why it cannot be read,
    not the parser) and ``trace`` (the generation's record, ``app.core.export.generation_record``:
    every step, openable in the Workbench; None from a server)."""

    cut: bool
    trace: dict | None

    def __new__(cls, text: str, cut: bool = False, trace: dict | None = None) -> "Answer":
        self = super().__new__(cls, text)
        self.cut = bool(cut)
        self.trace = trace
        return self


def _texts_for_embedding(texts: Sequence[str]) -> list[str]:
    return [t if str(t).strip() else " " for t in texts]


def _prob_gbnf(schema: dict) -> str:
    """GBNF of ``schema`` (llama-cpp-python's converter, through ``backends.grammar``) with the
    number rule narrowed to 0..1 with at most 4 decimals: the converter ignores minimum/maximum,
    and unbounded digits cost the small model many grammar steps."""
    from backends.grammar import schema_to_gbnf

    return re.sub(r"(?m)^number ::= .*$", _PROB_RULE, schema_to_gbnf(schema))


class LocalVSEngine:
    """A local GGUF model for the VS lab, on the one engine (``backends.llama_engine``).

    ``model``: a loaded ``LlamaModel`` (shared with the Workbench: the weights are loaded once)
    or a path (loaded here). Answers run through ``GenerationSession`` with the Sampling panel's
    chain, a JSON-schema answer held by the grammar stage; each answer carries its trace.
    ``max_parallel`` answers run at once as sequences of one context (``run``); one alone is the
    exact single-sequence path."""

    def __init__(self, model, n_ctx: int = 2048, n_threads: int | None = None, *,
                 max_parallel: int | None = None) -> None:
        from app.core.parallel import default_parallel
        from backends.llama_engine import LlamaModel

        self._owns = not isinstance(model, LlamaModel)
        if self._owns:  # a path: the model is opened here, the one way (backends.open)
            from backends.open import local_source, open_backend

            self._backend = open_backend(local_source(str(model), n_ctx=int(n_ctx), n_threads=int(n_threads or 0)))
            model = self._backend.model
        self.model = model
        self.model_path = str(model.path)
        self.n_ctx = int(n_ctx) or model.n_ctx_train
        self.max_parallel = max(1, int(max_parallel or default_parallel(self.n_ctx * 4, 512)))
        try:
            # room for every parallel answer: n_ctx per sequence, up to 16,384 cells in all
            cells = min(self.n_ctx * self.max_parallel, max(self.n_ctx, 16384))
            self.context = model.context(n_ctx=cells, n_seq=self.max_parallel, n_threads=n_threads)
        except BaseException:
            if self._owns:
                self._backend.close()
            raise
        self._embedder: EmbeddingContext | None = None
        self._gbnf: dict[str, str] = {}
        self.name = model.info.name
        from backends.llama_local import local_capabilities

        self.capabilities = local_capabilities(model)

    def close(self) -> None:
        for part in (self._embedder, self.context):
            if part is not None:
                try:
                    part.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
        self._embedder = None
        if self._owns:
            self._backend.close()

    # ------------------------------------------------------------------ answers
    def grammar(self, schema: dict):
        from backends.grammar import Grammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._gbnf:
            self._gbnf[key] = _prob_gbnf(schema)
        return Grammar(self.model, self._gbnf[key])

    def answer(self, seq: LocalEngine, *, text: str | None = None, messages: Sequence[dict] | None = None,
               schema: dict | None = None, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
               stop: Sequence[str] = (), cancel: threading.Event | None = None):
        """One completion (``text``) or chat answer (``messages``) on the sequence ``seq``, held
        to ``schema`` by the grammar stage: a generator of the answer's steps that returns the
        ``Answer`` (what was produced before a Stop included)."""
        from app.core.export import generation_record
        from app.core.session import GenerationSession

        special = messages is not None
        prompt = self.model.format_chat(list(messages)) if messages is not None else (text or "")
        st = replace(settings, seed=int(seed) & 0xFFFFFFFF, stop=tuple(settings.stop) + tuple(stop))
        session = GenerationSession(seq, prompt, st, parse_special=special,
                                    grammar=self.grammar(schema) if schema is not None else None)
        for item in session.run(cancel):
            yield item
        fin = session.cancel() if session.finished is None else session.finished  # run() ends with one
        return Answer(fin.text, cut=fin.reason == "length",
                      trace=generation_record(prompt, st, session.steps, fin, self.name))

    def run(self, jobs, cancel: threading.Event | None = None):
        """Run ``jobs`` (functions of a sequence, see ``app.core.parallel``) as parallel
        sequences: ``(job index, item)`` as they come."""
        from app.core.parallel import run_jobs

        return run_jobs(jobs, context=self.context, max_parallel=self.max_parallel, cancel=cancel)

    def one(self):
        """The sequence a single answer runs on, emptied first (so a seed repeats a run)."""
        self.context.reset()
        return self.context.sequence(0)

    def generate(self, *, text: str | None = None, messages: Sequence[dict] | None = None,
                 schema: dict | None = None, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
                 stop: Sequence[str] = (), cancel: threading.Event | None = None) -> Answer:
        """``answer`` on the first sequence, to its end."""
        return drain(self.answer(self.one(), text=text, messages=messages, schema=schema, settings=settings,
                                 seed=seed, stop=stop, cancel=cancel))

    # ------------------------------------------------------------------ measures
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One mean-pooled embedding row per text, from the same model in embedding mode."""
        if not texts:
            return np.zeros((0, 0))
        embedder = self._embedder
        if embedder is None:
            embedder = self._embedder = self.model.embedding_context(min(self.n_ctx, 1024))
        return embedder.embed(_texts_for_embedding(texts))

    def continuation_logprob(self, prefix: str, text: str) -> float:
        """log P(text | prefix) in nats under the model (no sampler): the sum of the log-softmax of
        each of ``text``'s tokens, evaluated one token at a time after ``prefix``."""
        seq = self.context.sequence(0)  # its prefix is reused from one candidate to the next
        pre = self.model.tokenize(prefix, add_special=True)
        cont = self.model.tokenize(text, add_special=False)
        if not cont:
            return 0.0
        if len(pre) + len(cont) >= seq.n_ctx:
            raise GenerationError("the prefix and the candidate do not fit in the context window")
        seq.prepare(pre)
        total = 0.0
        for tok in cont:
            logits = seq.logits().astype(np.float64)
            m = logits.max()
            total += float(logits[tok] - m - math.log(np.exp(logits - m).sum()))
            seq.feed(tok)
        return total


class RemoteVSEngine:
    """A model on an OpenAI-compatible server for the VS lab (see the module docstring).

    ``caps`` is the backend's ``ServerCapabilities`` from ``probe`` (None: nothing known, so no
    JSON-schema response format is sent and answers go through the lenient parser). The probe
    checks the response format on the chat endpoint when there is one, so with a schema and a
    verified format a completion-style text is sent to ``/chat/completions`` as the user message.
    Uses the backend's non-streamed ``_request_json`` (retries, error mapping, cancel)."""

    def __init__(self, backend: OpenAICompatBackend, caps=None, *, max_parallel: int = 4) -> None:
        self.backend = backend
        self.caps = caps
        self.name = backend.model or backend.base_url
        self.max_parallel = max(1, int(max_parallel))

    @property
    def capabilities(self):
        return self.backend.capabilities

    def one(self):
        return self.backend

    def answer(self, backend: OpenAICompatBackend, **kw):
        """``generate`` as a job's generator (a request has no tokens to tick on)."""
        return self.generate(**kw)
        yield  # unreachable: makes this a generator

    def run(self, jobs, cancel: threading.Event | None = None):
        """Run ``jobs`` as concurrent requests, at most ``max_parallel`` in flight."""
        from app.core.parallel import run_jobs

        return run_jobs(jobs, backend=self.backend, max_parallel=self.max_parallel, cancel=cancel)

    @property
    def structured(self) -> bool:
        return bool(self.caps is not None and self.caps.json_schema)

    def close(self) -> None:
        self.backend.close()

    def _response_format(self, schema: dict) -> dict | None:
        if not self.structured:
            return None
        if self.caps.json_schema_style == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "vs_answer", "schema": schema, "strict": True}}

    def generate(self, *, text: str | None = None, messages: Sequence[dict] | None = None,
                 schema: dict | None = None, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
                 stop: Sequence[str] = (), cancel: threading.Event | None = None) -> str:
        b = self.backend
        body: dict[str, Any] = {"max_tokens": settings.max_tokens, "temperature": settings.temperature,
                                "top_p": settings.top_p, "stream": False}
        if b.model:
            body["model"] = b.model
        accepted = self.caps.accepted if self.caps is not None else frozenset()
        if self.caps is None or "seed" in accepted:
            body["seed"] = int(seed)
        if "top_k" in accepted and settings.top_k > 0:
            body["top_k"] = settings.top_k
        if "min_p" in accepted and settings.min_p > 0:
            body["min_p"] = settings.min_p
        stops = list(settings.stop) + list(stop)
        if stops:
            body["stop"] = stops[:4]
        if schema is not None:
            fmt = self._response_format(schema)
            if fmt is not None:
                body["response_format"] = fmt
                if messages is None and self.caps.chat:
                    # the probe verified the response format on the chat endpoint (it tries chat
                    # first), so a completion-style request goes there as one user message
                    messages = conversation(text or "")
        if messages is not None:
            body["messages"] = list(messages)
            obj = b._request_json("POST", "/chat/completions", body, model=b.model, cancel=cancel)
            try:
                choice = obj["choices"][0]
                return Answer(choice["message"].get("content") or "", cut=choice.get("finish_reason") == "length")
            except (KeyError, IndexError, TypeError, AttributeError) as exc:
                raise BackendError(f"The server's chat answer has no text: {str(obj)[:200]}") from exc
        body["prompt"] = text
        obj = b._request_json("POST", "/completions", body, model=b.model, cancel=cancel)
        try:
            choice = obj["choices"][0]
            return Answer(choice["text"] or "", cut=choice.get("finish_reason") == "length")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(f"The server's completion has no text: {str(obj)[:200]}") from exc

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings from the server's ``/v1/embeddings``; BackendError if it has none."""
        if not texts:
            return np.zeros((0, 0))
        b = self.backend
        body: dict[str, Any] = {"input": _texts_for_embedding(texts)}
        if b.model:
            body["model"] = b.model
        try:
            obj = b._request_json("POST", "/embeddings", body, model=b.model, retry_5xx=False)
            data = sorted(obj["data"], key=lambda d: d.get("index", 0))
            arr = np.asarray([np.asarray(d["embedding"], dtype=np.float64).reshape(-1) for d in data])
        except BackendError as exc:
            raise BackendError(f"The server at {b.base_url} gives no embeddings (/v1/embeddings: {exc}); "
                               "semantic diversity needs an embedding model.") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"The server at {b.base_url} answered /v1/embeddings without usable "
                               f"vectors ({exc}).") from exc
        if arr.ndim != 2 or arr.shape[0] != len(texts):
            raise BackendError(f"The server at {b.base_url} returned {arr.shape[0]} embeddings for "
                               f"{len(texts)} texts.")
        return arr


# ============================================================================ one run

@dataclass(frozen=True)
class VSOutcome:
    """One run of a method: the raw answer, what was read from it, and the drawn candidate.

    ``parsed`` is None and ``error`` holds the message when nothing could be read (a counted
    parse failure, never an empty candidate). ``samples`` are the texts that count as samples
    for the diversity metrics (all k candidates for VS; the one answer for Direct).
    ``drawn`` / ``drawn_index`` come from a seeded draw from the stated distribution after the
    tau filter; ``kept`` are the candidate indices tau kept; ``notes`` say what tau removed.
    """

    method: str
    raw: str
    parsed: ParsedAnswer | None
    error: str | None
    samples: tuple[str, ...]
    drawn: str | None
    drawn_index: int | None
    kept: tuple[int, ...]
    notes: tuple[str, ...]
    seconds: float
    seed: int
    #: some turn ended at the token limit, before the model finished it
    cut: bool = False
    #: a Stop cut some turn short (the run is reported, not counted)
    cancelled: bool = False
    #: each turn's generation record (local engines; ``app.core.export.generation_record``)
    traces: tuple[dict, ...] = ()

    def record(self, arm: Arm, run: int, *, interrupted: bool = False,
               model: ModelDistribution | None = None) -> VSRunRecord:
        """The run as the lab's record: run ``run`` of ``arm``, ``interrupted`` when a Stop cut
        it, ``model`` ("what the model does") for a single run."""
        p = self.parsed
        return VSRunRecord(
            arm=arm, run=run, method=self.method, raw=self.raw, error=self.error, samples=tuple(self.samples),
            candidates=tuple(StatedCandidate(c.text, c.weight, q) for c, q in zip(p.candidates, p.probabilities))
            if p else (),
            repairs=tuple(p.repairs) if p else (), problems=tuple(p.problems) if p else (),
            source_format=p.source_format if p else None, drawn=self.drawn, drawn_index=self.drawn_index,
            kept=tuple(self.kept), notes=tuple(self.notes), seconds=round(self.seconds, 3), seed=self.seed,
            cut=self.cut, traces=tuple(self.traces), interrupted=interrupted, model=model)


def draw(probabilities: Sequence[float], seed: int, tau: float | None = None
         ) -> tuple[int | None, tuple[int, ...], tuple[str, ...]]:
    """Seeded draw from a stated distribution after the post-filter p >= tau.

    Returns (drawn index or None, kept indices, notes). Candidates tau removes are named in a
    note; if tau removes all of them nothing is drawn (and a note says so).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    notes: list[str] = []
    idx = np.arange(len(p))
    if tau is not None and tau > 0:
        keep = idx[p >= tau]
        removed = len(p) - len(keep)
        if removed:
            notes.append(f"tau = {tau:g} removed {removed} of {len(p)} candidates (p < {tau:g})")
        idx = keep
    if len(idx) == 0:
        notes.append("no candidate left to draw from")
        return None, (), tuple(notes)
    w = p[idx]
    w = w / w.sum() if w.sum() > 0 else np.full(len(idx), 1.0 / len(idx))
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    return int(idx[rng.choice(len(idx), p=w)]), tuple(int(i) for i in idx), tuple(notes)


def _free_text(raw: str) -> str:
    return raw.strip()


def run_vs_once(engine: VSEngine, request: VSRequest, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
                *, tau: float | None = None, cancel: threading.Event | None = None) -> VSOutcome:
    """Run ``request`` once (all its turns) on ``engine`` and draw one candidate.

    Direct: the answer text is the one sample. Multi-turn: each turn's free answer is one
    candidate (no stated probabilities: uniform). Sequence / VS: the JSON answer is parsed
    (parse failures are reported in ``error``); VS-Multi merges its turns, each turn weighted
    equally. Backend errors propagate (``BackendError``). ``iter_vs_once`` is the same on a
    given sequence (or backend), as a job for ``engine.run``."""
    return drain(iter_vs_once(engine, engine.one(), request, settings, seed, tau=tau, cancel=cancel))


def _ticks(gen):
    """``gen``'s return value, every item it yields passed on as the round-robin's ``TICK``."""
    from app.core.parallel import TICK

    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
        yield TICK


def iter_vs_once(engine: VSEngine, where: Backend, request: VSRequest, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
                 *, tau: float | None = None, cancel: threading.Event | None = None):
    """``run_vs_once`` on ``where`` (a local sequence, or the remote backend: what
    ``engine.run`` hands a job) as a generator that ticks after every token and returns the
    ``VSOutcome``."""
    t0 = time.perf_counter()
    raws: list[str] = []
    text, messages = request.text, list(request.messages) if request.messages else None
    for turn in range(request.turns):
        if turn and cancel is not None and cancel.is_set():
            break
        # ``where`` is what this engine's own run hands a job (a sequence locally, the client remotely)
        answer = engine.answer(where, text=text, messages=messages,  # type: ignore[arg-type]
                               schema=request.json_schema, settings=settings, seed=seed + 7919 * turn,
                               stop=request.stop, cancel=cancel)
        raw = yield from _ticks(answer)
        raws.append(raw)
        if turn + 1 < request.turns:
            if messages is not None:
                messages = messages + [{"role": "assistant", "content": str(raw)},
                                       {"role": "user", "content": request.follow_up}]
            else:
                text = text + (raw if request.json_schema else " " + raw.strip()) + request.follow_up
    return _outcome(request, raws, settings, seed, tau, cancel, time.perf_counter() - t0)


def _outcome(request: VSRequest, raws: list, settings: SamplerSettings, seed: int, tau: float | None, cancel,
             seconds: float) -> VSOutcome:
    method = request.method
    raw_all = raws[0] if len(raws) == 1 else "\n\n".join(raws)
    cut = any(getattr(r, "cut", False) for r in raws)
    traces = tuple(r.trace for r in raws if getattr(r, "trace", None) is not None)
    cancelled = bool(cancel is not None and cancel.is_set() and (
        len(raws) < request.turns or any((t.get("finished") or {}).get("reason") == "cancelled" for t in traces)
        or not traces))
    parsed: ParsedAnswer | None = None
    error: str | None = None
    extra: dict[str, Any] = dict(cut=cut, cancelled=cancelled, traces=traces)
    if method == "Direct":
        answer = _free_text(raw_all)
        if not answer:
            error = "the answer is empty"
            samples: tuple[str, ...] = ()
        else:
            samples = (answer,)
        return VSOutcome(method, str(raw_all), None, error, samples, samples[0] if samples else None,
                         0 if samples else None, (0,) if samples else (), (), seconds, seed, **extra)
    try:
        if method == "Multi-turn":
            answers = [_free_text(r) for r in raws]
            parsed = parse_vs_answer(json.dumps({"responses": [{"text": a} for a in answers]}), k=request.k)
        elif method in MULTI_TURN_METHODS:  # VS-Multi: merge the turns, each weighted 1/turns
            items: list[dict] = []
            for r in raws:
                try:
                    part = parse_vs_answer(r, k=request.per_turn)
                except VSParseError:
                    continue
                items += [{"text": c.text, "probability": q / len(raws)}
                          for c, q in zip(part.candidates, part.probabilities)]
            if not items:
                raise VSParseError(f"none of the {len(raws)} turns could be read")
            parsed = parse_vs_answer(json.dumps({"responses": items}), k=request.k)
        else:
            parsed = parse_vs_answer(raw_all, k=request.k)
    except VSParseError as exc:
        error = str(exc)
        if cut:
            error += (f" (the answer ran out of tokens at the limit of {settings.max_tokens} before it was "
                      "complete: raise the token limit)")
    if parsed is None:
        return VSOutcome(method, str(raw_all), None, error, (), None, None, (), (), seconds, seed, **extra)
    index, kept, notes = draw(parsed.probabilities, seed, tau)
    if cut:
        notes = notes + (f"the answer ran out of tokens at the limit of {settings.max_tokens}; what was complete "
                         "was read",)
    return VSOutcome(method, str(raw_all), parsed, None, parsed.texts,
                     parsed.texts[index] if index is not None else None, index, kept, notes, seconds, seed, **extra)


def model_distribution(engine: LocalVSEngine, prompt: str, texts: Sequence[str],
                       stated: Sequence[float] | None = None) -> ModelDistribution:
    """"What the model does" beside "what the model says": each candidate's log-probability as a
    continuation (after one space) of the Direct prompt, those probabilities renormalised over
    the candidates, and, when the ``stated`` probabilities are given, KL(stated || model) in
    nats. Local engines only (needs the model's logits)."""
    direct = build_request("Direct", prompt, 1)
    lps = [engine.continuation_logprob(direct.text or "", " " + str(t).strip()) for t in texts]
    a = np.asarray(lps, dtype=np.float64)
    probs = (np.exp(a - a.max()) / np.exp(a - a.max()).sum()).tolist() if len(a) else []
    kl = metrics.kl(list(stated), probs) if stated is not None and len(a) else None
    return ModelDistribution(tuple(lps), tuple(float(q) for q in probs), kl)


def single_run_record(engine: VSEngine, request: VSRequest, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
                      *, tau: float | None = None, cancel: threading.Event | None = None) -> VSRunRecord:
    """One run of ``request`` as the lab's record (``VSOutcome.record``, run 0 of its arm); for
    a local engine and a readable answer with ``model``: "what the model does" for each
    candidate (``model_distribution``, with the KL from the stated distribution). A run cut by
    ``cancel`` is marked ``interrupted`` and gets no model distribution."""
    out = run_vs_once(engine, request, settings, seed, tau=tau, cancel=cancel)
    arm: Arm = "vs" if request.method != "Direct" else "direct"
    if cancel is not None and cancel.is_set():
        return out.record(arm, 0, interrupted=True)
    model = None
    if engine.capabilities.full_logits and out.parsed is not None:
        model = model_distribution(cast(LocalVSEngine, engine), request.prompt, out.parsed.texts,
                                   out.parsed.probabilities)
    return out.record(arm, 0, model=model)


# ============================================================================ comparison

def _nan_to_none(x: float) -> float | None:
    return None if isinstance(x, float) and not math.isfinite(x) else float(x)


def _defined(d: Mapping[str, float]) -> Metrics:
    """Metrics as a summary keeps them: an undefined one (NaN) is None."""
    return {k: _nan_to_none(v) for k, v in d.items()}


def arm_metrics(samples: Sequence[str], stats: ParseStats, embeddings: np.ndarray | None,
                reference: Mapping[str, float] | None = None) -> dict[str, float]:
    """The paper's metrics for one arm's samples."""
    out: dict[str, float] = {"n_samples": float(len(samples))}
    sd = math.nan
    if embeddings is not None and len(samples) >= 2:
        try:
            sd = metrics.semantic_diversity(embeddings)
        except ValueError:
            sd = math.nan
    out["semantic_diversity"] = sd
    out["lexical_similarity"] = metrics.lexical_similarity(samples)
    for n in (1, 2, 3):
        out[f"distinct_{n}"] = metrics.distinct_n(samples, n)
    out["parse_failure_rate"] = stats.failure_rate
    if reference is not None:
        out["precision"] = metrics.precision(list(samples), reference.keys())
        out["coverage_n"] = metrics.coverage_n(samples, reference.keys())
        out["kl_to_reference"] = metrics.kl_to_reference(samples, reference)
    return out


def _count(stats: ParseStats, out: VSOutcome) -> None:
    """Count one run: a Direct answer has nothing to parse (an empty one is a failure)."""
    if out.parsed is not None:
        stats.record(out.parsed)
    elif out.error is not None:
        stats.record(VSParseError(out.error))
    else:
        stats.total += 1
        stats.parsed += 1


@dataclass(frozen=True)
class Comparison:
    """N Direct runs against N runs of a VS method for one prompt, with both arms' metrics."""

    prompt: str
    method: str
    k: int
    n: int
    t: float | None
    tau: float | None
    direct: tuple[VSOutcome, ...]
    vs: tuple[VSOutcome, ...]
    direct_metrics: dict
    vs_metrics: dict
    ratios: dict
    cancelled: bool
    notes: tuple[str, ...] = ()
    reference: str | None = None

    def summary(self, model: str) -> VSSummary:
        """The comparison as the lab stores it, run on the model named ``model`` (undefined
        metrics None)."""
        return VSSummary(prompt=self.prompt, method=self.method, k=self.k, n=self.n, t=self.t, tau=self.tau,
                         runs=RunCounts(len(self.direct), len(self.vs)), direct=_defined(self.direct_metrics),
                         vs=_defined(self.vs_metrics), ratios=_defined(self.ratios), cancelled=self.cancelled,
                         notes=tuple(self.notes), reference=self.reference, model=model)


def compare(engine: VSEngine, prompt: str, method: str = "VS-Standard", k: int = 5, n: int = 30, t: float | None = None,
            tau: float | None = None, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
            cancel: threading.Event | None = None, on_record: Callable[[VSRunRecord], None] | None = None,
            reference: Mapping[str, float] | None = None, reference_name: str | None = None,
            style: str = "completion", direct_max_tokens: int | None = None,
            direct_request: VSRequest | None = None, vs_request: VSRequest | None = None) -> Comparison:
    """Run Direct and ``method`` alternately N times each (run i uses seed + i for both arms),
    calling ``on_record`` with each run's ``VSRunRecord`` as it arrives; stop between runs when ``cancel``
    is set. All k candidates of a VS run count as samples (as in the paper). ``direct_request``
    / ``vs_request`` replace the built requests (templates edited in the window).
    ``iter_compare`` is the same as a generator of the records."""
    gen = iter_compare(engine, prompt, method, k, n, t, tau, settings, seed, cancel, reference, reference_name,
                       style, direct_max_tokens, direct_request, vs_request)
    return drain(gen, on_record)


def iter_compare(engine: VSEngine, prompt: str, method: str = "VS-Standard", k: int = 5, n: int = 30,
                 t: float | None = None, tau: float | None = None, settings: SamplerSettings = DEFAULT_SETTINGS,
                 seed: int = 0, cancel: threading.Event | None = None,
                 reference: Mapping[str, float] | None = None, reference_name: str | None = None,
                 style: str = "completion", direct_max_tokens: int | None = None,
                 direct_request: VSRequest | None = None, vs_request: VSRequest | None = None
                 ) -> Generator[VSRunRecord, None, Comparison]:
    """``compare`` as a generator: yields each run's ``VSRunRecord`` as it arrives and returns the
    ``Comparison`` (for the window's lab worker, which forwards records as they come)."""
    if method == "Direct":
        raise ValueError("compare Direct against one of the other methods")
    direct_req = direct_request or build_request("Direct", prompt, k, None, style)
    vs_req = vs_request or build_request(method, prompt, k, t, style)
    direct_settings = settings
    if direct_max_tokens is not None:
        direct_settings = replace(settings, max_tokens=direct_max_tokens)
    arms: dict[str, list[VSOutcome]] = {"direct": [], "vs": []}
    stats = {"direct": ParseStats(), "vs": ParseStats()}
    cancelled = False
    # every run is a job; they run as parallel sequences (or concurrent requests) and their
    # records are given in run order, Direct before VS, as a one-at-a-time run would give them
    arm_requests: tuple[tuple[Arm, VSRequest, SamplerSettings], ...] = (
        ("direct", direct_req, direct_settings), ("vs", vs_req, settings))
    keys = [(arm, i, req, st) for i in range(n) for arm, req, st in arm_requests]
    jobs = [(lambda where, arm=arm, i=i, req=req, st=st:
             iter_vs_once(engine, where, req, st, seed + i, tau=tau if arm == "vs" else None, cancel=cancel))
            for arm, i, req, st in keys]
    from app.core.parallel import JobResult

    ended: dict[int, JobResult] = {}
    nxt = 0
    for idx, item in engine.run(jobs, cancel):
        if not isinstance(item, JobResult):
            continue
        ended[idx] = item
        while nxt in ended:
            res = ended.pop(nxt)
            arm, i = keys[nxt][0], keys[nxt][1]
            nxt += 1
            if res.error is not None:
                raise res.error
            out = res.value
            if out is None:  # never started: a Stop came first
                cancelled = True
                continue
            if out.cancelled:
                # stopped inside this run: its answer is cut short, so it is reported (and kept in
                # the run store) but not counted in the metrics
                cancelled = True
                yield out.record(arm, i, interrupted=True)
                continue
            arms[arm].append(out)
            _count(stats[arm], out)
            yield out.record(arm, i)
    if cancel is not None and cancel.is_set():
        cancelled = True
    notes: list[str] = []
    samples = {a: [s for o in arms[a] for s in o.samples] for a in arms}
    emb: dict[str, np.ndarray | None] = {"direct": None, "vs": None}
    for a in arms:
        if len(samples[a]) >= 2:
            try:
                emb[a] = engine.embed(samples[a])
            except BackendError as exc:
                notes.append(f"semantic diversity not measured: {exc}")
                break
    dm = arm_metrics(samples["direct"], stats["direct"], emb["direct"], reference)
    vm = arm_metrics(samples["vs"], stats["vs"], emb["vs"], reference)
    ratio_keys = [key for key in vm if key not in ("n_samples", "parse_failure_rate")]
    ratios = metrics.diversity_ratio({key: vm[key] for key in ratio_keys}, dm)
    if cancelled:
        notes.append(f"stopped after {len(arms['direct'])} Direct and {len(arms['vs'])} {method} runs")
    return Comparison(prompt, method, k, n, t, tau, tuple(arms["direct"]), tuple(arms["vs"]), dm, vm, ratios,
                      cancelled, tuple(notes), reference_name)
