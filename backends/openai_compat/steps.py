"""Step assembly: what a server sends for one run, turned into ``Step`` records and a ``Finished``.

Owns: ``Run`` (one request's chunks, streamed or all at once, in every shape these servers use,
into Steps: UTF-8 characters split across tokens joined, the top-N deduplicated and ranked, the
entropy bound, text-only steps, our own ``max_tokens`` limit; at the end the ``Finished`` with
its reason, text and notes), ``Fallback`` (a stream that brings text without the
log-probabilities asked for), ``is_text_only`` and ``TEXT_ONLY_NOTE``. What each field of a
remote Step means is written in the package docstring (``backends.openai_compat``).

Pure: parsed JSON in, records out; no I/O, no Qt. A ``Run`` is used by the thread that runs
``OpenAICompatBackend.stream`` (the model worker), never shared.
"""

from __future__ import annotations

import math
from typing import Any

from ..base import Finished, SamplerSettings, Step, TokenAlt
from ..text import Utf8Stream, clean_text
from .logprobs import (
    AltLogprob,
    Malformed,
    TokenLogprob,
    empty_chat_logprobs,
    entropy_lower_bound,
    parse_logprobs,
    piece_text,
    probability,
    same_token,
)

__all__ = ["Run", "Fallback", "is_text_only", "TEXT_ONLY_NOTE"]

#: Part of ``Finished.message`` of a run whose tokens came without log-probabilities.
TEXT_ONLY_NOTE = (
    "text only: the server sent no log-probabilities, so probabilities, ranks and entropy are "
    "unknown (shown as 0)"
)


def is_text_only(step: Step) -> bool:
    """True for a Step of a server that sent no log-probabilities for it (see the package
    docstring): nothing is known about its probability."""
    return step.estimated and not step.top and step.unseen_mass >= 1.0 and step.p_raw == 0.0


class Fallback(Exception):
    """The stream carries text without logprobs although they were asked for."""


