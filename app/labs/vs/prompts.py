"""Prompt templates of the Verbalized Sampling lab, written in the project's own words.

Owns: the six methods (Direct, Sequence, Multi-turn, VS-Standard, VS-CoT, VS-Multi), their
templates in two styles ("completion": one text for base models that ends exactly where the
answer / the JSON should begin; "chat": a list of messages), the JSON schema of an answer, and
``build_request`` which turns (method, prompt, k, t, style) into a frozen ``VSRequest``.
Pure stdlib, no Qt, no llama_cpp; any thread (everything here is immutable).

Templates: ``default_template`` shows a method's first turn with ``{prompt}`` where the user's
prompt goes (chat messages as ``[role]`` blocks); the window lets the user edit it and
``request_from_template`` turns the edited template back into a ``VSRequest``.

Multi-turn methods (Multi-turn, VS-Multi) are one request per turn: ``VSRequest`` holds the
first turn, the number of turns and the follow-up text; the lab's runner
(``app.labs.vs.engine.run_vs_once``) plays the turns, appending each answer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["METHODS", "STYLES", "VSRequest", "build_request", "answer_schema", "tail_instruction",
           "VS_METHODS", "MULTI_TURN_METHODS", "PROMPT_FIELD", "default_template", "request_from_template",
           "parse_messages"]

METHODS = ("Direct", "Sequence", "Multi-turn", "VS-Standard", "VS-CoT", "VS-Multi")
VS_METHODS = ("VS-Standard", "VS-CoT", "VS-Multi")           # candidates carry probabilities
MULTI_TURN_METHODS = ("Multi-turn", "VS-Multi")
STYLES = ("completion", "chat")
VS_MULTI_PER_TURN = 3   # VS-Multi asks for at most this many candidates per turn

SYSTEM = "You are a helpful assistant. Follow the requested output format exactly."


@dataclass(frozen=True)
class VSRequest:
    """Everything needed to send one (first) turn of a method.

    Exactly one of ``text`` (completion style) and ``messages`` (chat style) is set.
    ``json_schema`` is None for free-text methods (Direct, Multi-turn). ``turns`` > 1 only for
    the multi-turn methods; ``per_turn`` is how many candidates each turn asks for and
    ``follow_up`` the text (completion) or user message (chat) that asks for the next turn.
    ``stop`` holds stop strings that end a free-text answer in completion style.
    """

    method: str
    k: int
    t: float | None
    style: str
    prompt: str
    text: str | None = None
    messages: tuple[dict, ...] | None = None
    json_schema: dict | None = None
    turns: int = 1
    per_turn: int = 1
    follow_up: str = ""
    stop: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        """The request as a user would read it (the text, or the messages one per block)."""
        if self.text is not None:
            return self.text
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages or ())

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "k": self.k, "t": self.t, "style": self.style, "prompt": self.prompt,
                "text": self.text, "messages": list(self.messages) if self.messages else None,
                "json_schema": self.json_schema, "turns": self.turns, "per_turn": self.per_turn,
                "follow_up": self.follow_up, "stop": list(self.stop)}


def answer_schema(k: int, *, probabilities: bool = True, reasoning: bool = False) -> dict:
    """JSON schema of an answer: ``{"responses": [{"text", "probability"}, ...]}`` with exactly k
    items; ``reasoning`` puts a free-text ``reasoning`` field first (VS-CoT); without
    ``probabilities`` items hold only ``text`` (Sequence)."""
    item_props: dict[str, Any] = {"text": {"type": "string", "minLength": 1}}
    required = ["text"]
    if probabilities:
        item_props["probability"] = {"type": "number", "minimum": 0, "maximum": 1}
        required.append("probability")
    props: dict[str, Any] = {}
    if reasoning:
        props["reasoning"] = {"type": "string"}
    props["responses"] = {
        "type": "array",
        "items": {"type": "object", "properties": item_props, "required": required,
                  "additionalProperties": False},
        "minItems": k, "maxItems": k,
    }
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def tail_instruction(t: float | None) -> str:
    """The "tails" instruction: every stated probability must be below t (empty when t is None)."""
    if t is None:
        return ""
    return (f"Pick answers from the tails of the distribution: every probability you give must be "
            f"below {t:g}.")


def _check(method: str, prompt: str, k: int, t: float | None, style: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: 'completion' or 'chat'")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise ValueError(f"k = {k!r} must be a whole number from 1 to 100")
    if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t) and 0 < t <= 1):
        raise ValueError(f"t = {t!r} must be a probability in (0, 1]")
    if not str(prompt).strip():
        raise ValueError("the prompt is empty")


def _vs_body(n: int, t: float | None, reasoning: bool) -> str:
    lines = [f"Write {n} different answers to the task above, each a complete answer on its own.",
             "For each answer, state how likely you would be to give it, as a probability between 0 and 1 "
             "(how often it would come up if you were asked many times)."]
    tail = tail_instruction(t)
    if tail:
        lines.append(tail)
    if reasoning:
        lines.append('First think briefly in a "reasoning" field about which kinds of answers exist, '
                     'then list the answers.')
    fields = '"reasoning" (text), then ' if reasoning else ""
    lines.append(f'Reply with JSON only: an object with {fields}"responses", a list of {n} objects that '
                 'each have "text" (the answer) and "probability" (a number).')
    return "\n".join(lines)


def _sequence_body(k: int) -> str:
    return (f"Write {k} different answers to the task above, each a complete answer on its own.\n"
            f'Reply with JSON only: an object with "responses", a list of {k} objects that each have '
            '"text" (the answer).')


def build_request(method: str, prompt: str, k: int, t: float | None = None,
                  style: str = "completion") -> VSRequest:
    """The request of ``method`` for ``prompt``: k candidates (ignored by Direct), tails threshold t
    as an instruction (VS methods only; None = no instruction), in ``style``."""
    _check(method, prompt, k, t, style)
    prompt = str(prompt).strip()
    schema: dict | None = None
    turns, per_turn, follow_up = 1, 1, ""
    stop: tuple[str, ...] = ()
    if method == "Direct":
        body, kind = "", "free"
    elif method == "Multi-turn":
        body, kind = "", "free"
        turns = k
        follow_up = "Give another answer to the same task, different from all the answers so far."
    elif method == "Sequence":
        body, kind = _sequence_body(k), "json"
        schema = answer_schema(k, probabilities=False)
        per_turn = k
    elif method in ("VS-Standard", "VS-CoT"):
        body, kind = _vs_body(k, t, reasoning=method == "VS-CoT"), "json"
        schema = answer_schema(k, reasoning=method == "VS-CoT")
        per_turn = k
    else:  # VS-Multi
        per_turn = min(k, VS_MULTI_PER_TURN)
        turns = math.ceil(k / per_turn)
        body, kind = _vs_body(per_turn, t, reasoning=False), "json"
        schema = answer_schema(per_turn)
        follow_up = (f"Give {per_turn} more answers, different from all the answers so far, in the same "
                     "JSON format." + (" " + tail_instruction(t) if t is not None else ""))
    if style == "completion":
        if kind == "free":
            text = f"Task: {prompt}\nAnswer:"
            stop = ("\n\n", "\nTask:")
            if follow_up:
                follow_up = f"\n\n{follow_up}\nAnswer:"
        else:
            text = f"Task: {prompt}\n\n{body}\n\nJSON:\n"
            if follow_up:
                follow_up = f"\n\n{follow_up}\nJSON:\n"
        return VSRequest(method, k, t, style, prompt, text=text, json_schema=schema, turns=turns,
                         per_turn=per_turn, follow_up=follow_up, stop=stop)
    user = prompt if kind == "free" else f"{prompt}\n\n{body}"
    messages = ({"role": "system", "content": SYSTEM}, {"role": "user", "content": user})
    return VSRequest(method, k, t, style, prompt, messages=messages, json_schema=schema, turns=turns,
                     per_turn=per_turn, follow_up=follow_up)


# ============================================================================ editable templates

#: where the user's prompt goes in an edited template
PROMPT_FIELD = "{prompt}"
_ROLE_LINE = re.compile(r"(?m)^\[(system|user|assistant)\][ \t]*\n")


def default_template(method: str, k: int, t: float | None = None, style: str = "completion") -> tuple[str, str]:
    """(first turn, follow-up) of ``method`` as editable text, with ``{prompt}`` for the prompt.
    Chat style shows each message as a ``[role]`` line followed by its content."""
    req = build_request(method, PROMPT_FIELD, k, t, style)
    return req.shown, req.follow_up


def parse_messages(text: str) -> tuple[dict, ...]:
    """Chat messages from ``[system]`` / ``[user]`` / ``[assistant]`` blocks (as ``VSRequest.shown``
    writes them). ValueError, saying what to fix, when there is no block or no user message."""
    parts = _ROLE_LINE.split(text)
    if parts[0].strip():
        raise ValueError("Text before the first [system] or [user] line: start each message with a line "
                         "that holds only its role, such as [user].")
    messages = tuple({"role": role, "content": content.strip("\n")}
                     for role, content in zip(parts[1::2], parts[2::2]))
    if not any(m["role"] == "user" for m in messages):
        raise ValueError("The chat template has no [user] message.")
    return messages


def request_from_template(method: str, prompt: str, k: int, t: float | None, style: str, template: str,
                          follow_up: str | None = None) -> VSRequest:
    """The request of ``method`` with its first turn (and follow-up) taken from an edited
    template: ``{prompt}`` is replaced by the prompt (after the template is split into messages,
    so a prompt cannot inject a message). The JSON schema, turns and stop strings stay the
    method's own. ValueError when the template has no ``{prompt}`` or (chat) no user message."""
    base = build_request(method, prompt, k, t, style)
    if PROMPT_FIELD not in template:
        raise ValueError("The template has no {prompt} field, so the prompt would not be sent. "
                         "Put {prompt} where the task should go, or reset the template.")
    prompt = str(prompt).strip()
    fu = base.follow_up if follow_up is None else follow_up
    if style == "completion":
        return replace(base, text=template.replace(PROMPT_FIELD, prompt), follow_up=fu)
    messages = tuple({"role": m["role"], "content": m["content"].replace(PROMPT_FIELD, prompt)}
                     for m in parse_messages(template))
    return replace(base, messages=messages, follow_up=fu)
