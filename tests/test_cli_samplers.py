"""``samplescope generate`` with the samplers of llama.cpp's own tools: their flags, the chain
order (``--samplers``) and the logit bias, on the embedded model."""

from __future__ import annotations

import json

import pytest

from app.cli import main


def _run(capsys, *flags: str):
    rc = main(["generate", "--prompt", "The capital of France is", "--max-tokens", "4", "--json", *flags])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return rc, lines[:-1], lines[-1]["summary"]


def test_order_and_new_samplers_are_used_recorded_and_reported(capsys):
    rc, steps, summary = _run(capsys, "--samplers", "top_k;xtc;temperature", "--xtc-probability", "1",
                              "--xtc-threshold", "0.05", "--dynatemp-range", "0.5", "--top-nsigma", "2")
    assert rc == 0 and len(steps) == 4
    for step in steps:
        names = [st["name"] for st in step["stages"]]
        assert names == ["top_k", "xtc", "temperature"]  # top_n_sigma is not in the order: not run
        assert step["stages"][2]["value"] > 0  # the dynamic temperature used
    s = summary["settings"]
    assert s["samplers"] == ["top_k", "xtc", "temperature"] and s["xtc_probability"] == 1.0
    assert s["dynatemp_range"] == 0.5 and s["top_n_sigma"] == 2.0


def test_a_banned_text_never_comes(capsys):
    rc, steps, _ = _run(capsys, "--temperature", "0")
    first = steps[0]["token"]
    rc2, banned, summary = _run(capsys, "--temperature", "0", "-l", f"{first}-inf")
    assert rc == rc2 == 0
    assert banned[0]["token"] != first and banned[0]["stages"][0]["name"] == "logit_bias"
    assert summary["settings"]["logit_bias"] == [[first, "-inf"]]


@pytest.mark.parametrize("flags, message", [
    (["--samplers", "top_k;top_q"], "unknown sampler 'top_q'"),
    (["-l", "15043*2"], "TOKEN+BIAS"),
    (["--xtc-probability", "2"], "xtc_probability"),
])
def test_bad_sampler_flags_are_refused_with_a_reason(capsys, flags, message):
    try:
        code = main(["generate", "--prompt", "x", *flags])
    except SystemExit as exc:  # argparse refuses a flag it cannot read
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
