"""Tests for app.core.settings (AppSettings) and app.core.paths."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from app.core import paths
from app.core.settings import MAX_RECENT, AppSettings, settings_path
from backends.base import SamplerSettings


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLESCOPE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SAMPLESCOPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SAMPLESCOPE_CACHE_DIR", str(tmp_path / "cache"))


def test_dirs_follow_env_and_are_created(tmp_path):
    assert paths.config_dir() == tmp_path / "config"
    assert paths.data_dir() == tmp_path / "data"
    assert paths.cache_dir() == tmp_path / "cache"
    for name in ("config", "data", "cache"):
        assert (tmp_path / name).is_dir()
    assert settings_path() == tmp_path / "config" / "settings.json"


def test_dirs_default_to_platformdirs(monkeypatch, tmp_path):
    import platformdirs
    monkeypatch.delenv("SAMPLESCOPE_CACHE_DIR")
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app, appauthor=None: str(tmp_path / "pd" / app))
    assert paths.cache_dir() == tmp_path / "pd" / "samplescope"
    assert paths.cache_dir().is_dir()


def test_defaults():
    s = AppSettings()
    assert s.n_ctx == 2048
    assert s.n_gpu_layers == 0
    assert s.n_threads == min(4, os.cpu_count() or 1)
    assert s.recent_models == [] and s.last_model_path is None
    assert s.sampler_settings == SamplerSettings()
    assert s.warning == ""


def test_no_secret_fields():
    names = {f.name.lower() for f in dataclasses.fields(AppSettings)}
    for word in ("key", "secret", "token", "password", "auth"):
        assert not any(word in n for n in names), names


def test_missing_file_gives_defaults_without_warning():
    s = AppSettings.load()
    assert s == AppSettings() and s.warning == ""


def test_save_load_round_trip():
    s = AppSettings(last_model_path="/m/a.gguf", n_ctx=4096, n_gpu_layers=-1, n_threads=2,
                    preset_name="Creative", top_n=30, palette="viridis", show_whitespace=True, step_mode=True)
    s.sampler_settings = SamplerSettings(temperature=1.3, top_k=0, stop=("\n",))
    s.add_recent("/m/a.gguf")
    s.save()
    data = json.loads(settings_path().read_text(encoding="utf-8"))
    assert "warning" not in data and data["version"] == 1
    back = AppSettings.load()
    assert back == s and back.warning == ""
    assert back.sampler_settings == SamplerSettings(temperature=1.3, top_k=0, stop=("\n",))


def test_save_is_atomic(monkeypatch):
    AppSettings(n_ctx=1000).save()
    target = settings_path()

    def no_space(*args):
        raise OSError("no space")

    with monkeypatch.context() as m:  # undo only this patch, not the isolated dirs
        m.setattr(paths.os, "replace", no_space)
        with pytest.raises(OSError):
            AppSettings(n_ctx=3000).save()
    assert json.loads(target.read_text(encoding="utf-8"))["n_ctx"] == 1000
    assert [p.name for p in target.parent.iterdir()] == ["settings.json"]  # no temp file left


@pytest.mark.parametrize("content", ["{not json", "[1, 2, 3]", "\x00\x01garbage", ""])
def test_corrupt_file_gives_defaults_and_warning(content):
    settings_path().write_text(content, encoding="utf-8")
    s = AppSettings.load()
    assert s == AppSettings()
    assert s.warning and str(settings_path()) in s.warning and "default" in s.warning
    assert (settings_path().parent / "settings.json.corrupt").exists()  # kept for the user
    s.save()
    assert AppSettings.load().warning == ""


def test_undecodable_file_gives_warning():
    settings_path().write_bytes(b"\xff\xfe\xfa not utf-8")
    s = AppSettings.load()
    assert s == AppSettings() and s.warning


def test_bad_values_reset_individually():
    settings_path().write_text(json.dumps({
        # -3 threads: outside LoadSettings' range, shared with the command line (0 would mean automatic)
        "n_ctx": "big", "n_threads": -3, "top_n": 8, "show_whitespace": 1, "palette": "dark",
        "sampler": {"temperature": 99.0}, "recent_models": ["a", 3],
        "api_key": "sk-should-be-ignored", "unknown": True,
    }), encoding="utf-8")
    s = AppSettings.load()
    assert s.top_n == 8 and s.palette == "dark"
    assert s.n_ctx == 2048 and s.n_threads == AppSettings().n_threads and s.show_whitespace is False
    assert s.sampler == SamplerSettings().to_dict() and s.recent_models == []
    for name in ("n_ctx", "n_threads", "show_whitespace", "sampler", "recent_models"):
        assert name in s.warning
    s.save()
    assert "sk-should-be-ignored" not in settings_path().read_text(encoding="utf-8")


def test_add_recent_dedupes_and_limits():
    s = AppSettings()
    for i in range(15):
        s.add_recent(f"/models/{i}.gguf")
    assert len(s.recent_models) == MAX_RECENT == 10
    assert s.recent_models[0] == "/models/14.gguf" and s.recent_models[-1] == "/models/5.gguf"
    s.add_recent("/models/9.gguf")
    assert s.recent_models[0] == "/models/9.gguf"
    assert s.recent_models.count("/models/9.gguf") == 1 and len(s.recent_models) == 10
    s.add_recent("")
    assert s.recent_models[0] == "/models/9.gguf"
    s.remove_recent("/models/9.gguf")
    assert "/models/9.gguf" not in s.recent_models


def test_loaded_recent_list_is_cleaned():
    settings_path().write_text(json.dumps({"recent_models": ["a", "b", "a", ""] + [str(i) for i in range(20)]}), encoding="utf-8")
    s = AppSettings.load()
    assert s.recent_models[:3] == ["a", "b", "0"] and len(s.recent_models) == MAX_RECENT
    assert s.warning == ""
