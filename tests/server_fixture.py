"""Fixtures for the backend tests.

``llama_server``: a real OpenAI-compatible server (llama-cpp-python's ``llama_cpp.server``,
started through ``tests/llama_server_main.py`` so llama.cpp's CPU workarounds apply) on the embedded model, started once per session on a free port of
127.0.0.1 and terminated at the end. It runs with ``--logits_all true`` (needed for logprobs)
and ``--flash_attn true``: the local backend's context uses llama.cpp's default flash-attention
setting ("auto", which is on for this CPU build), and the two only agree to float precision
when both evaluate attention the same way (see tests/backends/test_openai_server.py).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

MODEL_ALIAS = "gemma-3-270m-embedded"
_START_TIMEOUT = 90.0


@dataclass(frozen=True)
class LlamaServer:
    base_url: str
    model: str
    log_path: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(embedded_model, tmp_path_factory):
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("sse_starlette") is None:
        pytest.fail('llama-cpp-python\'s server extras are not installed: pip install -e ".[test]"')
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable, str(Path(__file__).with_name("llama_server_main.py")),
        "--model", str(embedded_model), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "1024", "--n_threads", "2", "--n_threads_batch", "2",
        "--logits_all", "true", "--flash_attn", "true", "--verbose", "false",
    ]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + _START_TIMEOUT
    try:
        with httpx.Client(timeout=0.5) as client:
            while True:
                try:
                    if client.get(f"{base_url}/models").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer within {_START_TIMEOUT:.0f} s")
                try:  # the pause between polls; returns at once if the server died
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError(f"the server exited with code {proc.returncode}")
    except RuntimeError as exc:
        proc.kill()
        proc.wait()
        log.close()
        tail = log_path.read_text(errors="replace")[-2000:]
        pytest.fail(f"llama_cpp.server did not start: {exc}\n{tail}")
    try:
        yield LlamaServer(base_url, MODEL_ALIAS, str(log_path))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def remote(llama_server):
    """An OpenAICompatBackend on the test server, probed once."""
    from backends.openai_compat import OpenAICompatBackend

    backend = OpenAICompatBackend(llama_server.base_url, llama_server.model, read_timeout=120)
    backend.probe(llama_server.model)
    yield backend
    backend.close()
