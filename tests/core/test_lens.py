"""The layer lens on the embedded Gemma 3 270M: the last layer projected through the output head
equals the model's own output distribution (the equality test, at the measured tolerance), the
records' shape, the commitment rule on hand-made cases, a wrong head refused with the measured
difference, how the capture reads the rows of each layer, and the head read from the GGUF file."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from app.core.lens import (TOLERANCE_NATS, LensUnavailable, Projector, _round, check_projection, commitment_layer,
                           lens_run)
from app.core.session import GenerationSession
from app.core.teacher_forcing import forced_layers
from backends.base import Capabilities, SamplerSettings, Step
from backends.layer_capture import LensContext
from backends.llama_engine import LOCAL_CAPABILITIES
from backends.output_head import head_spec, model_head


@pytest.fixture(scope="module")
def run(local_backend):
    """A short sampled run on the Workbench's context (prompt tokens, steps)."""
    local_backend.reset()
    s = GenerationSession(local_backend, "The capital of France is", SamplerSettings(max_tokens=6, seed=5))
    steps = [x for x in s.run() if isinstance(x, Step)]
    return s.prompt_tokens, steps


def _log_softmax(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())


def test_the_last_layer_projected_equals_the_models_own_distribution(local_backend, run):
    prompt, steps = run
    head = model_head(local_backend.model)
    tokens = prompt + [s.token_id for s in steps]
    diffs = []
    for pos, layers, logits in forced_layers(local_backend, tokens, len(prompt) - 1, prompt_len=len(prompt)):
        got = _log_softmax(Projector(head).project(layers[-1:])[0])
        diffs.append(float(np.abs(got - _log_softmax(logits)).max()))
        check = check_projection(head, layers[-1], logits, pos)
        assert check.ok and check.rounding == "ggml-cpu" and check.max_nats <= TOLERANCE_NATS
    # measured here 4e-6 .. 3e-5 nats over the whole vocabulary; the tolerance is 1e-3
    assert len(diffs) == len(steps) and max(diffs) <= TOLERANCE_NATS
    # the same evaluation schedule as the run: the last layer is the step's own distribution
    assert local_backend.context._eval_callback is None  # the Workbench's context has no callback


def test_lens_records_have_one_entry_per_layer(local_backend, run):
    prompt, steps = run
    n_layers = local_backend.info.n_layers
    assert n_layers == 18
    checks = []
    lenses = list(lens_run(local_backend, prompt, [s.token_id for s in steps], top_n=4, on_check=checks.append))
    assert [x.index for x in lenses] == list(range(len(steps))) and checks and checks[0].ok
    for lens, step in zip(lenses, steps):
        assert lens.token_id == step.token_id and len(lens.layers) == n_layers
        assert [x.layer for x in lens.layers] == list(range(n_layers))
        for layer in lens.layers:
            assert len(layer.top) == 4 and 0 <= layer.p_chosen <= 1 and layer.rank_chosen >= 1
            assert layer.entropy >= 0 and layer.top[0][2] >= layer.top[-1][2]
            assert (layer.rank_chosen == 1) == (layer.top[0][0] == step.token_id)
        # evaluated as the run was made (prompt in one batch, then token by token): the last layer is
        # the step's own raw distribution
        assert abs(lens.layers[-1].p_chosen - step.p_raw) < 1e-5
        assert lens.commitment_layer == commitment_layer([x.top[0][0] for x in lens.layers], step.token_id)
        d = lens.to_dict()
        assert set(d) >= {"index", "token_id", "token", "commitment_layer", "layers"}
        assert set(d["layers"][0]) >= {"top", "p_chosen", "rank_chosen", "entropy"}
    one = list(lens_run(local_backend, prompt, [s.token_id for s in steps], indices=[3], top_n=4))
    # one step alone: the same numbers (to float32 rounding: the matrix product is one step's rows, not four's)
    assert len(one) == 1 and np.allclose(one[0].p_chosen, lenses[3].p_chosen, rtol=1e-5, atol=1e-9)
    assert [x.top[0][0] for x in one[0].layers] == [x.top[0][0] for x in lenses[3].layers]


