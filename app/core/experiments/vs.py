"""Verbalized Sampling lab, headless: engines, one VS run, and Direct-vs-VS comparisons.

Owns:
- ``LocalVSEngine``: a GGUF model through llama-cpp-python's high-level ``Llama``; VS answers
  held to the answer's JSON schema by a llama.cpp grammar (so even the 270M model returns valid
  JSON); embeddings from a second, lazily created ``Llama`` in embedding mode (mean pooling);
  ``continuation_logprob`` for "what the model says vs what it does".
- ``RemoteVSEngine``: an ``OpenAICompatBackend``; the server's JSON-schema response format when
  the probe found one, otherwise a plain request read by the lenient parser; ``/v1/embeddings``.
- ``run_vs_once`` -> ``VSOutcome``; ``compare`` -> ``Comparison`` (metrics of both arms and the
  VS/Direct ratios; precision, coverage-N and KL to a reference for enumerable questions).

Threads: everything runs on the thread that calls it (the lab's worker thread in the window,
the main thread in ``samplescope vs``). An engine holds a llama.cpp context or an HTTP client
and must be used by one thread at a time. ``compare`` checks its ``cancel`` event between runs.
No Qt.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from app.core import metrics
from app.core.streams import drain
from app.core.vs_parse import ParsedAnswer, ParseStats, VSParseError, parse_vs_answer
from app.core.vs_prompts import MULTI_TURN_METHODS, VSRequest, build_request
from backends.base import BackendError, GenerationError, ModelLoadError, SamplerSettings
from backends.text import clean_text

__all__ = ["LocalVSEngine", "RemoteVSEngine", "VSOutcome", "Comparison", "run_vs_once", "draw",
           "compare", "iter_compare", "single_run_record", "arm_metrics", "model_distribution", "DEFAULT_SETTINGS"]

#: the paper's sampling settings (temperature 0.7, top-p 1.0), with room for k JSON candidates
DEFAULT_SETTINGS = SamplerSettings(temperature=0.7, top_p=1.0, top_k=0, min_p=0.0, max_tokens=256)


# ============================================================================ engines

#: GBNF for a probability: 0, 1, 0.x .. 0.xxxx, 1.0
_PROB_RULE = 'number ::= ("0" ("." [0-9] ([0-9] ([0-9] ([0-9])?)?)?)? | "1" ("." "0")?) space'

class Answer(str):
    """An engine's answer: its text, and ``cut`` (True when the token limit ended it before the
    model did: a grammar-held JSON answer is then incomplete, and that is the reason it cannot
    be read, not the parser)."""

    cut: bool

    def __new__(cls, text: str, cut: bool = False) -> "Answer":
        self = super().__new__(cls, text)
        self.cut = bool(cut)
        return self


def _texts_for_embedding(texts: Sequence[str]) -> list[str]:
    return [t if str(t).strip() else " " for t in texts]


class LocalVSEngine:
    """A local GGUF model for the VS lab (see the module docstring)."""

    local = True

    def __init__(self, model_path, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        from backends.llama_local import load_llama_cpp

        llama_cpp = load_llama_cpp()

        self._llama_cpp = llama_cpp
        self.model_path = str(model_path)
        self.n_ctx = int(n_ctx)
        self.n_threads = n_threads
        try:
            self._llm = llama_cpp.Llama(self.model_path, n_ctx=self.n_ctx, n_threads=n_threads,
                                        logits_all=False, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"Could not load {self.model_path}: {exc}") from exc
        self._embedder = None
        self._grammars: dict[str, Any] = {}
        self.name = str(self._llm.metadata.get("general.name", "") or self.model_path)

    def close(self) -> None:
        for llm in (self._embedder, self._llm):
            if llm is not None:
                try:
                    llm.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
        self._embedder = None

    def _grammar(self, schema: dict):
        """llama.cpp grammar of ``schema`` (as ``LlamaGrammar.from_json_schema`` builds it), with the
        number rule narrowed to 0..1 with at most 4 decimals: the JSON-schema converter ignores
        minimum/maximum, and unbounded digits cost the small model many slow grammar steps."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            gbnf = json_schema_to_gbnf(json.dumps(schema))
            gbnf = re.sub(r"(?m)^number ::= .*$", _PROB_RULE, gbnf)
            self._grammars[key] = self._llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
        return self._grammars[key]

    def _kwargs(self, settings: SamplerSettings, seed: int, stop: Sequence[str]) -> dict:
        return dict(max_tokens=settings.max_tokens, temperature=settings.temperature, top_p=settings.top_p,
                    top_k=settings.top_k, min_p=settings.min_p, typical_p=settings.typical_p,
                    repeat_penalty=settings.repeat_penalty, frequency_penalty=settings.frequency_penalty,
                    presence_penalty=settings.presence_penalty, seed=int(seed) & 0xFFFFFFFF,
                    stop=list(settings.stop) + list(stop) or None)

    def generate(self, *, text: str | None = None, messages: Sequence[dict] | None = None,
                 schema: dict | None = None, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
                 stop: Sequence[str] = (), cancel: threading.Event | None = None) -> str:
        """One completion (``text``) or chat answer (``messages``); held to ``schema`` by a grammar."""
        kw = self._kwargs(settings, seed, stop)
        if schema is not None:
            kw["grammar"] = self._grammar(schema)
        try:
            # streamed, so that ``cancel`` is checked between tokens (closing the window or Stop
            # never waits for a long answer); what was produced before the Stop is returned
            if messages is not None:
                # the chat as tokens in which only the template's own markers are control tokens
                # (llama-cpp-python's chat formatter would read "<end_of_turn>" in a message as one)
                chunks = self._llm.create_completion(self._chat_tokens(messages), stream=True, **kw)
            else:
                chunks = self._llm.create_completion(clean_text(text), stream=True, **kw)
            piece = lambda c: c["choices"][0].get("text") or ""  # noqa: E731
            parts: list[str] = []
            reason = None
            for chunk in chunks:
                parts.append(piece(chunk))
                reason = chunk["choices"][0].get("finish_reason") or reason
                if cancel is not None and cancel.is_set():
                    chunks.close()
                    break
            return Answer("".join(parts), cut=reason == "length")
        except ValueError as exc:  # e.g. the prompt does not fit
            raise GenerationError(f"llama.cpp could not run the request: {exc}") from exc

    def _chat_tokens(self, messages: Sequence[dict]) -> list[int]:
        from backends.llama_local import chat_prompt

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise GenerationError("This model has no chat template (it is a base model): use the completion style.")
        prompt = chat_prompt(template, messages)
        tokens: list[int] = []
        for part, is_template in prompt.parts:
            tokens += self._llm.tokenize(part.encode("utf-8"), add_bos=not tokens, special=is_template)
        return tokens

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One mean-pooled embedding row per text, from the same GGUF in embedding mode."""
        if not texts:
            return np.zeros((0, 0))
        if self._embedder is None:
            try:
                self._embedder = self._llama_cpp.Llama(
                    self.model_path, n_ctx=min(self.n_ctx, 1024), n_threads=self.n_threads, embedding=True,
                    pooling_type=self._llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False)
            except (ValueError, RuntimeError, OSError) as exc:
                raise ModelLoadError(f"Could not load {self.model_path} in embedding mode: {exc}") from exc
        rows = [np.asarray(self._embedder.embed(t), dtype=np.float64).reshape(-1)
                for t in _texts_for_embedding(texts)]
        return np.vstack(rows)

    def continuation_logprob(self, prefix: str, text: str) -> float:
        """log P(text | prefix) in nats under the model (no sampler): the sum of the log-softmax of
        each of ``text``'s tokens, evaluated one token at a time after ``prefix``."""
        llm = self._llm
        pre = llm.tokenize(prefix.encode("utf-8"), add_bos=True, special=False)
        cont = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if not cont:
            return 0.0
        if len(pre) + len(cont) > self.n_ctx:
            raise GenerationError("the prefix and the candidate do not fit in the context window")
        llm.reset()
        llm.eval(pre)
        n_vocab = llm.n_vocab()
        total = 0.0
        for tok in cont:
            # logits_all=False: Llama.scores is not filled, so read the last logits from the context
            ptr = self._llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
            m = logits.max()
            total += float(logits[tok] - m - math.log(np.exp(logits - m).sum()))
            llm.eval([tok])
        llm.reset()
        return total


