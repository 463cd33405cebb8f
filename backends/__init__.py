"""Qt-free backends: value types and errors (``base``), the llama.cpp backend (``llama_local``),
and the embedded default model (``models``)."""
