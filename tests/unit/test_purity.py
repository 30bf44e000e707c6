"""The core stays pure: stdlib and attrs only; the package imports without confluent-kafka."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import offsetledger.core

CORE = Path(offsetledger.core.__file__).parent
ALLOWED_THIRD_PARTY = frozenset({"attrs"})


def _core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``path``, relative ones resolved."""
    package = "offsetledger.core" + "".join(
        "." + part for part in path.relative_to(CORE).parent.parts
    )
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _allowed(module: str) -> bool:
    top = module.split(".", maxsplit=1)[0]
    if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY:
        return True
    return module == "offsetledger.core" or module.startswith("offsetledger.core.")


def test_core_modules_are_found() -> None:
    names = {p.name for p in _core_modules()}
    assert {"__init__.py", "_ledger.py", "_metadata.py", "_state.py", "_types.py"} <= names


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: p.name)
def test_core_imports_only_stdlib_attrs_and_core(path: Path) -> None:
    bad = [f"line {line}: {mod}" for line, mod in _imported_modules(path) if not _allowed(mod)]
    assert not bad, f"{path.relative_to(CORE.parent)} imports outside stdlib/attrs/core: {bad}"


def test_the_import_check_would_notice_a_foreign_import() -> None:
    assert not _allowed("confluent_kafka")
    assert not _allowed("offsetledger.simulator")
    assert not _allowed("offsetledger.runtime.processor")
    assert _allowed("offsetledger.core._types")
    assert _allowed("attrs")
    assert _allowed("collections.abc")


_BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class _NoKafka(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "confluent_kafka" or name.startswith("confluent_kafka."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.modules.pop("confluent_kafka", None)
    sys.meta_path.insert(0, _NoKafka())
    try:
        import confluent_kafka  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the blocker did not block confluent_kafka")

    import offsetledger, offsetledger.core, offsetledger.simulator, offsetledger.history
    assert "confluent_kafka" not in sys.modules, "confluent_kafka was imported"
    print("ok", offsetledger.__version__)
    """
)


def test_package_imports_without_confluent_kafka() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKER],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"import failed without confluent_kafka:\n{result.stderr}"
    assert result.stdout.startswith("ok ")
