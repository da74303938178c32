"""Architecture: the import graph of iqa_store, its layer rules, and the torch-free notebook face.

The graph is read from the source with ``ast`` (nothing is imported), so a rule also holds for
an import inside a function no test calls, and for imports under ``if TYPE_CHECKING:``: those
never run, so they are no edge for the cycle check, but a type-only dependency on a higher layer
still ties the layers together, so the layer rules count them.
"""

from __future__ import annotations

import ast
import enum
import importlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "iqa_store"


class Scope(enum.IntEnum):
    """When an import runs; nesting takes the later one (a function under TYPE_CHECKING never runs)."""

    MODULE = 0  # on import of the module (top level, class bodies, runtime if-branches)
    FUNCTION = 1  # when the enclosing function is called
    TYPE_CHECKING = 2  # never: only for static analysers


@dataclass(frozen=True)
class Import:
    importer: str  # the module whose source holds the statement
    target: str  # the iqa_store module loaded; a package when a name comes from its __init__
    path: str  # the importer's file, relative to the repository
    line: int
    scope: Scope

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.importer}) imports {self.target} [{self.scope.name}]"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(path): path for path in sorted((REPO / PACKAGE).rglob("*.py"))}
# the root counts as a package even without an __init__.py (a namespace package)
PACKAGES = {PACKAGE} | {name for name, path in MODULES.items() if path.name == "__init__.py"}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, path: Path) -> None:
        self.module, self.path = module, str(path.relative_to(REPO))
        self.scope = Scope.MODULE
        self.imports: list[Import] = []

    def _visit_in(self, scope: Scope, nodes: list[ast.stmt]) -> None:
        outer, self.scope = self.scope, max(self.scope, scope)
        for node in nodes:
            self.visit(node)
        self.scope = outer

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._visit_in(Scope.FUNCTION, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._visit_in(Scope.TYPE_CHECKING, node.body)
        self._visit_in(Scope.MODULE, node.orelse)  # the else branch is what runs

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._absolute(node)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in MODULES else base, node)

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self.module if self.module in PACKAGES else self.module.rpartition(".")[0]
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - (node.level - 1)])
        return f"{base}.{node.module}" if node.module else base

    def _add(self, target: str, node: ast.stmt) -> None:
        if _within(target, PACKAGE):
            self.imports.append(Import(self.module, target, self.path, node.lineno, self.scope))


def _within(module: str, unit: str) -> bool:
    return module == unit or module.startswith(unit + ".")


def _collect() -> list[Import]:
    imports: list[Import] = []
    for module, path in MODULES.items():
        collector = _Collector(module, path)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        imports.extend(collector.imports)
    return imports


IMPORTS = _collect()
# top-level packages and modules: iqa_store.store, iqa_store.api, ...
UNITS = sorted({".".join(name.split(".")[:2]) for name in MODULES if name != PACKAGE})


# ---------------------------------------------------------------------------------------------
# (a) no cycles among module-level imports


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component (Tarjan), as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_shortest_cycle(graph, component) for component in components]


def _shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first within the component, back to start
        following = []
        for node in frontier:
            for successor in sorted(graph.get(node, ())):
                if successor == start:
                    return paths[node] + [start]
                if successor in members and successor not in paths:
                    paths[successor] = paths[node] + [successor]
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def test_no_import_cycles_at_module_level() -> None:
    runtime = [i for i in IMPORTS if i.scope is Scope.MODULE and i.target != i.importer]
    graph: dict[str, set[str]] = {}
    line: dict[tuple[str, str], int] = {}
    for i in runtime:
        graph.setdefault(i.importer, set()).add(i.target)
        line.setdefault((i.importer, i.target), i.line)
    readable = [" -> ".join(f"{a} (line {line[a, b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"
                for cycle in _cycles(graph)]
    assert not readable, "import cycles among module-level imports:\n  " + "\n  ".join(readable)


def test_cycle_finder_reports_a_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]


# ---------------------------------------------------------------------------------------------
# (b) layer rules: importer (a package or module, its submodules included) -> what it must not import

_MODEL_LAYER_AND_ABOVE = ("iqa_store.extractors", "iqa_store.extraction", "iqa_store.train", "iqa_store.store",
                          "iqa_store.fit", "iqa_store.report", "iqa_store.api", "iqa_store.cli",
                          "iqa_store.pipeline")

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "iqa_store.store": ("iqa_store.extractors", "iqa_store.extraction", "iqa_store.train", "iqa_store.fit",
                        "iqa_store.report", "iqa_store.api", "iqa_store.cli", "iqa_store.pipeline"),
    "iqa_store.extractors": ("iqa_store.train", "iqa_store.store", "iqa_store.extraction", "iqa_store.fit",
                             "iqa_store.report", "iqa_store.api", "iqa_store.cli", "iqa_store.pipeline"),
    "iqa_store.train": ("iqa_store.extractors", "iqa_store.extraction", "iqa_store.fit", "iqa_store.report",
                        "iqa_store.api", "iqa_store.cli", "iqa_store.pipeline"),
    "iqa_store.fit": ("iqa_store.store", "iqa_store.extractors", "iqa_store.extraction", "iqa_store.train",
                      "iqa_store.report", "iqa_store.api", "iqa_store.cli", "iqa_store.pipeline"),
    **{base: _MODEL_LAYER_AND_ABOVE for base in ("iqa_store.nets", "iqa_store.images", "iqa_store.splits",
                                                   "iqa_store.datasets", "iqa_store.distortions", "iqa_store.texts",
                                                   "iqa_store.registry", "iqa_store.fingerprint")},
}

