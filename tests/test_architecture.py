"""Architecture rules: the core and the backends import no Qt; every module says what it owns."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> list[str]:
    pkg_dir = ROOT.joinpath(*package.split("."))
    return [package] + [m.name for m in pkgutil.walk_packages([str(pkg_dir)], prefix=f"{package}.")]


def _qt_free_lab_modules() -> list[str]:
    """Every module of app.labs outside the labs' ``_qt`` packages."""
    return [m for m in _modules("app.labs") if "._qt" not in m]


def test_core_and_backends_import_no_qt():
    mods = _modules("app.core") + _modules("backends") + _qt_free_lab_modules()
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('PySide6', 'shiboken6', 'pyqtgraph', 'PyQt5', 'PyQt6'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt imported by the core/backends: {out.stdout}"
    assert len(mods) >= 8  # the walk found the modules
    assert {"app.labs.vs.engine", "app.labs.shift.engine", "app.labs.align.engine", "app.labs.decoding.beams"} <= set(mods)


def test_a_lab_is_one_package():
    """Every lab of the registry lives in its own package app.labs.<name> (Qt-free parts) with its
    Qt parts in app.labs.<name>._qt; no lab code is left in app/core, app/ or widgets/."""
    from app.lab_registry import LABS

    for spec in LABS:
        for path in (spec.panel, spec.presenter, spec.engine or ""):
            if path:
                assert path.startswith(f"app.labs.{spec.name}._qt."), path
        assert (ROOT / "app" / "labs" / spec.name / "__init__.py").exists()
    leftovers = [p.name for folder in ("app/core", "app", "widgets") for p in (ROOT / folder).glob("*.py")
                 if any(w in p.name for w in ("vs_", "shift_", "align_", "decoding_", "glub"))]
    assert leftovers == []


def test_every_module_has_a_docstring():
    missing = []
    for folder in ("app", "backends", "widgets"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8").lstrip()
            if path.name != "__init__.py" and not text.startswith(('"""', "'''")):
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_only_backends_open_builds_backends():
    """The window, the labs and the command line get their backends from ``open_backend``: no
    other module of app/ or widgets/ constructs a backend or loads a model itself."""
    import ast

    builders = {"LlamaCppBackend", "OpenAICompatBackend", "LlamaModel", "Llama"}
    found = []
    for folder in ("app", "widgets"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                    if name in builders:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}(...)")
    # (the benchmark's llama-cpp-python baseline makes its llama_cpp.Llama in backends/baselines.py)
    assert found == []


def test_the_import_contracts_hold():
    """The architecture contracts of pyproject.toml (also run by .ci/run as ``lint-imports``)."""
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_cycles():
    """No module imports, even lazily inside a function, a module that leads back to it (grimp is
    import-linter's own import graph)."""
    import grimp

    graph = grimp.build_graph("app", "backends", "widgets")
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.add(" -> ".join((module, *back)))
    assert sorted(cycles) == []


def test_backend_and_engine_parameters_are_typed():
    """Every parameter named ``backend``, ``engine`` or ``where`` (what a job is handed) in
    app.core and backends says what it takes, so mypy can check the callers."""
    import ast

    missing = []
    for folder in ("app/core", "app/labs", "backends"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    a = node.args
                    for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs):
                        if arg.arg in ("backend", "engine", "where") and arg.annotation is None:
                            missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({arg.arg})")
    assert missing == []