class RemoteVSEngine:
    """A model on an OpenAI-compatible server for the VS lab (see the module docstring).

    ``caps`` is the backend's ``ServerCapabilities`` from ``probe`` (None: nothing known, so no
    JSON-schema response format is sent and answers go through the lenient parser). The probe
    checks the response format on the chat endpoint when there is one, so with a schema and a
    verified format a completion-style text is sent to ``/chat/completions`` as the user message.
    Uses the backend's non-streamed ``_request_json`` (retries, error mapping, cancel)."""

    local = False

    def __init__(self, backend, caps=None) -> None:
        self.backend = backend
        self.caps = caps
        self.name = backend.model or backend.base_url

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
                    messages = [{"role": "user", "content": text}]
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

    def to_dict(self) -> dict[str, Any]:
        p = self.parsed
        return {
            "method": self.method, "raw": self.raw, "error": self.error, "samples": list(self.samples),
            "candidates": [{"text": c.text, "stated": c.weight, "probability": q}
                           for c, q in zip(p.candidates, p.probabilities)] if p else [],
            "repairs": list(p.repairs) if p else [], "problems": list(p.problems) if p else [],
            "source_format": p.source_format if p else None,
            "drawn": self.drawn, "drawn_index": self.drawn_index, "kept": list(self.kept),
            "notes": list(self.notes), "seconds": round(self.seconds, 3), "seed": self.seed, "cut": self.cut,
        }


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


