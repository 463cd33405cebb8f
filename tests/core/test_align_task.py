"""The task side of the P_token vs P_task lab: validation, JSON, presets, prompts, parsing, tokens."""

import json
import math

import pytest

from app.labs.align.task import (
    DECISION_SEPARATOR,
    PRESETS,
    TEMPLATES,
    CandidateSequence,
    TaskDistribution,
    TaskError,
    decision_sequences,
    ends_item,
    format_distribution,
    in_context_tokenizer,
    make_task,
    opens_decision,
    outcome_spellings,
    parse_draws,
    render_prompt,
    task_from_json,
    tokenizations,
)

# --------------------------------------------------------------------------- make_task


def test_make_task_keeps_order_strips_and_stringifies():
    t = make_task(" dice ", {1: 0.25, " 2 ": 0.25, "three": 0.5})
    assert t == TaskDistribution("dice", ("1", "2", "three"), (0.25, 0.25, 0.5), ())
    assert t.probability("three") == 0.5
    with pytest.raises(Exception):
        t.name = "x"  # frozen


def test_make_task_accepts_pairs_and_sums_within_1e6():
    t = make_task("c", [("red", 0.5), ("blue", 0.5 - 5e-7)])
    assert t.outcomes == ("red", "blue") and t.probabilities == (0.5, 0.5 - 5e-7) and t.notes == ()
    with pytest.raises(TaskError, match="sum to 0.999998"):
        make_task("c", [("red", 0.5), ("blue", 0.5 - 2e-6)])


def test_percentages_are_normalised_and_noted():
    t = make_task("p", {"a": 10, "b": 70, "c": 20})
    assert t.probabilities == pytest.approx((0.1, 0.7, 0.2), abs=1e-15)
    assert len(t.notes) == 1 and "percentages" in t.notes[0] and "100" in t.notes[0]
    # within 1% of 100: 99.5 -> divided by 99.5
    t2 = make_task("p", {"a": 49.75, "b": 49.75})
    assert t2.probabilities == (0.5, 0.5) and "99.5" in t2.notes[0]
    with pytest.raises(TaskError, match="sum to 98"):
        make_task("p", {"a": 49, "b": 49})


@pytest.mark.parametrize("items, message", [
    ({}, "no outcomes"),
    ({"a": 1.0}, "at least two"),
    ({"a": 0.5, "  ": 0.5}, "empty"),
    ({"Red": 0.5, "red": 0.5}, "appears twice"),
    ({"a,b": 0.5, "c": 0.5}, "comma or a line break"),
    ({"a\nb": 0.5, "c": 0.5}, "comma or a line break"),
    ({"a": -0.1, "b": 1.1}, "negative"),
    ({"a": math.nan, "b": 1.0}, "finite"),
    ({"a": math.inf, "b": 1.0}, "finite"),
    ({"a": "0.5", "b": 0.5}, "not a number"),
    ({"a": True, "b": 0.0}, "not a number"),
    ({"a": 0.3, "b": 0.3}, "sum to 0.6"),
])
def test_make_task_errors(items, message):
    with pytest.raises(TaskError, match=message):
        make_task("t", items)


def test_make_task_needs_a_name_and_pairs():
    with pytest.raises(TaskError, match="name"):
        make_task("  ", {"a": 0.5, "b": 0.5})
    with pytest.raises(TaskError, match="exactly one probability"):
        make_task("t", [("a", 0.5, 1), ("b", 0.5)])
    assert isinstance(TaskError("x"), ValueError)


def test_prefix_outcomes_are_allowed():
    t = make_task("t", {"1": 0.5, "10": 0.5})
    assert t.outcomes == ("1", "10")


def test_presets_sum_to_one_and_match_the_paper():
    ext, flat = PRESETS["extreme"], PRESETS["flat"]
    assert dict(zip(ext.outcomes, ext.probabilities)) == {"1": 0.1, "2": 0.7, "3": 0.1, "4": 0.1}
    assert flat.outcomes == tuple(str(i) for i in range(1, 10))
    assert flat.probability("4") == 0.2 and [flat.probability(o) for o in flat.outcomes].count(0.1) == 8
    for t in (ext, flat):
        assert math.fsum(t.probabilities) == pytest.approx(1.0, abs=1e-12) and t.notes == ()
    with pytest.raises(TypeError):
        PRESETS["mine"] = ext  # read-only


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_object_and_pairs(tmp_path):
    ext = PRESETS["extreme"]
    assert task_from_json(json.dumps(ext.to_dict())) == ext
    t = task_from_json('{"outcomes": [["red", 0.5], ["blue", 0.5]]}')
    assert t.name == "custom" and t.outcomes == ("red", "blue")
    path = tmp_path / "colours.json"
    path.write_text('{"outcomes": {"red": 50, "blue": 50}}', encoding="utf-8")
    for arg in (path, str(path)):
        t = task_from_json(arg)
        assert t.name == "colours" and t.probabilities == (0.5, 0.5) and t.notes


