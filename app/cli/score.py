"""``samplescope score``: every token of a text scored by the model (the prompt X-ray, headless).

Owns ``cmd_score``: one JSON record per token (``position``, ``token_id``, ``token``,
``logprob`` in nats given everything before it, null for the first token, ``rank``, ``top``,
``continuation``), then a summary with the perplexity (of the continuation when one is given).
With ``--base-url``, a server that echoes prompt log-probabilities (the probe finds out; vLLM and
llama-cpp-python's server with ``--logits_all true`` do): there ranks beyond the top-N are
``top + 1`` and entropies lower bounds, and each record says ``"estimated": true``. Main thread;
no Qt.
"""

from __future__ import annotations

import argparse

from .scaffold import UsageError, dumps, is_remote, open_model

__all__ = ["cmd_score"]


def cmd_score(a: argparse.Namespace) -> int:
    from app.core.scoring import score_remote, score_text

    if not 1 <= a.top <= 100:
        raise UsageError(f"--top {a.top} is outside 1 .. 100")
    backend, _ = open_model(a, probe=True)
    try:
        if is_remote(a):
            if not backend.capabilities.prompt_logprobs:
                raise UsageError(f"score {backend.capabilities.why_not('prompt_logprobs')} (leave out --base-url).")
            res = score_remote(backend, a.prompt, a.continuation or "", top_n=a.top, cancel=a.cancel)
        else:
            res = score_text(backend, a.prompt, a.continuation or "", top_n=a.top, cancel=a.cancel)
    finally:
        backend.close()
    for t in res.tokens:
        if a.json:
            print(dumps(t.to_dict()), flush=True)
        else:
            lp = "-" if t.logprob is None else f"{t.logprob:8.3f}"
            rank = "-" if t.rank is None else str(t.rank)
            alts = ", ".join(f"{tok!r} {p:.0%}" for _, tok, p in t.top[:3])
            print(f"{t.position:>4} {t.token!r:<20} logprob {lp}  rank {rank:>6}  {alts}")
    s = res.summary()
    if a.json:
        print(dumps({"summary": s}))
    else:
        what = "the continuation" if a.continuation else "the text"
        print(f"\nperplexity of {what}: {s['perplexity']:.3f} over {s['n_scored']} tokens "
              f"(total log-probability {s['total_logprob']:.3f} nats)")
    return 130 if a.cancel is not None and a.cancel.is_set() else 0
