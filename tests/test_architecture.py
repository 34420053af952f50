"""The house plan's arrows (docs/ARCHITECTURE.md), checked on the source: no import cycles between flamefit
modules and no arrow up the layers.

Every module under ``flamefit/`` is parsed with ``ast``; every ``import``/``from ... import`` counts wherever it
is written (module level, inside functions, under ``if TYPE_CHECKING``), relative imports are resolved, and
``importlib.import_module("flamefit....")`` with a literal name counts too. ``from pkg import name`` is an arrow
to the module ``pkg.name`` when that is a module, else to ``pkg``. Importing ``a.b.c`` is an arrow to ``a.b.c``
only, not to the packages above it (Python runs their ``__init__`` first, but a package's ``__init__`` that
re-exports its own submodules would otherwise look like a cycle with each of them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "flamefit"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# layer -> layers it must not import (a layer is the first name below flamefit: flamefit.fit.init -> "fit").
FORBIDDEN: dict[str, set[str]] = {
    "model": {"render", "observe", "fit", "texspace", "run", "io", "commands", "bench", "track", "cli"},
    "render": {"model", "observe", "fit", "texspace", "run", "io", "commands", "bench", "track", "cli"},
    "observe": {"model", "render", "fit", "texspace", "run", "commands", "bench", "track", "cli"},
    "fit": {"texspace", "run", "io", "commands", "bench", "track", "cli"},
    "texspace": {"run", "commands", "bench", "cli"},
    "run": {"commands", "bench", "cli"},
    "io": {"commands", "bench", "run", "cli"},
}
# Base modules: importable by everything, they import nothing from flamefit except these.
BASE = {"errors": {"errors"}, "ibug68": {"errors"}, "assets": {"errors"}, "_numba": set(), "_files": set()}

# Arrows and cycles known to break the rules, each with the way out (for their owners; listed so that the suite
# passes meanwhile). Only ever shrinks: a new violation fails the test, and so does an entry here that no longer
# occurs (delete it then).
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}
KNOWN_CYCLES: dict[frozenset[str], str] = {}


# ------------------------------------------------------------------------------------------------ the checker


def discover(root: Path = ROOT, package: str = PACKAGE) -> dict[str, tuple[str, bool]]:
    """{module name: (source text, is a package __init__)} for every .py file under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join([package, *parts])] = (path.read_text(encoding="utf-8"), is_pkg)
    return out


def _resolve_relative(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(modules: dict[str, tuple[str, bool]], package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """{importer: {imported flamefit module: first line}} over all imports of every module."""
    graph: dict[str, dict[str, int]] = {}
    for mod, (source, is_pkg) in modules.items():
        edges: dict[str, int] = {}

        def add(target: str, line: int, _edges=edges) -> None:
            if target == package or target.startswith(package + "."):
                _edges.setdefault(target, line)

        for node in ast.walk(ast.parse(source, filename=mod)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                src = (_resolve_relative(mod, is_pkg, node.level, node.module) if node.level
                       else node.module or "")
                for alias in node.names:
                    sub = f"{src}.{alias.name}"
                    add(sub if sub in modules else src, node.lineno)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "import_module" and node.args
                  and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                add(node.args[0].value, node.lineno)
        edges.pop(mod, None)
        graph[mod] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]], ignore: set[frozenset[str]] | None = None) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component with more than one module (Tarjan),
    except components whose module set is in ``ignore``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # recursion depth <= number of modules (~100)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in graph:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    cycles = []
    for comp in sccs:
        members = set(comp)
        if ignore and frozenset(members) in ignore:
            continue
        start = min(comp)
        # breadth-first search for the shortest path start -> ... -> start inside the component
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        found = v
                        break
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def layer_of(module: str, package: str = PACKAGE) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else package


def forbidden_arrows(graph: dict[str, dict[str, int]], forbidden=None, base=None, package: str = PACKAGE,
                     known: dict[tuple[str, str], str] | None = None) -> list[str]:
    """'importer:line -> imported (layer -> layer)' for every arrow the layer rules forbid, except ``known``
    (importer, imported) pairs."""
    forbidden = FORBIDDEN if forbidden is None else forbidden
    base = BASE if base is None else base
    known = known or {}
    out = []
    for mod in sorted(graph):
        src = layer_of(mod, package)
        for target, line in sorted(graph[mod].items()):
            dst = layer_of(target, package)
            if dst == src or (mod, target) in known:
                continue
            bad = dst in forbidden.get(src, set()) or (src in base and dst not in base[src])
            if bad:
                out.append(f"{mod}:{line} -> {target} ({src} must not import {dst})")
    return out


# ------------------------------------------------------------------------------------------------ the tree


@pytest.fixture(scope="module")
def graph():
    modules = discover()
    assert len(modules) > 30 and f"{PACKAGE}.render.camera" in modules
    return import_graph(modules)


def test_no_import_cycles_between_flamefit_modules(graph):
    cycles = find_cycles(graph, ignore=set(KNOWN_CYCLES))  # a known cycle that grows is reported
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_arrow_goes_up_the_layers(graph):
    bad = forbidden_arrows(graph, known=KNOWN_VIOLATIONS)
    assert not bad, "forbidden imports (docs/ARCHITECTURE.md):\n" + "\n".join(bad)


