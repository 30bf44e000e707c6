"""The runtime's modules import each other without a cycle (each unit depends only
on the ones below it; the Processor facade sits on top)."""

from __future__ import annotations

import ast
from pathlib import Path

import offsetledger.runtime

RUNTIME = Path(offsetledger.runtime.__file__).parent
PACKAGE = "offsetledger.runtime"


_TYPE_CHECKING = {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def _module_name(path: Path) -> str:
    """``offsetledger.runtime._runners._pool`` for ``runtime/_runners/_pool.py`` (a
    package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(RUNTIME).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _imports(path: Path) -> set[str]:
    """The runtime modules ``path`` imports (absolute or relative), including
    ``from package import module``. Imports under ``if TYPE_CHECKING:`` do not
    count: they never run (annotations only)."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in _TYPE_CHECKING:
            node.body = []  # ast.walk visits children after this: skip them
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{module}" if module else base
            if module == PACKAGE or module.startswith(PACKAGE + "."):
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE + "."))
    found.discard(here)
    return found


def _graph() -> dict[str, set[str]]:
    """Modules of the runtime (subpackages included; the top ``__init__`` is the
    public surface, left out) and the runtime modules each imports."""
    paths = [p for p in RUNTIME.rglob("*.py") if p != RUNTIME / "__init__.py"]
    modules = {_module_name(p): p for p in paths}
    return {name: _imports(path) & modules.keys() for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_runtime_modules_import_each_other_without_a_cycle() -> None:
    graph = _graph()
    assert len(graph) >= 15, graph  # the scan found the modules
    assert f"{PACKAGE}._runners._pool" in graph  # and those of the subpackages
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_type_checking_imports_do_not_count() -> None:
    path = RUNTIME / "_work.py"  # imports _runners for annotations only
    assert f"{PACKAGE}._runners" not in _imports(path)
    assert f"{PACKAGE}._runners" in _imports(RUNTIME / "_flow.py")


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
