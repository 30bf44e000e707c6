"""The code in the README and the docs is code: it must run (or, where it needs a
broker on a fixed address, at least parse and import what it names)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_testing_guide_examples_run_and_their_tests_pass() -> None:
    """docs/testing.md, block by block in one namespace (as one test module): every
    test function without fixtures is called; the plugin's is run by pytester in
    tests/docs/test_testing_guide.py."""
    blocks = python_blocks(ROOT / "docs" / "testing.md")
    assert len(blocks) >= 4
    namespace: dict[str, object] = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/testing.md block {i}", "exec"), namespace)
    tests = {
        name: fn
        for name, fn in namespace.items()
        if name.startswith("test_") and callable(fn) and not fn.__code__.co_argcount  # type: ignore[attr-defined]
    }
    assert {"test_doubler_loses_nothing", "test_a_crash_at_a_chosen_moment"} <= set(tests)
    for test in tests.values():
        test()


def _definition(source: str, name: str) -> str:
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.dump(node)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.dump(node.value)
    raise AssertionError(f"no {name} in the block")


def test_the_testing_guide_tests_the_getting_started_application() -> None:
    """The handler and config docs/testing.md tests are getting-started's own."""
    (app,) = python_blocks(ROOT / "docs" / "getting-started.md")[:1]
    guide = python_blocks(ROOT / "docs" / "testing.md")[0]
    for name in ("handle", "config"):
        assert _definition(guide, name) == _definition(app, name), name


@pytest.mark.parametrize("doc", ["README.md", "docs/getting-started.md"])
def test_broker_examples_parse_and_import_real_names(doc: str) -> None:
    blocks = python_blocks(ROOT / doc)
    assert blocks, f"{doc} has no python example"
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("offsetledger")
            ):
                module = __import__(node.module, fromlist=["_"])
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{doc}: {node.module} has no {alias.name}"


def test_readme_names_the_two_commands_the_makefile_has() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
