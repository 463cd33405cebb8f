"""The layer lens: each layer's output projected through the model's own output head.

Owns:
- ``Projector``: a layer's residual (``l_out-N``, read by ``backends.layer_capture``) through
  what the head applies (``backends.output_head``): the final RMSNorm (or LayerNorm) with its
  weights and the model's epsilon, the unembedding, any output bias, logit scale and
  soft-capping. The activations entering the unembedding are rounded as llama.cpp's CPU matrix
  product rounds them (``rounding="ggml-cpu"``: for a Q8_0 matrix it quantizes them to Q8_0,
  blocks of 32 with a float16 scale; Q8_K for the K-quants; float16 for F16), which is what makes
  the last layer's projection equal the model's own logits to float noise; ``"float32"`` does
  not round (the fallback where llama.cpp computes otherwise, a GPU).
- the self-check: ``check_projection`` compares the last layer's projected distribution with
  the model's own output distribution (the logits the engine gives at the same position of the
  same evaluation), as the largest |delta log p| over the whole vocabulary and the total
  variation. Measured on the embedded Gemma 3 270M (192 positions of three 64-token runs):
  4.4e-6 .. 2.7e-5 nats (median 7.8e-6; total variation at most 1.8e-6) with the ggml-cpu
  rounding, so ``TOLERANCE_NATS`` is 1e-3, 37 times the largest; without the rounding
  (float32) 0.11 .. 0.49 nats, total variation at most 0.037, so the fallback allows
  ``TOLERANCE_FLOAT32_NATS`` 1.0 and ``TOLERANCE_TV`` 0.1. A wrong head (Gemma's norm with the
  +1 added a second time) is 19 .. 28.5 nats off at every position (its total variation is as
  low as 0.0007 at some, which is why the vocabulary-wide log-probability is the measure). The
  check runs on the first step of every model (cached per loaded head); where neither passes,
  ``LensUnavailable`` says the measured difference and why, and no lens is shown.
- ``StepLens`` / ``LensLayer``: one step's lens (per layer, first to last: the top tokens with
  probabilities, the probability and rank of the token finally chosen, the entropy in nats)
  and its ``commitment_layer``: the first layer from which the chosen token stays the top-1 of
  every later layer (None when the last layer's top-1 is another token: a sampled token the
  model did not favour).
- ``lens_run``: the lens of chosen steps of a run, teacher-forced on the run's own tokens on a
  lens context of its own (``teacher_forcing.forced_layers``), so the run itself is whatever the
  Workbench or ``GenerationSession`` made; ``commitment_layer`` (the rule, on top-1 ids).

The distributions are the model's own (raw: no sampler, no temperature). Layers are numbered
0 .. n_layers - 1 as llama.cpp names them (``l_out-N``). Runs on the calling thread (the model
worker in the window, the main thread headless); no Qt.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from backends.base import GenerationError, Step
from backends.layer_capture import LensUnavailable

if TYPE_CHECKING:
    from backends.kinds import LocalEngine
    from backends.output_head import OutputHead

__all__ = ["Projector", "LensCheck", "LensLayer", "StepLens", "LensUnavailable", "check_projection",
           "commitment_layer", "layer_stats", "lens_run", "lens_projector", "TOLERANCE_NATS", "TOLERANCE_TV",
           "TOLERANCE_FLOAT32_NATS", "steps_tokens",
           "activation_rounding"]

#: the self-check's tolerance with llama.cpp's CPU rounding: max |delta log p| over the vocabulary (nats)
TOLERANCE_NATS = 1e-3
#: the self-check's tolerances of the float32 fallback (no rounding): max |delta log p| (nats) and
#: total variation distance, both
TOLERANCE_FLOAT32_NATS = 1.0
TOLERANCE_TV = 0.1

#: the type llama.cpp's CPU kernels convert the activations to before a product with a matrix of
#: each type (ggml-cpu.c ``type_traits_cpu[...].vec_dot_type``)
_VEC_DOT = {"F32": None, "F16": "F16", "BF16": "BF16", "Q8_0": "Q8_0", "Q4_0": "Q8_0", "Q5_0": "Q8_0",
            "IQ4_NL": "Q8_0", "MXFP4": "Q8_0", "NVFP4": "Q8_0", "Q1_0": "Q8_0", "Q4_1": "Q8_1", "Q5_1": "Q8_1",
            "Q8_1": "Q8_1", "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K",
            "IQ2_XXS": "Q8_K", "IQ2_XS": "Q8_K", "IQ2_S": "Q8_K", "IQ3_XXS": "Q8_K", "IQ3_S": "Q8_K",
            "IQ1_S": "Q8_K", "IQ1_M": "Q8_K", "IQ4_XS": "Q8_K", "TQ1_0": "Q8_K", "TQ2_0": "Q8_K"}


def activation_rounding(unembedding_type: str) -> str | None:
    """What llama.cpp's CPU product with a matrix of ``unembedding_type`` rounds the activations
    to (None: nothing, an F32 matrix or a type not in the table)."""
    return _VEC_DOT.get(unembedding_type)


def _round_q8_0(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q8_0 (its AVX2 form) and back: blocks of 32, scale max|x| / 127 kept
    as float16, values rounded to the nearest integer (ties to even) at 127 / max|x|."""
    k, n = x.shape
    b = x.reshape(k, n // 32, 32)
    amax = np.abs(b).max(axis=-1, keepdims=True)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax > 0)
    q = np.rint(b * inv)
    return (q * d.astype(np.float16).astype(np.float32)).reshape(k, n).astype(np.float32)


