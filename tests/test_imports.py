"""Imports run one way: no cycle between segkit's modules, and inference draws nothing."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import segkit

PACKAGE = Path(segkit.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The segkit modules an ``import`` or ``from … import …`` statement names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolved against the importing module's package
        package = module.split(".")[: len(module.split(".")) - node.level + is_package]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module
    # ``from segkit import labels`` names a module; ``from segkit.labels import colorize`` does not
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """segkit module -> the segkit modules it imports anywhere in its source: at the top, inside
    functions and under ``if TYPE_CHECKING:`` alike (a delayed import still ties the two)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for node in ast.walk(tree):
            targets.update(t for t in _imported(node, module, path.name == "__init__.py")
                           if t in paths and t != module)
        # a package's __init__ runs before its submodules: importing segkit.models.x imports models
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, …, a], or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_sees_function_level_and_type_checking_imports():
    graph = import_graph()
    assert "segkit.engine" in graph["segkit.inference"]
    assert "segkit.labels" in graph["segkit.engine"]
    assert "segkit.models.registry" in graph["segkit.inference"]


def test_segkit_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "segkit modules import each other in a circle: " + " -> ".join(cycle)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_datasets_do_not_import_distributed_training():
    assert "segkit.distributed" not in reachable(import_graph(), "segkit.datasets")


def test_training_and_the_planner_do_not_import_the_benchmarks():
    """The step and what runs it before a run live in segkit.step; bench only measures."""
    graph = import_graph()
    for module in ("segkit.training", "segkit.engine", "segkit.planner", "segkit.context"):
        assert "segkit.bench" not in reachable(graph, module)
    assert "segkit.step" in graph["segkit.engine"] and "segkit.step" in graph["segkit.planner"]


@pytest.mark.parametrize("module", ["segkit.inference", "segkit.callbacks"])
def test_module_imports_no_plotting_library(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('matplotlib', 'seaborn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "[]", f"import {module} pulled in {result.stdout.strip()}"
