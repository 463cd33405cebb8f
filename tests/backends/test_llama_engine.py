"""The one local engine on the embedded model: forks, exact and batched decodes, truncation,
embeddings, the grammar stage against llama.cpp's own grammar sampler, and the thread budget."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.metrics import kl_logits
from app.core.sampling import apply_chain
from app.core.session import GenerationSession
from app.labs.vs.prompts import build_request
from backends.base import GenerationError, SamplerSettings
from backends.grammar import Grammar
from backends.llama_engine import ThreadBudget

PROMPT = "The quick brown fox"
#: KL (nats) between one sequence's next-token distribution decoded alone and inside a batch of
#: several sequences: llama.cpp's multi-row kernels round differently (measured up to 0.004 here
#: on both an AVX-512 and an AVX2-only build; the bound leaves room for other processors).
BATCH_NOISE_KL = 0.02
#: |entropy alone - entropy in a batch of 4| (nats) along 12 greedy steps of a path: measured up to
#: 0.15 (AVX-512 build, 4 prompts); a wrong sequence's logits differ by whole nats.
ENTROPY_NOISE = 0.3
NEUTRAL = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)


@pytest.fixture(scope="module")
def ctx(local_backend):
    c = local_backend.model.context(n_ctx=1024, n_seq=4, n_threads=2)
    yield c
    c.close()


def test_a_forked_prefix_equals_a_fresh_evaluation(ctx, local_backend):
    tokens = local_backend.tokenize(PROMPT)
    ctx.reset()
    assert ctx.prefill(0, tokens) == 0
    base = np.array(ctx.logits(0), copy=True)
    for k in (1, 2, 3):
        ctx.fork(0, k)
        assert ctx.held(k) == tuple(tokens)
        np.testing.assert_array_equal(ctx.logits(k), base)  # nothing evaluated: the same logits
    # each sequence goes its own way; decoded alone (exact mode) each equals a fresh
    # single-sequence evaluation in the same batch shapes, bit for bit
    nxt = [int(t) for t in np.argsort(-base)[:4]]
    for k, t in enumerate(nxt):
        ctx.feed(k, t)
    forked = [np.array(ctx.logits(k), copy=True) for k in range(4)]
    assert ctx.evaluations >= len(tokens) + 4
    for k, t in enumerate(nxt):
        local_backend.reset()
        local_backend.prepare(tokens)
        local_backend.feed(t)
        np.testing.assert_array_equal(forked[k], local_backend.logits())


def test_siblings_of_a_prompt_already_fed_on_take_its_cells_and_logits_evaluating_nothing(ctx, local_backend):
    # N samples of one prompt as parallel sequences: the first evaluates the prompt, draws and is
    # fed its first token (queued, not decoded); each later one prefills the same prompt and must
    # start from the same logits without evaluating anything (before: the first's token was
    # decoded alone, and the prompt's last token again for each sibling)
    tokens = local_backend.tokenize(PROMPT)
    ctx.reset()
    ctx.share_prefixes, ctx.batched = True, True
    try:
        ctx.prefill(0, tokens)
        base = np.array(ctx.logits(0), copy=True)
        first = [int(t) for t in np.argsort(-base)[:4]]
        ctx.feed(0, first[0])
        evaluated = ctx.evaluations
        for k in (1, 2, 3):
            assert ctx.prefill(k, tokens) == len(tokens)
            np.testing.assert_array_equal(ctx.logits(k), base)
            ctx.feed(k, first[k])
        assert ctx.evaluations == evaluated  # nothing evaluated yet
        after = [np.array(ctx.logits(k), copy=True) for k in range(4)]  # one decode of the 4 queued tokens
        assert ctx.evaluations == evaluated + 4
        assert all(ctx.held(k) == tuple(tokens) + (first[k],) for k in range(4))
    finally:
        ctx.share_prefixes, ctx.batched = False, False
    for k, t in enumerate(first):  # each as a fresh single-sequence run, within the batch noise
        local_backend.reset()
        local_backend.prepare(tokens)
        local_backend.feed(t)
        assert kl_logits(local_backend.logits(), after[k]) < BATCH_NOISE_KL


def test_batched_decodes_stay_within_the_batch_noise(ctx, local_backend):
    tokens = local_backend.tokenize(PROMPT)
    ctx.reset()
    ctx.prefill(0, tokens)
    for k in (1, 2, 3):
        ctx.fork(0, k)
    first = np.argsort(-np.array(ctx.logits(0)))[:4]
    exact = []
    for k in range(4):
        ctx.feed(k, int(first[k]))
        exact.append(np.array(ctx.logits(k), copy=True))
    for k in range(4):
        ctx.truncate(k, len(tokens))
        ctx.feed(k, int(first[k]))
    ctx.batched = True
    try:
        batched = [np.array(ctx.logits(k), copy=True) for k in range(4)]
    finally:
        ctx.batched = False
    for a, b in zip(exact, batched):
        assert kl_logits(a, b) < BATCH_NOISE_KL
        assert int(np.argmax(a)) == int(np.argmax(b))


def test_n_parallel_greedy_sequences_match_n_single_runs(local_backend):
    """Four greedy continuations of four prompts decoded together, against four single runs:
    the same tokens while their top-2 logits are further apart than the batch noise."""
    prompts = ["Once upon a time", "The capital of France is", "1, 2, 3,", "My favourite colour is"]
    s = SamplerSettings(temperature=0.0, max_tokens=12)
    singles = []
    for p in prompts:
        local_backend.reset()  # the prompt in one batch, as prefill evaluates it (no cached prefix split)
        sess = GenerationSession(local_backend, p, s)
        singles.append([st for st in sess.run() if hasattr(st, "token_id")])
    ctx = local_backend.model.context(n_ctx=1024, n_seq=4, n_threads=2)
    ctx.batched = True
    try:
        sessions = [GenerationSession(ctx.sequence(k), p, s) for k, p in enumerate(prompts)]
        for sess in sessions:
            sess.start()
        while any(sess.finished is None for sess in sessions):
            for sess in sessions:
                if sess.finished is None:
                    sess.commit()
    finally:
        ctx.close()
    compared = 0
    for single, sess in zip(singles, sessions):
        for a, b in zip(single, sess.steps):
            # batch noise grows along a path (the cached keys were computed in batches too):
            # measured up to 0.15 nats of entropy here on steps whose tokens still agree
            assert abs(a.entropy_raw - b.entropy_raw) < ENTROPY_NOISE
            if a.token_id != b.token_id:
                # allowed only where the two best tokens were nearly tied
                assert a.top[0].p_raw - a.top[1].p_raw < 0.05, (a.token, b.token)
                break
            compared += 1
    assert compared >= 24


def test_truncate_and_feed_again_reproduces_the_path(ctx, local_backend):
    tokens = local_backend.tokenize(PROMPT)
    ctx.reset()
    ctx.prefill(0, tokens)
    path = [506, 5279, 529]
    for t in path:
        ctx.feed(0, t)
        ctx.logits(0)
    end = np.array(ctx.logits(0), copy=True)
    ctx.truncate(0, len(tokens) + 1)
    assert ctx.held(0) == tuple(tokens + path[:1])
    with pytest.raises(GenerationError):
        ctx.logits(0)  # cut: no logits until it is fed
    for t in path[1:]:
        ctx.feed(0, t)
        ctx.logits(0)
    np.testing.assert_array_equal(ctx.logits(0), end)


def test_embeddings(local_backend):
    emb = local_backend.model.embedding_context(256)
    try:
        a, b, c = emb.embed(["red", "red", "a long sentence about the weather in spring"])
    finally:
        emb.close()
    assert a.shape == (local_backend.model.n_embd,) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(a - c).max() > 1e-3


def test_the_grammar_stage_keeps_what_llama_cpp_keeps(local_backend):
    """At every step of a grammar-held VS answer, the stage's kept set is llama.cpp's own grammar
    sampler's over the same candidates (a fresh sampler in the same state, over the whole
    vocabulary, restricted to the tokens the stage checked)."""
    req = build_request("VS-Standard", "Name a colour.", 2)
    model = local_backend.model
    g = Grammar.from_json_schema(model, req.json_schema)
    ref = Grammar.from_json_schema(model, req.json_schema)
    sess = GenerationSession(local_backend, req.text, NEUTRAL.replace(temperature=0.7, max_tokens=40, seed=1),
                             grammar=g)
    sess.start()
    checked_all = 0
    vocab = np.arange(model.n_vocab)
    for _ in range(40):
        if sess.finished is not None:
            break
        logits = np.array(local_backend.logits(), copy=True)
        res = sess.analyze()
        theirs = set(vocab[ref.allowed(vocab)].tolist())
        ours = set(int(i) for i in res.ids)
        assert ours <= theirs  # never a token llama.cpp refuses
        stage = next(s for s in res.stages if s.name == "grammar")
        assert stage.kept == len(ours)
        missing = theirs - ours
        if not missing:
            checked_all += 1
        else:  # only tokens far below the best were left unchecked
            lg = logits.astype(np.float64)
            assert lg[list(missing)].max() < lg.max() - 10 + 1e-6
        step = sess.commit()
        assert step.grammar_p_after is not None and step.grammar_p_before is not None
        if not sess.engine.is_eog(step.token_id):
            ref.accept(step.token_id)
    assert checked_all >= 1
    # the same logits, the grammar off: no grammar stage, no grammar figures
    plain = apply_chain(logits, NEUTRAL)
    assert all(s.name != "grammar" for s in plain.stages)


def test_a_forced_token_the_grammar_refuses_is_refused_in_words(local_backend):
    req = build_request("VS-Standard", "Name a colour.", 2)
    g = Grammar.from_json_schema(local_backend.model, req.json_schema)
    sess = GenerationSession(local_backend, req.text, NEUTRAL.replace(max_tokens=4), grammar=g)
    sess.start()
    word = local_backend.tokenize(" Hello", add_special=False)[0]
    with pytest.raises(GenerationError, match="grammar does not allow"):
        sess.commit(word)


def test_the_thread_budget_shares_the_cores():
    b = ThreadBudget(total=4, window=60.0)
    assert b.share(1, 4) == 4  # alone: all it asked for
    assert b.share(2, 4) == 2  # two busy contexts: half each
    assert b.share(1, 1) == 1
    b.reserve = 1
    assert b.share(3, 4) == 1  # three busy, one core kept for drawing: (4 - 1) // 3
    b.forget(2)
    b.forget(3)
    assert b.share(1, 4) == 4  # alone again: the reserve only applies when several are busy
