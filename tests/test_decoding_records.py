"""The decoding lab's typed records (``app.labs.decoding.records``), without a model: every type
round-trips through its dict form (also through JSON, as the store keeps it), the dicts the lab
stored before records were typed (no "schema") read into them and are written back key for key,
the params and summaries of any mode read into their types, and the reference store's decoding
run (written by the app of 2026-12-02) reads whole."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from app.core.jsonsafe import json_safe
from app.core.records import RecordError
from app.core.store import Experiment
from app.labs.decoding import BranchTree, ab_compare
from app.labs.decoding.records import (RECORDS, ABParams, ABStep, ABSummary, BeamSearchSummary, BeamSummary,
                                       BranchParams, ColumnRecord, ColumnSummary, DecodingParams, DecodingSummary,
                                       ForkRecord, LockstepSummary, NodeRecord, RunParams, StepRecord, TopEntry,
                                       TreeParams, TreeRecord, TreeSummary)
from backends.base import Step, TokenAlt

REFERENCE = Path(__file__).resolve().parent / "data" / "runs-2026-12-02.sqlite3"


def stored(d: dict) -> dict:
    """``d`` as the store gives it back: JSON with non-finite numbers as null."""
    return json.loads(json.dumps(json_safe(d), allow_nan=False))


def without_schema(d: dict) -> dict:
    d = dict(d)
    assert d.pop("schema") == 1
    return d


def assert_round_trips(record) -> None:
    """``record`` comes back equal from its dict form, and from that form as stored."""
    d = record.to_dict()
    assert d["schema"] == 1
    assert type(record).from_dict(d) == record
    assert type(record).from_dict(stored(d)) == record


def assert_reads_as_before(tp, old: dict):
    """A dict of before (no "schema") reads into ``tp`` and is written back key for key."""
    assert "schema" not in old
    typed = tp.from_dict(old)
    assert isinstance(typed, tp)
    assert stored(without_schema(typed.to_dict())) == stored(old)
    return typed


# ----------------------------------------------------------------------------- the shapes of before

SETTINGS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0,
            "frequency_penalty": 0.0, "presence_penalty": 0.0, "penalty_last_n": 64, "min_keep": 1, "seed": 42,
            "max_tokens": 6, "stop": [], "top_n": 10}
TOP = [{"id": 506, "token": " the", "p_raw": 0.19, "p_final": 1.0}, {"id": 496, "token": " a", "p_raw": 0.1,
                                                                        "p_final": 0.0}]
TRACE = {"prompt": "p", "settings": SETTINGS, "model": "m", "finished": None, "steps": []}

OLD_COLUMN = {"kind": "column", "column": 0, "strategy": "greedy", "label": "greedy", "beam": False,
              "settings": SETTINGS}
OLD_BEAM_COLUMN = {"kind": "column", "column": 1, "strategy": "beam:2", "label": "beam 2", "beam": True,
                   "settings": None}
OLD_STEP = {"kind": "step", "column": 0, "strategy": "greedy", "step": 0, "token": " the", "piece": " the",
            "token_id": 506, "p_raw": 0.19, "p_final": 1.0, "logprob": -1.66, "entropy_raw": 4.04, "rank": 1,
            "estimated": False, "top": TOP, "finish_reason": None}
OLD_REMOTE_STEP = {"kind": "step", "column": 1, "strategy": "temp:1.3", "step": 2, "token": "x", "piece": "x",
                   "token_id": None, "p_raw": 0.0, "p_final": None, "logprob": None, "entropy_raw": None,
                   "rank": 3, "estimated": True, "top": [{"id": None, "token": "x", "p_raw": 0.5, "p_final": None}],
                   "finish_reason": "length"}
OLD_FORK = {"kind": "fork", "step": 0, "tokens": [" the", " the", None], "token_ids": [506, 506, None],
            "groups": [[0, 1], [2]]}
OLD_BEAM = {"width": 2, "length_penalty": 0.0, "method": "sequences", "prompt_tokens": 6, "steps": 2,
            "evaluations": 4, "seconds": 0.3, "ms_per_step": 38.7, "batched": False, "cancelled": False,
            "beams": [{"tokens": [506, 5279], "pieces": [" the", " capital"], "text": " the capital",
                       "logprob": -2.4, "score": -2.4, "length": 2, "logprobs": [-1.6, -0.8], "finished": False,
                       "finish_reason": "length", "trace": TRACE}]}
OLD_LOCKSTEP = {"prompt": "The capital of France is", "prompt_tokens": 6, "seed": 42, "max_tokens": 2,
                "backend": "local", "cancelled": False, "steps": 2, "fork_step": None,
                "pairwise_fork": [[None, None], [None, None]], "seconds": 0.58, "column_method": "sequences",
                "token_evaluations": 7, "independent_evaluations": 7,
                "columns": [{"column": 0, "strategy": "greedy", "label": "greedy", "text": " the capital",
                             "tokens": [506, 5279], "finish_reason": "length", "estimated": False,
                             "total_logprob": -2.4, "perplexity": 3.3, "mean_entropy": 3.2, "length": 2,
                             "trace": TRACE},
                            {"column": 1, "strategy": "beam:2", "label": "beam 2", "text": " the capital",
                             "tokens": [506, 5279], "finish_reason": "length", "estimated": False,
                             "total_logprob": -2.4, "perplexity": None, "mean_entropy": None, "length": 2,
                             "trace": TRACE, "beam": OLD_BEAM}]}
OLD_RUN_PARAMS = {"prompt": "The capital of France is", "strategies": "greedy, beam:2, temp:1.3", "max_tokens": 6,
                  "seed": 42, "stop": ["\n"], "ab": {"a": "temp:0.7", "b": "temp:1.3", "model_b": None},
                  "children_n": 3, "mode": "columns"}
OLD_TREE_PARAMS = {"mode": "tree-from-workbench", "prompt": "The capital of France is"}
OLD_BRANCH_PARAMS = {"mode": "branch", "node": 2, "token_id": 496, "text": None, "children": 0,
                     "settings": SETTINGS}
OLD_AB_STEP = {"kind": "ab_step", "step": 1, "after_fork": True, "kl_ab": None, "kl_ba": 0.9, "tv": 0.6, "js": 0.2,
               "mass_outside_a": 0.0, "mass_outside_b": 0.1, "n_union": 2, "agree": False, "token_a": "x",
               "token_b": "y", "token_id_a": 1, "token_id_b": 2}
OLD_NODE = {"kind": "node", "id": 7, "parent": 3, "piece": " Paris", "p_raw": None}
OLD_TREE = {"kind": "tree", "nodes": 7}


def old_tree() -> dict:
    """A tree as ``BranchTree.to_dict`` wrote it: a recorded path and a server's forced edge
    (no token id, its probability unknown: null)."""
    tree = BranchTree("The capital of France is", [1, 2, 3], "m")
    tree.runs.append({"kind": "recorded", "from": 0, "settings": SETTINGS, "seed": 42, "leaf": 2,
                      "finish_reason": None, "new_nodes": 2})
    a = tree.add(0, 506, " the", None, p_raw=0.19, p_final=1.0, run=0, top=[dict(t) for t in TOP], entropy_raw=4.0,
                 rank=1)
    tree.add(a, 5279, " capital", None, p_raw=0.45, p_final=1.0, run=0)
    tree.add(0, None, " Paris", None, p_raw=math.nan, p_final=math.nan, run=1, forced=True, estimated=True)
    tree.nodes[2].finish_reason = "length"
    return tree.to_dict()


OLD_AB = {"which": "final", "first_fork": 0, "n_compared": 2, "len_a": 2, "len_b": 3, "agreement": 0.5,
          "mean_kl_ab": None, "mean_kl_ab_same_context": 0.1, "mean_kl_ba": 0.5, "mean_kl_ba_same_context": 0.1,
          "mean_tv": 0.35, "mean_tv_same_context": 0.1, "mean_js": 0.15, "mean_js_same_context": 0.1,
          "a": [{"index": 0}], "b": [{"index": 0}],
          "steps": [{**OLD_AB_STEP, "step": 0, "after_fork": False, "kl_ab": 0.1, "kl_ba": 0.1, "tv": 0.1,
                     "js": 0.1, "agree": False}, OLD_AB_STEP], "mode": "ab"}


# ----------------------------------------------------------------------------- records


@pytest.mark.parametrize("tp, old", [
    (ColumnRecord, OLD_COLUMN), (ColumnRecord, OLD_BEAM_COLUMN), (StepRecord, OLD_STEP),
    (StepRecord, OLD_REMOTE_STEP), (ForkRecord, OLD_FORK), (TreeRecord, OLD_TREE), (NodeRecord, OLD_NODE),
    (ABStep, OLD_AB_STEP),
], ids=["column", "beam-column", "step", "remote-step", "fork", "tree", "node", "ab-step"])
def test_every_record_reads_as_before_and_round_trips(tp, old):
    typed = assert_reads_as_before(tp, old)
    assert RECORDS.read_record(old) == typed and typed.to_dict()["kind"] == old["kind"]
    assert_round_trips(typed)


def test_the_records_fields_and_their_conventions():
    step = StepRecord.from_dict(OLD_STEP)
    assert step.top == (TopEntry(506, " the", 0.19, 1.0), TopEntry(496, " a", 0.1, 0.0))
    assert step.key == ("id", 506)
    remote = StepRecord.from_dict(OLD_REMOTE_STEP)
    assert remote.token_id is None and remote.key == ("text", "x") and remote.logprob is None
    assert math.isnan(remote.entropy_raw)  # a float field: null reads back as NaN
    assert remote.top[0].id is None and remote.top[0].p_final is None  # float | None keeps None
    fork = ForkRecord.from_dict(OLD_FORK)
    assert fork.tokens == (" the", " the", None) and fork.groups == ((0, 1), (2,))
    node = NodeRecord.from_dict(OLD_NODE)
    assert node.parent == 3 and math.isnan(node.p_raw)
    ab = ABStep.from_dict(OLD_AB_STEP)
    assert ab.kl_ab is None and ab.kl_ba == 0.9 and not ab.agree
    assert ColumnRecord.from_dict(OLD_BEAM_COLUMN).settings is None
    # the defaults: a record made in code has the keys of before too
    made = StepRecord(0, "greedy", 0, "x")
    assert set(without_schema(made.to_dict())) == set(OLD_STEP)
    assert set(without_schema(ColumnRecord(0, "greedy", "greedy").to_dict())) == set(OLD_COLUMN)


def test_bad_and_newer_records_are_refused_with_the_field_named():
    with pytest.raises(RecordError, match="step"):
        StepRecord.from_dict({**OLD_STEP, "step": "one"})
    with pytest.raises(RecordError, match="column"):
        ColumnRecord.from_dict({k: v for k, v in OLD_COLUMN.items() if k != "column"})
    with pytest.raises(RecordError, match="newer version"):
        ForkRecord.from_dict({**OLD_FORK, "schema": 2})
    with pytest.raises(RecordError, match="does not know"):
        RECORDS.read_record({"kind": "branch-cloud"})


# ----------------------------------------------------------------------------- params


def test_the_params_of_every_mode_read_into_their_type():
    run = assert_reads_as_before(RunParams, OLD_RUN_PARAMS)
    assert run.stop == ("\n",) and run.ab == ABParams("temp:0.7", "temp:1.3", None) and run.children_n == 3
    ab_params = {**OLD_RUN_PARAMS, "mode": "ab", "ab": {"a": "greedy", "b": "temp:1.5", "model_b": "/m/b.gguf"}}
    tree = assert_reads_as_before(TreeParams, OLD_TREE_PARAMS)
    branch = assert_reads_as_before(BranchParams, OLD_BRANCH_PARAMS)
    assert branch.node == 2 and branch.token_id == 496 and branch.settings == SETTINGS
    kids = assert_reads_as_before(BranchParams, {**OLD_BRANCH_PARAMS, "token_id": None, "children": 3})
    for old, tp in ((OLD_RUN_PARAMS, RunParams), (ab_params, RunParams), (OLD_TREE_PARAMS, TreeParams),
                    (OLD_BRANCH_PARAMS, BranchParams)):
        typed = DecodingParams.from_dict(old)
        assert type(typed) is tp and RECORDS.read_params(old) == typed
        assert stored(without_schema(typed.to_dict())) == old
        assert_round_trips(typed)
    assert DecodingParams.from_dict(ab_params).ab.model_b == "/m/b.gguf"
    assert tree.prompt == "The capital of France is" and kids.children == 3
    # what the panel gives: the keys of before
    assert set(without_schema(RunParams("p", "greedy", 4, 1).to_dict())) == set(OLD_RUN_PARAMS)


# ----------------------------------------------------------------------------- summaries


def test_a_side_by_side_summary_reads_as_before():
    s = assert_reads_as_before(LockstepSummary, OLD_LOCKSTEP)
    assert DecodingSummary.from_dict(OLD_LOCKSTEP) == s and RECORDS.read_summary(OLD_LOCKSTEP) == s
    greedy, beam = s.columns
    assert greedy.beam is None and greedy.trace == TRACE and greedy.tokens == (506, 5279)
    assert beam.perplexity is None and isinstance(beam.beam, BeamSearchSummary)
    assert beam.beam.beams[0].logprobs == (-1.6, -0.8) and beam.beam.beams[0].trace == TRACE
    assert s.pairwise_fork == ((None, None), (None, None)) and s.fork_step is None
    assert_round_trips(s)
    # a column written without its trace (as --json prints it without --traces) reads too
    bare = {**OLD_LOCKSTEP, "columns": [{k: v for k, v in OLD_LOCKSTEP["columns"][0].items() if k != "trace"}]}
    assert LockstepSummary.from_dict(bare).columns[0].trace is None
    assert "trace" not in LockstepSummary.from_dict(bare).to_dict()["columns"][0]


def test_a_summary_made_in_code_writes_only_the_keys_a_column_has():
    beam = BeamSearchSummary(2, 0.0, "sequences", 6, 1, 2, 0.1, 1.0, False, False,
                             (BeamSummary((1,), ("a",), "a", -1.0, -1.0, 1, (-1.0,), False, "length"),))
    s = LockstepSummary("p", 1, 42, 1, columns=(ColumnSummary(0, "greedy", "greedy", "a", (1,), "length"),
                                                  ColumnSummary(1, "beam:2", "beam 2", "a", (1,), "length",
                                                                beam=beam)))
    cols = s.to_dict()["columns"]
    assert not {"trace", "beam"} & set(cols[0]) and "trace" not in cols[1] and "trace" not in cols[1]["beam"]["beams"][0]
    assert set(cols[1]) == set(OLD_LOCKSTEP["columns"][1]) - {"trace"}
    assert math.isnan(s.seconds) and stored(s.to_dict())["seconds"] is None
    assert_round_trips(s)


def test_a_tree_summary_reads_as_before_and_is_the_tree_of_before():
    tree = old_tree()
    old = stored({"tree": tree, "open": 2})
    s = assert_reads_as_before(TreeSummary, old)
    assert DecodingSummary.from_dict(old) == s and s.open == 2
    t = s.tree
    assert len(t.nodes) == 4 and t.prompt_tokens == (1, 2, 3) and t.path(2) == [1, 2]
    assert t.node(1).top[0] == TopEntry(506, " the", 0.19, 1.0) and t.node(2).finish_reason == "length"
    forced = t.node(3)
    assert forced.forced and forced.token_id is None and math.isnan(forced.p_raw) and forced.data == " Paris".encode().hex()
    assert json_safe(s.to_dict()["tree"]) == old["tree"]  # the tree's dict form is BranchTree.to_dict's, no schema
    # the typed value and the tree convert both ways, keeping everything
    grown = BranchTree.from_data(t)
    assert grown.to_dict() == old["tree"] and grown.data() == t
    assert grown.path_text(2) == " the capital" and grown.path_probability(2) == pytest.approx(0.19 * 0.45)
    assert_round_trips(s)


def test_an_ab_summary_reads_as_before():
    s = assert_reads_as_before(ABSummary, OLD_AB)
    assert DecodingSummary.from_dict(OLD_AB) == s
    assert s.steps[1] == ABStep.from_dict(OLD_AB_STEP) and s.mean_kl_ab is None and s.a == ({"index": 0},)
    assert all("schema" not in step for step in s.to_dict()["steps"])  # the steps as stored before, with "kind"
    assert_round_trips(s)
    # ab_compare: the same shape, the runs left empty
    top = (TokenAlt(1, "x", 0.6, 0.6), TokenAlt(2, "y", 0.4, 0.4))
    step = Step(index=0, position=0, token_id=1, token="x", piece="x", p_raw=0.6, p_final=0.6, rank=1,
                entropy_raw=0.6, entropy_final=0.6, kl_final_raw=0.0, top=top)
    same = ab_compare([step], [step])
    assert set(without_schema(same.to_dict())) == set(OLD_AB) and same.steps[0].tv == 0.0 and same.first_fork is None
    assert_round_trips(same)


# ----------------------------------------------------------------------------- a stored run


def _reference_decoding_run() -> tuple[dict, list[dict], dict]:
    db = sqlite3.connect(f"file:{REFERENCE}?mode=ro", uri=True)
    try:
        (eid, params, summary), = db.execute("select id, params_json, summary_json from experiments "
                                             "where kind = 'decoding'").fetchall()
        records = [json.loads(j) for (j,) in db.execute("select json from experiment_records where "
                                                         "experiment_id = ? order by idx", (eid,))]
    finally:
        db.close()
    return json.loads(params), records, json.loads(summary)


def test_the_side_by_side_run_stored_before_typing_reads_into_the_typed_records():
    params, records, summary = _reference_decoding_run()
    assert all("schema" not in d for d in (params, summary, *records))
    exp = RECORDS.read_experiment(Experiment(4, "2026-12-02T00:00:00", "decoding", "Side by side", "Gemma 3 270m",
                                             None, None, "done", params, tuple(records), summary))
    assert exp.problems == ()
    assert isinstance(exp.params, RunParams) and exp.params.strategies == "greedy, beam:2, temp:1.3"
    kinds = [type(r) for r in exp.records]
    assert kinds[:3] == [ColumnRecord] * 3 and ForkRecord in kinds and kinds.count(StepRecord) == 18
    assert isinstance(exp.summary, LockstepSummary) and len(exp.summary.columns) == 3
    assert exp.summary.columns[1].beam is not None and len(exp.summary.columns[1].beam.beams) == 2
    assert exp.summary.columns[0].trace["steps"] and exp.summary.columns[1].beam.beams[0].trace["steps"]
    # the dict forms are the stored ones, key for key, plus "schema"
    assert stored(without_schema(exp.params.to_dict())) == params
    assert stored(without_schema(exp.summary.to_dict())) == summary
    assert [stored(without_schema(r.to_dict())) for r in exp.records] == records
    for r in (*exp.records, exp.summary, exp.params):
        assert_round_trips(r)
