"""The ready-made experiments' files (app.core.experiments_catalog): every shipped file loads and
checks, a bad file is reported in one line and skipped while the others load, the user's folder."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

from app.core.experiments_catalog import (MAX_FILE_BYTES, ExperimentError, builtin_dir, load_catalog, load_experiment,
                                          parse_experiment, user_dir)
from app.core.sampling import stage_names
from backends.base import SamplerSettings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "assets" / "experiments").glob("*.json"))


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLESCOPE_CONFIG_DIR", str(tmp_path / "config"))


def _good(**over):
    d = {"title": "A title", "explanation": "One sentence. Two sentences.", "prompt": "Once upon a time"}
    d.update(over)
    return d


def test_the_shipped_folder_is_the_package_data_folder():
    assert Path(str(builtin_dir())) == ROOT / "assets" / "experiments"
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["assets"]
    for path in SHIPPED:  # each shipped file goes into the wheel
        rel = path.relative_to(ROOT / "assets").as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_experiment_loads_and_checks(path):
    exp = load_experiment(path, source="built-in")
    assert exp.key == path.stem and exp.source == "built-in"
    assert exp.title and exp.prompt.strip()
    # two sentences (or so): a short explanation, not an essay
    sentences = [s for s in exp.explanation.replace("!", ".").replace("?", ".").split(". ") if s.strip()]
    assert 2 <= len(sentences) <= 3, exp.explanation
    exp.settings.validate()
    assert exp.stage == "final" or exp.stage in stage_names(exp.settings)
    for v in exp.variants:
        v.settings.validate()
        assert v.label
        assert v.stage == "final" or v.stage in stage_names(v.settings)
    # a file is the whole truth: what it does not say takes SamplerSettings' defaults
    data = json.loads(path.read_text(encoding="utf-8"))
    for name, value in data.get("sampler", {}).items():
        assert getattr(exp.settings, name) == value
    assert exp.settings.replace(**data.get("sampler", {})) == exp.settings


def test_the_shipped_catalog_has_the_named_demonstrations_in_order():
    catalog = load_catalog(include_user=False)
    assert catalog.problems == ()
    titles = [e.title for e in catalog.experiments]
    for wanted in ("Temperature flattens the distribution", "Top-p adapts to certainty",
                   "Repetition penalty breaks a loop", "Greedy versus sampling",
                   "Why the same prompt gives different answers"):
        assert wanted in titles
    assert [e.order for e in catalog.experiments] == sorted(e.order for e in catalog.experiments)
    assert any(e.step_mode for e in catalog.experiments)
    assert any(e.fresh_seed for e in catalog.experiments)
    rep = catalog.get("repetition_penalty")
    assert rep.settings.greedy and rep.settings.repeat_penalty == 1.0
    with_penalty = rep.variants[0]
    assert with_penalty.settings.repeat_penalty == 1.3 and with_penalty.settings.greedy  # merged over the base
    assert with_penalty.stage == "penalties" and with_penalty.select_step == 1
    assert rep.variants[1].stage == "final"  # the base's stage, since "penalties" does not run at 1.0


def test_defaults_and_variant_merging():
    exp = parse_experiment(_good(sampler={"temperature": 1.5, "top_k": 0}, stage="temperature",
                                 variants=[{"label": "Cooler", "sampler": {"temperature": 0.5}},
                                           {"label": "Other prompt", "prompt": "The sky is", "run": False,
                                            "sampler": {"temperature": 1.0}}]), "x")
    assert exp.run and not exp.step_mode and not exp.fresh_seed and exp.select_step is None and exp.order == 1000
    assert exp.settings == SamplerSettings(temperature=1.5, top_k=0)
    cooler, other = exp.variants
    assert cooler.settings == SamplerSettings(temperature=0.5, top_k=0) and cooler.prompt == "Once upon a time"
    assert cooler.stage == "temperature" and cooler.run
    assert other.prompt == "The sky is" and not other.run
    assert other.stage == "final"  # temperature 1 runs no temperature stage: the view falls back
    assert parse_experiment(_good(sampler={"samplers": "top_k;temperature"}), "y").settings.samplers == (
        "top_k", "temperature")
    biased = parse_experiment(_good(sampler={"logit_bias": [[" Paris", "-inf"], [5, 2.5]]}, stage="logit_bias"), "z")
    assert biased.settings.logit_bias[0] == (" Paris", float("-inf"))


@pytest.mark.parametrize("data, words", [
    ([1, 2], "one JSON object"),
    (_good(temprature=1.0), "unknown field 'temprature'"),
    (_good(title=""), "title is empty"),
    ({"explanation": "x. y.", "prompt": "p"}, "title is missing"),
    (_good(prompt=7), "prompt must be a text"),
    (_good(schema=2), "schema 2"),
    (_good(sampler={"temperature": 9}), "sampler: temperature = 9.0 is outside the allowed range"),
    (_good(sampler={"top_k": 1.5}), "sampler.top_k must be a whole number"),
    (_good(sampler={"top_k": True}), "sampler.top_k must be a whole number"),
    (_good(sampler={"temp": 1.0}), "sampler has no setting 'temp'"),
    (_good(sampler={"samplers": "top_k;nonsense"}), "sampler:"),
    (_good(sampler={"logit_bias": [[1, 2, 3]]}), "sampler.logit_bias must be a list of"),
    (_good(sampler=[1]), "sampler must be an object"),
    (_good(stage="top_p", sampler={"top_p": 1.0}), "stage 'top_p' does not run with these settings"),
    (_good(step_mode="yes"), "step_mode must be true or false"),
    (_good(select_step=-1), "select_step = -1 is outside"),
    (_good(variants={"label": "x"}), "variants must be a list"),
    (_good(variants=[{"sampler": {}}]), "variants[1].label is missing"),
    (_good(variants=[{"label": "x", "colour": 1}]), "unknown field 'variants[1].colour'"),
    (_good(variants=[{"label": "x", "sampler": {"top_p": 2}}]), "variants[1].sampler: top_p = 2.0"),
    (_good(variants=[{"label": str(i)} for i in range(7)]), "at most 6 variants"),
])
def test_a_bad_experiment_is_refused_in_one_line_naming_the_field(data, words):
    with pytest.raises(ExperimentError) as info:
        parse_experiment(data, "bad")
    message = str(info.value)
    assert words in message and "\n" not in message


def test_bad_files_are_reported_and_skipped_and_the_others_load(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "good.json").write_text(json.dumps(_good(title="Mine", order=1)), encoding="utf-8")
    (user / "broken.json").write_text('{"title": "x",\n "prompt": }', encoding="utf-8")
    (user / "latin1.json").write_bytes(b'{"title": "caf\xe9"}')
    (user / "huge.json").write_text(" " * (MAX_FILE_BYTES + 1), encoding="utf-8")
    (user / "typo.json").write_text(json.dumps(_good(sampler={"temperature": "hot"})), encoding="utf-8")
    (user / "notes.txt").write_text("not an experiment", encoding="utf-8")
    (user / ".hidden.json").write_text("{", encoding="utf-8")
    (user / "folder.json").mkdir()
    catalog = load_catalog(user=user)
    assert [e.title for e in catalog.of("user")] == ["Mine"]
    assert len(catalog.of("built-in")) == len(SHIPPED)  # the shipped ones are all still there
    problems = {p.name: p.message for p in catalog.problems}
    assert set(problems) == {"broken.json", "latin1.json", "huge.json", "typo.json"}
    assert all(p.source == "user" for p in catalog.problems)
    assert problems["broken.json"].startswith("is not valid JSON (Expecting value: line 2 column")
    assert problems["latin1.json"].startswith("is not UTF-8 text")
    assert "more than an experiment can be" in problems["huge.json"]
    assert problems["typo.json"] == "sampler.temperature must be a number, not a text"
    assert str(catalog.problems[0]).startswith(catalog.problems[0].name + ": ")
    assert all("\n" not in m for m in problems.values())


def test_the_user_folder_is_in_the_config_dir_and_may_be_missing(tmp_path):
    assert user_dir() == tmp_path / "config" / "experiments"
    assert not user_dir().exists()
    catalog = load_catalog()
    assert catalog.of("user") == [] and catalog.problems == ()
    user_dir().mkdir(parents=True)
    (user_dir() / "temperature.json").write_text(json.dumps(_good(title="My temperature")), encoding="utf-8")
    catalog = load_catalog()
    # a user's file of the same name as a shipped one is listed beside it, in its own group
    assert catalog.get("temperature").source == "built-in"
    assert catalog.get("temperature", "user").title == "My temperature"
    assert catalog.experiments[-1].source == "user"
