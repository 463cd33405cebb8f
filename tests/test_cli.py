"""The headless commands on the real embedded model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_generate_json_prints_one_object_per_step_then_a_summary(capsys):
    rc = main(["generate", "--prompt", "The capital of France is", "--max-tokens", "6",
               "--temperature", "0", "--top-n", "5", "--threads", "2", "--json"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    steps, summary = lines[:-1], lines[-1]["summary"]
    assert 1 <= len(steps) <= 6
    for i, s in enumerate(steps):
        for key in ("index", "token_id", "token", "p_raw", "p_final", "rank", "entropy_raw",
                    "entropy_final", "kl_final_raw", "top"):
            assert key in s
        assert s["index"] == i
        assert len(s["top"]) >= 5 and set(s["top"][0]) >= {"id", "token", "p_raw", "p_final"}
        assert s["rank"] == 1 and s["p_final"] == 1.0  # greedy
    assert summary["text"] == "".join(s["token"] for s in steps)
    assert summary["n_tokens"] == len(steps)
    assert summary["settings"]["temperature"] == 0
    assert "tokens_per_s" in summary


def test_generate_refuses_out_of_range_settings(capsys):
    assert main(["generate", "--prompt", "x", "--top-p", "1.5"]) == 2
    assert "top_p" in capsys.readouterr().err


def test_generate_reports_a_bad_model_file(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    assert main(["generate", "--prompt", "x", "--model", str(bad)]) == 1
    assert "not a GGUF" in capsys.readouterr().err


def test_python_dash_m_app_runs_the_same_entry_point():
    out = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    assert "generate" in out.stdout and "bench" in out.stdout


def test_bench_prints_its_figures(capsys):
    rc = main(["bench", "--tokens", "128", "--repeats", "1", "--long-tokens", "0", "--threads", "2",
               "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("baseline_create_completion_tps", "instrumented_tps", "ratio_vs_create_completion",
                "analysis_ms_per_step_median", "single_vs_bare_decode", "parallel_tps_ratio_8",
                "parallel_vs_bare_batched_8", "gui_vs_headless", "grammar_vs_free", "remote_concurrency_ratio",
                "parallel_tps_ratio_8_shift", "gui_plot_redraws_per_run", "whatif_update_ms", "window_open_s",
                "window_construct_s"):
        assert result[key] > 0, key
    assert result["new_tokens"] == 128
    assert result["window_construct_s"] <= result["window_open_s"]
    assert result["analysis_kernels"]  # llama.cpp's kernels, or numpy and why


def test_bench_refuses_an_unknown_section(capsys):
    assert main(["bench", "--skip", "baseline,nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_generate_against_a_remote_server_prints_the_same_records(capsys, llama_server):
    rc = main(["generate", "--base-url", llama_server.base_url, "--model", llama_server.model,
               "--prompt", "The capital of France is", "--max-tokens", "2", "--temperature", "0",
               "--top-n", "3", "--json"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    steps, summary = lines[:-1], lines[-1]["summary"]
    assert 1 <= len(steps) <= 2
    for s in steps:
        for key in ("index", "token_id", "token", "p_raw", "p_final", "rank", "entropy_raw",
                    "entropy_final", "kl_final_raw", "top"):
            assert key in s
        assert s["estimated"] is True and 0 <= s["unseen_mass"] < 1
        assert s["token_id"] is None  # llama-cpp-python's server gives no token ids
        assert len(s["top"]) >= 1
    assert summary["estimated"] is True and summary["base_url"] == llama_server.base_url
    assert summary["text"] == "".join(s["token"] for s in steps)


def test_generate_remote_refuses_a_missing_key_variable(capsys, monkeypatch):
    monkeypatch.delenv("SAMPLESCOPE_NO_SUCH_KEY", raising=False)
    assert main(["generate", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--prompt", "x",
                 "--api-key-env", "SAMPLESCOPE_NO_SUCH_KEY"]) == 2
    assert "SAMPLESCOPE_NO_SUCH_KEY" in capsys.readouterr().err


def test_shift_json_prints_one_record_per_concept_then_the_summary(capsys, tmp_path):
    from app.labs.shift.concepts import BUILTIN_CONCEPTS, concepts_to_csv

    csv_path = tmp_path / "two.csv"
    concepts_to_csv(BUILTIN_CONCEPTS[3:5], csv_path)
    rc = main(["shift", "--concepts", str(csv_path), "--mode", "exact", "--min-mass", "0.01", "--threads", "2",
               "--json"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    records, summary = lines[:-1], lines[-1]["summary"]
    assert [r["concept_id"] for r in records] == [c.id for c in BUILTIN_CONCEPTS[3:5]]
    for r in records:
        assert set(r) >= {"A", "I", "S", "alpha_hat", "kept", "reason", "S_exact"}
    assert set(summary) >= {"n_used", "fraction", "p_one_sided", "p_two_sided", "r"}
    assert summary["n_total"] == 2 and summary["mode"] == "exact"


def test_shift_refuses_bad_input(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("just,some\nthing,else\n", encoding="utf-8")
    assert main(["shift", "--concepts", str(bad)]) == 2
    assert "name" in capsys.readouterr().err
    assert main(["shift", "--base-url", "http://127.0.0.1:9/v1", "--mode", "exact"]) == 2
    assert "local model" in capsys.readouterr().err


def test_shift_sampled_against_the_remote_server(capsys, llama_server):
    rc = main(["shift", "--base-url", llama_server.base_url, "--limit", "1", "--samples", "2", "--json"])
    assert rc == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (rec,), summary = lines[:-1], lines[-1]["summary"]
    assert rec["mode"] == "sampled" and len(rec["S_answers"]) == 2 and all("raw" in a for a in rec["S_answers"])
    assert summary["n_total"] == 1
