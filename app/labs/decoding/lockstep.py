"""Lockstep columns: several strategies on one prompt, side by side, token by token.

Owns: ``lockstep`` (step k of every column before step k+1 of any; one typed record per
(step, column), a fork record where the columns first part, and a summary with each column's
total log-probability, perplexity, mean entropy and length: the types of ``records``),
``run_lockstep`` (the same, drained), ``first_fork`` and ``column_totals``, and the record
builders (``_step_record``, ``_beam_record``, ``_beam_summary``, ``_top``; ``_alts``: the
alternatives as a ``BranchNode`` keeps them). On a ``LlamaCppBackend`` the sampled columns are
sequences of one extra context (the prompt shared; ``kv._ColumnEngine``), each a
``GenerationSession`` drawing exactly what a plain session draws; beam columns come from
``beams.beam_search``; on a server each sampled column is one request
(``remote.remote_column``). Costs: docs/BENCHMARKS.md ("Decoding lab").

Threads: a lockstep generator runs on the thread that iterates it, which must own the backend
(the lab's worker thread in the window, the main thread in ``samplescope compare``); its extra
context is created there and freed when the generator ends or is closed. ``cancel`` (a
``threading.Event``) is checked before every column's token, or handed to the server's stream
(remote: ends within about 20 ms); the records so far stand and the summary is marked
cancelled. No Qt.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Generator, Iterable, Sequence, cast

from app.core.export import generation_record
from app.core.jsonsafe import json_safe
from app.core.streams import drain
from backends.base import Finished, SamplerSettings, Step, TokenAlt

from .beams import Beam, BeamResult, beam_search
from .kv import _ColumnEngine, _has_sequences, _SeqContext, _Shared, _tokenize
from .records import (BeamSearchSummary, BeamSummary, ColumnRecord, ColumnSummary, ForkRecord, LockstepSummary,
                      StepRecord, TopEntry, defined, or_nan)
from .remote import RemoteUnsupported, is_remote, remote_column, remote_support
from .strategies import NEUTRAL, Strategy, parse_strategies

if TYPE_CHECKING:
    from app.core.session import GenerationSession

    from backends.kinds import Backend, LocalEngine
    from backends.openai_compat import OpenAICompatBackend

__all__ = ["first_fork", "column_totals", "lockstep", "run_lockstep"]


def first_fork(columns: Sequence[Sequence[Any]]) -> int | None:
    """The first index where the columns' tokens are not all the same (a column that has no
    token there while another has counts as different); None when they never part."""
    cols = [list(c) for c in columns]
    if len(cols) < 2:
        return None
    for k in range(max((len(c) for c in cols), default=0)):
        vals = {("t", c[k]) if k < len(c) else ("end",) for c in cols}
        if len(vals) > 1:
            return k
    return None


def column_totals(logprobs: Sequence[float | None], entropies: Sequence[float]) -> dict[str, Any]:
    """A column's figures: ``total_logprob`` (sum of ln p_raw of the chosen tokens),
    ``perplexity`` exp(-mean), ``mean_entropy`` (raw, nats) and ``length``. A missing
    log-probability (a server that sent none) makes the first two None."""
    n = len(logprobs)
    if n == 0:
        return {"total_logprob": 0.0, "perplexity": None, "mean_entropy": None, "length": 0}
    known = [x for x in logprobs if x is not None and math.isfinite(x)]
    total = math.fsum(known) if len(known) == n else None
    ents = [e for e in entropies if e is not None and math.isfinite(e)]
    perplexity = None
    if total is not None and -total / n < 709.0:  # past that exp overflows: no meaningful figure
        perplexity = math.exp(-total / n)
    return {"total_logprob": total, "perplexity": perplexity,
            "mean_entropy": math.fsum(ents) / len(ents) if ents else None, "length": n}


def _alts(top: Iterable[TokenAlt], n: int, with_final: bool = True) -> list[dict[str, Any]]:
    """The first ``n`` alternatives as the dicts a ``BranchNode`` keeps (``TopEntry``'s fields)."""
    return [{"id": a.id, "token": a.token, "p_raw": a.p_raw, "p_final": a.p_final if with_final else None}
            for a in list(top)[:n]]


def _top(top: Iterable[TokenAlt]) -> tuple[TopEntry, ...]:
    return tuple(TopEntry(None if a.id is None else int(a.id), a.token, or_nan(a.p_raw), defined(a.p_final))
                 for a in top)


def _step_record(col: int, strategy: Strategy, k: int, step: Step, top_n: int, reason: str | None) -> StepRecord:
    lp = math.log(step.p_raw) if step.p_raw > 0 else None
    top = list(step.top[:top_n])
    if step.token_id is not None and all(a.id != step.token_id for a in top):
        top += [a for a in step.top[top_n:] if a.id == step.token_id]
    return StepRecord(col, strategy.spec, k, step.token, step.piece,
                      None if step.token_id is None else int(step.token_id), or_nan(step.p_raw),
                      defined(step.p_final), defined(lp), or_nan(step.entropy_raw), int(step.rank),
                      bool(step.estimated), _top(top), reason)


def _beam_record(col: int, strategy: Strategy, k: int, beam: Beam, text: str, reason: str | None) -> StepRecord:
    st = beam.steps[k]
    return StepRecord(col, strategy.spec, k, text, st.piece, int(st.token_id), or_nan(st.p_raw), None,
                      defined(st.logprob), or_nan(st.entropy_raw), int(st.rank), False,
                      tuple(TopEntry(int(i), p, or_nan(q), None) for i, p, q in st.top), reason)


class _Column:
    def __init__(self, index: int, strategy: Strategy) -> None:
        self.index = index
        self.strategy = strategy
        self.settings: SamplerSettings | None = None
        self.session: GenerationSession | None = None
        self.beam: BeamResult | None = None
        self.remote_steps: list[Step] = []
        self.remote_fin: Finished | None = None
        self.records: list[StepRecord] = []
        self.beam_texts: list[str] = []
        self.done = False
        self.reason = ""
        self.text = ""


def lockstep(backend: Backend, prompt: str, strategies: str | Iterable[str | Strategy], max_tokens: int = 32,
             seed: int = 42, cancel: threading.Event | None = None, *, top_n: int = 5, stop: Sequence[str] = (),
             beam_method: str = "auto", beam_batched: bool = False, column_method: str = "auto",
             parse_special: bool = False, messages: list[dict] | None = None
             ) -> Generator[ColumnRecord | StepRecord | ForkRecord, None, LockstepSummary]:
    """Run ``strategies`` (specs, a comma string or ``Strategy``) on ``prompt`` side by side.
    Returns a generator of typed records (``app.labs.decoding.records``); its return value
    (``StopIteration.value``, or use ``run_lockstep``) is the ``LockstepSummary``. Arguments are checked here, before any record (ValueError,
    ``RemoteUnsupported``).

    Local model (``backend`` a ``LlamaCppBackend``): every sampled or greedy column is a
    ``GenerationSession`` with its strategy's settings, the same ``seed`` and ``max_tokens``, on
    one shared model. ``column_method`` "sequences" (the default there): one extra llama.cpp
    context on the backend's loaded model holds every column as its own sequence, the prompt
    evaluated once and shared (``seq_cp``), each column's token decoded alone at its position:
    a step costs one token per column, as separate sessions would, and the backend's own cache
    is not touched. "prefix" (any other logits engine): the columns take turns on the backend's
    single cache (``goto_prefix``; it is cleared first), each turn re-evaluating the column's
    tokens since it parted from the column before it (quadratic after an early fork;
    docs/BENCHMARKS.md). Either way each column draws exactly what a plain session with its settings
    draws on an empty cache, so a seed repeats a run. Beam columns are computed whole first
    (``beam_search`` with ``beam_method`` and ``beam_batched``; not token-lockstep) and emitted
    step by step for their best beam.

    Remote (``backend`` an ``OpenAICompatBackend``): sampled columns only, each one request
    (``remote_column``) made one after the other; their records are then emitted in the same
    lockstep order (the server draws; the records arrive once every column is in). A beam
    column raises ``RemoteUnsupported`` (see ``REMOTE_LIMITS``). ``messages`` uses the chat
    endpoint instead of ``prompt``.

    Records, in this order: one ``ColumnRecord`` (``column``, ``strategy``, ``label``, ``beam``,
    ``settings``: None for beams) per column; then for step k = 0, 1, ... one ``StepRecord``
    (``column``, ``strategy``, ``step`` k, ``token``: the visible text, ``piece``, ``token_id``:
    None remotely, ``p_raw``, ``p_final``: None for beams, ``logprob``: ln p_raw, ``entropy_raw``:
    a lower bound remotely, ``rank``, ``estimated``, ``top``: ``TopEntry`` alternatives,
    ``finish_reason``: None, or why the column ended at this token) for every column still
    running, in column order, all of step k before any of step k+1; after the records of the
    first step where the columns' tokens differ, a ``ForkRecord`` (``step`` k, per column its
    ``tokens`` and ``token_ids`` there, None when ended, and the ``groups`` of columns with the
    same token).

    Summary (``LockstepSummary``): ``prompt``, ``prompt_tokens``, ``seed``, ``max_tokens``,
    ``backend`` ("local"/"remote"), ``cancelled``, ``steps``, ``fork_step``, ``pairwise_fork``
    (matrix), ``seconds``, ``column_method``, ``token_evaluations`` (tokens the sampled columns
    made the model evaluate, prompt included) and ``independent_evaluations`` (what separate
    sessions would have cost: the prompt per column plus every drawn token but the last), and
    ``columns``: a ``ColumnSummary`` per column (``text``, ``tokens``, ``finish_reason``,
    ``total_logprob``, ``perplexity``, ``mean_entropy``, ``length``, its generation ``trace``,
    and ``beam``: the ``BeamSearchSummary`` for beam columns, each beam with its ``trace``).

    ``cancel`` is checked before every column's token: the records so far stand, the summary has
    ``cancelled`` True and every column's figures so far."""
    strats = parse_strategies(strategies)
    if isinstance(max_tokens, bool) or int(max_tokens) < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    max_tokens = int(max_tokens)
    remote = is_remote(backend)
    if column_method == "auto":
        column_method = "sequences" if _has_sequences(backend) else "prefix"
    if column_method not in ("sequences", "prefix"):
        raise ValueError(f"unknown column method {column_method!r}: 'sequences', 'prefix' or 'auto'")
    if column_method == "sequences" and not remote and not _has_sequences(backend):
        raise ValueError("the 'sequences' column method needs a LlamaCppBackend")
    columns = []
    for i, s in enumerate(strats):
        c = _Column(i, s)
        if not s.is_beam:
            c.settings = s.settings(seed=seed, max_tokens=max_tokens, top_n=max(1, int(top_n)), stop=stop)
            c.settings.validate()
        columns.append(c)
    if remote:
        caps = cast("OpenAICompatBackend", backend).server_capabilities()  # remote: is_remote(backend)
        for s in strats:
            why = remote_support(s, caps)
            if why:
                raise RemoteUnsupported(f"{s.spec}: {why}")
    elif messages is not None:
        raise ValueError("messages are for remote backends; format a chat prompt with backend.format_chat")
    return _lockstep(backend, prompt, columns, max_tokens, int(seed), cancel, max(1, int(top_n)), tuple(stop),
                     (beam_method, beam_batched), column_method, parse_special, messages, remote)


def _lockstep(backend: Backend, prompt: str, columns: list[_Column], max_tokens: int, seed: int,
              cancel: threading.Event | None, top_n: int, stop: tuple[str, ...], beam_opts: tuple[str, bool],
              column_method: str, parse_special: bool, messages: list[dict] | None,
              remote: bool) -> Generator[ColumnRecord | StepRecord | ForkRecord, None, LockstepSummary]:
    shared = _Shared()
    try:
        return (yield from _lockstep_body(backend, prompt, columns, max_tokens, seed, cancel, top_n, stop,
                                          beam_opts, column_method, parse_special, messages, remote, shared))
    finally:
        if shared.seqctx is not None:
            shared.seqctx.close()


def _lockstep_body(backend: Backend, prompt: str, columns: list[_Column], max_tokens: int, seed: int,
                   cancel: threading.Event | None, top_n: int, stop: tuple[str, ...], beam_opts: tuple[str, bool],
                   column_method: str, parse_special: bool, messages: list[dict] | None, remote: bool,
                   shared: _Shared) -> Generator[ColumnRecord | StepRecord | ForkRecord, None, LockstepSummary]:
    from app.core.session import GenerationSession

    t0 = time.perf_counter()
    cancelled = False
    prompt_len = 0
    # ``remote`` is ``is_remote(backend)``, decided in ``lockstep``: the casts below follow it
    if remote:
        model_name = cast("OpenAICompatBackend", backend).model or ""
    else:
        model_name = cast("LocalEngine", backend).info.name
    for c in columns:
        yield ColumnRecord(c.index, c.strategy.spec, c.strategy.label, c.strategy.is_beam,
                           json_safe(c.settings.to_dict()) if c.settings else None)
    # beams first, whole
    for c in columns:
        if c.strategy.is_beam and not cancelled:
            c.beam = beam_search(backend, prompt, c.strategy.width, max_tokens, c.strategy.length_penalty, True, stop,
                                 cancel, top_n=top_n, method=beam_opts[0], batched=beam_opts[1],
                                 parse_special=parse_special)
            cancelled = c.beam.cancelled
            best = c.beam.best
            beam_backend = cast("LocalEngine", backend)  # beam_search raised RemoteUnsupported on a server
            # the visible text per step, decoded incrementally like a session does
            dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
            for st in best.steps:
                eog = beam_backend.is_eog(st.token_id) if not remote else False
                c.beam_texts.append("" if eog else dec.decode(beam_backend.token_bytes(st.token_id)))
            prompt_len = c.beam.prompt_tokens
    if remote:
        server = cast("OpenAICompatBackend", backend)
        for c in columns:
            if cancelled or (cancel is not None and cancel.is_set()):
                cancelled = True
                break
            for item in remote_column(server, prompt, c.strategy, max_tokens, seed, cancel, top_n=top_n, stop=stop,
                                      messages=messages):
                if isinstance(item, Finished):
                    c.remote_fin = item
                else:
                    c.remote_steps.append(item)
            if c.remote_fin is not None and c.remote_fin.reason == "cancelled":
                cancelled = True
    else:
        local = cast("LocalEngine", backend)
        sampled = [c for c in columns if not c.strategy.is_beam]
        if sampled and not cancelled:
            n_prompt = len(_tokenize(local, prompt, parse_special))
            if column_method == "sequences":
                shared.seqctx = _SeqContext(local, len(sampled), n_prompt + len(sampled) * max_tokens + 64)
            else:
                local.reset()  # from an empty cache: a seed repeats a run
        sessions: list[GenerationSession] = []
        for c in sampled:
            eng = _ColumnEngine(local, shared)
            assert c.settings is not None, "lockstep gave every sampled column its settings"
            c.session = GenerationSession(eng, prompt, c.settings, parse_special=parse_special)
            eng.session = c.session
            sessions.append(c.session)
        if not cancelled:
            for session in sessions:  # every column takes its sequence before any token is drawn
                session.start()
                prompt_len = len(session.prompt_tokens)
    k = 0
    fork_step: int | None = None
    while not cancelled:
        active = [c for c in columns if not c.done]
        if not active or k >= max_tokens:
            break
        for c in active:
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            rec: StepRecord | None = None
            if c.beam is not None:
                best = c.beam.best
                if k < best.length:
                    last = k == best.length - 1
                    reason = best.finish_reason if last else None
                    rec = _beam_record(c.index, c.strategy, k, best, c.beam_texts[k], reason)
                    c.done = last
                    c.reason = best.finish_reason
                else:
                    c.done = True
            elif remote:
                if k < len(c.remote_steps):
                    last = k == len(c.remote_steps) - 1
                    end_reason = c.remote_fin.reason if c.remote_fin else "incomplete"
                    reason = end_reason if last else None
                    rec = _step_record(c.index, c.strategy, k, c.remote_steps[k], top_n, reason)
                    c.done = last
                    if last:
                        c.reason = end_reason
                        c.text = c.remote_fin.text if c.remote_fin else ""
                else:
                    c.done = True
                    c.reason = c.remote_fin.reason if c.remote_fin else "incomplete"
            else:
                s = c.session
                assert s is not None, "every sampled column of a local run has its session"
                if s.finished is None:
                    step = s.commit()
                    fin = s.finished
                    rec = _step_record(c.index, c.strategy, k, step, top_n, fin.reason if fin else None)
                    if fin is not None:
                        c.done = True
                        c.reason = fin.reason
                else:
                    c.done = True
            if rec is not None:
                c.records.append(rec)
                yield rec
        if cancelled:
            break
        if fork_step is None:
            at = [c.records[k] if k < len(c.records) else None for c in columns]
            toks = [None if r is None else r.key for r in at]
            if len(set(toks)) > 1:
                fork_step = k
                groups: dict[Any, list[int]] = {}
                for i, t in enumerate(toks):
                    groups.setdefault(t, []).append(i)
                yield ForkRecord(k, tuple(None if r is None else r.token for r in at),
                                 tuple(None if r is None else r.token_id for r in at),
                                 tuple(tuple(g) for g in groups.values()))
        k += 1
    # summary
    out_cols = []
    keys = []
    for c in columns:
        recs = c.records
        keys.append([r.key for r in recs])
        lps: list[float | None]
        tokens: list[int | None]
        if c.beam is not None:
            best = c.beam.best
            lps = [s.logprob for s in best.steps]
            ents = [s.entropy_raw for s in best.steps]
            tokens = list(best.tokens)
            text = best.text
            reason = best.finish_reason
        elif remote:
            lps = [r.logprob for r in recs]
            ents = [r.entropy_raw for r in recs]
            tokens = [r.token_id for r in recs]
            text = c.text or "".join(r.token for r in recs)
            reason = c.reason or ("cancelled" if cancelled else "")
        else:
            s = c.session
            if s is not None and s.finished is None:
                s.cancel()
            lps = [math.log(st.p_raw) if st.p_raw > 0 else None for st in (s.steps if s else [])]
            ents = [st.entropy_raw for st in (s.steps if s else [])]
            tokens = list(s.generated) if s else []
            text = s.text if s else ""
            reason = s.finished.reason if s and s.finished else "cancelled"
        totals = column_totals(lps, ents)
        out_cols.append(ColumnSummary(
            c.index, c.strategy.spec, c.strategy.label, text, tuple(None if t is None else int(t) for t in tokens),
            reason, remote, defined(totals["total_logprob"]), defined(totals["perplexity"]),
            defined(totals["mean_entropy"]), totals["length"],
            json_safe(_column_generation(c, prompt, prompt_len, text, reason, model_name)),
            None if c.beam is None else _beam_summary(c.beam, prompt, prompt_len, model_name)))
    n = len(columns)
    pairwise = [[None if i == j else first_fork([keys[i], keys[j]]) for j in range(n)] for i in range(n)]
    sampled_lengths = [len(c.session.generated) for c in columns if c.session is not None]
    evals = shared.evaluations
    independent = sum(prompt_len + max(0, m - 1) for m in sampled_lengths)
    return LockstepSummary(
        prompt, prompt_len, seed, max_tokens, "remote" if remote else "local", cancelled, k,
        fork_step if fork_step is not None else first_fork(keys), tuple(tuple(row) for row in pairwise),
        round(time.perf_counter() - t0, 4), None if remote else column_method, evals, independent, tuple(out_cols))


def _beam_summary(result: BeamResult, prompt: str, n_prompt: int, model: str) -> BeamSearchSummary:
    """A beam column's search as its summary keeps it (``BeamResult.to_dict``'s figures), every
    beam with its generation record: each opens in the Workbench."""
    greedy = NEUTRAL.replace(temperature=0.0)
    beams = tuple(BeamSummary(
        tuple(int(t) for t in b.tokens), tuple(s.piece for s in b.steps), b.text, or_nan(b.logprob), or_nan(b.score),
        b.length, tuple(or_nan(s.logprob) for s in b.steps), b.finished, b.finish_reason,
        json_safe(generation_record(prompt, greedy, b.as_steps(n_prompt), Finished(b.finish_reason, b.text, b.length,
                                                                                    0.0), model)))
        for b in result.beams)
    return BeamSearchSummary(result.width, float(result.length_penalty), result.method, result.prompt_tokens,
                             result.steps, result.evaluations, round(result.seconds, 4), round(result.ms_per_step, 3),
                             result.batched, result.cancelled, beams)


def _column_generation(c: _Column, prompt: str, n_prompt: int, text: str, reason: str, model: str) -> dict:
    """A column's generation record (``generation_record``): a sampled column's session steps,
    a beam column's best beam, a remote column's streamed steps."""
    if c.beam is not None:
        best = c.beam.best
        steps = best.as_steps(n_prompt)
        for st, shown in zip(range(len(steps)), c.beam_texts):  # the visible text, decoded as a session does
            steps[st] = dataclasses.replace(steps[st], token=shown)
        return generation_record(prompt, NEUTRAL.replace(temperature=0.0), steps,
                                 Finished(reason, text, len(steps), 0.0), model)
    if c.session is not None:
        assert c.settings is not None, "a column with a session is a sampled one, with its settings"
        return generation_record(prompt, c.settings, c.session.steps, c.session.finished, model)
    return generation_record(prompt, c.settings or NEUTRAL, c.remote_steps,
                             c.remote_fin or Finished(reason or "cancelled", text, len(c.remote_steps), 0.0), model)


def run_lockstep(*args: Any, **kwargs: Any) -> tuple[list[ColumnRecord | StepRecord | ForkRecord], LockstepSummary]:
    """``lockstep`` drained: (records, summary)."""
    records: list[ColumnRecord | StepRecord | ForkRecord] = []
    summary = drain(lockstep(*args, **kwargs), records.append)
    return records, summary
