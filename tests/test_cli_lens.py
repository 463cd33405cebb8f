"""``samplescope lens`` on the embedded model: one JSON record per step with every layer, then a
summary with the self-check's measured difference; a server is refused with the reason."""

from __future__ import annotations

import json

from app.cli import main


def test_lens_prints_one_record_per_step(capsys):
    rc = main(["lens", "--prompt", "The capital of France is", "--max-tokens", "3", "--temperature", "0",
               "--top", "3", "--json"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    records, summary = lines[:-1], lines[-1]["summary"]
    assert [r["index"] for r in records] == [0, 1, 2]
    for r in records:
        assert set(r) >= {"index", "token_id", "token", "commitment_layer", "layers"}
        assert len(r["layers"]) == 18 == summary["n_layers"]
        last = r["layers"][-1]
        assert set(last) >= {"top", "p_chosen", "rank_chosen", "entropy"} and len(last["top"]) == 3
        # greedy: the chosen token is the last layer's favourite, so the model commits at some layer
        assert last["rank_chosen"] == 1 and last["top"][0]["id"] == r["token_id"]
        assert isinstance(r["commitment_layer"], int) and 0 <= r["commitment_layer"] <= 17
        assert all(r["layers"][i]["rank_chosen"] == 1 for i in range(r["commitment_layer"], 18))
    assert summary["n_tokens"] == summary["n_lens"] == 3
    assert summary["check"]["ok"] and summary["check"]["max_abs_logprob_diff"] <= 1e-3
    assert summary["head_memory_bytes"] == 262_144 * 640 * 4


def test_lens_refuses_a_server_with_the_reason(capsys):
    assert main(["lens", "--prompt", "Hi", "--base-url", "http://127.0.0.1:9/v1"]) == 2
    assert "local model" in capsys.readouterr().err
