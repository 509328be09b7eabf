"""The import structure of ``sipd``, read from the source with :mod:`ast`.

* No import cycles: the graph has an edge for every ``import x`` and
  ``from x import y`` anywhere in a module — at top level, under
  ``if TYPE_CHECKING:`` and inside function bodies — with relative imports
  resolved. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
  submodule and to ``pkg`` otherwise. A module gets no implicit edges to its
  parent packages (importing ``a.b.c`` does not count as importing ``a.b``).
* Handlers, the daemon and ``sipd/tap.py`` use only public names: they import
  nothing from ``sipd.sip``, ``sipd.transport`` or ``sipd.session``.

Nothing here imports the code it checks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SIPD = Path(__file__).resolve().parents[2] / "sipd"

#: Modules whose imports must stay on the public side, and what they may not import.
PUBLIC_ONLY = ("sipd.handlers", "sipd.daemon", "sipd.tap")
INTERNAL = ("sipd.sip", "sipd.transport", "sipd.session")


@dataclass(frozen=True)
class ModuleFile:
    name: str
    path: Path
    is_package: bool


@dataclass(frozen=True)
class ImportStmt:
    """One import statement (or ``importlib.import_module("...")`` call)."""

    line: int
    text: str
    #: ``import a.b`` and dynamic imports: the module; ``from m import x``: ``m``.
    module: str
    #: ``from m import x, y``: the names; None for ``import a.b``.
    names: tuple[str, ...] | None

    def referenced(self, prefixes: tuple[str, ...]) -> list[str]:
        """What this statement loads from under ``prefixes``: ``m``, else each such ``m.x``."""
        if _within(self.module, prefixes):
            return [self.module]
        subs = (f"{self.module}.{n}" for n in self.names or () if n != "*")
        return [s for s in subs if _within(s, prefixes)]


# -- reading a package ----------------------------------------------------------------


def find_modules(package_dir: Path) -> dict[str, ModuleFile]:
    """Every module under ``package_dir`` by dotted name (the folder is the top package)."""
    root = package_dir.parent
    modules: dict[str, ModuleFile] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if any(not p.isidentifier() for p in parts):
            continue
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        modules[name] = ModuleFile(name, path, is_package)
    return modules


def _resolve(module: ModuleFile, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` in ``module``."""
    if level == 0:
        return target or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    if target:
        base = [*base, *target.split(".")]
    return ".".join(base)


