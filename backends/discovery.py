"""Finding the GGUF models already on this computer, and what each one is, without loading any.

Owns: ``locations`` (where other tools keep their models: the Hugging Face cache, LM Studio,
Ollama, llama.cpp's own cache, and the folders the user adds), ``iter_models`` / ``find_models``
(every GGUF file found there, each once: a Hugging Face blob reached from two snapshots, an
Ollama blob named by two tags and the shards of a split model are one entry) and ``FoundModel``
(path, source, display name, and from the GGUF header alone: architecture, size label,
quantization, context length; the file size; or a one-line reason the file cannot be used).
The headers are read by ``backends.gguf_header`` (bounded reads, no tensor data).

The layouts read:

- Hugging Face: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``,
  else ``~/.cache/huggingface/hub``; ``models--ORG--NAME/snapshots/REV/**.gguf``, usually links
  into ``blobs/``; named ``ORG/NAME/FILE``. When one file name is in several revisions, the
  revision ``refs/main`` names wins.
- LM Studio: ``~/.lmstudio/models`` and the older ``~/.cache/lm-studio/models``;
  ``PUBLISHER/REPO/FILE.gguf``, named by that path.
- Ollama: ``OLLAMA_MODELS``, else ``~/.ollama/models`` (and, on Linux, the system service's
  ``/usr/share/ollama/.ollama/models``); ``manifests/HOST/NAMESPACE/NAME/TAG`` JSON files whose
  layer of media type ``application/vnd.ollama.image.model`` names the blob ``sha256:HEX``,
  stored as ``blobs/sha256-HEX``; named ``NAME:TAG`` (``NAMESPACE/NAME:TAG`` outside the
  library, ``HOST/NAMESPACE/NAME:TAG`` for another registry).
- llama.cpp: ``LLAMA_CACHE``, else (as llama.cpp's ``fs_get_cache_directory``) on Linux and the
  BSDs ``$XDG_CACHE_HOME/llama.cpp`` or ``~/.cache/llama.cpp``, on macOS
  ``~/Library/Caches/llama.cpp``, on Windows ``%LOCALAPPDATA%\\llama.cpp``; the files ``-hf``
  downloaded before 2026 (``ORG_REPO_FILE.gguf``, named through the ``manifest=ORG=REPO=TAG.json``
  beside them) and the Hugging Face layout newer llama.cpp writes there.
- Added folders: searched recursively, ``MAX_DEPTH`` folders deep, hidden folders skipped, at
  most ``MAX_ENTRIES`` entries per folder.

Vision projectors (``general.architecture`` "clip", llama.cpp's mmproj files) are not models of
their own and are left out. Qt-free; runs on the thread that calls it: the model picker's
discovery worker, or the main thread of ``samplescope models``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from .base import ModelLoadError
from .gguf_header import GGUFHeader, read_header

__all__ = ["FoundModel", "Location", "locations", "iter_models", "find_models", "quantization_name",
           "LLAMA_FTYPES", "SOURCES", "MAX_DEPTH", "MAX_ENTRIES", "OLLAMA_SYSTEM_MODELS"]

#: the sources, in the order they are searched (the first to find a file names it)
SOURCES = ("huggingface", "lmstudio", "ollama", "llama.cpp", "folder")
#: how many folders deep an added folder is searched
MAX_DEPTH = 6
#: the most directory entries looked at in one location
MAX_ENTRIES = 50_000
#: where Ollama's Linux install script keeps the service's models
OLLAMA_SYSTEM_MODELS = Path("/usr/share/ollama/.ollama/models")

#: llama.cpp's ``enum llama_ftype`` (``general.file_type``): the names without LLAMA_FTYPE_(ALL|MOSTLY)_
LLAMA_FTYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}
_FTYPE_GUESSED = 1024  # llama.cpp's flag for a file type it guessed

_OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
_OLLAMA_REGISTRY = "registry.ollama.ai"
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_QUANT_IN_NAME = re.compile(
    r"(?<![A-Za-z0-9])(MXFP4(?:_MOE)?|I?Q\d(?:_[KSMLXN0-9]+)*|TQ\d_\d|BF16|FP?16|FP?32)(?![A-Za-z0-9])",
    re.IGNORECASE)
_SIZE_IN_NAME = re.compile(r"(?<![A-Za-z0-9.])((?:\d+x)?\d+(?:\.\d+)?[BM])(?![A-Za-z0-9])", re.IGNORECASE)
_MANIFEST_BYTES = 1 << 20  # an Ollama manifest or a llama.cpp manifest is a few hundred bytes


@dataclass(frozen=True, slots=True)
class Location:
    """A place models are looked for: its source (one of ``SOURCES``) and folder."""

    source: str
    path: Path


@dataclass(frozen=True, slots=True)
class FoundModel:
    """One model found on disk. ``path`` is the file to load (the first part of a split model);
    ``file_size`` the bytes on disk (all parts of a split model); the header fields are None
    when the header does not say; ``error`` is None for a usable file, else one line saying why
    it cannot be used (then the header fields are None, or what its first part's header says)."""

    path: str
    source: str
    name: str
    architecture: str | None = None
    size_label: str | None = None
    quantization: str | None = None
    file_size: int | None = None
    context_length: int | None = None
    error: str | None = None
    parts: int = 1

    @property
    def file_size_text(self) -> str:
        """The file size for people: "253.1 MB" ("-" when unknown), as the model card writes it."""
        if self.file_size is None:
            return "-"
        x = float(self.file_size)
        for unit in ("B", "KB", "MB", "GB"):
            if x < 1000:
                return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
            x /= 1000
        return f"{x:.1f} TB"

    def to_dict(self) -> dict:
        """The JSON form of ``samplescope models --json``."""
        return {"path": self.path, "source": self.source, "name": self.name, "architecture": self.architecture,
                "size_label": self.size_label, "quantization": self.quantization, "file_size": self.file_size,
                "context_length": self.context_length, "error": self.error}


# --------------------------------------------------------------------------------- where

def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name, "")
    return Path(os.path.expanduser(value)) if value else None


