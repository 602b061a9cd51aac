"""The import graph of ``steerlens``: no circle, and no arrow pointing up the layers.

Layers, bottom to top (a module may import its own layer and the layers below it)::

    util      fileio, parallel
    models    models (loading, backends)
    hooks     hooks.* (sites, capture, edits, hook gates, runtime, generate/score, trace)
    api       steerlens (the top-level re-exports)
    evals     evals.* (data, judges, tasks, stats, reports: scores any steerer)
    core      pipeline, pipeline.* (roles, selection, contrastive, gates, selectors, editors,
              steerer, registry, artifacts, spec, ...)
    methods   pipeline.methods.* (one package per method)
    interp    interp.*
    apps      every ``*.cli`` module, cli, cliargs, demo, __main__ (load artifacts, hand
              steerers to evals)

Every import counts, also those inside functions (they run too); imports under
``if TYPE_CHECKING:`` do not. ``from pkg import name`` is an arrow to ``pkg.name`` when that is a
module, else to ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import steerlens

ROOT = Path(steerlens.__file__).resolve().parent
LAYERS = ["util", "models", "hooks", "api", "evals", "core", "methods", "interp", "apps"]

#: Known upward arrows, each with the reason it is still there. An entry that no longer exists
#: fails the test, so the list only shrinks.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p): p for p in sorted(root.rglob("*.py"))}


def layer_of(mod: str) -> str:
    rest = mod.split(".")[1:]
    if not rest:
        return "api"
    if rest[-1] == "cli" or rest[0] in ("cli", "cliargs", "demo", "__main__"):
        return "apps"
    if rest[0] in ("fileio", "parallel", "numerics"):
        return "util"
    if rest[0] in ("models", "hooks", "evals", "interp"):
        return rest[0]
    if rest[0] == "pipeline":
        return "methods" if len(rest) > 1 and rest[1] == "methods" else "core"
    raise AssertionError(f"module {mod} has no layer: add it to tests/test_import_graph.py")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    skip.update(id(n) for n in ast.walk(sub))
    return skip


def imports_of(mod: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The steerlens modules ``mod`` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in modules else target)
    return {m for m in out if m in modules and m != mod}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = all_modules(root)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    return {(a, b) for a, deps in graph.items() for b in deps if rank[layer_of(b)] > rank[layer_of(a)]}


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_every_module_has_a_layer(graph):
    for m in graph:
        assert layer_of(m) in LAYERS


def test_no_import_circle(graph):
    assert cycles(graph) == [], "import circles (modules that import each other, directly or not)"


def test_no_upward_import(graph):
    found = upward(graph)
    unexpected = sorted(found - set(ALLOWED_UPWARD))
    assert not unexpected, "imports up the layers (models → hooks → evals → core → methods → interp → apps): " + \
        ", ".join(f"{a} → {b}" for a, b in unexpected)
    stale = sorted(set(ALLOWED_UPWARD) - found)
    assert not stale, f"these allowed upward imports are gone; remove them from ALLOWED_UPWARD: {stale}"


def test_core_knows_no_method(graph):
    """The pipeline core names no method package (the registry discovers them)."""
    for m, deps in graph.items():
        if layer_of(m) == "core":
            assert not [d for d in deps if layer_of(d) == "methods"], m


def test_largest_core_file_is_under_400_lines():
    core = [p for m, p in all_modules().items() if layer_of(m) == "core"]
    sizes = {p.name: len(p.read_text().splitlines()) for p in core}
    assert max(sizes.values()) < 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    assert not (ROOT / "pipeline" / "base.py").exists()


# -- the checker itself must be able to fail --------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "steerlens" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "steerlens"


def test_checker_finds_a_circle_and_an_upward_import(tmp_path):
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "hooks/__init__.py": "",
        "hooks/a.py": "def f():\n    from ..pipeline.steerer import X\n",     # hooks → core: up
        "pipeline/__init__.py": "",
        "pipeline/steerer.py": "from .registry import Y\n",
        "pipeline/registry.py": "from . import steerer\n",                   # circle
        "pipeline/methods/__init__.py": "",
        "pipeline/methods/toy/__init__.py": "from ...steerer import X\n",    # down: fine
        "pipeline/spec.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .methods import toy\n",
    })
    global ROOT
    saved, ROOT = ROOT, pkg
    try:
        g = import_graph(pkg)
    finally:
        ROOT = saved
    assert cycles(g) == [["steerlens.pipeline.registry", "steerlens.pipeline.steerer"]]
    assert upward(g) == {("steerlens.hooks.a", "steerlens.pipeline.steerer")}
    assert g["steerlens.pipeline.spec"] == set()   # TYPE_CHECKING imports do not count
