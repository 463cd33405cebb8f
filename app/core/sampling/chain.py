"""The chain itself: ``apply_chain`` runs the active stages in order on one step's logits and
records what each did.

Any thread (the generation worker in the app); no Qt.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence

import numpy as np

from backends.base import GenerationError, SamplerSettings

from .adaptive import SamplerState, _stage_adaptive_p, _stage_mirostat, _stage_mirostat_v2
from .dry import NO_BREAKERS, DryBreakers, _stage_dry, dry_active, dry_penalties, resolve_dry_breakers
from .numeric import _F32, BANNED_LOGIT, _Raw, _top_desc, as_logits
from .result import ChainResult, _raw_mass, _Snap
from .stages import (_Cands, _stage_dynamic_temperature, _stage_grammar, _stage_logit_bias, _stage_min_p, _stage_penalties, _stage_temperature,
                     _stage_top_k, _stage_top_n_sigma, _stage_top_p, _stage_typical, _stage_xtc)


def _active(name: str, s: SamplerSettings, pen: bool) -> bool:
    """Whether stage ``name`` changes anything with these settings (an inactive one is not
    run and not recorded, as llama.cpp replaces it with an empty sampler)."""
    if name == "penalties":
        return pen
    if name == "top_n_sigma":
        return s.top_n_sigma > 0
    if name == "top_k":
        return s.top_k > 0
    if name == "typical":
        return bool(_F32(s.typical_p) < 1)
    if name == "top_p":
        return bool(_F32(s.top_p) < 1)
    if name == "min_p":
        return bool(_F32(s.min_p) > 0)
    if name == "xtc":
        return bool(s.xtc_probability > 0 and _F32(s.xtc_threshold) <= _F32(0.5))
    if name == "temperature":
        return bool(_F32(s.temperature) != 1 or s.dynatemp_range > 0)
    if name == "dry":
        return dry_active(s.dry_multiplier, s.dry_base, s.dry_penalty_last_n)
    return False  # "adaptive_p" runs last, outside the order (see ``stage_names``)


#: the settings ``stage_names`` was last asked about and its answer: a generation asks at every
#: step with the same (frozen) settings; 30 us a step otherwise
_LAST_STAGES: tuple[SamplerSettings | None, tuple[str, ...]] = (None, ())


def stage_names(s: SamplerSettings) -> list[str]:
    """The stages the chain runs after the grammar and the logit bias, in order: with Mirostat
    the temperature and Mirostat alone (llama.cpp ignores the order then); otherwise the active
    stages of ``s.samplers`` and adaptive-p last when its target is set."""
    global _LAST_STAGES
    last, names = _LAST_STAGES  # one read: another thread may replace the pair at any time
    if last is not s:
        names = tuple(_stage_names(s))
        _LAST_STAGES = (s, names)
    return list(names)


def _stage_names(s: SamplerSettings) -> list[str]:
    if s.mirostat in (1, 2):
        return (["temperature"] if _F32(s.temperature) != 1 else []) + ["mirostat" if s.mirostat == 1 else
                                                                         "mirostat_v2"]
    pen = _penalties_active(s)
    names = [nm for nm in s.samplers if _active(nm, s, pen)]
    if s.adaptive_target >= 0:
        names.append("adaptive_p")
    return names


def history_needed(s: SamplerSettings) -> int:
    """How many of the latest tokens the chain reads (the penalties' and DRY's windows):
    callers pass at least that much ``history``."""
    return max(s.penalty_last_n if s.penalty_last_n > 0 else 0,
               s.dry_penalty_last_n if dry_active(s.dry_multiplier, s.dry_base, s.dry_penalty_last_n) else 0)


def _penalties_active(s: SamplerSettings) -> bool:
    if s.penalty_last_n <= 0:
        return False
    return not (_F32(s.repeat_penalty) == 1 and _F32(s.frequency_penalty) == 0
                and _F32(s.presence_penalty) == 0)


def resolve_logit_bias(settings: SamplerSettings, tokenize: Callable[[str], Sequence[int]] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``settings.logit_bias`` as (token ids, biases): a text entry biases each of its tokens
    (``tokenize``, without special tokens, as llama.cpp's server does for a string); without a
    ``tokenize`` a text entry is a GenerationError that says so."""
    ids: list[int] = []
    bias: list[float] = []
    for tok, b in settings.logit_bias:
        if isinstance(tok, str):
            if tokenize is None:
                raise GenerationError(f"The logit bias of the text {tok!r} needs the model's tokenizer here; "
                                      "give its token id instead.")
            toks = [int(t) for t in tokenize(tok)]
        else:
            toks = [int(tok)]
        ids += toks
        bias += [float(b)] * len(toks)
    return np.asarray(ids, dtype=np.int64), np.asarray(bias, dtype=_F32)


class TokenizingEngine(Protocol):
    """What ``resolve_inputs`` needs of an engine (``vocab_bytes`` too, for DRY's breakers)."""

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]: ...


