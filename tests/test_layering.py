"""The design's layering, checked from the source with ``ast`` (every import, lazy ones included).

Imports point down only: base modules (``medvid/*.py``: errors, config, device, metrics …) <- ``io``
<- ``datasets``/``transforms``/``synth`` <- ``models`` <- ``training``/``zeroshot``/``report``/``transfer``/``ingest``
<- ``pipelines`` + ``cli`` and ``apps``. No module import cycles; a job takes nothing from another job but
its ``Config`` and ``run``; tests import no other test module, no private job helper and touch no ``sys.path``.

``python tests/test_layering.py`` prints every violation.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"medvid": ROOT / "medvid", "medvid.pipelines": ROOT / "pipelines", "medvid.apps": ROOT / "apps"}
LEVELS = {"io": 1, "datasets": 2, "transforms": 2, "synth": 2, "models": 3,
          "training": 4, "zeroshot": 4, "report": 4, "transfer": 4, "ingest": 4, "pacs": 4, "pipelines": 5, "apps": 5, "cli": 5}
JOB_API = {"Config", "run"}  # what one job may take from another (the demo runs every job through these)


@cache
def modules() -> dict[str, Path]:
    """``{dotted module name: file}`` for the library, the jobs and the app, as installed (``medvid.pipelines.x``)."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if package == "medvid" and parts[0] in ("pipelines", "apps", "configs"):
                continue
            out[".".join([package, *(p for p in parts if p != "__init__")])] = path
    return out


def level(module: str) -> int:
    """0 for the base modules (``medvid.errors`` …), else the layer of the sub-package."""
    parts = module.split(".")
    return LEVELS.get(parts[1], 0) if len(parts) > 1 else 0


def _from_module(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The absolute module a (possibly relative) ``from … import`` names."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported medvid module, names taken from it, line)`` of every import in a file."""
    known = modules()
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "medvid"]
        elif isinstance(node, ast.ImportFrom):
            source = _from_module(node, module, path)
            if source.split(".")[0] != "medvid":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{source}.{n}" for n in names if f"{source}.{n}" in known]
            out += [(m, [], node.lineno) for m in submodules]
            if len(submodules) < len(names):
                out.append((source, [n for n in names if f"{source}.{n}" not in known], node.lineno))
    return out


def upward_imports() -> list[str]:
    return [f"{module} (layer {level(module)}) imports {target} (layer {level(target)}) at line {line}"
            for module, path in modules().items() for target, _, line in imports(module, path)
            if target in modules() and level(target) > level(module)]


