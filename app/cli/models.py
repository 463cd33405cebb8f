"""``samplescope models``: the GGUF models already on this computer, as the window's picker lists them.

Owns ``cmd_models``: searches the Hugging Face cache, LM Studio, Ollama, llama.cpp's cache, the
folders added in the window's picker (saved in the settings) and every ``--folder``
(``backends.discovery``, headers read without loading a model), then prints a table, or with
``--json`` one JSON list of records (``path, source, name, architecture, size_label,
quantization, file_size, context_length, error``; ``error`` is null for a usable file, else one
line saying why it cannot be used). Main thread; no Qt, no model loaded.
"""

from __future__ import annotations

import argparse
import os

from .scaffold import UsageError, dumps

__all__ = ["cmd_models"]


def _folders(a: argparse.Namespace) -> list[str]:
    """The saved picker folders, then ``--folder`` (each must be a folder)."""
    from app.core.settings import AppSettings

    given = []
    for folder in a.folder or []:
        path = os.path.expanduser(folder)
        if not os.path.isdir(path):
            raise UsageError(f"--folder {folder}: no such folder")
        given.append(path)
    saved = [] if a.no_saved_folders else AppSettings.load().model_folders
    return list(dict.fromkeys([*saved, *given]))


def _printable(text: str) -> str:
    """A file or model name for the terminal: control characters (escape sequences) shown as '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def cmd_models(a: argparse.Namespace) -> int:
    from backends.discovery import iter_models, locations

    folders = _folders(a)
    found = list(iter_models(folders, cancel=a.cancel))
    rc = 130 if a.cancel is not None and a.cancel.is_set() else 0
    if a.json:
        print(dumps([m.to_dict() for m in found]))
        return rc
    rows = [(_printable(m.name), m.source, m.architecture or "-", m.size_label or "-", m.quantization or "-",
             m.file_size_text, "-" if m.context_length is None else f"{m.context_length:,}") for m in found]
    head = ("NAME", "SOURCE", "ARCH", "SIZE", "QUANT", "FILE SIZE", "CONTEXT")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    widths[0] = min(widths[0], 60)
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    if found:
        print(line.format(*head))
    for m, row in zip(found, rows):
        print(line.format(*row) if m.error is None else f"{row[0]:<{widths[0]}}  {m.source:<{widths[1]}}  "
              f"cannot be used: {_printable(m.error)}")
        print(f"    {_printable(m.path)}")
    bad = sum(m.error is not None for m in found)
    print(f"\n{len(found)} model(s) found" + (f", {bad} of them cannot be used" if bad else "") + ". Searched:")
    for loc in locations(folders):
        there = "" if loc.path.is_dir() else "  (not there)"
        print(f"  {loc.source:<12} {_printable(str(loc.path))}{there}")
    if not found:
        print("Add a folder with --folder DIR (or 'Add folder…' in the window's model picker).")
    return rc