def test_the_commitment_layer_rule():
    assert commitment_layer([5, 1, 1, 1], 1) == 1
    assert commitment_layer([1, 2, 1, 1], 1) == 2  # top-1 at layer 0 but lost at layer 1: not committed there
    assert commitment_layer([1, 1, 1, 1], 1) == 0
    assert commitment_layer([1, 1, 1, 2], 1) is None  # the last layer favours another token
    assert commitment_layer([7], 7) == 0 and commitment_layer([], 7) is None


def test_a_head_that_breaks_the_equality_is_refused_with_the_difference(local_backend, run):
    prompt, steps = run
    head = model_head(local_backend.model)
    # Gemma's converter already adds the +1 of its (1 + w) norm: adding it again is a wrong head
    wrong = dataclasses.replace(head, norm_weight=head.norm_weight + 1)
    with pytest.raises(LensUnavailable) as err:
        list(lens_run(local_backend, prompt, [s.token_id for s in steps], head=wrong))
    msg = str(err.value)
    assert "refused" in msg and "nats" in msg and "gemma3" in msg
    nats = float(msg.split("by up to ")[1].split(" nats")[0])
    assert nats > 1.0  # measured 19 .. 28.5
    capped = dataclasses.replace(head, spec=dataclasses.replace(head.spec, softcap=2.0))  # a cap Gemma 3 lacks
    with pytest.raises(LensUnavailable):
        list(lens_run(local_backend, prompt, [s.token_id for s in steps], indices=[0], head=capped))


def test_the_capture_reads_the_rows_each_layer_has(local_backend):
    """Every layer but the last holds every token of the batch; llama.cpp cuts the last to the
    output rows: outputs at 2 of 6 positions give the same rows as outputs at all 6."""
    model = local_backend.model
    toks = model.tokenize("The capital of France is")
    lens = LensContext(model, n_ctx=32)
    try:
        out = {}
        for wanted in ([2, 5], list(range(len(toks)))):
            lens.context.reset()
            lens.capture.expect(len(toks), wanted)
            lens.context.decode([(t, i, 0, i in wanted) for i, t in enumerate(toks)])
            out[len(wanted)] = lens.capture.take().copy()
        assert out[2].shape == (18, 2, model.n_embd)
        assert np.array_equal(out[2][:-1], out[len(toks)][:-1, [2, 5]])
        assert np.allclose(out[2][-1], out[len(toks)][-1, [2, 5]], rtol=1e-4, atol=1e-4)
    finally:
        lens.close()


def test_the_output_head_from_the_gguf_file(embedded_model, local_backend):
    spec = head_spec(embedded_model)
    assert (spec.architecture, spec.norm, spec.unembedding, spec.unembedding_type) == \
        ("gemma3", "rms", "token_embd.weight", "Q8_0")
    assert spec.tied and math.isclose(spec.eps, 1e-6, rel_tol=1e-6) and spec.softcap == 0.0
    assert spec.memory_bytes == 262_144 * 640 * 4 and "640 MiB" in spec.describe()
    head = model_head(local_backend.model)
    assert head is model_head(local_backend.model)  # loaded once per model
    assert head.matrix.shape == (262_144, 640) and head.matrix.dtype == np.float32 and not head.matrix.flags.writeable


def test_activation_rounding_stays_within_half_a_step():
    """llama.cpp's activation rounding as the lens applies it (the equality test above is what
    shows it is llama.cpp's: without it the difference is 0.1 .. 0.5 nats)."""
    x = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    for kind, block in (("Q8_0", 32), ("Q8_K", 256)):
        r = _round(x, kind)
        step = np.abs(x.reshape(3, -1, block)).max(axis=-1) / 127
        # half a step, and for Q8_0 the scale's own float16 rounding (127 x 2^-11 of a step at most)
        assert np.all(np.abs(r - x).reshape(3, -1, block) <= step[..., None] * 0.57)
        assert len(np.unique(r.reshape(3, -1, block)[0, 0])) <= 255  # 8-bit values
    assert np.array_equal(_round(x, "F16"), x.astype(np.float16).astype(np.float32))
    assert np.all(np.abs(_round(x, "BF16") - x) <= np.abs(x) * 2 ** -8)


def test_servers_have_no_layer_lens():
    assert LOCAL_CAPABILITIES.layer_lens
    assert "local model" in Capabilities().why_not("layer_lens")
