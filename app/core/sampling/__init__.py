"""Our own sampler chain, with llama.cpp's semantics, and the per-step analysis around it.

Owns: ``softmax_stats``, ``apply_chain`` and ``ChainResult`` (plus ``benchmark_chain``).
Given one step's full-vocabulary logits, ``apply_chain`` runs the chain in llama.cpp's
order of the settings (``SAMPLER_ORDER`` by default: penalties, DRY, top-n-sigma, top_k,
typical, top_p, min_p, XTC, temperature; Mirostat replaces it; adaptive-p runs last),
records what every active stage did (``StageInfo``), and leaves a ``ChainResult`` that can
draw the next token and build the ``Step`` record.

Semantics follow llama.cpp's own samplers (``src/llama-sampler.cpp`` of the llama.cpp
vendored in llama-cpp-python 0.3.36) including the details that decide which tokens survive:
``min_keep``, ``>=`` in top-p versus ``>`` in typical, top-k ignoring ``min_keep``, softmax
renormalised over the current candidates, typical reordering the candidates, min-p's two
code paths, and the float32 arithmetic. Where a kept set depends on rounding (cumulative sums
in top-p and typical) we repeat llama.cpp's float32 sums in its own candidate order, so our
kept set is the one llama.cpp would keep. Reported probabilities, entropies and KL are
computed in float64 where it is cheap.

Deliberate differences: ties between equal logits are broken by candidate order (llama.cpp
leaves them to an unstable sort); a candidate whose probability underflows to 0 adds nothing
to typical's entropy (llama.cpp would get NaN there).

Pure numpy + stdlib: no Qt, no llama_cpp import. It runs on whatever thread calls it (the
generation worker in the app). The caller's logits may be a view into llama.cpp's memory: they
are only read, never written, and a ``ChainResult`` keeps no reference to them. A
``ChainResult`` is not meant to be shared across threads.

The package: ``numeric`` (float32 arithmetic as C rounds it, ``_Raw``), ``stages`` (the
candidate array and one function per sampler), ``dry`` (DRY and its sequence breakers),
``adaptive`` (the samplers with state: Mirostat v1/v2, adaptive-p; ``SamplerState``), ``result`` (per-stage snapshots and
``ChainResult``), ``chain`` (``apply_chain``) and ``timing`` (``benchmark_chain``,
``python -m app.core.sampling``). The stages share the private candidate array and its cached
exponentials, which must not leak out of this package.
"""

from .adaptive import SamplerState
from .chain import apply_chain, history_needed, resolve_inputs, resolve_logit_bias, stage_names
from .dry import DryBreakers, dry_penalties, resolve_dry_breakers
from .numeric import _argsort_desc, _expf, _logf, _sample_index, _top_desc, softmax_stats
from .result import ChainResult
from .stages import GRAMMAR_TAIL, GrammarDeadEnd
from .timing import benchmark_chain

__all__ = ["softmax_stats", "apply_chain", "resolve_logit_bias", "history_needed", "resolve_inputs", "stage_names", "SamplerState",
           "DryBreakers", "dry_penalties", "resolve_dry_breakers", "ChainResult", "benchmark_chain", "GRAMMAR_TAIL", "GrammarDeadEnd",
           "_argsort_desc", "_expf", "_logf", "_sample_index", "_top_desc"]