@pytest.mark.parametrize("text, message", [
    ('{"outcomes": {"a": 0.5, "b": 0.5}', "not valid JSON"),
    ('{"name": "x"}', 'no "outcomes"'),
    ('{"outcome": {"a": 1}}', "unknown key"),
    ('{"outcomes": [["a", 0.5, 2]]}', r"\[outcome, probability\]"),
    ('{"outcomes": "a"}', "must be an object"),
    ('{"name": 3, "outcomes": {"a": 0.5, "b": 0.5}}', '"name" must be a string'),
    ('{"outcomes": {"a": 0.5, "b": 0.6}}', "sum to 1.1"),
])
def test_json_errors(text, message):
    with pytest.raises(TaskError, match=message):
        task_from_json(text)


def test_json_missing_file(tmp_path):
    with pytest.raises(TaskError, match="cannot read the task file"):
        task_from_json(tmp_path / "nope.json")
    with pytest.raises(TaskError, match="must be a JSON object"):
        task_from_json(_write(tmp_path / "list.json", "[1, 2]"))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- prompts


def test_distribution_rendering():
    assert format_distribution(PRESETS["extreme"]) == (
        "1 with probability 0.1, 2 with probability 0.7, 3 with probability 0.1, 4 with probability 0.1")
    third = make_task("t", {"a": 1 / 3, "b": 2 / 3})
    assert format_distribution(third) == "a with probability 0.333333, b with probability 0.666667"


def test_completion_prompt_ends_at_step_zero_and_holds_the_fields():
    text = render_prompt(PRESETS["extreme"], 25, "completion")
    assert text.endswith("Draws:")
    assert "25" in text and "2 with probability 0.7" in text and "1, 2, 3, 4" in text and "commas" in text


def test_chat_prompt_asks_for_a_comma_list_only():
    text = render_prompt(PRESETS["flat"], 12, "chat")
    assert "12 draws only" in text and "separated by commas" in text and "4 with probability 0.2" in text
    assert "Draws:" not in text and not text.endswith(" ")


def test_user_template_fields_and_errors():
    t = PRESETS["extreme"]
    assert render_prompt(t, 3, "chat", "{n:>3}|{outcomes}|{{x}}") == "  3|1, 2, 3, 4|{x}"
    with pytest.raises(TaskError, match=r"unknown field \{count\}"):
        render_prompt(t, 3, "chat", "give {count} draws")
    with pytest.raises(TaskError, match=r"unknown field \{\}"):
        render_prompt(t, 3, "chat", "give {} draws")
    with pytest.raises(TaskError, match=r"unknown field \{n.real\}"):
        render_prompt(t, 3, "chat", "{n.real}")
    with pytest.raises(TaskError, match="malformed"):
        render_prompt(t, 3, "chat", "a { b")
    with pytest.raises(TaskError, match="style"):
        render_prompt(t, 3, "poem")
    for bad in (0, 1001, 2.0, True):
        with pytest.raises(TaskError, match="number of draws"):
            render_prompt(t, bad)


def test_default_templates_use_only_known_fields():
    assert set(TEMPLATES) == {"completion", "chat"}
    for style in TEMPLATES:
        render_prompt(PRESETS["flat"], 5, style)  # raises on an unknown field


# --------------------------------------------------------------------------- parsing


def test_parse_draws_plain_list():
    assert parse_draws(" 2, 3, 2, 1", PRESETS["extreme"]) == (["2", "3", "2", "1"], [])
    assert parse_draws("2,3\n4\r\n1,", PRESETS["extreme"]) == (["2", "3", "4", "1"], [])


def test_parse_draws_tolerates_spaces_and_case_but_reports_junk():
    t = make_task("c", {"red": 0.5, "light blue": 0.5})
    draws, problems = parse_draws("Red, light blue, RED red\n\nLIGHT BLUE, purple, red.", t)
    assert draws == ["red", "light blue", "red", "red", "light blue"]
    assert problems == ["item 5: 'purple' is not an outcome", "item 6: 'red.' is not an outcome"]


def test_parse_draws_is_exact_after_strip():
    draws, problems = parse_draws("2.0, 02, 2, two, 2 x", PRESETS["extreme"])
    assert draws == ["2"]
    assert [p.split(":")[0] for p in problems] == ["item 1", "item 2", "item 4", "item 5"]


def test_parse_draws_prefix_outcomes_and_long_junk():
    t = make_task("t", {"1": 0.5, "10": 0.5})
    assert parse_draws("1, 10, 10, 1", t) == (["1", "10", "10", "1"], [])
    _, problems = parse_draws("x" * 100, t)
    assert len(problems) == 1 and len(problems[0]) < 80


