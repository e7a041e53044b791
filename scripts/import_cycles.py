"""Report import cycles inside Python packages, deferred (function-level) imports included.

    python scripts/import_cycles.py crfold crfold_images data_prep viz

Every ``.py`` file under each named package is parsed with :mod:`ast` (nothing is imported or
executed). Each ``import``/``from ... import`` statement anywhere in a file (module level,
inside functions, classes, ``try`` blocks) adds an edge from the file's module to the module it
loads; relative imports are resolved against the file's package, and ``from pkg import name``
points at ``pkg.name`` when that is a module of the scanned tree, else at ``pkg``. Only edges
between scanned modules are kept. Imports under ``if TYPE_CHECKING:`` never run, so they are
left out unless ``--type-checking`` is given.

The strongly connected components of the graph with more than one module (or a module that
imports itself) are the cycles; each is printed with the import statements that form it
(``file:line``). Exit status: 0 when there are none, 1 when there are cycles, 2 on bad arguments.

A package is named by its folder (``path/to/pkg``) or, when no such folder exists, by its import
name, found with :func:`importlib.util.find_spec` (without importing it).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path


def package_root(spec: str) -> Path:
    """The folder of package ``spec`` (a path, or an import name found without importing)."""
    path = Path(spec)
    if path.is_dir():
        return path.resolve()
    found = importlib.util.find_spec(spec) if spec.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        print(f"error: {spec!r} is neither a folder nor an importable package", file=sys.stderr)
        raise SystemExit(2)
    return Path(next(iter(found.submodule_search_locations))).resolve()


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the package folder ``root``."""
    modules = {}
    for file in sorted(root.rglob("*.py")):
        parts = file.relative_to(root.parent).with_suffix("").parts
        if any(not p.isidentifier() for p in parts):
            continue  # not importable (e.g. a folder named "my-scripts")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = file
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, at any depth (skipping TYPE_CHECKING blocks)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and not type_checking and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool, known) -> list[str]:
    """The scanned modules that the statement ``node`` in ``module`` loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_pkg else module.split(".")[:-1]
        if node.level - 1 > len(package):
            return []
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}" if base else alias.name
        if sub in known:
            out.append(sub)
        elif base in known:
            out.append(base)
    return list(dict.fromkeys(out))


def build_graph(modules: dict[str, Path], type_checking: bool = False):
    """``{module: {imported module: [line, ...]}}`` over the scanned modules."""
    graph: dict[str, dict[str, list[int]]] = {m: {} for m in modules}
    for module, file in modules.items():
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        is_pkg = file.name == "__init__.py"
        for node in _imports(tree, type_checking):
            for target in _targets(node, module, is_pkg, modules):
                graph[module].setdefault(target, []).append(node.lineno)
    return graph


def strongly_connected(graph: dict[str, dict]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return sorted(components)


def cycles(graph: dict[str, dict]) -> list[list[str]]:
    """The components that are cycles: several modules, or one that imports itself."""
    return [c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="+", help="package folders or import names")
    parser.add_argument(
        "--type-checking", action="store_true", help="also count imports under TYPE_CHECKING"
    )
    args = parser.parse_args(argv)
    modules: dict[str, Path] = {}
    for spec in args.packages:
        modules.update(module_files(package_root(spec)))
    graph = build_graph(modules, args.type_checking)
    found = cycles(graph)
    edges = sum(len(t) for t in graph.values())
    print(f"{len(modules)} modules, {edges} import edges, {len(found)} cycle(s)")
    cwd = Path.cwd()
    for n, component in enumerate(found, 1):
        members = set(component)
        print(f"\ncycle {n}: {' <-> '.join(component)}")
        for module in component:
            file = modules[module]
            shown = file.relative_to(cwd) if file.is_relative_to(cwd) else file
            for target, lines in sorted(graph[module].items()):
                if target in members:
                    where = ", ".join(f"{shown}:{line}" for line in lines)
                    print(f"  {module} -> {target}  ({where})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
