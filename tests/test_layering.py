"""The module layering: no import cycles, and every module placed in a layer.

The contracts themselves are import-linter's (pyproject.toml, run by ``./dev lint``); these
tests keep them honest: a module that no contract names would be free to import anything.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def _graph(*, type_checking: bool) -> grimp.ImportGraph:
    return grimp.build_graph("worker", exclude_type_checking_imports=not type_checking,
                             cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(
                        graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    """No two worker modules import each other, directly or round a loop (lazy imports too)."""
    assert _cycles(_graph(type_checking=False)) == []


def test_cycle_finder_finds_a_cycle() -> None:
    """The cycle finder is not vacuous: the simulator's annotation-only loop is one."""
    assert ["worker.simulator.control", "worker.simulator.server"] in _cycles(
        _graph(type_checking=True))


def _layer_modules() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return {name.strip() for layer in layers["layers"]
            for name in layer.replace(":", "|").split("|")}


def test_every_module_is_in_a_layer() -> None:
    """Each worker module is named by the layers contract or sits in a package it names
    (the simulator, a test and demo tool, has its own contract)."""
    graph = _graph(type_checking=True)
    named = _layer_modules() | {"worker.simulator"}
    unplaced = sorted(m for m in graph.modules - {"worker", "worker.archive", "worker.webhooks"}
                      if not any(m == n or m.startswith(n + ".") for n in named))
    assert unplaced == []


def test_layers_name_real_modules() -> None:
    """Every name in the layers contract is a module that exists (no stale entries)."""
    assert _layer_modules() - _graph(type_checking=True).modules == set()