def test_decision_boundaries():
    assert DECISION_SEPARATOR == ","
    assert opens_decision(",") and opens_decision(", ") and opens_decision(",\n") and opens_decision("\n")
    assert not opens_decision(" 2") and not opens_decision("") and not opens_decision(" ")
    assert ends_item(",") and ends_item(" ,") and ends_item("\n") and ends_item(",\n")
    assert not ends_item(" ") and not ends_item("0") and not ends_item(" blue") and not ends_item("")


# --------------------------------------------------------------------------- spellings and tokens

VOCAB = {" ": 0, "1": 1, "0": 2, "10": 3, " 1": 4, " 10": 5, "2": 6, " 2": 7, ",": 8, "r": 9, "e": 10,
         "d": 11, " red": 12, "red": 13, "<s>": 99}


def toy_tokenize(text: str) -> list[int]:
    """Greedy longest match over VOCAB (a stand-in for a BPE tokenizer)."""
    out, i = [], 0
    while i < len(text):
        for j in range(len(text), i, -1):
            if text[i:j] in VOCAB:
                out.append(VOCAB[text[i:j]])
                i = j
                break
        else:
            raise KeyError(text[i])
    return out


def test_outcome_spellings():
    assert outcome_spellings("2") == (" 2", "2")
    assert outcome_spellings("  light blue ") == (" light blue", "light blue")
    with pytest.raises(TaskError):
        outcome_spellings(" ")


def test_tokenizations_canonical_then_character_split():
    # " 2" and "2" are single tokens; the split of " 2" is [" ", "2"]
    assert tokenizations("2", toy_tokenize) == ((7,), (0, 6), (6,))
    # "10": canonical " 10" / "10", plus the splits " ","1","0" and "1","0"
    assert tokenizations("10", toy_tokenize) == ((5,), (0, 1, 2), (3,), (1, 2))
    # "red": "r","e","d" each one token, so the splits are added too
    assert tokenizations("red", toy_tokenize) == ((12,), (0, 9, 10, 11), (13,), (9, 10, 11))


def test_tokenizations_no_split_when_a_character_is_not_one_token():
    pieces = {" ab": [0, 1], "ab": [1], " ": [0], "a": [2], "b": [7, 8]}  # "b" is two byte tokens
    assert tokenizations("ab", pieces.__getitem__) == ((0, 1), (1,))
    with pytest.raises(TaskError, match="no tokens"):
        tokenizations("x", lambda text: [])


def test_tokenizations_dedup():
    # every spelling tokenized character by character: the splits equal the canonical ones
    assert tokenizations("12", lambda text: [ord(c) for c in text]) == ((32, 49, 50), (49, 50))


def test_decision_sequences_mark_prefixes_that_need_their_end():
    t = make_task("t", {"1": 0.5, "10": 0.5})
    seqs = decision_sequences(t, toy_tokenize)
    by_tokens = {s.tokens: s for s in seqs}
    # outcome "1": " 1" (4,), its split (0, 1), "1" (1,)
    assert [s.tokens for s in seqs if s.outcome == "1"] == [(4,), (0, 1), (1,)]
    # (0, 1) prefixes (0, 1, 2) of "10" and (1,) prefixes (1, 2): both need the end of the item
    assert by_tokens[(0, 1)] == CandidateSequence("1", (0, 1), True)
    assert by_tokens[(1,)].needs_end and not by_tokens[(4,)].needs_end
    assert not any(s.needs_end for s in seqs if s.outcome == "10")


def test_decision_sequences_without_conflicts_need_no_end():
    seqs = decision_sequences(PRESETS["extreme"], lambda text: [ord(c) for c in text])
    assert seqs and not any(s.needs_end for s in seqs)
    assert {s.outcome for s in seqs} == {"1", "2", "3", "4"}


def test_two_outcomes_with_the_same_tokens_are_an_error():
    t = make_task("t", {"a": 0.5, "b": 0.5})
    with pytest.raises(TaskError, match="same tokens"):
        decision_sequences(t, lambda text: [0] * len(text))


def test_in_context_tokenizer_drops_bos_and_prefix_space():
    # A SentencePiece-like tokenizer: adds BOS and a prefix space, so plain "2" would be "<s>", " 2".
    def spm(text):
        return [99] + toy_tokenize(" " + text)

    assert spm("2") == [99, 7]
    f = in_context_tokenizer(spm)
    assert f("2") == [6] and f(" 2") == [7]
    merged = in_context_tokenizer(lambda text: [42] if text == ",2" else [8] * len(text))
    with pytest.raises(TaskError, match="token boundary"):
        merged("2")
