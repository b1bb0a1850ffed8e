"""The scripts behind the committed reports still import what they name from the package (a module
moved or a function renamed breaks them silently otherwise: they run only when a report is redone)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parents[1] / "reports" / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_every_viewfinder_import_of_a_report_script_resolves(script: Path) -> None:
    tree = ast.parse(script.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("viewfinder"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    f"{script.name}: {node.module} has no {alias.name}"
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("viewfinder"):
                    importlib.import_module(alias.name)


def test_the_agent_goals_table_is_written_from_the_committed_reports() -> None:
    import importlib.util as util

    path = Path(__file__).parents[1] / "reports" / "scripts" / "agent_table.py"
    spec = util.spec_from_file_location("agent_table", path)
    assert spec and spec.loader
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.tables(path.parents[1])
    assert text.count("| figure | measured | goal | met |") == 2 and "Dialogue" in text
