"""The documentation site, built once, read as HTML: what a reader would notice.

No raw Sphinx roles, every code block highlighted, the API reference with the
public API first and signatures with types and defaults, short navigation
titles, internal links that lead somewhere, an install line that works from a
clone. Skipped (with the reason) when mkdocs and mkdocstrings are not installed.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("mkdocs", reason="mkdocs is not installed (the dev extra has it)")
pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed")

ROOT = Path(__file__).resolve().parents[2]
RAW_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|attr|mod|data|exc|obj|const):`?")


class Page(HTMLParser):
    """The parts of one built page the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.pres: list[bool] = []  # per <pre>: inside a Pygments "highlight" block
        self.nav_titles: list[str] = []
        self._stack: list[tuple[str, str]] = []
        self._in_nav_link = False
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        classes = attributes.get("class", "")
        if tag in {"script", "style"}:
            self._skip += 1
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if tag == "a" and "href" in attributes:
            self.hrefs.append(attributes["href"])
        if tag == "pre":
            self.pres.append(any("highlight" in c.split() for _, c in self._stack))
        if tag == "a" and "nav-link" in classes.split() and self._in_navbar():
            self._in_nav_link = True
            self.nav_titles.append("")
        if tag not in {"br", "img", "input", "meta", "link", "hr"}:
            self._stack.append((tag, classes))

    def _in_navbar(self) -> bool:
        return any("navbar-nav" in c.split() for _, c in self._stack) and not any(
            "ms-md-auto" in c.split() for _, c in self._stack
        )

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style"}:
            self._skip -= 1
        if tag == "a":
            self._in_nav_link = False
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)
        if self._in_nav_link:
            self.nav_titles[-1] += data.strip()


def pages(site: Path) -> dict[Path, Page]:
    found = {}
    for path in sorted(site.rglob("*.html")):
        if path.name == "404.html":
            continue
        page = Page()
        page.feed(path.read_text(encoding="utf-8"))
        found[path] = page
    return found


@pytest.fixture(scope="module")
def parsed(site: Path) -> dict[Path, Page]:
    return pages(site)


def test_no_raw_sphinx_roles_anywhere(site: Path, parsed: dict[Path, Page]) -> None:
    assert len(parsed) >= 10
    for path, page in parsed.items():
        text = "".join(page.text)
        raw = RAW_ROLE.findall(text)
        assert not raw, f"{path.relative_to(site)} shows raw Sphinx roles: {raw[:5]}"


def test_roles_became_links_to_the_api_page(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")

    def links(anchor: str, title: str) -> int:
        pattern = rf'<a class="autorefs autorefs-internal"[^>]* href="#{anchor}">'
        pattern += f"<code>{title}</code>"
        return len(re.findall(pattern, html))

    # ":meth:`stop`" in Processor's docstring, ":class:`~offsetledger.core.ConfigError`"
    assert links(r"offsetledger\.runtime\.Processor\.stop", r"stop\(\)") >= 1
    assert links(r"offsetledger\.core\.ConfigError", "ConfigError") >= 1


def test_every_code_block_is_highlighted(site: Path, parsed: dict[Path, Page]) -> None:
    total = 0
    for path, page in parsed.items():
        plain = page.pres.count(False)
        assert plain == 0, f"{path.relative_to(site)}: {plain} code blocks without highlighting"
        total += len(page.pres)
    assert total > 20
    started = (site / "getting-started" / "index.html").read_text(encoding="utf-8")
    assert '<span class="kn">import</span>' in started  # Python tokens, coloured by Pygments


def test_api_reference_puts_the_public_api_first(site: Path, parsed: dict[Path, Page]) -> None:
    ids = parsed[site / "api" / "index.html"].ids
    order = [
        "offsetledger.runtime.Processor",
        "offsetledger.runtime.ProcessorConfig",
        "offsetledger.runtime.RetryPolicy",
        "offsetledger.adapters.confluent.ConfluentConsumer",
        "offsetledger.scenario.run_simulation",
        "offsetledger.checker.check",
        "internals",
        "offsetledger.core.OffsetLedger",
        "offsetledger.core.Ticket",
        "offsetledger.core.RecordTracker",
    ]
    missing = [name for name in order if name not in ids]
    assert not missing, f"not on the API page: {missing}"
    positions = [ids.index(name) for name in order]
    assert positions == sorted(positions), list(zip(order, positions, strict=True))


def test_signatures_show_types_and_defaults(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    signatures = re.findall(r'<div class="doc-signature[^"]*">(.*?)</div>', html, flags=re.S)
    text = [re.sub(r"<[^>]+>", "", s) for s in signatures]
    processor = next(s for s in text if s.lstrip().startswith("Processor("))
    assert "consumer: ConsumerPort" in processor
    config = next(s for s in text if s.lstrip().startswith("ProcessorConfig("))
    # an attrs class: its fields, with annotations and defaults, are the signature
    assert re.search(r"batch_size: int = \d+", config), config
    record = next(s for s in text if s.lstrip().startswith("Record("))
    assert "key: bytes | None = None" in record


def test_navigation_titles_are_short(site: Path, parsed: dict[Path, Page]) -> None:
    titles = [t for t in parsed[site / "index.html"].nav_titles if t]
    assert "Home" in titles
    assert all(len(t) <= 16 for t in titles), titles
    # one row at 1280 px in the mkdocs theme
    assert len(titles) <= 7, titles


def test_internal_links_lead_to_pages_and_anchors(site: Path, parsed: dict[Path, Page]) -> None:
    for path, page in parsed.items():
        for href in page.hrefs:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
                continue
            if href == "#":  # dropdown toggles
                continue
            # normalised: "../metrics/" from exporters/ is metrics/, as a browser resolves it
            target = (
                Path(os.path.normpath(path.parent / unquote(parts.path))) if parts.path else path
            )
            if target.is_dir():
                target /= "index.html"
            where = f"{path.relative_to(site)} -> {href}"
            assert target.exists(), f"broken link {where}"
            if parts.fragment and target.suffix == ".html":
                assert parts.fragment in pages_ids(target, parsed), f"no anchor: {where}"


def pages_ids(path: Path, parsed: dict[Path, Page]) -> list[str]:
    return parsed[path].ids if path in parsed else []


def test_getting_started_installs_from_a_clone() -> None:
    text = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert "pip install -e './offsetledger[kafka]'" in text
    # the package is not on an index: no bare `pip install offsetledger...`
    assert not re.search(r"pip install '?offsetledger", text)


def test_metrics_page_lists_exactly_the_metrics_the_code_reports() -> None:
    from offsetledger.runtime import COUNTERS, GAUGES

    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \| (counter|gauge) \|", text, flags=re.M)
    documented = dict(rows)
    assert len(rows) == len(documented), "a metric is listed twice"
    expected = dict.fromkeys(COUNTERS, "counter") | dict.fromkeys(GAUGES, "gauge")
    assert documented == expected
