"""Import-graph counts of a checkout, read by ``tests/test_layers.py``'s own reader and layers:
module-level circles and imports that point up the layers (module imports and subpackage arrows).

Usage: python reports/scripts/import_graph.py OUT.json REV [REV ...]   (git revisions of this repository)
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def counts(layers_module, root: Path) -> dict:
    layers_module.REPO = root
    layers_module._graph.cache_clear()
    graph = layers_module._graph()
    up = []
    for module, targets in graph.items():
        layer, unit = layers_module._layer_of(module)
        for target in targets:
            target_layer, target_unit = layers_module._layer_of(target)
            if target_unit != unit and target_layer < layer:
                up.append((unit, target_unit, module, target))
    circles = layers_module._cycles(graph)
    return {
        "modules": len(graph),
        "circles": len(circles),
        "circle_sizes": [len(c) for c in circles],
        "upward_module_imports": len(up),
        "upward_subpackage_arrows": sorted({f"{a} -> {b}" for a, b, _, _ in up}),
    }


def main() -> None:
    out, revs = Path(sys.argv[1]), sys.argv[2:]
    spec = importlib.util.spec_from_file_location("test_layers", REPO / "tests" / "test_layers.py")
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    report = {"layers": [sorted(layer) for layer in layers.LAYERS], "revisions": {}}
    for rev in revs:
        with tempfile.TemporaryDirectory() as tmp:
            archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            report["revisions"][rev] = counts(layers, Path(tmp))
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["revisions"], indent=2))


if __name__ == "__main__":
    main()
