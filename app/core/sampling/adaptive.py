"""The samplers that carry state from step to step: Mirostat (v1 and v2) and adaptive-p.

Owns ``SamplerState`` (Mirostat's running ``mu``, adaptive-p's moving average of the chosen
tokens' probabilities), its start (``SamplerState.initial``) and its update after a token
(``advance``), and the stages ``_stage_mirostat``, ``_stage_mirostat_v2`` and
``_stage_adaptive_p``. Semantics and float32 arithmetic are llama.cpp's
(``llama_sampler_init_mirostat``, ``_mirostat_v2``, ``_adaptive_p`` of the pinned version):

- Mirostat v1 estimates the Zipf exponent s_hat from the 100 most likely candidates, keeps the
  top k = ((s_hat - 1) * 2**mu / (1 - n_vocab ** -(s_hat - 1))) ** (1 / s_hat); v2 keeps the
  candidates whose surprise -log2 p is at most mu (it sorts the whole candidate list, as
  llama.cpp does: some 20 ms a step on 262,144 tokens). After the token, mu -= eta * (surprise of
  the token - tau), with mu starting at 2 * tau.
- adaptive-p moves every candidate's logit to 5 - 10 d^2 / (1 + d), d = |p - target'| / 0.3,
  where target' = 2 * target - (moving average of the chosen tokens' probabilities before the
  transform), clamped to 0..1; the average decays by ``adaptive_decay`` per token.

Deliberate differences: llama.cpp's Mirostat and adaptive-p draw the token with their own
generator; here the draw is the chain's (``ChainResult.draw``), so the state follows whatever
token is taken. A token forced by the user (step mode, a branch) updates mu from its
probability after the chain when it has one (a token Mirostat cut leaves mu as it was) and does
not move adaptive-p's average (llama.cpp's ``accept`` ignores a token it did not select).

Any thread (pure numpy); a ``SamplerState`` is a frozen value. No Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from backends.base import SamplerSettings

from .numeric import _F32, _expf, _logf_scalar, _seqsum, _top_desc
from .stages import _Cands

__all__ = ["SamplerState", "advance"]

#: llama.cpp's Mirostat v1 estimates s_hat from this many candidates
MIROSTAT_M = 100
_WIDTH_INV = _F32(1.0) / _F32(0.3)
_PEAK = _F32(5.0)
_SHARPNESS = _F32(10.0)


@dataclass(frozen=True, slots=True)
class SamplerState:
    """What the stateful samplers carry to the next step: ``mu`` (Mirostat's running maximum
    surprise, in bits; None without Mirostat) and adaptive-p's ``ema_sum`` (sum of the chosen
    tokens' probabilities, each older one times the decay once more) and ``ema_weight`` (the
    same sum of weights)."""

    mu: float | None = None
    ema_sum: float = 0.0
    ema_weight: float = 0.0

    @classmethod
    def initial(cls, s: SamplerSettings) -> "SamplerState":
        """The state before the first token (llama.cpp's init / reset)."""
        mu = float(_F32(2.0) * _F32(s.mirostat_tau)) if s.mirostat in (1, 2) else None
        decay = _F32(min(max(s.adaptive_decay, 0.0), 0.99))
        target = _F32(s.adaptive_target)
        return cls(mu, float(_F32(target / (_F32(1.0) - decay))), float(_F32(_F32(1.0) / (_F32(1.0) - decay))))

    def adapted_target(self, target: float) -> float:
        """adaptive-p's target for this step, from the moving average."""
        t = min(max(_F32(target), _F32(0.0)), _F32(1.0))
        if _F32(self.ema_weight) == 0:
            a = t
        else:
            a = _F32(_F32(2.0) * t - _F32(_F32(self.ema_sum) / _F32(self.ema_weight)))
        return float(min(max(a, _F32(0.0)), _F32(1.0)))


def advance(state: SamplerState, s: SamplerSettings, p_final: float, p_before_adaptive: float | None,
            drawn: bool) -> SamplerState:
    """The state after a token whose final probability was ``p_final`` and whose probability
    entering adaptive-p was ``p_before_adaptive`` (None when adaptive-p did not run)."""
    mu = state.mu
    if mu is not None and p_final > 0:
        surprise = -_F32(math.log2(float(_F32(p_final))))
        mu = float(_F32(_F32(mu) - _F32(_F32(s.mirostat_eta) * _F32(surprise - _F32(s.mirostat_tau)))))
    ema_sum, ema_weight = state.ema_sum, state.ema_weight
    if p_before_adaptive is not None and drawn:
        decay = _F32(min(max(s.adaptive_decay, 0.0), 0.99))
        ema_sum = float(_F32(_F32(p_before_adaptive) + decay * _F32(ema_sum)))
        ema_weight = float(_F32(_F32(1.0) + decay * _F32(ema_weight)))
    return SamplerState(mu, ema_sum, ema_weight)


def _sorted_probs(c: _Cands, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``k`` best candidates (descending) and their float32 softmax
    probabilities over all candidates (llama.cpp's ``softmax_impl``)."""
    top = _top_desc(c.lg, min(k, len(c)))
    mx = c.lg[top[0]]
    total = _seqsum(_expf(c.lg - mx))
    return top, (_expf(c.lg[top] - mx) / total).astype(_F32)


def _stage_mirostat(c: _Cands, tau: float, mu: float, n_vocab: int) -> _Cands:
    """Mirostat 1.0: the top k candidates, k from the estimated Zipf exponent and ``mu``."""
    n = len(c)
    if n <= 1:
        return c
    top, p = _sorted_probs(c, MIROSTAT_M)
    sum_tb = _F32(0.0)
    sum_tt = _F32(0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i in range(min(MIROSTAT_M - 1, n - 1, top.shape[0] - 1)):
            t_i = _logf_scalar(_F32(i + 2) / _F32(i + 1))
            b_i = _logf_scalar(_F32(p[i] / p[i + 1]))
            sum_tb = _F32(sum_tb + _F32(t_i * b_i))
            sum_tt = _F32(sum_tt + _F32(t_i * t_i))
        s_hat = _F32(sum_tb / sum_tt)
        eps = _F32(s_hat - _F32(1.0))
        num = _F32(eps * _F32(np.power(_F32(2.0), _F32(mu))))
        den = _F32(_F32(1.0) - _F32(np.power(_F32(n_vocab), -eps)))
        k = _F32(np.power(_F32(num / den), _F32(_F32(1.0) / s_hat)))
    kf = float(k)
    # C's int() of a NaN or of a float past INT_MAX is INT_MIN on x86, so llama.cpp keeps 1 there
    keep = max(int(kf), 1) if math.isfinite(kf) and -2.0**31 < kf < 2.0**31 else 1
    keep = min(keep, n)
    if keep <= top.shape[0]:
        return c.take(top[:keep], True)
    return c.take(_top_desc(c.lg, keep), True)


def _stage_mirostat_v2(c: _Cands, mu: float) -> _Cands:
    """Mirostat 2.0: the candidates whose surprise -log2 p is at most ``mu`` (at least one).
    As in llama.cpp the candidates are sorted and the softmax is a float32 sum in that order:
    the cut is a threshold on p, so the summation order decides a token lying on it."""
    n = len(c)
    if n <= 1:
        return c
    c = c.sort()
    e = _expf(c.lg - c.lg[0])
    p = (e / _seqsum(e)).astype(_F32)
    with np.errstate(divide="ignore"):
        surprise = -np.log2(p)
    over = np.flatnonzero(surprise > _F32(mu))
    keep = int(over[0]) if over.shape[0] else n
    return c.head(max(keep, 1)) if keep < n else c


def _stage_adaptive_p(c: _Cands, adapted_target: float) -> _Cands:
    """adaptive-p's transform: each candidate's new logit from the distance of its
    probability to the adapted target (nothing is removed)."""
    mx = c.lg.max()
    e = _expf(c.lg - mx)
    p = (e / _seqsum(e)).astype(_F32)
    d = np.abs((p - _F32(adapted_target)) * _WIDTH_INV).astype(_F32)
    lg = (_PEAK - (_SHARPNESS * d * d).astype(_F32) / (_F32(1.0) + d)).astype(_F32)
    return _Cands(c.ids, lg, False)