def locations(folders: Iterable[str | os.PathLike] = (), *, environ: Mapping[str, str] | None = None,
              home: Path | None = None, platform: str | None = None) -> list[Location]:
    """Every place to look, in search order: the usual locations of each tool (honouring
    ``HF_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME``, ``OLLAMA_MODELS``, ``LLAMA_CACHE``,
    ``LOCALAPPDATA``), then ``folders``. Folders that do not exist are listed too (the search
    passes over them)."""
    env = os.environ if environ is None else environ
    home = Path(os.path.expanduser("~")) if home is None else home
    platform = sys.platform if platform is None else platform
    xdg = _env_path(env, "XDG_CACHE_HOME")
    cache = xdg or home / ".cache"
    out: list[Location] = []
    hub = (_env_path(env, "HF_HUB_CACHE") or _env_path(env, "HUGGINGFACE_HUB_CACHE")
           or ((_env_path(env, "HF_HOME") or cache / "huggingface") / "hub"))
    out.append(Location("huggingface", hub))
    out.append(Location("lmstudio", home / ".lmstudio" / "models"))
    out.append(Location("lmstudio", home / ".cache" / "lm-studio" / "models"))
    ollama = _env_path(env, "OLLAMA_MODELS")
    out.append(Location("ollama", ollama or home / ".ollama" / "models"))
    if ollama is None and platform.startswith("linux"):
        out.append(Location("ollama", OLLAMA_SYSTEM_MODELS))
    llama = _env_path(env, "LLAMA_CACHE")
    if llama is None:
        if platform == "darwin":
            llama = home / "Library" / "Caches" / "llama.cpp"
        elif platform.startswith("win"):
            local = _env_path(env, "LOCALAPPDATA")
            llama = (local or home / "AppData" / "Local") / "llama.cpp"
        else:  # Linux, the BSDs, AIX
            llama = cache / "llama.cpp"
    out.append(Location("llama.cpp", llama))
    for folder in folders:
        out.append(Location("folder", Path(os.path.expanduser(os.fspath(folder)))))
    return out


# --------------------------------------------------------------------------------- what