def _round_q8_k(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q8_K_ref and back: blocks of 256, iscale = -127 / (the value of
    largest magnitude), values nearest_int(iscale * x) capped at 127, scale 1 / iscale (float32)."""
    k, n = x.shape
    b = x.reshape(k, n // 256, 256)
    idx = np.abs(b).argmax(axis=-1)[..., None]
    mx = np.take_along_axis(b, idx, axis=-1)
    iscale = np.divide(np.float32(-127), mx, out=np.zeros_like(mx), where=mx != 0).astype(np.float32)
    q = np.minimum(np.rint(iscale * b), 127)
    d = np.divide(np.float32(1), iscale, out=np.zeros_like(iscale), where=iscale != 0).astype(np.float32)
    return (q * d).reshape(k, n).astype(np.float32)


def _round_bf16(x: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = ((u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)


def _round(x: np.ndarray, kind: str | None) -> np.ndarray:
    if kind is None:
        return x
    n = x.shape[-1]
    if kind in ("Q8_0", "Q8_1") and n % 32 == 0:
        return _round_q8_0(x)
    if kind == "Q8_K" and n % 256 == 0:
        return _round_q8_k(x)
    if kind == "F16":
        return x.astype(np.float16).astype(np.float32)
    if kind == "BF16":
        return _round_bf16(x)
    return x


class Projector:
    """Residuals (k, n_embd) to logits (k, n_vocab), float32, through ``head`` (see the module
    docstring); ``rounding`` is "ggml-cpu" or "float32"."""

    def __init__(self, head: OutputHead, rounding: str = "ggml-cpu") -> None:
        if rounding not in ("ggml-cpu", "float32"):
            raise ValueError(f"unknown rounding {rounding!r}")
        self.head = head
        self.rounding = rounding
        self._kind = activation_rounding(head.spec.unembedding_type) if rounding == "ggml-cpu" else None

    def normed(self, h: np.ndarray) -> np.ndarray:
        """The final norm of ``h`` with its weights (float32; sums in float64 as ggml's do)."""
        spec, head = self.head.spec, self.head
        x = np.asarray(h, dtype=np.float32).reshape(-1, spec.n_embd)
        x64 = x.astype(np.float64)
        if spec.norm == "rms":
            scale = 1.0 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + spec.eps)
            y = (x * scale.astype(np.float32)) * head.norm_weight
        else:
            mean = x64.mean(axis=-1, keepdims=True)
            c = (x64 - mean).astype(np.float32)
            var = (c.astype(np.float64) ** 2).mean(axis=-1, keepdims=True)
            y = c * (1.0 / np.sqrt(var + spec.eps)).astype(np.float32) * head.norm_weight
            if head.norm_bias is not None:
                y = y + head.norm_bias
        return np.asarray(y, dtype=np.float32)

    def project(self, h: np.ndarray) -> np.ndarray:
        spec, head = self.head.spec, self.head
        x = _round(self.normed(h), self._kind)
        logits = x @ head.matrix.T
        if head.output_bias is not None:
            logits += head.output_bias
        if spec.logit_scale != 1.0:
            logits *= np.float32(spec.logit_scale)
        if spec.softcap:
            c = np.float32(spec.softcap)
            logits = np.tanh(logits / c) * c
        return logits


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    lg = np.asarray(logits, dtype=np.float64)
    m = lg.max(axis=-1, keepdims=True)
    return lg - m - np.log(np.exp(lg - m).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class LensCheck:
    """The self-check of one model's head: whether the lens may be shown, with which rounding,
    and the measured difference between the last layer's projected distribution and the model's
    own (``max_nats``: max |delta log p| over the vocabulary; ``tv``: total variation) under the
    rounding used (or the best tried, when refused)."""

    ok: bool
    rounding: str
    max_nats: float
    tv: float
    reason: str = ""
    head: str = ""  # HeadSpec.describe()
    position: int = -1

    def describe(self) -> str:
        how = ("llama.cpp's CPU rounding of the activations" if self.rounding == "ggml-cpu"
               else "float32 (no rounding of the activations)")
        verdict = "passed" if self.ok else "FAILED"
        return (f"self-check {verdict}: the last layer's projection ({how}) differs from the model's own output "
                f"distribution by at most {self.max_nats:.2g} nats (total variation {self.tv:.2g})")

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rounding": self.rounding, "max_abs_logprob_diff": self.max_nats, "tv": self.tv,
                "tolerance_nats": TOLERANCE_NATS if self.rounding == "ggml-cpu" else TOLERANCE_FLOAT32_NATS,
                "tolerance_tv": None if self.rounding == "ggml-cpu" else TOLERANCE_TV, "reason": self.reason,
                "head": self.head}


def check_projection(head: OutputHead, last_layer: np.ndarray, logits: np.ndarray, position: int = -1) -> LensCheck:
    """The self-check (see the module docstring) on one position: ``last_layer`` the last
    layer's output there, ``logits`` the model's own logits there."""
    want = _log_softmax(np.asarray(logits, dtype=np.float32).reshape(1, -1))[0]
    p = np.exp(want)
    tried = []
    modes = ["ggml-cpu"] + (["float32"] if activation_rounding(head.spec.unembedding_type) else [])
    for mode in modes:
        got = _log_softmax(Projector(head, mode).project(last_layer.reshape(1, -1)))[0]
        fin = np.isfinite(want) & np.isfinite(got)
        max_nats = float(np.abs(got[fin] - want[fin]).max()) if fin.any() else math.inf
        tv = float(0.5 * np.abs(np.exp(got) - p).sum())
        ok = (max_nats <= TOLERANCE_NATS if mode == "ggml-cpu"
              else max_nats <= TOLERANCE_FLOAT32_NATS and tv <= TOLERANCE_TV)
        tried.append(LensCheck(ok, mode, max_nats, tv, head=head.spec.describe(), position=position))
        if ok:
            return tried[-1]
    best = min(tried, key=lambda c: c.max_nats)
    reason = (f"The layer lens is refused for this model: its last layer projected through the output head as "
              f"Samplescope reads it ({head.spec.describe()}) differs from the model's own output distribution by "
              f"up to {best.max_nats:.3g} nats in log-probability (total variation {best.tv:.3g}; allowed: "
              f"{TOLERANCE_NATS:g} nats with llama.cpp's rounding, {TOLERANCE_FLOAT32_NATS:g} without). llama.cpp's output head for the "
              f"{head.spec.architecture} architecture applies something the lens does not know, so its layers "
              "would be shown wrong.")
    return LensCheck(False, best.rounding, best.max_nats, best.tv, reason, head.spec.describe(), position)


_checks: "weakref.WeakKeyDictionary[OutputHead, LensCheck]" = weakref.WeakKeyDictionary()
_checks_lock = threading.Lock()


def lens_projector(head: OutputHead, last_layer: np.ndarray, logits: np.ndarray, position: int = -1
                   ) -> tuple[Projector, LensCheck]:
    """The projector of ``head`` once its self-check has passed: the check runs on the first
    position a lens is asked for with this head (once per loaded model) and is remembered;
    ``LensUnavailable`` (with the measured difference) when it failed."""
    with _checks_lock:
        check = _checks.get(head)
    if check is None:
        check = check_projection(head, last_layer, logits, position)
        with _checks_lock:
            _checks[head] = check
    if not check.ok:
        raise LensUnavailable(check.reason)
    return Projector(head, check.rounding), check


@dataclass(frozen=True, slots=True)
class LensLayer:
    """One layer's projected distribution at one step."""

    layer: int
    top: tuple[tuple[int, str, float], ...]  # (token id, text, probability), most likely first
    p_chosen: float
    rank_chosen: int  # 1 = this layer's top-1
    entropy: float  # nats

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "top": [{"id": i, "token": t, "p": p} for i, t, p in self.top],
                "p_chosen": self.p_chosen, "rank_chosen": self.rank_chosen, "entropy": self.entropy}


