"""mkdocs hook: heading ids that are valid CSS selectors.

Python-Markdown's slug of "1. Offset versus position" is ``1-offset-versus-position``;
an id starting with a digit is not a valid ``#selector``, and the theme's
Bootstrap scrollspy throws on it (``querySelector('#1-...')``), which stops the
page's scripts (search and keyboard shortcuts included). Such slugs get a
``section-`` prefix."""

from __future__ import annotations

from typing import Any

from markdown.extensions.toc import slugify


def css_safe_slugify(value: str, separator: str) -> str:
    slug = slugify(value, separator)
    return f"section{separator}{slug}" if slug[:1].isdigit() else slug


def on_config(config: Any) -> Any:
    config.mdx_configs.setdefault("toc", {})["slugify"] = css_safe_slugify
    return config
