"""Chat templates: messages into the prompt text a model was trained on.

Owns: ``conversation`` (the messages of one question), ``apply_chat_template`` (llama.cpp's ``llama_chat_apply_template``, which recognises the
common template families) and ``chat_prompt`` (the same as a ``ChatPrompt`` that keeps the
template's own parts apart from the messages' contents, so only the template's markers become
control tokens). Qt-free; any thread.
"""

from __future__ import annotations

import ctypes
from typing import Sequence

from .base import ChatPrompt, GenerationError
from .llama_runtime import load_llama_cpp
from .text import clean_text

__all__ = ["apply_chat_template", "chat_prompt", "conversation"]


def conversation(user: str, system: str | None = None) -> list[dict]:
    """The messages of one question: the ``system`` message (when given) and the user's turn."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def apply_chat_template(template: str | bytes, messages: Sequence[dict]) -> str:
    """Format ``messages`` ({"role", "content"} dicts) with a chat template through llama.cpp's
    ``llama_chat_apply_template`` (which recognises the common template families), adding the
    opening of the assistant's turn. GenerationError when llama.cpp does not know the template."""
    ll = load_llama_cpp()
    tmpl = template.encode("utf-8") if isinstance(template, str) else template
    keep = [(str(m["role"]).encode("utf-8"), str(m["content"]).encode("utf-8")) for m in messages]
    arr = (ll.llama_chat_message * len(keep))()
    for i, (role, content) in enumerate(keep):
        arr[i].role = role
        arr[i].content = content
    size = 1024
    while True:
        buf = ctypes.create_string_buffer(size)
        n = ll.llama_chat_apply_template(tmpl, arr, len(keep), True, buf, size)
        if n < 0:
            raise GenerationError("llama.cpp does not recognise this model's chat template; use the "
                                  "completion style.")
        if n < size:
            return buf.raw[:n].decode("utf-8", errors="replace")
        size = n + 1


def chat_prompt(template: str | bytes, messages: Sequence[dict]) -> ChatPrompt:
    """``apply_chat_template`` as a ``ChatPrompt`` that knows which parts are the template's.

    The template is applied twice: to the real messages (the text) and to messages whose
    contents are unique placeholders (the template's own parts are what lies between them).
    The text is then cut into template parts and contents by walking both in order, each
    content matched by its known length (templates may trim it), never by searching for the
    next marker: a content that contains ``<end_of_turn>`` cannot end its own turn early."""
    messages = [{"role": str(m["role"]), "content": clean_text(m["content"])} for m in messages]
    text = apply_chat_template(template, messages)
    marks = [f"\x1fsamplescope-content-{i}\x1f" for i in range(len(messages))]
    skeleton = apply_chat_template(template, [{"role": m["role"], "content": k} for m, k in zip(messages, marks)])
    parts: list[tuple[str, bool]] = []
    pos = 0
    rest = skeleton
    for m, k in zip(messages, marks):
        head, sep, rest = rest.partition(k)
        if not sep or not text.startswith(head, pos):
            raise GenerationError("This model's chat template changes message texts in a way Samplescope "
                                  "cannot follow; use the completion style.")
        parts.append((head, True))
        pos += len(head)
        content = m["content"]
        for variant in (content, content.strip(), content.lstrip(), content.rstrip(), ""):
            if text.startswith(variant, pos):
                break
        parts.append((variant, False))
        pos += len(variant)
    if text[pos:] != rest:
        raise GenerationError("This model's chat template changes message texts in a way Samplescope "
                              "cannot follow; use the completion style.")
    parts.append((rest, True))
    return ChatPrompt(tuple(p for p in parts if p[0]))