def quantization_name(file_type: int | None, *names: str) -> str | None:
    """The quantization by llama.cpp's name for ``general.file_type`` (Q4_K_M, IQ2_XS, BF16 ...),
    else the last quantization-like word of ``names`` (file names, an Ollama tag), else None."""
    if file_type is not None:
        name = LLAMA_FTYPES.get(file_type & ~_FTYPE_GUESSED)
        if name:
            return name
    for text in names:
        found = _QUANT_IN_NAME.findall(text)
        if found:
            return found[-1].upper()
    return None


def _size_from_names(*names: str) -> str | None:
    for text in names:
        m = _SIZE_IN_NAME.search(text)
        if m:
            return m.group(1).upper()
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(path: Path, source: str, name: str, parts: list[Path] | None = None, expected_parts: int = 1,
              first_part: int = 1) -> FoundModel | None:
    """The record of one model (``parts``: its files, the first one first; a split model expects
    ``expected_parts`` of them, starting at part 1); None for a vision projector."""
    parts = parts or [path]
    stems = (name, path.name)
    size: int | None = 0
    for part in parts:
        try:
            size = (size or 0) + part.stat().st_size
        except OSError:
            size = None
            break
    error: str | None = None
    header: GGUFHeader | None = None
    try:
        if os.path.islink(path) and not os.path.exists(path):
            raise ModelLoadError(f"{path.name} links to {os.path.realpath(path)}, which does not exist "
                                 "(an unfinished or deleted download?).")
        header = read_header(path)
        for part in parts[1:]:
            read_header(part, tensors=True)
    except ModelLoadError as exc:
        error = _one_line(str(exc))
    if error is None and first_part != 1:
        error = (f"{path.name} is incomplete: part 1 of its {expected_parts} parts is missing (llama.cpp loads "
                 "a split model from its first part).")
    elif error is None and len(parts) < expected_parts:
        error = f"{path.name} is incomplete: {len(parts)} of its {expected_parts} parts are here."
    if header is None:
        return FoundModel(str(path), source, name, file_size=size, error=error, parts=len(parts))
    arch = header.text("general.architecture")
    if arch == "clip":
        return None
    return FoundModel(
        path=str(path), source=source, name=name, architecture=arch,
        size_label=header.text("general.size_label") or _size_from_names(*stems),
        quantization=quantization_name(header.integer("general.file_type"), *stems),
        file_size=size, context_length=header.integer(f"{arch}.context_length") if arch else None,
        error=error, parts=len(parts))


# --------------------------------------------------------------------------------- walking

class _Seen:
    """The files already listed, by their real path (a link and its target are one file)."""

    def __init__(self) -> None:
        self.paths: set[str] = set()

    def first(self, path: Path) -> bool:
        """True the first time a file (under any name or link) is seen."""
        key = os.path.normcase(os.path.realpath(path))
        if key in self.paths:
            return False
        self.paths.add(key)
        return True


def _walk_gguf(root: Path, max_depth: int = MAX_DEPTH, max_entries: int = MAX_ENTRIES) -> list[Path]:
    """The ``.gguf`` files under ``root`` (``max_depth`` folders deep, hidden folders skipped,
    linked folders followed once), sorted."""
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    budget = max_entries
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack and budget > 0:
        folder, depth = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            budget -= 1
            if budget < 0:
                break
            try:
                if entry.is_dir():
                    if depth < max_depth and not entry.name.startswith("."):
                        stack.append((Path(entry.path), depth + 1))
                elif entry.name.lower().endswith(".gguf") and (entry.is_file() or entry.is_symlink()):
                    found.append(Path(entry.path))
            except OSError:
                continue
    return sorted(found)


@dataclass(frozen=True, slots=True)
class _Model:
    """The files of one model: ``parts[0]`` is loaded; a split model expects ``expected`` parts
    and ``first`` is the number of the first part present."""

    parts: list[Path]
    expected: int = 1
    first: int = 1