def run_vs_once(engine, request: VSRequest, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
                *, tau: float | None = None, cancel: threading.Event | None = None) -> VSOutcome:
    """Run ``request`` once (all its turns) on ``engine`` and draw one candidate.

    Direct: the answer text is the one sample. Multi-turn: each turn's free answer is one
    candidate (no stated probabilities: uniform). Sequence / VS: the JSON answer is parsed
    (parse failures are reported in ``error``); VS-Multi merges its turns, each turn weighted
    equally. Backend errors propagate (``BackendError``).
    """
    t0 = time.perf_counter()
    method = request.method
    raws: list[str] = []
    text, messages = request.text, list(request.messages) if request.messages else None
    for turn in range(request.turns):
        if turn and cancel is not None and cancel.is_set():
            break
        raw = engine.generate(text=text, messages=messages, schema=request.json_schema, settings=settings,
                              seed=seed + 7919 * turn, stop=request.stop, cancel=cancel)
        raws.append(raw)
        if turn + 1 < request.turns:
            if messages is not None:
                messages = messages + [{"role": "assistant", "content": raw},
                                       {"role": "user", "content": request.follow_up}]
            else:
                text = text + (raw if request.json_schema else " " + raw.strip()) + request.follow_up
    raw_all = raws[0] if len(raws) == 1 else "\n\n".join(raws)
    cut = any(getattr(r, "cut", False) for r in raws)
    parsed: ParsedAnswer | None = None
    error: str | None = None
    if method == "Direct":
        answer = _free_text(raw_all)
        if not answer:
            error = "the answer is empty"
            samples: tuple[str, ...] = ()
        else:
            samples = (answer,)
        seconds = time.perf_counter() - t0
        return VSOutcome(method, raw_all, None, error, samples, samples[0] if samples else None,
                         0 if samples else None, (0,) if samples else (), (), seconds, seed, cut)
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
        return VSOutcome(method, raw_all, None, error, (), None, None, (), (), time.perf_counter() - t0, seed, cut)
    index, kept, notes = draw(parsed.probabilities, seed, tau)
    if cut:
        notes = notes + (f"the answer ran out of tokens at the limit of {settings.max_tokens}; what was complete "
                         "was read",)
    return VSOutcome(method, raw_all, parsed, None, parsed.texts, parsed.texts[index] if index is not None else None,
                     index, kept, notes, time.perf_counter() - t0, seed, cut)


def model_distribution(engine: LocalVSEngine, prompt: str, texts: Sequence[str],
                       stated: Sequence[float] | None = None) -> dict[str, Any]:
    """"What the model does" beside "what the model says": each candidate's log-probability as a
    continuation (after one space) of the Direct prompt, those probabilities renormalised over
    the candidates, and, when the ``stated`` probabilities are given, KL(stated || model) in
    nats. Local engines only (needs the model's logits)."""
    direct = build_request("Direct", prompt, 1)
    lps = [engine.continuation_logprob(direct.text, " " + str(t).strip()) for t in texts]
    a = np.asarray(lps, dtype=np.float64)
    probs = (np.exp(a - a.max()) / np.exp(a - a.max()).sum()).tolist() if len(a) else []
    out: dict[str, Any] = {"logprobs": lps, "probabilities": probs}
    if stated is not None and len(a):
        out["kl_stated_to_model"] = metrics.kl(list(stated), probs)
    return out