@dataclass(frozen=True, slots=True)
class StepLens:
    """The lens of one step: every layer, first to last, and the commitment layer."""

    index: int
    position: int
    token_id: int
    token: str
    commitment_layer: int | None
    layers: tuple[LensLayer, ...]

    @property
    def p_chosen(self) -> np.ndarray:
        return np.array([x.p_chosen for x in self.layers])

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "position": self.position, "token_id": self.token_id, "token": self.token,
                "commitment_layer": self.commitment_layer, "layers": [x.to_dict() for x in self.layers]}


def commitment_layer(top1: Sequence[int], chosen: int) -> int | None:
    """The first layer from which ``chosen`` is the top-1 of that layer and of every later one
    (``top1``: each layer's top-1 id, first to last); None when the last layer's top-1 is not it."""
    first: int | None = None
    for i in range(len(top1) - 1, -1, -1):
        if int(top1[i]) != int(chosen):
            break
        first = i
    return first


def _top_ids(row: np.ndarray, k: int) -> np.ndarray:
    """The ids of the ``k`` largest values of ``row``, largest first (ties: the lower id first)."""
    if k <= 16:  # a few argmax passes over a copy: 5 to 10 times faster than argpartition here
        work = np.array(row, dtype=np.float32, copy=True)
        ids = np.empty(k, dtype=np.int64)
        for j in range(k):
            i = int(work.argmax())
            ids[j] = i
            work[i] = -np.inf
        return ids
    ids = np.argpartition(-row, k)[:k]
    return ids[np.lexsort((ids, -row[ids]))]


