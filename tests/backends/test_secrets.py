"""Tests for backends.secrets: environment first, then the keyring; a machine without a keyring
gives a reason, never a crash; redaction; and a resolved key never reaches settings.json or the
run store. The real system keyring is never touched: every test runs with an in-memory backend
(or a failing one) set by ``keyring.set_keyring`` and restored afterwards."""

from __future__ import annotations

import logging

import keyring
import keyring.backend
import keyring.errors
import pytest
from keyring.backends import fail, null

from backends import secrets
from backends.secrets import (
    MASK,
    SERVICE,
    KeyringUnavailableError,
    delete_from_keyring,
    keyring_available,
    redact,
    resolve_api_key,
    store_in_keyring,
)

KEY = "sk-live-Zq9w8e7r6t5y4u3i2o1p"
ENV = "SAMPLESCOPE_TEST_API_KEY"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that keeps passwords in a dict (tests only)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        try:
            del self.store[(service, username)]
        except KeyError:
            raise keyring.errors.PasswordDeleteError("no such password") from None


class LockedKeyring(MemoryKeyring):
    """A keyring whose every call fails, like a locked collection or a dismissed unlock prompt."""

    def get_password(self, service, username):
        raise keyring.errors.KeyringLocked(f"collection locked ({KEY})")

    set_password = delete_password = get_password  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def memory_keyring(monkeypatch):
    previous = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    monkeypatch.delenv(ENV, raising=False)
    yield kr
    keyring.set_keyring(previous)


# -- where the key comes from ------------------------------------------------------------------


def test_environment_variable_comes_first(monkeypatch, memory_keyring):
    memory_keyring.store[(SERVICE, "openai")] = "from-keyring"
    monkeypatch.setenv(ENV, f"  {KEY}\n")
    assert resolve_api_key(ENV, "openai") == KEY  # stripped of the pasted newline


def test_keyring_is_used_when_the_variable_is_unset_or_blank(monkeypatch, memory_keyring):
    memory_keyring.store[(SERVICE, "openai")] = KEY
    assert resolve_api_key(ENV, "openai") == KEY
    monkeypatch.setenv(ENV, "   ")
    assert resolve_api_key(ENV, "openai") == KEY
    assert resolve_api_key(None, "openai") == KEY
    assert resolve_api_key("", "openai") == KEY


def test_no_key_anywhere_gives_none(memory_keyring):
    assert resolve_api_key(ENV, "missing") is None
    assert resolve_api_key(None, None) is None
    assert resolve_api_key(ENV, None) is None
    assert resolve_api_key(None, "  ") is None
    memory_keyring.store[(SERVICE, "blank")] = " "
    assert resolve_api_key(None, "blank") is None


def test_store_and_delete_use_the_samplescope_service(memory_keyring):
    store_in_keyring("vllm-box", f"{KEY}\n")
    assert memory_keyring.store == {(SERVICE, "vllm-box"): KEY}
    assert resolve_api_key(None, "vllm-box") == KEY
    store_in_keyring("vllm-box", "replaced")
    assert resolve_api_key(None, "vllm-box") == "replaced"
    assert delete_from_keyring("vllm-box") is True
    assert delete_from_keyring("vllm-box") is False  # already gone
    assert resolve_api_key(None, "vllm-box") is None


def test_store_rejects_empty_names_and_keys():
    with pytest.raises(ValueError):
        store_in_keyring("", KEY)
    with pytest.raises(ValueError):
        store_in_keyring("entry", "  ")
    with pytest.raises(ValueError):
        delete_from_keyring(" ")


# -- no keyring on this machine ----------------------------------------------------------------


def test_available_with_a_working_backend():
    ok, reason = keyring_available()
    assert ok is True and "keyring" in reason


@pytest.mark.parametrize("backend, words", [(fail.Keyring(), "No system keyring"), (null.Keyring(), "switched off")])
def test_no_backend_gives_a_reason_and_never_crashes(monkeypatch, backend, words):
    keyring.set_keyring(backend)
    monkeypatch.setenv(ENV, KEY)
    ok, reason = keyring_available()
    assert ok is False and words in reason and "environment variable" in reason
    # resolving still works from the environment, and quietly finds nothing in the keyring
    assert resolve_api_key(ENV, "openai") == KEY
    assert resolve_api_key(None, "openai") is None
    with pytest.raises(KeyringUnavailableError, match=words):
        store_in_keyring("openai", KEY)
    with pytest.raises(KeyringUnavailableError, match=words):
        delete_from_keyring("openai")


