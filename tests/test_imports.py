"""The layering of ``valor``: no import cycle between its modules, and no private name taken
from another module, read from the source with ``ast`` (nothing is imported).

Every import that runs counts, at a module's top level and inside its functions alike: an
import inside a function still makes its module depend on the other once it runs, and a
circle hidden that way (``server`` and ``passthrough`` once imported each other so) is as hard
to follow as any other. Only ``if TYPE_CHECKING:`` blocks, which never run, are left out. A
lazy import that defers a heavy dependency and closes a circle is listed in ``LAZY_CYCLES``
with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "runtime_py" / "valor"

LAZY_CYCLES = {
    # httpx is imported only for a plug-in that calls out; the client made then reads the
    # call under way (outbound.CALLING), which the runtime sets in both hosts without httpx.
    ("valor.outbound", "valor.client"),
    # The redis package is optional, loaded for a redis:// store only.
    ("valor.store.urls", "valor.store.redis"),
}

Imports = list[tuple[str, list[str], bool]]
Graph = dict[str, dict[str, list[str]]]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(importer: Path, level: int, module: str | None) -> str:
    """The absolute name of a (possibly relative) ``from ... import``'s module."""
    if level == 0:
        return module or ""
    base = module_name(importer).split(".")
    if importer.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_run(source: str, importer: Path, modules: set[str]) -> Imports:
    """``(module, names, lazy)`` for each import of one of ``modules`` that ``source`` (the
    file ``importer``) can run; ``lazy``: only once a function is called. A
    ``from package import submodule`` imports the submodule too."""
    found: Imports = []
    for node, lazy in _import_statements(ast.parse(source, str(importer)).body, lazy=False):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], lazy) for alias in node.names if alias.name in modules]
            continue
        target = resolve(importer, node.level, node.module)
        if target not in modules:
            continue
        names = [alias.name for alias in node.names]
        found.append((target, [n for n in names if f"{target}.{n}" not in modules], lazy))
        found += [(f"{target}.{n}", [], lazy) for n in names if f"{target}.{n}" in modules]
    return found


def _import_statements(
    body: list[ast.stmt], lazy: bool
) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, lazy))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            found += _import_statements(node.orelse, lazy)
        else:
            inner_lazy = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, None) or []:
                    if isinstance(child, ast.ExceptHandler):
                        found += _import_statements(child.body, inner_lazy)
                    elif isinstance(child, ast.stmt):
                        found += _import_statements([child], inner_lazy)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> Graph:
    """For each module of ``valor``, the ``valor`` modules it imports, with the names taken;
    the lazy imports of ``LAZY_CYCLES`` left out."""
    paths = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    modules = set(paths)
    graph: Graph = {}
    for name, path in paths.items():
        edges: dict[str, list[str]] = {}
        for target, names, lazy in imports_run(path.read_text(), path, modules):
            # A package's own __init__ runs before its submodules: not a cycle.
            if target == name or target.startswith(name + "."):
                continue
            if not (lazy and (name, target) in LAZY_CYCLES):
                edges.setdefault(target, []).extend(names)
        graph[name] = edges
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle of the graph as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        path.append(module)
        for target in graph.get(module, {}):
            if target in path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_valor_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_private_name_of_another() -> None:
    private = [
        f"{module} imports {name} from {target}"
        for module, edges in import_graph().items()
        for target, names in edges.items()
        for name in names
        if _is_private(name)
    ]
    assert private == []


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_cycle_finder_names_the_modules_along_a_cycle() -> None:
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": [], "c": []}, "b": {"c": []}, "c": {}}) is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .wire import http_answer", [("valor.wire", ["http_answer"], False)]),
        ("from . import wire", [("valor", [], False), ("valor.wire", [], False)]),
        ("from .. import wire", []),  # outside the package
        ("import valor.wire as w", [("valor.wire", [], False)]),
        ("if TYPE_CHECKING:\n    from .server import A", []),
        (
            "if TYPE_CHECKING:\n    pass\nelse:\n    from .server import A",
            [("valor.server", ["A"], False)],
        ),
        ("def f():\n    from .server import A", [("valor.server", ["A"], True)]),
        (
            "class C:\n    async def f(self):\n        from .server import A",
            [("valor.server", ["A"], True)],
        ),
        (
            "try:\n    pass\nexcept ImportError:\n    from .server import A",
            [("valor.server", ["A"], False)],
        ),
    ],
)
def test_every_import_that_can_run_is_read(source: str, expected: Imports) -> None:
    modules = {"valor", "valor.wire", "valor.runtime", "valor.server"}
    assert imports_run(source, PACKAGE / "runtime.py", modules) == expected