def import_cycles() -> list[str]:
    """Strongly connected groups of modules that import each other (directly or round a loop)."""
    graph = {m: {t for t, _, _ in imports(m, p) if t in modules() and t != m} for m, p in modules().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                group.append(stack.pop())
                if group[-1] == node:
                    break
            # A package's __init__ importing its own modules is not a cycle of ideas: ignore parent<->child.
            if len(group) > 1 and not all(g.startswith(min(group, key=len) + ".") or g == min(group, key=len)
                                          for g in group):
                cycles.append(" <-> ".join(sorted(group)))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def _job_names(module: str) -> set[str]:
    return {m for m in modules() if m.startswith("medvid.pipelines.")} - {module}


def cross_job_imports() -> list[str]:
    """Anything but ``Config``/``run`` one job takes from another (``from ..draft import x`` or ``draft.x``)."""
    out = []
    for module, path in modules().items():
        if not module.startswith("medvid.pipelines."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for target, names, line in imports(module, path):
            if target in _job_names(module):
                out += [f"{module}:{line} takes {n} from {target}" for n in names if n not in JOB_API]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _from_module(node, module, path) == "medvid.pipelines":
                aliases.update({a.asname or a.name: f"medvid.pipelines.{a.name}" for a in node.names})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and aliases[node.value.id] != module and node.attr not in JOB_API):
                out.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return out


def _test_sources() -> list[Path]:
    return sorted((ROOT / "tests").rglob("*.py"))


def hygiene_violations() -> list[str]:
    """Tests that touch ``sys.path``, import another test module, or import a private job helper. Shared code
    lives in ``tests/conftest.py`` (fixtures) and in helper modules beside the tests that are not test modules
    (``echo_testdata``, ``model_testdata``, ``tiny_training``), imported by their name: pytest puts ``tests/`` on
    the path, as Python does for a worker script run from there. One spelling, so ``tests.x`` is refused."""
    test_modules = {p.stem for p in _test_sources() if p.stem.startswith("test_")}
    out = []
    for path in _test_sources():
        name = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                out.append(f"{name}:{node.lineno} touches sys.path")
            if isinstance(node, ast.Import):
                targets = [(a.name, []) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                targets = [(node.module or "", [a.name for a in node.names])]
            elif isinstance(node, ast.ImportFrom):
                targets = [(".", [a.name for a in node.names])]
            else:
                continue
            for module, names in targets:
                if module.rsplit(".", 1)[-1] in test_modules:
                    out.append(f"{name}:{node.lineno} imports test module {module} {names or ''}".rstrip())
                elif module == "." or module.split(".")[0] == "tests":
                    out.append(f"{name}:{node.lineno} imports {module} through the tests folder {names or ''}".rstrip())
                if module.startswith("medvid.pipelines."):
                    out += [f"{name}:{node.lineno} imports private job helper {module}.{n}"
                            for n in names if n.startswith("_")]
    return sorted(out)


def test_no_upward_imports():
    assert upward_imports() == []


def test_no_import_cycles():
    assert import_cycles() == []


def test_jobs_take_only_config_and_run_from_other_jobs():
    assert cross_job_imports() == []


def test_tests_are_self_contained():
    """No ``sys.path`` edits, no test importing another test module or a private job helper."""
    assert hygiene_violations() == []


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """Each check finds a planted violation (so an empty list above means something)."""
    (tmp_path / "medvid" / "io").mkdir(parents=True)
    (tmp_path / "medvid" / "models").mkdir()
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "apps").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "medvid" / "io" / "a.py").write_text("from medvid.models import b\n")
    (tmp_path / "medvid" / "models" / "b.py").write_text("import medvid.io.a\n")
    (tmp_path / "pipelines" / "one.py").write_text("from medvid.pipelines.two import _helper, run\n")
    (tmp_path / "pipelines" / "two.py").write_text("from medvid.pipelines import one\nx = one.thing\n")
    (tmp_path / "tests" / "test_x.py").write_text("import sys\nsys.path.insert(0, '.')\nfrom test_y import f\n"
                                                  "from medvid.pipelines.one import _private\n"
                                                  "from tests.helper import g\nfrom helper import h\n")
    (tmp_path / "tests" / "test_y.py").write_text("")
    (tmp_path / "tests" / "helper.py").write_text("g = h = 1\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(PACKAGES, "medvid", tmp_path / "medvid")
    monkeypatch.setitem(PACKAGES, "medvid.pipelines", tmp_path / "pipelines")
    monkeypatch.setitem(PACKAGES, "medvid.apps", tmp_path / "apps")
    modules.cache_clear()
    try:
        assert upward_imports() == ["medvid.io.a (layer 1) imports medvid.models.b (layer 3) at line 1"]
        assert import_cycles() == ["medvid.io.a <-> medvid.models.b", "medvid.pipelines.one <-> medvid.pipelines.two"]
        assert sorted(cross_job_imports()) == ["medvid.pipelines.one:1 takes _helper from medvid.pipelines.two",
                                               "medvid.pipelines.two:2 uses medvid.pipelines.one.thing"]
        assert sorted(hygiene_violations()) == ["tests/test_x.py:2 touches sys.path",
                                        "tests/test_x.py:3 imports test module test_y ['f']",
                                        "tests/test_x.py:4 imports private job helper medvid.pipelines.one._private",
                                        "tests/test_x.py:5 imports tests.helper through the tests folder ['g']"]
    finally:
        modules.cache_clear()


def test_every_library_package_is_installed():
    """A package folder missing from pyproject's package list works in the source tree but not in a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("medvid", *p.parent.relative_to(ROOT / "medvid").parts))
             for p in (ROOT / "medvid").rglob("__init__.py")}
    assert found - listed == set()


if __name__ == "__main__":
    for title, found in (("upward imports", upward_imports()), ("import cycles", import_cycles()),
                         ("cross-job imports", cross_job_imports()), ("test hygiene", hygiene_violations())):
        print(f"{title}: {len(found)}")
        print("".join(f"  {line}\n" for line in found), end="")