def _group_parts(files: list[Path]) -> list[_Model]:
    """The models among ``files``: the shards of a split model (``-00001-of-00003.gguf``) are one
    model, loaded from its first part."""
    models: list[_Model] = []
    splits: dict[tuple[str, str, int], list[tuple[int, Path]]] = {}
    for f in files:
        m = _SPLIT.match(f.name)
        if m and int(m.group("count")) >= 1:
            key = (str(f.parent), m.group("stem").lower(), int(m.group("count")))
            splits.setdefault(key, []).append((int(m.group("part")), f))
        else:
            models.append(_Model([f]))
    for (_, _, count), numbered in splits.items():
        numbered.sort()
        models.append(_Model([p for _, p in numbered], count, numbered[0][0]))
    models.sort(key=lambda m: str(m.parts[0]))
    return models


def _models_in(files: list[Path], source: str, name_of: Callable[[Path], str], seen: _Seen,
               cancel: threading.Event | None) -> Iterator[FoundModel]:
    for model in _group_parts(files):
        if cancel is not None and cancel.is_set():
            return
        first = model.parts[0]
        if not seen.first(first):
            continue
        for p in model.parts[1:]:
            seen.first(p)
        record = _describe(first, source, name_of(first), model.parts, model.expected, model.first)
        if record is not None:
            yield record


def _hf_repos(hub: Path) -> Iterator[tuple[Path, str]]:
    """(repo folder, ORG/NAME) of every model repo in a Hugging Face hub cache."""
    try:
        names = sorted(os.listdir(hub))
    except OSError:
        return
    for folder in names:
        if folder.startswith("models--"):
            yield hub / folder, folder[len("models--"):].replace("--", "/")


def _hf_files(repo: Path) -> list[tuple[Path, str]]:
    """(file, path inside the snapshot) of every GGUF file of a cached repo; a file name in
    several revisions counts once, from the revision ``refs/main`` names when it has it."""
    snapshots = repo / "snapshots"
    try:
        revisions = sorted(os.listdir(snapshots))
    except OSError:
        return []
    try:
        main = (repo / "refs" / "main").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        main = ""
    revisions.sort(key=lambda r: r != main)  # the main revision first (sort is stable)
    out: dict[str, Path] = {}
    for rev in revisions:
        root = snapshots / rev
        for f in _walk_gguf(root):
            rel = f.relative_to(root).as_posix()
            out.setdefault(rel, f)
    return [(f, rel) for rel, f in out.items()]


def _search_hf(hub: Path, source: str, seen: _Seen, cancel: threading.Event | None) -> Iterator[FoundModel]:
    for repo, repo_name in _hf_repos(hub):
        files = _hf_files(repo)
        names = {str(f): f"{repo_name}/{rel}" for f, rel in files}
        yield from _models_in([f for f, _ in files], source, lambda f: names[str(f)], seen, cancel)


def _search_tree(root: Path, source: str, seen: _Seen, cancel: threading.Event | None) -> Iterator[FoundModel]:
    def name_of(f: Path) -> str:
        try:
            return f.relative_to(root).as_posix()
        except ValueError:
            return f.name

    yield from _models_in(_walk_gguf(root), source, name_of, seen, cancel)


