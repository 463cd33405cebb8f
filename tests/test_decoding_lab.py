"""Decoding strategies and branching lab (issue 7): strategy specs, beam search against a brute-force
search and an independent recomputation, lockstep columns against plain sessions, branching against
a fresh evaluation, A/B distances by hand, a remote column on a real server, and ``samplescope
compare``. Small on purpose (2 shared cores): one thread, n_ctx 512, a few tokens."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from app.cli import main
from app.core.jsonsafe import json_safe
from app.core.streams import drain
from app.labs.decoding import (NEUTRAL, BranchTree, RemoteUnsupported, ab_compare, ab_run, beam_search, branch,
                               brute_force_best, children, first_fork, goto_prefix, iter_ab, iter_grow, iter_tree,
                               lockstep, parse_strategies, parse_strategy, remote_column, run_lockstep, step_distance)
from app.labs.decoding.records import (ABSummary, ColumnRecord, ForkRecord, NodeRecord, StepRecord, TreeRecord,
                                       TreeSummary)
from app.core.session import GenerationSession
from backends.base import Finished, Step, TokenAlt

PROMPT = "The capital of France is"


def _json(d: dict) -> str:
    return json.dumps(d, allow_nan=True)


def assert_round_trips(record) -> None:
    """``record`` comes back equal from its dict form, also after JSON as the store keeps it
    (non-finite numbers as null)."""
    d = record.to_dict()
    assert d["schema"] == 1
    assert type(record).from_dict(d) == record
    assert _json(type(record).from_dict(json.loads(json.dumps(json_safe(d)))).to_dict()) == _json(d)


@pytest.fixture(scope="module")
def backend(embedded_model):
    from backends.llama_local import LlamaCppBackend

    b = LlamaCppBackend(embedded_model, n_ctx=512, n_threads=1)
    yield b
    b.close()


@pytest.fixture(scope="module")
def fresh_backend(embedded_model):
    """A second context, used only for independent recomputations."""
    from backends.llama_local import LlamaCppBackend

    b = LlamaCppBackend(embedded_model, n_ctx=512, n_threads=1)
    yield b
    b.close()


def log_softmax(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - (m + math.log(np.exp(x - m).sum()))


def one_at_a_time(b, prompt_tokens, tokens) -> list[float]:
    """ln p_raw of each token, from an empty cache: the prompt in one batch, then token by token."""
    b.reset()
    b.prepare(prompt_tokens)
    out = []
    for t in tokens:
        out.append(float(log_softmax(b.logits())[t]))
        if not b.is_eog(t):
            b.feed(t)
    return out


# ----------------------------------------------------------------------------- strategies


def test_strategy_specs_map_to_one_knob_each():
    cases = {
        "greedy": dict(temperature=0.0),
        "top-k:40": dict(top_k=40),
        "top-p:0.9": dict(top_p=0.9),
        "min-p:0.05": dict(min_p=0.05),
        "temp:0.7": dict(temperature=0.7),
        "typical:0.95": dict(typical_p=0.95),
    }
    for spec, changed in cases.items():
        s = parse_strategy(spec)
        assert s.spec == spec and not s.is_beam
        st = s.settings(seed=7, max_tokens=5, top_n=3)
        assert st == NEUTRAL.replace(seed=7, max_tokens=5, top_n=3, **changed)
    assert NEUTRAL.temperature == 1.0 and NEUTRAL.top_k == 0 and NEUTRAL.top_p == 1.0 and NEUTRAL.min_p == 0.0
    b = parse_strategy(" Beam:4:lp=0.6 ")
    assert (b.kind, b.width, b.length_penalty, b.spec) == ("beam", 4, 0.6, "beam:4:lp=0.6")
    with pytest.raises(ValueError, match="no sampler settings"):
        b.settings()
    assert [s.spec for s in parse_strategies("greedy, beam:2,top-k:40,top_p:0.9,temperature:1.3")] == [
        "greedy", "beam:2", "top-k:40", "top-p:0.9", "temp:1.3"]


@pytest.mark.parametrize("spec, why", [
    ("nucleus:0.9", "unknown strategy"), ("beam", "needs a width"), ("beam:0", "1..64"), ("beam:2.5", "whole"),
    ("beam:4:xx=1", "lp=ALPHA"), ("top-k:2.5", "whole number"), ("top-k:0", "at least 1"), ("top-p:1.5", r"\(0, 1\]"),
    ("min-p:0", r"\(0, 1\]"), ("temp:9", "0..5"), ("temp:abc", "not a number"), ("greedy:1", "no value"),
    ("top-p", "one value"),
])
def test_bad_strategy_specs_name_the_accepted_forms(spec, why):
    with pytest.raises(ValueError, match=why) as info:
        parse_strategy(spec)
    assert "Accepted forms: greedy, beam:W" in str(info.value)


# ----------------------------------------------------------------------------- beam search


def test_beam_search_equals_brute_force_on_the_vocabulary_limited_toy_case(backend):
    horizon, v = 3, 2
    bf = brute_force_best(backend, PROMPT, horizon, v)
    assert len(bf.sequences) == v ** horizon  # no end token among these continuations
    # exhaustive: width = V**horizon and only the top-V tokens expanded -> every sequence kept, in order
    for method, batched, tol in (("sequences", False, 1e-5), ("prefix", True, 1e-5), ("sequences", True, 0.05)):
        r = beam_search(backend, PROMPT, v ** horizon, horizon, restrict_to_top=v, method=method, batched=batched)
        assert r.method == method
        assert [b.tokens for b in r.beams] == [s for s, _ in bf.sequences], (method, batched)
        for b, (_, lp) in zip(r.beams, bf.sequences):
            assert b.logprob == pytest.approx(lp, abs=tol)
        assert r.best.tokens == bf.best[0]
    # the best is clearly the best: the comparison is not decided by rounding
    assert bf.sequences[0][1] - bf.sequences[1][1] > 1.0


def test_beam_scores_are_the_sums_of_the_tokens_log_probabilities(backend, fresh_backend):
    r = beam_search(backend, PROMPT, 3, 6, length_penalty=0.6)  # sequences, one decode per beam: exact
    assert r.method == "sequences" and not r.batched and len(r.beams) == 3 and r.steps >= 1
    prompt_tokens = fresh_backend.tokenize(PROMPT)
    scores = [b.score for b in r.beams]
    assert scores == sorted(scores, reverse=True)
    for b in r.beams:
        lps = one_at_a_time(fresh_backend, prompt_tokens, b.tokens)
        assert [s.logprob for s in b.steps] == pytest.approx(lps, abs=1e-5)
        assert b.logprob == pytest.approx(math.fsum(lps), abs=1e-5)
        assert b.score == pytest.approx(b.logprob / b.length ** 0.6, rel=1e-12)
        assert b.finished == (b.finish_reason in ("eos", "stop"))
        assert b.finish_reason in ("eos", "length")
        if b.finish_reason == "eos":
            assert fresh_backend.is_eog(b.tokens[-1])
        else:
            assert b.length == 6
        data = b"".join(fresh_backend.token_bytes(t) for t in b.tokens if not fresh_backend.is_eog(t))
        assert b.text == data.decode("utf-8", errors="replace")
    # one batch per step: the same best beam here, its log-probabilities moved by llama.cpp's batch kernels
    fast = beam_search(backend, PROMPT, 3, 6, length_penalty=0.6, batched=True)
    assert fast.batched and fast.best.tokens == r.best.tokens
    assert fast.best.logprob == pytest.approx(r.best.logprob, abs=0.3)


def test_beam_width_one_is_greedy_and_stop_strings_finish_beams(backend):
    b1 = beam_search(backend, PROMPT, 1, 5)
    backend.reset()
    greedy = GenerationSession(backend, PROMPT, parse_strategy("greedy").settings(max_tokens=5))
    list(greedy.run())
    assert list(b1.best.tokens) == greedy.generated
    r = beam_search(backend, PROMPT, 4, 6, stop=(" of",))
    stopped = [b for b in r.beams if b.finish_reason == "stop"]
    assert stopped, [b.text for b in r.beams]
    for b in stopped:
        assert b.finished and " of" not in b.text
        whole = b"".join(backend.token_bytes(t) for t in b.tokens).decode("utf-8", errors="replace")
        assert " of" in whole and whole.startswith(b.text)
    cancel = threading.Event()
    cancel.set()
    c = beam_search(backend, PROMPT, 2, 5, cancel=cancel)
    assert c.cancelled and c.best.length == 0 and not c.best.finished


# ----------------------------------------------------------------------------- lockstep


def test_first_fork_on_constructed_columns():
    assert first_fork([[1, 2, 3], [1, 2, 3]]) is None
    assert first_fork([[1, 2, 3], [1, 5, 3], [1, 2, 3]]) == 1
    assert first_fork([[1, 2], [1, 2, 3]]) == 2  # one column ended, the other goes on
    assert first_fork([[7], [8]]) == 0
    assert first_fork([[1, 2, 3]]) is None
    assert first_fork([["a", "b"], ["a", "c"]]) == 1


def test_lockstep_order_same_seed_as_a_plain_session_and_fork(backend):
    specs = ["greedy", "top-k:40", "top-p:0.9", "temp:1.3", "beam:2"]
    records, summary = run_lockstep(backend, PROMPT, specs, max_tokens=6, seed=3, top_n=4)
    heads = [r for r in records if isinstance(r, ColumnRecord)]
    assert [h.strategy for h in heads] == specs and records[:5] == heads
    assert heads[4].beam and heads[4].settings is None
    steps = [r for r in records if isinstance(r, StepRecord)]
    # every column's step k before any column's step k + 1, columns in order within a step
    assert [(r.step, r.column) for r in steps] == sorted((r.step, r.column) for r in steps)
    forks = [i for i, r in enumerate(records) if isinstance(r, ForkRecord)]
    by_col = {c: [r for r in steps if r.column == c] for c in range(len(specs))}
    expected_fork = first_fork([[r.token_id for r in by_col[c]] for c in by_col])
    assert expected_fork is not None and summary.fork_step == expected_fork
    assert len(forks) == 1 and records[forks[0]].step == expected_fork
    before = [r for r in records[:forks[0]] if isinstance(r, StepRecord)]
    assert before[-1].step == expected_fork and all(r.step > expected_fork
                                                    for r in records[forks[0] + 1:] if isinstance(r, StepRecord))
    # each sampled column is what a plain session with its settings and the seed draws, exactly
    for c, spec in enumerate(specs[:4]):
        backend.reset()
        s = GenerationSession(backend, PROMPT, parse_strategy(spec).settings(seed=3, max_tokens=6, top_n=4))
        plain = [x for x in s.run() if isinstance(x, Step)]
        col = by_col[c]
        assert [r.token_id for r in col] == [p.token_id for p in plain], spec
        assert [r.p_raw for r in col] == [p.p_raw for p in plain]
        assert [r.p_final for r in col] == [p.p_final for p in plain]
        assert summary.columns[c].text == s.text
    # the figures
    for c, col in summary_columns(summary):
        recs = by_col[c]
        assert col.length == len(recs)
        assert col.total_logprob == pytest.approx(math.fsum(r.logprob for r in recs), abs=1e-9)
        assert col.perplexity == pytest.approx(math.exp(-col.total_logprob / col.length), rel=1e-9)
        assert col.mean_entropy == pytest.approx(np.mean([r.entropy_raw for r in recs]), rel=1e-9)
        assert all(r.logprob == pytest.approx(math.log(r.p_raw), abs=1e-12) for r in recs)
    beam_col = summary.columns[4]
    assert [r.token_id for r in by_col[4]] == list(beam_col.beam.beams[0].tokens) == list(beam_col.tokens)
    assert beam_col.total_logprob == pytest.approx(beam_col.beam.beams[0].logprob, abs=1e-9)
    assert all(r.p_final is None for r in by_col[4])
    # the prompt once, then one token per sampled column per step (the last drawn token is never fed)
    assert summary.column_method == "sequences"
    assert summary.token_evaluations == summary.prompt_tokens + sum(len(by_col[c]) - 1 for c in range(4))
    json.dumps([r.to_dict() for r in records], allow_nan=False), json.dumps(json_safe(summary.to_dict()))  # JSON-ready
    # the typed records of the real model round-trip through their dict forms (also through JSON)
    for r in (*records, summary):
        assert_round_trips(r)
    assert {"trace", "beam"} <= set(summary.to_dict()["columns"][4]) and "beam" not in summary.to_dict()["columns"][0]
    # the fallback (columns taking turns on the backend's own cache) gives the very same records
    records2, summary2 = run_lockstep(backend, PROMPT, specs, max_tokens=6, seed=3, top_n=4, column_method="prefix")
    assert records2 == records and summary2.column_method == "prefix"
    assert summary2.token_evaluations > summary.token_evaluations


def summary_columns(summary):
    return list(enumerate(summary.columns))


def test_lockstep_cancel_keeps_what_was_drawn(backend):
    cancel = threading.Event()
    gen = lockstep(backend, PROMPT, "greedy,temp:1.0", max_tokens=6, seed=1, cancel=cancel)
    seen = []
    while True:
        try:
            r = next(gen)
        except StopIteration as stop:
            summary = stop.value
            break
        seen.append(r)
        if isinstance(r, StepRecord) and r.step == 1 and r.column == 0:
            cancel.set()
    steps = [r for r in seen if isinstance(r, StepRecord)]
    assert [(r.step, r.column) for r in steps] == [(0, 0), (0, 1), (1, 0)]
    assert summary.cancelled and [c.length for c in summary.columns] == [2, 1]
    assert_round_trips(summary)
    with pytest.raises(ValueError, match="Accepted forms"):
        lockstep(backend, PROMPT, "greedy,bogus", max_tokens=3)


# ----------------------------------------------------------------------------- branching


def test_branching_reproduces_fresh_logits_and_the_trees_probabilities(backend, fresh_backend):
    tree = BranchTree.for_backend(backend, PROMPT)
    greedy = parse_strategy("greedy").settings(top_n=5)
    leaf = branch(backend, tree, 0, None, greedy, max_tokens=5, seed=0)
    path = tree.path(leaf)
    assert len(path) == 5
    # the road not taken at depth 2: the second most likely token there
    at = path[1]
    alt = tree.node(path[2]).top[1]["id"]
    assert alt != tree.node(path[2]).token_id
    sampled = parse_strategy("top-p:0.9").settings(top_n=5)
    leaf2 = branch(backend, tree, at, alt, sampled, max_tokens=3, seed=11)
    new = tree.path(leaf2)
    assert new[:2] == path[:2] and tree.node(new[2]).token_id == alt and tree.node(new[2]).forced
    tokens = [t for t in tree.path_tokens(leaf2)]
    # the cache ends holding the prompt and the new path except its last token (never fed)
    assert list(backend.cached_tokens) == tree.prompt_tokens + tokens[:-1]
    after_branch = np.array(backend.logits(), copy=True)
    # a fresh context with the same batch shapes (prompt in one batch, then one token at a time): identical
    fresh_backend.reset()
    fresh_backend.prepare(tree.prompt_tokens)
    for t in tokens[:-1]:
        fresh_backend.feed(t)
    assert np.array_equal(after_branch, np.asarray(fresh_backend.logits()))
    # the whole prefix in one batch differs only by llama.cpp's batch-shape effect
    fresh_backend.reset()
    fresh_backend.prepare(tree.prompt_tokens + tokens[:-1])
    p, q = log_softmax(after_branch), log_softmax(fresh_backend.logits())
    assert float(np.sum(np.exp(p) * (p - q))) < 0.01
    # every edge of the branch carries the probabilities of a fresh evaluation; the path multiplies them
    lps = one_at_a_time(fresh_backend, tree.prompt_tokens, tokens)
    nodes = [tree.node(i) for i in new]
    # (the chain's softmax is float32: 1e-6 relative)
    assert [n.p_raw for n in nodes] == pytest.approx([math.exp(x) for x in lps], rel=1e-6)
    assert tree.path_probability(leaf2) == pytest.approx(math.exp(math.fsum(lps)), rel=5e-6)
    assert tree.path_probability(leaf2) == pytest.approx(math.prod(n.p_raw for n in nodes), rel=1e-12)
    assert tree.path_probability(leaf2, final=True) == pytest.approx(math.prod(n.p_final for n in nodes), rel=1e-12)
    assert all(n.run == 0 for n in nodes[:2]) and all(n.run == 1 for n in nodes[2:])
    # greedy edges have final probability 1
    assert all(tree.node(i).p_final == 1.0 for i in path)
    # N children from one node, seeds seed..seed+N-1; the same call again adds nothing new
    n_before = len(tree.nodes)
    leaves = children(backend, tree, at, 3, parse_strategy("temp:1.3").settings(top_n=3), max_tokens=2, seed=5)
    assert len(leaves) == 3 and all(tree.path(x)[:2] == path[:2] for x in leaves)
    assert [r["kind"] for r in tree.runs] == ["branch", "branch", "child", "child", "child"]
    assert [r["seed"] for r in tree.runs[2:]] == [5, 6, 7]
    n_after = len(tree.nodes)
    assert n_after > n_before
    again = children(backend, tree, at, 3, parse_strategy("temp:1.3").settings(top_n=3), max_tokens=2, seed=5)
    assert again == leaves and len(tree.nodes) == n_after
    # plain data: a JSON round trip keeps everything
    back = BranchTree.from_dict(json.loads(json.dumps(tree.to_dict())))
    assert back.to_dict() == tree.to_dict()
    assert back.path_text(leaf2) == tree.path_text(leaf2)
    assert back.path_probability(leaf2) == tree.path_probability(leaf2)


def test_the_tree_jobs_yield_typed_records_and_grow_a_copy(backend):
    """``iter_tree`` (a recorded run as the first path) and ``iter_grow`` (a branch, then N
    children) as the lab runs them: typed records out, a ``TreeSummary`` back, the tree they
    were given left as it was."""
    backend.reset()
    session = GenerationSession(backend, PROMPT, parse_strategy("greedy").settings(max_tokens=3, top_n=4))
    steps = [x for x in session.run() if isinstance(x, Step)]
    out: list = []
    made = drain(iter_tree(PROMPT, backend.tokenize(PROMPT), steps, session.settings, "m"), out.append)
    assert out == [TreeRecord(len(steps) + 1)] and isinstance(made, TreeSummary)
    tree = made.tree
    assert len(tree.nodes) == len(steps) + 1 and made.open == len(steps)
    assert tree.path(made.open) == list(range(1, len(steps) + 1))
    assert [tree.node(i).token_id for i in tree.path(made.open)] == [s.token_id for s in steps]
    assert tree.runs[0]["kind"] == "recorded" and tree.prompt_tokens == tuple(backend.tokenize(PROMPT))
    # the dict form is BranchTree.to_dict's; the typed value converts both ways
    assert json_safe(made.to_dict()["tree"]) == BranchTree.from_data(tree).to_dict()
    assert BranchTree.from_data(tree).data() == tree
    assert_round_trips(made)
    # a branch from the first token with the second alternative of the second position
    alt = tree.node(2).top[1]
    nodes: list = []
    grown = drain(iter_grow(backend, tree, 1, alt.id, parse_strategy("greedy").settings(top_n=4), max_tokens=2),
                  nodes.append)
    assert all(isinstance(n, NodeRecord) for n in nodes) and len(nodes) == 2
    assert nodes[0].parent == 1 and grown.tree.node(nodes[0].id).token_id == alt.id
    assert grown.tree.node(nodes[0].id).forced and grown.open == nodes[-1].id
    assert len(tree.nodes) == len(steps) + 1 and len(tree.runs) == 1  # the given tree is a value: untouched
    assert [r["kind"] for r in grown.tree.runs] == ["recorded", "branch"]
    # two children from the root, one after the other (seeds 5 and 6)
    kids = drain(iter_grow(backend, grown.tree, 0, None, parse_strategy("temp:1.3").settings(top_n=3), max_tokens=2,
                           seed=5, n_children=2))
    assert [(r["kind"], r["seed"]) for r in kids.tree.runs[2:]] == [("child", 5), ("child", 6)]
    assert kids.tree.path(kids.open)[0] in kids.tree.node(0).children
    assert_round_trips(kids)


def test_goto_prefix_evaluates_only_what_changed(backend):
    pt = backend.tokenize(PROMPT)
    backend.reset()
    assert goto_prefix(backend, pt, []) == len(pt)
    assert goto_prefix(backend, pt, []) == 0
    assert goto_prefix(backend, pt, [506, 5279]) == 2
    assert goto_prefix(backend, pt, [506, 5279]) == 0
    assert goto_prefix(backend, pt, [506, 529, 1]) == 2  # keeps " the", evaluates the rest one by one
    assert goto_prefix(backend, pt, [506]) == 1  # a prefix of the cache: its last token again
    assert goto_prefix(backend, pt, []) == len(pt)  # the prompt alone: afresh, in one batch
    assert list(backend.cached_tokens) == pt


# ----------------------------------------------------------------------------- A/B


def _step(chosen, alts, *, final=None, ids=True) -> Step:
    top = tuple(TokenAlt(i if ids else None, t, p, (final or {}).get(t, p)) for i, t, p in alts)
    c = next(a for a in top if a.token == chosen)
    return Step(index=0, position=0, token_id=c.id, token=chosen, piece=chosen, p_raw=c.p_raw, p_final=c.p_final,
                rank=1, entropy_raw=1.0, entropy_final=1.0, kl_final_raw=0.0, top=top)


def test_ab_compare_by_hand():
    a0 = _step("x", [(1, "x", 0.5), (2, "y", 0.3)])  # 0.2 outside
    b0 = _step("z", [(1, "x", 0.4), (3, "z", 0.4)])  # 0.2 outside
    # A lacks z: min(0.3, 0.2 / 1) = 0.2 -> (0.5, 0.3, 0.2); B lacks y: min(0.4, 0.2) = 0.2 -> (0.4, 0.2, 0.4)
    d = step_distance(a0, b0, "raw")
    pa, pb = [0.5, 0.3, 0.2], [0.4, 0.2, 0.4]
    kl_ab = sum(p * math.log(p / q) for p, q in zip(pa, pb))
    kl_ba = sum(q * math.log(q / p) for p, q in zip(pa, pb))
    m = [(p + q) / 2 for p, q in zip(pa, pb)]
    js = 0.5 * sum(p * math.log(p / x) for p, x in zip(pa, m)) + 0.5 * sum(q * math.log(q / x) for q, x in zip(pb, m))
    assert d["kl_ab"] == pytest.approx(kl_ab, abs=1e-12) and d["kl_ba"] == pytest.approx(kl_ba, abs=1e-12)
    assert d["tv"] == pytest.approx(0.2, abs=1e-12) and d["js"] == pytest.approx(js, abs=1e-12)
    assert d["n_union"] == 3 and d["mass_outside_a"] == pytest.approx(0.2) and not d["agree"]
    # step 1: the same distribution, renormalised over a top-2 holding 0.8 -> distance 0, same token
    a1 = _step("x", [(1, "x", 0.6), (2, "y", 0.2)])
    b1 = _step("x", [(1, "x", 0.6), (2, "y", 0.2)])
    # step 2: final distributions where B's sampler removed A's token -> KL(A||B) infinite, TV finite
    a2 = _step("x", [(1, "x", 0.6), (2, "y", 0.4)], final={"x": 0.6, "y": 0.4})
    b2 = _step("y", [(1, "x", 0.6), (2, "y", 0.4)], final={"x": 0.0, "y": 1.0})
    res = ab_compare([a0, a1, a2], [b0.to_dict(), b1.to_dict(), b2.to_dict(), b2.to_dict()])
    assert res.first_fork == 0 and res.n_compared == 3 and res.len_b == 4
    s0, s1, s2 = res.steps
    assert s0.tv == pytest.approx(0.2) and not s0.after_fork
    assert s1.kl_ab == 0.0 and s1.tv == 0.0 and s1.agree and s1.after_fork
    assert s2.kl_ab is None  # A puts 0.6 on x, which B's sampler removed
    assert s2.kl_ba == pytest.approx(math.log(1.0 / 0.4), abs=1e-12)
    assert s2.tv == pytest.approx(0.6, abs=1e-12)
    assert res.agreement == pytest.approx(1 / 3)
    assert res.mean_tv == pytest.approx((0.2 + 0.0 + 0.6) / 3) and res.mean_tv_same_context == pytest.approx(0.2)
    assert res.mean_kl_ab is None  # one infinite term
    assert res.a == () and res.b == ()  # ab_compare alone: no runs
    json.dumps(res.to_dict(), allow_nan=False)
    assert_round_trips(res)
    # remote-style steps (no token ids) are matched by text
    r = step_distance(_step("x", [(0, "x", 0.7), (0, "y", 0.3)], ids=False),
                      _step("x", [(0, "x", 0.7), (0, "y", 0.3)], ids=False))
    assert r["tv"] == 0.0 and r["agree"] and r["token_id_a"] is None


def test_ab_run_two_settings_share_the_raw_distribution_until_they_part(backend):
    greedy = parse_strategy("greedy").settings(max_tokens=3, top_n=10)
    hot = parse_strategy("temp:1.3").settings(max_tokens=3, top_n=10, seed=2)
    raw = ab_run(backend, backend, PROMPT, greedy, hot, which="raw")
    assert len(raw.a) == 3 and len(raw.b) == 3
    first = raw.steps[0]
    assert first.kl_ab == pytest.approx(0.0, abs=1e-12) and first.tv == pytest.approx(0.0, abs=1e-12)
    fork = raw.first_fork
    if fork is None or fork > 0:  # same text so far: the same model gives the same raw distribution
        assert raw.steps[1].tv == pytest.approx(0.0, abs=1e-12)
    final = ab_run(backend, backend, PROMPT, greedy, hot)
    assert final.which == "final" and final.steps[0].tv > 0.1  # one-hot against T 1.3
    # A (greedy) is one-hot on the top token: KL(A||B) = -ln B(top) over the union, KL(B||A) infinite
    b_top = final.b[0]["top"]
    union_mass = math.fsum(t["p_final"] for t in b_top)
    assert final.steps[0].kl_ab == pytest.approx(-math.log(b_top[0]["p_final"] / union_mass), rel=1e-9)
    assert final.steps[0].kl_ba is None
    assert_round_trips(final)
    # the lab's A/B job: the same comparison, its steps yielded, the summary returned
    job = []
    again = drain(iter_ab(backend, backend, PROMPT, greedy, hot), job.append)
    assert isinstance(again, ABSummary) and tuple(job) == again.steps and again.to_dict()["mode"] == "ab"
    assert [s.kl_ab for s in again.steps] == pytest.approx([s.kl_ab for s in final.steps], abs=1e-12)


# ----------------------------------------------------------------------------- remote


def test_remote_sampled_column_and_what_a_server_cannot_do(remote, backend):
    items = list(remote_column(remote, PROMPT, "greedy", max_tokens=3, seed=1, top_n=3))
    steps, fin = items[:-1], items[-1]
    assert isinstance(fin, Finished) and 1 <= len(steps) <= 3
    assert all(s.token_id is None and s.estimated and 1 <= len(s.top) <= 4 for s in steps)
    backend.reset()
    local = GenerationSession(backend, PROMPT, parse_strategy("greedy").settings(max_tokens=3))
    list(local.run())
    assert fin.text == local.text  # the same model, greedy
    with pytest.raises(RemoteUnsupported, match="beam search needs the model's logits for every beam: only for "
                                                "local models"):
        remote_column(remote, PROMPT, "beam:2")
    with pytest.raises(RemoteUnsupported, match="typical-p"):
        remote_column(remote, PROMPT, "typical:0.9")
    with pytest.raises(RemoteUnsupported, match="only for local models"):
        beam_search(remote, PROMPT, 2, 3)
    with pytest.raises(RemoteUnsupported, match="beam:2"):
        lockstep(remote, PROMPT, "greedy,beam:2", max_tokens=2)
    # a lockstep of sampled columns on the server: same record shapes, estimated
    records, summary = run_lockstep(remote, PROMPT, "greedy,top-p:0.9", max_tokens=2, seed=4, top_n=3)
    steps = [r for r in records if isinstance(r, StepRecord)]
    assert [(r.step, r.column) for r in steps] == sorted((r.step, r.column) for r in steps)
    assert all(r.estimated and r.token_id is None for r in steps)
    assert summary.backend == "remote" and [c.strategy for c in summary.columns] == ["greedy", "top-p:0.9"]
    assert summary.columns[0].text == local.text[: len(summary.columns[0].text)]
    for r in (*records, summary):
        assert_round_trips(r)
    # branches on a server: new requests continuing the path's text
    tree = BranchTree.for_backend(remote, PROMPT)
    assert tree.prompt_tokens is None
    leaf = branch(remote, tree, 0, None, parse_strategy("greedy").settings(top_n=3), max_tokens=2)
    first = tree.node(tree.path(leaf)[0])
    assert first.token_id is None and first.estimated and tree.path_text(leaf) == local.text[: len(tree.path_text(leaf))]
    alt = first.top[1]
    leaf2 = branch(remote, tree, 0, settings=parse_strategy("greedy").settings(top_n=3), max_tokens=2,
                   token_text=alt["token"])
    forced = tree.node(tree.path(leaf2)[0])
    assert forced.forced and forced.piece == alt["token"] and forced.p_raw == alt["p_raw"]
    assert len(tree.path(leaf2)) == 2 and tree.path_probability(leaf2) == pytest.approx(
        forced.p_raw * tree.node(leaf2).p_raw)


# ----------------------------------------------------------------------------- CLI


def test_cli_compare_json_prints_records_then_the_summary(capsys):
    rc = main(["compare", "--prompt", PROMPT, "--strategies", "greedy,beam:2,top-k:40", "--max-tokens", "4",
               "--seed", "1", "--top-n", "3", "--threads", "1", "--n-ctx", "512", "--json"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    records, summary = lines[:-1], lines[-1]["summary"]
    # the lines hold the keys they held before records were typed: no "schema", no trace (no --traces)
    assert all("schema" not in r for r in records) and "schema" not in summary
    assert set(records[0]) == {"kind", "column", "strategy", "label", "beam", "settings"}
    assert {"prompt", "prompt_tokens", "seed", "max_tokens", "backend", "cancelled", "steps", "fork_step",
            "pairwise_fork", "seconds", "column_method", "token_evaluations", "independent_evaluations", "columns",
            "model"} == set(summary)
    assert all("trace" not in c for c in summary["columns"]) and "beam" not in summary["columns"][0]
    assert [r["strategy"] for r in records if r["kind"] == "column"] == ["greedy", "beam:2", "top-k:40"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [(r["step"], r["column"]) for r in steps] == sorted((r["step"], r["column"]) for r in steps)
    assert all(len(r["top"]) >= 3 for r in steps)
    assert summary["model"] and len(summary["columns"]) == 3
    assert summary["columns"][1]["beam"]["width"] == 2 and not summary["columns"][1]["beam"]["batched"]
    for c in summary["columns"]:
        assert {"total_logprob", "perplexity", "mean_entropy", "length", "finish_reason", "text"} <= set(c)
        assert 1 <= c["length"] <= 4
    forks = [r for r in records if r["kind"] == "fork"]
    assert (summary["fork_step"] is None) == (not forks)
    if forks:
        assert forks[0]["step"] == summary["fork_step"]


def test_cli_compare_table_and_exit_codes(capsys, tmp_path, llama_server):
    rc = main(["compare", "--prompt", PROMPT, "--strategies", "greedy,beam:2", "--max-tokens", "3",
               "--threads", "1", "--n-ctx", "512", "--beam-batched"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.splitlines()[0].split()[:4] == ["step", "greedy", "beam", "2"]
    assert "logprob" in out and "perplexity" in out and "first fork:" in out and "beam 1: sum" in out
    assert len([line for line in out.splitlines() if line[:4].strip().isdigit()]) <= 3  # one row per step
    assert main(["compare", "--prompt", "x", "--strategies", "greedy,nucleus:0.9"]) == 2
    assert "Accepted forms" in capsys.readouterr().err
    assert main(["compare", "--prompt", "x", "--max-tokens", "0"]) == 2
    capsys.readouterr()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    assert main(["compare", "--prompt", "x", "--strategies", "greedy", "--model", str(bad)]) == 1
    assert "not a GGUF" in capsys.readouterr().err
    assert main(["compare", "--base-url", llama_server.base_url, "--model", llama_server.model, "--prompt", "x",
                 "--strategies", "greedy,beam:2", "--max-tokens", "2"]) == 2
    assert "only for local models" in capsys.readouterr().err


def test_n_children_as_parallel_sequences(backend):
    """Four children from one node at once, as parallel sequences: every child's path starts at the
    node, seeds seed..seed+3, the same call again (one at a time or in parallel) adds no new leaf
    where the batch noise did not move a draw, and the backend's own cache is untouched."""
    tree = BranchTree.for_backend(backend, PROMPT)
    at = branch(backend, tree, 0, None, parse_strategy("greedy").settings(top_n=3), max_tokens=2)
    backend.reset()
    leaves = children(backend, tree, at, 4, parse_strategy("temp:1.3").settings(top_n=3), max_tokens=3, seed=9,
                      max_parallel=4)
    assert len(leaves) == 4 and backend.cached_tokens == ()
    path = tree.path(at)
    assert all(tree.path(x)[:len(path)] == path for x in leaves)
    assert [r["seed"] for r in tree.runs if r["kind"] == "child"] == [9, 10, 11, 12]
    n_nodes = len(tree.nodes)
    again = children(backend, tree, at, 4, parse_strategy("temp:1.3").settings(top_n=3), max_tokens=3, seed=9,
                     max_parallel=4)
    assert again == leaves and len(tree.nodes) == n_nodes  # the same batches: the same children