def test_a_locked_keyring_is_reported_without_the_key(caplog):
    keyring.set_keyring(LockedKeyring())
    with caplog.at_level(logging.DEBUG, logger="backends.secrets"):
        assert resolve_api_key(None, "openai") is None
    with pytest.raises(KeyringUnavailableError) as info:
        store_in_keyring("openai", KEY)
    assert "Unlock" in str(info.value) and KEY not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no traceback quotes it
    with pytest.raises(KeyringUnavailableError):
        delete_from_keyring("openai")
    assert KEY not in caplog.text


def test_missing_keyring_library_gives_a_reason(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_keyring(name, *args, **kwargs):
        if name == "keyring" or name.startswith("keyring."):
            raise ImportError("No module named 'keyring'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_keyring)
    ok, reason = keyring_available()
    assert ok is False and "not installed" in reason
    assert resolve_api_key(None, "openai") is None


def test_module_imports_keyring_lazily():
    import subprocess
    import sys

    code = "import sys, backends.secrets; print('keyring' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(secrets.__file__).resolve().parents[2]))
    assert out.stdout.strip() == "False"


# -- redaction ---------------------------------------------------------------------------------


def test_redact_masks_every_secret_and_its_url_encoded_form():
    odd = "ab+c/d=e f"
    text = f"POST failed: Bearer {KEY} sent to https://h/v1?key={KEY} and {odd} / ab%2Bc%2Fd%3De%20f / ab%2Bc%2Fd%3De+f"
    out = redact(text, KEY, odd)
    assert KEY not in out and odd not in out and "%2B" not in out
    assert out.count(MASK) == 5 and MASK == "\u2022\u2022\u2022\u2022"
    assert out.startswith("POST failed: Bearer \u2022\u2022\u2022\u2022 sent to https://h/v1?key=")


def test_redact_ignores_empty_secrets_and_prefers_longer_ones():
    assert redact("nothing to hide", None, "") == "nothing to hide"
    assert redact("", KEY) == ""
    assert redact(f"x{KEY}y", KEY[:6], KEY) == f"x{MASK}y"  # the short one is inside the long one


# -- secrets never reach the files --------------------------------------------------------------


def test_a_resolved_key_reaches_neither_settings_nor_run_store(tmp_path, monkeypatch):
    from app.core.settings import AppSettings
    from app.core.store import RunStore
    from app.core.trace import Trace
    from backends.base import Finished, SamplerSettings, Step, TokenAlt

    monkeypatch.setenv(ENV, KEY)
    key = resolve_api_key(ENV, None)
    assert key == KEY

    # settings.json: even a settings dict that carries the key (an old or hand-edited file)
    # is saved without it
    settings = AppSettings.from_dict({"api_key": key, "preset_name": "remote", "last_model_path":
                                      "https://api.example.com/v1"})
    settings.sampler_settings = SamplerSettings(temperature=0.0)
    settings_file = tmp_path / "config" / "settings.json"
    settings.save(settings_file)
    assert settings_file.exists()
    assert AppSettings.load(settings_file).preset_name == "remote"

    # the run store: a run whose remote location carried the key in its user info and query
    step = Step(index=0, position=3, token_id=None, token=" hi", piece=" hi", p_raw=0.5, p_final=1.0, rank=1,
                entropy_raw=0.7, entropy_final=0.0, kl_final_raw=0.69,
                top=(TokenAlt(None, " hi", 0.5, 1.0), TokenAlt(None, " yo", 0.2, 0.0)),
                estimated=True, unseen_mass=0.3)
    trace = Trace(prompt="Say hi", settings=SamplerSettings(temperature=0.0), model_name="remote-model")
    trace.append(step)
    trace.finished = Finished(reason="length", text=" hi", n_tokens=1, seconds=0.1)
    db = tmp_path / "data" / "runs.sqlite3"
    with RunStore(db) as store:
        run_id = store.save_run(trace, f"https://user:{key}@api.example.com/v1?api_key={key}", "remote-model")
        assert store.load_run(run_id).text == " hi"

    files = [settings_file] + sorted(db.parent.glob("runs.sqlite3*"))
    assert db in files
    for f in files:
        raw = f.read_bytes()
        for form in (key.encode(), key.encode("utf-16-le")):
            assert form not in raw, f"the key was written to {f.name}"
    assert "api.example.com" in db.read_bytes().decode("latin-1")  # the run itself was saved
