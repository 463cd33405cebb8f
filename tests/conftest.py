"""Shared pytest setup.

- Qt draws offscreen, so GUI tests need no display (set before anything imports Qt).
- Config, data and cache directories point into one temporary folder for the whole session,
  so tests never touch the user's real settings, history or model cache.
- ``embedded_model`` assembles the embedded Gemma 3 270M once per session (from the PyPI
  chunk packages, offline) and ``local_backend`` loads it once for every backend test.
"""

import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
_ROOT = tempfile.mkdtemp(prefix="samplescope-tests-")
for _var, _sub in (("SAMPLESCOPE_CONFIG_DIR", "config"), ("SAMPLESCOPE_DATA_DIR", "data"),
                   ("SAMPLESCOPE_CACHE_DIR", "cache")):
    os.environ[_var] = os.path.join(_ROOT, _sub)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def embedded_model():
    from backends.models import ensure_embedded_model

    return ensure_embedded_model()


@pytest.fixture(scope="session")
def local_backend(embedded_model):
    from backends.llama_local import LlamaCppBackend

    backend = LlamaCppBackend(embedded_model, n_ctx=1024, n_threads=2)
    yield backend
    backend.close()


# a real OpenAI-compatible server on 127.0.0.1 (llama-cpp-python's), shared by the backend and GUI tests
from tests.server_fixture import llama_server, remote  # noqa: E402,F401
# a hostile OpenAI-compatible server on 127.0.0.1, one fault mode per path (the fault suite)
from tests.fault_server import fault_server  # noqa: E402,F401
