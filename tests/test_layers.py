"""The import graph of the whole project: no circles, and imports only point down the layers.

Read from the source with ``ast`` (function-level and ``TYPE_CHECKING`` imports count too: an import
hidden in a function still ties two modules together). The layers, from the top:

* entry points: ``cli`` (and a server), then ``bench`` and ``demo``;
* the drivers of models: ``train`` above ``eval``; the scene benchmark (``scenes``) and the
  report helpers (``reports``) serve them;
* ``api`` (build and open an index), then ``agent`` (the loops: session, dialogue);
* ``stages`` (one module per stage, the registry, the runner);
* what stages use: the identifier model (``genid``), the language-model plumbing (``llm``), the
  index store (``store``);
* ``config`` and ``progress``; then ``adapters`` (one module per model family); then ``errors``.

Modules of one layer may import each other as long as that makes no circle.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"viewfinder": "viewfinder", "pipeline": "viewfinder.pipeline", "adapters": "viewfinder.adapters"}

LAYERS: list[set[str]] = [
    {"pipeline.cli", "pipeline.serve"},
    {"pipeline.bench", "pipeline.demo"},
    {"pipeline.train"},
    {"pipeline.eval"},
    {"pipeline.scenes", "pipeline.reports"},
    {"pipeline.api"},
    {"pipeline.agent"},
    {"pipeline.stages"},
    {"pipeline.genid"},
    {"pipeline.llm", "pipeline.store"},
    {"pipeline.config", "pipeline.progress"},
    {"pipeline"},  # the package's own __init__: lazy exports only
    {"adapters"},
    {"errors", "viewfinder"},
]


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module by its installed name (without the leading ``viewfinder.``): (file, is package)."""
    found = {}
    for folder, package in ROOTS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found[".".join([package, *parts]).removeprefix("viewfinder.") or "viewfinder"] = (path, is_package)
    return found


def _imports(name: str, path: Path, is_package: bool, modules: dict) -> Iterator[str]:
    package = ("viewfinder." + name if name != "viewfinder" else name).split(".")
    if not is_package:
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            short = candidate.removeprefix("viewfinder.") if candidate != "viewfinder" else candidate
            if short in modules and short != name:
                yield short


@functools.cache
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imports(name, path, is_pkg, modules)) for name, (path, is_pkg) in modules.items()}


def _layer_of(module: str) -> tuple[int, str]:
    """(layer index, the unit it belongs to): the longest prefix named in :data:`LAYERS`."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        unit = ".".join(parts[:n])
        for i, layer in enumerate(LAYERS):
            if unit in layer:
                return i, unit
    raise AssertionError(f"{module} belongs to no layer: add its subpackage to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circles() -> None:
    graph = _graph()
    assert {"pipeline.stages.registry", "pipeline.llm.ask", "adapters.entries"} <= set(graph)
    assert _cycles(graph) == []


def test_imports_only_point_down_the_layers() -> None:
    upward = []
    for module, targets in _graph().items():
        layer, unit = _layer_of(module)
        for target in targets:
            target_layer, target_unit = _layer_of(target)
            if target_unit != unit and target_layer < layer:
                upward.append(f"{module} -> {target}")
    assert sorted(upward) == []


def test_units_of_one_layer_import_each_other_without_circles() -> None:
    units: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        unit = _layer_of(module)[1]
        units.setdefault(unit, set()).update(_layer_of(t)[1] for t in targets)
    assert _cycles({unit: deps - {unit} for unit, deps in units.items()}) == []


def test_the_agent_and_the_stages_never_know_the_benchmark() -> None:
    """``scenes`` (the benchmark's vocabulary and its simulated user) sits above them: stated once more
    here because it is the rule the layers exist for."""
    for module, targets in _graph().items():
        if module.startswith(("pipeline.agent", "pipeline.stages", "pipeline.llm", "pipeline.store", "adapters")):
            assert not [t for t in targets if t.startswith("pipeline.scenes")], module


def test_every_third_party_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = [spec for name, specs in project["optional-dependencies"].items() if name != "dev" for spec in specs]
    declared = {  # an extra's package (ray) is imported only where it is used, with a clear error without it
        re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower().replace("_", "-")
        for spec in [*project["dependencies"], *extras]
    }
    providers = metadata.packages_distributions()
    stdlib = set(__import__("sys").stdlib_module_names)
    missing = set()
    for folder in ROOTS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in stdlib or top == "viewfinder":
                        continue
                    dists = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
                    if not dists & declared:
                        missing.add(f"{top} ({path.relative_to(REPO)})")
    assert sorted(missing) == []


def _string_constants(path: Path) -> Iterator[str]:
    """The string literals of a module that are no docstring (a string standing as a statement)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.value


def test_the_dialogue_agent_holds_no_scene_vocabulary() -> None:
    """Nothing under ``pipeline/agent`` or ``pipeline/stages`` imports the scene benchmark, at the top
    or inside a function (checked on each file's own syntax tree, also for ``import_module`` names),
    and the agent's code names no word of its vocabulary: its questions come from captions."""
    from viewfinder.pipeline.scenes.graph import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES

    for folder in ("pipeline/agent", "pipeline/stages"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or "", *(alias.name for alias in node.names)]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                assert not [n for n in names if n == "scenes" or ".scenes" in f".{n}"], f"{path}:{node.lineno}"
            assert not [s for s in _string_constants(path) if re.search(r"\bpipeline\.scenes\b|^\.+scenes\b", s)]
    scene_words = {w for phrase in [*COLOURS, *SHAPES, *SIZES, *POSITIONS, *BACKGROUNDS] for w in phrase.split()}
    scene_words |= {"colour", "color", "shape", "size", "position", "background", "backdrop"}  # the old templates'
    for path in sorted((REPO / "pipeline/agent").rglob("*.py")):
        words = {w for s in _string_constants(path) for w in re.findall(r"[a-z]+", s.lower())}
        assert not words & scene_words, f"{path.name}: {sorted(words & scene_words)}"
