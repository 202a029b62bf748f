"""The operator's import graph, read from the source: no loops, and only the runtime's contract and config.

Every import statement counts, wherever it is: module level, inside functions (lazy imports) and
under `if TYPE_CHECKING:`. A loop through any of them means two modules that cannot be understood
(or tested) one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "operator" / "rollout_operator"

# What the operator may import from the runtime: the shared contract, RolloutConfig (the spec
# sections are built from its fields, and the spec is validated with it before a runtime starts),
# and the weight-update orchestration (stdlib + aiohttp; checked below).
RUNTIME_ALLOWED = {"rollout_runtime", "rollout_runtime.contract", "rollout_runtime.config", "rollout_runtime.weights",
                   "rollout_runtime.weights.target", "rollout_runtime.weights.sync", "rollout_runtime.weights.calls",
                   "rollout_runtime.weights.servers"}
# What those weights modules may import: the standard library, aiohttp, and these runtime modules.
WEIGHTS_ALLOWED_RUNTIME = {"rollout_runtime.contract", "rollout_runtime.http_client"} | RUNTIME_ALLOWED
WEIGHTS_ALLOWED_THIRD_PARTY = {"aiohttp", "orjson"}
# Imported lazily, only while a CRD schema is generated (never in the operator process).
RUNTIME_SCHEMA_ONLY = {("rollout_operator.api.rolloutjob_types", "rollout_runtime.rm_hub")}


def module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_of(p): p for p in PACKAGE.rglob("*.py")}


def imported(module: str, path: Path) -> set[str]:
    """Absolute names of every module `module` imports (`from pkg import mod` counts as pkg.mod)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.add(candidate if candidate in MODULES else base)
    return out


GRAPH = {m: {d for d in imported(m, p) if d in MODULES and d != m} for m, p in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    """The checks below are only as good as the graph: it must see the package's real edges."""
    assert "rollout_operator.controller.manager" in GRAPH["rollout_operator.handlers"]
    assert "rollout_operator.metrics" in GRAPH["rollout_operator.controller.manager"]
    assert "rollout_operator.reconcile.rolloutjob" in GRAPH["rollout_operator.controller.rolloutjob"]


def test_no_import_loops() -> None:
    assert cycles(GRAPH) == []


def test_cycle_detection_finds_a_loop() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_metrics_do_not_import_the_controller() -> None:
    """metrics.py reads the controller through the OperatorView protocol (formerly a TYPE_CHECKING loop)."""
    assert not any(d.startswith("rollout_operator.controller") for d in GRAPH["rollout_operator.metrics"])


def test_operator_imports_only_the_runtime_contract_and_config() -> None:
    heavy = {(m, d) for m, p in MODULES.items() for d in imported(m, p)
             if d.split(".")[0] == "rollout_runtime" and d not in RUNTIME_ALLOWED}
    assert heavy == RUNTIME_SCHEMA_ONLY


def test_the_weights_modules_the_operator_imports_stay_light() -> None:
    """The operator image may import rollout_runtime.weights: it must never pull in torch, transformers, ..."""
    import sys

    runtime = REPO / "rollout_runtime"
    allowed = {m for m in RUNTIME_ALLOWED if m.startswith("rollout_runtime.weights")} | {"rollout_runtime.http_client"}
    for module in sorted(allowed):
        base = runtime.joinpath(*module.split(".")[1:])
        path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        for name in names:
            top = name.split(".")[0]
            if top == "rollout_runtime":
                assert name in WEIGHTS_ALLOWED_RUNTIME, f"{module} imports {name}"
            elif top not in sys.stdlib_module_names and top != "__future__":
                assert top in WEIGHTS_ALLOWED_THIRD_PARTY, f"{module} imports {name}"
