"""Tests for app.labs.vs.parse: each accepted format and weight rule with hand-computed values,
then property-based fuzzing (hypothesis, > 10,000 generated answers, derandomized) checking that
the parser returns a proper distribution or raises VSParseError and nothing else."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.labs.vs.parse import Candidate, ParsedAnswer, ParseStats, VSParseError, parse_vs_answer

STD = '{"responses": [{"text": "Paris", "probability": 0.5}, {"text": "Lyon", "probability": 0.3}, ' \
      '{"text": "Nice", "probability": 0.2}]}'


def probs(answer: ParsedAnswer) -> list[float]:
    return list(answer.probabilities)


def has(notes: tuple[str, ...], fragment: str) -> bool:
    return any(fragment in n for n in notes)


# ---------------------------------------------------------------- formats

def test_plain_json():
    a = parse_vs_answer(STD, k=3)
    assert a.source_format == "json"
    assert a.texts == ("Paris", "Lyon", "Nice")
    assert a.candidates[0] == Candidate("Paris", 0.5, "0.5")
    assert probs(a) == pytest.approx([0.5, 0.3, 0.2])
    assert a.repairs == () and a.problems == ()


@pytest.mark.parametrize("list_key", ["responses", "candidates", "items", "answers", "Responses"])
@pytest.mark.parametrize("text_key,prob_key", [("text", "probability"), ("response", "prob"),
                                                 ("answer", "p"), ("content", "confidence"),
                                                 ("text", "weight")])
def test_key_variants(list_key, text_key, prob_key):
    doc = {list_key: [{text_key: "x", prob_key: 0.25}, {text_key: "y", prob_key: 0.75}]}
    a = parse_vs_answer(json.dumps(doc))
    assert a.texts == ("x", "y")
    assert probs(a) == pytest.approx([0.25, 0.75])
    assert a.repairs == ()


def test_bare_list():
    a = parse_vs_answer('[{"text": "a", "probability": 0.6}, {"text": "b", "probability": 0.4}]')
    assert a.source_format == "json" and probs(a) == pytest.approx([0.6, 0.4])


def test_json_in_fence_with_prose():
    a = parse_vs_answer("Sure! Here you go:\n```json\n" + STD + "\n```\nHope this helps.")
    assert a.source_format == "json-in-fence"
    assert probs(a) == pytest.approx([0.5, 0.3, 0.2])


def test_json_in_prose():
    a = parse_vs_answer("Here are [3] ideas: " + STD + " -- enjoy {really}.")
    assert a.source_format == "json-in-prose"
    assert a.texts == ("Paris", "Lyon", "Nice")


def test_trailing_commas():
    a = parse_vs_answer('{"responses": [{"text": "a", "probability": 0.6,}, {"text": "b", "probability": 0.4},],}')
    assert probs(a) == pytest.approx([0.6, 0.4])
    assert "trailing comma removed" in a.repairs


def test_single_quotes():
    a = parse_vs_answer("{'responses': [{'text': 'it\\'s \"ok\"', 'probability': 0.9}, {'text': 'b', 'probability': 0.1}]}")
    assert a.texts == ("it's \"ok\"", "b")
    assert probs(a) == pytest.approx([0.9, 0.1])
    assert has(a.repairs, "single quotes")


def test_xml_variant():
    text = ("<response><text>Paris &amp; Co</text><probability>0.7</probability></response>\n"
            "<response>\n  <text>Lyon</text>\n  <probability>0.3</probability>\n</response>")
    a = parse_vs_answer(text, k=2)
    assert a.source_format == "xml"
    assert a.texts == ("Paris & Co", "Lyon")
    assert a.candidates[1] == Candidate("Lyon", 0.3, "0.3")
    assert probs(a) == pytest.approx([0.7, 0.3])
    assert a.repairs == () and a.problems == ()


def test_xml_unclosed_last_response_noted():
    text = ("<response><text>a</text><probability>0.5</probability></response>"
            "<response><text>b</text><probability>0.5</probability></response><response><text>c")
    a = parse_vs_answer(text)
    assert a.texts == ("a", "b") and probs(a) == pytest.approx([0.5, 0.5])
    assert has(a.problems, "1 unclosed <response>")


def test_truncated_json_keeps_complete_candidates():
    text = '{"responses": [{"text": "a", "probability": 0.5}, {"text": "b", "probability": 0.3}, {"text": "c", "prob'
    a = parse_vs_answer(text, k=3)
    assert a.source_format == "json-truncated"
    assert a.texts == ("a", "b")
    assert probs(a) == pytest.approx([0.5 / 0.8, 0.3 / 0.8])
    assert has(a.repairs, "cut off: kept the 2 complete candidates")
    assert has(a.repairs, "weights normalised from sum 0.8")
    assert "expected 3 candidates, got 2" in a.problems


def test_list_of_strings_is_uniform():
    a = parse_vs_answer('["a", "b", "c", "d"]')
    assert probs(a) == pytest.approx([0.25] * 4)
    assert a.candidates[0] == Candidate("a", None, None)
    assert "no candidate had a probability: uniform" in a.problems


def test_pairs_and_mapping():
    a = parse_vs_answer('[["a", 0.2], ["b", 0.8]]')
    assert probs(a) == pytest.approx([0.2, 0.8])
    b = parse_vs_answer('{"Paris": 0.6, "Lyon": "40%"}')
    assert b.texts == ("Paris", "Lyon") and probs(b) == pytest.approx([0.6, 0.4])


def test_python_literals_and_numeric_text():
    a = parse_vs_answer("{'responses': [{'text': 4, 'probability': 0.5, 'ok': True}, {'text': 6, 'probability': 0.5, 'x': None}]}")
    assert a.texts == ("4", "6")
    assert has(a.repairs, "texts given as numbers")


def test_vs_cot_reasoning_field_and_nested_and_string_wrapped():
    cot = '{"reasoning": "think {first} [then]", "responses": [{"text": "a", "probability": 0.1}, ' \
          '{"text": "b", "probability": 0.9}]}'
    assert probs(parse_vs_answer(cot)) == pytest.approx([0.1, 0.9])
    nested = parse_vs_answer('{"result": {"data": {"responses": [{"text": "a", "probability": 1}]}}}')
    assert nested.texts == ("a",)
    wrapped = parse_vs_answer(json.dumps(STD))          # the JSON sent as a JSON string
    assert wrapped.texts == ("Paris", "Lyon", "Nice")
    assert "the JSON was wrapped in a string" in wrapped.repairs


def test_first_bracket_in_prose_is_not_the_answer():
    a = parse_vs_answer("[Note] the format is {text, probability}:\n" + STD)
    assert a.source_format == "json-in-prose" and a.texts == ("Paris", "Lyon", "Nice")


def test_text_after_json_and_unclosed_fence():
    a = parse_vs_answer(STD + " I hope {this} helps")
    assert a.texts == ("Paris", "Lyon", "Nice") and "text after the JSON ignored" in a.repairs
    b = parse_vs_answer("```json\n" + STD)
    assert b.source_format == "json-in-fence"


@pytest.mark.parametrize("text", ["{" * 60_000, "[" * 30_000 + "]" * 30_000, "{ [ " * 15_000,
                                  "word { " * 9_000, "'" * 60_000 + "{"])
def test_pathological_inputs_fail_cleanly(text):
    with pytest.raises(VSParseError) as info:
        parse_vs_answer(text)
    assert not info.value.internal


def test_too_long():
    with pytest.raises(VSParseError, match="too long"):
        parse_vs_answer("x" * 200_001)


# ---------------------------------------------------------------- weights

def test_percent_strings():
    a = parse_vs_answer('[{"text": "a", "probability": "70%"}, {"text": "b", "probability": "20 %"}, '
                        '{"text": "c", "probability": "10%"}]')
    assert probs(a) == pytest.approx([0.7, 0.2, 0.1])
    assert [c.weight for c in a.candidates] == pytest.approx([0.7, 0.2, 0.1])
    assert a.candidates[1].raw_weight == "20 %"
    assert has(a.repairs, "percent")


def test_bare_numbers_summing_to_100_are_percentages_not_clipped():
    a = parse_vs_answer('[{"text": "a", "probability": 70}, {"text": "b", "probability": 20}, '
                        '{"text": "c", "probability": 10}]')
    assert probs(a) == pytest.approx([0.7, 0.2, 0.1])
    assert "read 70/20/10 as percentages" in a.repairs
    assert not has(a.repairs, "normalised")


def test_bare_numbers_near_100_are_percentages_then_normalised():
    a = parse_vs_answer('[{"text": "a", "probability": 50}, {"text": "b", "probability": 45}]')  # sum 95
    assert [c.weight for c in a.candidates] == pytest.approx([0.5, 0.45])
    assert probs(a) == pytest.approx([50 / 95, 45 / 95])
    assert "read 50/45 as percentages" in a.repairs
    assert "weights normalised from sum 0.95" in a.repairs


def test_relative_weights_are_normalised():
    a = parse_vs_answer('[{"text": "a", "weight": 2.5}, {"text": "b", "weight": 1.47}]')  # sum 3.97
    assert probs(a) == pytest.approx([2.5 / 3.97, 1.47 / 3.97])
    assert [c.weight for c in a.candidates] == [2.5, 1.47]
    assert "weights normalised from sum 3.97" in a.repairs
    assert not has(a.repairs, "percentages")


def test_numeric_strings():
    a = parse_vs_answer('[{"text": "a", "probability": "0.25"}, {"text": "b", "probability": " .75 "}]')
    assert probs(a) == pytest.approx([0.25, 0.75])
    assert "weights given as strings read as numbers" in a.repairs


def test_negative_weight_set_to_zero():
    a = parse_vs_answer('[{"text": "x", "probability": -0.2}, {"text": "y", "probability": 0.6}, '
                        '{"text": "z", "probability": 0.2}]')
    assert probs(a) == pytest.approx([0.0, 0.75, 0.25])
    assert a.candidates[0].weight == -0.2
    assert "negative weight -0.2 for 'x' set to 0" in a.problems


def test_nan_and_inf_treated_as_missing():
    a = parse_vs_answer('[{"text": "a", "probability": NaN}, {"text": "b", "probability": Infinity}, '
                        '{"text": "c", "probability": 0.6}]')
    # a and b are missing: they share the remaining 0.4 equally
    assert probs(a) == pytest.approx([0.2, 0.2, 0.6])
    assert a.candidates[0].weight is None and a.candidates[0].raw_weight == "NaN"
    assert has(a.problems, "weight NaN for 'a' is not finite")
    assert has(a.problems, "weight Infinity for 'b' is not finite")
    assert "2 candidates had no probability: given the remaining mass 0.4 equally" in a.repairs


def test_missing_weights_get_remaining_mass():
    a = parse_vs_answer('[{"text": "a", "probability": 0.5}, {"text": "b"}, {"text": "c", "probability": null}]')
    assert probs(a) == pytest.approx([0.5, 0.25, 0.25])
    assert "2 candidates had no probability: given the remaining mass 0.5 equally" in a.repairs


def test_missing_weights_with_no_mass_left():
    a = parse_vs_answer('[{"text": "a", "probability": 0.7}, {"text": "b", "probability": 0.5}, {"text": "c"}]')
    assert probs(a) == pytest.approx([0.7 / 1.2, 0.5 / 1.2, 0.0])
    assert has(a.problems, "1 candidate had no probability and the others already sum to 1.2: set to 0")


def test_unreadable_weight():
    a = parse_vs_answer('[{"text": "a", "probability": "high"}, {"text": "b", "probability": 0.4}, '
                        '{"text": "c", "probability": true}]')
    assert probs(a) == pytest.approx([0.3, 0.4, 0.3])
    assert has(a.problems, "weight 'high' for 'a' is not a number")
    assert has(a.problems, "weight 'true' for 'c' is not a number")


def test_all_zero_weights_uniform():
    a = parse_vs_answer('[{"text": "a", "probability": 0}, {"text": "b", "probability": 0.0}, '
                        '{"text": "c", "probability": "0%"}]')
    assert probs(a) == pytest.approx([1 / 3] * 3)
    assert "all weights zero: uniform" in a.problems


def test_huge_weights_do_not_overflow():
    a = parse_vs_answer('[{"text": "a", "probability": 1e308}, {"text": "b", "probability": 1e308}]')
    assert probs(a) == pytest.approx([0.5, 0.5])
    b = parse_vs_answer('[{"text": "a", "probability": ' + "9" * 400 + '}, {"text": "b", "probability": 1}]')
    assert probs(b) == pytest.approx([0.0, 1.0]) and has(b.problems, "not finite")


# ---------------------------------------------------------------- texts, k

def test_empty_texts_dropped():
    a = parse_vs_answer('[{"text": "  ", "probability": 0.5}, {"text": " a ", "probability": 0.3}, '
                        '{"text": "b", "probability": 0.2}]')
    assert a.texts == ("a", "b")
    assert probs(a) == pytest.approx([0.6, 0.4])
    assert "candidate 1 has an empty text: dropped" in a.problems


def test_duplicates_kept_and_noted():
    a = parse_vs_answer('[{"text": "a", "probability": 0.5}, {"text": "a", "probability": 0.3}, '
                        '{"text": "b", "probability": 0.2}]')
    assert a.texts == ("a", "a", "b") and probs(a) == pytest.approx([0.5, 0.3, 0.2])
    assert "duplicate candidate 'a' (2 times): kept" in a.problems


def test_k_mismatch_is_a_problem_not_an_error():
    a = parse_vs_answer(STD, k=5)
    assert len(a.candidates) == 3
    assert "expected 5 candidates, got 3" in a.problems
    assert parse_vs_answer(STD, k=3).problems == ()


def test_non_candidate_items_skipped():
    a = parse_vs_answer('[{"text": "a", "probability": 1}, 3, {"foo": 1}]')
    assert a.texts == ("a",)
    assert has(a.problems, "item 2 is not a candidate")
    assert has(a.problems, "item 3 has no text field")


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("text,message", [
    ("", "the answer is empty"),
    ("   \n", "the answer is empty"),
    ("I cannot help with that.", "no JSON object or <response> tags found"),
    ('{"foo": 1, "bar": {"baz": 2}}', "the JSON has no list of candidates"),
    ('{"responses": []}', "the JSON has no list of candidates"),
    ('[{"text": "", "probability": 1}, {"text": " ", "probability": 0}]', "no candidate has a non-empty text"),
    ('{"responses": [{"text": "a", "probab', "the JSON is incomplete"),
    ('{"responses": [{"text": "a" "probability": 1}]}', "found JSON that could not be read"),
    ("<response><text></text><probability>1</probability></response>", "no candidate has a non-empty text"),
])
def test_errors(text, message):
    with pytest.raises(VSParseError) as info:
        parse_vs_answer(text)
    assert message in str(info.value)
    assert not info.value.internal
    assert isinstance(info.value, ValueError)


def test_non_text_and_bad_k():
    with pytest.raises(VSParseError, match="not text"):
        parse_vs_answer(None)  # type: ignore[arg-type]
    with pytest.raises(VSParseError, match="k must be"):
        parse_vs_answer(STD, k=0)


# ---------------------------------------------------------------- stats

def test_parse_stats():
    stats = ParseStats()
    answers = [STD, "nope", '[{"text": "a", "probability": 70}, {"text": "b", "probability": 30}]', "", STD]
    results = [stats.parse(a, k=3) for a in answers]
    assert [r is None for r in results] == [False, True, False, True, False]
    assert (stats.total, stats.parsed, stats.failed, stats.with_repairs) == (5, 3, 2, 1)
    assert stats.with_problems == 1       # k=3 but 2 candidates
    assert stats.failure_rate == pytest.approx(0.4)
    assert stats.summary() == "parse failures: 2/5 (1 repaired)"
    assert stats.failure_messages["the answer is empty"] == 1
    empty = ParseStats()
    assert empty.failure_rate == 0.0 and empty.summary() == "parse failures: 0/0"


# ---------------------------------------------------------------- property-based fuzzing

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
EXAMPLES = {"text": 2500, "truncated": 2000, "weights": 2500, "xml": 1500, "mutated": 2500}


def check(text: str, k: int | None = None) -> ParsedAnswer | None:
    try:
        a = parse_vs_answer(text, k=k)
    except VSParseError as error:
        assert not error.internal, str(error)
        assert str(error)
        event("VSParseError")
        return None
    event(f"parsed as {a.source_format}")
    assert isinstance(a, ParsedAnswer)
    assert len(a.candidates) >= 1
    assert len(a.probabilities) == len(a.candidates)
    assert all(isinstance(p, float) and math.isfinite(p) and p >= 0.0 for p in a.probabilities)
    assert abs(math.fsum(a.probabilities) - 1.0) <= 1e-9
    assert all(c.text and c.text == c.text.strip() for c in a.candidates)
    assert all(isinstance(n, str) and n for n in a.repairs + a.problems)
    return a


ALPHABET = st.sampled_from(list('{}[]"\',:%<>/ \n\t0123456789.-eE') + ["text", "probability", "responses",
                           "NaN", "Infinity", "true", "null", "<response>", "</response>", "<text>",
                           "</text>", "<probability>", "</probability>", "```", "```json\n", "é", "\\"])
glued = st.lists(ALPHABET, max_size=40).map("".join)


@settings(FUZZ, max_examples=EXAMPLES["text"])
@given(st.one_of(st.text(max_size=80), glued), st.one_of(st.none(), st.integers(1, 6)))
def test_fuzz_random_text(text, k):
    check(text, k)


# Full-unicode st.text is slow to generate; most fields draw from a small alphabet of the
# characters that matter to the parser, with some full-unicode text mixed in.
SMALL = st.sampled_from(list('ab xé日"\'\\<>/{}[],:%.-+0123456789eE\n'))


def short_text(max_size: int):
    return st.one_of(st.text(SMALL, max_size=max_size), st.text(SMALL, max_size=max_size),
                     st.text(max_size=max_size))


weight = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1),
    st.integers(-10, 200),
    st.integers(-(10 ** 30), 10 ** 400),
    st.sampled_from(["70%", "0.3", " 12 % ", "high", "", "nan", "-inf", "1e999", "%", "50%%", "0x10", "1_0"]),
    short_text(6),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
candidate_text = st.one_of(short_text(12), st.sampled_from(["", " ", "a", "a", "b"]), st.integers(),
                           st.none())
text_keys = st.sampled_from(["text", "response", "answer", "content", "Text", "foo"])
prob_keys = st.sampled_from(["probability", "prob", "p", "confidence", "weight", "PROB", "bar"])
item = st.one_of(
    st.builds(lambda tk, t, pk, w: {tk: t, pk: w}, text_keys, candidate_text, prob_keys, weight),
    st.builds(lambda t: {"text": t}, candidate_text),
    st.tuples(short_text(8), weight).map(list),
    short_text(8),
    st.integers(),
    st.none(),
)
list_keys = st.sampled_from(["responses", "candidates", "items", "answers", "other"])
document = st.one_of(
    st.builds(lambda key, items: {key: items}, list_keys, st.lists(item, max_size=7)),
    st.lists(item, max_size=7),
    st.builds(lambda items: {"result": {"responses": items}}, st.lists(item, max_size=5)),
)


def dumps(doc) -> str:
    return json.dumps(doc)  # NaN and Infinity come out as JSON's common extension


@settings(FUZZ, max_examples=EXAMPLES["weights"])
@given(document, st.sampled_from(["{}", "```json\n{}\n```", "Here: {} done", "{},", "  {}  "]),
       st.one_of(st.none(), st.integers(1, 8)))
def test_fuzz_json_with_random_weights(doc, wrapper, k):
    check(wrapper.replace("{}", dumps(doc), 1), k)


@settings(FUZZ, max_examples=EXAMPLES["truncated"])
@given(document, st.data())
def test_fuzz_truncated_json(doc, data):
    text = dumps(doc)
    cut = data.draw(st.integers(0, len(text)))
    a = check(text[:cut])
    if a is not None and cut < len(text):
        assert a.candidates


@settings(FUZZ, max_examples=EXAMPLES["xml"])
@given(st.lists(st.tuples(short_text(10), st.one_of(weight.map(str), short_text(5)),
                          st.sampled_from(["text", "answer", "txt"]),
                          st.sampled_from(["probability", "prob", "confidence", "pp"]),
                          st.booleans()), max_size=6),
       short_text(10), st.data())
def test_fuzz_xml_fragments(parts, prose, data):
    chunks = []
    for text, w, tt, pt, close in parts:
        block = f"<response><{tt}>{text}</{tt}><{pt}>{w}</{pt}>" + ("</response>" if close else "")
        chunks.append(block)
    s = prose + "\n".join(chunks)
    cut = data.draw(st.integers(0, len(s)))
    check(s[:cut] if data.draw(st.booleans()) else s)


VALID = [
    STD,
    "```json\n" + STD + "\n```",
    "Answer:\n" + STD + "\nThanks",
    "{'responses': [{'text': 'a', 'probability': '60%'}, {'text': 'b', 'probability': '40%'},]}",
    "<response><text>a</text><probability>0.4</probability></response>"
    "<response><text>b</text><probability>0.6</probability></response>",
    '[{"text": "a", "probability": 70}, {"text": "b", "probability": 30}]',
]


@st.composite
def mutated(draw):
    s = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "swap"]))
        i = draw(st.integers(0, len(s)))
        j = draw(st.integers(i, min(len(s), i + 12)))
        if op == "delete":
            s = s[:i] + s[j:]
        elif op == "insert":
            s = s[:i] + draw(st.one_of(ALPHABET, st.text(max_size=3))) + s[i:]
        elif op == "replace":
            s = s[:i] + draw(ALPHABET) + s[j:]
        elif op == "duplicate":
            s = s[:j] + s[i:j] + s[j:]
        else:
            s = s[i:j] + s[:i] + s[j:]
    return s


@settings(FUZZ, max_examples=EXAMPLES["mutated"])
@given(mutated(), st.one_of(st.none(), st.integers(1, 4)))
def test_fuzz_mutated_valid_answers(text, k):
    check(text, k)


def test_fuzz_budget():
    assert sum(EXAMPLES.values()) >= 10_000
