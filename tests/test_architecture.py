"""The house plan's arrows (docs/ARCHITECTURE.md), checked on the source: no import cycles between flamefit
modules and no arrow up the layers.

The rules come from ONE ordered list, :data:`LAYERS`, low to high. Each entry is a level: a tuple of layers that
know nothing of each other. A module may import its own layer and the layers of LOWER levels, nothing else: not a
peer on its own level, not anything above. :data:`FORBIDDEN` is built from that list, never written by hand.

A layer is named by its path below ``flamefit`` (``"fit"``: the package ``flamefit.fit`` and everything in it;
``"io.outputs"``: that one module); a module belongs to the longest name that is a prefix of it, so
``flamefit.io.outputs`` is in ``"io.outputs"`` and ``flamefit.io.results`` in ``"io"``. The package's own
``__init__`` is the layer ``"__init__"``.

Every module under ``flamefit/`` is parsed with ``ast``; an arrow is
- every ``import``/``from ... import``, wherever it is written (module level, inside functions, under
  ``if TYPE_CHECKING``), relative imports resolved. ``from pkg import name`` is an arrow to the module
  ``pkg.name`` when that is a module, else to ``pkg``. Importing ``a.b.c`` is an arrow to ``a.b.c`` only, not to
  the packages above it (Python runs their ``__init__`` first, but a package's ``__init__`` that re-exports its own
  submodules would otherwise look like a cycle with each of them);
- a string constant that is exactly a flamefit module's name, optionally with ``:attribute``: the lazy tables
  (``importlib.import_module(TABLE[name])``: the CLI's subcommands, the package's lazy exports, a job's worker
  named in its run spec, ``"flamefit.jobs.photo:FitWorker"``) reach modules by name, and that is a dependency as
  much as an import is;
- an f-string that starts with a flamefit package's name and a dot (``f"flamefit.bench.{name}"``): an arrow to
  that package.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "flamefit"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# The house plan, low to high. Each tuple is one level; its layers must not import each other.
LAYERS: list[tuple[str, ...]] = [
    # leaves: import nothing of flamefit. Then io.outputs (atomic output sets, completion records): it knows no
    # domain and is what run's skip-finished and every writer (track, texspace, io.results) build on, so it sits
    # down here and not with the rest of io, which writes fit results and so sits above fit.
    ("errors", "_numba", "_files", "ibug68"),  # _files: the one atomic write and cache folder
    ("io.outputs",),  # writes through _files
    ("assets",),  # asset lookup (imports errors); model, observe, run.spec and the commands resolve files with it
    # each knows one thing and none the others: model FLAME (not images), render triangles (not faces), observe
    # images (not FLAME), run items and executors (not faces: the jobs above bind the domains to it).
    # run is down here, not above the domain layers, because "run knows no domain" is exactly what must be
    # checked: above fit it could import fit freely.
    ("render", "model", "observe", "run"),
    ("derive",),  # planned: derivations that need observe and model (fit/derived68.py, fit/correspondence.py)
    ("fit",),  # where model, render and observe meet: targets, params, terms, stages, the one solver
    ("track", "texspace"),  # clients of fit; neither imports the other
    ("io",),  # results and detections files (io.results imports fit.api / fit.config)
    ("jobs", "report"),  # jobs bind photo/track/texspace to run (and write via io); report (planned) reads results
    ("__init__",),  # the package's facade (lazy exports of model)
    ("bench",),  # measurements of everything below; commands/bench_cmd dispatches to it
    ("commands",),
    ("cli",),  # names the commands' modules in its lazy table
    ("__main__",),
]
# Layers of the plan not written yet (the list names them so they land in their place); the test fails when one
# appears, to move it out of here.
PLANNED = {"derive", "report"}


def levels(layers: list[tuple[str, ...]]) -> dict[str, int]:
    """{layer: its level (index in ``layers``)}; a layer named twice is an error."""
    out: dict[str, int] = {}
    for i, level in enumerate(layers):
        for name in level:
            assert name not in out, f"layer {name!r} is listed twice"
            out[name] = i
    return out


def forbidden_from(layers: list[tuple[str, ...]]) -> dict[str, set[str]]:
    """layer -> the layers it must not import: its peers and every layer above."""
    lv = levels(layers)
    return {src: {dst for dst, j in lv.items() if j >= lv[src] and dst != src} for src in lv}


FORBIDDEN: dict[str, set[str]] = forbidden_from(LAYERS)

# Arrows that break the rules today, each with the way out (listed so that the suite passes meanwhile). Only ever
# shrinks: a new violation fails test_no_arrow_goes_up_the_layers, and an entry here that no longer occurs (or is
# no longer forbidden) fails test_known_violations_still_exist (delete it then).
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}
# Import cycles known (each a set of modules), with the way out; the same only-shrinks rule.
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
    """{importer: {imported package module: first line}} over all arrows of every module (see the docstring)."""
    by_name = re.compile(rf"{re.escape(package)}(\.\w+)+(:\w+)?")
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
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and by_name.fullmatch(node.value):
                name = node.value.split(":")[0]
                if name in modules:
                    add(name, node.lineno)
            elif (isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant)
                  and isinstance(node.values[0].value, str) and node.values[0].value.endswith(".")
                  and node.values[0].value[:-1] in modules):
                add(node.values[0].value[:-1], node.lineno)
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

    def strongconnect(v: str) -> None:  # recursion depth <= number of modules (~150)
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


def layer_of(module: str, layers: list[tuple[str, ...]] | None = None, package: str = PACKAGE) -> str | None:
    """The layer of ``module``: the longest layer name that is a prefix of its path below the package
    (``"__init__"`` for the package itself); None when no layer claims it."""
    names = levels(LAYERS if layers is None else layers)
    rel = module.split(".")[1:]
    if not rel:
        return "__init__" if "__init__" in names else None
    for n in range(len(rel), 0, -1):
        name = ".".join(rel[:n])
        if name in names:
            return name
    return None


def forbidden_arrows(graph: dict[str, dict[str, int]], layers: list[tuple[str, ...]] | None = None,
                     package: str = PACKAGE, known: dict[tuple[str, str], str] | None = None) -> list[str]:
    """'importer:line -> imported (layer must not import layer)' for every arrow the layer list forbids (to a peer
    or upwards), except ``known`` (importer, imported) pairs. Modules outside every layer are not judged here
    (test_every_module_has_a_layer reports them)."""
    layers = LAYERS if layers is None else layers
    forbidden = forbidden_from(layers)
    known = known or {}
    out = []
    for mod in sorted(graph):
        src = layer_of(mod, layers, package)
        for target, line in sorted(graph[mod].items()):
            dst = layer_of(target, layers, package)
            if src is None or dst is None or (mod, target) in known:
                continue
            if dst in forbidden[src]:
                out.append(f"{mod}:{line} -> {target} ({src} must not import {dst})")
    return out


def stale_known(graph: dict[str, dict[str, int]], known: dict[tuple[str, str], str],
                known_cycles: dict[frozenset[str], str], layers: list[tuple[str, ...]] | None = None,
                package: str = PACKAGE) -> list[str]:
    """The entries of ``known`` / ``known_cycles`` that no longer hold: the arrow is gone or is allowed now, the
    cycle is gone or has changed its set of modules."""
    layers = LAYERS if layers is None else layers
    forbidden = forbidden_from(layers)
    out = []
    for a, b in known:
        src, dst = layer_of(a, layers, package), layer_of(b, layers, package)
        if b not in graph.get(a, {}):
            out.append(f"{a} -> {b} (gone)")
        elif src is None or dst is None or dst not in forbidden[src]:
            out.append(f"{a} -> {b} (allowed by the layer list)")
    cycles = {frozenset(c) for c in find_cycles(graph)}
    out += [" <-> ".join(sorted(c)) + " (no longer that cycle)" for c in known_cycles if c not in cycles]
    return out


# ------------------------------------------------------------------------------------------------ the tree


@pytest.fixture(scope="module")
def modules():
    out = discover()
    assert len(out) > 30 and f"{PACKAGE}.render.camera" in out
    return out


@pytest.fixture(scope="module")
def graph(modules):
    return import_graph(modules)


def test_no_import_cycles_between_flamefit_modules(graph):
    cycles = find_cycles(graph, ignore=set(KNOWN_CYCLES))  # a known cycle that grows is reported
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_arrow_goes_up_the_layers(graph):
    bad = forbidden_arrows(graph, known=KNOWN_VIOLATIONS)
    assert not bad, "forbidden imports (docs/ARCHITECTURE.md, LAYERS here):\n" + "\n".join(bad)


def test_known_violations_still_exist(graph):
    # the lists only shrink: once an arrow or cycle is gone, its entry must go too (so it cannot come back
    # unnoticed); with both lists empty this is the plain rule: no violation, no cycle
    stale = stale_known(graph, KNOWN_VIOLATIONS, KNOWN_CYCLES)
    assert not stale, "fixed, now delete from KNOWN_VIOLATIONS/KNOWN_CYCLES in tests/test_architecture.py:\n" \
        + "\n".join(stale)
    if not KNOWN_VIOLATIONS:
        assert not forbidden_arrows(graph)
    if not KNOWN_CYCLES:
        assert not find_cycles(graph)


def test_every_module_has_a_layer(modules):
    # a new top-level module or package must be given its place in LAYERS, else no rule would apply to it
    homeless = sorted(m for m in modules if layer_of(m) is None)
    assert not homeless, "modules in no layer (add them to LAYERS): " + ", ".join(homeless)


def test_layer_list_names_real_modules_or_planned_ones(modules):
    names = levels(LAYERS)
    missing = sorted(n for n in names if n != "__init__" and f"{PACKAGE}.{n}" not in modules and n not in PLANNED)
    assert not missing, "LAYERS names what does not exist (a typo? else add to PLANNED): " + ", ".join(missing)
    arrived = sorted(n for n in PLANNED if f"{PACKAGE}.{n}" in modules)
    assert not arrived, "planned layers that exist now (remove from PLANNED): " + ", ".join(arrived)
    assert PLANNED <= set(names)


def test_function_level_and_by_name_arrows_are_seen(graph):
    # antialias imports the numba pass inside a function; the CLI and the package reach modules by name from lazy
    # tables; the bench command by an f-string; a job names its worker ("module:attr") for the run spec
    assert f"{PACKAGE}.render._aa_numba" in graph[f"{PACKAGE}.render.antialias"]
    assert f"{PACKAGE}.commands.fit_cmd" in graph[f"{PACKAGE}.cli"]
    assert f"{PACKAGE}.model.flame" in graph[PACKAGE]
    assert f"{PACKAGE}.bench" in graph[f"{PACKAGE}.commands.bench_cmd"]
    assert f"{PACKAGE}.jobs.photo" in graph[f"{PACKAGE}.commands.fit_cmd"]


def test_run_layer_names_no_job_and_imports_no_domain(graph):
    # the generic machinery (items, specs, the worker protocol, executors, the runner, progress) knows no domain
    # and no job: the jobs name their workers, the run layer only imports what a spec names
    allowed = {f"{PACKAGE}.{m}" for m in ("errors", "_files", "assets", "io.outputs")}
    for mod, edges in graph.items():
        if mod == f"{PACKAGE}.run" or mod.startswith(f"{PACKAGE}.run."):
            outside = sorted(t for t in edges if not (t == f"{PACKAGE}.run" or t.startswith(f"{PACKAGE}.run."))
                             and t not in allowed)
            assert not outside, f"{mod} imports {outside}"


# ------------------------------------------------------------------------------------------------ the checker itself


def _fake(**sources: str) -> dict[str, tuple[str, bool]]:
    """Module map from keyword sources: 'pkg__mod' -> pkg.mod; a name ending in '__init' is a package, 'init' is
    the top package's own ``__init__``."""
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


