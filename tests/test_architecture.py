"""The house's import rules (ARCHITECTURE.md): packages stand on floors and import only floors below
their own, and no module imports one that (directly or through others) imports it back.

The graph is read from the source with `ast`, lazy imports inside functions included, so an upward import
or a cycle that only shows at call time is caught too. `from iqs.x import y` counts as importing the
submodule `iqs.x.y` when there is one, else the module `iqs.x`. Hand-rolled (about 40 lines) rather than
import-linter: the same walk gives both the floor rule and the module-cycle rule, which a layers contract
alone does not check inside a package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# floor by floor, from the ground up; packages on one floor may not import each other
FLOORS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("metrics", "losses"),
    ("data",),
    ("models",),
    ("rebalance",),
    ("tracking",),
    ("report",),
    ("deploy",),
    ("train",),
    ("cli",),
    ("__main__",),  # `python -m iqs`: the console script
)
FLOOR = {pkg: level for level, pkgs in enumerate(FLOORS) for pkg in pkgs}


def module_files(root: Path = SRC / "iqs") -> dict[str, Path]:
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that the file at `path` imports anywhere in its body."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in known:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
    return out


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def package_of(module: str) -> str:
    return module.split(".")[1] if "." in module else module


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


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for every import of a package on the same or a higher floor than the importer's."""
    bad = []
    for module, targets in sorted(graph.items()):
        here = package_of(module)
        for target in sorted(targets):
            there = package_of(target)
            if here != there and "." in module and FLOOR[there] >= FLOOR[here]:
                bad.append(f"{module} -> {target}")
    return bad


def test_find_cycle_finds_a_cycle_and_accepts_a_dag() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_upward_imports_names_an_import_of_a_higher_or_same_floor() -> None:
    graph = {
        "iqs.core.scale": {"iqs.data.table"},
        "iqs.metrics.x": {"iqs.losses.y"},
        "iqs.data.a": {"iqs.core.b"},
    }
    assert upward_imports(graph) == ["iqs.core.scale -> iqs.data.table", "iqs.metrics.x -> iqs.losses.y"]


def test_every_package_stands_on_a_floor() -> None:
    packages = {p.name for p in (SRC / "iqs").iterdir() if (p / "__init__.py").is_file()} | {
        "cli",
        "__main__",
    }
    assert packages == set(FLOOR), "add the new package to FLOORS here and to ARCHITECTURE.md"


def test_the_graph_is_really_read() -> None:
    graph = import_graph()
    # a parser that saw nothing would pass the rules below vacuously
    assert "iqs.tracking.mlflow_run" in graph["iqs.report.artifacts"]
    assert "iqs.tracking.config_view" in graph["iqs.tracking.store"]  # a lazy import, inside a function
    assert "iqs.core.preprocess" in graph["iqs.train.datamodule"]


def test_no_module_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.slow
def test_packages_import_only_floors_below_their_own() -> None:
    bad = upward_imports(import_graph())
    assert not bad, "upward imports (move the shared code down a floor):\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "low", ["iqs.tracking.config_view", "iqs.tracking.naming", "iqs.tracking.mlflow_run"]
)
def test_low_tracking_modules_do_not_import_what_logs_through_them(low: str) -> None:
    graph = import_graph()
    high = {"iqs.report.artifacts", "iqs.report.plots", "iqs.report.model_card", "iqs.tracking"}
    assert not graph[low] & high, f"{low} imports {sorted(graph[low] & high)}"


@pytest.mark.slow  # a fresh interpreter
def test_compare_and_the_model_card_start_without_torch_timm_or_lightning() -> None:
    """iqs.models, iqs.tracking and iqs.metrics import their names on first use (iqs.core.lazy), and a
    checkpoint's record is read without torch: `iqs compare` and the model card need none of them."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, iqs.report.compare_render, iqs.report.model_card, iqs.models.checkpoints\n"
        "from iqs.tracking import flatten_config\n"
        "print([m for m in ('torch', 'timm', 'torchvision', 'pytorch_lightning') if m in sys.modules])"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]
    # the names themselves still resolve, each from its submodule
    from iqs.models import build_quality_model
    from iqs.models.quality_model import build_quality_model as defined

    assert build_quality_model is defined
    with pytest.raises(AttributeError, match="module 'iqs.models' has no attribute 'nope'"):
        import iqs.models

        _ = iqs.models.nope
