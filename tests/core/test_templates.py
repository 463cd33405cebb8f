"""User templates are filled without ``str.format``: nothing in them is evaluated."""

from __future__ import annotations

import pytest

from app.labs.align.task import PRESETS, TaskError, render_prompt
from app.labs.shift.concepts import BUILTIN_CONCEPTS, render
from app.core.templates import render_template, template_fields


def test_fields_specs_and_literal_braces():
    assert render_template("{n:>3}|{x}|{{y}}", {"n": 3, "x": "a"}) == "  3|a|{y}"
    assert template_fields("{a} {b:5}", ("a", "b")) == ["a", "b"]


@pytest.mark.parametrize("template, why", [
    ("{n:{0}}", "inside a format spec"),
    ("{n:{n.__class__}}", "inside a format spec"),
    ("{n.__class__}", "attribute and index access"),
    ("{n[0]}", "attribute and index access"),
    ("{0}", "positional"),
    ("{}", "positional"),
    ("{n!r}", "conversions"),
    ("{nope}", "unknown field"),
    ("a { b", "unmatched"),
    ("{n:q}", "does not suit"),
])
def test_every_unsafe_or_broken_template_is_a_clear_value_error(template, why):
    with pytest.raises(ValueError, match=why):
        render_template(template, {"n": 3})


def test_the_labs_use_it():
    with pytest.raises(TaskError, match="inside a format spec"):
        render_prompt(PRESETS["extreme"], 3, "chat", "{n:{0}}")
    c = BUILTIN_CONCEPTS[0]
    with pytest.raises(ValueError, match="attribute"):
        render(c, "average", "chat", {("average", "chat"): "{name.__class__}"})
    with pytest.raises(ValueError, match="inside a format spec"):
        render(c, "average", "chat", {("average", "chat"): "{name:{unit}}"})
    assert render(c, "average", "chat", {("average", "chat"): "{name:.3}?"}) == c.name[:3] + "?"