def _is_import_call(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in ("import_module", "__import__")


def imports_of(module: ModuleFile) -> list[ImportStmt]:
    """Every import in the module's source, wherever it is (``ast.walk`` sees it all)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    found: list[ImportStmt] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(ImportStmt(node.lineno, ast.unparse(node), alias.name, None))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node.level, node.module)
            names = tuple(alias.name for alias in node.names)
            found.append(ImportStmt(node.lineno, ast.unparse(node), base, names))
        elif (
            isinstance(node, ast.Call)
            and _is_import_call(node)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            found.append(ImportStmt(node.lineno, ast.unparse(node), node.args[0].value, None))
    return sorted(found, key=lambda s: s.line)


def _targets(stmt: ImportStmt, modules: dict[str, ModuleFile]) -> set[str]:
    """The modules of the package that ``stmt`` is an edge to."""
    if stmt.names is None:
        # ``import a.b.c`` is an edge to a.b.c only (no implicit parent edges).
        parts = stmt.module.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return {".".join(parts)} if parts else set()
    out: set[str] = set()
    for name in stmt.names:
        sub = f"{stmt.module}.{name}"
        if name != "*" and sub in modules:
            out.add(sub)
        elif stmt.module in modules:
            out.add(stmt.module)
    return out


#: module -> imported module -> the statements making that edge.
Graph = dict[str, dict[str, list[ImportStmt]]]


def import_graph(package_dir: Path) -> tuple[Graph, dict[str, ModuleFile]]:
    modules = find_modules(package_dir)
    graph: Graph = {name: {} for name in modules}
    for name, module in modules.items():
        for stmt in imports_of(module):
            for target in _targets(stmt, modules):
                graph[name].setdefault(target, []).append(stmt)
    return graph, modules


# -- cycles -----------------------------------------------------------------------------


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, {})))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def find_cycles(graph: Graph) -> list[list[str]]:
    """Components with more than one module, and modules that import themselves."""
    return sorted(c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph.get(c[0], {}))


def _example_cycle(graph: Graph, component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node]):
            if succ not in members:
                continue
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if succ not in came_from:
                came_from[succ] = node
                queue.append(succ)
    return [start, start]


def describe_cycle(
    graph: Graph, modules: dict[str, ModuleFile], component: list[str], root: Path
) -> str:
    """The modules, one shortest cycle through them, and every import inside the group."""

    members = set(component)
    path = _example_cycle(graph, component)
    lines = [
        f"cycle of {len(component)} module(s): {', '.join(component)}",
        f"    e.g. {' -> '.join(path)}",
        "    imports within the cycle:",
    ]
    for here in component:
        where = modules[here].path.relative_to(root)
        inside = sorted(
            (stmt.line, stmt.text, there)
            for there, stmts in graph[here].items()
            if there in members
            for stmt in stmts
        )
        lines.extend(f"      {where}:{n}: {text}   [-> {there}]" for n, text, there in inside)
    return "\n".join(lines)


def cycle_report(package_dir: Path) -> list[str]:
    graph, modules = import_graph(package_dir)
    root = package_dir.parent
    return [describe_cycle(graph, modules, c, root) for c in find_cycles(graph)]


# -- layering ---------------------------------------------------------------------------


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def forbidden_imports(
    package_dir: Path, restricted: tuple[str, ...], internal: tuple[str, ...]
) -> list[str]:
    """``file:line: import`` for each import of ``internal`` in a ``restricted`` module."""
    modules = find_modules(package_dir)
    root = package_dir.parent
    out: list[str] = []
    for name, module in sorted(modules.items()):
        if not _within(name, restricted):
            continue
        for stmt in imports_of(module):
            bad = stmt.referenced(internal)
            if bad:
                where = module.path.relative_to(root)
                out.append(f"{where}:{stmt.line}: {stmt.text}   (imports {', '.join(bad)})")
    return out


# -- the tests --------------------------------------------------------------------------


def assert_no_cycles(package_dir: Path) -> None:
    report = cycle_report(package_dir)
    assert not report, f"import cycles in {package_dir.name}:\n" + "\n".join(report)


def assert_public_only(
    package_dir: Path, restricted: tuple[str, ...], internal: tuple[str, ...]
) -> None:
    bad = forbidden_imports(package_dir, restricted, internal)
    assert not bad, (
        f"{', '.join(restricted)} must not import {', '.join(internal)} "
        "(use the names the package root exports):\n" + "\n".join(bad)
    )


def test_sipd_has_no_import_cycles() -> None:
    assert_no_cycles(SIPD)


def test_handlers_and_daemon_import_only_public_names() -> None:
    assert_public_only(SIPD, PUBLIC_ONLY, INTERNAL)


def _write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path / "pkg"


def test_checker_finds_planted_cycles(tmp_path: Path) -> None:
    pkg = _write_package(
        tmp_path,
        {
            # The package imports its submodules; they importing the package's
            # siblings is not a cycle with the package (no implicit parent edges).
            "pkg/__init__.py": "from pkg.a import A\nfrom pkg import d\n",
            # a <-> b, one edge relative and under TYPE_CHECKING, one inside a function.
            "pkg/a.py": "from pkg import b\nA = 1\n",
            "pkg/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
            ),
            # A self-import.
            "pkg/c.py": "import pkg.c\n",
            # d -> sub.b -> d, through a function body and a relative `from .. import`.
            "pkg/d.py": "def f():\n    from pkg.sub import b\n    return b\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "from .. import d\n",
            # e is not in a cycle: it imports d, nothing imports e.
            "pkg/e.py": "from . import d\nimport os\n",
        },
    )
    graph, _ = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b": graph["pkg.a"]["pkg.b"]}
    assert set(graph["pkg.b"]) == {"pkg.a"}
    assert set(graph["pkg.e"]) == {"pkg.d"}
    assert set(graph["pkg"]) == {"pkg.a", "pkg.d"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c"], ["pkg.d", "pkg.sub.b"]]
    report = cycle_report(pkg)
    assert len(report) == 3
    assert "pkg/b.py:3: from .a import A" in report[0]
    assert "pkg/c.py:1: import pkg.c" in report[1]
    assert "pkg/d.py:2: from pkg.sub import b" in report[2]
    with pytest.raises(AssertionError, match=re.escape("pkg.a, pkg.b")):
        assert_no_cycles(pkg)


def test_checker_finds_planted_internal_imports(tmp_path: Path) -> None:
    pkg = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.low.wire import Wire\n",
            "pkg/low/__init__.py": "",
            "pkg/low/wire.py": "class Wire: ...\n",
            "pkg/top/__init__.py": "",
            "pkg/top/ok.py": "from pkg import Wire\nimport pkg.lowly\n",
            "pkg/top/bad.py": (
                "def f():\n"
                "    from ..low.wire import Wire\n"
                "    return Wire\n"
                "from pkg import low\n"
                "import importlib\n"
                "importlib.import_module('pkg.low')\n"
            ),
        },
    )
    bad = forbidden_imports(pkg, ("pkg.top",), ("pkg.low",))
    with pytest.raises(AssertionError, match=re.escape("pkg/top/bad.py:2")):
        assert_public_only(pkg, ("pkg.top",), ("pkg.low",))
    assert bad == [
        "pkg/top/bad.py:2: from ..low.wire import Wire   (imports pkg.low.wire)",
        "pkg/top/bad.py:4: from pkg import low   (imports pkg.low)",
        "pkg/top/bad.py:6: importlib.import_module('pkg.low')   (imports pkg.low)",
    ]
