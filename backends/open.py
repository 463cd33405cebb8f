"""The one place a backend is built: ``open_backend(source)``.

Owns: ``open_backend`` and its generator form ``iter_open`` (progress while the embedded model
is assembled on first use). A ``LocalSource`` gives a ``LlamaCppBackend``: the model loaded
with the source's ``LoadSettings`` (ranges checked), or, with ``model=`` (a ``LlamaModel``
already loaded, e.g. the Workbench's), a new context on it, the weights shared. A
``RemoteConfig`` gives an ``OpenAICompatBackend`` with the key resolved from the environment
variable or the system keyring it names (never stored) and the config's timeouts. The window,
every lab and every command line command build their backends here; nothing else constructs
one (``tests/test_architecture.py`` checks it).

Qt-free. Runs on the thread that will use the backend (the model worker, a lab worker, the
command line's main thread): loading a model takes seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Generator

from .base import ConnectionFailed, LoadSettings
from .sources import LocalSource, RemoteConfig

__all__ = ["open_backend", "iter_open", "Progress"]

Progress = Callable[[int, int, str], None]  # (done, total, what)


def iter_open(source, *, model=None, n_batch: int = 512) -> Generator[tuple[int, int, str], None, object]:
    """``open_backend`` as a generator of ``(done, total, what)`` progress that returns the
    backend (the load job of the window forwards the progress to its progress bar)."""
    if isinstance(source, RemoteConfig):
        return _remote(source)
    if not isinstance(source, LocalSource):
        raise TypeError(f"not a model source: {source!r}")
    from .llama_local import LlamaCppBackend

    load = source.load
    if model is not None:  # a new context on a model that is already loaded
        return LlamaCppBackend(model=model, n_ctx=load.n_ctx, n_threads=load.n_threads or None, n_batch=n_batch)
    path = source.path
    if path is None:
        from .models import iter_embedded_model

        path = yield from iter_embedded_model()
    model_file = Path(path)
    yield 0, 0, f"Loading {model_file.name}…"
    return LlamaCppBackend(model_file, n_ctx=load.n_ctx, n_gpu_layers=load.n_gpu_layers, n_threads=load.n_threads or None,
                           n_batch=n_batch)


def open_backend(source, *, model=None, progress: Progress | None = None, n_batch: int = 512):
    """The backend of ``source`` (see the module docstring). ``BackendError`` subclasses with a
    message for the user: ``ModelLoadError`` (a missing or broken file, bad load settings),
    ``ConnectionFailed`` (a bad address, an unset key variable)."""
    gen = iter_open(source, model=model, n_batch=n_batch)
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(*item)


def _remote(config: RemoteConfig):
    from .openai_compat import OpenAICompatBackend
    from .secrets import resolve_api_key

    try:
        config.validate()
    except ValueError as exc:
        raise ConnectionFailed(str(exc)) from None
    key = resolve_api_key(config.api_key_env or None, config.keyring_entry or None)
    if config.api_key_env and not key:
        raise ConnectionFailed(
            f"The environment variable {config.api_key_env} is not set (or empty). Set it to your API key "
            "before starting Samplescope, or keep the key in the system keyring.")
    return OpenAICompatBackend(config.base_url, config.model or None, api_key=key,
                               connect_timeout=config.connect_timeout, read_timeout=config.read_timeout)


def local_source(path: str | None = None, *, n_ctx: int = 2048, n_gpu_layers: int = 0,
                 n_threads: int = 0) -> LocalSource:
    """A ``LocalSource`` from loose values (checked when it is opened)."""
    return LocalSource(path, LoadSettings(int(n_ctx), int(n_gpu_layers), int(n_threads or 0)))


__all__ += ["local_source"]
