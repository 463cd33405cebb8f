"""Start llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) with the
llama.cpp workarounds of ``backends.llama_local`` applied first (AMX weight repacking off on
CPUs where llama.cpp's AMX kernels crash). The arguments are the server's own.

Run by the ``llama_server`` fixture as a script: ``python tests/llama_server_main.py --model ...``.
"""

from backends.llama_local import load_llama_cpp

load_llama_cpp()

from llama_cpp.server.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main()
