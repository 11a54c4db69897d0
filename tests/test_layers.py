"""The import-layer contract (pyproject.toml, [tool.importlinter]) and an import graph without cycles.

The graph is grimp's, the one import-linter checks: every import statement in
the package, including those inside functions. A cycle between two modules, an
upward import (the library importing the driver or the CLI, a backend importing
a public op module, anything importing upwards into ``hilcore._core``'s
dependants) fails here.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")
pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [c for c in cfg["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return layers["layers"]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("hilcore", include_external_packages=False)


def cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack, on_stack, out = [], set(), []
    counter = 0
    for start in adj:
        if start in index:
            continue
        work = [(start, iter(adj[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(adj.get(w, ()))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _illegal(graph) -> set:
    from grimp import Layer

    layers = []
    for raw in _layers():
        names = [n.strip().strip("()") for n in raw.split(":")]
        layers.append(Layer(*names, independent=False))
    return graph.find_illegal_dependencies_for_layers(layers=layers, containers={"hilcore"})


def test_lint_imports_contracts_pass():
    from importlinter.cli import lint_imports

    cwd = os.getcwd()
    os.chdir(ROOT)  # the contract is read from pyproject.toml at the repository root
    try:
        assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
    finally:
        os.chdir(cwd)


def test_no_import_cycle_between_modules(graph):
    assert cycles(graph) == []


def test_library_never_imports_the_driver_or_the_cli(graph):
    driver = ("hilcore.train", "hilcore.cli")
    bad = [(m, w) for m in graph.modules if not m.startswith(driver)
           for w in graph.find_modules_directly_imported_by(m) if w.startswith(driver)]
    assert bad == []


def test_core_is_a_leaf(graph):
    assert graph.find_modules_directly_imported_by("hilcore._core") == set()


def test_layers_hold_and_an_added_upward_import_or_cycle_is_caught(graph):
    assert _illegal(graph) == set()
    g = grimp.build_graph("hilcore", include_external_packages=False)  # a fresh graph to mutate
    g.add_import(importer="hilcore.backend.torch.jaccard", imported="hilcore.jaccard")  # backend -> op module
    assert _illegal(g)
    assert cycles(g) == []  # upward, but not (yet) a cycle
    g.add_import(importer="hilcore._core", imported="hilcore.backend.torch.jaccard")
    g.add_import(importer="hilcore.jaccard", imported="hilcore._core")
    assert any({"hilcore._core", "hilcore.jaccard"} <= set(c) for c in cycles(g))


def _private_imports(path: Path, package: str) -> list[str]:
    """``name`` for every ``from X import _name`` / ``import X._name`` in ``path`` that reaches into another
    module's private names (an underscore module of hilcore itself, e.g. ``hilcore._arrays``, is the
    package's internal API and may be imported; a private function or class of it may not)."""
    import ast
    import importlib.util

    bad = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module
            for alias in node.names:
                if not alias.name.startswith("_"):
                    continue
                try:  # a submodule (hilcore._arrays) is allowed, a private attribute is not
                    is_module = importlib.util.find_spec(f"{base}.{alias.name}") is not None
                except ModuleNotFoundError:
                    is_module = False
                if not is_module:
                    bad.append(f"{path.name}: from {base} import {alias.name}")
    return bad


def test_distributed_adapters_import_no_private_name(tmp_path):
    """hilcore.distributed is thin adapters over public names (issue 20): no ``_name`` of another module."""
    pkg = ROOT / "hilcore" / "distributed"
    bad = [b for f in sorted(pkg.glob("*.py")) for b in _private_imports(f, "hilcore.distributed")]
    assert bad == []
    # the check itself catches one
    probe = tmp_path / "probe.py"
    probe.write_text("from hilcore.epoch import _epoch_result\nfrom hilcore import _arrays\n")
    assert _private_imports(probe, "hilcore.distributed") == ["probe.py: from hilcore.epoch import _epoch_result"]
