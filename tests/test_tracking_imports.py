"""iqs.tracking imports flow one way: no module imports one that (directly or through others) imports it.

The graph is read from the source with `ast`, lazy imports inside functions included, so a cycle that
only shows at call time is caught too. `from iqs.tracking import x` counts as importing the submodule `x`
when there is one, else the package's __init__ (which imports several modules itself).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

PACKAGE = "iqs.tracking"


def module_files(package: str) -> dict[str, Path]:
    pkg = importlib.import_module(package)
    files = {package: Path(pkg.__file__)}
    for info in pkgutil.iter_modules(pkg.__path__):
        spec = importlib.util.find_spec(f"{package}.{info.name}")
        files[f"{package}.{info.name}"] = Path(spec.origin)
    return files


def imported_modules(path: Path, package: str, known: set[str]) -> set[str]:
    """The modules of `known` that the file at `path` imports anywhere in its body."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == package:
                for alias in node.names:
                    sub = f"{package}.{alias.name}"
                    out.add(sub if sub in known else package)
            elif node.module in known:
                out.add(node.module)
    return out


def import_graph(package: str) -> dict[str, set[str]]:
    files = module_files(package)
    return {name: imported_modules(path, package, set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with a colouring)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_accepts_a_dag() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_tracking_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    # the graph is really read: these edges exist (a parser that saw nothing would pass vacuously)
    assert "iqs.tracking.mlflow_run" in graph["iqs.tracking.artifacts"]
    assert "iqs.tracking.config_view" in graph["iqs.tracking.store"]  # a lazy import, inside a function
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize(
    "low", ["iqs.tracking.config_view", "iqs.tracking.naming", "iqs.tracking.mlflow_run"]
)
def test_low_layers_do_not_import_what_logs_through_them(low: str) -> None:
    graph = import_graph(PACKAGE)
    high = {"iqs.tracking.artifacts", "iqs.tracking.plots", "iqs.tracking.model_card", PACKAGE}
    assert not graph[low] & high, f"{low} imports {sorted(graph[low] & high)}"
