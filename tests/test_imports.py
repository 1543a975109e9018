"""The shape of the import graph of src/deepfleet: no cycles, small modules.

The graph is read from the source with `ast`; nothing is imported, so a cycle that Python
would tolerate (or one dodged by importing late) is still found.

What counts as an import:
- every `import` and `from ... import` statement anywhere in a module, including those inside
  functions: a function-local import placed to dodge a cycle is still a cycle of the design;
- imports under `if TYPE_CHECKING:` count too. They never run, so they cannot break start-up,
  but a type named in a signature is a dependency like a call is: if A's signatures need B's
  types and B calls A, the two parts cannot be understood, tested or moved apart, which is
  what this test guards. A cycle that exists only for types is fixed the same way, by moving
  the shared type down to the part both depend on.

Resolution: a relative import is resolved against the importing module's package;
`from pkg import name` points at the submodule `pkg.name` when that file exists, else at
`pkg`; `import a.b.c` points at `a.b.c`. An edge points at the named module only, not at the
`__init__` of the packages above it, so a package that re-exports its submodules does not make
each submodule a cycle with its own package. Only imports of deepfleet modules are edges.

Packages are the folders directly under deepfleet (config, fleet, kvcache, ...); a module
directly under deepfleet (paths.py, net.py) is a package of its own. A package edge A -> B
exists when any module of A imports any module of B.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "deepfleet"
MAX_LINES = 400

Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_files() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def imported_modules(name: str, path: Path, known: Mapping[str, Path]) -> Iterator[str]:
    """Yield the deepfleet modules that the module `name` (file `path`) imports."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                base = here[: len(here) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in known else target


def module_graph() -> Graph:
    known = module_files()
    graph: Graph = {}
    for name, path in known.items():
        targets = {t for t in imported_modules(name, path, known) if t in known and t != name}
        graph[name] = targets
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph(modules: Graph) -> tuple[Graph, dict[tuple[str, str], list[str]]]:
    """The package graph, and for each package edge the module imports that make it."""
    graph: Graph = {}
    why: dict[tuple[str, str], list[str]] = {}
    for src, targets in modules.items():
        a = package_of(src)
        graph.setdefault(a, set())
        for dst in sorted(targets):
            b = package_of(dst)
            if a != b:
                graph[a].add(b)
                why.setdefault((a, b), []).append(f"{src} -> {dst}")
    return graph, why


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components with more than one node, each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
    return sorted(found)


def shortest_cycle(graph: Graph, component: list[str]) -> list[str]:
    """A shortest cycle through the component's first node, as a closed path."""
    start, inside = component[0], set(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w not in inside:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def describe_cycles(graph: Graph) -> list[str]:
    described = []
    for component in strongly_connected(graph):
        cycle = " -> ".join(shortest_cycle(graph, component))
        described.append(f"{cycle}   (all of: {', '.join(component)})")
    return described


def test_the_graph_reads_the_imports_it_should() -> None:
    modules = module_graph()
    assert "deepfleet.config.schema" in modules
    assert "deepfleet.config.load" in modules["deepfleet.config"]
    # `from deepfleet.bench.workloads import multi_turn` names a submodule.
    assert "deepfleet.bench.workloads.multi_turn" in modules["deepfleet.bench.workloads"]


def test_cycle_finder_names_the_cycle() -> None:
    graph: Graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert describe_cycles(graph) == ["a -> b -> c -> a   (all of: a, b, c)"]
    assert describe_cycles({"a": {"b"}, "b": set()}) == []


def test_no_cycle_between_modules() -> None:
    cycles = describe_cycles(module_graph())
    assert not cycles, "import cycles between modules:\n" + "\n".join(cycles)


def test_no_cycle_between_packages() -> None:
    packages, why = package_graph(module_graph())
    cycles = []
    for component in strongly_connected(packages):
        path = shortest_cycle(packages, component)
        edges = [f"    {a} -> {b}: " + "; ".join(why[(a, b)]) for a, b in itertools.pairwise(path)]
        cycles.append(" -> ".join(path) + "\n" + "\n".join(edges))
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)


def test_no_module_is_large() -> None:
    large = []
    for name, path in module_files().items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            large.append(f"{name}: {lines} lines")
    assert not large, f"modules over {MAX_LINES} lines (split them by concept):\n" + "\n".join(
        large
    )
