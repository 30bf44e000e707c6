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


def test_simulator_guide_example_runs_and_its_test_passes() -> None:
    (block,) = python_blocks(ROOT / "docs" / "testing.md")
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/testing.md", "exec"), namespace)
    test = namespace["test_my_pipeline_loses_nothing_when_a_member_crashes"]
    assert callable(test)
    test()


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
