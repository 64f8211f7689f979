"""No import cycles among qpipe's own modules.

The graph has an edge for every first-party import in a module, at module level or inside a
function (a function-local import still ties the two modules together; it only hides the tie).
Imports under `if TYPE_CHECKING:` are left out: they never run. `from pkg import name` points at
`pkg.name` when that is a module, else at `pkg`.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("qpipe_dagster", "webhook_sensor")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import that can run."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for branch in child.orelse:
                yield from _imports_of(branch, module, is_package)
            continue
        yield from _imports_of(child, module, is_package)


def _imports_of(
    node: ast.AST, module: str, is_package: bool
) -> Iterator[tuple[str, str | None, int]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, None, node.lineno
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            yield base, alias.name, node.lineno
    yield from _imports(node, module, is_package)


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {first-party module it imports: line of the first such import}."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text("utf-8"), str(path))
        for base, imported, line in _imports(tree, name, path.name == "__init__.py"):
            if imported and f"{base}.{imported}" in modules:
                target = f"{base}.{imported}"
            elif base in modules:
                target = base
            else:
                continue
            if target != name:
                graph[name].setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a closed path, first module repeated at the end) per strongly connected
    component of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(_closed_path(graph, set(component)))
    return components


def _closed_path(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node]):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if succ in component and succ not in previous:
                    previous[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def _describe(graph: dict[str, dict[str, int]], path: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(path)]
    return "\n  ".join(steps)


def test_the_graph_sees_module_and_function_level_imports() -> None:
    graph = import_graph()
    assert "qpipe_dagster.backtest.kernels" in graph["qpipe_dagster.backtest.strategies"]
    # lazy on purpose (see the comment there), and still an edge
    assert "qpipe_dagster.defs.partitions" in graph["qpipe_dagster.cli.concepts"]


def test_cycles_are_found_and_named() -> None:
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7}, "d": {"a": 1}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert _describe(graph, ["a", "b", "c", "a"]).startswith("a (line 3) -> b")
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(
        f"- {' -> '.join(path)}\n  {_describe(graph, path)}" for path in found
    )
