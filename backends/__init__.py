"""Qt-free backends, the only code that talks to llama.cpp or to a server: value types and errors
(``base``), the llama.cpp engine (``llama_engine``, with ``llama_runtime``, ``grammar``, ``chat``)
and the Workbench's backend on it (``llama_local``), OpenAI-compatible servers
(``openai_compat``), the one place backends are built (``open``, with ``sources`` and
``secrets``), the embedded default model (``models``), the benchmark's baselines and local
server (``baselines``, ``local_server``) and the names of both kinds in annotations (``kinds``)."""