class Run:
    """Turns what a server sends into Steps and, at the end, a Finished."""

    def __init__(self, settings: SamplerSettings, n_top: int, *, chat: bool) -> None:
        self.settings = settings
        self.n_top = n_top
        self.chat = chat
        self.index = 0
        self.utf8 = Utf8Stream()
        self.server_text: list[str] = []
        self.step_text: list[str] = []
        self.saw_logprobs = False
        self.text_only = 0
        self.missing_logprob = 0
        self.unknown_shape = False
        self.finish_reason: str | None = None
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.notes: list[str] = []
        self.may_fall_back = n_top > 0
        # our own limit: a server that ignores max_tokens is not read past it
        self.limit = max(1, int(settings.max_tokens))
        self.over_limit = False

    # ---------------------------------------------------------------- chunks
    def chunk(self, obj: Any) -> list[Step]:
        """One streamed JSON object (or a whole non-streamed answer)."""
        if not isinstance(obj, dict):
            raise Malformed("a chunk is not a JSON object")
        self._usage(obj.get("usage"))
        choices = obj.get("choices")
        if choices is None:
            if isinstance(obj.get("content"), str):  # llama.cpp native /completion
                return self._native(obj)
            return []  # e.g. a usage-only or keep-alive object
        if not isinstance(choices, list):
            raise Malformed("choices is not a list")
        steps: list[Step] = []
        for ch in choices:
            if not isinstance(ch, dict):
                raise Malformed("a choice is not an object")
            if ch.get("index", 0) not in (0, None):
                continue
            steps += self._choice(ch)
        return steps

    def _choice(self, ch: dict) -> list[Step]:
        if self.chat:
            holder = ch.get("delta") if isinstance(ch.get("delta"), dict) else ch.get("message")
            text = holder.get("content") if isinstance(holder, dict) else None
        else:
            text = ch.get("text")
        if text is not None and not isinstance(text, str):
            raise Malformed("the text of a choice is not a string")
        raw_lp = ch.get("logprobs")
        tls = parse_logprobs(raw_lp) if raw_lp is not None else None
        if tls is None and raw_lp not in (None, {}, []) and not empty_chat_logprobs(raw_lp):
            self.unknown_shape = True
        fr = ch.get("finish_reason")
        steps = self._emit(text or "", tls)
        if fr:
            self.finish_reason = str(fr)
        return steps

    def _native(self, obj: dict) -> list[Step]:
        text = obj["content"]
        tls = parse_logprobs(obj) if ("completion_probabilities" in obj or "probs" in obj) else None
        steps = self._emit(text, tls)
        if obj.get("stop"):
            stop_type: Any = obj.get("stop_type")
            self.finish_reason = {"limit": "length", "eos": "stop", "word": "stop"}.get(stop_type, "stop")
        self._usage({"prompt_tokens": obj.get("tokens_evaluated")} if obj.get("tokens_evaluated") else None)
        return steps

    def _emit(self, text: str, tls: list[TokenLogprob] | None) -> list[Step]:
        if text:
            self.server_text.append(text)
        room = self.limit - self.index
        if tls:
            self.saw_logprobs = True
            self.may_fall_back = False
            if len(tls) > room:
                self._past_limit()
                tls = tls[:max(room, 0)]
            return [self._token_step(t) for t in tls]
        if text:
            if self.may_fall_back and self.index == 0 and not self.saw_logprobs:
                raise Fallback()
            self.may_fall_back = False
            if room <= 0:
                self._past_limit()
                return []
            return [self._text_step(text)]
        return []

    def _past_limit(self) -> None:
        if not self.over_limit:
            self.over_limit = True
            self.notes.append(f"the server sent more than the {self.limit} token(s) asked for (it ignores "
                              "max_tokens); Samplescope stopped reading there")

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        pt = usage.get("prompt_tokens")
        if isinstance(pt, int) and pt > 0:
            self.prompt_tokens = pt
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            self.cached_tokens = details["cached_tokens"]

    # ---------------------------------------------------------------- steps
    def _token_step(self, t: TokenLogprob) -> Step:
        best: dict[Any, AltLogprob] = {}
        for a in t.top:  # one entry per token, the most likely value kept
            key = ("id", a.id) if a.id is not None else ("b", a.bytes) if a.bytes is not None else ("t", a.text)
            if key not in best or a.logprob > best[key].logprob:
                best[key] = a
        alts = sorted(best.values(), key=lambda a: a.logprob, reverse=True)
        ps = [probability(a.logprob) for a in alts]
        if t.logprob is None:
            self.missing_logprob += 1
        p = probability(t.logprob)
        rank = len(alts) + 1
        for i, a in enumerate(alts):
            if same_token(a.id, a.bytes, a.text, t.id, t.bytes, t.text):
                rank = i + 1
                break
        if t.bytes is not None:
            visible = self.utf8.push(t.bytes)
        else:
            visible = self.utf8.push_text(t.text)
        h = entropy_lower_bound(ps, self.n_top or None)
        step = Step(
            index=self.index,
            position=self.index,
            token_id=t.id,
            token=visible,
            piece=piece_text(t.text, t.bytes),
            p_raw=p,
            p_final=p,
            rank=rank,
            entropy_raw=h,
            entropy_final=h,
            kl_final_raw=0.0,
            top=tuple(TokenAlt(a.id, piece_text(a.text, a.bytes), q, q) for a, q in zip(alts, ps)),
            estimated=True,
            unseen_mass=max(0.0, 1.0 - math.fsum(ps)) if ps else 1.0,
        )
        self.index += 1
        self.step_text.append(visible)
        return step

    def _text_step(self, text: str) -> Step:
        visible = self.utf8.push_text(text)
        step = Step(
            index=self.index,
            position=self.index,
            token_id=None,
            token=visible,
            piece=text,
            p_raw=0.0,
            p_final=0.0,
            rank=0,
            entropy_raw=0.0,
            entropy_final=0.0,
            kl_final_raw=0.0,
            top=(),
            estimated=True,
            unseen_mass=1.0,
        )
        self.index += 1
        self.text_only += 1
        self.step_text.append(visible)
        return step

    # ---------------------------------------------------------------- end
    def finished(self, reason: str, seconds: float, message: str = "") -> Finished:
        tail = self.utf8.flush()
        if tail:
            self.step_text.append(tail)
        use_server = self.server_text and not self.over_limit  # past the limit: only what we kept
        text = clean_text("".join(self.server_text) if use_server else "".join(self.step_text))
        notes = list(self.notes)
        if self.text_only:
            what = TEXT_ONLY_NOTE if self.text_only == self.index else (
                f"{self.text_only} of {self.index} steps came without log-probabilities ({TEXT_ONLY_NOTE})"
            )
            if self.unknown_shape:
                what += "; the server's log-probability format was not recognised"
            notes.append(what)
        if self.missing_logprob:
            notes.append(f"{self.missing_logprob} token(s) came without their own log-probability (p shown as 0)")
        if message:
            notes.insert(0, message)
        return Finished(
            reason=reason,
            text=text,
            n_tokens=self.index,
            seconds=seconds,
            prompt_tokens=self.prompt_tokens,
            reused_tokens=self.cached_tokens,
            message="; ".join(notes),
        )

    def end_reason(self) -> str:
        fr = (self.finish_reason or "").lower()
        if fr == "length" or self.over_limit:
            return "length"
        if fr and fr not in ("stop", "eos", "tool_calls", "function_call"):
            self.notes.append(f"the server ended with finish_reason '{self.finish_reason}'")
        # the API's "stop" covers both an end-of-sequence token and a matched stop string
        return "stop" if self.settings.stop else "eos"