# Every unit but these and cli, a future one included, is below the api: it imports neither.
API_LEVEL = ("iqa_store.api", "iqa_store.pipeline")
# Only cli imports cli (and iqa_store/__init__.py, lazily).
CLI = "iqa_store.cli"


def _rules() -> list[tuple[str, str]]:
    rules = {(importer, forbidden) for importer, forbidden_ in FORBIDDEN.items() for forbidden in forbidden_}
    rules |= {(unit, CLI) for unit in UNITS if unit != CLI}
    rules |= {(unit, above) for unit in UNITS if unit not in (*API_LEVEL, CLI) for above in API_LEVEL}
    rules.add((PACKAGE, CLI))  # the root's own __init__, which may reach cli lazily only
    return sorted(rules)


def _breaks(i: Import, importer: str, forbidden: str) -> bool:
    if importer == PACKAGE:  # the root rule is about iqa_store/__init__.py alone, not the whole tree
        return i.importer == PACKAGE and _within(i.target, forbidden) and i.scope is not Scope.FUNCTION
    return _within(i.importer, importer) and _within(i.target, forbidden)


def _short(name: str) -> str:
    return name.removeprefix(f"{PACKAGE}.")


RULES = _rules()


@pytest.mark.parametrize(("importer", "forbidden"), RULES, ids=[f"{_short(a)}-not-{_short(b)}" for a, b in RULES])
def test_layer_rule(importer: str, forbidden: str) -> None:
    offending = [str(i) for i in IMPORTS if _breaks(i, importer, forbidden)]
    assert not offending, f"{importer} must not import {forbidden}:\n  " + "\n  ".join(offending)


def test_rule_table_names_are_real_modules() -> None:
    """A renamed package would otherwise leave its rules matching nothing, passing for ever."""
    named = set(FORBIDDEN) | {f for forbidden in FORBIDDEN.values() for f in forbidden} | {*API_LEVEL, CLI}
    missing = sorted(name for name in named if name not in MODULES)
    assert not missing, f"rule names with no module under {PACKAGE}/: {missing}"


def test_collector_resolves_relative_and_nested_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import FeatureStore\n"
        "from ..fit import metrics\n"
        "from .. import api\n"
        "if TYPE_CHECKING:\n"
        "    from iqa_store.extractors import Extractor\n"
        "else:\n"
        "    import iqa_store.registry\n"
        "def later():\n"
        "    from iqa_store.fit.regressors import REGRESSORS\n"
    )
    collector = _Collector("iqa_store.store.store", REPO / "iqa_store" / "store" / "store.py")
    collector.visit(ast.parse(source))
    assert [(i.target, i.line, i.scope) for i in collector.imports] == [
        ("iqa_store.store", 2, Scope.MODULE),  # a name of the package's __init__, not a submodule
        ("iqa_store.fit.metrics", 3, Scope.MODULE),
        ("iqa_store.api", 4, Scope.MODULE),
        ("iqa_store.extractors", 6, Scope.TYPE_CHECKING),
        ("iqa_store.registry", 8, Scope.MODULE),
        ("iqa_store.fit.regressors", 10, Scope.FUNCTION),
    ]


# ---------------------------------------------------------------------------------------------
# (c) the notebook face: import iqa_store stays light, its names resolve to their sources

HEAVY = ("torch", "open_clip", "transformers", "sklearn")


def _fresh_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_iqa_store_imports_no_model_library() -> None:
    loaded = json.loads(_fresh_python("import json, sys, iqa_store; print(json.dumps(sorted(sys.modules)))"))
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"import iqa_store imported {heavy}"


LAZY_SOURCES = {
    "extract": "iqa_store.api", "fit": "iqa_store.api", "train": "iqa_store.api",
    "FeatureStore": "iqa_store.store", "load_manifest": "iqa_store.datasets",
    "EXTRACTORS": "iqa_store.extractors", "DATASETS": "iqa_store.datasets", "REGRESSORS": "iqa_store.fit",
    "PROTOCOLS": "iqa_store.splits", "STAGES": "iqa_store.train",
}


def _api_has_train() -> bool:
    return hasattr(importlib.import_module("iqa_store.api"), "train")


@pytest.mark.parametrize("name", sorted(LAZY_SOURCES))
def test_lazy_name_is_the_object_at_its_source(name: str) -> None:
    if name == "train" and not _api_has_train():
        pytest.skip("iqa_store.api has no train yet")
    import iqa_store
    assert getattr(iqa_store, name) is getattr(importlib.import_module(LAZY_SOURCES[name]), name)


def test_all_and_dir_list_the_lazy_names() -> None:
    import iqa_store
    assert sorted(iqa_store.__all__) == sorted(LAZY_SOURCES)
    assert set(LAZY_SOURCES) <= set(dir(iqa_store))


def test_unknown_name_is_an_attribute_error_and_submodules_still_import() -> None:
    import iqa_store
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        iqa_store.nothing_here  # noqa: B018
    from iqa_store import api
    assert api is sys.modules["iqa_store.api"]


def test_fit_and_train_stay_the_api_functions_after_their_subpackages_load() -> None:
    # In a fresh interpreter, as a notebook would: the subpackages iqa_store.fit and iqa_store.train
    # load first (through the registries), which the import system would bind under those names.
    checks = ["iqa_store.fit is api.fit"] + (["iqa_store.train is api.train"] if _api_has_train() else [])
    out = _fresh_python("import iqa_store; iqa_store.REGRESSORS; iqa_store.STAGES; import iqa_store.fit.grid; "
                        f"from iqa_store import api; print({' and '.join(checks)})")
    assert out.strip() == "True"


def test_py_typed_is_shipped() -> None:
    assert (REPO / PACKAGE / "py.typed").is_file()