def single_run_record(engine, request: VSRequest, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
                      *, tau: float | None = None, cancel: threading.Event | None = None) -> dict[str, Any]:
    """One run of ``request`` as a record (``VSOutcome.to_dict`` plus ``arm`` / ``run``); for a
    local engine and a readable answer also ``model``: "what the model does" for each candidate
    (``model_distribution``, with the KL from the stated distribution). A run cut by ``cancel``
    is marked ``interrupted`` and gets no model distribution."""
    out = run_vs_once(engine, request, settings, seed, tau=tau, cancel=cancel)
    record: dict[str, Any] = {"arm": "vs" if request.method != "Direct" else "direct", "run": 0, **out.to_dict()}
    if cancel is not None and cancel.is_set():
        record["interrupted"] = True
    elif getattr(engine, "local", False) and out.parsed is not None:
        record["model"] = model_distribution(engine, request.prompt, out.parsed.texts, out.parsed.probabilities)
    return record


# ============================================================================ comparison

def _nan_to_none(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


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

    def summary(self) -> dict[str, Any]:
        clean = lambda d: {k: _nan_to_none(v) for k, v in d.items()}  # noqa: E731
        return {"prompt": self.prompt, "method": self.method, "k": self.k, "n": self.n, "t": self.t,
                "tau": self.tau, "runs": {"direct": len(self.direct), "vs": len(self.vs)},
                "direct": clean(self.direct_metrics), "vs": clean(self.vs_metrics),
                "ratios": clean(self.ratios), "cancelled": self.cancelled, "notes": list(self.notes),
                "reference": self.reference}


def compare(engine, prompt: str, method: str = "VS-Standard", k: int = 5, n: int = 30, t: float | None = None,
            tau: float | None = None, settings: SamplerSettings = DEFAULT_SETTINGS, seed: int = 0,
            cancel: threading.Event | None = None, on_record: Callable[[dict], None] | None = None,
            reference: Mapping[str, float] | None = None, reference_name: str | None = None,
            style: str = "completion", direct_max_tokens: int | None = None,
            direct_request: VSRequest | None = None, vs_request: VSRequest | None = None) -> Comparison:
    """Run Direct and ``method`` alternately N times each (run i uses seed + i for both arms),
    calling ``on_record`` with each run's record as it arrives; stop between runs when ``cancel``
    is set. All k candidates of a VS run count as samples (as in the paper). ``direct_request``
    / ``vs_request`` replace the built requests (templates edited in the window).
    ``iter_compare`` is the same as a generator of the records."""
    gen = iter_compare(engine, prompt, method, k, n, t, tau, settings, seed, cancel, reference, reference_name,
                       style, direct_max_tokens, direct_request, vs_request)
    return drain(gen, on_record)


def iter_compare(engine, prompt: str, method: str = "VS-Standard", k: int = 5, n: int = 30,
                 t: float | None = None, tau: float | None = None, settings: SamplerSettings = DEFAULT_SETTINGS,
                 seed: int = 0, cancel: threading.Event | None = None,
                 reference: Mapping[str, float] | None = None, reference_name: str | None = None,
                 style: str = "completion", direct_max_tokens: int | None = None,
                 direct_request: VSRequest | None = None, vs_request: VSRequest | None = None
                 ) -> Iterator[dict]:
    """``compare`` as a generator: yields each run's record as it arrives and returns the
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
    for i in range(n):
        for arm, req, st in (("direct", direct_req, direct_settings), ("vs", vs_req, settings)):
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            out = run_vs_once(engine, req, st, seed + i, tau=tau if arm == "vs" else None, cancel=cancel)
            if cancel is not None and cancel.is_set():
                # stopped inside this run: its answer is cut short, so it is reported (and kept
                # in the run store) but not counted in the metrics
                cancelled = True
                yield {"arm": arm, "run": i, "interrupted": True, **out.to_dict()}
                break
            arms[arm].append(out)
            _count(stats[arm], out)
            yield {"arm": arm, "run": i, **out.to_dict()}
        if cancelled:
            break
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