def test_checker_reports_a_cycle_through_a_lazy_table():
    modules = _fake(
        reg="WORKERS = {'fit': 'pkg.impl:FitWorker'}\n",  # by name, as run.worker does
        impl="from pkg.reg import WORKERS\n",
        cmd="import importlib\ndef f(n):\n    return importlib.import_module(f'pkg.sub.{n}')\n",
        sub__init="",
        doc='"""See pkg.impl for the worker."""\nx = "pkg.nothing_here"\n',  # prose and non-modules: no arrow
    )
    g = import_graph(modules, package="pkg")
    assert g["pkg.reg"] == {"pkg.impl": 1}
    assert g["pkg.cmd"] == {"pkg.sub": 3}
    assert g["pkg.doc"] == {}
    assert find_cycles(g) == [["pkg.impl", "pkg.reg", "pkg.impl"]]


LOW_TO_HIGH = [("errors", "io.outputs"), ("render", "model"), ("fit",), ("io",), ("__init__",)]


def test_forbidden_is_built_from_the_layer_list():
    f = forbidden_from(LOW_TO_HIGH)
    assert f["errors"] == {"io.outputs", "render", "model", "fit", "io", "__init__"}
    assert f["model"] == {"render", "fit", "io", "__init__"}  # a peer and everything above
    assert f["fit"] == {"io", "__init__"}
    assert f["__init__"] == set()
    with pytest.raises(AssertionError, match="twice"):
        forbidden_from([("a",), ("b", "a")])
    assert FORBIDDEN == forbidden_from(LAYERS)
    assert "fit" in FORBIDDEN["run"] and "model" in FORBIDDEN["observe"] and "texspace" in FORBIDDEN["track"]


