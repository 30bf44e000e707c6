"""docs/async.md's examples are code: every block compiles, imports real names, and
the first one's handler runs (on a plain event loop: it needs no broker)."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import Any

from offsetledger.core import Outbound, Record

DOC = Path(__file__).resolve().parents[2] / "docs" / "async.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_blocks_import_real_names() -> None:
    blocks = _blocks()
    assert len(blocks) >= 2
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("offsetledger"):
                module = __import__(node.module or "", fromlist=["_"])
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


def test_the_first_example_handler_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_blocks()[0], "docs/async.md block 0", "exec"), namespace)
    record = Record("orders", 0, 7, key=b"k", value=b"v")
    assert asyncio.run(namespace["enrich"](record)) == [Outbound("enriched", value=b"v", key=b"k")]