def resolve_inputs(settings: SamplerSettings, engine: TokenizingEngine) -> tuple[tuple[np.ndarray, np.ndarray] | None,
                                                               DryBreakers | None]:
    """What the chain needs from the model before a generation, once: the logit bias with its
    texts tokenized, and DRY's sequence breakers as tokens. ``engine`` gives ``tokenize`` (and
    ``vocab_bytes`` when DRY has breakers); GenerationError says what is missing."""
    bias = None
    if settings.logit_bias:
        bias = resolve_logit_bias(settings, lambda text: engine.tokenize(text, add_special=False))
    breakers = None
    if "dry" in stage_names(settings) and settings.dry_sequence_breakers:
        vocab = getattr(engine, "vocab_bytes", None)
        if vocab is None:
            raise GenerationError("DRY's sequence breakers need the model's vocabulary, which this engine "
                                  "does not give; clear the breakers or use a local model.")
        breakers = resolve_dry_breakers(settings.dry_sequence_breakers, vocab(),
                                        lambda text: engine.tokenize(text, add_special=False))
    return bias, breakers


def apply_chain(logits: np.ndarray, settings: SamplerSettings, history: Sequence[int] = (),
                top_n: int | None = None, grammar=None, *, logit_bias: tuple[np.ndarray, np.ndarray] | None = None,
                xtc_draw: float | None = None, rng: np.random.Generator | None = None,
                state: SamplerState | None = None, dry_breakers: DryBreakers | None = None,
                banned: Sequence[int] | np.ndarray = ()) -> ChainResult:
    """Run the chain on one step's logits (1-D, the whole vocabulary; never modified).

    The stages run in ``settings.samplers`` order (llama.cpp's ``--samplers``), after two that
    llama.cpp also applies before its chain: ``grammar`` (an object with ``allowed(ids) -> bool
    mask``, e.g. ``backends.grammar.Grammar``: the tokens it forbids are removed first, as
    llama.cpp's grammar-first path does) and the logit bias (``logit_bias`` as resolved by
    ``resolve_logit_bias``; by default the token-id entries of ``settings.logit_bias``). Each
    active stage is recorded (``StageInfo``).

    ``history``: token ids seen so far; the penalties use its last ``penalty_last_n``.
    ``top_n`` defaults to ``settings.top_n``. XTC acts at a step when its draw is at most
    ``xtc_probability``: ``xtc_draw`` gives that draw (a recorded step replayed), else it is
    drawn from ``rng`` (the generation's own), else XTC acts (a what-if shows what it does).

    ``history`` also feeds DRY (its last ``dry_penalty_last_n``; ``history_needed`` says how
    much the chain reads), with ``dry_breakers`` its sequence breakers as tokens
    (``resolve_dry_breakers``; none by default). ``state`` is what Mirostat and adaptive-p
    carry from the step before (``SamplerState.initial(settings)`` by default); the result's
    ``next_state(token)`` is the state for the step after.

    ``banned``: token ids that read as ``BANNED_LOGIT`` (-1e30, so they are never drawn and
    hold no mass), everywhere in the result, the raw distribution included (the benchmark bans
    EOS so every run has its full length). The logits are copied for that only when a stage
    reads the whole vocabulary."""
    x = as_logits(logits)
    n = x.shape[0]
    top_n = settings.top_n if top_n is None else top_n
    top_n = max(0, min(int(top_n), n))

    if state is None:
        state = SamplerState.initial(settings)
    k = int(settings.top_k)
    typ = _F32(settings.typical_p)
    top_p = _F32(settings.top_p)
    min_p = _F32(settings.min_p)
    temp = _F32(settings.temperature)
    delta = _F32(settings.dynatemp_range)
    nsig = _F32(settings.top_n_sigma)
    xtc_p, xtc_t = _F32(settings.xtc_probability), _F32(settings.xtc_threshold)
    min_keep = max(0, int(settings.min_keep))
    if logit_bias is None and settings.logit_bias:
        logit_bias = resolve_logit_bias(settings)
    bias_on = logit_bias is not None and logit_bias[0].shape[0] > 0

    # one selection serves both the raw top-N and a top-k on the raw logits (top_k first in the order)
    active = stage_names(settings)
    top_first = bool(active) and active[0] == "top_k" and grammar is None and not bias_on
    want = top_n
    if top_first and k < n:
        want = max(top_n, k)
    ban = None
    if len(banned):
        ban = np.asarray(banned, dtype=np.int64).reshape(-1)
        ban = np.unique(ban[(ban >= 0) & (ban < n)])
        # only top-k's best are read when it comes first (and cuts); else a stage reads every logit
        if not (top_first and k < n) or n - ban.shape[0] < want:  # then the ban is made in a copy
            x = x.copy()
            x[ban] = BANNED_LOGIT
            ban = None
    # the selection reads the logits first, the full-vocabulary pass after it finds them in the
    # cache (measured: 70 us of a 0.77 ms step's analysis, right after a decode)
    if ban is None:
        top_sel = _top_desc(x, want)
    else:  # the best that are not banned (top-k's stage reads only those)
        top_sel = _top_desc(x, want + ban.shape[0])
        keep = top_sel != ban[0] if ban.shape[0] == 1 else ~np.isin(top_sel, ban)
        top_sel = top_sel[keep][:want]
    raw = _Raw(x, int(top_sel[0]) if top_sel.shape[0] else None, ban)
    if raw.x is not x:  # NaN or infinite logits were cleaned (and banned): select on the cleaned values
        assert raw.x is not None
        x = raw.x
        top_sel = _top_desc(x, want)
    top_ids = top_sel[:top_n].astype(np.int64, copy=False)

    c = _Cands(None, x, False, raw)
    snaps = [_Snap(None, raw.y, 0.0, raw.s, raw, raw.m)]
    meta: list[tuple[str, int, float, float, float | None]] = []
    raw_in = 1.0
    greedy = False
    adaptive_at: int | None = None  # the snapshot entering adaptive-p

    def record(name: str, new: _Cands, filtering: bool | np.bool_, value: float | None = None) -> None:
        nonlocal raw_in
        prev = snaps[-1]
        snap = _Snap.of(new, raw)
        if filtering:
            if len(new) == len(prev):
                removed, raw_out = 0.0, raw_in
            else:
                kept_mass = snap.z * math.exp(snap.xref - prev.xref) / prev.z
                removed = min(1.0, max(0.0, 1.0 - kept_mass))
                raw_out = _raw_mass(snap, raw)
        else:
            removed, raw_out = 0.0, raw_in
        meta.append((name, len(new), removed, max(0.0, raw_in - raw_out), value))
        snaps.append(snap)
        raw_in = raw_out

    if grammar is not None:
        c = _stage_grammar(c, grammar)
        record("grammar", c, True)
    if bias_on:
        assert logit_bias is not None
        c = _stage_logit_bias(c, logit_bias[0], logit_bias[1])
        record("logit_bias", c, True)
    for name in active:
        if name == "penalties":
            window = np.asarray(_tail(history, int(settings.penalty_last_n)), dtype=np.int64).reshape(-1)
            c = _stage_penalties(c, settings, window)
            record(name, c, False)
        elif name == "dry":
            last_n = int(settings.dry_penalty_last_n)
            pens = dry_penalties(_tail(history, last_n), settings.dry_multiplier, settings.dry_base,
                                 int(settings.dry_allowed_length), last_n,
                                 dry_breakers if dry_breakers is not None else NO_BREAKERS)
            c = _stage_dry(c, pens)
            record(name, c, False)
        elif name in ("mirostat", "mirostat_v2"):
            mu = state.mu if state.mu is not None else float(_F32(2.0) * _F32(settings.mirostat_tau))
            if name == "mirostat":
                c = _stage_mirostat(c, settings.mirostat_tau, mu, n)
            else:
                c = _stage_mirostat_v2(c, mu)
            record(name, c, True, float(mu))
        elif name == "adaptive_p":
            adaptive_at = len(snaps) - 1
            target = state.adapted_target(settings.adaptive_target)
            c = _stage_adaptive_p(c, target)
            record(name, c, False, target)
        elif name == "top_n_sigma":
            c = _stage_top_n_sigma(c, nsig)
            record(name, c, True)
        elif name == "top_k":
            untouched = c.ids is None and c.lg is x
            c = _stage_top_k(c, k, top_sel if untouched and top_sel.shape[0] >= min(k, n) else None)
            record(name, c, True)
        elif name == "typical":
            c = _stage_typical(c, typ, min_keep)
            record(name, c, True)
        elif name == "top_p":
            c = _stage_top_p(c, top_p, min_keep)
            record(name, c, True)
        elif name == "min_p":
            c = _stage_min_p(c, min_p, min_keep)
            record(name, c, True)
        elif name == "xtc":
            u = xtc_draw if xtc_draw is not None else (float(rng.random()) if rng is not None else 0.0)
            if u <= xtc_p:
                c = _stage_xtc(c, xtc_t, min_keep)
            record(name, c, True, u)
        elif name == "temperature":
            if delta > 0 and settings.mirostat == 0:  # with Mirostat llama.cpp uses the plain temperature
                if len(c) <= 1:  # llama.cpp's temp-ext leaves a single candidate as it is
                    continue
                c, t_used = _stage_dynamic_temperature(c, temp, delta, _F32(settings.dynatemp_exponent))
                greedy = bool(t_used <= 0)
                record(name, c, greedy, float(t_used))
            else:
                c = _stage_temperature(c, temp)
                greedy = bool(temp <= 0)
                record(name, c, greedy)

    changed = not (snaps[-1].ids is None and snaps[-1].lg is raw.y)
    raw.x = None  # may be the caller's (llama.cpp's) memory: keep no reference to it
    return ChainResult(raw, top_ids, snaps, meta, greedy=greedy, changed=changed, settings=settings, state=state,
                       adaptive_at=adaptive_at)


def _tail(history: Sequence[int], n: int) -> Sequence[int]:
    """The last ``n`` of ``history`` (any sequence or iterable)."""
    if n <= 0:
        return ()
    try:
        return history[-n:]
    except TypeError:  # an iterable without slicing
        return list(history)[-n:]