def test_checker_reports_upward_and_peer_arrows_and_places_modules_by_longest_prefix():
    modules = _fake(
        init="def __getattr__(n):\n    import importlib\n    return importlib.import_module('pkg.fit.api')\n",
        errors="",
        model__init="",
        model__flame="def f():\n    import importlib\n    importlib.import_module('pkg.render.camera')\n",
        render__init="",
        render__camera="from ..errors import Oops\n",
        fit__init="",
        fit__api="from pkg.model import flame\nfrom pkg.render.camera import x\nfrom pkg.io import results\n",
        io__init="",
        io__outputs="from pkg.io.results import y\n",
        io__results="from pkg.io.outputs import OutputSet\nfrom pkg.fit import api\n",
        extra="import pkg.fit\n",  # in no layer: not judged here (test_every_module_has_a_layer reports it)
    )
    g = import_graph(modules, package="pkg")
    assert layer_of("pkg.io.outputs", LOW_TO_HIGH) == "io.outputs"
    assert layer_of("pkg.io.results", LOW_TO_HIGH) == "io"
    assert layer_of("pkg.io", LOW_TO_HIGH) == "io"
    assert layer_of("pkg", LOW_TO_HIGH) == "__init__"
    assert layer_of("pkg.extra", LOW_TO_HIGH) is None
    bad = forbidden_arrows(g, layers=LOW_TO_HIGH, package="pkg")
    assert bad == [
        "pkg.fit.api:3 -> pkg.io.results (fit must not import io)",
        "pkg.io.outputs:1 -> pkg.io.results (io.outputs must not import io)",
        "pkg.model.flame:3 -> pkg.render.camera (model must not import render)",
    ]
    assert g["pkg.render.camera"] == {"pkg.errors": 1}  # '..' from a module resolves to the top package
    assert g["pkg"] == {"pkg.fit.api": 3}  # the package may import anything below it
    known = {("pkg.model.flame", "pkg.render.camera"): "why"}
    assert len(forbidden_arrows(g, layers=LOW_TO_HIGH, package="pkg", known=known)) == 2


