"""Every page of the built docs site, loaded in headless Chromium as a reader's
browser would: no console errors, no failed loads, no raw Sphinx roles in the
rendered text, every internal link leading to a page and anchor that exist.

The site is served over HTTP on the loopback address (directory URLs need a
server); the browser resolves no other host. Chromium is Debian's ``chromium``
package: without it the test is skipped locally and FAILS in CI (``CI`` set, or
``OFFSETLEDGER_REQUIRE_CHROMIUM=1``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.docs._cdp import DevTools, chromium, find_chromium

RAW_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|attr|mod|data|exc|obj|const):`?")
COLLECT = """(async () => {
  await new Promise(r => setTimeout(r, 100));  // let the page's own scripts settle
  return {
    title: document.title,
    text: document.body ? document.body.innerText : "",
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    ids: [...document.querySelectorAll("[id]")].map(e => e.id),
    width: window.innerWidth,
    navRows: new Set([...document.querySelectorAll(".navbar-nav > .nav-item")]
      .map(e => Math.round(e.getBoundingClientRect().top))).size,
  };
})()"""


def _required() -> bool:
    ci = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("OFFSETLEDGER_REQUIRE_CHROMIUM") == "1"


@pytest.fixture(scope="module")
def browser_binary() -> str:
    found = find_chromium()
    if found is None:
        reason = (
            "headless Chromium is not installed (Debian: apt-get install -y chromium; "
            "or set OFFSETLEDGER_CHROMIUM to a Chromium binary)"
        )
        if _required():
            pytest.fail(f"{reason}; it is required in CI (CI / OFFSETLEDGER_REQUIRE_CHROMIUM)")
        pytest.skip(reason)
    return found


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="docs-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _page_urls(site: Path, base: str) -> list[str]:
    urls = []
    for index in sorted(site.rglob("index.html")):
        rel = index.parent.relative_to(site).as_posix()
        urls.append(f"{base}/" if rel == "." else f"{base}/{rel}/")
    return urls


def _problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads among DevTools events."""
    found = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            found.append(f"console.{params['type']}: {' '.join(map(str, args))}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            found.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(
                f"console ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
            )
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            found.append(f"load failed: {params.get('errorText')} ({params.get('type')})")
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            if response.get("status", 200) >= 400:
                found.append(f"HTTP {response['status']}: {response.get('url')}")
    return found


def _load(tools: DevTools, url: str) -> dict[str, Any]:
    tools.events.clear()
    tools.call("Page.navigate", url=url)
    tools.wait_for("Page.loadEventFired")
    page: dict[str, Any] = tools.evaluate(COLLECT)
    page["problems"] = _problems(tools.events)
    return page


@pytest.fixture(scope="module")
def loaded(browser_binary: str, site: Path, served: str) -> dict[str, dict[str, Any]]:
    """url -> what the browser saw on it, for every page of the site."""
    pages: dict[str, dict[str, Any]] = {}
    with chromium(browser_binary) as tools:
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        for url in _page_urls(site, served):
            pages[url] = _load(tools, url)
        # the 404 page too: what a mistyped address shows must not break either
        pages[f"{served}/404.html"] = _load(tools, f"{served}/404.html")
    return pages


def test_every_page_loads_without_console_errors(loaded: dict[str, dict[str, Any]]) -> None:
    assert len(loaded) >= 12, sorted(loaded)
    bad = {url: page["problems"] for url, page in loaded.items() if page["problems"]}
    assert not bad, bad
    untitled = [url for url, page in loaded.items() if not page["title"].strip()]
    assert not untitled


def test_the_navigation_fits_one_row_at_1280_px(loaded: dict[str, dict[str, Any]]) -> None:
    for url, page in loaded.items():
        assert page["width"] == 1280, (url, page["width"])
        assert page["navRows"] == 1, f"{url}: the navigation bar wraps to {page['navRows']} rows"


def test_no_raw_sphinx_roles_in_the_rendered_text(loaded: dict[str, dict[str, Any]]) -> None:
    for url, page in loaded.items():
        raw = RAW_ROLE.findall(page["text"])
        assert not raw, f"{url} shows raw Sphinx roles: {raw[:5]}"
    api = next(page for url, page in loaded.items() if url.endswith("/api/"))
    assert "Processor" in api["text"]


def test_internal_links_lead_to_pages_and_anchors(
    loaded: dict[str, dict[str, Any]], site: Path, served: str
) -> None:
    checked = 0
    for url, page in loaded.items():
        for href in page["links"]:
            if not href.startswith(served + "/"):
                continue  # another origin: not loaded here (the browser resolves no host)
            parts = urlsplit(href)
            path = unquote(parts.path)
            target = site / path.lstrip("/")
            if path.endswith("/"):
                target /= "index.html"
            assert target.exists(), f"broken link on {url}: {href}"
            if parts.fragment and target.name == "index.html":
                page_url = f"{served}{path}"
                assert page_url in loaded, f"{url} links to {href}, a page not loaded"
                assert unquote(parts.fragment) in loaded[page_url]["ids"], (
                    f"no anchor #{parts.fragment} on {page_url} (linked from {url})"
                )
            checked += 1
    assert checked > 100
