"""The task side of the "P_token vs P_task" lab: the stated distribution, its prompts, its parsing.

Owns: ``TaskDistribution`` (a stated P_task over a few outcomes) with its validating constructor
``make_task``, the ``--task FILE.json`` format (``TaskDistribution.to_dict`` / ``task_from_json``),
the paper's two ``PRESETS``, the prompt templates in two styles (``render_prompt``), the list
format and its parser (``parse_draws``), and the outcome spellings / token sequences an engine
scores at every decision step (``outcome_spellings``, ``tokenizations``, ``decision_sequences``,
``ends_item``, ``in_context_tokenizer``). Its one error type is ``TaskError`` (a ValueError).
Pure stdlib, no Qt, no llama_cpp; everything here is immutable or pure, so any thread may call it.

The list format and its decision steps
--------------------------------------
The model writes its draws as one comma-separated list: ``Draws: 2, 3, 2, 1``. A *decision step*
is a position where the next outcome is about to be written:

- step 0: the end of the prompt. Completion-style prompts end with ``Draws:`` (no trailing
  space); in chat style step 0 is the start of the assistant's reply;
- step k >= 1: right after the k-th item delimiter the model wrote, i.e. right after the comma
  (``DECISION_SEPARATOR``) or a line break (``ITEM_DELIMITERS``).

The space that usually follows the comma is *not* part of the context of a step: it belongs to
the outcome's spelling (``" 3"``), because most tokenizers glue a leading space to the word or
digit after it, so the position after ``", "`` is often not a token boundary. That is why every
outcome is scored both with and without a leading space (``outcome_spellings``): if a tokenizer
makes ``", "`` one token, the step lands after the space and the spelling without it applies.
At token level, ``opens_decision(piece)`` says whether a generated token ends on a delimiter.

Outcomes that are prefixes of each other ("1" and "10") are allowed. At a step the event "the
model writes 1" must then mean "1 and then the item ends", otherwise P("1") would include
P("10"). ``decision_sequences`` marks such token sequences ``needs_end``: the engine multiplies
their probability by the probability that the next token ends the item (``ends_item``, plus the
end-of-generation tokens). Sequences that are not a prefix of another candidate are scored as
they are, like the paper's first-token probabilities.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from app.core.templates import render_template
from backends.text import loads_json

__all__ = [
    "TaskError",
    "TaskDistribution",
    "make_task",
    "task_from_json",
    "PRESETS",
    "STYLES",
    "TEMPLATES",
    "TEMPLATE_FIELDS",
    "DECISION_SEPARATOR",
    "LIST_JOINER",
    "ITEM_DELIMITERS",
    "format_distribution",
    "render_prompt",
    "parse_draws",
    "opens_decision",
    "ends_item",
    "outcome_spellings",
    "tokenizations",
    "CandidateSequence",
    "decision_sequences",
    "in_context_tokenizer",
]

#: The character that closes one draw and opens the next decision step (the position right after it).
DECISION_SEPARATOR = ","
#: How a list of draws is written: "2, 3, 2" (the space belongs to the next outcome's spelling).
LIST_JOINER = ", "
#: Characters that end an item in the model's output: the comma and line breaks.
ITEM_DELIMITERS = (",", "\n", "\r")

STYLES = ("completion", "chat")
TEMPLATE_FIELDS = ("n", "distribution", "outcomes")
MAX_DRAWS = 1000

#: Default templates. Completion style ends exactly at step 0 ("Draws:", no trailing space); chat
#: style is the one user message. Neither shows an example list, which would prime the draws.
TEMPLATES: dict[str, str] = {
    "completion": (
        "Below are {n} independent random draws from a fixed distribution over the outcomes {outcomes}.\n"
        "The distribution: {distribution}.\n"
        "Every draw follows this distribution on its own, whatever came before it. "
        "The draws are written on one line, separated by commas.\n"
        "\n"
        "Draws:"
    ),
    "chat": (
        "Act as a random number generator for this distribution: {distribution}.\n"
        "Draw {n} times, each draw independent of the others. Reply with the {n} draws only "
        "(each one of {outcomes}), on one line, separated by commas, and nothing else."
    ),
}


class TaskError(ValueError):
    """A task, template, file or draw list that cannot be used; the message says why."""


@dataclass(frozen=True)
class TaskDistribution:
    """A stated distribution P_task: ``probabilities[i]`` is the probability of ``outcomes[i]``.

    Build it with ``make_task`` (or take a preset): outcomes are non-empty, stripped, distinct
    ignoring case, free of item delimiters; probabilities are finite, >= 0 and sum to 1 within
    1e-6. ``notes`` says what ``make_task`` changed (e.g. percentages divided by their sum).
    The order of ``outcomes`` is the order of every array over outcomes in the lab.
    """

    name: str
    outcomes: tuple[str, ...]
    probabilities: tuple[float, ...]
    notes: tuple[str, ...] = ()

    def probability(self, outcome: str) -> float:
        return self.probabilities[self.outcomes.index(outcome)]

    def to_dict(self) -> dict[str, Any]:
        """The ``--task FILE.json`` form: ``{"name": ..., "outcomes": {outcome: probability}}``."""
        return {"name": self.name, "outcomes": dict(zip(self.outcomes, self.probabilities))}


def _real(value: Any, outcome: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskError(f"the probability of {outcome!r} is {value!r}, not a number")
    x = float(value)
    if math.isnan(x) or math.isinf(x):
        raise TaskError(f"the probability of {outcome!r} is {value!r}; it must be a finite number")
    if x < 0:
        raise TaskError(f"the probability of {outcome!r} is negative ({value!r})")
    return x


def make_task(name: str, mapping_or_pairs: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> TaskDistribution:
    """A validated ``TaskDistribution`` from ``{outcome: probability}`` or ``[(outcome, probability)]``.

    Outcomes may be numbers or words; each becomes ``str(outcome).strip()``. Rules (TaskError
    otherwise): a non-empty name; at least two outcomes; no empty outcome; no outcome containing a
    comma or a line break (they delimit the draws); no two outcomes equal ignoring case (the draws
    are parsed case-insensitively). Outcomes that are prefixes of one another ("1", "10") are
    allowed: ``decision_sequences`` handles them. Probabilities are finite numbers >= 0 (zero is
    allowed). Their sum must be 1 within 1e-6 (kept as given), or 100 within 1% (read as
    percentages and divided by their sum, which ``notes`` records).
    """
    name = str(name).strip()
    if not name:
        raise TaskError("the task needs a name")
    items = list(mapping_or_pairs.items()) if isinstance(mapping_or_pairs, Mapping) else list(mapping_or_pairs)
    if not items:
        raise TaskError("the task has no outcomes")
    outcomes: list[str] = []
    probs: list[float] = []
    seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise TaskError(f"each outcome needs exactly one probability: got {item!r}")
        raw, value = item
        outcome = str(raw).strip()
        if not outcome:
            raise TaskError("an outcome is empty")
        if any(d in outcome for d in ITEM_DELIMITERS):
            raise TaskError(f"outcome {outcome!r} contains a comma or a line break, which separate the draws")
        key = outcome.casefold()
        if key in seen:
            raise TaskError(f"outcome {outcome!r} appears twice (as {seen[key]!r}; case is ignored)")
        seen[key] = outcome
        outcomes.append(outcome)
        probs.append(_real(value, outcome))
    if len(outcomes) < 2:
        raise TaskError("the task needs at least two outcomes")
    total = math.fsum(probs)
    notes: tuple[str, ...] = ()
    if abs(total - 1.0) <= 1e-6:
        pass
    elif abs(total - 100.0) <= 1.0:
        notes = (f"probabilities read as percentages (they sum to {total:g}) and divided by {total:g}",)
        probs = [p / total for p in probs]
    else:
        raise TaskError(f"the probabilities sum to {total:g}; they must sum to 1 (within 1e-6) "
                        "or to 100 as percentages (within 1%)")
    return TaskDistribution(name, tuple(outcomes), tuple(probs), notes)


_JSON_KEYS = {"name", "outcomes"}


def task_from_json(text_or_path: str | Path) -> TaskDistribution:
    """Read a task from JSON text or a ``.json`` file (a str starting with ``{`` is JSON text).

    Format: ``{"name": "...", "outcomes": {"1": 0.1, "2": 0.7}}`` or
    ``{"outcomes": [["red", 0.5], ["blue", 0.5]]}``; ``name`` is optional (default: the file's
    stem, or "custom" for text). Other keys are an error (a typo should not pass unnoticed).
    Validation is ``make_task``'s; every problem is a TaskError.
    """
    default_name = "custom"
    if isinstance(text_or_path, Path) or not str(text_or_path).lstrip().startswith("{"):
        path = Path(text_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TaskError(f"cannot read the task file {str(path)!r}: {exc.strerror or exc}") from exc
        default_name = path.stem or default_name
    else:
        text = str(text_or_path)
    try:
        data = loads_json(text)
    except json.JSONDecodeError as exc:
        raise TaskError(f"the task is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except ValueError as exc:
        raise TaskError(f"the task is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TaskError('the task must be a JSON object with "outcomes"')
    unknown = sorted(set(data) - _JSON_KEYS)
    if unknown:
        raise TaskError(f"unknown key(s) in the task: {', '.join(map(repr, unknown))} "
                        '(expected "name" and "outcomes")')
    if "outcomes" not in data:
        raise TaskError('the task has no "outcomes"')
    outcomes = data["outcomes"]
    name = data.get("name", default_name)
    if not isinstance(name, str):
        raise TaskError(f'"name" must be a string, got {name!r}')
    if isinstance(outcomes, dict):
        return make_task(name, outcomes)
    if isinstance(outcomes, list):
        for entry in outcomes:
            if not isinstance(entry, list) or len(entry) != 2:
                raise TaskError(f'each entry of "outcomes" must be [outcome, probability], got {entry!r}')
        return make_task(name, [tuple(e) for e in outcomes])
    raise TaskError('"outcomes" must be an object {outcome: probability} or a list of [outcome, probability]')


#: The paper's presets (outcomes are digits, as strings); read-only.
PRESETS: Mapping[str, TaskDistribution] = MappingProxyType({
    "extreme": make_task("extreme", {"1": 0.1, "2": 0.7, "3": 0.1, "4": 0.1}),
    "flat": make_task("flat", {str(i): (0.2 if i == 4 else 0.1) for i in range(1, 10)}),
})


# --------------------------------------------------------------------------- prompts


def _fmt_p(p: float) -> str:
    return f"{round(p, 6):g}"


def format_distribution(task: TaskDistribution) -> str:
    """Human-readable P_task: ``"1 with probability 0.1, 2 with probability 0.7, ..."``.

    Probabilities are rounded to 6 decimals and written with ``:g`` (0.1, 0.333333).
    """
    return ", ".join(f"{o} with probability {_fmt_p(p)}" for o, p in zip(task.outcomes, task.probabilities))


def render_prompt(task: TaskDistribution, n_draws: int, style: str = "completion",
                  template: str | None = None) -> str:
    """The prompt asking for ``n_draws`` draws from ``task``: the text (completion) or the user message (chat).

    ``template`` (default ``TEMPLATES[style]``) may use the fields ``{n}`` (the number of draws),
    ``{distribution}`` (``format_distribution``) and ``{outcomes}`` (the outcomes joined by
    ", "), with format specs (``{n:>3}``); ``{{``/``}}`` are literal braces. Any other
    field, positional ``{}``, attribute/index access, conversion or field nested in a spec is a
    TaskError naming it (``app.core.templates``: the template is never run through str.format). A completion
    template should end exactly at step 0, with no trailing space (see the module docstring); the
    text is not altered. ``n_draws`` is a whole number from 1 to 1000.
    """
    if style not in STYLES:
        raise TaskError(f"unknown style {style!r}: 'completion' or 'chat'")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or not 1 <= n_draws <= MAX_DRAWS:
        raise TaskError(f"the number of draws ({n_draws!r}) must be a whole number from 1 to {MAX_DRAWS}")
    text = TEMPLATES[style] if template is None else str(template)
    values = {"n": n_draws, "distribution": format_distribution(task), "outcomes": LIST_JOINER.join(task.outcomes)}
    try:
        return render_template(text, {f: values[f] for f in TEMPLATE_FIELDS})
    except ValueError as exc:
        raise TaskError(str(exc)) from None


# --------------------------------------------------------------------------- parsing


def _short(s: str, limit: int = 40) -> str:
    return repr(s if len(s) <= limit else s[: limit - 1] + "\u2026")


def parse_draws(text: str, task: TaskDistribution) -> tuple[list[str], list[str]]:
    """The draws in a model's output, as the task's own outcome strings, and the problems found.

    The text is cut at commas and line breaks; each item is stripped of surrounding whitespace
    and must equal an outcome exactly, ignoring case ("Red" counts as "red"; "2.0" is not "2").
    Empty items (a trailing comma, blank lines) are skipped without a problem. An item that is not
    an outcome but whose whitespace-separated words all are ("2 3 2") is read as those draws.
    Every other item is reported in ``problems`` ("item 3: 'five' is not an outcome") and is not
    a draw; nothing is dropped silently.
    """
    lookup = {o.casefold(): o for o in task.outcomes}
    draws: list[str] = []
    problems: list[str] = []
    items = str(text).replace("\r\n", "\n").replace("\r", "\n").replace("\n", ",").split(",")
    number = 0
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        number += 1
        hit = lookup.get(item.casefold())
        if hit is not None:
            draws.append(hit)
            continue
        words = item.split()
        if len(words) > 1 and all(w.casefold() in lookup for w in words):
            draws.extend(lookup[w.casefold()] for w in words)
            continue
        problems.append(f"item {number}: {_short(item)} is not an outcome")
    return draws, problems


def opens_decision(piece: str) -> bool:
    """True if a generated token's text ends on an item delimiter (trailing spaces ignored).

    The position after such a token is a decision step (``", "`` and ``",\\n"`` count too).
    """
    s = str(piece).rstrip(" \t")
    return bool(s) and s[-1] in ITEM_DELIMITERS


def ends_item(piece: str) -> bool:
    """True if a token's text, after leading spaces/tabs, starts with an item delimiter.

    Used for ``needs_end`` sequences: P(end) = sum of next-token probabilities of the tokens for
    which this is True, plus the end-of-generation tokens (which the engine adds itself).
    Whitespace-only pieces (" ") do not end an item: they may continue a multi-word outcome.
    """
    s = str(piece).lstrip(" \t")
    return bool(s) and s[0] in ITEM_DELIMITERS


# --------------------------------------------------------------------------- spellings and tokens


def outcome_spellings(outcome: str) -> tuple[str, ...]:
    """The surface strings scored for ``outcome`` at a decision step: ``(" " + o, o)``.

    ``o`` is the outcome stripped of surrounding whitespace. The leading-space form comes first
    because it is what the list format expects after ``Draws:`` and after each comma; the bare
    form covers "2,3" and tokenizers whose comma token carries the space. Only the task's own
    casing is scored ("Red" is not a spelling of "red"): other casings fall in the mass outside.
    """
    o = str(outcome).strip()
    if not o:
        raise TaskError("an outcome is empty")
    return (" " + o, o)


def _tokens(tokenize: Callable[[str], Sequence[int]], text: str) -> tuple[int, ...]:
    toks = tuple(int(t) for t in tokenize(text))
    if not toks:
        raise TaskError(f"the tokenizer gave no tokens for {text!r}")
    return toks


def tokenizations(outcome: str, tokenize: Callable[[str], Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """Every distinct token sequence that writes ``outcome`` at a decision step.

    For each spelling of ``outcome_spellings`` (in that order): first its canonical tokenization
    ``tokenize(spelling)``; then, if the spelling has more than one character (the leading space
    counts), its *character split*: each character tokenized alone, included only
    when every character is exactly one token and the result differs from the canonical one (a
    model may write "10" as "1" then "0" even if "10" is one token). No other segmentations are
    tried. Duplicates are removed, first occurrence kept.

    ``tokenize(text)`` must return the token ids of ``text`` as it appears in the middle of the
    stream, after a comma: no BOS and no added prefix space (``in_context_tokenizer`` builds such
    a function from a plain one). The engine scores a sequence as the product of its tokens'
    conditional probabilities (see ``decision_sequences`` for prefix conflicts).
    """
    out: list[tuple[int, ...]] = []
    for spelling in outcome_spellings(outcome):
        candidates = [_tokens(tokenize, spelling)]
        if len(spelling) > 1:
            pieces = [tuple(int(t) for t in tokenize(ch)) for ch in spelling]
            if all(len(p) == 1 for p in pieces):
                candidates.append(tuple(p[0] for p in pieces))
        for seq in candidates:
            if seq not in out:
                out.append(seq)
    return tuple(out)


@dataclass(frozen=True)
class CandidateSequence:
    """One token sequence to score at every decision step.

    The engine computes P = prod_j P(tokens[j] | context, tokens[:j]); if ``needs_end`` it then
    multiplies by P(end | context, tokens) (next-token probability of the tokens where
    ``ends_item`` holds, plus end-of-generation), because ``tokens`` is a proper prefix of another
    candidate's tokens. The outcome's step probability is the sum over its candidates.
    """

    outcome: str
    tokens: tuple[int, ...]
    needs_end: bool = False


def decision_sequences(task: TaskDistribution,
                       tokenize: Callable[[str], Sequence[int]]) -> tuple[CandidateSequence, ...]:
    """All candidate sequences of all outcomes (task order, then ``tokenizations`` order).

    A sequence gets ``needs_end`` when it is a proper prefix of another candidate (of any
    outcome), e.g. " 1" against " 10" when "10" is written " 1", "0". Two outcomes sharing one
    token sequence is a TaskError (their probabilities could not be told apart).
    """
    flat: list[tuple[str, tuple[int, ...]]] = []
    owner: dict[tuple[int, ...], str] = {}
    for outcome in task.outcomes:
        for seq in tokenizations(outcome, tokenize):
            if seq in owner and owner[seq] != outcome:
                raise TaskError(f"outcomes {owner[seq]!r} and {outcome!r} have the same tokens {list(seq)}")
            owner[seq] = outcome
            flat.append((outcome, seq))
    seqs = [s for _, s in flat]
    return tuple(
        CandidateSequence(o, s, any(len(t) > len(s) and t[: len(s)] == s for t in seqs))
        for o, s in flat
    )


def in_context_tokenizer(tokenize: Callable[[str], Sequence[int]],
                         left: str = DECISION_SEPARATOR) -> Callable[[str], list[int]]:
    """Wrap a plain tokenizer so it tokenizes text as it appears right after ``left`` (a comma).

    ``f(text)`` = ``tokenize(left + text)`` without the leading ``tokenize(left)`` tokens. This
    removes a BOS or a SentencePiece prefix space, if ``tokenize`` adds them, from the outcome's
    tokens. If ``left`` and ``text`` merge into one token (so the tokens of ``left`` are not a
    prefix), the step is not a token boundary and ``f`` raises TaskError.
    """
    head = [int(t) for t in tokenize(left)]

    def f(text: str) -> list[int]:
        full = [int(t) for t in tokenize(left + text)]
        if full[: len(head)] != head:
            raise TaskError(f"{left!r} and {text!r} do not tokenize apart: the decision step is not a token boundary")
        return full[len(head):]

    return f
