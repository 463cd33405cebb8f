"""A real OpenAI-compatible server on 127.0.0.1 for a local GGUF file (tests and ``samplescope bench``).

Owns: ``start_local_server`` (llama-cpp-python's ``llama_cpp.server`` in a child process on a free
port, with this project's llama.cpp workarounds applied first, e.g. AMX weight repacking off on
CPUs where its kernels crash; returns once the server answers ``/models``) and ``LocalServer``
(its address, its log file, ``close()``). ``python -m backends.local_server ARGS`` runs the server
itself with the workarounds (ARGS are the server's own).

Needs llama-cpp-python's server extras (``pip install "llama-cpp-python[server]"``, part of this
project's test extras); ``ServerUnavailable`` says so in words when they are missing or when the
server does not start. Qt-free; the caller's thread waits for the start.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["start_local_server", "LocalServer", "ServerUnavailable"]

START_TIMEOUT_S = 90.0


class ServerUnavailable(RuntimeError):
    """The local server could not be started (the message says why)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalServer:
    base_url: str  # ends with /v1
    model: str  # the alias requests name
    log_path: str
    proc: subprocess.Popen = field(repr=False)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_local_server(model: str | Path, log_path: str | Path, *, alias: str = "local-model", n_ctx: int = 1024,
                       n_threads: int = 2, extra: tuple[str, ...] = ()) -> LocalServer:
    """Start the server for ``model`` (its output goes to ``log_path``) and wait until it answers."""
    import httpx

    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("sse_starlette") is None:
        raise ServerUnavailable('llama-cpp-python\'s server extras are not installed: pip install '
                                '"llama-cpp-python[server]" (or this project\'s test extras: pip install -e ".[test]")')
    port = _free_port()
    cmd = [sys.executable, "-m", "backends.local_server", "--model", str(Path(model).resolve()), "--model_alias", alias,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
           "--n_threads_batch", str(n_threads), "--verbose", "false", *extra]
    log = open(log_path, "wb")
    root = Path(__file__).resolve().parent.parent  # so -m backends.local_server finds this package
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root)
    log.close()  # the child holds its own handle
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        with httpx.Client(timeout=0.5) as client:
            while True:
                try:
                    if client.get(f"{base_url}/models").status_code == 200:
                        return LocalServer(base_url, alias, str(log_path), proc)
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerUnavailable(f"the server did not answer within {START_TIMEOUT_S:.0f} s")
                try:  # the pause between polls; returns at once if the server died
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
                raise ServerUnavailable(f"the server exited with code {proc.returncode}")
    except BaseException as exc:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if isinstance(exc, ServerUnavailable):
            tail = Path(log_path).read_text(errors="replace")[-2000:]
            raise ServerUnavailable(f"llama_cpp.server did not start: {exc}\n{tail}") from None
        raise


def _main() -> None:
    from .llama_runtime import load_llama_cpp

    load_llama_cpp()  # the CPU workarounds, before the server loads the model
    from llama_cpp.server.__main__ import main

    main()


if __name__ == "__main__":
    _main()
