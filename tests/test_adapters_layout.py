"""The adapters' own import graph: no module imports one that (directly or not) imports it back.

Function-level imports count too: a cycle hidden in a function still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ADAPTERS = Path(__file__).resolve().parents[1] / "adapters"


def _graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in ADAPTERS.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        graph[name] = deps & set(modules)
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), list(graph[start])
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return False


def test_adapters_import_each_other_one_way_only() -> None:
    graph = _graph()
    assert {"entries", "package_file", "blip2_loading", "blip2_matcher", "blip2_captioner"} <= set(graph)
    cycles = sorted(name for name in graph if _reaches(graph, name, name))
    assert cycles == [], f"adapters modules in an import cycle: {cycles}"
    assert "entries" in graph["package_file"] and not _reaches(graph, "entries", "package_file")
