"""``samplescope models``: what the model picker finds, headless (fake layouts in tmp_path, HOME and the
model variables pointed there so nothing of this computer's own models is listed)."""

from __future__ import annotations

import json

from app.cli import main
from app.core.settings import AppSettings
from tests.backends.test_discovery import home, make_hf_repo, model, put  # noqa: F401 - the fixture

KEYS = ["path", "source", "name", "architecture", "size_label", "quantization", "file_size", "context_length",
        "error"]


def test_models_json_lists_a_folder_and_the_usual_places(home, tmp_path, monkeypatch, capsys):  # noqa: F811
    folder = tmp_path / "mine"
    good = put(folder / "sub" / "Good-1B-Q4_K_M.gguf", model("llama", ftype=15, ctx=4096, size_label="1B"))
    put(folder / "broken.gguf", b"GGUF\x03\x00\x00\x00")
    make_hf_repo(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["models", "--folder", str(folder), "--json", "--no-saved-folders"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert isinstance(records, list) and all(list(r) == KEYS for r in records)
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {"sub/Good-1B-Q4_K_M.gguf", "broken.gguf", "org/tiny-GGUF/tiny-Q4_K_M.gguf",
                            "org/tiny-GGUF/old-Q8_0.gguf", "org/tiny-GGUF/gone.gguf"}
    assert by_name["sub/Good-1B-Q4_K_M.gguf"] == {
        "path": str(good), "source": "folder", "name": "sub/Good-1B-Q4_K_M.gguf", "architecture": "llama",
        "size_label": "1B", "quantization": "Q4_K_M", "file_size": good.stat().st_size, "context_length": 4096,
        "error": None}
    broken = by_name["broken.gguf"]
    assert "truncated" in broken["error"] and broken["architecture"] is None
    assert by_name["org/tiny-GGUF/tiny-Q4_K_M.gguf"]["source"] == "huggingface"


def test_models_includes_the_folders_saved_by_the_picker(home, tmp_path, capsys):  # noqa: F811
    saved = tmp_path / "saved"
    put(saved / "s.gguf", model())
    s = AppSettings.load()
    s.add_model_folder(str(saved))
    s.save()
    try:
        assert main(["models", "--json"]) == 0
        assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["s.gguf"]
        assert main(["models", "--json", "--no-saved-folders"]) == 0
        assert json.loads(capsys.readouterr().out) == []
    finally:
        s.remove_model_folder(str(saved))
        s.save()


def test_models_table_and_a_missing_folder(home, tmp_path, capsys):  # noqa: F811
    folder = tmp_path / "mine"
    put(folder / "Good-1B-Q4_K_M.gguf", model())
    put(folder / "esc\x1b[31m.gguf", b"plain text")
    assert main(["models", "--folder", str(folder), "--no-saved-folders"]) == 0
    out = capsys.readouterr().out
    assert "Good-1B-Q4_K_M.gguf" in out and "Q4_K_M" in out and "4,096" in out
    assert "cannot be used: esc?[31m.gguf is not a GGUF model" in out and "\x1b" not in out
    assert "2 model(s) found, 1 of them cannot be used" in out
    assert "huggingface" in out and "(not there)" in out  # the places searched
    assert main(["models", "--folder", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
