"""The model picker's added folders are an AppSettings field: saved, read back, and checked on load."""

from __future__ import annotations

import json

from app.core.settings import MAX_MODEL_FOLDERS, AppSettings


def test_model_folders_round_trip(tmp_path):
    s = AppSettings()
    assert s.model_folders == []
    assert s.add_model_folder(str(tmp_path / "a")) and s.add_model_folder(tmp_path / "b")
    assert not s.add_model_folder(str(tmp_path / "a"))  # once
    s.save(tmp_path / "settings.json")
    back = AppSettings.load(tmp_path / "settings.json")
    assert back.model_folders == [str(tmp_path / "a"), str(tmp_path / "b")] and back.warning == ""
    back.remove_model_folder(str(tmp_path / "a"))
    assert back.model_folders == [str(tmp_path / "b")]


def test_bad_model_folders_fall_back_with_a_warning(tmp_path):
    p = tmp_path / "settings.json"
    p.write_text(json.dumps({"model_folders": ["ok", 3]}))
    s = AppSettings.load(p)
    assert s.model_folders == [] and "model_folders" in s.warning
    p.write_text(json.dumps({"model_folders": ["x", "x", ""] + [f"f{i}" for i in range(100)]}))
    s = AppSettings.load(p)
    assert s.model_folders[:2] == ["x", "f0"] and len(s.model_folders) == MAX_MODEL_FOLDERS and s.warning == ""