def layer_stats(logits: np.ndarray, chosen: int, top_n: int, piece: Callable[[int], str]) -> tuple[LensLayer, ...]:
    """Per layer (rows of ``logits``, first to last): top ``top_n``, the chosen token's
    probability and rank, the entropy (nats)."""
    lg = np.asarray(logits, dtype=np.float32)
    m = lg.max(axis=1, keepdims=True)
    e = np.exp(lg - m)
    z = e.sum(axis=1, dtype=np.float64)
    # entropy = log Z + m - sum(p * logit), the sums in float64
    dots = np.einsum("ij,ij->i", e, lg, dtype=np.float64)
    out = []
    k = max(1, min(int(top_n), lg.shape[1] - 1))
    for i in range(lg.shape[0]):
        row = lg[i]
        lse = float(m[i, 0]) + math.log(float(z[i]))
        entropy = max(0.0, lse - float(dots[i]) / float(z[i]))
        top = tuple((int(t), piece(int(t)), math.exp(float(row[t]) - lse)) for t in _top_ids(row, k))
        c = float(row[chosen])
        out.append(LensLayer(i, top, math.exp(c - lse), int(np.count_nonzero(row > row[chosen])) + 1, entropy))
    return tuple(out)


def lens_run(engine: LocalEngine, prompt_tokens: Sequence[int], tokens: Sequence[int], *,
             indices: Sequence[int] | None = None, top_n: int = 5, group_steps: int = 4, head: OutputHead | None = None,
             cancel: threading.Event | None = None, on_check: Callable[[LensCheck], None] | None = None,
             ) -> Iterator[StepLens]:
    """The lens of the steps of a run: ``tokens[i]`` is the token step i chose after
    ``prompt_tokens`` and the tokens before it. ``indices`` (sorted; None: every step) picks the
    steps; their lenses are yielded in order. The run is teacher-forced on a lens context of its
    own (the steps from the first wanted to the last wanted, plus what precedes them without
    outputs), one token per decode as the run was made (so the last layer equals the run's own
    distribution where the run was made from an empty cache); ``group_steps`` steps are projected
    in one matrix product (4: 75 MB of logits at a time for 262,144 tokens, 40 ms a step instead
    of 100 here). ``head`` defaults to the model's own (loaded once per model:
    ``HeadSpec.memory_bytes``); ``on_check`` hears the self-check. Stops early when ``cancel`` is
    set. ``LensUnavailable`` when the lens cannot be shown (the reason in words)."""
    from backends.output_head import model_head

    from .teacher_forcing import forced_layers

    prompt = [int(t) for t in prompt_tokens]
    run = [int(t) for t in tokens]
    if not prompt:
        raise GenerationError("The run has no prompt tokens: nothing precedes its first step.")
    wanted = sorted(set(range(len(run)) if indices is None else (int(i) for i in indices)))
    if not wanted:
        return
    if wanted[0] < 0 or wanted[-1] >= len(run):
        raise GenerationError(f"step {wanted[-1] if wanted[-1] >= len(run) else wanted[0]} is not in the run "
                              f"({len(run)} steps)")
    model = engine.model
    limit = model.n_ctx_train
    n_total = len(prompt) + wanted[-1] + 1
    if limit and n_total > limit:
        raise GenerationError(f"the run is {n_total:,} tokens, more than the model's {limit:,}-token context")
    head = head if head is not None else model_head(model)
    seq = prompt + run[:wanted[-1] + 1]
    first_pos = len(prompt) - 1 + wanted[0]
    wanted_set = set(wanted)
    projector: Projector | None = None
    group: list[tuple[int, np.ndarray]] = []  # (step index, its layers' outputs)

    def flush() -> Iterator[StepLens]:
        assert projector is not None
        logits = projector.project(np.concatenate([g[1] for g in group]))
        n = group[0][1].shape[0]
        for j, (index, _layers) in enumerate(group):
            chosen = run[index]
            stats = layer_stats(logits[j * n:(j + 1) * n], chosen, top_n, model.piece)
            yield StepLens(index, len(prompt) + index, chosen, model.piece(chosen),
                           commitment_layer([x.top[0][0] for x in stats], chosen), stats)
        group.clear()

    for pos, layers, logits in forced_layers(engine, seq, first_pos, prompt_len=len(prompt), chunk=1,
                                             cancel=cancel):
        index = pos - (len(prompt) - 1)
        if index not in wanted_set:
            continue
        if projector is None:
            projector, check = lens_projector(head, layers[-1], logits, pos)
            if on_check is not None:
                on_check(check)
        group.append((index, np.array(layers, copy=True)))
        if len(group) >= group_steps:
            yield from flush()
    if group and not (cancel is not None and cancel.is_set()):
        yield from flush()


def steps_tokens(steps: Sequence[Step]) -> list[int]:
    """The token ids of a run's steps (``GenerationError`` for a step without one: a server's)."""
    if any(s.token_id is None for s in steps):
        raise LensUnavailable("The layer lens needs the run's token ids, which a server's run does not have.")
    return [int(s.token_id) for s in steps if s.token_id is not None]


def timed(gen: Iterator[StepLens]) -> Iterator[tuple[StepLens, float]]:
    """Each lens of ``gen`` with the seconds it took (its evaluation and projection)."""
    t0 = time.perf_counter()
    for item in gen:
        t1 = time.perf_counter()
        yield item, t1 - t0
        t0 = time.perf_counter()