def _read_json(path: Path) -> object:
    try:
        with path.open("rb") as f:
            raw = f.read(_MANIFEST_BYTES + 1)
    except OSError:
        return None
    if len(raw) > _MANIFEST_BYTES:
        return None
    try:
        return json.loads(raw.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None


def _ollama_name(host: str, namespace: str, model: str, tag: str) -> str:
    if host == _OLLAMA_REGISTRY:
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def _ollama_blob(manifest: object) -> str | None:
    """The digest (``sha256:HEX``) of a manifest's model layer."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        return None
    for layer in manifest["layers"]:
        if isinstance(layer, dict) and layer.get("mediaType") == _OLLAMA_MODEL_LAYER:
            digest = layer.get("digest")
            if isinstance(digest, str) and re.fullmatch(r"sha256[:-][0-9a-fA-F]{64}", digest):
                return digest
    return None


def _search_ollama(root: Path, seen: _Seen, cancel: threading.Event | None) -> Iterator[FoundModel]:
    manifests = root / "manifests"
    by_blob: dict[str, list[str]] = {}
    for f in _walk_files(manifests, depth=4):
        rel = f.relative_to(manifests).parts
        if len(rel) != 4:
            continue
        digest = _ollama_blob(_read_json(f))
        if digest is None:
            continue
        by_blob.setdefault(digest.replace(":", "-"), []).append(_ollama_name(*rel))
    for blob, names in sorted(by_blob.items(), key=lambda kv: sorted(kv[1])[0]):
        if cancel is not None and cancel.is_set():
            return
        path = root / "blobs" / blob
        if not seen.first(path):
            continue
        names.sort(key=lambda n: (n.endswith(":latest"), n))  # a tag that says more first
        record = _describe(path, "ollama", ", ".join(names))
        if record is not None and not path.exists():
            record = replace(record, error=f"the model file of {names[0]} is missing from Ollama's blobs "
                                           f"({blob}); pull it again with: ollama pull {names[0]}")
        if record is not None:
            yield record


def _walk_files(root: Path, depth: int) -> list[Path]:
    """Every file exactly ``depth`` folders below ``root`` (Ollama's manifests), sorted."""
    level = [root]
    for _ in range(depth - 1):
        nxt: list[Path] = []
        for folder in level:
            try:
                nxt += [Path(e.path) for e in os.scandir(folder) if e.is_dir()]
            except OSError:
                continue
            if len(nxt) > MAX_ENTRIES:
                break
        level = nxt
    files: list[Path] = []
    for folder in level:
        try:
            files += [Path(e.path) for e in os.scandir(folder) if e.is_file()]
        except OSError:
            continue
    return sorted(files)


def _search_llama_cpp(root: Path, seen: _Seen, cancel: threading.Event | None) -> Iterator[FoundModel]:
    # the Hugging Face layout newer llama.cpp writes into its cache
    yield from _search_hf(root, "llama.cpp", seen, cancel)
    # the files -hf downloaded before: ORG_REPO_FILE.gguf, with manifest=ORG=REPO=TAG.json beside them
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return
    repos = []
    for n in names:
        if n.startswith("manifest=") and n.endswith(".json"):
            fields = n[len("manifest="):-len(".json")].split("=")
            if len(fields) >= 2:
                repos.append(f"{fields[0]}/{fields[1]}")
    prefixes = sorted(((r.replace("/", "_") + "_", r) for r in set(repos)), key=lambda x: -len(x[0]))

    def name_of(f: Path) -> str:
        for prefix, repo in prefixes:
            if f.name.startswith(prefix) and len(f.name) > len(prefix):
                return f"{repo}/{f.name[len(prefix):]}"
        return f.name

    flat = [root / n for n in names if n.lower().endswith(".gguf") and not (root / n).is_dir()]
    yield from _models_in(flat, "llama.cpp", name_of, seen, cancel)


# --------------------------------------------------------------------------------- the search

def iter_models(folders: Iterable[str | os.PathLike] = (), *, environ: Mapping[str, str] | None = None,
                home: Path | None = None, cancel: threading.Event | None = None) -> Iterator[FoundModel]:
    """Every model found in ``locations(folders)``, as it is found (a generator the picker's
    worker runs; ``cancel`` stops it between two files). A file reached from two places is
    listed once, by the first source that finds it."""
    seen = _Seen()
    for loc in locations(folders, environ=environ, home=home):
        if cancel is not None and cancel.is_set():
            return
        if not loc.path.is_dir():
            continue
        if loc.source == "huggingface":
            yield from _search_hf(loc.path, "huggingface", seen, cancel)
        elif loc.source == "ollama":
            yield from _search_ollama(loc.path, seen, cancel)
        elif loc.source == "llama.cpp":
            yield from _search_llama_cpp(loc.path, seen, cancel)
        else:  # lmstudio, folder
            yield from _search_tree(loc.path, loc.source, seen, cancel)


def find_models(folders: Iterable[str | os.PathLike] = (), *, environ: Mapping[str, str] | None = None,
                home: Path | None = None) -> list[FoundModel]:
    """``iter_models`` as a list."""
    return list(iter_models(folders, environ=environ, home=home))