def test_checker_reports_known_entries_that_no_longer_hold():
    modules = _fake(errors="", fit__init="", fit__api="import pkg.model\n", model__init="import pkg.fit.api\n")
    g = import_graph(modules, package="pkg")
    layers = [("errors",), ("model",), ("fit",)]
    cycle = frozenset({"pkg.fit.api", "pkg.model"})
    assert forbidden_arrows(g, layers=layers, package="pkg") == ["pkg.model:1 -> pkg.fit.api (model must not "
                                                                  "import fit)"]
    ok = {("pkg.model", "pkg.fit.api"): "why"}
    assert stale_known(g, ok, {cycle: "why"}, layers, "pkg") == []
    gone = {("pkg.fit.api", "pkg.errors"): "why"}  # no such arrow
    assert stale_known(g, gone, {}, layers, "pkg") == ["pkg.fit.api -> pkg.errors (gone)"]
    allowed = {("pkg.fit.api", "pkg.model"): "why"}  # exists, but downwards
    assert stale_known(g, allowed, {}, layers, "pkg") == ["pkg.fit.api -> pkg.model (allowed by the layer list)"]
    grown = frozenset({"pkg.fit.api", "pkg.model", "pkg.errors"})
    assert stale_known(g, {}, {grown: "why"}, layers, "pkg") == \
        ["pkg.errors <-> pkg.fit.api <-> pkg.model (no longer that cycle)"]


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