def test_known_violations_still_exist(graph):
    # the list only shrinks: once an arrow is gone, its entry must go too (so it cannot come back unnoticed)
    gone = [f"{a} -> {b}" for a, b in KNOWN_VIOLATIONS if b not in graph.get(a, {})]
    cycles = {frozenset(c) for c in find_cycles(graph)}
    gone += [" <-> ".join(sorted(c)) for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, "fixed, now delete from KNOWN_VIOLATIONS/KNOWN_CYCLES in tests/test_architecture.py: " \
        + ", ".join(gone)
    still_bad = forbidden_arrows(graph)
    assert len(still_bad) >= len(KNOWN_VIOLATIONS)


# Renames onto a target (os.replace / os.rename) outside flamefit._files, by (module, enclosing function): every
# atomic write goes through flamefit._files (atomic_path, atomic_write_bytes/_text), so none is hand-rolled again.
ALLOWED_RENAMES: dict[tuple[str, str], str] = {
    (f"{PACKAGE}.io.outputs", "OutputSet.publish"): "moves already finished, staged files into place (no write)",
}


def renames(source: str, filename: str = "<source>") -> list[tuple[str, int]]:
    """(enclosing function's qualified name, line) of every ``os.replace``/``os.rename`` call and every
    ``from os import replace/rename``."""
    out: list[tuple[str, int]] = []

    class Visitor(ast.NodeVisitor):
        def __init__(self):
            self.scope: list[str] = []

        def _scoped(self, node):
            self.scope.append(node.name)
            self.generic_visit(node)
            self.scope.pop()

        visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

        def visit_Call(self, node):
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr in ("replace", "rename") and isinstance(f.value, ast.Name)
                    and f.value.id == "os"):
                out.append((".".join(self.scope), node.lineno))
            self.generic_visit(node)

        def visit_ImportFrom(self, node):
            if node.module == "os" and any(a.name in ("replace", "rename") for a in node.names):
                out.append((".".join(self.scope), node.lineno))

    Visitor().visit(ast.parse(source, filename=filename))
    return out


def test_atomic_writes_go_through_files():
    found = {mod: renames(src, mod) for mod, (src, _) in discover().items() if mod != f"{PACKAGE}._files"}
    bad = [f"{mod}:{line} in {fn or '<module>'}" for mod, hits in sorted(found.items()) for fn, line in hits
           if (mod, fn) not in ALLOWED_RENAMES]
    assert not bad, "os.replace/os.rename outside flamefit._files (use its atomic_path/atomic_write_bytes):\n" \
        + "\n".join(bad)
    seen = {(mod, fn) for mod, hits in found.items() for fn, _ in hits}
    gone = [f"{m} {fn}" for m, fn in ALLOWED_RENAMES if (m, fn) not in seen]
    assert not gone, "no longer renames, delete from ALLOWED_RENAMES: " + ", ".join(gone)


def test_rename_checker_sees_calls_and_imports():
    src = ("import os\nclass A:\n    def f(self):\n        os.replace('a', 'b')\n"
           "def g():\n    from os import rename\n    'x'.replace('a', 'b')\n")
    assert renames(src) == [("A.f", 4), ("g", 6)]


def test_function_level_imports_are_seen(graph):
    # antialias imports the numba pass inside a function; the checker must see it
    assert f"{PACKAGE}.render._aa_numba" in graph[f"{PACKAGE}.render.antialias"]


# ------------------------------------------------------------------------------------------------ the checker itself


def _fake(**sources: str) -> dict[str, tuple[str, bool]]:
    """Module map from keyword sources: 'pkg__mod' -> pkg.mod; a name ending in '__init' is a package."""
    out = {}
    for key, src in sources.items():
        parts = key.split("__")
        is_pkg = parts[-1] == "init"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(["pkg", *parts])] = (src, is_pkg)
    return out


def test_checker_reports_a_cycle_through_a_function_level_and_a_relative_import():
    modules = _fake(
        a__init="",
        a__x="from pkg.a import y\n",
        a__y="def f():\n    from . import z\n",
        a__z="import pkg.a.x as xx\n",
        b__w="from pkg.a.x import something\n",
    )
    g = import_graph(modules, package="pkg")
    assert g["pkg.a.y"] == {"pkg.a.z": 2}  # relative, inside a function
    cycles = find_cycles(g)
    assert cycles == [["pkg.a.x", "pkg.a.y", "pkg.a.z", "pkg.a.x"]]
    assert find_cycles(g, ignore={frozenset({"pkg.a.x", "pkg.a.y", "pkg.a.z"})}) == []
    assert find_cycles(g, ignore={frozenset({"pkg.a.x", "pkg.a.y"})}) == cycles  # a grown cycle is not ignored


def test_checker_reports_forbidden_arrows_and_base_modules():
    modules = _fake(
        model__init="",
        model__flame="def f():\n    import importlib\n    importlib.import_module('pkg.render.camera')\n",
        render__init="",
        render__camera="from ..errors import Oops\n",
        fit__init="",
        fit__api="from pkg.model import flame\nfrom pkg.render.camera import x\n",
        errors="",
        ibug68="from pkg import fit\n",
    )
    g = import_graph(modules, package="pkg")
    bad = forbidden_arrows(g, forbidden={"model": {"render"}, "render": {"model"}},
                           base={"errors": {"errors"}, "ibug68": {"errors"}}, package="pkg")
    assert bad == [
        "pkg.ibug68:1 -> pkg.fit (ibug68 must not import fit)",
        "pkg.model.flame:3 -> pkg.render.camera (model must not import render)",
    ]
    assert g["pkg.render.camera"] == {"pkg.errors": 1}  # '..' from a module resolves to the top package
    assert g["pkg.fit.api"] == {"pkg.model.flame": 1, "pkg.render.camera": 2}  # fit may import both
    assert not find_cycles(g)
