"""Concept set, templates and CSV import/export of the shift lab."""

from __future__ import annotations

import io
from collections import Counter

import pytest

from app.labs.shift.concepts import (BUILTIN_CONCEPTS, CSV_COLUMNS, DOMAINS, FIELDS, KINDS, STYLES, TEMPLATES,
                                     Concept, ConceptFileError, concepts_from_csv, concepts_to_csv,
                                     question_from_name, render, slugify, template_fields)

EXPECTED_DOMAINS = {"health", "work", "money", "leisure", "environment", "education", "public services", "family"}


# --------------------------------------------------------------------------- built-in set


def test_builtin_set_size_and_domains():
    assert len(BUILTIN_CONCEPTS) >= 48
    counts = Counter(c.domain for c in BUILTIN_CONCEPTS)
    assert set(counts) >= EXPECTED_DOMAINS and set(DOMAINS) == set(counts)
    assert all(counts[d] >= 6 for d in EXPECTED_DOMAINS)


def test_builtin_ids_unique_slugs_and_fields_filled():
    ids = [c.id for c in BUILTIN_CONCEPTS]
    assert len(set(ids)) == len(ids)
    for c in BUILTIN_CONCEPTS:
        assert c.id == slugify(c.id) and c.id
        assert c.name.strip() and c.unit.strip() and c.question.startswith("the ")
        assert c.unit in c.question   # the question names what the number counts


def test_poster_examples_are_included():
    by_name = {c.name: c for c in BUILTIN_CONCEPTS}
    assert by_name["minutes waiting on the phone for customer service"].unit == "minutes"
    assert by_name["hours of exercise per week"].unit == "hours"
    assert by_name["sugary drinks per week"].unit == "drinks"


def test_concept_needs_id_and_name():
    with pytest.raises(ValueError):
        Concept("", "d", "name", "u", "q")
    with pytest.raises(ValueError):
        Concept("x", "d", "  ", "u", "q")


def test_slugify_and_question_from_name():
    assert slugify("Hours of exercise / week!") == "hours-of-exercise-week"
    assert slugify("  Café  crème ") == "cafe-creme"
    assert question_from_name("cups of tea per day") == "the number of cups of tea per day"
    assert question_from_name("number of cats") == "the number of cats"
    assert question_from_name("the amount of rain") == "the amount of rain"


# --------------------------------------------------------------------------- templates


def test_every_kind_and_style_has_a_template():
    assert set(TEMPLATES) == {(k, s) for k in KINDS for s in STYLES}


@pytest.mark.parametrize("concept", BUILTIN_CONCEPTS, ids=lambda c: c.id)
def test_render_every_builtin(concept):
    for kind in KINDS:
        for style in STYLES:
            text = render(concept, kind, style)
            assert "{" not in text and "}" not in text
            assert concept.question in text
            if style == "completion":
                # ends where the number begins: no trailing space, last word leads into a number
                assert text == text.rstrip() and text.endswith("a number):")
                assert "\nAnswer (" in text and concept.unit in text.splitlines()[-1]
            else:
                assert "number" in text.split("?")[-1]


def test_completion_templates_are_short_and_use_the_unit():
    for (kind, style), t in TEMPLATES.items():
        assert "{question}" in t
        if style == "completion":
            assert len(t) < 160
        if kind != "sample" or style == "completion":
            assert "{unit}" in t


def test_render_fills_each_field():
    c = Concept("x", "health", "NAME", "UNITS", "QUESTION")
    t = {("average", "chat"): "{name}|{question}|{unit}|{domain}"}
    assert render(c, "average", "chat", t) == "NAME|QUESTION|UNITS|health"
    # keys missing from the user templates fall back to the defaults
    assert render(c, "ideal", "chat", t) == TEMPLATES[("ideal", "chat")].format(
        name="NAME", question="QUESTION", unit="UNITS", domain="health")
    assert render(c, "average", "chat", {("average", "chat"): "{{literal}} {unit}"}) == "{literal} UNITS"


