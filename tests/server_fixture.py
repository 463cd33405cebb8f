"""Fixtures for the backend tests.

``llama_server``: a real OpenAI-compatible server (llama-cpp-python's ``llama_cpp.server``,
started by ``backends.local_server`` so llama.cpp's CPU workarounds apply) on the embedded model,
started once per session on a free port of 127.0.0.1 and terminated at the end. It runs with
``--logits_all true`` (needed for logprobs)
and ``--flash_attn true``: the local backend's context uses llama.cpp's default flash-attention
setting ("auto", which is on for this CPU build), and the two only agree to float precision
when both evaluate attention the same way (see tests/backends/test_openai_server.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

MODEL_ALIAS = "gemma-3-270m-embedded"


@dataclass(frozen=True)
class LlamaServer:
    base_url: str
    model: str
    log_path: str


@pytest.fixture(scope="session")
def llama_server(embedded_model, tmp_path_factory):
    from backends.local_server import ServerUnavailable, start_local_server

    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    try:
        server = start_local_server(embedded_model, log_path, alias=MODEL_ALIAS, n_ctx=1024, n_threads=2,
                                    extra=("--logits_all", "true", "--flash_attn", "true"))
    except ServerUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield LlamaServer(server.base_url, MODEL_ALIAS, str(log_path))
    finally:
        server.close()


@pytest.fixture(scope="session")
def remote(llama_server):
    """An OpenAICompatBackend on the test server, probed once."""
    from backends.openai_compat import OpenAICompatBackend

    backend = OpenAICompatBackend(llama_server.base_url, llama_server.model, read_timeout=120)
    backend.probe(llama_server.model)
    yield backend
    backend.close()
