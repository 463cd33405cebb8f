"""Finding the GGUF models already on disk: small fake layouts of every kind (Hugging Face cache with
links into blobs/, LM Studio, Ollama manifests and blobs, llama.cpp's cache, added folders), with real
GGUF headers from tests/gguf_factory.py, HOME and every variable pointed into tmp_path so nothing of
this computer's own models is found."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backends import discovery
from backends.discovery import FoundModel, find_models, locations, quantization_name
from tests.gguf_factory import U32, gguf_bytes

_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "OLLAMA_MODELS", "LLAMA_CACHE",
         "LOCALAPPDATA")


def model(arch: str = "llama", *, ftype: int | None = 15, ctx: int | None = 4096, size_label: str | None = "1B",
          elements: int = 64) -> bytes:
    """A small but complete GGUF file: the header says what a model card needs, one F32 tensor."""
    kv: dict = {"general.architecture": arch, "general.name": f"tiny {arch}"}
    if size_label is not None:
        kv["general.size_label"] = size_label
    if ftype is not None:
        kv["general.file_type"] = U32(ftype)
    if ctx is not None:
        kv[f"{arch}.context_length"] = U32(ctx)
    kv["tokenizer.ggml.tokens"] = ["a", "b", "c"]  # an array: skipped by the reader
    return gguf_bytes(kv, [("w", [elements], 0, 0)], data_size=4 * elements)


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty home folder, no model variables, no system-wide Ollama."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("USERPROFILE", str(h))
    for var in _VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(discovery, "OLLAMA_SYSTEM_MODELS", tmp_path / "no-system-ollama")
    return h


def by_name(found: list[FoundModel]) -> dict[str, FoundModel]:
    names = [m.name for m in found]
    assert len(names) == len(set(names)), names
    return {m.name: m for m in found}


def make_hf_repo(hub: Path, repo: str = "org/tiny-GGUF") -> Path:
    """models--org--tiny-GGUF with two revisions: tiny-Q4_K_M.gguf in both (the same blob),
    old-Q8_0.gguf only in the old one, a link whose blob is gone, and the main ref on the new one."""
    folder = hub / ("models--" + repo.replace("/", "--"))
    blob_a = put(folder / "blobs" / ("a" * 64), model("qwen2", ftype=15, ctx=32768, size_label="0.5B"))
    blob_b = put(folder / "blobs" / ("b" * 64), model("llama", ftype=7, ctx=2048, size_label="1B"))
    for rev in ("1111", "2222"):
        snap = folder / "snapshots" / rev
        snap.mkdir(parents=True)
        (snap / "tiny-Q4_K_M.gguf").symlink_to(os.path.relpath(blob_a, snap))
    (folder / "snapshots" / "1111" / "old-Q8_0.gguf").symlink_to(os.path.relpath(blob_b, folder / "snapshots" / "1111"))
    (folder / "snapshots" / "2222" / "gone.gguf").symlink_to("../../blobs/" + "c" * 64)
    put(folder / "refs" / "main", b"2222")
    put(folder / "blobs" / ("d" * 64), b"not linked from any snapshot: never listed")
    return folder


def test_hugging_face_cache_names_repo_and_file_and_lists_each_blob_once(home, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    folder = make_hf_repo(hub)
    (hub / "datasets--org--data").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    found = by_name(find_models())
    assert set(found) == {"org/tiny-GGUF/tiny-Q4_K_M.gguf", "org/tiny-GGUF/old-Q8_0.gguf", "org/tiny-GGUF/gone.gguf"}
    tiny = found["org/tiny-GGUF/tiny-Q4_K_M.gguf"]
    assert tiny.path == str(folder / "snapshots" / "2222" / "tiny-Q4_K_M.gguf")  # the revision refs/main names
    assert (tiny.source, tiny.architecture, tiny.size_label, tiny.quantization, tiny.context_length, tiny.error) == (
        "huggingface", "qwen2", "0.5B", "Q4_K_M", 32768, None)
    assert tiny.file_size == (folder / "blobs" / ("a" * 64)).stat().st_size
    old = found["org/tiny-GGUF/old-Q8_0.gguf"]
    assert (old.architecture, old.quantization, old.context_length, old.error) == ("llama", "Q8_0", 2048, None)
    gone = found["org/tiny-GGUF/gone.gguf"]
    assert gone.error is not None and "does not exist" in gone.error and gone.architecture is None


@pytest.mark.parametrize("how", ["HF_HOME", "XDG_CACHE_HOME", "HOME"])
def test_hugging_face_cache_is_found_where_huggingface_hub_looks(home, tmp_path, monkeypatch, how):
    if how == "HF_HOME":
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        hub = tmp_path / "hf" / "hub"
    elif how == "XDG_CACHE_HOME":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        hub = tmp_path / "xdg" / "huggingface" / "hub"
    else:
        hub = home / ".cache" / "huggingface" / "hub"
    make_hf_repo(hub)
    found = find_models()
    assert {m.source for m in found} == {"huggingface"} and len(found) == 3
    assert all(m.path.startswith(str(hub)) for m in found)


def test_lm_studio_both_folders_and_vision_projectors_left_out(home):
    new = put(home / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-GGUF" / "Tiny-3B-Q6_K.gguf",
              model("phi3", ftype=None, size_label=None, ctx=8192))
    put(new.parent / "mmproj-Tiny-F16.gguf", model("clip", ftype=1))
    old = put(home / ".cache" / "lm-studio" / "models" / "TheBloke" / "Old-GGUF" / "old.Q5_K_M.gguf",
              model("llama", ftype=17, ctx=4096))
    found = by_name(find_models())
    assert set(found) == {"lmstudio-community/Tiny-GGUF/Tiny-3B-Q6_K.gguf", "TheBloke/Old-GGUF/old.Q5_K_M.gguf"}
    tiny = found["lmstudio-community/Tiny-GGUF/Tiny-3B-Q6_K.gguf"]
    # no general.file_type nor size label in the header: both read from the file name
    assert (tiny.source, tiny.path, tiny.quantization, tiny.size_label, tiny.context_length) == (
        "lmstudio", str(new), "Q6_K", "3B", 8192)
    assert found["TheBloke/Old-GGUF/old.Q5_K_M.gguf"].path == str(old)


def _manifest(digest: str | None, extra_layers: int = 1) -> bytes:
    layers = [{"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "e" * 64, "size": 10}]
    if digest:
        layers.append({"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": 100})
    return json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "f" * 64}, "layers": layers}).encode()


def make_ollama(root: Path) -> None:
    hex_a, hex_b, hex_c = "1" * 64, "2" * 64, "3" * 64
    put(root / "blobs" / f"sha256-{hex_a}", model("llama", ftype=15, ctx=131072, size_label="3B"))
    put(root / "blobs" / f"sha256-{hex_b}", model("qwen2", ftype=7, ctx=32768, size_label="0.5B"))
    put(root / "blobs" / ("sha256-" + "e" * 64), b"{{ .Prompt }}")  # a template layer: not a model
    reg = root / "manifests" / "registry.ollama.ai"
    put(reg / "library" / "llama3.2" / "latest", _manifest(f"sha256:{hex_a}"))
    put(reg / "library" / "llama3.2" / "3b", _manifest(f"sha256:{hex_a}"))  # the same blob, another tag
    put(reg / "someone" / "tiny" / "q8", _manifest(f"sha256:{hex_b}"))
    put(root / "manifests" / "hf.co" / "org" / "Gone-GGUF" / "Q4_K_M", _manifest(f"sha256:{hex_c}"))
    put(reg / "library" / "broken" / "latest", b"{not json")
    put(reg / "library" / "nomodel" / "latest", _manifest(None))


def test_ollama_manifests_name_their_blobs(home, tmp_path, monkeypatch):
    root = tmp_path / "ollama-models"
    make_ollama(root)
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    found = by_name(find_models())
    assert set(found) == {"llama3.2:3b, llama3.2:latest", "someone/tiny:q8", "hf.co/org/Gone-GGUF:Q4_K_M"}
    llama = found["llama3.2:3b, llama3.2:latest"]
    assert (llama.source, llama.path, llama.architecture, llama.size_label, llama.quantization,
            llama.context_length, llama.error) == (
        "ollama", str(root / "blobs" / ("sha256-" + "1" * 64)), "llama", "3B", "Q4_K_M", 131072, None)
    assert found["someone/tiny:q8"].quantization == "Q8_0"
    gone = found["hf.co/org/Gone-GGUF:Q4_K_M"]
    assert gone.error is not None and "ollama pull hf.co/org/Gone-GGUF:Q4_K_M" in gone.error


def test_ollama_default_folder_is_under_home(home):
    make_ollama(home / ".ollama" / "models")
    assert {m.source for m in find_models()} == {"ollama"}
    assert len(find_models()) == 3


def make_llama_cpp(root: Path) -> None:
    put(root / "ggml-org_gemma-3-1b-it-GGUF_gemma-3-1b-it-Q4_K_M.gguf", model("gemma3", ftype=15, ctx=32768))
    put(root / "ggml-org_gemma-3-1b-it-GGUF_gemma-3-1b-it-Q4_K_M.gguf.etag", b'"abc"')
    put(root / "manifest=ggml-org=gemma-3-1b-it-GGUF=latest.json",
        json.dumps({"ggufFile": {"rfilename": "gemma-3-1b-it-Q4_K_M.gguf"}}).encode())
    put(root / "unknown-file.gguf", model("llama", ftype=2))
    make_hf_repo(root, "ggml-org/new-GGUF")  # the Hugging Face layout newer llama.cpp writes here


def test_llama_cpp_cache_old_flat_files_and_new_layout(home, tmp_path, monkeypatch):
    root = tmp_path / "llama-cache"
    make_llama_cpp(root)
    monkeypatch.setenv("LLAMA_CACHE", str(root))
    found = by_name(find_models())
    assert set(found) == {"ggml-org/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf", "unknown-file.gguf",
                          "ggml-org/new-GGUF/tiny-Q4_K_M.gguf", "ggml-org/new-GGUF/old-Q8_0.gguf",
                          "ggml-org/new-GGUF/gone.gguf"}
    assert {m.source for m in found.values()} == {"llama.cpp"}
    gemma = found["ggml-org/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf"]
    assert (gemma.architecture, gemma.quantization, gemma.context_length) == ("gemma3", "Q4_K_M", 32768)
    assert found["unknown-file.gguf"].quantization == "Q4_0"


@pytest.mark.parametrize("how", ["XDG_CACHE_HOME", "HOME"])
def test_llama_cpp_cache_default_on_linux(home, tmp_path, monkeypatch, how):
    monkeypatch.setattr(discovery.sys, "platform", "linux")
    if how == "XDG_CACHE_HOME":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        root = tmp_path / "xdg" / "llama.cpp"
    else:
        root = home / ".cache" / "llama.cpp"
    make_llama_cpp(root)
    assert len([m for m in find_models() if m.source == "llama.cpp"]) == 5


def test_locations_follow_each_tool_on_each_system(tmp_path):
    home = tmp_path / "h"

    def where(platform: str, **env: str) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for loc in locations(["~/more"], environ=env, home=home, platform=platform):
            out.setdefault(loc.source, []).append(loc.path)
        return out

    linux = where("linux")
    assert linux["huggingface"] == [home / ".cache" / "huggingface" / "hub"]
    assert linux["lmstudio"] == [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]
    assert linux["ollama"] == [home / ".ollama" / "models", discovery.OLLAMA_SYSTEM_MODELS]
    assert linux["llama.cpp"] == [home / ".cache" / "llama.cpp"]
    assert linux["folder"] == [Path(os.path.expanduser("~/more"))]
    assert where("darwin")["llama.cpp"] == [home / "Library" / "Caches" / "llama.cpp"]
    assert where("darwin")["ollama"] == [home / ".ollama" / "models"]
    assert where("win32", LOCALAPPDATA=str(tmp_path / "local"))["llama.cpp"] == [tmp_path / "local" / "llama.cpp"]
    env = where("linux", HF_HUB_CACHE=str(tmp_path / "a"), HF_HOME=str(tmp_path / "b"), LLAMA_CACHE=str(tmp_path / "c"),
                OLLAMA_MODELS=str(tmp_path / "d"), XDG_CACHE_HOME=str(tmp_path / "x"))
    assert env["huggingface"] == [tmp_path / "a"]  # HF_HUB_CACHE before HF_HOME
    assert env["llama.cpp"] == [tmp_path / "c"]  # LLAMA_CACHE as it is, no llama.cpp appended
    assert env["ollama"] == [tmp_path / "d"]
    assert where("linux", HF_HOME=str(tmp_path / "b"))["huggingface"] == [tmp_path / "b" / "hub"]
    assert where("linux", XDG_CACHE_HOME=str(tmp_path / "x"))["llama.cpp"] == [tmp_path / "x" / "llama.cpp"]


def test_an_added_folder_split_models_and_files_that_cannot_be_used(home, tmp_path):
    folder = tmp_path / "my models"
    put(folder / "a" / "b" / "deep-7B-Q4_K_S.gguf", model("mistral", ftype=14, ctx=32768, size_label="7B"))
    for i in (1, 2, 3):  # a split model: one entry, loaded from part 1, the size of all three
        put(folder / "big" / f"Big-70B-Q2_K-0000{i}-of-00003.gguf",
            model("llama", ftype=10, ctx=8192, size_label="70B", elements=64 * i))
    put(folder / "half" / "Half-00001-of-00002.gguf", model())  # part 2 missing
    put(folder / "nofirst" / "Nofirst-00002-of-00002.gguf", model())  # part 1 missing
    whole = model("llama", elements=1024)
    put(folder / "truncated.gguf", whole[: len(whole) - 100])  # cut in its tensor data
    put(folder / "notes.gguf", b"PK\x03\x04 a zip file, not a model" * 4)
    put(folder / "empty.gguf", b"")
    put(folder / "readme.txt", b"not a .gguf name: not looked at")
    put(folder / ".hidden" / "secret.gguf", model())
    deep = folder
    for i in range(discovery.MAX_DEPTH + 1):
        deep = deep / f"d{i}"
    put(deep / "too-deep.gguf", model())

    found = by_name(find_models([folder]))
    assert set(found) == {"a/b/deep-7B-Q4_K_S.gguf", "big/Big-70B-Q2_K-00001-of-00003.gguf",
                          "half/Half-00001-of-00002.gguf", "nofirst/Nofirst-00002-of-00002.gguf", "truncated.gguf",
                          "notes.gguf", "empty.gguf"}
    assert {m.source for m in found.values()} == {"folder"}
    deep_model = found["a/b/deep-7B-Q4_K_S.gguf"]
    assert (deep_model.architecture, deep_model.quantization, deep_model.size_label, deep_model.error) == (
        "mistral", "Q4_K_S", "7B", None)
    big = found["big/Big-70B-Q2_K-00001-of-00003.gguf"]
    parts = sorted((folder / "big").iterdir())
    assert big.path == str(parts[0]) and big.parts == 3 and big.error is None
    assert big.file_size == sum(p.stat().st_size for p in parts)
    assert (big.quantization, big.size_label, big.context_length) == ("Q2_K", "70B", 8192)
    assert "1 of its 2 parts" in found["half/Half-00001-of-00002.gguf"].error
    assert "part 1 of its 2 parts is missing" in found["nofirst/Nofirst-00002-of-00002.gguf"].error
    truncated = found["truncated.gguf"]
    assert "truncated" in truncated.error and truncated.architecture is None
    assert truncated.file_size == len(whole) - 100
    assert "not a GGUF" in found["notes.gguf"].error
    assert "empty" in found["empty.gguf"].error
    assert all("\n" not in (m.error or "") for m in found.values())


def test_a_file_without_read_permission_says_so(home, tmp_path, monkeypatch):
    path = put(tmp_path / "f" / "locked.gguf", model())
    real_open = Path.open

    def refusing_open(self, *args, **kwargs):  # root may read anything: refuse as the system would
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    (locked,) = find_models([tmp_path / "f"])
    assert locked.error == "Cannot read locked.gguf: permission denied." and locked.file_size == path.stat().st_size


def test_a_file_reached_from_two_places_is_listed_once(home, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    make_hf_repo(hub)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    lms = home / ".lmstudio" / "models" / "org" / "tiny"
    lms.mkdir(parents=True)
    (lms / "linked.gguf").symlink_to(hub / "models--org--tiny-GGUF" / "blobs" / ("a" * 64))
    found = find_models([hub, tmp_path])  # folders that hold the hub again, blobs and all
    assert len(found) == 3 and {m.source for m in found} == {"huggingface"}


def test_quantization_names_follow_llama_cpp():
    import llama_cpp.llama_cpp as ll

    theirs = {getattr(ll, n): n.split("_", 3)[-1] for n in dir(ll)
              if n.startswith(("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"))}
    assert theirs  # the binding names them
    for value, name in theirs.items():
        assert quantization_name(value) == name, (value, name)
    assert quantization_name(15 | 1024) == "Q4_K_M"  # llama.cpp's "guessed" flag
    assert quantization_name(None, "Qwen2.5-7B-Instruct-IQ2_XS.gguf") == "IQ2_XS"
    assert quantization_name(None, "llama3.2:3b-instruct-q4_K_M") == "Q4_K_M"
    assert quantization_name(None, "model-bf16.gguf") == "BF16"
    assert quantization_name(None, "model.gguf") is None
    assert quantization_name(999, "x-Q8_0.gguf") == "Q8_0"  # a file type llama.cpp does not know


def test_json_form_has_the_documented_keys():
    d = FoundModel("/x.gguf", "folder", "x.gguf", error="x.gguf is empty").to_dict()
    assert list(d) == ["path", "source", "name", "architecture", "size_label", "quantization", "file_size",
                       "context_length", "error"]
    assert json.loads(json.dumps(d)) == d


def test_nothing_found_on_an_empty_machine(home):
    assert find_models() == []


def test_a_hostile_header_in_a_found_file_is_an_error_line(home, tmp_path):
    from tests.gguf_factory import malformed

    for name, data in malformed().items():
        put(tmp_path / "bad" / (name.replace(" ", "_") + ".gguf"), data)
    found = find_models([tmp_path / "bad"])
    assert len(found) == len(malformed())
    ok = [m.name for m in found if m.error is None]
    assert ok == ["no_tensors_at_all.gguf"]  # a well-formed header
    assert all(m.error and "\n" not in m.error for m in found if m.name != "no_tensors_at_all.gguf")


def test_file_sizes_in_words():
    sizes = [FoundModel("p", "folder", "n", file_size=n).file_size_text for n in (None, 608, 253_113_024, 4_200_000_000, 2 * 10**12)]
    assert sizes == ["-", "608 B", "253.1 MB", "4.2 GB", "2.0 TB"]