def test_unknown_field_is_named():
    c = BUILTIN_CONCEPTS[0]
    with pytest.raises(ValueError, match=r"\{foo\}"):
        render(c, "average", "chat", {("average", "chat"): "What about {foo}?"})
    with pytest.raises(ValueError, match=r"\{0\}"):
        render(c, "average", "chat", {("average", "chat"): "{0}"})
    with pytest.raises(ValueError, match="unmatched"):
        render(c, "average", "chat", {("average", "chat"): "What about {name"})
    with pytest.raises(ValueError, match="kind"):
        render(c, "mean", "chat")
    with pytest.raises(ValueError, match="style"):
        render(c, "average", "instruct")
    assert template_fields("{name} and {unit}") == ["name", "unit"]
    assert set(FIELDS) == {"name", "question", "unit", "domain"}


# --------------------------------------------------------------------------- CSV


def test_csv_round_trip(tmp_path):
    path = tmp_path / "concepts.csv"
    concepts_to_csv(BUILTIN_CONCEPTS, path)
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    back, problems = concepts_from_csv(path)
    assert problems == []
    assert tuple(back) == BUILTIN_CONCEPTS


def test_csv_round_trip_with_commas_quotes_and_unicode():
    cs = [Concept("a", "d", 'wait, "really" long', "min", "the naïve question, with a comma", "note\nsecond line")]
    buf = io.StringIO()
    concepts_to_csv(cs, buf)
    back, problems = concepts_from_csv(io.StringIO(buf.getvalue()))
    assert back == cs and problems == []


def test_lenient_reading_fills_defaults_and_reports_problems():
    text = (
        "Name , unit,domain\n"           # any column order, spaces and case ignored, no id/question
        "cups of tea per day,cups,health\n"
        "\n"
        ",,\n"                           # blank row: skipped silently
        ",cups,health\n"                 # line 5: no name
        "Cups of tea per day,,\n"        # line 6: duplicate id (slug of the name)
        "hours of yoga per week,,\n"
    )
    concepts, problems = concepts_from_csv(io.StringIO(text))
    assert [c.id for c in concepts] == ["cups-of-tea-per-day", "hours-of-yoga-per-week"]
    tea, yoga = concepts
    assert tea.question == "the number of cups of tea per day" and tea.unit == "cups" and tea.domain == "health"
    assert yoga.unit == "hours" and yoga.domain == "general" and yoga.notes == ""
    assert len(problems) == 2
    assert problems[0].startswith("line 5:") and "no name" in problems[0]
    assert problems[1].startswith("line 6:") and "duplicate id 'cups-of-tea-per-day'" in problems[1]
    assert "line 2" in problems[1]


def test_line_numbers_count_multi_line_cells():
    text = 'id,name,notes\na,first,"two\nlines"\nb,,x\n'
    concepts, problems = concepts_from_csv(io.StringIO(text))
    assert [c.id for c in concepts] == ["a"] and problems == ["line 4: no name; row skipped"]


def test_unknown_columns_are_reported_once():
    concepts, problems = concepts_from_csv(io.StringIO("name,colour\nbikes owned,red\n"))
    assert len(concepts) == 1 and len(problems) == 1 and "colour" in problems[0]


def test_bom_semicolons_and_bytes(tmp_path):
    data = "\ufeffid;domain;name;unit;question;notes\nx;money;coins saved;coins;the number of coins;\n"
    path = tmp_path / "c.csv"
    path.write_bytes(data.encode("utf-8"))
    concepts, problems = concepts_from_csv(path)
    assert problems == [] and concepts == [Concept("x", "money", "coins saved", "coins", "the number of coins")]
    concepts2, _ = concepts_from_csv(io.BytesIO(data.encode("utf-8")))
    assert concepts2 == concepts
    concepts3, _ = concepts_from_csv(str(path))
    assert concepts3 == concepts


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\n\n", "empty"),
    (b'{"concepts": [{"id": 1}]}', "no 'name' column"),
    (b"id,domain,unit\nx,y,z\n", "no 'name' column"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8|binary"),
    (b"name\n\xff\xfe bad", "not UTF-8"),
])
def test_unreadable_files_raise_concept_file_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ConceptFileError, match=message) as info:
        concepts_from_csv(path)
    assert isinstance(info.value, ValueError)


def test_missing_file_is_a_concept_file_error(tmp_path):
    with pytest.raises(ConceptFileError, match="cannot open"):
        concepts_from_csv(tmp_path / "nope.csv")
