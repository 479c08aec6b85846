"""The import structure the architecture promises, read from the source (every import, lazy ones too).

- The core (stages, runtime, backends, formats, the ONNX wing) never imports an adapter or the CLI.
- Adapters (label job, server, Ray Dataset adapter, bench, report) never import one another or the CLI.
- No module imports itself back through others: the module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "structsent"
ADAPTERS = {"jobs", "server", "ray", "bench", "report"}
TOP = {"cli", "__main__", "_entry", "_exit"}  # _entry: the command's entry point; _exit: its exit statuses


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """structsent modules that ``path`` imports anywhere in its body (``from x import y``: x.y if a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = list(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def area(module: str) -> str:
    """The top-level part of the package a module belongs to ("jobs", "engine", "__init__"...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = import_graph()
EDGES = sorted((a, b) for a, targets in GRAPH.items() for b in targets)


def test_the_graph_is_read():
    assert ("structsent.engine", "structsent.batching") in EDGES
    assert len(GRAPH) > 40


@pytest.mark.parametrize("source,target", EDGES, ids=[f"{a}->{b}" for a, b in EDGES])
def test_the_core_never_imports_an_adapter_and_adapters_never_import_each_other(source, target):
    here, there = area(source), area(target)
    if here in TOP or here == there:
        return
    assert there not in TOP, f"{source} imports the command line ({target})"
    if there in ADAPTERS:
        kind = "the adapter" if here in ADAPTERS else "the core module"
        pytest.fail(f"{kind} {source} imports the adapter {target}")


def test_no_import_cycle():
    """Tarjan's strongly connected components: every component must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert cycles == []


def test_importing_structsent_stays_light():
    import subprocess
    import sys

    code = "import sys, structsent; heavy = [m for m in ('torch', 'onnxruntime', 'fastapi', 'ray', 'pyarrow', " \
           "'transformers') if m in sys.modules]; print(','.join(heavy))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
