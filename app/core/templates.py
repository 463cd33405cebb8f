"""User-editable prompt templates: ``{field}`` placeholders filled safely.

Owns: ``template_fields`` (check a template against the fields it may use) and
``render_template`` (fill it). The labs' editable templates (the P(token) lab's prompt, the
shift lab's three questions) go through here, and nothing else formats user text.

Why not ``str.format``: it evaluates attribute and index access (``{n.__class__}``), reads
positional fields (``{0}`` raises ``IndexError``) and fills fields nested inside a format spec
(``{n:{0}}``). Here the template is parsed with ``string.Formatter().parse`` and every field
is checked: a known name, no attribute or index access, no conversion, a format spec without
braces; then each value is formatted with ``format(value, spec)`` on its own. Every problem is
a ``ValueError`` whose message names the field.

Pure stdlib, no Qt; any thread.
"""

from __future__ import annotations

import string
from typing import Any, Iterable, Mapping

__all__ = ["template_fields", "render_template"]


def _allowed_text(allowed: Iterable[str]) -> str:
    return ", ".join("{" + f + "}" for f in allowed)


def _parse(template: str, allowed: tuple[str, ...]) -> list[tuple[str, str | None, str]]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # a single "{" or "}"
        raise ValueError(f"the template is malformed: an unmatched '{{' or '}}' ({exc}); write {{{{ or }}}} "
                         "for a literal brace") from None
    out: list[tuple[str, str | None, str]] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            out.append((literal, None, ""))
            continue
        shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if field not in allowed:
            if field == "" or field.isdigit():
                why = " (positional fields are not supported)"
            elif any(c in field for c in ".["):
                why = " (attribute and index access are not supported)"
            else:
                why = ""
            raise ValueError(f"unknown field {shown} in the template{why}; the fields are {_allowed_text(allowed)}")
        if conversion:
            raise ValueError(f"conversions such as !{conversion} are not supported: {shown} in the template")
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(f"a field inside a format spec is not supported: {shown} in the template")
        out.append((literal, field, spec or ""))
    return out


def template_fields(template: str, allowed: Iterable[str]) -> list[str]:
    """The fields ``template`` uses, in order. ``ValueError`` (naming the field) for an unknown
    field, a positional ``{}``/``{0}``, attribute or index access, a conversion, a field nested
    in a format spec, or a stray brace."""
    return [f for _, f, _ in _parse(str(template), tuple(allowed)) if f is not None]


def render_template(template: str, values: Mapping[str, Any]) -> str:
    """``template`` with each ``{field}`` / ``{field:spec}`` replaced by ``format(values[field],
    spec)``; ``{{`` and ``}}`` are literal braces. Checks as ``template_fields`` with the keys of
    ``values`` as the allowed fields; a spec that does not suit the value is a ``ValueError``."""
    out: list[str] = []
    for literal, field, spec in _parse(str(template), tuple(values)):
        out.append(literal)
        if field is None:
            continue
        try:
            out.append(format(values[field], spec))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"the format spec of {{{field}:{spec}}} does not suit its value ({exc})") from None
    return "".join(out)
