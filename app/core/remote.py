"""The presets of common OpenAI-compatible servers.

Owns: ``SERVER_PRESETS`` (the usual base URLs of common servers, with what each reveals). The
connection settings themselves are ``backends.sources.RemoteConfig``. Qt-free.
"""

from __future__ import annotations

__all__ = ["SERVER_PRESETS"]

#: name -> (base URL, a note on what the server reveals)
SERVER_PRESETS: dict[str, tuple[str, str]] = {
    "llama.cpp server": (
        "http://127.0.0.1:8080/v1",
        "Completion and chat logprobs, top-N; accepts top_k, min_p, seed, repeat_penalty and a JSON schema.",
    ),
    "llama-cpp-python server": (
        "http://127.0.0.1:8000/v1",
        "Completion logprobs (legacy lists) when started with --logits_all true; accepts top_k, min_p, seed.",
    ),
    "vLLM": (
        "http://127.0.0.1:8000/v1",
        "Completion and chat logprobs (top-N capped by --max-logprobs, default 20); accepts top_k, min_p, seed, "
        "guided JSON.",
    ),
    "Ollama": (
        "http://127.0.0.1:11434/v1",
        "OpenAI-compatible endpoint; logprobs only in recent versions; seed accepted.",
    ),
    "LM Studio": ("http://127.0.0.1:1234/v1", "OpenAI-compatible endpoint; logprobs depend on the version."),
    "OpenAI": (
        "https://api.openai.com/v1",
        "Chat logprobs with top_logprobs up to 20; no top_k or min_p; seed is best effort.",
    ),
    "Custom": ("", "Any OpenAI-compatible server."),
}
