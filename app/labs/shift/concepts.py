"""Concepts and prompt templates of the sampled-vs-ideal shift lab.

Owns: the ``Concept`` record (one everyday numeric quantity, e.g. "minutes waiting on the phone for
customer service"), ``BUILTIN_CONCEPTS`` (48 concepts, 6 in each of 8 domains, written for this
project), the prompt ``TEMPLATES`` for the three questions the lab asks about every concept (the
"average", the "ideal" and a "sample": the first value that comes to mind) in two styles, ``render``
which fills a template, and CSV import/export of concept sets (``concepts_to_csv`` /
``concepts_from_csv``, header ``id,domain,name,unit,question,notes``).

Template fields: ``{name}``, ``{question}``, ``{unit}``, ``{domain}``; any other ``{field}`` in a
(user-edited) template is a ValueError naming it. Write ``{{`` / ``}}`` for a literal brace.
Completion templates (for base models) end exactly where the number should begin, with no trailing
space, so the very next token is the number. Chat templates are one user message asking for a number
only.

Pure stdlib (csv, io, re), no Qt; everything here is immutable or a pure function, so any thread.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, TextIO, Union, cast

from app.core.paths import atomic_write_text
from app.core.templates import render_template
from app.core.templates import template_fields as _template_fields

__all__ = ["Concept", "BUILTIN_CONCEPTS", "DOMAINS", "KINDS", "STYLES", "TEMPLATES", "FIELDS", "CSV_COLUMNS",
           "ConceptFileError", "render", "template_fields", "slugify", "question_from_name",
           "concepts_to_csv", "concepts_from_csv"]

KINDS = ("average", "ideal", "sample")
STYLES = ("completion", "chat")
#: The fields a template may use.
FIELDS = ("name", "question", "unit", "domain")
CSV_COLUMNS = ("id", "domain", "name", "unit", "question", "notes")
#: Domain of a CSV row that has none.
DEFAULT_DOMAIN = "general"

PathOrFile = Union[str, "os.PathLike[str]", IO[str], IO[bytes]]


@dataclass(frozen=True)
class Concept:
    """One numeric everyday quantity.

    ``id`` is a slug (lowercase letters, digits and hyphens), unique within a set; ``domain`` a
    group such as "health"; ``name`` a short noun phrase ("hours of exercise per week"); ``unit``
    what the number counts ("hours"); ``question`` the quantity as a noun phrase that starts with
    "the" and fits "On average, what is <question>?" ("the number of hours a person exercises per
    week"); ``notes`` free text.
    """

    id: str
    domain: str
    name: str
    unit: str
    question: str
    notes: str = ""

    def __post_init__(self) -> None:
        for f in ("id", "name"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f).strip():
                raise ValueError(f"a concept needs a non-empty {f}")

    def to_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def slugify(text: str) -> str:
    """``text`` as an id: ASCII lowercase, runs of anything else turned into one hyphen.

    >>> slugify("Hours of exercise / week!")
    'hours-of-exercise-week'
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def question_from_name(name: str) -> str:
    """A ``question`` for a concept that has only a name: "the number of <name>".

    A name that already reads as a quantity ("the ...", "number of ...", "amount of ...") is kept.
    """
    name = " ".join(name.split())
    low = name.lower()
    if low.startswith("the "):
        return name
    if low.startswith(("number of ", "amount of ")):
        return "the " + name
    return "the number of " + name


# --------------------------------------------------------------------------- built-in concepts

_RAW: tuple[tuple[str, str, str, str, str], ...] = (
    # (domain, name, unit, question, notes)
    ("health", "hours of exercise per week", "hours",
     "the number of hours a person exercises per week",
     "poster example (Llama-2-70b): average 7.5, ideal 10.5, sample 10"),
    ("health", "sugary drinks per week", "drinks",
     "the number of sugary drinks a person has per week",
     "poster example (Llama-2-70b): average 8.6, ideal 0, sample 4.5"),
    ("health", "hours of sleep per night", "hours",
     "the number of hours a person sleeps per night", ""),
    ("health", "glasses of water per day", "glasses",
     "the number of glasses of water a person drinks per day", ""),
    ("health", "steps walked per day", "steps",
     "the number of steps a person walks per day", ""),
    ("health", "portions of fruit and vegetables per day", "portions",
     "the number of portions of fruit and vegetables a person eats per day", ""),

    ("work", "minutes commuting to work", "minutes",
     "the number of minutes a person spends travelling to work, one way", ""),
    ("work", "hours worked per week", "hours",
     "the number of hours a person works per week", ""),
    ("work", "meetings per week", "meetings",
     "the number of meetings a person attends at work per week", ""),
    ("work", "work emails received per day", "emails",
     "the number of work emails a person receives per day", ""),
    ("work", "vacation days taken per year", "days",
     "the number of vacation days a person takes per year", ""),
    ("work", "minutes of lunch break per workday", "minutes",
     "the number of minutes a person takes for lunch on a workday", ""),

    ("money", "dollars saved per month", "dollars",
     "the number of dollars a person saves per month", ""),
    ("money", "dollars spent on eating out per week", "dollars",
     "the number of dollars a person spends on restaurants and takeaway food per week", ""),
    ("money", "credit cards owned", "cards",
     "the number of credit cards a person owns", ""),
    ("money", "dollars spent on coffee per week", "dollars",
     "the number of dollars a person spends on coffee per week", ""),
    ("money", "dollars of credit card debt", "dollars",
     "the number of dollars a person owes on credit cards", ""),
    ("money", "paid subscriptions", "subscriptions",
     "the number of paid subscriptions (streaming, apps, memberships) a person has", ""),

    ("leisure", "hours of TV per day", "hours",
     "the number of hours a person watches TV per day", ""),
    ("leisure", "hours on social media per day", "hours",
     "the number of hours a person spends on social media per day", ""),
    ("leisure", "books read per year", "books",
     "the number of books a person reads per year", ""),
    ("leisure", "hours of video games per week", "hours",
     "the number of hours a person plays video games per week", ""),
    ("leisure", "holiday trips per year", "trips",
     "the number of holiday trips a person takes per year", ""),
    ("leisure", "times meeting friends per month", "times",
     "the number of times a person meets friends in person per month", ""),

    ("environment", "kilometers driven per week", "kilometers",
     "the number of kilometers a person drives by car per week", ""),
    ("environment", "flights taken per year", "flights",
     "the number of flights a person takes per year", ""),
    ("environment", "minutes in the shower", "minutes",
     "the number of minutes a person spends in the shower", ""),
    ("environment", "plastic bags used per week", "bags",
     "the number of plastic bags a person uses per week", ""),
    ("environment", "meals with meat per week", "meals",
     "the number of meals with meat a person eats per week", ""),
    ("environment", "new clothing items bought per year", "items",
     "the number of new clothing items a person buys per year", ""),

    ("education", "hours of homework per week", "hours",
     "the number of hours a student spends on homework per week", ""),
    ("education", "students in a class", "students",
     "the number of students in a school class", ""),
    ("education", "hours of studying for an exam", "hours",
     "the number of hours a student studies for an exam", ""),
    ("education", "school days missed per year", "days",
     "the number of school days a student misses per year", ""),
    ("education", "minutes a child reads per day", "minutes",
     "the number of minutes a child spends reading per day", ""),
    ("education", "years of schooling", "years",
     "the number of years a person spends in school, college and university", ""),

    ("public services", "minutes waiting on the phone for customer service", "minutes",
     "the number of minutes a person waits on the phone for customer service",
     "poster example (Llama-2-70b): average 11.3, ideal 3.1, sample 3.4"),
    ("public services", "minutes waiting in the emergency room", "minutes",
     "the number of minutes a patient waits in a hospital emergency room before seeing a doctor", ""),
    ("public services", "days waiting for a doctor's appointment", "days",
     "the number of days a person waits for an appointment with their doctor", ""),
    ("public services", "minutes waiting for a bus", "minutes",
     "the number of minutes a person waits at a stop for a bus", ""),
    ("public services", "minutes for the police to arrive", "minutes",
     "the number of minutes it takes the police to arrive after an emergency call", ""),
    ("public services", "days to get a new passport", "days",
     "the number of days it takes to receive a new passport after applying", ""),

    ("family", "children per family", "children",
     "the number of children in a family", ""),
    ("family", "hours of screen time for a child per day", "hours",
     "the number of hours a child spends looking at screens per day", ""),
    ("family", "family dinners per week", "dinners",
     "the number of dinners per week a family eats together", ""),
    ("family", "calls to parents per month", "calls",
     "the number of times an adult calls their parents per month", ""),
    ("family", "hours of housework per week", "hours",
     "the number of hours a person spends on housework per week", ""),
    ("family", "arguments between partners per month", "arguments",
     "the number of arguments a couple has per month", ""),
)

#: The built-in concept set: 48 concepts, 6 per domain, ids are ``slugify(name)``.
BUILTIN_CONCEPTS: tuple[Concept, ...] = tuple(
    Concept(slugify(name), domain, name, unit, question, notes) for domain, name, unit, question, notes in _RAW
)
#: The domains of ``BUILTIN_CONCEPTS`` in order.
DOMAINS: tuple[str, ...] = tuple(dict.fromkeys(c.domain for c in BUILTIN_CONCEPTS))


# --------------------------------------------------------------------------- templates

#: Prompt templates keyed by (kind, style). Completion templates end where the number begins.
TEMPLATES: dict[tuple[str, str], str] = {
    # one survey-form layout for all three questions (only the question differs), ending at
    # "a number):" so that a small base model's next token is most often the number itself
    ("average", "completion"): "Survey question: On average, what is {question}?\nAnswer ({unit}, a number):",
    ("ideal", "completion"): "Survey question: Ideally, what should {question} be?\nAnswer ({unit}, a number):",
    ("sample", "completion"): ("Survey question: Think of {question}. Write the first number of {unit} that comes "
                               "to mind.\nAnswer ({unit}, a number):"),
    ("average", "chat"): "On average, what is {question}? Answer with a number of {unit} only.",
    ("ideal", "chat"): "Ideally, what should {question} be? Answer with a number of {unit} only.",
    ("sample", "chat"): ("Think of {question}. What is the first number of {unit} that comes to mind? "
                         "Answer with a number only."),
}


def template_fields(template: str) -> list[str]:
    """The ``{fields}`` used in ``template``, in order; ValueError for an unknown field, a stray
    brace, attribute/index access or a field nested in a format spec (``app.core.templates``)."""
    return _template_fields(template, FIELDS)


def render(concept: Concept, kind: str, style: str,
           templates: Mapping[tuple[str, str], str] | None = None) -> str:
    """The prompt asking about ``concept``: template (kind, style) with its fields filled.

    ``templates`` may hold user-edited templates; keys it lacks fall back to ``TEMPLATES``.
    ValueError for an unknown kind or style, or a template with an unknown field (named).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    template = (templates or {}).get((kind, style), TEMPLATES[(kind, style)])
    values = {"name": concept.name, "question": concept.question, "unit": concept.unit, "domain": concept.domain}
    return render_template(template, {f: values[f] for f in FIELDS})


# --------------------------------------------------------------------------- CSV


class ConceptFileError(ValueError):
    """A concept file that cannot be read at all (not text, not CSV, no ``name`` column)."""


def concepts_to_csv(concepts: Iterable[Concept], path_or_file: PathOrFile) -> None:
    """Write ``concepts`` as UTF-8 CSV with the header ``id,domain,name,unit,question,notes``.

    ``path_or_file`` is a path or an open text file (written to, not closed).
    """
    rows = [[getattr(c, col) for col in CSV_COLUMNS] for c in concepts]
    if hasattr(path_or_file, "write"):
        writer = csv.writer(cast(TextIO, path_or_file), lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(path_or_file, buf.getvalue(), newline="")


def _read_text(path_or_file: PathOrFile) -> str:
    if hasattr(path_or_file, "read"):
        data = path_or_file.read()
    else:
        try:
            data = Path(path_or_file).read_bytes()
        except OSError as exc:
            raise ConceptFileError(f"cannot open the concept file: {exc}") from None
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConceptFileError("the concept file is not UTF-8 text; save it as 'CSV UTF-8' "
                                   "with the header id,domain,name,unit,question,notes") from None
    return data.lstrip("\ufeff")


def concepts_from_csv(path_or_file: PathOrFile) -> tuple[list[Concept], list[str]]:
    """Read a concept set; returns (concepts, problems), problems as "line N: ..." sentences.

    Lenient: the header needs only a ``name`` column (case and surrounding spaces ignored; the
    separator may be ",", ";" or a tab); a missing id becomes ``slugify(name)``, a missing question
    ``question_from_name(name)``, a missing unit the first word of the name, a missing domain
    "general"; a given id is passed through ``slugify``. Blank rows are skipped silently; a row
    without a name and a row whose id was already used are skipped and reported (the first row with
    an id wins); unknown columns are reported once and ignored.
    ConceptFileError (a ValueError) when the file is empty, not UTF-8, not CSV, or has no ``name``
    column. Accepts UTF-8 with or without a BOM, a path, or an open text or binary file.
    """
    text = _read_text(path_or_file)
    if "\x00" in text:
        raise ConceptFileError("the concept file is binary, not CSV text; expected a header line "
                               "like id,domain,name,unit,question,notes")
    if not text.strip():
        raise ConceptFileError("the concept file is empty; expected a header line like "
                               "id,domain,name,unit,question,notes and one concept per line")
    first_line = text.lstrip().splitlines()[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    try:
        rows = list(_numbered_rows(text, delimiter))
    except csv.Error as exc:
        raise ConceptFileError(f"the concept file is not valid CSV ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r[1])] if rows else rows
    if not rows:
        raise ConceptFileError("the concept file has no rows; expected a header line like "
                               "id,domain,name,unit,question,notes")
    header_line, header = rows[0]
    columns = [h.strip().lower() for h in header]
    if "name" not in columns:
        raise ConceptFileError(
            f"the concept file has no 'name' column (line {header_line} reads {','.join(header)[:80]!r}); "
            "the first line must be a header such as id,domain,name,unit,question,notes")
    problems: list[str] = []
    unknown = [c for c in columns if c and c not in CSV_COLUMNS]
    if unknown:
        problems.append(f"line {header_line}: ignored unknown column(s): {', '.join(unknown)}")
    index = {c: i for i, c in reversed(list(enumerate(columns)))}

    concepts: list[Concept] = []
    seen: dict[str, int] = {}
    for line, row in rows[1:]:
        cell = {c: (row[i].strip() if i < len(row) else "") for c, i in index.items()}
        name = " ".join(cell.get("name", "").split())
        if not name:
            problems.append(f"line {line}: no name; row skipped")
            continue
        cid = slugify(cell.get("id", "")) or slugify(name)
        if not cid:
            problems.append(f"line {line}: cannot make an id from the name {name!r}; give an id; row skipped")
            continue
        if cid in seen:
            problems.append(f"line {line}: duplicate id {cid!r} (first used on line {seen[cid]}); row skipped")
            continue
        seen[cid] = line
        concepts.append(Concept(
            id=cid,
            domain=cell.get("domain", "") or DEFAULT_DOMAIN,
            name=name,
            unit=cell.get("unit", "") or name.split()[0],
            question=cell.get("question", "") or question_from_name(name),
            notes=cell.get("notes", ""),
        ))
    return concepts, problems


def _numbered_rows(text: str, delimiter: str):
    """(line number of the row's first line, cells) for every CSV row, lines counted from 1."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    for row in reader:
        yield start, row
        start = reader.line_num + 1
