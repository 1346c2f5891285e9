"""No import cycle among shapemask_ros modules (issue 25): a static scan of every import statement, lazy ones
and `if TYPE_CHECKING:` blocks included (a cycle hidden there still ties two modules into one unit)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from support import REPO

PACKAGE = REPO / "shapemask_ros"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: modules of the package it imports}; `from pkg import name` counts as pkg.name when that
    is a module, else as pkg (a name defined in pkg/__init__.py)."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}
    top = root.name
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names
                ]
            for name in names:
                if name.split(".")[0] == top and name in files and name != mod:
                    graph[mod].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_among_package_modules():
    graph = import_graph()
    assert len(graph) >= 60 and any(graph.values()), "the scan found too few modules or imports"
    assert cycles(graph) == []


def test_the_scan_finds_a_cycle_behind_type_checking(tmp_path):
    pkg = tmp_path / "shapemask_ros"
    (pkg / "bag").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "bag" / "__init__.py").write_text("")
    (pkg / "bag" / "a.py").write_text("from shapemask_ros.bag import b\n")
    (pkg / "bag" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shapemask_ros.bag.a import X\n"
    )
    (pkg / "bag" / "c.py").write_text("import shapemask_ros.bag.a\n")
    assert cycles(import_graph(pkg)) == [["shapemask_ros.bag.a", "shapemask_ros.bag.b"]]
