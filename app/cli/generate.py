"""``samplescope generate``: one generation headless, every step printed as it is made.

Owns: ``cmd_generate`` (local: the same ``GenerationSession`` as the window; remote: the same
step records from an OpenAI-compatible server, marked ``estimated``). Main thread; no Qt.
"""

from __future__ import annotations

import argparse
import sys

from backends.base import Finished, SamplerSettings, Step

from .args import settings_from_args
from .scaffold import chat_messages, checking_input, dumps, is_remote, load_backend, print_items, remote_backend

__all__ = ["cmd_generate"]


def cmd_generate(a: argparse.Namespace) -> int:
    from app.core.session import GenerationSession

    settings = settings_from_args(a)
    with checking_input():
        settings.validate()
    if is_remote(a):
        return _generate_remote(a, settings)
    session = None
    backend = load_backend(a)
    try:
        session = GenerationSession(backend, a.prompt, settings)
        fin = print_items(session.run(a.cancel), a.json)
    except KeyboardInterrupt:  # a second Ctrl+C: end now, with what was produced
        if session is None:
            return 130
        fin = session.cancel()
    summary = {
        "text": fin.text,
        "n_tokens": fin.n_tokens,
        "tokens_per_s": round(fin.tokens_per_s, 2),
        "finish_reason": fin.reason,
        "prompt_tokens": fin.prompt_tokens,
        "model": backend.info.name,
        "model_path": backend.info.path,
        "settings": settings.to_dict(),
    }
    if a.json:
        print(dumps({"summary": summary}))
    else:
        print(f"\n[{fin.n_tokens} tokens, {fin.tokens_per_s:.1f} tokens/s, {fin.reason}]", file=sys.stderr)
    return 130 if fin.reason == "cancelled" else 0


def _generate_remote(a: argparse.Namespace, settings: SamplerSettings) -> int:
    """``generate --base-url``: the same per-step JSON from an OpenAI-compatible server;
    ``token_id`` is null where the server gives none and ``estimated`` marks values computed
    from the top-N alternatives only."""
    backend = remote_backend(a)
    messages = chat_messages(a) if a.chat else None
    fin: Finished | None = None
    steps: list[Step] = []

    def collect(items):
        for item in items:
            if isinstance(item, Step):
                steps.append(item)
            yield item

    try:
        items = backend.stream(None if a.chat else a.prompt, settings, messages=messages, cancel=a.cancel,
                               on_wait=lambda left, why: print(f"[{why}: retrying in {left:.0f} s]",
                                                               file=sys.stderr))
        fin = print_items(collect(items), a.json)
    except KeyboardInterrupt:  # a second Ctrl+C: the stream is abandoned, its steps kept
        a.cancel.set()
    finally:
        backend.close()
    summary = {
        "text": fin.text if fin else "".join(s.token for s in steps),
        "n_tokens": fin.n_tokens if fin else len(steps),
        "tokens_per_s": round(fin.tokens_per_s, 2) if fin else 0.0,
        "finish_reason": fin.reason if fin else "cancelled",
        "message": fin.message if fin else "Stopped by the user; the partial output is kept.",
        "model": a.model,
        "base_url": a.base_url,
        "chat": bool(a.chat),
        "estimated": True,
        "settings": settings.to_dict(),
    }
    if a.json:
        print(dumps({"summary": summary}))
    else:
        print(f"\n[{summary['n_tokens']} tokens, {summary['finish_reason']}]", file=sys.stderr)
    return 130 if summary["finish_reason"] == "cancelled" else 0
