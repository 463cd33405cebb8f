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


def test_dry_mirostat_and_adaptive_p_flags(capsys):
    rep = ["--prompt", "one two three one two three one two three one two", "--max-tokens", "6", "--json"]

    def run(*flags):
        assert main(["generate", *rep, *flags]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return lines[:-1], lines[-1]["summary"]

    steps, summary = run("--dry-multiplier", "0.8", "--dry-allowed-length", "1", "--dry-sequence-breaker", "none",
                         "--dry-sequence-breaker", "\\n", "--temperature", "0")
    assert [st["name"] for st in steps[0]["stages"]][:2] == ["dry", "top_k"]
    s = summary["settings"]
    assert s["dry_multiplier"] == 0.8 and s["dry_allowed_length"] == 1 and s["dry_sequence_breakers"] == ["\n"]
    plain, _ = run("--temperature", "0")
    # greedy repeats "three one two ..."; DRY's penalty on the continuing token changes the text
    assert "".join(st["token"] for st in steps) != "".join(st["token"] for st in plain)
    steps, summary = run("--mirostat", "2", "--mirostat-ent", "3", "--mirostat-lr", "0.2")
    assert all([st["name"] for st in step["stages"]] == ["temperature", "mirostat_v2"] for step in steps)
    mus = [step["stages"][-1]["value"] for step in steps]
    assert mus[0] == pytest.approx(6.0) and len(set(mus)) == len(mus)  # 2 tau, then moving each step
    assert summary["settings"]["mirostat"] == 2 and summary["settings"]["mirostat_tau"] == 3.0
    steps, summary = run("--adaptive-target", "0.2", "--adaptive-decay", "0.5")
    assert all(step["stages"][-1]["name"] == "adaptive_p" for step in steps)
    assert steps[0]["stages"][-1]["value"] == pytest.approx(0.2)
    assert summary["settings"]["adaptive_target"] == 0.2


@pytest.mark.parametrize("flags, message", [
    (["--samplers", "top_k;top_q"], "unknown sampler 'top_q'"),
    (["-l", "15043*2"], "TOKEN+BIAS"),
    (["--xtc-probability", "2"], "xtc_probability"),
    (["--mirostat", "3"], "invalid choice"),
    (["--adaptive-decay", "1.5"], "adaptive_decay"),
])
def test_bad_sampler_flags_are_refused_with_a_reason(capsys, flags, message):
    try:
        code = main(["generate", "--prompt", "x", *flags])
    except SystemExit as exc:  # argparse refuses a flag it cannot read
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
