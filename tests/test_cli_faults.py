"""Bad command-line input and interruptions: a clear message and exit code 2 for input, the
summary kept for Ctrl+C, never a traceback. Ranges come from one place (``LoadSettings``,
``SamplerSettings.LIMITS``), shared with the window."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app.cli import main
from backends.base import LoadSettings, SamplerSettings
from tests.processes import interrupt_after


@pytest.mark.parametrize("args, says", [
    (["generate", "--prompt", ""], "prompt is empty"),
    (["compare", "--prompt", ""], "prompt is empty"),
    (["vs", "--prompt", ""], "prompt is empty"),
    (["generate", "--prompt", "hi", "--repeat-penalty", "0"], "repeat_penalty = 0.0 is outside"),
    (["generate", "--prompt", "hi", "--n-ctx", "-5"], "n_ctx = -5 is outside"),
    (["generate", "--prompt", "hi", "--n-ctx", "5"], "too small"),
    (["generate", "--prompt", "hi", "--threads", "-3"], "n_threads = -3 is outside"),
    (["generate", "--prompt", "hi", "--n-gpu-layers", "-5"], "n_gpu_layers = -5 is outside"),
    (["align", "--template", "{n:{0}}"], "inside a format spec"),
    (["align", "--template", "{n:{n.__class__}}"], "inside a format spec"),
    (["shift", "--n-ctx", "-1"], "n_ctx = -1"),
])
def test_bad_input_exits_2_with_the_reason(args, says, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_one_set_of_ranges():
    with pytest.raises(ValueError):
        SamplerSettings(repeat_penalty=0.0).validate()
    SamplerSettings(repeat_penalty=SamplerSettings.LIMITS["repeat_penalty"][0]).validate()
    LoadSettings(n_ctx=0, n_gpu_layers=-1, n_threads=0).validate()  # training context, all layers, automatic
    for bad in (dict(n_ctx=-5), dict(n_threads=-3), dict(n_gpu_layers=-5), dict(n_ctx=8), dict(n_threads=True)):
        with pytest.raises(ValueError):
            LoadSettings(**bad).validate()


def test_invalid_utf8_in_the_prompt_is_generated_from(capsys, embedded_model):
    prompt = os.fsdecode(b"The caf\xff is")  # how Python hands over a non-UTF-8 argument
    assert main(["generate", "--prompt", prompt, "--max-tokens", "2", "--threads", "2", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[-1])["summary"]["n_tokens"] == 2


def test_ctrl_c_during_a_local_generation_prints_the_summary(embedded_model):
    p = subprocess.Popen([sys.executable, "-m", "app", "generate", "--prompt", "Once upon a time", "--json",
                          "--max-tokens", "3000", "--threads", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    printed, rest, err = interrupt_after(p, 3)
    assert p.returncode == 130 and b"Traceback" not in err
    summary = rest[-1]["summary"]
    steps = printed + rest[:-1]
    assert summary["finish_reason"] == "cancelled" and summary["n_tokens"] == len(steps)
    assert summary["text"] == "".join(s["token"] for s in steps)


def test_ctrl_c_twice_during_a_lab_command_exits_130_without_a_traceback(embedded_model):
    """A second Ctrl+C quits at once: exit code 130 and a clean stderr, whichever Ctrl+C ends it."""
    import signal

    p = subprocess.Popen([sys.executable, "-m", "app", "compare", "--prompt", "Once upon a time", "--json",
                          "--strategies", "greedy,temp:1.3", "--max-tokens", "500", "--threads", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(3):  # a few records first: the command is running
        assert p.stdout.readline(), p.stderr.read().decode(errors="replace")
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and b"Traceback" not in err, err.decode(errors="replace")


def test_traces_add_every_generations_steps_to_the_lab_records(capsys, embedded_model):
    base = ["compare", "--prompt", "Once upon a time", "--strategies", "greedy,top-k:20", "--max-tokens", "3",
            "--threads", "2", "--n-ctx", "512", "--json"]
    assert main(base) == 0
    plain = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "trace" not in plain[-1]["summary"]["columns"][0]
    assert main(base + ["--traces"]) == 0
    traced = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    col = traced[-1]["summary"]["columns"][1]
    steps = col["trace"]["steps"]
    assert len(steps) == col["length"] and {"index", "token_id", "p_raw", "p_final", "stages", "top"} <= set(steps[0])
    assert "".join(s["token"] for s in steps) == col["text"]
