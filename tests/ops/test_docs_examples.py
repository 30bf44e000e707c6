"""The code on the operations pages is code: every block parses and imports real
names, and the health page's probe handler serves what the monitor says."""

from __future__ import annotations

import ast
import importlib
import json
import re
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from offsetledger.health import HealthMonitor
from offsetledger.simulator import SimClock

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["docs/health.md", "docs/exporters.md", "docs/serde.md", "docs/logging.md"]


def python_blocks(doc: str) -> list[str]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("doc", PAGES)
def test_blocks_parse_and_import_real_names(doc: str) -> None:
    blocks = python_blocks(doc)
    assert blocks, f"{doc} has no python example"
    imported = 0
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):  # a submodule: import it
                        importlib.import_module(f"{node.module}.{alias.name}")
                    imported += 1
    assert imported > 0


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        err.close()
        return err.code, json.loads(body) if body.startswith(b"{") else None


def test_the_health_page_probe_handler_serves_the_verdict() -> None:
    handler_block = python_blocks("docs/health.md")[1]
    assert "class Health(BaseHTTPRequestHandler)" in handler_block
    clock = SimClock()
    namespace: dict[str, Any] = {"monitor": HealthMonitor(clock=clock, stuck_after=5.0)}
    exec(compile(handler_block, "docs/health.md probe block", "exec"), namespace)
    server = ThreadingHTTPServer(("127.0.0.1", 0), namespace["Health"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, body = _get(f"{base}/healthz")
        assert (status, body["ok"], body["reasons"]) == (200, True, [])
        clock.sleep(6.0)  # no metric for longer than stuck_after: a silent Processor
        status, body = _get(f"{base}/readyz")
        assert status == 503
        assert body["reasons"] == [
            "no metric from the Processor for 6.0s (its loop is blocked or not running)"
        ]
        assert _get(f"{base}/other")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
