"""``benchmark_chain``: ms per step of the chain for a few settings on random logits
(``python -m app.core.sampling``). Main thread; no Qt.
"""

from __future__ import annotations

import time

import numpy as np

from backends.base import SamplerSettings

from .chain import apply_chain
from .numeric import _F32, softmax_stats


def benchmark_chain(n_vocab: int = 262144, steps: int = 200, seed: int = 0) -> None:
    """Print ms/step of ``apply_chain`` (plus ``draw``) for a few settings on random logits."""
    rng = np.random.default_rng(seed)
    logit_sets = []
    for _ in range(8):
        v = rng.normal(0.0, 2.0, n_vocab).astype(_F32)
        hot = rng.choice(n_vocab, 30, replace=False)
        v[hot] += rng.uniform(10.0, 20.0, 30).astype(_F32)  # a model-like peaked head
        logit_sets.append(v)
    history = [int(t) for t in rng.integers(0, n_vocab, 256)]
    base = SamplerSettings()
    cases = [
        ("default (T .8, k 40, p .95, min_p .05)", base),
        ("neutral (T 1, k 0, p 1, min_p 0)", base.replace(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)),
        ("greedy (T 0, others default)", base.replace(temperature=0.0)),
        ("default + penalties (1.1, .1, .1)", base.replace(repeat_penalty=1.1, frequency_penalty=0.1,
                                                         presence_penalty=0.1)),
        ("top_p .95 only (k 0)", base.replace(top_k=0, min_p=0.0, temperature=1.0)),
        ("min_p .05 only (k 0, p 1)", base.replace(top_k=0, top_p=1.0, temperature=1.0)),
        ("typical .9 + default", base.replace(typical_p=0.9)),
        ("typical .9 only (k 0, p 1, min_p 0)", base.replace(top_k=0, top_p=1.0, min_p=0.0,
                                                           typical_p=0.9, temperature=1.0)),
        ("default + DRY (.8, window 64)", base.replace(dry_multiplier=0.8, dry_sequence_breakers=())),
        ("default + XTC (p 1, threshold .1)", base.replace(xtc_probability=1.0)),
        ("top-n-sigma 1 + temperature", base.replace(top_k=0, top_p=1.0, min_p=0.0, top_n_sigma=1.0)),
        ("dynamic temperature (.8 +/- .5)", base.replace(dynatemp_range=0.5)),
        ("Mirostat v1 (tau 5)", base.replace(mirostat=1)),
        ("Mirostat v2 (tau 5)", base.replace(mirostat=2)),
        ("min_p .05 + adaptive-p (.3)", base.replace(top_k=0, top_p=1.0, adaptive_target=0.3)),
    ]
    flat = [rng.normal(0.0, 1.0, n_vocab).astype(_F32) for _ in range(2)]
    draw_rng = np.random.default_rng(1)
    print(f"apply_chain + draw, vocabulary {n_vocab}, float32 input")
    for label, s in cases:
        reps = steps if s.typical_p >= 1 or s.top_k > 0 else max(10, steps // 10)
        apply_chain(logit_sets[0], s, history).draw(draw_rng)
        t0 = time.perf_counter()
        for i in range(reps):
            apply_chain(logit_sets[i % len(logit_sets)], s, history).draw(draw_rng)
        ms = (time.perf_counter() - t0) / reps * 1e3
        print(f"  {label:42s} {ms:7.3f} ms/step")
    s = base.replace(top_k=0, min_p=0.0, temperature=1.0)
    t0 = time.perf_counter()
    for i in range(10):
        apply_chain(flat[i % 2], s).draw(draw_rng)
    ms = (time.perf_counter() - t0) / 10 * 1e3
    print(f"  {'top_p .95 only, flat N(0,1) logits':42s} {ms:7.3f} ms/step  (needs a full sort)")
    t0 = time.perf_counter()
    for i in range(steps):
        softmax_stats(logit_sets[i % len(logit_sets)])
    print(f"  {'softmax_stats alone':42s} {(time.perf_counter() - t0) / steps * 1e3:7.3f} ms/step")
